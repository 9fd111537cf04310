/**
 * PTY terminals of one sandbox. Each terminal is a pseudo-terminal whose
 * program (a login shell by default) runs inside the sandbox, in its own
 * cgroup, entered through agentbox-enter's one-shot mode with --tty so the
 * PTY is its controlling terminal. Output goes into a bounded log addressed by
 * offset, so a client that attaches replays the recent screen and then reads
 * live; the terminal outlives its clients until it is deleted or its program
 * exits.
 */
import { readFileSync } from "node:fs";
import { constants as osConstants } from "node:os";
import pty from "node-pty";
import {
  AgentboxError,
  TERMINAL_REPLAY_BYTES,
  type CreateTerminalRequest,
  type TerminalInfo,
  type TerminalRead,
} from "@agentbox/protocol";
import { type CgroupGroup, type LocalSandbox } from "@agentbox/isolation";
import { resolveCwd } from "./exec-runner.js";
import { OutputLog } from "./output-log.js";

const LOGIN_SHELL = ["/bin/bash", "-l"];
/** Exited terminals stay listed (late clients get the replay and the exit) up to this many; the oldest go first. */
export const MAX_EXITED_TERMINALS = 16;
const SIGNAL_NAMES = Object.fromEntries(Object.entries(osConstants.signals).map(([k, v]) => [v, k])) as Record<number, string>;

export interface TerminalContext {
  env: Record<string, string>;
  defaultCwd: string;
}

class Terminal {
  readonly log = new OutputLog(TERMINAL_REPLAY_BYTES);
  readonly exited: Promise<void>;
  private groupReleased = false;
  /** The PTY closes when the program's side hangs up, before the exit is known; its fd is gone from then on. */
  private ptyOpen = true;

  constructor(
    readonly info: TerminalInfo,
    private readonly term: pty.IPty,
    private readonly group: CgroupGroup,
    sandbox: LocalSandbox,
  ) {
    term.onData((d) => this.log.append(typeof d === "string" ? Buffer.from(d, "utf8") : d));
    // `close` is emitted by the PTY library's terminal but not in its typings.
    (term as unknown as { on(event: "close", listener: () => void): void }).on("close", () => (this.ptyOpen = false));
    this.exited = new Promise((resolve) => {
      term.onExit(({ exitCode, signal }) => {
        this.groupReleased = true;
        // Anything the program left behind (background jobs holding the PTY) goes with it.
        void sandbox.releaseGroup(group).catch(() => undefined).finally(() => {
          info.status = "exited";
          info.exitCode = signal ? null : exitCode;
          if (signal) info.signal = SIGNAL_NAMES[signal] ?? `SIG${signal}`;
          this.log.close();
          resolve();
        });
      });
    });
  }

  // Keystrokes and resizes that race the program's exit are dropped: a resize would
  // otherwise ioctl a closed fd (EBADF), or one since reused for something else.
  write(data: Buffer): void {
    if (this.ptyOpen) this.term.write(data);
  }

  resize(cols: number, rows: number): void {
    if (!this.ptyOpen) return;
    this.term.resize(cols, rows);
    this.info.cols = cols;
    this.info.rows = rows;
  }

  async kill(): Promise<void> {
    if (!this.groupReleased) await this.group.kill();
    await this.exited;
  }
}

export class TerminalRegistry {
  private readonly terminals = new Map<string, Terminal>();
  private readonly creating = new Map<string, Promise<Terminal>>();
  private counter = 0;

  constructor(private readonly sandbox: LocalSandbox) {}

  /** Start a terminal; an id that exists (or is being created) returns that terminal. */
  async create(req: CreateTerminalRequest, ctx: TerminalContext): Promise<{ info: TerminalInfo; created: boolean }> {
    const id = req.id ?? `term-${Date.now().toString(36)}-${(++this.counter).toString(36)}`;
    const existing = this.terminals.get(id);
    if (existing) return { info: existing.info, created: false };
    const pending = this.creating.get(id);
    if (pending) return { info: (await pending).info, created: false };
    const promise = this.start(id, req, ctx).finally(() => this.creating.delete(id));
    this.creating.set(id, promise);
    return { info: (await promise).info, created: true };
  }

