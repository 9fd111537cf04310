/**
 * WebSocket endpoints: upgrade requests are authenticated and routed here;
 * every open socket is pinged every 30 s and closed with 1001 when the
 * server stops.
 */
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { AgentboxError, ERROR_CODES, MAX_CLIENT_FRAME_BYTES, WS_CLOSE } from "@agentbox/protocol";
import { Router } from "./router.js";

export const PING_INTERVAL_MS = 30_000;

export type SocketHandler = (ws: WebSocket, params: Record<string, string>, url: URL) => void | Promise<void>;
/**
 * Gives an authenticated upgrade request to another process: true when it took the connection,
 * false (having written nothing) to have `SocketHandler` serve it here.
 */
export type HandOff = (req: IncomingMessage, socket: Socket, head: Buffer, params: Record<string, string>) => Promise<boolean>;

export class WebSocketHub {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_FRAME_BYTES });
  private readonly routes = new Router<{ handler: SocketHandler; handOff?: HandOff }>();
  private readonly sockets = new Set<WebSocket>();
  private readonly pinger: NodeJS.Timeout;

  constructor(
    private readonly authorized: (req: IncomingMessage, url: URL) => boolean,
    /** False while the server is starting: upgrades get 503 like any other request. */
    private readonly ready: () => boolean,
    pingIntervalMs = PING_INTERVAL_MS,
  ) {
    this.pinger = setInterval(() => {
      for (const ws of this.sockets) ws.ping();
    }, pingIntervalMs);
    this.pinger.unref();
  }

  route(pattern: string, handler: SocketHandler, handOff?: HandOff): void {
    this.routes.get(pattern, handOff ? { handler, handOff } : { handler });
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? "/", "http://localhost");
    const refuse = (err: AgentboxError) => {
      const body = JSON.stringify(err.toBody());
      socket.end(
        `HTTP/1.1 ${ERROR_CODES[err.code]} ${err.code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    socket.on("error", () => undefined);
    if (!this.ready()) return refuse(new AgentboxError("RUNTIME_UNAVAILABLE", "the server is starting; retry in a moment"));
    if (!this.authorized(req, url)) return refuse(new AgentboxError("UNAUTHORIZED", "missing or wrong API key (header, or ?token= for WebSockets)"));
    let match: { handler: { handler: SocketHandler; handOff?: HandOff }; params: Record<string, string> };
    try {
      match = this.routes.match("GET", url.pathname);
    } catch (err) {
      return refuse(err as AgentboxError);
    }
    const { handler, handOff } = match.handler;
    const serveHere = () =>
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        this.sockets.add(ws);
        ws.on("close", () => this.sockets.delete(ws));
        ws.on("error", () => undefined);
        void Promise.resolve(handler(ws, match.params, url)).catch(() => ws.terminate());
      });
    if (!handOff) return serveHere();
    handOff(req, socket as Socket, head, match.params).then(
      (taken) => void (taken || socket.destroyed || serveHere()),
      () => void (socket.destroyed || serveHere()),
    );
  }

  /** Close every socket with 1001 (going away): clients reconnect to the next server. */
  close(): void {
    clearInterval(this.pinger);
    for (const ws of this.sockets) ws.close(WS_CLOSE.GOING_AWAY, "server stopping");
    this.wss.close();
  }
}
