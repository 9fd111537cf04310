/**
 * The HTTP/1.1 side of the egress proxy, on one client connection: absolute-form requests
 * (`GET http://host/path`) are checked, rewritten to origin-form and forwarded; `CONNECT`
 * becomes a tunnel. Messages are framed (Content-Length, chunked, close-delimited, HEAD,
 * 1xx/204/304, upgrades) but their bytes are passed on as they came, never re-serialized;
 * a big response body is handed to the splice relay. One request at a time per connection,
 * each to the connection's current upstream (reused while the host stays the same).
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import type { EgressLogEntry } from "@agentbox/protocol";
import { HeadTooLargeError, SocketReader, socketFd } from "./socket-reader.js";
import { outputEnded, type SpawnedProcess } from "./spawner.js";

export type Decision = { address: string } | { reason: string };

export interface ForwardContext {
  decide(host: string, port: number): Decision | Promise<Decision>;
  record(fields: Omit<EgressLogEntry, "time" | "bytesOut" | "bytesIn">): EgressLogEntry;
  /** CONNECT host:port: the proxy's tunnel (the socket is handed over with `head` already read). */
  tunnel(client: Socket, host: string, port: number, head: Buffer): void;
  /** Move `count` bytes from socket fd B to socket fd A outside this process (see Spawner.relay). */
  relayBytes?: (fdA: number, fdB: number, count: number) => Promise<SpawnedProcess>;
}

const MAX_HEAD = 64 * 1024;
const CRLF = Buffer.from("\r\n");
const MAX_LINE = 16 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;
/**
 * Unread bytes held per socket before it is paused: bounds the runtime's memory per sandbox
 * (MAX_CONNECTIONS_PER_SANDBOX × 2 sockets × this).
 */
const READ_AHEAD_BYTES = 128 * 1024;
/** Response bodies up to this size are sent with their head in one write. */
const SMALL_BODY_BYTES = 16 * 1024;
/** Response bodies bigger than this, and tunnels once they carried this much, go to the splice relay (small ones cost no spawn). */
export const RELAY_THRESHOLD_BYTES = 1024 * 1024;
/** Headers that describe one hop, never forwarded (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "upgrade"]);

interface Head {
  startLine: string;
  /** The header lines in order (or only those `keep` asked for): names as sent, their lower-case forms, and values. */
  names: string[];
  lower: string[];
  values: string[];
}

class BadMessage extends Error {}

/**
 * Split a head (through its blank line) into its lines, one pass. Every line is checked; with
 * `keep`, only the headers it names are kept (a response needs just the ones that frame it).
 */
function parseHead(raw: Buffer, keep?: ReadonlySet<string>): Head {
  const text = raw.toString("latin1");
  const blank = text.length - 2;
  let start = text.indexOf("\r\n");
  const head: Head = { startLine: text.slice(0, start), names: [], lower: [], values: [] };
  let count = 0;
  for (start += 2; start < blank; ) {
    const next = text.indexOf("\r\n", start);
    const colon = text.indexOf(":", start);
    if (colon <= start || colon > next) throw new BadMessage("bad header line");
    const name = text.slice(start, colon);
    if (!TOKEN.test(name)) throw new BadMessage("bad header line");
    if (++count > 256) throw new BadMessage("too many headers");
    const lower = name.toLowerCase();
    if (!keep || keep.has(lower)) {
      head.names.push(name);
      head.lower.push(lower);
      head.values.push(text.slice(colon + 1, next).trim());
    }
    start = next + 2;
  }
  return head;
}

/** The response headers the proxy acts on. */
const RESPONSE_HEADERS: ReadonlySet<string> = new Set(["connection", "content-length", "transfer-encoding"]);

/**
 * What the proxy takes from a request's header lines. It depends on those lines only, so a
 * keep-alive client that repeats them (most do) costs one comparison instead of a parse.
 */
interface RequestHeaders {
  framing: Framing;
  /** Connection and Proxy-Connection tokens, lower case. */
  connection: readonly string[];
  /** The Upgrade asked for (Connection names upgrade), if any. */
  upgrade: string | undefined;
  /** The lines to pass on, each with its CRLF: hop-by-hop ones and those Connection names left out. */
  forwarded: string;
  hasHost: boolean;
}

