/**
 * A live handle on a background process: its output as it is produced, read
 * from the stream WebSocket (`GET …/processes/:pid/stream`), its exit, and the
 * calls that act on it (input, close stdin, kill).
 *
 *   const proc = await sb.startProcess("npm run dev");
 *   for await (const chunk of proc) process.stdout.write(chunk.data);   // ends at exit
 *   const { exitCode } = await proc.wait();
 *
 * Output is addressed by byte offsets per stream. The handle remembers how far
 * it has read each stream and, when the connection drops, attaches again from
 * exactly there, so no byte is lost or seen twice:
 * - close 1001 (the server is stopping; the process keeps running): reconnect
 *   at once, then every 0.5 s while the server restarts, for up to 30 s;
 * - any other unexpected close or connection error: retry after 0.5 s, 1 s,
 *   2 s, 4 s, 8 s; after the fifth failed try, give up;
 * - never after the exit, after `disconnect()`, or when the server said the
 *   process or sandbox does not exist (close 4404, HTTP 404), refused the key
 *   (4401, HTTP 401) or the request (1008, HTTP 4xx).
 * Giving up rejects `wait()` with an `AgentboxApiError` (code CONNECTION_FAILED,
 * or the server's code), makes iterators throw it, and emits `error` (only when
 * someone listens: unlike a plain EventEmitter an unheard `error` is not thrown).
 * The process is not affected: `handle.reconnect()`, or a new handle from
 * `sandbox.getProcess(id, { stdoutOffset, stderrOffset })` with the offsets in
 * the error's details, picks up where this one stopped.
 */
import { EventEmitter } from "node:events";
import WebSocket from "ws";
import { isErrorCode, type ErrorCode, type ExitReason } from "@agentbox/protocol";
import { AgentboxApiError, CONNECTION_FAILED, isAgentboxError } from "./errors.js";
import { errorFromResponse, type HttpTransport } from "./http.js";
import {
  STREAM_CLOSE,
  type ProcessInfo,
  type ProcessSignal,
  type ProcessStream,
  type StreamClientMessage,
  type Truncation,
} from "./process-types.js";

/** A piece of output, as the server sent it. */
export interface ProcessChunk {
  stream: ProcessStream;
  /** UTF-8 text, never split inside a character (invalid bytes arrive as U+FFFD). */
  data: string;
  /** Byte offset of the chunk's first byte in its stream. */
  offset: number;
  /**
   * Set on the first chunk after output of this stream was lost: the bytes from
   * `requestedOffset` to `availableOffset` had been evicted from the server's
   * bounded log before this handle could read them.
   */
  truncated?: Truncation;
}

/** Bytes of each stream received so far: where the handle resumes. */
export interface ProcessOffsets {
  stdout: number;
  stderr: number;
}

/** What `wait()` resolves with. */
export interface ProcessResult {
  /** Null when the process was ended by a signal. */
  exitCode: number | null;
  signal?: string;
  reason?: ExitReason;
  /**
   * The output received since this handle attached (from `stdoutOffset` /
   * `stderrOffset`), joined. It is all kept in memory: for large output,
   * iterate or use `onStdout`/`onStderr` with `keepOutput: false` instead.
   * Empty with `keepOutput: false`.
   */
  stdout: string;
  stderr: string;
  /** True when some of the stream's output was evicted by the server before this handle read it. */
  truncated: { stdout: boolean; stderr: boolean };
}

export interface ReconnectPolicy {
  /** Delay before the first retry after an unexpected drop; doubled on each failed try. Default 500. */
  initialDelayMs: number;
  /** Cap on that delay. Default 8000. */
  maxDelayMs: number;
  /** Failed tries in a row before giving up. Default 5. */
  maxRetries: number;
  /** After close 1001 (server stopping): interval between tries while it restarts. Default 500. */
  restartIntervalMs: number;
  /** …and how long to keep trying, from the close. Default 30000. */
  restartWindowMs: number;
}

export const DEFAULT_RECONNECT_POLICY: Readonly<ReconnectPolicy> = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 8000,
  maxRetries: 5,
  restartIntervalMs: 500,
  restartWindowMs: 30_000,
});

