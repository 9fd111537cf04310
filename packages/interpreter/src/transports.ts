/**
 * How frames reach a worker: a child process's stdin/stdout (subprocess,
 * through whatever isolation started it) or a WebSocket to a remote worker
 * (`agentbox worker --listen`), one binary message per frame payload.
 */
import type { Readable, Writable } from "node:stream";
import WebSocket from "ws";
import { WORKER_MAX_FRAME_BYTES, WorkerFrameReader, encodeWorkerFrame } from "@agentbox/protocol";

export interface WorkerTransport {
  send(message: unknown): void;
  /** Each frame payload as it arrives. */
  onPayload: ((payload: Buffer) => void) | undefined;
  /** Once, when the worker is gone (exited, connection lost, broken frame). */
  onClose: ((reason: string) => void) | undefined;
  /** Interrupt the running code (SIGINT for a process); a no-op where impossible. */
  interrupt(): void;
  /** End the worker at once. */
  kill(): void;
  /** Raw bytes as they are (protocol tests: broken and oversize frames). */
  sendRaw(bytes: Buffer): void;
}

/** A started worker process: its pipes and how to signal it. */
export interface WorkerProcess {
  stdin: Writable;
  stdout: Readable;
  stderr?: Readable;
  exited: Promise<{ code: number | null; signal: string | null }>;
  kill(signal: "SIGINT" | "SIGKILL"): void;
}

/** Frames over a process's stdio. The worker's source goes first (see languages.ts). */
export class SubprocessTransport implements WorkerTransport {
  onPayload: ((payload: Buffer) => void) | undefined;
  onClose: ((reason: string) => void) | undefined;
  private closed = false;
  private stderrTail = "";

  constructor(
    private readonly proc: WorkerProcess,
    bootSource: Buffer | undefined,
    maxFrameBytes = WORKER_MAX_FRAME_BYTES,
  ) {
    const reader = new WorkerFrameReader(maxFrameBytes);
    proc.stdout.on("data", (chunk: Buffer) => {
      let payloads: Buffer[];
      try {
        payloads = reader.push(chunk);
      } catch (err) {
        this.close(`broken frame from the worker: ${(err as Error).message}`);
        proc.kill("SIGKILL");
        return;
      }
      for (const p of payloads) this.onPayload?.(p);
    });
    proc.stderr?.on("data", (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    proc.stdin.on("error", () => undefined);
    void proc.exited.then((st) => {
      const tail = this.stderrTail.trim().split("\n").slice(-3).join(" | ");
      this.close(`the worker exited (${st.signal ?? `code ${st.code}`})${tail ? `: ${tail}` : ""}`);
    });
    if (bootSource) {
      const head = Buffer.allocUnsafe(4);
      head.writeUInt32BE(bootSource.length, 0);
      proc.stdin.write(Buffer.concat([head, bootSource]));
    }
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose?.(reason);
  }

  send(message: unknown): void {
    if (!this.closed) this.proc.stdin.write(encodeWorkerFrame(message));
  }

  /** Raw bytes to the worker (tests of broken frames). */
  sendRaw(bytes: Buffer): void {
    this.proc.stdin.write(bytes);
  }

  interrupt(): void {
    this.proc.kill("SIGINT");
  }

  kill(): void {
    this.proc.kill("SIGKILL");
  }
}

/** Frames over a WebSocket to a remote worker; one connection is one worker. */
export class WebSocketTransport implements WorkerTransport {
  onPayload: ((payload: Buffer) => void) | undefined;
  onClose: ((reason: string) => void) | undefined;
  private closed = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (isBinary) this.onPayload?.(data);
    });
    ws.on("close", (code, reason) => this.close(`the remote worker closed the connection (${code}${reason.length ? ` ${reason.toString()}` : ""})`));
    ws.on("error", (err) => this.close(`remote worker: ${err.message}`));
  }

  static connect(url: string, options: { headers?: Record<string, string>; maxFrameBytes?: number } = {}): Promise<WebSocketTransport> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: options.headers ?? {}, maxPayload: options.maxFrameBytes ?? WORKER_MAX_FRAME_BYTES });
      ws.once("open", () => resolve(new WebSocketTransport(ws)));
      ws.once("error", reject);
    });
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose?.(reason);
  }

  send(message: unknown): void {
    if (!this.closed) this.ws.send(Buffer.from(JSON.stringify(message)), { binary: true });
  }

  /** One binary message of raw bytes (the payload of one frame). */
  sendRaw(bytes: Buffer): void {
    if (!this.closed) this.ws.send(bytes, { binary: true });
  }

  /** A remote worker is interrupted by the remote side's own watchdog: ask it to. */
  interrupt(): void {
    if (!this.closed) this.ws.send("interrupt");
  }

  kill(): void {
    this.ws.terminate();
  }
}
