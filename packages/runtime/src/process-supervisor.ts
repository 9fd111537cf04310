/**
 * Long-lived processes of one sandbox: started once per id, their output kept
 * in bounded logs addressed by offset, killable as a whole tree, remembered
 * after exit (the most recent MAX_EXITED of them).
 */
import {
  AgentboxError,
  DEFAULT_PROCESS_LOG_BYTES,
  type ExitReason,
  type ProcessInfo,
  type ProcessLogs,
  type StartProcessRequest,
  type StreamServerMessage,
} from "@agentbox/protocol";
import { type CgroupGroup, type LocalSandbox, type SpawnedProcess } from "@agentbox/isolation";
import { resolveCwd } from "./exec-runner.js";
import { OutputLog, type LogRead } from "./output-log.js";

export const MAX_EXITED = 256;
/** Output kept for exited processes of one sandbox; the oldest exited processes' logs go first. */
export const EXITED_LOG_BUDGET_BYTES = 64 * 1024 * 1024;

interface Managed {
  info: ProcessInfo;
  stdout: OutputLog;
  stderr: OutputLog;
  child: SpawnedProcess;
  group: CgroupGroup;
  reason: ExitReason | undefined;
  /** A kill was asked for: if the process then dies of a signal, that is why. */
  killRequested: boolean;
  exited: Promise<void>;
  timer: NodeJS.Timeout | undefined;
}

export interface StartContext {
  env: Record<string, string>;
  defaultCwd: string;
  logBytes?: number;
  /** `env` is the whole environment (a session snapshot), not a layer over the base one. */
  replaceEnv?: boolean;
}

let autoId = 0;

export class ProcessSupervisor {
  private readonly processes = new Map<string, Managed>();
  private readonly starting = new Map<string, Promise<{ info: ProcessInfo; created: boolean }>>();

  constructor(private readonly sandbox: LocalSandbox) {}

  /** Start a process; an id that exists returns that process (created: false). */
  async start(req: StartProcessRequest, ctx: StartContext): Promise<{ info: ProcessInfo; created: boolean }> {
    const id = req.id ?? `proc-${Date.now().toString(36)}-${(++autoId).toString(36)}`;
    const existing = this.processes.get(id);
    if (existing) return { info: existing.info, created: false };
    const pending = this.starting.get(id);
    if (pending) return pending.then((r) => ({ info: r.info, created: false }));
    const promise = this.doStart(id, req, ctx).finally(() => this.starting.delete(id));
    this.starting.set(id, promise);
    return promise;
  }

  private async doStart(id: string, req: StartProcessRequest, ctx: StartContext): Promise<{ info: ProcessInfo; created: boolean }> {
    const argv = req.argv ?? ["/bin/sh", "-c", req.command!];
    const cwd = resolveCwd(req.cwd, ctx.defaultCwd);
    const group = this.sandbox.acquireGroup();
    let child: SpawnedProcess;
    try {
      child = await this.sandbox.spawn({ argv, cwd, env: { ...(ctx.replaceEnv ? {} : this.sandbox.baseEnv), ...ctx.env, ...req.env } }, group);
    } catch (err) {
      await this.sandbox.releaseGroup(group);
      throw err;
    }
    // The pid users see is the one inside the sandbox (what `ps` and `kill` there use).
    const info: ProcessInfo = { id, pid: child.sandboxPid, cwd, status: "running", startedAt: new Date().toISOString() };
    if (req.command !== undefined) info.command = req.command;
    else info.argv = req.argv;
    if (req.sessionId !== undefined) info.sessionId = req.sessionId;
    const cap = req.maxLogBytes ?? ctx.logBytes ?? DEFAULT_PROCESS_LOG_BYTES;
    const stdout = new OutputLog(cap);
    const stderr = new OutputLog(cap);
    // Always reading (into a bounded log) is what keeps a slow reader from stalling the process.
    child.stdout.on("data", (d: Buffer) => stdout.append(d));
    child.stderr.on("data", (d: Buffer) => stderr.append(d));
    child.stdin?.on("error", () => undefined);
    const m: Managed = { info, stdout, stderr, child, group, reason: undefined, killRequested: false, exited: Promise.resolve(), timer: undefined };
    if (req.timeoutMs !== undefined) {
      m.timer = setTimeout(() => {
        m.reason ??= "timeout";
        void group.kill();
      }, req.timeoutMs);
    }
    m.exited = this.watch(m);
    this.processes.set(id, m);
    return { info, created: true };
  }

