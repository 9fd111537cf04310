/**
 * Persistent shell sessions: one bash per session, in its own cgroup, that
 * runs each command with `eval` at its top level, so `cd`, `export`, shell
 * functions and aliases carry over to the next command.
 *
 * How a command travels. The runtime writes one line to the shell's stdin:
 *
 *   eval $'<command>' </dev/null; printf '<token>:%d:%s\0' $? "$PWD" >&$OUT; printf '<token>' >&$ERR
 *
 * - The command is ANSI-C quoted with every quote, backslash and control byte
 *   escaped, so no command text can end the line early or run outside eval.
 * - Its stdin is /dev/null (or the call's stdin), so a command that reads
 *   stdin cannot eat the next line.
 * - The completion marker carries a fresh random token per command, written
 *   to copies of the shell's stdout/stderr made at start: output that looks
 *   like a marker, lacks a newline, or redirects fd 1 cannot end a command
 *   early or hide its end.
 *
 * A command that overruns its timeout is killed with the whole session (a
 * builtin loop runs inside the shell itself, so nothing smaller can be
 * killed): the session ends and later calls get SESSION_TERMINATED.
 */
import { randomBytes } from "node:crypto";
import {
  AgentboxError,
  DEFAULT_OUTPUT_CAP_BYTES,
  type CreateSessionRequest,
  type ExecRequest,
  type ExecResult,
  type SessionInfo,
} from "@agentbox/protocol";
import { type CgroupGroup, type LocalSandbox, type SpawnedProcess } from "@agentbox/isolation";
import { CappedBuffer } from "./capped-buffer.js";
import { resolveCwd } from "./exec-runner.js";

const SHELL = "/bin/bash";

/** What a process started "from a session" inherits: a snapshot, never written back. */
export interface SessionSnapshot {
  cwd: string;
  env: Record<string, string>;
}

/** Quote bytes as a bash ANSI-C string ($'...'): every byte outside printable ASCII, and every quote and backslash, escaped. */
export function ansiCQuote(text: string | Buffer): string {
  const bytes = typeof text === "string" ? Buffer.from(text, "utf8") : text;
  let out = "$'";
  let plainStart = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b >= 0x20 && b < 0x7f && b !== 0x27 && b !== 0x5c) continue;
    out += bytes.toString("latin1", plainStart, i) + "\\x" + b.toString(16).padStart(2, "0");
    plainStart = i + 1;
  }
  return out + bytes.toString("latin1", plainStart) + "'";
}

/** Quote one argument as a shell word. */
function shellWord(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(arg) ? arg : ansiCQuote(arg);
}

/** Watches one stream for a marker token; what precedes it is the command's output. */
class MarkerScanner {
  private pending: Buffer = Buffer.alloc(0);
  private token: Buffer | undefined;
  private afterToken: Buffer | undefined;
  private sink: ((b: Buffer) => void) | undefined;
  private onMarker: ((rest: Buffer) => boolean) | undefined;

  /** Start a command: output goes to `sink` until the token, then `onMarker` sees what follows it until it returns true. */
  begin(token: string, sink: (b: Buffer) => void, onMarker: (rest: Buffer) => boolean): void {
    this.token = Buffer.from(token, "latin1");
    this.sink = sink;
    this.onMarker = onMarker;
    this.pending = Buffer.alloc(0);
    this.afterToken = undefined;
  }

  push(chunk: Buffer): void {
    if (!this.token) return; // between commands: output of background jobs, dropped
    if (this.afterToken) {
      this.afterToken = Buffer.concat([this.afterToken, chunk]);
      if (this.onMarker!(this.afterToken)) this.end();
      return;
    }
    const buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const at = buf.indexOf(this.token);
    if (at >= 0) {
      if (at > 0) this.sink!(buf.subarray(0, at));
      this.afterToken = Buffer.from(buf.subarray(at + this.token.length));
      this.pending = Buffer.alloc(0);
      if (this.onMarker!(this.afterToken)) this.end();
      return;
    }
    // Keep a tail that could be the start of the token; the rest is output.
    const keep = Math.min(buf.length, this.token.length - 1);
    if (buf.length > keep) this.sink!(buf.subarray(0, buf.length - keep));
    this.pending = Buffer.from(buf.subarray(buf.length - keep));
  }

  /** The shell ended: whatever was held back is output after all. */
  flush(): void {
    if (this.token && !this.afterToken && this.pending.length) this.sink!(this.pending);
    this.end();
  }

  private end(): void {
    this.token = undefined;
    this.sink = undefined;
    this.onMarker = undefined;
    this.pending = Buffer.alloc(0);
    this.afterToken = undefined;
  }
}

type RunResult =
  | { kind: "done"; status: number }
  | { kind: "ended"; code: number | null; signal: NodeJS.Signals | null; reason: SessionInfo["terminatedReason"] };

/** The command in flight. */
interface Pending {
  settle: (r: RunResult) => void;
}