function requestHeaders(head: Head): RequestHeaders {
  const framing = bodyFraming(head, true);
  const connectionTokens = tokens(head, "connection");
  const connection = connectionTokens.concat(tokens(head, "proxy-connection"));
  const upgrade = connectionTokens.includes("upgrade") ? header(head, "upgrade")[0] : undefined;
  const named = new Set(connection);
  let forwarded = "";
  let hasHost = false;
  for (let i = 0; i < head.names.length; i++) {
    const lower = head.lower[i]!;
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    if (lower === "host") hasHost = true;
    forwarded += `${head.names[i]}: ${head.values[i]}\r\n`;
  }
  return { framing, connection, upgrade, forwarded, hasHost };
}

/** A header name (an obs-fold continuation line starts with a space and never is one). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const NONE: readonly string[] = Object.freeze([]);

/** Every value of header `name` (lower case). */
function header(head: Head, name: string): readonly string[] {
  let out: string[] | undefined;
  for (let i = 0; i < head.lower.length; i++) if (head.lower[i] === name) (out ??= []).push(head.values[i]!);
  return out ?? NONE;
}

/** The comma-separated tokens of header `name`, lower case. */
function tokens(head: Head, name: string): readonly string[] {
  let out: string[] | undefined;
  for (let i = 0; i < head.lower.length; i++) {
    if (head.lower[i] !== name) continue;
    for (const t of head.values[i]!.split(",")) {
      const token = t.trim().toLowerCase();
      if (token) (out ??= []).push(token);
    }
  }
  return out ?? NONE;
}

/** A Content-Length value. */
const DIGITS = /^[0-9]{1,15}$/;

type Framing = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" } | { kind: "close" };

/** How a message's body is delimited (RFC 9112 §6.3); requests never use `close`. */
function bodyFraming(head: Head, isRequest: boolean): Framing {
  const te = tokens(head, "transfer-encoding");
  if (te.length > 0) {
    if (te.at(-1) === "chunked") return { kind: "chunked" };
    if (isRequest) throw new BadMessage("a request's transfer-encoding must end with chunked");
    return { kind: "close" };
  }
  const values = header(head, "content-length");
  if (values.length === 0) return isRequest ? { kind: "none" } : { kind: "close" };
  if (values.length === 1 && DIGITS.test(values[0]!)) return { kind: "length", length: Number(values[0]) };
  const lengths = new Set(values.flatMap((v) => v.split(",").map((x) => x.trim())));
  if (lengths.size > 1) throw new BadMessage("conflicting content-length");
  if (lengths.size === 1) {
    const [value] = lengths;
    if (!DIGITS.test(value!)) throw new BadMessage("bad content-length");
    return { kind: "length", length: Number(value) };
  }
  return isRequest ? { kind: "none" } : { kind: "close" };
}

