/**
 * The host side of allowlist networking: one HTTP (absolute-form and CONNECT) and SOCKS5
 * proxy serving every sandbox, each on a listener of its own (made on the loopback of that
 * sandbox's network namespace, see Spawner.listenIn), so every connection is attributed to
 * its sandbox and checked against that sandbox's current rules. Names are resolved here,
 * never inside the sandbox, and the proxy connects to the very address it checked (no second
 * lookup to rebind).
 */
import { chmodSync, rmSync } from "node:fs";
import { connect, createServer, isIP, type Server, type Socket } from "node:net";
import { lookup as dnsLookup } from "node:dns/promises";
import type { EgressLogEntry, NetworkPolicy } from "@agentbox/protocol";
import { EgressPolicy } from "./network-policy.js";
import { RELAY_THRESHOLD_BYTES, proxyResponse, serveHttpProxy, type Decision } from "./http-forwarder.js";
import { SocketReader, socketFd, startReading, stopReading } from "./socket-reader.js";
import { outputEnded, type ListenHandle, type SpawnedProcess } from "./spawner.js";

/** Resolves a name to its addresses (the proxy's only view of DNS). */
export type Resolver = (host: string) => Promise<string[]>;

const defaultResolver: Resolver = async (host) => (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** Entries kept per sandbox (oldest dropped first). */
export const EGRESS_LOG_LIMIT = 1000;
/** Connections one sandbox may hold open through the proxy at once. */
export const MAX_CONNECTIONS_PER_SANDBOX = 256;
const CONNECT_TIMEOUT_MS = 10_000;

interface Attached {
  id: string;
  /** Where its connections come in: a listener handle, or a unix socket path (removed at detach). */
  listen?: ListenHandle | string;
  server: Server;
  policy: EgressPolicy;
  log: EgressLogEntry[];
  connections: Set<Socket>;
}

export interface EgressProxyOptions {
  resolve?: Resolver;
  /**
   * Splice two of our sockets together outside this process (the spawner's relay). Tunnels
   * that carry more than RELAY_THRESHOLD_BYTES are handed to it; without it everything stays in Node.
   */
  relay?: (fdA: number, fdB: number, count?: number) => Promise<SpawnedProcess>;
}

export class EgressProxy {
  private readonly sandboxes = new Map<string, Attached>();
  private readonly resolve: Resolver;
  private readonly relay: EgressProxyOptions["relay"];

  constructor(opts: EgressProxyOptions = {}) {
    this.resolve = opts.resolve ?? defaultResolver;
    this.relay = opts.relay;
  }

  /** Take on sandbox `id` with its rules; its connections come in once `serve` has its listener. */
  attach(id: string, policy: NetworkPolicy): void {
    const entry: Attached = {
      id,
      server: createServer({ noDelay: true }, (socket) => this.accept(entry, socket)),
      policy: new EgressPolicy(policy),
      log: [],
      connections: new Set(),
    };
    this.sandboxes.set(id, entry);
  }

  /**
   * Accept sandbox `id`'s connections on `listen`: a listener handle (Spawner.listenIn), or a
   * path for a new unix socket. A listener for a sandbox detached meanwhile is closed.
   */
  async serve(id: string, listen: ListenHandle | string): Promise<void> {
    const entry = this.sandboxes.get(id);
    if (!entry || entry.listen !== undefined) {
      if (typeof listen !== "string") listen.close?.();
      if (!entry) return;
      throw new Error(`sandbox ${id} is served already`);
    }
    entry.listen = listen;
    if (typeof listen === "string") rmSync(listen, { force: true });
    await new Promise<void>((resolve, reject) => {
      entry.server.once("error", reject);
      entry.server.listen(listen, () => resolve());
    });
    // Any local user may connect to a socket path: only its sandbox is given it.
    if (typeof listen === "string") chmodSync(listen, 0o666);
  }

  setPolicy(id: string, policy: NetworkPolicy): void {
    const entry = this.sandboxes.get(id);
    if (entry) entry.policy = new EgressPolicy(policy);
  }

  log(id: string, limit = EGRESS_LOG_LIMIT): EgressLogEntry[] {
    const log = this.sandboxes.get(id)?.log ?? [];
    return log.slice(Math.max(0, log.length - Math.min(limit, EGRESS_LOG_LIMIT))).map((e) => {
      const { at, ...rest } = e as EgressLogEntry & { at: number };
      return { ...rest, time: new Date(at).toISOString() };
    });
  }

  /** Stop serving a sandbox and cut its open connections. */
  async detach(id: string): Promise<void> {
    const entry = this.sandboxes.get(id);
    if (!entry) return;
    this.sandboxes.delete(id);
    for (const socket of entry.connections) socket.destroy();
    if (entry.server.listening) await new Promise<void>((resolve) => entry.server.close(() => resolve()));
    if (typeof entry.listen === "string") rmSync(entry.listen, { force: true });
  }

  async close(): Promise<void> {
    await Promise.all([...this.sandboxes.keys()].map((id) => this.detach(id)));
  }

  private accept(entry: Attached, socket: Socket): void {
    socket.on("error", () => undefined);
    if (entry.connections.size >= MAX_CONNECTIONS_PER_SANDBOX) {
      socket.destroy();
      return;
    }
    entry.connections.add(socket);
    socket.once("close", () => entry.connections.delete(socket));
    // SOCKS5 clients speak first with version 5; anything else is HTTP.
    socket.once("data", (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      if (first[0] === 5) void this.socks(entry, socket);
      else {
        void serveHttpProxy(socket, {
          decide: (host, port) => this.decide(entry, host, port),
          record: (fields) => this.record(entry, fields),
          tunnel: (client, host, port, head) => void this.tunnel(entry, client, host, port, head),
          ...(this.relay ? { relayBytes: (a: number, b: number, count: number) => this.relay!(a, b, count) } : {}),
        });
      }
    });
  }

  private record(entry: Attached, fields: Omit<EgressLogEntry, "time" | "bytesOut" | "bytesIn">): EgressLogEntry {
    // The time is formatted when the log is read, not on every request.
    const line = Object.assign({ time: "", at: Date.now(), bytesOut: 0, bytesIn: 0 }, fields) as EgressLogEntry & { at: number };
    // Kept up to twice the limit, then cut back at once: no shifting of the whole log per entry.
    if (entry.log.push(line) >= 2 * EGRESS_LOG_LIMIT) entry.log = entry.log.slice(-EGRESS_LOG_LIMIT);
    return line;
  }

  /** Check host:port against the sandbox's rules and resolve it: the address to connect to, or why not. */
  private decide(entry: Attached, host: string, port: number): Decision | Promise<Decision> {
    const policy = entry.policy;
    const verdict = policy.checkHost(host, port);
    if (!verdict.allowed) return { reason: verdict.reason };
    const bare = bareHost(host);
    if (isIP(bare)) return policy.pickAddress(bare, [bare], port);
    return this.resolve(bare).then(
      (addresses) => entry.policy.pickAddress(bare, addresses, port),
      (err: NodeJS.ErrnoException) => ({ reason: `cannot resolve ${bare}: ${err.code ?? err.message}` }),
    );
  }

  /** `CONNECT host:port`: a raw tunnel (HTTPS, git, anything over TCP). */
  private async tunnel(entry: Attached, client: Socket, host: string, port: number, head: Buffer): Promise<void> {
    const decision = await this.decide(entry, host, port);
    if ("reason" in decision) {
      this.record(entry, { host: bareHost(host), port, allowed: false, reason: decision.reason, protocol: "connect" });
      client.end(proxyResponse(403, "Forbidden", decision.reason, true));
      return;
    }
    const line = this.record(entry, { host: bareHost(host), port, allowed: true, address: decision.address, protocol: "connect" });
    this.splice(client, decision.address, port, line, head, () => client.write("HTTP/1.1 200 Connection Established\r\n\r\n"), (err) =>
      client.end(proxyResponse(502, "Bad Gateway", `cannot reach ${bareHost(host)}:${port}: ${err.message}`, true)),
    );
  }

  /** Connect to address:port and relay it with `client`, counting bytes into `line`. */
  private splice(client: Socket, address: string, port: number, line: EgressLogEntry, head: Buffer, onOpen: () => void, onFail: (err: Error) => void): void {
    const upstream = connect({ host: address, port, noDelay: true });
    const timer = setTimeout(() => upstream.destroy(new Error("connect timed out")), CONNECT_TIMEOUT_MS);
    let open = false;
    upstream.once("connect", () => {
      clearTimeout(timer);
      open = true;
      onOpen();
      if (head.length) {
        line.bytesOut += head.length;
        upstream.write(head);
      }
      let handedOff = false;
      const moved = () => {
        if (!handedOff && this.relay && line.bytesIn + line.bytesOut >= RELAY_THRESHOLD_BYTES) {
          handedOff = true;
          void this.handOff(client, upstream, line);
        }
      };
      client.on("data", (chunk: Buffer) => {
        line.bytesOut += chunk.length;
        moved();
      });
      upstream.on("data", (chunk: Buffer) => {
        line.bytesIn += chunk.length;
        moved();
      });
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on("error", (err) => {
      clearTimeout(timer);
      if (!open) onFail(err);
      else client.destroy();
    });
    client.on("error", () => upstream.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  }

  /**
   * Move a busy tunnel's bytes out of this event loop: stop reading both sockets, pass on what
   * Node already holds, wait until it is written, then let the relay helper splice the two
   * sockets until they close. If the relay cannot start, the tunnel goes on through Node.
   */
  private async handOff(client: Socket, upstream: Socket, line: EgressLogEntry): Promise<void> {
    const a = socketFd(client);
    const b = socketFd(upstream);
    if (a < 0 || b < 0 || client.destroyed || upstream.destroyed) return;
    client.unpipe(upstream);
    upstream.unpipe(client);
    const flush = (from: Socket, to: Socket) => {
      stopReading(from);
      for (let chunk: Buffer | null; (chunk = from.read() as Buffer | null) !== null; ) to.write(chunk);
      stopReading(from);
      return new Promise<void>((resolve) => to.write(Buffer.alloc(0), () => resolve()));
    };
    await Promise.all([flush(client, upstream), flush(upstream, client)]);
    let proc: SpawnedProcess;
    try {
      if (client.destroyed || upstream.destroyed) throw new Error("closed");
      proc = await this.relay!(a, b);
    } catch {
      client.pipe(upstream);
      upstream.pipe(client);
      startReading(client);
      startReading(upstream);
      return;
    }
    let counts = "";
    proc.stdout.on("data", (d: Buffer) => (counts += d.toString()));
    proc.stderr.resume();
    // The relay owns the bytes now; our handles stay open (and idle) until it is done.
    const stop = () => proc.kill("SIGKILL");
    client.once("close", stop);
    upstream.once("close", stop);
    await proc.exited;
    await outputEnded(proc.stdout);
    const [ab, ba] = counts.trim().split(" ").map(Number);
    if (Number.isFinite(ab) && Number.isFinite(ba)) {
      line.bytesOut += ab!;
      line.bytesIn += ba!;
    }
    client.destroy();
    upstream.destroy();
  }

  /** SOCKS5 (RFC 1928), CONNECT only, no authentication; names are resolved here (socks5h). */
  private async socks(entry: Attached, client: Socket): Promise<void> {
    // A SOCKS handshake is a few dozen bytes: more unread than this is not one.
    const reader = new SocketReader(client, 1024);
    try {
      const [version, methods] = await reader.exact(2);
      if (version !== 5) throw new Error("not SOCKS5");
      const offered = await reader.exact(methods!);
      if (!offered.includes(0)) {
        client.end(Buffer.from([5, 0xff]));
        return;
      }
      client.write(Buffer.from([5, 0]));
      const [, cmd, , atyp] = await reader.exact(4);
      let host: string;
      if (atyp === 1) host = [...(await reader.exact(4))].join(".");
      else if (atyp === 3) host = (await reader.exact((await reader.exact(1))[0]!)).toString("latin1");
      else if (atyp === 4) {
        const raw = await reader.exact(16);
        host = Array.from({ length: 8 }, (_, i) => raw.readUInt16BE(i * 2).toString(16)).join(":");
      } else throw new Error("bad address type");
      const port = (await reader.exact(2)).readUInt16BE(0);
      const reply = (code: number) => Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
      if (cmd !== 1) {
        client.end(reply(7)); // command not supported
        return;
      }
      const decision = await this.decide(entry, host, port);
      if ("reason" in decision) {
        this.record(entry, { host, port, allowed: false, reason: decision.reason, protocol: "socks" });
        client.end(reply(2)); // connection not allowed by ruleset
        return;
      }
      const line = this.record(entry, { host, port, allowed: true, address: decision.address, protocol: "socks" });
      const rest = reader.detach();
      this.splice(client, decision.address, port, line, rest, () => client.write(reply(0)), () => client.end(reply(5)));
    } catch {
      client.destroy();
    }
  }
}

function bareHost(host: string): string {
  return host.startsWith("[") ? host.slice(1, -1) : host;
}
