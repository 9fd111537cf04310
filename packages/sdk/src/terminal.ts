/**
 * PTY terminals: an interactive program (a login shell by default) on a
 * pseudo-terminal in the sandbox. A terminal lives until it is deleted or its
 * program exits; clients attach and detach freely, and each attach first
 * replays the recent output.
 *
 *   const term = await sb.terminals.create({ cols: 120, rows: 40 });
 *   const conn = await term.connect();
 *   conn.onData((bytes) => process.stdout.write(bytes));
 *   conn.write("ls -la\r");
 *   conn.resize(100, 30);
 *   const { exitCode } = await conn.exited;
 */
import WebSocket from "ws";
import type { CreateTerminalRequest, TerminalInfo, TerminalServerMessage } from "@agentbox/protocol";
import { AgentboxApiError, CONNECTION_FAILED, isSdkErrorCode } from "./errors.js";
import type { HttpTransport } from "./http.js";

export type { TerminalInfo, CreateTerminalRequest };

export interface TerminalExit {
  exitCode: number | null;
  signal?: string;
}

/** One client's connection to a terminal. */
export class TerminalConnection {
  /** Resolves when the terminal's program exits; rejects if the connection fails or closes first. */
  readonly exited: Promise<TerminalExit>;
  /** Resolves when the socket has closed, for whatever reason. */
  readonly closed: Promise<void>;
  private readonly dataListeners = new Set<(data: Buffer) => void>();
  /** Output that arrived before the first listener (the replay comes at once): handed to it. */
  private early: Buffer[] | undefined = [];

  /** @internal Use `terminal.connect()`. */
  constructor(private readonly socket: WebSocket) {
    let exit: TerminalExit | undefined;
    let failure: AgentboxApiError | undefined;
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.exited = new Promise((resolve, reject) => {
      socket.on("message", (data: Buffer, binary) => {
        if (binary) {
          if (this.early) this.early.push(data);
          else for (const fn of this.dataListeners) fn(data);
          return;
        }
        const message = JSON.parse(data.toString("utf8")) as TerminalServerMessage;
        if (message.type === "exit") {
          exit = { exitCode: message.exitCode };
          if (message.signal) exit.signal = message.signal;
        } else if (message.type === "error") {
          failure = new AgentboxApiError(isSdkErrorCode(message.code) ? message.code : "INTERNAL", message.message);
        }
      });
      socket.once("close", (code, reason) => {
        if (exit) resolve(exit);
        else reject(failure ?? new AgentboxApiError(CONNECTION_FAILED, `terminal connection closed (${code}${reason.length ? ` ${reason}` : ""}) before the program exited`));
      });
    });
    this.exited.catch(() => undefined); // observed through `exited` by those who care
  }

  /**
   * Receive output bytes (raw terminal output, escape sequences included). The first
   * listener also gets everything that arrived before it (the replay). Returns an
   * unsubscribe function.
   */
  onData(listener: (data: Buffer) => void): () => void {
    this.dataListeners.add(listener);
    const early = this.early;
    if (early) {
      this.early = undefined;
      for (const chunk of early) listener(chunk);
    }
    return () => this.dataListeners.delete(listener);
  }

  /** Send keystrokes or pasted text (a string is sent as UTF-8). */
  write(data: string | Uint8Array): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(typeof data === "string" ? Buffer.from(data, "utf8") : data, { binary: true });
  }

  resize(cols: number, rows: number): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Detach: the terminal keeps running. */
  close(): void {
    this.socket.close(1000);
  }
}

export class Terminal {
  private current: TerminalInfo;

  /** @internal Use `sandbox.terminals`. */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandboxId: string,
    info: TerminalInfo,
  ) {
    this.current = info;
  }

  get id(): string {
    return this.current.id;
  }

  get info(): Readonly<TerminalInfo> {
    return this.current;
  }

  private get path(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/terminals/${encodeURIComponent(this.current.id)}`;
  }

  /** Attach. Output starts with the replay of recent output, then goes live. */
  connect(options: { handshakeTimeoutMs?: number } = {}): Promise<TerminalConnection> {
    const socket = new WebSocket(this.http.websocketUrl(`${this.path}/connect`), {
      headers: this.http.baseHeaders(),
      handshakeTimeout: options.handshakeTimeoutMs ?? 10_000,
    });
    return new Promise((resolve, reject) => {
      // Listeners go on before the socket can deliver anything: the replay comes at once.
      const connection = new TerminalConnection(socket);
      socket.once("open", () => resolve(connection));
      socket.once("unexpected-response", (_req, res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => {
          let code: string = CONNECTION_FAILED;
          let message = `terminal connection refused (${res.statusCode})`;
          try {
            const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
            if (isSdkErrorCode(body.error?.code)) code = body.error.code;
            if (body.error?.message) message = body.error.message;
          } catch {
            /* not JSON */
          }
          reject(new AgentboxApiError(code as "INTERNAL", message, { status: res.statusCode ?? 0 }));
        });
      });
      socket.once("error", (err) => reject(new AgentboxApiError(CONNECTION_FAILED, `cannot connect to the terminal: ${err.message}`, { cause: err })));
    });
  }

  async refresh(): Promise<TerminalInfo> {
    this.current = await this.http.request<TerminalInfo>("GET", this.path);
    return this.current;
  }

  /** Kill the terminal's program and everything it started; connected clients get the exit. */
  async delete(): Promise<void> {
    await this.http.request("DELETE", this.path);
  }

  toJSON(): TerminalInfo {
    return this.current;
  }
}

/** `sandbox.terminals`: create, find, list and delete the sandbox's terminals. */
export class Terminals {
  /** @internal */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandboxId: string,
  ) {}

  private get path(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/terminals`;
  }

  /** Start a terminal (a login shell unless `command` is given). Creating an `id` that exists returns that terminal. */
  async create(options: CreateTerminalRequest = {}): Promise<Terminal> {
    const info = await this.http.request<TerminalInfo>("POST", this.path, { body: options });
    return new Terminal(this.http, this.sandboxId, info);
  }

  async get(id: string): Promise<Terminal> {
    const info = await this.http.request<TerminalInfo>("GET", `${this.path}/${encodeURIComponent(id)}`);
    return new Terminal(this.http, this.sandboxId, info);
  }

  async list(): Promise<TerminalInfo[]> {
    return (await this.http.request<{ terminals: TerminalInfo[] }>("GET", this.path)).terminals;
  }

  async delete(id: string): Promise<void> {
    await this.http.request("DELETE", `${this.path}/${encodeURIComponent(id)}`);
  }
}
