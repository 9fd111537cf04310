/**
 * Code session WebSockets the runtime serves itself. The server authenticates a
 * client's upgrade request, then hands the connection over (`code.attach`): from
 * then on a host call goes client → runtime → worker and back, one process hop
 * fewer than through the server. Sessions are pinged like the server's sockets
 * and closed with 1001 when the runtime stops.
 */
import type { IncomingMessage } from "node:http";
import { Socket, type SocketConstructorOpts } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { MAX_CLIENT_FRAME_BYTES, WS_CLOSE } from "@agentbox/protocol";
import { serveCodeSession, type CodeSessionBackend } from "./code-session.js";

const SESSION_PING_INTERVAL_MS = 30_000;

export interface HandedUpgrade {
  /** The connection, as a handle from the process spawner. */
  handle: object;
  url: string;
  headers: Record<string, string | string[]>;
  head: Buffer;
}

export class CodeSessionHost {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_FRAME_BYTES });
  private readonly sockets = new Set<WebSocket>();
  private readonly pinger: NodeJS.Timeout;

  constructor(pingIntervalMs = SESSION_PING_INTERVAL_MS) {
    this.pinger = setInterval(() => {
      for (const ws of this.sockets) ws.ping();
    }, pingIntervalMs);
    this.pinger.unref();
  }

  /** Answer the upgrade request and serve the session (a bad request gets ws's 400 and a close). */
  accept(upgrade: HandedUpgrade, backend: CodeSessionBackend): void {
    // `handle` (a handle received over IPC) is accepted by net.Socket but not in its typings.
    const socket = new Socket({ handle: upgrade.handle, readable: true, writable: true } as SocketConstructorOpts);
    socket.on("error", () => undefined);
    // Only what ws reads of a request: the method, the URL and the headers.
    const req = { method: "GET", url: upgrade.url, headers: upgrade.headers, socket } as unknown as IncomingMessage;
    this.wss.handleUpgrade(req, socket, upgrade.head, (ws) => {
      this.sockets.add(ws);
      ws.on("close", () => this.sockets.delete(ws));
      ws.on("error", () => undefined);
      serveCodeSession(ws, backend);
    });
  }

  close(): void {
    clearInterval(this.pinger);
    for (const ws of this.sockets) ws.close(WS_CLOSE.GOING_AWAY, "runtime stopping");
    this.wss.close();
  }
}