/** How to attach to a process's output (`sandbox.getProcess`, and `startProcess`). */
export interface AttachOptions {
  /** Byte offset of stdout to start from (default 0: all the output the server still has). */
  stdoutOffset?: number | undefined;
  stderrOffset?: number | undefined;
  /** Called for every stdout chunk, in order (same as `handle.onStdout(cb)` before any output). */
  onStdout?: ((data: string, chunk: ProcessChunk) => void) | undefined;
  onStderr?: ((data: string, chunk: ProcessChunk) => void) | undefined;
  /**
   * Keep the output for `wait()` and for iterators that start late (default true).
   * With false, `wait()` resolves with empty stdout/stderr and an iterator only
   * sees chunks that arrive while it exists: memory stays flat however much the
   * process prints, and an iteration that falls behind pauses reading from the
   * server (which keeps the output in its log) instead of buffering it here.
   */
  keepOutput?: boolean | undefined;
  /** Reconnection settings, or false to give up at the first drop. */
  reconnect?: Partial<ReconnectPolicy> | false | undefined;
  /** The handle pings the server this often and drops a connection that stays silent for two intervals. Default 30000; 0 = off. */
  pingIntervalMs?: number | undefined;
  /** Limit on each WebSocket opening handshake. Default 10000. */
  handshakeTimeoutMs?: number | undefined;
  /**
   * How output travels on the stream: `"binary"` (default) asks the server for
   * raw bytes (`?format=binary`) and decodes the text here, which spares the
   * server the decoding and JSON escaping; `"json"` takes the text frames of
   * the base protocol. Either way the chunks are the same.
   */
  format?: "binary" | "json" | undefined;
}

export interface ProcessHandleEvents {
  /** Every (re)attach, once the server accepted it. */
  started: [{ id: string; pid: number }];
  stdout: [data: string, chunk: ProcessChunk];
  stderr: [data: string, chunk: ProcessChunk];
  /** Every chunk of either stream, in order. */
  chunk: [chunk: ProcessChunk];
  /** Output was lost: the server had evicted it before it could be read. */
  truncated: [info: Truncation & { stream: ProcessStream }];
  /** The connection dropped (or a try failed); try number `attempt` since the last attach starts after `delayMs`. */
  reconnecting: [info: { attempt: number; delayMs: number; reason: string }];
  exit: [result: ProcessResult];
  /** The handle gave up (the same error rejects `wait()`). */
  error: [error: AgentboxApiError];
  /** An `error` frame after which the stream went on (e.g. the server rejected a frame this handle sent). */
  serverError: [error: { code: string; message: string }];
}

type EndState = { kind: "exit" } | { kind: "error"; error: AgentboxApiError } | { kind: "disconnected" };

/** What one connection attempt learned, to decide what its close means. */
interface Attempt {
  started: boolean;
  /** The upgrade was answered with an HTTP error. */
  httpError?: AgentboxApiError;
  socketError?: Error;
  serverError?: { code: string; message: string };
}

class Deferred<T> {
  readonly promise: Promise<T>;
  resolve!: (value: T) => void;
  reject!: (error: unknown) => void;
  constructor() {
    this.promise = new Promise<T>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Nobody has to call wait(): a rejection nobody asked for is not "unhandled".
    this.promise.catch(() => undefined);
  }
}

/** An iterator's own queue (keepOutput: false); `chars` counts the text not yet read. */
interface Queue {
  items: Array<ProcessChunk | undefined>;
  head: number;
  chars: number;
}

const COMPACT_AFTER = 1024;
/**
 * With keepOutput: false, an iterator that falls this far behind (UTF-16 units
 * queued) pauses reading from the socket, so that TCP slows the server down
 * instead of memory filling up here; reading resumes below RESUME_BELOW.
 */
const PAUSE_ABOVE = 8 * 1024 * 1024;
const RESUME_BELOW = 1024 * 1024;

export class ProcessHandle extends EventEmitter<ProcessHandleEvents> {
  /** The sandbox the process runs in. */
  readonly sandboxId: string;
  private readonly http: HttpTransport;
  private current: ProcessInfo;
  private readonly position: ProcessOffsets;
  private readonly keepOutput: boolean;
  private readonly policy: ReconnectPolicy | undefined;
  private readonly pingIntervalMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly format: "binary" | "json";
  /** Binary format: the start of a character cut by the end of a frame, waiting for the rest. */
  private readonly partial: { stdout?: { offset: number; bytes: Buffer } | undefined; stderr?: { offset: number; bytes: Buffer } | undefined } = {};