/** `http://host[:port]/path?query` → its parts. */
export function parseAbsoluteUrl(url: string): { host: string; port: number; path: string } | undefined {
  const m = /^http:\/\/(\[[0-9a-fA-F:.]+\]|[^/?#:@\s[\]]+)(?::([0-9]{1,5}))?([/?][^#\s]*)?$/i.exec(url);
  if (!m) return undefined;
  const port = m[2] ? Number(m[2]) : 80;
  if (port < 1 || port > 65535) return undefined;
  const rest = m[3] ?? "/";
  return { host: m[1]!.toLowerCase(), port, path: rest.startsWith("?") ? `/${rest}` : rest };
}

/** Write; a promise only when the socket asks us to wait (most writes cost no promise at all). */
function write(socket: Socket, data: Buffer | string): Promise<void> | undefined {
  if (socket.destroyed) return Promise.reject(new Error("connection closed"));
  if (socket.write(data)) return undefined;
  return Promise.race([once(socket, "drain").then(() => undefined), once(socket, "close").then(() => Promise.reject(new Error("connection closed")))]);
}

/** A response of the proxy's own, the reason also in `x-agentbox-reason`. */
export function proxyResponse(status: number, reason: string, text: string, close: boolean): string {
  const body = `${text}\n`;
  const safe = text.replace(/[^\x20-\x7e]/g, "?");
  return (
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    `x-agentbox-reason: ${safe}\r\n${close ? "connection: close\r\n" : ""}\r\n${body}`
  );
}

interface Upstream {
  key: string;
  socket: Socket;
  reader: SocketReader;
}


/** Serve one client connection of a sandbox until it closes. */
export async function serveHttpProxy(client: Socket, ctx: ForwardContext): Promise<void> {
  const reader = new SocketReader(client, READ_AHEAD_BYTES);
  let upstream: Upstream | undefined;
  /** The previous request's header lines and what they gave. */
  let last: { lines: Buffer; request: RequestHeaders } | undefined;
  const dropUpstream = () => {
    upstream?.socket.destroy();
    upstream = undefined;
  };
  client.once("close", dropUpstream);
  try {
    for (;;) {
      let raw: Buffer | null;
      try {
        raw = await reader.head(MAX_HEAD);
      } catch (err) {
        if (err instanceof HeadTooLargeError) client.end(proxyResponse(431, "Request Header Fields Too Large", "request head too large", true));
        else client.destroy();
        return;
      }
      if (raw === null) return void client.end();
      const lineEnd = raw.indexOf(CRLF);
      const lines = raw.subarray(lineEnd + 2);
      let request: RequestHeaders;
      if (last && last.lines.equals(lines)) request = last.request;
      else {
        try {
          request = requestHeaders(parseHead(raw));
        } catch {
          return void client.end(proxyResponse(400, "Bad Request", "malformed request", true));
        }
        last = { lines: Buffer.from(lines), request };
      }
      const { framing, connection } = request;
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.([01])$/.exec(raw.toString("latin1", 0, lineEnd));
      if (!m) return void client.end(proxyResponse(400, "Bad Request", "malformed request line", true));
      const [, method, target, minor] = m as unknown as [string, string, string, string];
      if (method === "CONNECT") {
        const t = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):([0-9]{1,5})$/.exec(target);
        const port = Number(t?.[2]);
        if (!t || port < 1 || port > 65535) return void client.end(proxyResponse(400, "Bad Request", "CONNECT needs host:port", true));
        dropUpstream();
        client.off("close", dropUpstream);
        return ctx.tunnel(client, t[1]!, port, reader.detach());
      }
      const url = parseAbsoluteUrl(target);
      if (!url) return void client.end(proxyResponse(400, "Bad Request", "this is a proxy: send absolute http:// URLs, or CONNECT host:port for anything else", true));
      const clientKeepAlive = minor === "1" ? !connection.includes("close") : connection.includes("keep-alive");
      const bareHost = url.host.startsWith("[") ? url.host.slice(1, -1) : url.host;
      const decided = ctx.decide(url.host, url.port);
      const decision = "then" in decided ? await decided : decided;
      if ("reason" in decision) {
        ctx.record({ host: bareHost, port: url.port, allowed: false, reason: decision.reason, protocol: "http" });
        // A refused request's body is not read: the connection cannot go on after it.
        const close = !clientKeepAlive || framing.kind !== "none";
        await write(client, proxyResponse(403, "Forbidden", decision.reason, close));
        if (close) return void client.end();
        continue;
      }
      const line = ctx.record({ host: bareHost, port: url.port, allowed: true, address: decision.address, protocol: "http" });
      const key = `${decision.address}:${url.port}`;
      if (upstream && (upstream.key !== key || upstream.reader.atEnd || upstream.socket.destroyed)) dropUpstream();
      if (!upstream) {
        try {
          upstream = await openUpstream(key, decision.address, url.port);
        } catch (err) {
          await write(client, proxyResponse(502, "Bad Gateway", `cannot reach ${bareHost}:${url.port}: ${(err as Error).message}`, !clientKeepAlive || framing.kind !== "none"));
          if (!clientKeepAlive || framing.kind !== "none") return void client.end();
          continue;
        }
      }
      let out = `${method} ${url.path} HTTP/1.1\r\n${request.forwarded}`;
      if (!request.hasHost) out += `Host: ${url.host}${url.port === 80 ? "" : `:${url.port}`}\r\n`;
      out += request.upgrade !== undefined ? `Connection: Upgrade\r\nUpgrade: ${request.upgrade}\r\n\r\n` : "Connection: keep-alive\r\n\r\n";
      const up: Upstream = upstream;
      // Latin-1 both ways: header bytes pass unchanged (and a Buffer is cheaper to write than a string).
      const sending = write(up.socket, Buffer.from(out, "latin1"));
      if (sending) await sending;
      // The request body goes on while the response is read (a server may answer 100 Continue first).
      let bodyFinished = framing.kind === "none";
      if (!bodyFinished) {
        void copyBody(reader, up.socket, framing, (n) => (line.bytesOut += n)).then(
          () => (bodyFinished = true),
          () => undefined,
        );
      }
      const result = await forwardResponse(up, client, method, line, ctx, reader);
      if (result === "upgraded") {
        // Both sockets belong to the raw stream now.
        client.off("close", dropUpstream);
        upstream = undefined;
        return;
      }
      // A response that ended before its request's body did: neither connection can go on.
      if (result === "close" || !bodyFinished) dropUpstream();
      if (!bodyFinished || !clientKeepAlive || result === "close-client") return void client.end();
    }
  } catch {
    client.destroy();
  } finally {
    dropUpstream();
  }
}

function openUpstream(key: string, address: string, port: number): Promise<Upstream> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: address, port, noDelay: true });
    const timer = setTimeout(() => socket.destroy(new Error("connect timed out")), CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", reject);
      socket.on("error", () => undefined);
      resolve({ key, socket, reader: new SocketReader(socket, READ_AHEAD_BYTES) });
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Copy a body of `framing` from `from` to `to`, as it came. */
async function copyBody(from: SocketReader, to: Socket, framing: Framing, count: (n: number) => void): Promise<void> {
  if (framing.kind === "none") return;
  if (framing.kind === "length") {
    for (let left = framing.length; left > 0; ) {
      const chunk = await from.some(Math.min(left, 256 * 1024));
      if (!chunk) throw new Error("the body ended early");
      left -= chunk.length;
      count(chunk.length);
      await write(to, chunk);
    }
    return;
  }
  if (framing.kind === "chunked") {
    for (;;) {
      const sizeLine = await from.line(MAX_LINE);
      if (!sizeLine) throw new Error("the body ended early");
      await write(to, sizeLine);
      const size = parseInt(sizeLine.toString("latin1").split(";")[0]!.trim(), 16);
      if (!Number.isFinite(size) || size < 0) throw new BadMessage("bad chunk size");
      if (size === 0) {
        // Trailers, then the blank line.
        for (;;) {
          const trailer = await from.line(MAX_LINE);
          if (!trailer) throw new Error("the body ended early");
          await write(to, trailer);
          if (trailer.length === 2) return;
        }
      }
      // The chunk's data and its CRLF; only the data counts.
      for (let left = size + 2, data = size; left > 0; ) {
        const chunk = await from.some(Math.min(left, 256 * 1024));
        if (!chunk) throw new Error("the body ended early");
        left -= chunk.length;
        const counted = Math.min(chunk.length, data);
        data -= counted;
        count(counted);
        await write(to, chunk);
      }
    }
  }
  // Close-delimited: everything until the end.
  for (let chunk = await from.some(256 * 1024); chunk; chunk = await from.some(256 * 1024)) {
    count(chunk.length);
    await write(to, chunk);
  }
}

/**
 * Read the upstream's response(s) to one request and pass them on. "keep": both connections go
 * on; "close": the upstream is done; "close-client": the client must be closed too (a
 * close-delimited body); "upgraded": the connections now carry raw bytes until they close.
 */
async function forwardResponse(
  up: Upstream,
  client: Socket,
  method: string,
  line: EgressLogEntry,
  ctx: ForwardContext,
  clientReader: SocketReader,
): Promise<"keep" | "close" | "close-client" | "upgraded"> {
  let sent = false;
  for (;;) {
    let raw: Buffer | null;
    try {
      raw = await up.reader.head(MAX_HEAD);
    } catch {
      raw = null;
    }
    if (raw === null) {
      if (!sent) await write(client, proxyResponse(502, "Bad Gateway", "the server closed the connection without a response", true));
      return "close-client";
    }
    let head: Head;
    try {
      head = parseHead(raw, RESPONSE_HEADERS);
    } catch {
      if (!sent) await write(client, proxyResponse(502, "Bad Gateway", "the server sent a malformed response", true));
      return "close-client";
    }
    const m = /^HTTP\/1\.([01]) ([0-9]{3})/.exec(head.startLine);
    if (!m) {
      if (!sent) await write(client, proxyResponse(502, "Bad Gateway", "the server sent a malformed response", true));
      return "close-client";
    }
    const status = Number(m[2]);
    sent = true;
    const final = status < 100 || status >= 200;
    const connection = tokens(head, "connection");
    const upstreamClose = m[1] === "0" ? !connection.includes("keep-alive") : connection.includes("close");
    const framing: Framing = !final ? { kind: "none" } : method === "HEAD" || status === 204 || status === 304 ? { kind: "none" } : bodyFraming(head, false);
    if (framing.kind === "length" && framing.length <= SMALL_BODY_BYTES) {
      // A small response leaves in one write with its head: one wake-up for the client.
      const read = up.reader.exact(framing.length);
      const body = read instanceof Buffer ? read : await read;
      line.bytesIn += body.length;
      const sending = write(client, body.length ? Buffer.concat([raw, body]) : raw);
      if (sending) await sending;
      if (!final) continue;
      return upstreamClose ? "close" : "keep";
    }
    await write(client, raw);
    if (status === 101) {
      // Both ways, raw, until either side closes.
      const fromClient = clientReader.detach();
      const fromUp = up.reader.detach();
      if (fromClient.length) up.socket.write(fromClient);
      if (fromUp.length) client.write(fromUp);
      client.pipe(up.socket);
      up.socket.pipe(client);
      client.resume();
      up.socket.resume();
      client.on("close", () => up.socket.destroy());
      up.socket.on("close", () => client.destroy());
      return "upgraded";
    }
    if (!final) continue;
    if (framing.kind === "length" && framing.length > RELAY_THRESHOLD_BYTES && ctx.relayBytes) {
      await relayBody(up, client, framing.length, line, ctx.relayBytes);
    } else {
      await copyBody(up.reader, client, framing, (n) => (line.bytesIn += n));
    }
    if (framing.kind === "close") return "close-client";
    return upstreamClose ? "close" : "keep";
  }
}

/** A big Content-Length body: what we hold goes first, the rest by splice outside this process. */
async function relayBody(up: Upstream, client: Socket, length: number, line: EgressLogEntry, relayBytes: NonNullable<ForwardContext["relayBytes"]>): Promise<void> {
  const held = up.reader.suspend();
  const first = held.subarray(0, length);
  const extra = held.subarray(first.length); // a pipelining server's next bytes: never for one request at a time
  if (extra.length) throw new Error("the server sent more than the body");
  line.bytesIn += first.length;
  await write(client, first);
  await new Promise<void>((resolve) => client.write(Buffer.alloc(0), () => resolve()));
  const left = length - first.length;
  let moved = 0;
  if (left > 0) {
    const a = socketFd(client);
    const b = socketFd(up.socket);
    let proc: SpawnedProcess | undefined;
    if (a >= 0 && b >= 0) proc = await relayBytes(a, b, left).catch(() => undefined);
    if (proc) {
      let out = "";
      proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
      proc.stderr.resume();
      const stop = () => proc!.kill("SIGKILL");
      client.once("close", stop);
      const status = await proc.exited;
      await outputEnded(proc.stdout);
      client.off("close", stop);
      moved = Number(out.trim()) || 0;
      line.bytesIn += moved;
      if (status.code !== 0) throw new Error("the relay stopped early");
    }
  }
  up.reader.resumeSource();
  // Without the relay (or for what it left): through this process.
  if (moved < left) await copyBody(up.reader, client, { kind: "length", length: left - moved }, (n) => (line.bytesIn += n));
}
