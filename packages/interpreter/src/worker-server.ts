/**
 * A remote worker host (`agentbox worker --listen <addr>`): each WebSocket
 * connection is one worker process of the language asked for
 * (`?language=python|javascript`), its frames carried one per binary
 * message. The text message `interrupt` interrupts the running code.
 * Connections must carry the token (`Authorization: Bearer <token>`).
 */
import { spawn } from "node:child_process";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { timingSafeEqual } from "node:crypto";
import { WebSocketServer, type WebSocket } from "ws";
import { WORKER_MAX_FRAME_BYTES, WorkerFrameReader } from "@agentbox/protocol";
import { CODE_LANGUAGES, workerLaunch, type CodeLanguage } from "./languages.js";

export interface WorkerServerOptions {
  host?: string;
  port?: number;
  token: string;
  /** Interpreters to run (default `python3` and `node` from PATH). */
  programs?: { python?: string; node?: string };
}

export interface RunningWorkerServer {
  url: string;
  close(): Promise<void>;
}

function authorized(req: IncomingMessage, token: string): boolean {
  const given = Buffer.from((req.headers.authorization ?? "").replace(/^Bearer /, ""));
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

export async function startWorkerServer(options: WorkerServerOptions): Promise<RunningWorkerServer> {
  const http = createServer((_req, res) => {
    res.writeHead(426, { "content-type": "text/plain" });
    res.end("a WebSocket connection is expected\n");
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: WORKER_MAX_FRAME_BYTES });
  http.on("upgrade", (req, socket, head) => {
    const url = new URL(req.url ?? "/", "http://x");
    const language = (url.searchParams.get("language") ?? "python") as CodeLanguage;
    if (!authorized(req, options.token)) {
      socket.end("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\n");
      return;
    }
    if (!CODE_LANGUAGES.includes(language)) {
      socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => serve(ws, language));
  });

  const serve = (ws: WebSocket, language: CodeLanguage) => {
    const launch = workerLaunch(language, options.programs);
    const child = spawn(launch.argv[0]!, launch.argv.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(launch.source.length, 0);
    child.stdin.write(Buffer.concat([head, launch.source]));
    child.stdin.on("error", () => undefined);
    const reader = new WorkerFrameReader();
    child.stdout.on("data", (chunk: Buffer) => {
      try {
        for (const payload of reader.push(chunk)) ws.send(payload, { binary: true });
      } catch {
        child.kill("SIGKILL");
      }
    });
    child.on("exit", () => ws.close(1011, "the worker exited"));
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        if (data.toString() === "interrupt") child.kill("SIGINT");
        return;
      }
      const h = Buffer.allocUnsafe(4);
      h.writeUInt32BE(data.length, 0);
      child.stdin.write(Buffer.concat([h, data]));
    });
    ws.on("close", () => child.kill("SIGKILL"));
    // An oversize or broken message ends this connection (and its worker) only.
    ws.on("error", () => {
      child.kill("SIGKILL");
      ws.terminate();
    });
  };

  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
  });
  const addr = http.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    url: `ws://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        http.close(() => resolve());
      }),
  };
}