  private async start(id: string, req: CreateTerminalRequest, ctx: TerminalContext): Promise<Terminal> {
    const cols = req.cols ?? 80;
    const rows = req.rows ?? 24;
    const cwd = resolveCwd(req.cwd, ctx.defaultCwd);
    const env = { ...this.sandbox.baseEnv, ...ctx.env, TERM: "xterm-256color", COLORTERM: "truecolor", ...req.env };
    const argv = req.command !== undefined ? ["/bin/sh", "-c", req.command] : LOGIN_SHELL;
    const group = this.sandbox.acquireGroup();
    let term: pty.IPty;
    try {
      const cmd = await this.sandbox.enterCommand({ argv, cwd, env }, group, { tty: true });
      // The PTY library forks here; its cwd is on the host side (the helper changes to `cwd` inside).
      term = pty.spawn(cmd.file, cmd.args, { name: "xterm-256color", cols, rows, cwd: "/", env: cmd.env, encoding: null });
    } catch (err) {
      await this.sandbox.releaseGroup(group);
      throw err;
    }
    const info: TerminalInfo = { id, pid: 0, cols, rows, cwd, status: "running", createdAt: new Date().toISOString() };
    if (req.command !== undefined) info.command = req.command;
    const terminal = new Terminal(info, term, group, this.sandbox);
    // Listed once complete: concurrent creates of this id wait on `creating` until then.
    info.pid = await sandboxPidOf(term.pid, terminal.exited);
    this.terminals.set(id, terminal);
    void terminal.exited.then(() => this.forgetOldExited());
    return terminal;
  }

  private forgetOldExited(): void {
    const exited = [...this.terminals].filter(([, t]) => t.info.status === "exited");
    for (const [id] of exited.slice(0, Math.max(0, exited.length - MAX_EXITED_TERMINALS))) this.terminals.delete(id);
  }

  private get(id: string): Terminal {
    const t = this.terminals.get(id);
    if (!t) throw new AgentboxError("NOT_FOUND", `terminal ${id} does not exist`, { terminal: id });
    return t;
  }

  list(): TerminalInfo[] {
    return [...this.terminals.values()].map((t) => t.info);
  }

  info(id: string): TerminalInfo {
    return this.get(id).info;
  }

  input(id: string, data: Buffer): void {
    this.get(id).write(data);
  }

  resize(id: string, cols: number, rows: number): TerminalInfo {
    const t = this.get(id);
    t.resize(cols, rows);
    return t.info;
  }

  /** Output from `offset` (clamped to what is still kept), waiting up to `waitMs` for some. */
  async read(id: string, offset: number, maxBytes: number, waitMs: number): Promise<{ result: TerminalRead; data: Buffer[] }> {
    const t = this.get(id);
    await t.log.waitBeyond(offset, waitMs);
    const r = t.log.readBytes(offset, maxBytes);
    const result: TerminalRead = { offset: r.offset, bytes: r.length, exited: t.log.isEnded && r.offset + r.length >= t.log.end };
    if (result.exited) {
      // The log ends only after the exit status is known.
      result.exitCode = t.info.exitCode ?? null;
      if (t.info.signal) result.signal = t.info.signal;
    }
    return { result, data: r.data };
  }

  async delete(id: string): Promise<boolean> {
    const t = this.terminals.get(id);
    if (!t) return false;
    await t.kill();
    this.terminals.delete(id);
    return true;
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.terminals.keys()].map((id) => this.delete(id)));
  }
}

/** The pid the terminal's program has inside the sandbox: the helper's child, as the sandbox's pid namespace numbers it. */
async function sandboxPidOf(helperPid: number, exited: Promise<void>): Promise<number> {
  let gone = false;
  void exited.then(() => (gone = true));
  for (let i = 0; i < 2000 && !gone; i++) {
    try {
      const child = readFileSync(`/proc/${helperPid}/task/${helperPid}/children`, "utf8").trim().split(" ")[0];
      if (child) {
        const nspid = /^NSpid:\s*(.*)$/m.exec(readFileSync(`/proc/${child}/status`, "utf8"))?.[1]?.trim().split(/\s+/);
        const last = nspid?.[nspid.length - 1];
        if (last) return Number(last);
      }
    } catch {
      // not forked yet, or already gone
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  return 0;
}