  /** Every chunk since attaching (with keepOutput). */
  private readonly history: ProcessChunk[] = [];
  /** The queues of the running iterators that do not read `history` (keepOutput: false). */
  private readonly queues = new Set<Queue>();
  private readonly lost: { stdout: boolean; stderr: boolean } = { stdout: false, stderr: false };
  private readonly pendingGap: { stdout?: Truncation | undefined; stderr?: Truncation | undefined } = {};
  private waiters: Array<() => void> = [];

  private done = new Deferred<ProcessResult>();
  private result: ProcessResult | undefined;
  private end: EndState | undefined;

  private socket: WebSocket | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Failed connections in a row outside a server restart (drives the backoff). */
  private failures = 0;
  /** Reconnection tries since the last successful attach (for the `reconnecting` event). */
  private tries = 0;
  private restartSince: number | undefined;
  private stopped = false;
  private inputChain: Promise<unknown> = Promise.resolve();

  /** @internal Use `sandbox.startProcess()` or `sandbox.getProcess()`. */
  constructor(http: HttpTransport, sandboxId: string, info: ProcessInfo, options: AttachOptions = {}) {
    super();
    this.http = http;
    this.sandboxId = sandboxId;
    this.current = info;
    this.position = { stdout: options.stdoutOffset ?? 0, stderr: options.stderrOffset ?? 0 };
    this.keepOutput = options.keepOutput ?? true;
    this.policy = options.reconnect === false ? undefined : { ...DEFAULT_RECONNECT_POLICY, ...options.reconnect };
    this.pingIntervalMs = options.pingIntervalMs ?? 30_000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    this.format = options.format ?? "binary";
    if (options.onStdout !== undefined) this.on("stdout", options.onStdout);
    if (options.onStderr !== undefined) this.on("stderr", options.onStderr);
    this.connect();
  }

  /** The process's id (`:pid` in the API's paths). */
  get id(): string {
    return this.current.id;
  }

  /** Its pid inside the sandbox. */
  get pid(): number {
    return this.current.pid;
  }

  /** The latest state known: from the server when the handle was made (or `refresh()`ed), updated by the stream. */
  get info(): Readonly<ProcessInfo> {
    return this.current;
  }

  /** Bytes of stdout and stderr received so far (the offsets the handle resumes from). */
  get offsets(): ProcessOffsets {
    return { ...this.position };
  }

  /** True once the exit arrived. */
  get exited(): boolean {
    return this.result !== undefined;
  }

