/**
 * A shell session: one long-lived shell in the sandbox whose state (cwd,
 * exported variables, functions, aliases) carries from one `exec` to the next.
 * Calls on one session run one at a time, in order.
 *
 *   const sh = await sb.createSession({ cwd: "/tmp" });
 *   await sh.exec("cd project && export MODE=dev");
 *   const { stdout } = await sh.exec("echo $PWD $MODE");   // "/tmp/project dev"
 */
import type { CreateSessionRequest, ExecRequest, ExecResult, SessionInfo } from "@agentbox/protocol";
import { isAgentboxError } from "./errors.js";
import type { HttpTransport } from "./http.js";
import type { ProcessHandle } from "./process-handle.js";
import type { Sandbox, StartProcessOptions } from "./sandbox.js";

export type { SessionInfo, CreateSessionRequest };

export interface SessionExecOptions {
  /** Written to the command's stdin (no NUL bytes: a shell cannot carry them). */
  stdin?: string | Uint8Array;
  /** Kill the command after this long (default: the session's timeoutMs). The session then ends. */
  timeoutMs?: number;
  maxOutputBytes?: number;
  signal?: AbortSignal;
}

const EXEC_TIMEOUT_GRACE_MS = 30_000;

export class Session {
  private current: SessionInfo;

  /** @internal Use `sandbox.createSession()` or `sandbox.session(id)`. */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandbox: Sandbox,
    info: SessionInfo,
  ) {
    this.current = info;
  }

  get id(): string {
    return this.current.id;
  }

  /** The last state the server reported (cwd after the last command, status). */
  get info(): Readonly<SessionInfo> {
    return this.current;
  }

  private get path(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandbox.id)}/sessions/${encodeURIComponent(this.current.id)}`;
  }

  /**
   * Run a command in the session's shell. A string is shell source (several lines,
   * heredocs and all); an array is quoted into one command line. After a timeout
   * or `exit`, later calls throw SESSION_TERMINATED.
   */
  async exec(commandOrArgv: string | string[], options: SessionExecOptions = {}): Promise<ExecResult> {
    const body: ExecRequest = typeof commandOrArgv === "string" ? { command: commandOrArgv } : { argv: [...commandOrArgv] };
    if (options.stdin instanceof Uint8Array) body.stdinBase64 = Buffer.from(options.stdin).toString("base64");
    else if (options.stdin !== undefined) body.stdin = options.stdin;
    if (options.timeoutMs !== undefined) body.timeoutMs = options.timeoutMs;
    if (options.maxOutputBytes !== undefined) body.maxOutputBytes = options.maxOutputBytes;
    const timeout = options.timeoutMs ?? this.current.timeoutMs;
    return this.http.request<ExecResult>("POST", `${this.path}/exec`, {
      body,
      timeoutMs: timeout !== undefined ? timeout + EXEC_TIMEOUT_GRACE_MS : null,
      signal: options.signal,
    });
  }

  /** Start a background process from a snapshot of this session's cwd and env (nothing is written back). */
  startProcess(command: string | string[], options: Omit<StartProcessOptions, "sessionId"> = {}): Promise<ProcessHandle> {
    return this.sandbox.startProcess(command, { ...options, sessionId: this.current.id });
  }

  async refresh(): Promise<SessionInfo> {
    this.current = await this.http.request<SessionInfo>("GET", this.path);
    return this.current;
  }

  /** End the session, killing its shell and everything it started. */
  async delete(): Promise<void> {
    await this.http.request("DELETE", this.path);
    this.current = { ...this.current, status: "terminated", terminatedReason: "deleted" };
  }

  /** `await using sh = await sb.createSession()` ends the session at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.current.terminatedReason === "deleted") return;
    try {
      await this.delete();
    } catch (error) {
      if (!isAgentboxError(error, "NOT_FOUND") && !isAgentboxError(error, "SANDBOX_NOT_FOUND") && !isAgentboxError(error, "SANDBOX_NOT_READY")) throw error;
    }
  }

  toJSON(): SessionInfo {
    return this.current;
  }
}
