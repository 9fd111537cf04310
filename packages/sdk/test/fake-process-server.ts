/**
 * A FAKE agentbox server for the processes API: `node:http` for the REST calls
 * and `ws`'s WebSocketServer for `…/processes/:pid/stream`. It is not the real
 * server (that one is tested against real sandboxes elsewhere); it implements
 * the wire contract just enough for the SDK's and CLI's unit tests, and lets a
 * test script the awkward cases: dropping connections mid-stream, closing with
 * 1001 and going away for a while, refusing upgrades, evicting output.
 *
 * Output is kept per stream as bytes. A test appends to it with `emit()`,
 * which also sends it as one chunk to every attached client; an attach with
 * offsets replays what it has from there (after a `truncated` frame when the
 * offset was evicted), like the real server.
 */
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { WebSocketServer, WebSocket } from "ws";
import type { ProcessInfo, ProcessStream } from "../src/index.js";

export interface FakeExit {
  exitCode: number | null;
  signal?: string;
  reason?: "timeout" | "killed" | "oom";
}

export interface FakeProcess {
  info: ProcessInfo;
  out: Record<ProcessStream, Buffer>;
  /** Bytes before this offset are gone (evicted). */
  evicted: Record<ProcessStream, number>;
  exit?: FakeExit;
  input: string[];
  stdinClosed: boolean;
  /** Signals received, over the socket or HTTP (undefined = the default). */
  kills: Array<string | undefined>;
}

export interface StreamConnection {
  processId: string;
  query: { stdoutOffset: number; stderrOffset: number; token: string | null; format: string | null };
  headers: http.IncomingHttpHeaders;
  socket: WebSocket;
  /** Client frames received, parsed. */
  received: Array<Record<string, unknown>>;
}

export interface RestRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
}

export const FAKE_SANDBOX = "sb-1";
export const FAKE_KEY = "test-key";

export class FakeProcessServer {
  readonly processes = new Map<string, FakeProcess>();
  readonly connections: StreamConnection[] = [];
  readonly requests: RestRequest[] = [];
  /** Every upgrade request, answered or refused. */
  upgrades = 0;
  /** Answer upgrades with this HTTP status (and an error body) instead of accepting them. */
  refuseUpgrades: number | undefined;
  /** How to say a process does not exist on the stream: an HTTP 404 before the upgrade, or an error frame and close 4404. */
  notFound: "http" | "close" = "http";
  /** Kill (HTTP or frame) ends the process with that signal at once. */
  exitOnKill = true;
  /** Called for every client frame, after recording it. */
  onFrame: ((connection: StreamConnection, frame: Record<string, unknown>) => void) | undefined;

  private readonly server: http.Server;
  private readonly wss = new WebSocketServer({ noServer: true });
  private readonly sockets = new Set<Socket>();
  private port = 0;
  private counter = 0;

  private constructor() {
    this.server = this.createServer();
  }

  static async start(): Promise<FakeProcessServer> {
    const fake = new FakeProcessServer();
    await fake.listen(0);
    return fake;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Live stream connections to a process. */
  live(processId?: string): StreamConnection[] {
    return this.connections.filter(
      (c) => c.socket.readyState === WebSocket.OPEN && (processId === undefined || c.processId === processId),
    );
  }

  addProcess(id: string, overrides: Partial<ProcessInfo> = {}): FakeProcess {
    const proc: FakeProcess = {
      info: {
        id,
        pid: 100 + this.processes.size,
        argv: ["sh", "-c", "fake"],
        cwd: "/workspace",
        status: "running",
        startedAt: "2025-01-01T00:00:00.000Z",
        ...overrides,
      },
      out: { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) },
      evicted: { stdout: 0, stderr: 0 },
      input: [],
      stdinClosed: false,
      kills: [],
    };
    this.processes.set(id, proc);
    return proc;
  }

  get(id: string): FakeProcess {
    const proc = this.processes.get(id);
    if (proc === undefined) throw new Error(`fake: no process ${id}`);
    return proc;
  }

  /**
   * Append output and send it as one chunk to every attached client. For a
   * client of the JSON format, `text` must end on a character boundary (the
   * real server never cuts a character there); binary clients get raw bytes.
   */
  emit(id: string, stream: ProcessStream, text: string | Buffer): void {
    const proc = this.get(id);
    const bytes = typeof text === "string" ? Buffer.from(text, "utf8") : text;
    const offset = proc.out[stream].length;
    proc.out[stream] = Buffer.concat([proc.out[stream], bytes]);
    for (const c of this.live(id)) sendChunk(c, stream, bytes, offset);
  }

  /** Forget the bytes of a stream before `offset`. */
  evict(id: string, stream: ProcessStream, offset: number): void {
    this.get(id).evicted[stream] = offset;
  }

