/**
 * Forwards HTTP requests and WebSocket upgrades under `/v1/sandboxes/:id/ports/:port/…` to
 * that port inside the sandbox, each over a tunnel of its own through the runtime. The
 * credential that let the request in (API key or port token) is removed before forwarding:
 * code in the sandbox never sees the API key.
 */
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { AgentboxError } from "@agentbox/protocol";
import { RuntimeClient } from "@agentbox/runtime";
import { portPrefix, type PortService } from "../port-service.js";
import type { SandboxService } from "../sandbox-service.js";

const PORT_PATH = /^\/v1\/sandboxes\/([^/]+)\/ports\/([0-9]{1,5})(\/.*)$/;
export const PORT_COOKIE = "agentbox_port_token";
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"]);

interface Target {
  sandboxId: string;
  port: number;
  /** Path and query to send to the sandbox's server. */
  path: string;
  /** Set when the port token came in the query: remembered in a cookie for the page's next requests. */
  setCookie?: string;
  headers: Array<[string, string]>;
}

export class PortProxy {
  /** Upgraded connections (they outlive their request): cut when the server stops. */
  private readonly upgraded = new Set<Duplex>();

  constructor(
    private readonly ports: PortService,
    private readonly sandboxes: SandboxService,
    private readonly runtimeSocket: string,
    private readonly isApiKey: (given: string | undefined) => boolean,
  ) {}

  /** Is this a path the proxy serves (rather than the API)? */
  matches(pathname: string): boolean {
    return PORT_PATH.test(pathname);
  }

  async http(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const target = this.authorize(req, url);
    const tunnel = await this.open(target);
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of target.headers) {
      const prev = headers[name];
      headers[name] = prev === undefined ? value : ([] as string[]).concat(prev as string | string[], value);
    }
    headers.connection = "close";
    const upstream = httpRequest({ method: req.method, path: target.path, headers, createConnection: () => tunnel });
    // The tunnel arrives paused; let it flow once the client's parser listens to it.
    upstream.once("socket", () => tunnel.resume());
    upstream.on("response", (up) => {
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      if (out["set-cookie"]) out["set-cookie"] = (out["set-cookie"] as string[]).map((c) => confineCookie(c, portPrefix(target.sandboxId, target.port)));
      if (target.setCookie) out["set-cookie"] = ([] as string[]).concat((out["set-cookie"] as string[] | undefined) ?? [], target.setCookie);
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      up.pipe(res);
    });
    await new Promise<void>((resolve) => {
      upstream.on("error", (err) => {
        if (!res.headersSent) {
          const e = new AgentboxError("PORT_UNREACHABLE", `port ${target.port} of sandbox ${target.sandboxId} closed the connection: ${err.message}`);
          const body = JSON.stringify(e.toBody());
          res.writeHead(e.httpStatus, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
          res.end(body);
        } else res.destroy();
        resolve();
      });
      res.on("close", () => {
        upstream.destroy();
        resolve();
      });
      req.pipe(upstream);
    });
  }