  /** True while a stream connection is open. */
  get connected(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Between a drop and the next attach (or giving up). */
  private get reconnecting(): boolean {
    return this.result === undefined && this.end === undefined && !this.stopped && (this.socket !== undefined || this.retryTimer !== undefined);
  }

  private get path(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/processes/${encodeURIComponent(this.current.id)}`;
  }

  /** Call `callback` for every stdout chunk from now on; returns a function that unregisters it. */
  onStdout(callback: (data: string, chunk: ProcessChunk) => void): () => void {
    this.on("stdout", callback);
    return () => this.off("stdout", callback);
  }

  onStderr(callback: (data: string, chunk: ProcessChunk) => void): () => void {
    this.on("stderr", callback);
    return () => this.off("stderr", callback);
  }

  /**
   * Resolves at the exit with the exit status and the output received since
   * attaching. Rejects if the handle gives up reconnecting. After
   * `disconnect()` it stays pending: `reconnect()` the handle (or attach a new
   * one with `sandbox.getProcess(id)`) to learn how the process ended.
   */
  wait(): Promise<ProcessResult> {
    return this.done.promise;
  }

  /**
   * Iterate over the output, both streams in the order received; the
   * iteration ends at the exit (or early at `disconnect()`), and throws if the
   * handle gives up. Every iteration sees every chunk: with `keepOutput` (the
   * default) from the first one since attaching, however late it starts, so
   * nothing is missed between `startProcess()` and the loop; with
   * `keepOutput: false`, those that arrive while it runs.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<ProcessChunk> {
    let finished = false;
    let next = 0; // in `history`
    const queue: Queue | undefined = this.keepOutput ? undefined : { items: [], head: 0, chars: 0 };
    if (queue !== undefined) this.queues.add(queue);
    const release = (): void => {
      if (finished) return;
      finished = true;
      if (queue !== undefined) {
        this.queues.delete(queue);
        this.resumeIfCaughtUp();
      }
    };
    const take = (): ProcessChunk | undefined => {
      if (queue === undefined) {
        const chunk = this.history[next];
        if (chunk !== undefined) next++;
        return chunk;
      }
      const chunk = queue.items[queue.head];
      if (chunk === undefined) return undefined;
      queue.items[queue.head] = undefined; // let it go
      queue.head++;
      queue.chars -= chunk.data.length;
      if (queue.head >= COMPACT_AFTER && queue.head * 2 >= queue.items.length) {
        queue.items = queue.items.slice(queue.head);
        queue.head = 0;
      }
      this.resumeIfCaughtUp();
      return chunk;
    };
    const iterator: AsyncIterableIterator<ProcessChunk> = {
      next: async (): Promise<IteratorResult<ProcessChunk>> => {
        for (;;) {
          if (finished) return { done: true, value: undefined };
          const chunk = take();
          if (chunk !== undefined) return { done: false, value: chunk };
          const end = this.end;
          if (end !== undefined) {
            release();
            if (end.kind === "error") throw end.error;
            return { done: true, value: undefined };
          }
          await new Promise<void>((resolve) => this.waiters.push(resolve));
        }
      },
      return: async (): Promise<IteratorResult<ProcessChunk>> => {
        release();
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Send a signal to the process and its children (the server's default is
   * SIGKILL). Goes over the stream when it is open, else `POST …/kill`. The exit
   * still arrives through the handle (`wait()`). A kill sent just as the
   * connection dropped may be lost with it: call kill() again if the process
   * goes on. After kill(), a handle that is not attached (disconnected, or
   * given up) is not attached again.
   */
  async kill(signal?: ProcessSignal): Promise<void> {
    if (this.result !== undefined) return;
    const frame: StreamClientMessage = signal === undefined ? { type: "kill" } : { type: "kill", signal };
    const socket = this.socket;
    if (socket !== undefined && socket.readyState === WebSocket.OPEN) {
      try {
        await sendFrame(socket, frame);
        return;
      } catch {
        // The socket died under us: say it over HTTP instead.
      }
    }
    const info = await this.http.request<ProcessInfo>("POST", `${this.path}/kill`, { body: signal === undefined ? {} : { signal } });
    if (isProcessInfo(info) && this.result === undefined) this.current = info;
  }

  /**
   * Write to the process's stdin: over the stream when it is open, else
   * `POST …/input`; if the server cannot be reached while the handle is
   * reconnecting, the input waits for the stream to be back (and is rejected if
   * the handle gives up). Calls are delivered in order. A frame on the stream
   * is not acknowledged: input written just as the connection dropped may be lost.
   */
  sendInput(data: string): Promise<void> {
    return this.input({ type: "input", data }, "input", { data });
  }

  /** Close the process's stdin (EOF). */
  closeStdin(): Promise<void> {
    return this.input({ type: "close_stdin" }, "close-stdin", {});
  }

  private input(frame: StreamClientMessage, endpoint: string, body: unknown): Promise<void> {
    const run = async (): Promise<void> => {
      let failed: WebSocket | undefined;
      for (;;) {
        const socket = this.socket;
        if (socket !== undefined && socket !== failed && socket.readyState === WebSocket.OPEN) {
          try {
            await sendFrame(socket, frame);
            return;
          } catch {
            failed = socket; // fall back to HTTP
          }
        }
        try {
          await this.http.request<unknown>("POST", `${this.path}/${endpoint}`, { body });
          return;
        } catch (error) {
          // The server is unreachable while the handle reconnects (a restart, say): send it once attached again.
          const unreachable = isAgentboxError(error, CONNECTION_FAILED) || (isAgentboxError(error) && error.status === 503);
          if (!unreachable || !this.reconnecting) throw error;
          const usable = this.socket !== undefined && this.socket !== failed && this.socket.readyState === WebSocket.OPEN;
          if (!usable) await new Promise<void>((resolve) => this.waiters.push(resolve));
        }
      }
    };
    const sent = this.inputChain.then(run, run);
    this.inputChain = sent.catch(() => undefined);
    return sent;
  }

  /**
   * Close the stream and stop reconnecting; the process keeps running. Active
   * iterations end; `wait()` stays pending until `reconnect()`.
   */
  disconnect(): void {
    this.stopped = true;
    this.clearRetry();
    this.dropSocket();
    if (this.result === undefined && this.end?.kind !== "error") {
      this.end = { kind: "disconnected" };
      this.wake();
    }
  }

  /**
   * Attach again from the current offsets, after `disconnect()` or after the
   * handle gave up (a new `wait()` promise then replaces the rejected one).
   * No-op once exited or while attached.
   */
  reconnect(): void {
    if (this.result !== undefined) return;
    if (this.socket !== undefined || this.retryTimer !== undefined) return;
    if (this.end?.kind === "error") this.done = new Deferred<ProcessResult>();
    this.end = undefined;
    this.stopped = false;
    this.failures = 0;
    this.tries = 0;
    this.restartSince = undefined;
    this.connect();
  }

  /** Fetch the process's state from the server (`GET …/processes/:pid`). */
  async refresh(): Promise<ProcessInfo> {
    const info = await this.http.request<ProcessInfo>("GET", this.path);
    this.current = info;
    return info;
  }

  toJSON(): ProcessInfo {
    return this.current;
  }

  // ------------------------------------------------------------ connection

  private connect(): void {
    const url = this.http.websocketUrl(`${this.path}/stream`, {
      stdoutOffset: this.position.stdout,
      stderrOffset: this.position.stderr,
      format: this.format === "binary" ? "binary" : undefined,
    });
    // A character cut at the end of a frame is asked for again from `position`.
    this.partial.stdout = undefined;
    this.partial.stderr = undefined;
    const socket = new WebSocket(url, { headers: this.http.baseHeaders(), handshakeTimeout: this.handshakeTimeoutMs });
    const attempt: Attempt = { started: false };
    this.socket = socket;
    let alive = true;

    socket.on("unexpected-response", (_req, res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        attempt.httpError = errorFromResponse(res.statusCode ?? 0, res.statusMessage ?? "", Buffer.concat(chunks).toString("utf8"));
        socket.terminate();
      });
      res.on("error", () => socket.terminate());
    });
    socket.on("error", (error) => {
      attempt.socketError ??= error;
    });
    socket.on("open", () => {
      if (this.socket !== socket || this.pingIntervalMs <= 0) return;
      this.pingTimer = setInterval(() => {
        if (socket.readyState !== WebSocket.OPEN) return; // closing: its close event stops this
        if (socket.isPaused) {
          alive = true; // a reader that is behind: pongs wait in the socket unread
          return;
        }
        if (!alive) {
          attempt.socketError ??= new Error(`no answer to ping within ${this.pingIntervalMs} ms`);
          socket.terminate();
          return;
        }
        alive = false;
        socket.ping();
      }, this.pingIntervalMs);
      this.pingTimer.unref();
    });
    socket.on("pong", () => {
      alive = true;
    });
    socket.on("ping", () => {
      alive = true;
    });
    socket.on("message", (data, isBinary) => {
      alive = true;
      if (this.socket !== socket) return;
      if (isBinary) this.onBinary(rawBuffer(data));
      else this.onMessage(socket, attempt, rawBuffer(data).toString("utf8"));
    });
    socket.on("close", (code, reason) => this.onClose(socket, attempt, code, reason.toString("utf8")));
  }

  private onMessage(socket: WebSocket, attempt: Attempt, text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (!isRecord(message)) return;
    switch (message["type"]) {
      case "started": {
        attempt.started = true;
        this.failures = 0;
        this.tries = 0;
        this.restartSince = undefined;
        const id = typeof message["id"] === "string" ? message["id"] : this.current.id;
        const pid = typeof message["pid"] === "number" ? message["pid"] : this.current.pid;
        if (this.result === undefined) this.current = { ...this.current, id, pid };
        this.wake(); // input waiting for the stream to be back
        this.fire("started", { id, pid });
        return;
      }
      case "stdout":
      case "stderr": {
        const data = message["data"];
        const offset = message["offset"];
        if (typeof data !== "string" || typeof offset !== "number") return;
        // `bytes` is how much of the stream the chunk covers; a server that left it out sent valid UTF-8.
        const bytes = typeof message["bytes"] === "number" ? message["bytes"] : Buffer.byteLength(data, "utf8");
        this.deliver(message["type"], data, offset, bytes);
        return;
      }
      case "truncated": {
        const stream = message["stream"];
        const requestedOffset = message["requestedOffset"];
        const availableOffset = message["availableOffset"];
        if ((stream !== "stdout" && stream !== "stderr") || typeof availableOffset !== "number") return;
        this.skipTo(stream, typeof requestedOffset === "number" ? requestedOffset : this.position[stream], availableOffset);
        return;
      }
      case "exit": {
        const exitCode = typeof message["exitCode"] === "number" ? message["exitCode"] : null;
        const signal = typeof message["signal"] === "string" ? message["signal"] : undefined;
        const reason = isExitReason(message["reason"]) ? message["reason"] : undefined;
        this.finish(exitCode, signal, reason);
        // The server closes with 1000; closing from this side too leaves nothing behind if it does not.
        if (socket.readyState === WebSocket.OPEN) socket.close(STREAM_CLOSE.NORMAL);
        return;
      }
      case "error": {
        const error = {
          code: typeof message["code"] === "string" ? message["code"] : "INTERNAL",
          message: typeof message["message"] === "string" ? message["message"] : "stream error",
        };
        attempt.serverError = error;
        this.fire("serverError", error);
        return;
      }
      default:
        return; // a message type from a newer server
    }
  }

  private onClose(socket: WebSocket, attempt: Attempt, code: number, reason: string): void {
    if (this.socket !== socket) return; // one this handle dropped itself
    this.socket = undefined;
    this.stopPing();
    if (this.result !== undefined || this.stopped) return;

    const fatal = this.fatalError(attempt, code, reason);
    if (fatal !== undefined) {
      this.giveUp(fatal);
      return;
    }
    const why = describeClose(attempt, code, reason);
    if (this.policy === undefined) {
      this.giveUp(this.lostError(`the stream closed (${why}) and reconnecting is off`, code));
      return;
    }
    const now = Date.now();
    // The server is stopping: it will most likely be back soon, at the same address.
    if (code === STREAM_CLOSE.GOING_AWAY) this.restartSince ??= now;
    let delayMs: number;
    if (this.restartSince !== undefined) {
      if (now - this.restartSince >= this.policy.restartWindowMs) {
        this.giveUp(this.lostError(`the server did not come back within ${this.policy.restartWindowMs} ms (${why})`, code));
        return;
      }
      delayMs = code === STREAM_CLOSE.GOING_AWAY ? 0 : this.policy.restartIntervalMs;
    } else {
      this.failures++;
      if (this.failures > this.policy.maxRetries) {
        this.giveUp(this.lostError(`the stream failed ${this.policy.maxRetries + 1} times in a row; last: ${why}`, code));
        return;
      }
      delayMs = Math.min(this.policy.initialDelayMs * 2 ** (this.failures - 1), this.policy.maxDelayMs);
    }
    this.tries++;
    this.fire("reconnecting", { attempt: this.tries, delayMs, reason: why });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.result === undefined && !this.stopped && this.socket === undefined) this.connect();
    }, delayMs);
  }

  /** A close that retrying cannot fix: unknown process or sandbox, bad key, bad request. */
  private fatalError(attempt: Attempt, code: number, reason: string): AgentboxApiError | undefined {
    const http = attempt.httpError;
    if (http !== undefined) {
      // While a server restarts it may answer before it is ready (a 401 from a server that cannot check keys yet): keep trying.
      const restarting = this.restartSince !== undefined && http.status === 401;
      const retryable = restarting || http.status === 408 || http.status === 429 || http.status >= 500;
      if (retryable) return undefined;
      return new AgentboxApiError(http.code, `process ${this.current.id} in sandbox ${this.sandboxId}: ${http.message}`, {
        status: http.status,
        details: { ...http.details, sandboxId: this.sandboxId, processId: this.current.id },
        serverCode: http.serverCode,
      });
    }
    // 1008: the server rejected the request itself (a bad query); 4xxx: the API's own codes.
    if (code !== 1008 && (code < 4000 || code > 4999)) return undefined;
    const sent = attempt.serverError;
    const fallback: ErrorCode =
      code === 1008 ? "INVALID_REQUEST" : code === STREAM_CLOSE.UNAUTHORIZED ? "UNAUTHORIZED" : code === STREAM_CLOSE.NOT_FOUND ? "NOT_FOUND" : "INTERNAL";
    const errorCode = sent !== undefined && isErrorCode(sent.code) ? sent.code : fallback;
    const message = sent?.message ?? (reason !== "" ? reason : `the server closed the stream with ${code}`);
    return new AgentboxApiError(errorCode, `process ${this.current.id} in sandbox ${this.sandboxId}: ${message}`, {
      details: { sandboxId: this.sandboxId, processId: this.current.id, closeCode: code },
      serverCode: sent !== undefined && !isErrorCode(sent.code) ? sent.code : undefined,
    });
  }

  private lostError(what: string, closeCode: number): AgentboxApiError {
    return new AgentboxApiError(
      CONNECTION_FAILED,
      `lost the output stream of process ${this.current.id} in sandbox ${this.sandboxId}: ${what}; the process may still be running`,
      {
        details: {
          sandboxId: this.sandboxId,
          processId: this.current.id,
          closeCode,
          stdoutOffset: this.position.stdout,
          stderrOffset: this.position.stderr,
        },
      },
    );
  }

  private giveUp(error: AgentboxApiError): void {
    this.clearRetry();
    this.dropSocket();
    this.end = { kind: "error", error };
    this.wake();
    this.done.reject(error);
    this.fire("error", error);
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.stopPing();
    if (socket === undefined) return;
    if (socket.readyState === WebSocket.OPEN) socket.close(STREAM_CLOSE.NORMAL);
    else socket.terminate();
  }

  private stopPing(): void {
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }

  private clearRetry(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  // ------------------------------------------------------------ output

  /** A binary output frame: stream tag (1 stdout, 2 stderr), offset (u64 BE), raw bytes. */
  private onBinary(frame: Buffer): void {
    if (frame.length < 9 || this.result !== undefined) return;
    const stream: ProcessStream | undefined = frame[0] === 1 ? "stdout" : frame[0] === 2 ? "stderr" : undefined;
    if (stream === undefined) return;
    let offset = Number(frame.readBigUInt64BE(1));
    let bytes = frame.subarray(9);
    const partial = this.partial[stream];
    this.partial[stream] = undefined;
    if (partial !== undefined && partial.offset + partial.bytes.length === offset) {
      bytes = Buffer.concat([partial.bytes, bytes]);
      offset = partial.offset;
    }
    const expected = this.position[stream];
    if (offset + bytes.length <= expected) return;
    if (offset < expected) {
      bytes = bytes.subarray(expected - offset);
      offset = expected;
    }
    const whole = completeUtf8Length(bytes);
    if (whole < bytes.length) this.partial[stream] = { offset: offset + whole, bytes: Buffer.from(bytes.subarray(whole)) };
    if (whole > 0) this.deliver(stream, bytes.toString("utf8", 0, whole), offset, whole);
  }

  private deliver(stream: ProcessStream, data: string, offset: number, bytes: number): void {
    if (this.result !== undefined) return;
    const expected = this.position[stream];
    const end = offset + bytes;
    if (bytes <= 0 || end <= expected) return; // empty, or already delivered
    if (offset < expected) {
      // Overlaps what was delivered: keep only the new part (exact when the text is the bytes, i.e. valid UTF-8).
      const raw = Buffer.from(data, "utf8");
      if (raw.length === bytes) {
        data = raw.subarray(expected - offset).toString("utf8");
        offset = expected;
      }
    } else if (offset > expected) {
      this.skipTo(stream, expected, offset); // a gap the server did not announce
    }
    this.position[stream] = end;
    const chunk: ProcessChunk = { stream, data, offset };
    const gap = this.pendingGap[stream];
    if (gap !== undefined) {
      chunk.truncated = gap;
      this.pendingGap[stream] = undefined;
    }
    if (this.keepOutput) this.history.push(chunk);
    for (const queue of this.queues) {
      queue.items.push(chunk);
      queue.chars += data.length;
      if (queue.chars > PAUSE_ABOVE && this.socket?.readyState === WebSocket.OPEN && !this.socket.isPaused) this.socket.pause();
    }
    this.wake();
    this.fire("chunk", chunk);
    this.fire(stream, data, chunk);
  }

  private skipTo(stream: ProcessStream, requestedOffset: number, availableOffset: number): void {
    if (availableOffset <= this.position[stream]) return;
    const previous = this.pendingGap[stream];
    const gap: Truncation = { requestedOffset: previous?.requestedOffset ?? requestedOffset, availableOffset };
    this.position[stream] = availableOffset;
    this.pendingGap[stream] = gap;
    this.lost[stream] = true;
    this.fire("truncated", { stream, requestedOffset: gap.requestedOffset, availableOffset });
  }

  private finish(exitCode: number | null, signal: string | undefined, reason: ExitReason | undefined): void {
    if (this.result !== undefined) return;
    // A stream that ends inside a character: what there is of it, as U+FFFD.
    for (const stream of ["stdout", "stderr"] as const) {
      const partial = this.partial[stream];
      this.partial[stream] = undefined;
      if (partial !== undefined) this.deliver(stream, partial.bytes.toString("utf8"), partial.offset, partial.bytes.length);
    }
    const result: ProcessResult = {
      exitCode,
      ...(signal !== undefined && { signal }),
      ...(reason !== undefined && { reason }),
      stdout: this.joined("stdout"),
      stderr: this.joined("stderr"),
      truncated: { ...this.lost },
    };
    this.result = result;
    const info: ProcessInfo = { ...this.current, status: "exited", exitCode };
    if (signal !== undefined) info.signal = signal;
    if (reason !== undefined) info.reason = reason;
    this.current = info;
    this.clearRetry();
    this.end = { kind: "exit" };
    this.wake();
    this.done.resolve(result);
    this.fire("exit", result);
  }

  /** Read from the socket again once every iterator has caught up enough. */
  private resumeIfCaughtUp(): void {
    const socket = this.socket;
    if (socket === undefined || !socket.isPaused) return;
    for (const queue of this.queues) if (queue.chars > RESUME_BELOW) return;
    socket.resume();
  }

  private joined(stream: ProcessStream): string {
    let text = "";
    for (const chunk of this.history) if (chunk.stream === stream) text += chunk.data;
    return text;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Emit without letting a listener's exception break the handle's state (it is rethrown asynchronously, like an uncaught one). */
  private fire<K extends keyof ProcessHandleEvents>(event: K, ...args: ProcessHandleEvents[K]): void {
    if (event === "error" && this.listenerCount("error") === 0) return;
    try {
      (this.emit as (event: string, ...args: unknown[]) => boolean)(event, ...args);
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }
}

function sendFrame(socket: WebSocket, frame: StreamClientMessage): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.send(JSON.stringify(frame), (error) => (error ? reject(error) : resolve()));
  });
}

function rawBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/**
 * How many leading bytes of `bytes` end on a character boundary: all of them,
 * unless they end with the first bytes of a multi-byte UTF-8 sequence. Bytes
 * that are not UTF-8 at all count as whole (they decode to U+FFFD).
 */
export function completeUtf8Length(bytes: Uint8Array): number {
  const n = bytes.length;
  for (let i = n - 1; i >= 0 && i >= n - 4; i--) {
    const b = bytes[i]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back for its lead
    const need = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 1;
    return i + need > n ? i : n;
  }
  return n;
}

function describeClose(attempt: Attempt, code: number, reason: string): string {
  if (attempt.httpError !== undefined) return `${attempt.httpError.code}: ${attempt.httpError.message}`;
  if (!attempt.started && attempt.socketError !== undefined) {
    const errno = (attempt.socketError as NodeJS.ErrnoException).code;
    return errno !== undefined && !attempt.socketError.message.includes(errno) ? `${attempt.socketError.message} (${errno})` : attempt.socketError.message;
  }
  const text = `close ${code}${reason !== "" ? ` ${reason}` : ""}`;
  return attempt.socketError !== undefined ? `${text}: ${attempt.socketError.message}` : text;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isExitReason(value: unknown): value is ExitReason {
  return value === "timeout" || value === "killed" || value === "oom";
}

function isProcessInfo(value: unknown): value is ProcessInfo {
  return isRecord(value) && typeof value["id"] === "string" && typeof value["status"] === "string";
}