  private async watch(m: Managed): Promise<void> {
    const oomBefore = m.group.oomKills();
    const { code, signal } = await m.child.exited;
    if (m.timer) clearTimeout(m.timer);
    const oom = m.group.oomKills() > oomBefore;
    // The process's tree ends with it: nothing it started may outlive it unseen.
    await this.sandbox.releaseGroup(m.group);
    m.child.stdin?.destroy();
    await Promise.all(
      [m.child.stdout, m.child.stderr].map((s) => (s.closed ? undefined : new Promise((r) => s.once("close", r)))),
    );
    m.stdout.close();
    m.stderr.close();
    if (m.reason === undefined && oom) m.reason = "oom";
    if (m.reason === undefined && (signal === "SIGKILL" || (signal && m.killRequested))) m.reason = "killed";
    const info = m.info;
    info.status = "exited";
    info.exitCode = signal ? null : code;
    if (signal) info.signal = signal;
    if (m.reason) info.reason = m.reason;
    info.endedAt = new Date().toISOString();
    this.forgetOldExited();
  }

  private forgetOldExited(): void {
    const exited = [...this.processes.values()].filter((m) => m.info.status === "exited");
    for (const m of exited.slice(0, Math.max(0, exited.length - MAX_EXITED))) this.processes.delete(m.info.id);
    // Exit codes stay; output of finished processes is kept only within a budget, newest first.
    let kept = 0;
    for (const m of exited.reverse()) {
      kept += m.stdout.retained + m.stderr.retained;
      if (kept > EXITED_LOG_BUDGET_BYTES) {
        m.stdout.discard();
        m.stderr.discard();
      }
    }
  }

  private get(id: string): Managed {
    const m = this.processes.get(id);
    if (!m) throw new AgentboxError("NOT_FOUND", `process ${id} does not exist`, { process: id });
    return m;
  }

  list(): ProcessInfo[] {
    return [...this.processes.values()].map((m) => m.info);
  }

  info(id: string): ProcessInfo {
    return this.get(id).info;
  }

  input(id: string, data: string | Buffer): void {
    const m = this.get(id);
    if (m.info.status !== "running") throw new AgentboxError("CONFLICT", `process ${id} has exited`);
    if (!m.child.stdin || m.child.stdin.destroyed || m.child.stdin.writableEnded) {
      throw new AgentboxError("CONFLICT", `stdin of process ${id} is closed`);
    }
    m.child.stdin.write(data);
  }

  closeStdin(id: string): void {
    const m = this.get(id);
    m.child.stdin?.end();
  }

  /** Signal the whole tree: every process in the command's cgroup, detached ones included. */
  async kill(id: string, signal: NodeJS.Signals = "SIGKILL"): Promise<ProcessInfo> {
    const m = this.get(id);
    if (m.info.status === "exited") return m.info;
    m.killRequested = true;
    if (signal === "SIGKILL") {
      m.reason ??= "killed";
      await m.group.kill();
    } else {
      for (const pid of m.group.pids()) {
        // The host-side helper forwards what it gets to the command: signalling it too would
        // deliver the signal twice (a shell's trap would run twice).
        if (pid === m.child.pid) continue;
        try {
          process.kill(pid, signal);
        } catch {
          /* gone */
        }
      }
    }
    return m.info;
  }

  /** Long poll: wait up to `waitMs` for output past the offsets, or the exit. */
  private async waitForOutput(m: Managed, stdoutOffset: number, stderrOffset: number, waitMs: number): Promise<void> {
    if (waitMs <= 0 || m.info.status !== "running" || m.stdout.end > stdoutOffset || m.stderr.end > stderrOffset) return;
    await Promise.race([m.stdout.waitBeyond(stdoutOffset, waitMs), m.stderr.waitBeyond(stderrOffset, waitMs), m.exited]);
  }

  /** Read both logs from the given offsets, waiting up to `waitMs` for something new. */
  async read(id: string, stdoutOffset: number, stderrOffset: number, maxBytes: number, waitMs: number): Promise<ProcessLogs & { stdoutStart: number; stderrStart: number; stdoutBytes: number; stderrBytes: number }> {
    const m = this.get(id);
    await this.waitForOutput(m, stdoutOffset, stderrOffset, waitMs);
    const out = m.stdout.read(stdoutOffset, maxBytes);
    const err = m.stderr.read(stderrOffset, maxBytes);
    const logs: ProcessLogs & { stdoutStart: number; stderrStart: number; stdoutBytes: number; stderrBytes: number } = {
      stdout: out.data,
      stderr: err.data,
      stdoutOffset: out.offset + out.bytes,
      stderrOffset: err.offset + err.bytes,
      stdoutStart: out.offset,
      stderrStart: err.offset,
      stdoutBytes: out.bytes,
      stderrBytes: err.bytes,
      status: m.info.status,
    };
    // Report exit only once every byte has been read, so a reader never misses the tail.
    const drained = m.stdout.isEnded && m.stderr.isEnded && logs.stdoutOffset >= m.stdout.end && logs.stderrOffset >= m.stderr.end;
    if (m.info.status === "exited" && !drained) logs.status = "running";
    if (logs.status === "exited") {
      logs.exitCode = m.info.exitCode ?? null;
      if (m.info.signal) logs.signal = m.info.signal;
      if (m.info.reason) logs.reason = m.info.reason;
    }
    const truncated = truncation(out, err);
    if (truncated) logs.truncated = truncated;
    if (logs.stdoutOffset < m.stdout.end || logs.stderrOffset < m.stderr.end) logs.more = true;
    return logs;
  }