  /** A WebSocket (or any other upgrade): the request is replayed raw into a tunnel, then bytes flow both ways. */
  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, url: URL): Promise<void> {
    socket.on("error", () => undefined);
    let tunnel: Socket;
    let target: Target;
    try {
      target = this.authorize(req, url);
      tunnel = await this.open(target);
    } catch (err) {
      const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", (err as Error).message);
      const body = JSON.stringify(e.toBody());
      socket.end(`HTTP/1.1 ${e.httpStatus} ${e.code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    const lines = [`${req.method ?? "GET"} ${target.path} HTTP/1.1`];
    for (const [name, value] of target.headers) lines.push(`${name}: ${value.replace(/[\r\n]/g, " ")}`);
    lines.push("connection: Upgrade", `upgrade: ${String(req.headers.upgrade ?? "websocket").replace(/[\r\n]/g, " ")}`);
    tunnel.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (head.length) tunnel.write(head);
    socket.pipe(tunnel);
    tunnel.pipe(socket);
    tunnel.resume();
    this.upgraded.add(socket);
    socket.on("close", () => {
      this.upgraded.delete(socket);
      tunnel.destroy();
    });
    tunnel.on("close", () => socket.destroy());
  }

  close(): void {
    for (const socket of this.upgraded) socket.destroy();
  }

  private async open(target: Target): Promise<Socket> {
    this.sandboxes.requireReady(target.sandboxId);
    try {
      const tunnel = await RuntimeClient.openTunnel(this.runtimeSocket, target.sandboxId, target.port);
      tunnel.on("error", () => undefined);
      return tunnel;
    } catch (err) {
      const e = err as AgentboxError;
      if (e.code === "NOT_FOUND") throw new AgentboxError("PORT_UNREACHABLE", e.message, { sandboxId: target.sandboxId, port: target.port });
      throw err;
    }
  }

  /** Check the credential (API key or the port's token) and work out what to forward. */
  private authorize(req: IncomingMessage, url: URL): Target {
    const m = PORT_PATH.exec(url.pathname)!;
    let sandboxId: string;
    try {
      sandboxId = decodeURIComponent(m[1]!);
    } catch {
      throw new AgentboxError("INVALID_REQUEST", "bad sandbox id in the path");
    }
    const port = Number(m[2]);
    const record = this.ports.record(sandboxId, port);
    const authHeader = req.headers.authorization;
    const bearer = authHeader?.startsWith("Bearer ") ? authHeader.slice(7).trim() : undefined;
    const queryToken = url.searchParams.get("token") ?? undefined;
    const cookieToken = readCookie(req.headers.cookie, PORT_COOKIE);
    const byHeader = bearer !== undefined && (this.isApiKey(bearer) || this.ports.tokenMatches(record, bearer));
    const byQuery = queryToken !== undefined && (this.isApiKey(queryToken) || this.ports.tokenMatches(record, queryToken));
    const byCookie = this.ports.tokenMatches(record, cookieToken);
    if (!byHeader && !byQuery && !byCookie) {
      throw new AgentboxError("UNAUTHORIZED", `port ${port} of sandbox ${sandboxId} needs the API key or its token (the ?token= of its url)`);
    }
    const prefix = portPrefix(sandboxId, port);
    const search = new URLSearchParams(url.search);
    if (byQuery) search.delete("token");
    const query = search.toString();
    const headers: Array<[string, string]> = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      const lower = name.toLowerCase();
      const value = req.rawHeaders[i + 1]!;
      if (HOP_BY_HOP.has(lower) || lower.startsWith("x-forwarded-")) continue;
      if (lower === "authorization" && byHeader) continue;
      if (lower === "cookie") {
        const kept = value.split(";").map((c) => c.trim()).filter((c) => c && !c.startsWith(`${PORT_COOKIE}=`)).join("; ");
        if (kept) headers.push([name, kept]);
        continue;
      }
      headers.push([name, value]);
    }
    headers.push(["x-forwarded-prefix", prefix], ["x-forwarded-proto", "http"]);
    if (req.headers.host) headers.push(["x-forwarded-host", req.headers.host]);
    const target: Target = { sandboxId, port, path: `${m[3]!}${query ? `?${query}` : ""}`, headers };
    if (byQuery && this.ports.tokenMatches(record, queryToken)) {
      target.setCookie = `${PORT_COOKIE}=${record.token}; Path=${prefix}/; HttpOnly; SameSite=Lax`;
    }
    return target;
  }
}

/**
 * A cookie the sandbox's server sets stays with its own port: its Domain is dropped and its
 * Path put under the port's prefix, so it cannot reach the API's paths or other sandboxes' ports.
 */
export function confineCookie(cookie: string, prefix: string): string {
  const [pair, ...attrs] = cookie.split(";");
  let path = "/";
  const kept: string[] = [];
  for (const a of attrs) {
    const [name, ...value] = a.trim().split("=");
    const lower = name!.toLowerCase();
    if (lower === "domain") continue;
    if (lower === "path") path = value.join("=") || "/";
    else if (a.trim()) kept.push(a.trim());
  }
  const inner = path.startsWith("/") ? path : `/${path}`;
  return [pair!.trim(), `Path=${prefix}${inner}`, ...kept].join("; ");
}

function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of header?.split(";") ?? []) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return undefined;
}
