/** A handle on one sandbox: its last known state plus the calls that act on it. */
import type { ExecRequest, ExecResult, Sandbox as SandboxInfo } from "@agentbox/protocol";
import { isAgentboxError } from "./errors.js";
import type { HttpTransport } from "./http.js";

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

/** Extra time the HTTP request for an exec may take beyond the exec's own timeout. */
const EXEC_TIMEOUT_GRACE_MS = 30_000;

export class Sandbox {
  private readonly http: HttpTransport;
  private current: SandboxInfo;

  /** @internal Use `client.sandboxes.create()` or `.get()`. */
  constructor(http: HttpTransport, info: SandboxInfo) {
    this.http = http;
    this.current = info;
  }

  /** The last state the server reported (updated by `refresh`, `setTimeout` and `delete`). */
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

  /** Set the sandbox to expire `seconds` from now; returns (and keeps) the updated state. */
  async setTimeout(seconds: number): Promise<SandboxInfo> {
    this.current = await this.http.request<SandboxInfo>("POST", `${this.path}/timeout`, { body: { timeoutSeconds: seconds } });
    return this.current;
  }

  /** Fetch the current state from the server. */
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
