/** A handle on one sandbox: its last known state plus the calls that act on it. */
import type { ExecRequest, ExecResult, Sandbox as SandboxInfo, Template } from "@agentbox/protocol";
import { isAgentboxError } from "./errors.js";
import type { HttpTransport } from "./http.js";
import { ProcessHandle, type AttachOptions, type ProcessOffsets } from "./process-handle.js";
import type { ProcessInfo, ProcessLogs, ProcessSignal, StartProcessRequest } from "./process-types.js";
import { Session, type CreateSessionRequest, type SessionInfo } from "./session.js";
import { Terminals } from "./terminal.js";
import { Files } from "./files.js";
import { Code } from "./code.js";
import { Network, Ports } from "./network.js";

// `Symbol.asyncDispose` must exist before the class below is defined, because its
// method key is computed then. Node 20.20 defines it (as Symbol.for("nodejs.asyncDispose"));
// older runtimes may not, so fall back to the same registered symbol Node uses.
(Symbol as unknown as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for("nodejs.asyncDispose");

export type { SandboxInfo };

export interface ExecOptions {
  /** Working directory inside the sandbox (default: the template's workdir, `/workspace`). */
  cwd?: string;
  /** Variables layered on top of the sandbox's environment. */
  env?: Record<string, string>;
  /** Written to the command's stdin, which is then closed. Bytes are sent base64-encoded. */
  stdin?: string | Uint8Array;
  /** Kill the command (and its children) after this long; the result then has `reason: "timeout"`. */
  timeoutMs?: number;
  /** Cap on each of stdout and stderr; what is cut is flagged in `truncated`. */
  maxOutputBytes?: number;
  /** Abandon the HTTP request (the command itself is not killed by this). */
  signal?: AbortSignal;
}

export interface StartProcessOptions extends AttachOptions {
  /**
   * Your own id for the process (`[A-Za-z0-9._-]{1,64}`). Starting an id that
   * already exists attaches to that process instead of starting a second one,
   * which makes a retried start safe.
   */
  id?: string | undefined;
  /** Working directory inside the sandbox (default: the template's workdir, `/workspace`). */
  cwd?: string | undefined;
  /** Variables layered on top of the sandbox's environment. */
  env?: Record<string, string> | undefined;
  /** Kill the process (and its children) after this long; it then exits with `reason: "timeout"`. */
  timeoutMs?: number | undefined;
  /** Start from a snapshot of this session's cwd and env. */
  sessionId?: string | undefined;
  /** Size of each stream's output log kept by the server (older output is evicted past it). */
  maxLogBytes?: number | undefined;
}

/** Extra time the HTTP request for an exec may take beyond the exec's own timeout. */
const EXEC_TIMEOUT_GRACE_MS = 30_000;

export class Sandbox {
  private readonly http: HttpTransport;
  private current: SandboxInfo;
  /** PTY terminals of this sandbox. */
  readonly terminals: Terminals;
  /** Files of this sandbox: read, write, list, watch, directories in and out. */
  readonly files: Files;
  /** Code contexts: stateful Python and JavaScript interpreters whose code can call your functions. */
  readonly code: Code;
  /** Egress rules (allowlist mode) and the log of the sandbox's outgoing connections. */
  readonly network: Network;
  /** Ports of servers inside the sandbox, reachable (HTTP and WebSocket) through the agentbox server. */
  readonly ports: Ports;

  /** @internal Use `client.sandboxes.create()` or `.get()`. */
  constructor(http: HttpTransport, info: SandboxInfo) {
    this.http = http;
    this.current = info;
    this.terminals = new Terminals(http, info.id);
    this.files = new Files(http, info.id);
    this.code = new Code(http, info.id);
    this.network = new Network(
      http,
      info.id,
      () => this.current,
      (updated) => {
        this.current = updated;
      },
    );
    this.ports = new Ports(http, info.id);
  }

  /** The last state the server reported (updated by `refresh`, `setTimeout`, `pause`, `resume`, `network.update` and `delete`). */
  get info(): Readonly<SandboxInfo> {
    return this.current;
  }

  get id(): string {
    return this.current.id;
  }

  get status(): SandboxInfo["status"] {
    return this.current.status;
  }

  private get path(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.current.id)}`;
  }

  /**
   * Run a command and wait for it. A string is run by `/bin/sh -c` (shell syntax
   * works); an array is executed as argv, without a shell. A command that exits
   * non-zero is not an error: check `exitCode`.
   */
  async exec(commandOrArgv: string | string[], options: ExecOptions = {}): Promise<ExecResult> {
    const { signal, ...rest } = options;
    const body: ExecRequest = typeof commandOrArgv === "string" ? { command: commandOrArgv } : { argv: [...commandOrArgv] };
    for (const [key, value] of Object.entries(rest)) {
      if (value === undefined) continue;
      if (key === "stdin" && value instanceof Uint8Array) body.stdinBase64 = Buffer.from(value).toString("base64");
      else (body as Record<string, unknown>)[key] = value;
    }
    // The request must outlive the command: no client timeout unless the exec has one.
    const timeoutMs = options.timeoutMs !== undefined ? options.timeoutMs + EXEC_TIMEOUT_GRACE_MS : null;
    return this.http.request<ExecResult>("POST", `${this.path}/exec`, { body, timeoutMs, signal });
  }

  /**
   * Start a background process and attach to its output. A string is run by
   * `/bin/sh -c`; an array is executed as argv. Resolves once the server has
   * started it; the output then streams through the handle (iterate it, or
   * use `onStdout`/`onStderr`) until `wait()` resolves at the exit.
   *
   *   const proc = await sb.startProcess(["python3", "-u", "train.py"], { id: "train" });
   *   proc.onStdout((text) => process.stdout.write(text));
   *   const { exitCode } = await proc.wait();
   */
  async startProcess(command: string | string[], options: StartProcessOptions = {}): Promise<ProcessHandle> {
    const { id, cwd, env, timeoutMs, sessionId, maxLogBytes, ...attach } = options;
    const body: StartProcessRequest = typeof command === "string" ? { command } : { argv: [...command] };
    if (id !== undefined) body.id = id;
    if (cwd !== undefined) body.cwd = cwd;
    if (env !== undefined) body.env = env;
    if (timeoutMs !== undefined) body.timeoutMs = timeoutMs;
    if (sessionId !== undefined) body.sessionId = sessionId;
    if (maxLogBytes !== undefined) body.maxLogBytes = maxLogBytes;
    const info = await this.http.request<ProcessInfo>("POST", `${this.path}/processes`, { body });
    return new ProcessHandle(this.http, this.id, info, attach);
  }

  /**
   * Attach to a process started earlier (by anyone), from the given offsets
   * (default 0: all the output the server still holds). Works on a process that
   * has exited too: the handle receives the rest of its output and its exit.
   */
  async getProcess(id: string, options: AttachOptions = {}): Promise<ProcessHandle> {
    const info = await this.process(id);
    return new ProcessHandle(this.http, this.id, info, options);
  }

  /** The sandbox's processes, running and exited. */
  async processes(): Promise<ProcessInfo[]> {
    const result = await this.http.request<{ processes: ProcessInfo[] } | ProcessInfo[]>("GET", `${this.path}/processes`);
    return Array.isArray(result) ? result : (result?.processes ?? []);
  }

  /** One process's state; throws NOT_FOUND if there is none with this id. */
  process(id: string): Promise<ProcessInfo> {
    return this.http.request<ProcessInfo>("GET", this.processPath(id));
  }

  /**
   * The output the server holds for a process, from the given byte offsets
   * (`handle.offsets` fits). The returned `stdoutOffset`/`stderrOffset` are where
   * to resume; `truncated` says when the offsets asked for had been evicted.
   */
  processLogs(id: string, offsets: Partial<ProcessOffsets> = {}): Promise<ProcessLogs> {
    return this.http.request<ProcessLogs>("GET", `${this.processPath(id)}/logs`, {
      query: { stdoutOffset: offsets.stdout, stderrOffset: offsets.stderr },
    });
  }

  /** Signal a process and its children without attaching to it (the server's default signal is SIGKILL). */
  killProcess(id: string, signal?: ProcessSignal): Promise<ProcessInfo> {
    return this.http.request<ProcessInfo>("POST", `${this.processPath(id)}/kill`, { body: signal === undefined ? {} : { signal } });
  }

  private processPath(id: string): string {
    return `${this.path}/processes/${encodeURIComponent(id)}`;
  }

  /**
   * Open a persistent shell session: `cd`, `export`, functions and aliases carry
   * over between its `exec` calls. Top-level `exec` stays stateless.
   */
  async createSession(options: CreateSessionRequest = {}): Promise<Session> {
    const info = await this.http.request<SessionInfo>("POST", `${this.path}/sessions`, { body: options });
    return new Session(this.http, this, info);
  }

  /** A handle on an existing session; throws NOT_FOUND if there is none with this id. */
  async session(id: string): Promise<Session> {
    const info = await this.http.request<SessionInfo>("GET", `${this.path}/sessions/${encodeURIComponent(id)}`);
    return new Session(this.http, this, info);
  }

  /** The sandbox's sessions, live and terminated. */
  async sessions(): Promise<SessionInfo[]> {
    return (await this.http.request<{ sessions: SessionInfo[] }>("GET", `${this.path}/sessions`)).sessions;
  }

  /** Set the sandbox to expire `seconds` from now; returns (and keeps) the updated state. */
  async setTimeout(seconds: number): Promise<SandboxInfo> {
    this.current = await this.http.request<SandboxInfo>("POST", `${this.path}/timeout`, { body: { timeoutSeconds: seconds } });
    return this.current;
  }

  /** Freeze every process of the sandbox (its TTL keeps running); commands are refused until `resume`. */
  async pause(): Promise<SandboxInfo> {
    this.current = await this.http.request<SandboxInfo>("POST", `${this.path}/pause`, { body: {} });
    return this.current;
  }

  /** Thaw a paused sandbox: its processes continue where they stopped. */
  async resume(): Promise<SandboxInfo> {
    this.current = await this.http.request<SandboxInfo>("POST", `${this.path}/resume`, { body: {} });
    return this.current;
  }

  /** Save the sandbox's filesystem as a new template (layered on the sandbox's own template). */
  snapshot(template: string): Promise<Template> {
    return this.http.request<Template>("POST", `${this.path}/snapshot`, { body: { template } });
  }

  /** Fetch the current state from the server (with live `usage` while it runs or is paused). */
  async refresh(): Promise<SandboxInfo> {
    this.current = await this.http.request<SandboxInfo>("GET", this.path);
    return this.current;
  }

  /** Delete the sandbox. Throws SANDBOX_NOT_FOUND if it does not exist (any more). */
  async delete(): Promise<void> {
    const result = await this.http.request<unknown>("DELETE", this.path);
    if (isSandboxInfo(result) && result.id === this.current.id) this.current = result;
    if (this.current.status !== "deleted") this.current = { ...this.current, status: "deleted" };
  }

  /** `await using sb = await client.sandboxes.create()` deletes the sandbox at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.current.status === "deleted") return;
    try {
      await this.delete();
    } catch (error) {
      if (!isAgentboxError(error, "SANDBOX_NOT_FOUND")) throw error;
    }
  }

  toJSON(): SandboxInfo {
    return this.current;
  }
}

function isSandboxInfo(value: unknown): value is SandboxInfo {
  return typeof value === "object" && value !== null && typeof (value as { id?: unknown }).id === "string" &&
    typeof (value as { status?: unknown }).status === "string";
}