  /**
   * Read as ready-made stream messages (truncated, stdout, stderr, exit), encoded
   * once here and relayed as they are: see process.readMessages.
   */
  async readMessages(id: string, stdoutOffset: number, stderrOffset: number, maxBytes: number, waitMs: number, binary = false) {
    if (binary) return this.readBinaryMessages(id, stdoutOffset, stderrOffset, maxBytes, waitMs);
    const r = await this.read(id, stdoutOffset, stderrOffset, maxBytes, waitMs);
    const messages: StreamServerMessage[] = [];
    if (r.truncated?.stdout) messages.push({ type: "truncated", stream: "stdout", ...r.truncated.stdout });
    if (r.truncated?.stderr) messages.push({ type: "truncated", stream: "stderr", ...r.truncated.stderr });
    if (r.stdoutBytes > 0) messages.push({ type: "stdout", data: r.stdout, offset: r.stdoutStart, bytes: r.stdoutBytes });
    if (r.stderrBytes > 0) messages.push({ type: "stderr", data: r.stderr, offset: r.stderrStart, bytes: r.stderrBytes });
    const exited = r.status === "exited";
    if (exited) {
      const exit: StreamServerMessage = { type: "exit", exitCode: r.exitCode ?? null };
      if (r.signal) exit.signal = r.signal;
      if (r.reason) exit.reason = r.reason;
      messages.push(exit);
    }
    const encoded = messages.map((m) => Buffer.from(JSON.stringify(m), "utf8"));
    return {
      result: { stdoutOffset: r.stdoutOffset, stderrOffset: r.stderrOffset, messageBytes: encoded.map((b) => b.length), exited },
      attachment: Buffer.concat(encoded),
    };
  }

  /**
   * The binary stream format: output chunks as raw bytes, each prefixed with a
   * 9-byte header (stream: 1 = stdout, 2 = stderr; offset as a 64-bit big-endian
   * integer); other messages stay JSON text. No decoding, escaping or re-encoding.
   */
  private async readBinaryMessages(id: string, stdoutOffset: number, stderrOffset: number, maxBytes: number, waitMs: number) {
    const m = this.get(id);
    await this.waitForOutput(m, stdoutOffset, stderrOffset, waitMs);
    const parts: Buffer[] = [];
    const lengths: number[] = [];
    const binary: boolean[] = [];
    const text = (msg: StreamServerMessage) => {
      const b = Buffer.from(JSON.stringify(msg), "utf8");
      parts.push(b);
      lengths.push(b.length);
      binary.push(false);
    };
    const offsets = { stdout: stdoutOffset, stderr: stderrOffset };
    for (const [name, log, tag] of [["stdout", m.stdout, 1], ["stderr", m.stderr, 2]] as const) {
      const r = log.readBytes(offsets[name], maxBytes);
      if (r.truncated) text({ type: "truncated", stream: name, ...r.truncated });
      if (r.length > 0) {
        const head = Buffer.allocUnsafe(9);
        head[0] = tag;
        head.writeBigUInt64BE(BigInt(r.offset), 1);
        parts.push(head, ...r.data);
        lengths.push(9 + r.length);
        binary.push(true);
      }
      offsets[name] = r.offset + r.length;
    }
    const exited = m.info.status === "exited" && m.stdout.isEnded && m.stderr.isEnded && offsets.stdout >= m.stdout.end && offsets.stderr >= m.stderr.end;
    if (exited) {
      const exit: StreamServerMessage = { type: "exit", exitCode: m.info.exitCode ?? null };
      if (m.info.signal) exit.signal = m.info.signal;
      if (m.info.reason) exit.reason = m.info.reason;
      text(exit);
    }
    return {
      result: { stdoutOffset: offsets.stdout, stderrOffset: offsets.stderr, messageBytes: lengths, binary, exited },
      attachment: parts,
    };
  }

  /** Resolve with the process once exited, or undefined after `timeoutMs`. */
  async wait(id: string, timeoutMs: number): Promise<ProcessInfo | undefined> {
    const m = this.get(id);
    if (m.info.status === "exited") return m.info;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), timeoutMs)));
    const result = await Promise.race([m.exited.then(() => m.info), timeout]);
    clearTimeout(timer);
    return result;
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.processes.values()].filter((m) => m.info.status === "running").map((m) => this.kill(m.info.id)));
  }
}

function truncation(out: LogRead, err: LogRead): ProcessLogs["truncated"] | undefined {
  if (!out.truncated && !err.truncated) return undefined;
  const t: NonNullable<ProcessLogs["truncated"]> = {};
  if (out.truncated) t.stdout = out.truncated;
  if (err.truncated) t.stderr = err.truncated;
  return t;
}