  /** End the process: exit frame and close 1000 on every attached client. */
  finish(id: string, exit: FakeExit): void {
    const proc = this.get(id);
    proc.exit = exit;
    proc.info = { ...proc.info, status: "exited", exitCode: exit.exitCode, endedAt: "2025-01-01T00:01:00.000Z" };
    if (exit.signal !== undefined) proc.info.signal = exit.signal;
    if (exit.reason !== undefined) proc.info.reason = exit.reason;
    for (const c of this.live(id)) {
      send(c.socket, { type: "exit", ...exit });
      c.socket.close(1000);
    }
  }

  /** Kill every stream connection abruptly (the client sees 1006). */
  dropAll(): void {
    for (const c of this.connections) c.socket.terminate();
  }

  /** Close every stream connection with 1001, as a stopping server does. */
  goingAway(): void {
    for (const c of this.live()) c.socket.close(1001, "server stopping");
  }

  /**
   * Stop like a server going down: stop listening (new connections are
   * refused), close every stream with 1001 (or cut them with `abrupt`), then
   * drop whatever is left.
   */
  async stop(options: { abrupt?: boolean } = {}): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const live = this.live();
    if (options.abrupt === true) for (const c of this.connections) c.socket.terminate();
    else {
      await Promise.all(
        live.map((c) => new Promise<void>((resolve) => {
          c.socket.once("close", () => resolve());
          c.socket.close(1001, "server stopping");
        })),
      );
    }
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Listen again on the same port after `stop()`. */
  async restart(): Promise<void> {
    await this.listen(this.port);
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.socket.terminate();
    for (const s of this.sockets) s.destroy();
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.wss.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------- internals

  private async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  private createServer(): http.Server {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const url = new URL(req.url ?? "/", "http://fake");
        const request: RestRequest = { method: req.method ?? "", path: url.pathname, query: url.searchParams, body: text === "" ? undefined : JSON.parse(text) };
        this.requests.push(request);
        const [status, body] = this.authorized(req.headers.authorization, null) ? this.rest(request) : [401, error("UNAUTHORIZED", "bad key")];
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      });
    });
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    server.on("upgrade", (req, socket, head) => this.upgrade(req, socket as Socket, head));
    return server;
  }

  private authorized(header: string | undefined, token: string | null): boolean {
    return header === `Bearer ${FAKE_KEY}` || token === FAKE_KEY;
  }

  private rest(req: RestRequest): [number, unknown] {
    const base = `/v1/sandboxes/${FAKE_SANDBOX}`;
    if (req.method === "GET" && req.path === base) return [200, sandboxInfo()];
    if (!req.path.startsWith(`${base}/processes`)) return [404, error("SANDBOX_NOT_FOUND", "no such sandbox")];
    const rest = req.path.slice(`${base}/processes`.length).split("/").filter(Boolean).map(decodeURIComponent);
    const [pid, action] = rest;
    if (pid === undefined) {
      if (req.method === "GET") return [200, { processes: [...this.processes.values()].map((p) => p.info) }];
      if (req.method === "POST") {
        const body = (req.body ?? {}) as Record<string, unknown>;
        const id = typeof body["id"] === "string" ? body["id"] : `proc-${++this.counter}`;
        const existing = this.processes.get(id);
        if (existing !== undefined) return [200, existing.info];
        const overrides: Partial<ProcessInfo> = {};
        if (typeof body["command"] === "string") overrides.command = body["command"];
        if (Array.isArray(body["argv"])) overrides.argv = body["argv"] as string[];
        else overrides.argv = undefined;
        if (typeof body["cwd"] === "string") overrides.cwd = body["cwd"];
        const proc = this.addProcess(id, overrides);
        if (proc.info.argv === undefined) delete proc.info.argv;
        return [201, proc.info];
      }
    }
    const proc = pid === undefined ? undefined : this.processes.get(pid);
    if (proc === undefined) return [404, error("NOT_FOUND", `no process ${pid}`)];
    const body = (req.body ?? {}) as Record<string, unknown>;
    switch (`${req.method} ${action ?? ""}`) {
      case "GET ":
        return [200, proc.info];
      case "POST kill": {
        const signal = typeof body["signal"] === "string" ? body["signal"] : undefined;
        proc.kills.push(signal);
        if (this.exitOnKill && proc.exit === undefined) this.finish(proc.info.id, { exitCode: null, signal: signal ?? "SIGKILL", reason: "killed" });
        return [200, proc.info];
      }
      case "POST input":
        proc.input.push(String(body["data"]));
        return [200, { ok: true }];
      case "POST close-stdin":
        proc.stdinClosed = true;
        return [200, { ok: true }];
      case "GET logs": {
        const logs: Record<string, unknown> = { status: proc.info.status };
        const truncated: Record<string, unknown> = {};
        for (const stream of ["stdout", "stderr"] as const) {
          const requested = Number(req.query.get(`${stream}Offset`) ?? 0);
          let start = requested;
          if (requested < proc.evicted[stream]) {
            start = proc.evicted[stream];
            truncated[stream] = { requestedOffset: requested, availableOffset: start };
          }
          const bytes = proc.out[stream].subarray(Math.min(start, proc.out[stream].length));
          logs[stream] = bytes.toString("utf8");
          logs[`${stream}Offset`] = start + bytes.length;
        }
        if (Object.keys(truncated).length > 0) logs["truncated"] = truncated;
        if (proc.exit !== undefined) Object.assign(logs, proc.exit);
        return [200, logs];
      }
      default:
        return [404, error("NOT_FOUND", `no route ${req.method} ${req.path}`)];
    }
  }

  private upgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    this.upgrades++;
    const url = new URL(req.url ?? "/", "http://fake");
    const token = url.searchParams.get("token");
    if (!this.authorized(req.headers.authorization, token)) return refuse(socket, 401, error("UNAUTHORIZED", "bad key"));
    if (this.refuseUpgrades !== undefined) return refuse(socket, this.refuseUpgrades, error("RUNTIME_UNAVAILABLE", "refused by the test"));
    const match = /^\/v1\/sandboxes\/([^/]+)\/processes\/([^/]+)\/stream$/.exec(url.pathname);
    const proc = match !== null && match[1] === FAKE_SANDBOX ? this.processes.get(decodeURIComponent(match[2]!)) : undefined;
    if (proc === undefined && this.notFound === "http") return refuse(socket, 404, error("NOT_FOUND", "no such process"));
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (proc === undefined) {
        send(ws, { type: "error", code: "NOT_FOUND", message: "no such process" });
        ws.close(4404, "not found");
        return;
      }
      const connection: StreamConnection = {
        processId: proc.info.id,
        query: {
          stdoutOffset: Number(url.searchParams.get("stdoutOffset") ?? 0),
          stderrOffset: Number(url.searchParams.get("stderrOffset") ?? 0),
          token,
          format: url.searchParams.get("format"),
        },
        headers: req.headers,
        socket: ws,
        received: [],
      };
      this.connections.push(connection);
      ws.on("error", () => undefined);
      ws.on("message", (data) => {
        const frame = JSON.parse(String(data)) as Record<string, unknown>;
        connection.received.push(frame);
        if (frame["type"] === "input") proc.input.push(String(frame["data"]));
        if (frame["type"] === "close_stdin") proc.stdinClosed = true;
        if (frame["type"] === "kill") {
          const signal = typeof frame["signal"] === "string" ? frame["signal"] : undefined;
          proc.kills.push(signal);
          if (this.exitOnKill && proc.exit === undefined) this.finish(proc.info.id, { exitCode: null, signal: signal ?? "SIGKILL", reason: "killed" });
        }
        this.onFrame?.(connection, frame);
      });
      send(ws, { type: "started", id: proc.info.id, pid: proc.info.pid });
      for (const stream of ["stdout", "stderr"] as const) {
        const requested = stream === "stdout" ? connection.query.stdoutOffset : connection.query.stderrOffset;
        let start = requested;
        if (requested < proc.evicted[stream]) {
          start = proc.evicted[stream];
          send(ws, { type: "truncated", stream, requestedOffset: requested, availableOffset: start });
        }
        if (start < proc.out[stream].length) sendChunk(connection, stream, proc.out[stream].subarray(start), start);
      }
      if (proc.exit !== undefined) {
        send(ws, { type: "exit", ...proc.exit });
        ws.close(1000);
      }
    });
  }
}

/** Output as the connection asked for it: a JSON text frame, or (`?format=binary`) a binary one. */
function sendChunk(connection: StreamConnection, stream: ProcessStream, bytes: Buffer, offset: number): void {
  if (connection.query.format !== "binary") {
    send(connection.socket, { type: stream, data: bytes.toString("utf8"), offset, bytes: bytes.length });
    return;
  }
  const head = Buffer.alloc(9);
  head[0] = stream === "stdout" ? 1 : 2;
  head.writeBigUInt64BE(BigInt(offset), 1);
  if (connection.socket.readyState === WebSocket.OPEN) connection.socket.send(Buffer.concat([head, bytes]), { binary: true });
}

function send(ws: WebSocket, frame: unknown): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

function refuse(socket: Socket, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}

function error(code: string, message: string): unknown {
  return { error: { code, message } };
}

export function sandboxInfo(): Record<string, unknown> {
  return {
    id: FAKE_SANDBOX,
    template: "default",
    status: "ready",
    createdAt: "2025-01-01T00:00:00.000Z",
    expiresAt: "2025-01-01T01:00:00.000Z",
    metadata: {},
    resources: { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 },
    network: { mode: "none" },
  };
}