export interface SessionContext {
  env: Record<string, string>;
  defaultCwd: string;
}

export class ShellSession {
  readonly id: string;
  private cwd: string;
  private status: SessionInfo["status"] = "idle";
  private terminatedReason: SessionInfo["terminatedReason"];
  private exitCode: number | null | undefined;
  private readonly createdAt = new Date().toISOString();
  private readonly timeoutMs: number | undefined;
  private readonly stdout = new MarkerScanner();
  private readonly stderr = new MarkerScanner();
  private queue: Promise<unknown> = Promise.resolve();
  private pending: Pending | undefined;
  private killReason: "timeout" | "killed" | "deleted" | undefined;
  private groupReleased = false;
  /** Settles when the shell has exited and its streams are drained. */
  private readonly ended: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    id: string,
    private readonly sandbox: LocalSandbox,
    private readonly group: CgroupGroup,
    private readonly child: SpawnedProcess,
    cwd: string,
    timeoutMs: number | undefined,
  ) {
    this.id = id;
    this.cwd = cwd;
    this.timeoutMs = timeoutMs;
    child.stdout.on("data", (d: Buffer) => this.stdout.push(d));
    child.stderr.on("data", (d: Buffer) => this.stderr.push(d));
    child.stdin!.on("error", () => undefined);
    this.ended = this.watch();
  }

  static async start(id: string, sandbox: LocalSandbox, req: CreateSessionRequest, ctx: SessionContext): Promise<ShellSession> {
    const cwd = resolveCwd(req.cwd, ctx.defaultCwd);
    const env = { ...sandbox.baseEnv, ...ctx.env, ...req.env };
    const group = sandbox.acquireGroup();
    let child: SpawnedProcess;
    try {
      child = await sandbox.spawn({ argv: [SHELL, "--noprofile", "--norc"], cwd, env }, group);
    } catch (err) {
      await sandbox.releaseGroup(group);
      throw err;
    }
    const session = new ShellSession(id, sandbox, group, child, cwd, req.timeoutMs);
    // Save copies of stdout/stderr for the markers, then see the first marker: the shell is up.
    const errors: Buffer[] = [];
    const setup = await session.run(
      "shopt -s expand_aliases; exec {__AGENTBOX_OUT}>&1 {__AGENTBOX_ERR}>&2",
      { onStdout: () => undefined, onStderr: (b) => errors.push(b), timeoutMs: 10_000 },
    );
    if (setup.kind !== "done" || setup.status !== 0) {
      await session.terminate("killed");
      const why = Buffer.concat(errors).toString("utf8").trim() || `the shell ended (${setup.kind})`;
      throw new AgentboxError(/directory/.test(why) ? "INVALID_REQUEST" : "INTERNAL", `cannot start the session's shell: ${why}`, { field: "cwd" });
    }
    session.status = "idle";
    return session;
  }

  info(): SessionInfo {
    const out: SessionInfo = { id: this.id, cwd: this.cwd, status: this.status, createdAt: this.createdAt };
    if (this.timeoutMs !== undefined) out.timeoutMs = this.timeoutMs;
    if (this.terminatedReason) out.terminatedReason = this.terminatedReason;
    if (this.exitCode !== undefined) out.exitCode = this.exitCode;
    return out;
  }

  get terminated(): boolean {
    return this.status === "terminated";
  }

  /** Run a command in the shell: in order with the session's other calls. */
  exec(req: ExecRequest): Promise<ExecResult> {
    if (req.cwd !== undefined || req.env !== undefined) {
      const field = req.cwd !== undefined ? "cwd" : "env";
      throw new AgentboxError("INVALID_REQUEST", `${field}: a session keeps its own cwd and env; use cd and export in the command`, { field });
    }
    let stdinRedirect = "</dev/null";
    const stdin = req.stdin !== undefined ? Buffer.from(req.stdin, "utf8") : req.stdinBase64 !== undefined ? Buffer.from(req.stdinBase64, "base64") : undefined;
    if (stdin !== undefined) {
      if (stdin.includes(0)) throw new AgentboxError("INVALID_REQUEST", "stdinBase64: a session's stdin cannot carry NUL bytes", { field: "stdinBase64" });
      stdinRedirect = stdin.length ? `< <(printf '%s' ${ansiCQuote(stdin)})` : "</dev/null";
    }
    const script = req.command ?? req.argv!.map(shellWord).join(" ");
    const cap = req.maxOutputBytes ?? DEFAULT_OUTPUT_CAP_BYTES;
    const timeoutMs = req.timeoutMs ?? this.timeoutMs;
    return this.enqueue(async () => {
      const started = performance.now();
      const out = new CappedBuffer(cap);
      const err = new CappedBuffer(cap);
      const r = await this.run(`eval ${ansiCQuote(script)} ${stdinRedirect}`, {
        onStdout: (b) => out.push(b),
        onStderr: (b) => err.push(b),
        timeoutMs,
      });
      const result: ExecResult = {
        stdout: out.text(),
        stderr: err.text(),
        exitCode: r.kind === "done" ? r.status : r.code,
        truncated: { stdout: out.truncated, stderr: err.truncated },
        durationMs: Math.round((performance.now() - started) * 100) / 100,
      };
      if (r.kind === "ended") {
        if (r.signal) result.signal = r.signal;
        if (r.reason === "timeout" || r.reason === "killed") result.reason = r.reason;
        if (r.reason === "deleted") result.reason = "killed";
      }
      return result;
    });
  }

  /** The shell's cwd and exported environment right now (after the calls queued before this one). */
  snapshot(): Promise<SessionSnapshot> {
    return this.enqueue(async () => {
      const parts: Buffer[] = [];
      const r = await this.run(
        `( IFS=$' \\t\\n'; printf '%s\\0' "$PWD"; for __agentbox_n in $(compgen -e); do printf '%s=%s\\0' "$__agentbox_n" "\${!__agentbox_n}"; done ) </dev/null >&$__AGENTBOX_OUT`,
        { onStdout: (b) => parts.push(b), onStderr: () => undefined, timeoutMs: 10_000 },
      );
      if (r.kind !== "done") throw new AgentboxError("SESSION_TERMINATED", `session ${this.id} ended`, { session: this.id });
      const [cwd = this.cwd, ...vars] = Buffer.concat(parts).toString("utf8").split("\0").slice(0, -1);
      const env: Record<string, string> = {};
      for (const v of vars) {
        const eq = v.indexOf("=");
        if (eq > 0) env[v.slice(0, eq)] = v.slice(eq + 1);
      }
      return { cwd, env };
    });
  }

  /** End the session: kill the shell and everything it started. */
  async terminate(reason: "killed" | "deleted"): Promise<void> {
    this.killReason ??= reason;
    this.killGroup();
    await this.ended;
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(() => {
      if (this.terminated) throw this.terminatedError();
      return fn();
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  private terminatedError(): AgentboxError {
    const why =
      this.terminatedReason === "exit"
        ? `its shell exited with code ${this.exitCode}`
        : this.terminatedReason === "timeout"
          ? "a command overran its timeout and was killed with the shell"
          : "it was ended";
    return new AgentboxError("SESSION_TERMINATED", `session ${this.id} is terminated: ${why}`, { session: this.id, reason: this.terminatedReason });
  }

  /** Send one line and collect output until both markers (or the shell's end). */
  private run(line: string, opts: { onStdout: (b: Buffer) => void; onStderr: (b: Buffer) => void; timeoutMs: number | undefined }): Promise<RunResult> {
    const token = `__agentbox_${randomBytes(16).toString("hex")}__`;
    this.status = "busy";
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let outDone = false;
      let errDone = false;
      let status = 0;
      const p: Pending = {
        settle: (r) => {
          if (this.pending !== p) return;
          if (timer) clearTimeout(timer);
          this.pending = undefined;
          if (!this.terminated) this.status = "idle";
          resolve(r);
        },
      };
      this.pending = p;
      const finish = () => {
        if (outDone && errDone) p.settle({ kind: "done", status });
      };
      this.stdout.begin(token, opts.onStdout, (rest) => {
        const nul = rest.indexOf(0);
        if (nul < 0) return false;
        const m = /^:(\d+):([^]*)$/.exec(rest.toString("utf8", 0, nul));
        if (m) {
          status = Number(m[1]);
          this.cwd = m[2]!;
        }
        outDone = true;
        finish();
        return true;
      });
      this.stderr.begin(token, opts.onStderr, () => {
        errDone = true;
        finish();
        return true;
      });
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.killReason ??= "timeout";
          this.killGroup();
        }, opts.timeoutMs);
      }
      this.child.stdin!.write(`${line}\nprintf '%s:%d:%s\\0' '${token}' "$?" "$PWD" >&$__AGENTBOX_OUT; printf '%s' '${token}' >&$__AGENTBOX_ERR\n`);
    });
  }

  /** Kill the shell's whole tree, unless its group was already handed back (it may serve another command by now). */
  private killGroup(): void {
    if (!this.groupReleased) void this.group.kill();
  }

  private async watch(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const { code, signal } = await this.child.exited;
    this.groupReleased = true;
    // Whatever the shell started dies with it; then the pipes close and the last output is in.
    await this.sandbox.releaseGroup(this.group);
    this.child.stdin?.destroy();
    await Promise.all([this.child.stdout, this.child.stderr].map((s) => (s.closed ? undefined : new Promise((r) => s.once("close", r)))));
    this.stdout.flush();
    this.stderr.flush();
    this.status = "terminated";
    this.terminatedReason = this.killReason ?? (signal ? "killed" : "exit");
    this.exitCode = signal ? null : code;
    this.pending?.settle({ kind: "ended", code: this.exitCode, signal, reason: this.terminatedReason });
    return { code: this.exitCode, signal };
  }
}
