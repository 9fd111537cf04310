/**
 * InterpreterPool and InterpreterSession: real CPython (Pyodide) in separate processes under
 * Node's permission model, warm ahead of demand, with per-session limits.
 */
import { createHash, randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import { InterpreterChild, CHILD_DIR, defaultPyodideDir, type ChildMessage } from "./child.js";
import {
  InterpreterCrashedError,
  InterpreterMemoryError,
  InterpreterReplayError,
  InterpreterRuntimeError,
  InterpreterSyntaxError,
  InterpreterTimeoutError,
  InterpreterMountError,
  type MountRefusal,
} from "./errors.js";
import { DEFAULT_MOUNT_LIMITS, SessionMounts, planMounts, type Mount, type MountInfo, type MountLimits, type PlannedMount } from "./mounts.js";
import { PyKwargs, fromWire, toWire } from "./values.js";
import {
  decodeDump,
  encodeDump,
  type CallRecord,
  type CallResult,
  type LoadOptions,
  type Paused,
  type RunRecord,
  type StartOptions,
  type Step,
} from "./pausable.js";

export interface InterpreterLimits {
  /** Wall time of one run (default 30 s). */
  timeoutMs: number;
  /** Ceiling of the interpreter's WebAssembly memory (default 256 MiB; Pyodide itself takes ~30 MiB). */
  memoryBytes: number;
  /** Cap on printed output per run (default 1 MiB). */
  maxOutputBytes: number;
  /** Python recursion limit (default 1000); code cannot raise it. */
  maxRecursionDepth: number;
}

export const DEFAULT_LIMITS: InterpreterLimits = {
  timeoutMs: 30_000,
  memoryBytes: 256 * 1024 * 1024,
  maxOutputBytes: 1024 * 1024,
  maxRecursionDepth: 1000,
};

/** A host function callable from Python; keyword arguments arrive as a trailing PyKwargs. */
export type InterpreterFunction = (...args: unknown[]) => unknown;

export interface RunOptions {
  /** Python globals set before the run. */
  inputs?: Record<string, unknown>;
  /** Host functions, exposed as Python globals of the same names. */
  functions?: Record<string, InterpreterFunction>;
  onPrint?: (text: string, stream: "stdout" | "stderr") => void;
}

export interface InterpreterPoolOptions {
  /** Warm interpreters kept ready (default 1). */
  min?: number;
  /** Interpreters alive at most, busy ones included (default 4). */
  max?: number;
  /** Directory of the `pyodide` npm package (default: resolved from this package). */
  pyodideDir?: string;
  /**
   * Key that signs dumps of pausable runs (HMAC-SHA-256); `load` then refuses dumps not signed
   * with it. Without a key a dump carries a plain SHA-256 hash: corruption is detected, a
   * deliberate edit is not.
   */
  dumpSecret?: string | Uint8Array;
}

/** What a dump must match to be loaded: the Pyodide version and the child's sources. */
function interpreterFingerprint(pyodideDir: string): string {
  const version = (JSON.parse(readFileSync(`${pyodideDir}/package.json`, "utf8")) as { version: string }).version;
  const h = createHash("sha256");
  for (const f of ["runner.py", "pyodide-thread.mjs"]) h.update(readFileSync(`${CHILD_DIR}/${f}`));
  return `pyodide ${version}; child ${h.digest("hex").slice(0, 16)}`;
}

interface DumpContext {
  fingerprint: string;
  secret: string | Uint8Array | undefined;
}

type RunEvent = { kind: "call"; name: string; args: string } | { kind: "result"; reply: ChildMessage } | { kind: "error"; error: Error };

class EventQueue {
  private items: RunEvent[] = [];
  private waiter: ((e: RunEvent) => void) | null = null;
  push(e: RunEvent): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w(e);
    } else this.items.push(e);
  }
  next(): Promise<RunEvent> {
    const e = this.items.shift();
    if (e) return Promise.resolve(e);
    return new Promise((r) => (this.waiter = r));
  }
}

/** A pausable run in flight in a session. */
interface ActiveRun {
  events: EventQueue;
  /** The run so far: host calls answered are appended to `record.calls`. */
  record: RunRecord;
  /** Recorded calls to answer without the host (a loaded dump), in order. */
  replay: CallRecord[];
  /** The call a loaded dump was paused at: the replay must stop there. */
  expected: { name: string; args: string } | null;
  /** True until a loaded run reaches its paused call: its output was already seen. */
  replaying: boolean;
  onPrint: ((text: string, stream: "stdout" | "stderr") => void) | undefined;
  /** The session belongs to the run (pool.load): released when the run ends. */
  autoRelease: boolean;
  ended: boolean;
}

/** How long a paused run that is abandoned may take to unwind before its process is killed. */
const ABORT_GRACE_MS = 250;

/** How much CPU an interrupted run may still use before its process is killed. */
const INTERRUPT_GRACE_MS = 25;
/** How long an interrupted run may take to stop, however little CPU it got, before its process is killed. */
const INTERRUPT_WALL_CAP_MS = 1000;

/**
 * After an interrupt: kills `child` once it has used INTERRUPT_GRACE_MS of CPU without stopping
 * (code that swallows KeyboardInterrupt), and calls `onKilled`. CPU rather than wall time, and
 * counted from when the child has set the interrupt (`delivered`): on a busy machine an
 * interpreter that is only waiting for a core to see the interrupt has not overrun, and killing
 * it would throw away a session that was about to stop cleanly. Returns a cancel function.
 */
function killIfOverrunning(child: InterpreterChild, delivered: Promise<void>, onKilled: () => void): () => void {
  let cpuAtDelivery: number | undefined;
  void delivered.then(() => (cpuAtDelivery = child.cpuMs()));
  const t0 = performance.now();
  let timer: NodeJS.Timeout;
  const check = (): void => {
    const used = cpuAtDelivery === undefined ? 0 : child.cpuMs() - cpuAtDelivery;
    if (!(used < INTERRUPT_GRACE_MS) || performance.now() - t0 >= INTERRUPT_WALL_CAP_MS) {
      child.kill();
      onKilled();
    } else timer = setTimeout(check, 5);
  };
  timer = setTimeout(check, INTERRUPT_GRACE_MS);
  return () => clearTimeout(timer);
}

export class InterpreterPool {
  private readonly idle: InterpreterChild[] = [];
  private readonly all = new Set<InterpreterChild>();
  /** Interpreters still booting, oldest first. */
  private readonly booting = new Set<InterpreterChild>();
  private readonly waiters: Array<{ resolve: (c: InterpreterChild) => void; reject: (e: Error) => void }> = [];
  private closed = false;
  private readonly dumpContext: DumpContext;
  /** Load time (ms) of each interpreter started, for reporting. */
  readonly loadTimes: number[] = [];

  private constructor(
    readonly min: number,
    readonly max: number,
    private readonly pyodideDir: string,
    dumpSecret: string | Uint8Array | undefined,
  ) {
    this.dumpContext = { fingerprint: interpreterFingerprint(pyodideDir), secret: dumpSecret };
  }

  static async create(options: InterpreterPoolOptions = {}): Promise<InterpreterPool> {
    const min = options.min ?? 1;
    const max = Math.max(options.max ?? 4, min, 1);
    const pool = new InterpreterPool(min, max, options.pyodideDir ?? defaultPyodideDir(), options.dumpSecret);
    const started = Array.from({ length: min }, () => pool.spawn(false));
    await Promise.all(started);
    return pool;
  }

  get size(): { idle: number; total: number; starting: number } {
    return { idle: this.idle.length, total: this.all.size, starting: this.booting.size };
  }

  /**
   * Starts one interpreter; when ready it serves a waiter or joins the idle list. A spare made
   * ahead of demand (`background`) boots at a low priority until a checkout waits for it.
   */
  private async spawn(background: boolean): Promise<void> {
    const child = new InterpreterChild(this.pyodideDir, background);
    this.all.add(child);
    this.booting.add(child);
    child.onExit(() => {
      this.all.delete(child);
      const i = this.idle.indexOf(child);
      if (i >= 0) this.idle.splice(i, 1);
      if (!this.closed) this.topUp();
    });
    try {
      const { loadMs } = await child.ready;
      this.loadTimes.push(loadMs);
      this.booting.delete(child);
      this.give(child);
    } catch (e) {
      this.booting.delete(child);
      this.all.delete(child);
      const w = this.waiters.shift();
      if (w) w.reject(e as Error);
      else throw e;
    }
  }

  private give(child: InterpreterChild): void {
    if (this.closed || !child.alive) {
      child.kill();
      return;
    }
    const w = this.waiters.shift();
    if (w) w.resolve(child);
    else this.idle.push(child);
  }

  private topUp(): void {
    while (!this.closed && this.all.size < this.max && this.idle.length + this.booting.size < Math.max(this.min, this.waiters.length)) {
      this.spawn(true).catch(() => {});
    }
  }

  async checkout(options: CheckoutOptions = {}): Promise<InterpreterSession> {
    if (this.closed) throw new Error("the pool is closed");
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    // Mounts are validated and their host directories walked before an interpreter is taken.
    const mountLimits = options.mounts === undefined ? null : { ...DEFAULT_MOUNT_LIMITS, ...options.mountLimits };
    const plan = mountLimits ? await planMounts(options.mounts, mountLimits) : null;
    let child = this.idle.pop();
    if (!child) {
      child = await new Promise<InterpreterChild>((resolve, reject) => {
        this.waiters.push({ resolve, reject });
        this.topUp();
        this.hurryBooting();
      });
    }
    this.topUp();
    const session = new InterpreterSession(child, limits, (c, reusable) => this.checkin(c, reusable), this.dumpContext);
    if (plan && plan.length > 0) await session.attachMounts(plan, mountLimits!);
    return session;
  }

  /** As many booting interpreters as there are waiters, oldest first, finish at normal priority. */
  private hurryBooting(): void {
    let n = this.waiters.length;
    for (const child of this.booting) {
      if (n-- <= 0) break;
      child.hurry();
    }
  }

  /**
   * Continues a pausable run from `Paused.dump()` bytes (made by this or another pool, in this or
   * another process, with the same interpreter build): replays it in a fresh interpreter up to
   * its paused call and returns that step. The interpreter is returned to the pool when the run
   * ends or is cancelled.
   */
  async load(bytes: Uint8Array, options: LoadOptions = {}): Promise<Step> {
    const body = decodeDump(bytes, this.dumpContext.fingerprint, this.dumpContext.secret);
    const limits = { ...DEFAULT_LIMITS, ...body.limits, ...options.limits };
    const session = await this.checkout({ limits });
    const record: RunRecord = {
      code: body.code,
      inputs: body.inputs,
      functions: body.functions,
      seed: body.seed,
      clock: body.clock,
      limits: body.limits,
      calls: [],
    };
    try {
      return await session.replayRun(record, body.calls, body.paused, options.onPrint);
    } catch (e) {
      void session.release();
      throw e;
    }
  }

  private async checkin(child: InterpreterChild, reusable: boolean): Promise<void> {
    if (reusable && child.alive && !this.closed) {
      try {
        const done = await child.reset();
        if (done.ok === true) {
          this.give(child);
          return;
        }
      } catch {
        // fall through: replace it
      }
    }
    child.kill();
    this.topUp();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new Error("the pool is closed"));
    const exits = [...this.all].map((c) => new Promise<void>((r) => c.onExit(r)));
    for (const c of this.all) c.kill();
    this.idle.length = 0;
    await Promise.all(exits);
  }
}

export interface CheckoutOptions {
  limits?: Partial<InterpreterLimits>;
  /** Host directories to show at virtual paths for this session (docs/embedded.md, "Mounts"). */
  mounts?: Mount[];
  /** Caps of the copies in and out of mounts (default 256 MiB and 10,000 entries). */
  mountLimits?: Partial<MountLimits>;
}

export class InterpreterSession {
  private released = false;
  private mountSet: SessionMounts | null = null;
  private running = false;
  /** Set when the interpreter cannot be trusted for another run (memory exhausted, killed, …). */
  private broken: Error | null = null;
  /** Code has run since the interpreter was last reset. */
  private dirty = false;
  private active: ActiveRun | null = null;

  constructor(
    private readonly child: InterpreterChild,
    readonly limits: InterpreterLimits,
    private readonly checkin: (child: InterpreterChild, reusable: boolean) => Promise<void>,
    private readonly dumpContext: DumpContext = { fingerprint: "unknown", secret: undefined },
  ) {}

  /** The session's mounts as set up at checkout (with the host entries skipped). */
  get mounts(): readonly MountInfo[] {
    return this.mountSet?.infos ?? [];
  }

  /** @internal checkout: copies the mounts in; on failure the interpreter is replaced. */
  async attachMounts(plan: PlannedMount[], limits: MountLimits): Promise<void> {
    const mounts = new SessionMounts(this.child, plan, limits);
    try {
      await mounts.attach();
    } catch (e) {
      this.broken = e as Error;
      await this.release();
      throw e instanceof InterpreterMountError ? e : new InterpreterMountError(`the mounts could not be set up: ${(e as Error).message}`);
    }
    this.mountSet = mounts;
  }

  /** Applies the changes under read-write mounts to the host; what was refused, or null. */
  private async writeBack(): Promise<MountRefusal[] | null> {
    if (!this.mountSet?.writable || !this.child.alive) return null;
    const wasRunning = this.running;
    this.running = true;
    try {
      const refused = await this.mountSet.sync();
      return refused.length > 0 ? refused : null;
    } catch (e) {
      return [{ path: "(read-write mounts)", reason: `the write-back failed: ${(e as Error).message}` }];
    } finally {
      this.running = wasRunning;
    }
  }

  private static mountError(refused: MountRefusal[], when: string): InterpreterMountError {
    const list = refused.slice(0, 5).map((r) => `${r.path}: ${r.reason}`).join("; ");
    return new InterpreterMountError(`the write-back ${when} refused ${refused.length} change(s): ${list}${refused.length > 5 ? "; …" : ""}`, refused);
  }

  /** Size of the interpreter's WebAssembly memory after the last run. */
  get memoryBytes(): number {
    return this.child.memoryBytes;
  }

  /** For escape tests: what JavaScript running in the Pyodide thread can reach. */
  async probeJavaScriptScope(): Promise<Record<string, string>> {
    const m = await this.child.probe();
    return m.result as Record<string, string>;
  }

  async run(code: string, options: RunOptions = {}): Promise<unknown> {
    if (this.released) throw new Error("the session was released");
    if (this.broken) throw new InterpreterCrashedError(`the interpreter is no longer usable: ${this.broken.message}`);
    if (this.running) throw new Error("a run is already in progress in this session");
    const functions = options.functions ?? {};
    const child = this.child;
    const inputs = JSON.stringify(toWire(options.inputs ?? {}));
    this.running = true;
    this.dirty = true;
    let timedOut = false;
    let cancelGrace = (): void => {};
    // A run whose code swallows the interrupt ends when its process is killed, not when the
    // kernel has reaped it: the code cannot run on after SIGKILL.
    let killed!: (e: Error) => void;
    const whenKilled = new Promise<never>((_, reject) => (killed = reject));
    const timer = setTimeout(() => {
      timedOut = true;
      cancelGrace = killIfOverrunning(child, child.interrupt(), () => killed(new Error("killed after overrunning its deadline")));
    }, this.limits.timeoutMs);
    let reply: ChildMessage;
    try {
      const running = child.run(
        {
          code,
          inputs,
          functions: JSON.stringify(Object.keys(functions)),
          limits: {
            memoryBytes: this.limits.memoryBytes,
            maxOutputBytes: this.limits.maxOutputBytes,
            maxRecursionDepth: this.limits.maxRecursionDepth,
          },
        },
        {
          ...(options.onPrint ? { onPrint: options.onPrint } : {}),
          onCall: (name, args) => this.answerCall(functions, name, args, () => timedOut),
        },
      );
      running.catch(() => undefined);
      reply = await Promise.race([running, whenKilled]);
    } catch (e) {
      this.broken = e as Error;
      if (timedOut) throw new InterpreterTimeoutError(`the run did not stop within ${this.limits.timeoutMs} ms and its interpreter was killed`);
      throw new InterpreterCrashedError((e as Error).message);
    } finally {
      clearTimeout(timer);
      cancelGrace();
      this.running = false;
    }
    const refused = this.mountSet ? await this.writeBack() : null;
    if (refused) {
      const error = InterpreterSession.mountError(refused, "after the run");
      try {
        if (timedOut) throw new InterpreterTimeoutError(`the run took longer than ${this.limits.timeoutMs} ms`);
        error.value = this.interpret(reply);
      } catch (e) {
        error.cause = e;
      }
      throw error;
    }
    if (timedOut) throw new InterpreterTimeoutError(`the run took longer than ${this.limits.timeoutMs} ms`);
    return this.interpret(reply);
  }

  /** The value of a finished run, or its typed error. */
  private interpret(reply: ChildMessage): unknown {
    const child = this.child;
    const result = JSON.parse(reply.result as string) as {
      status: string;
      value?: unknown;
      pythonType?: string;
      message?: string;
      traceback?: string;
      line?: number | null;
      offset?: number | null;
    };
    switch (result.status) {
      case "ok":
        return fromWire(result.value);
      case "syntax":
        throw new InterpreterSyntaxError(result.message ?? "invalid syntax", result.line ?? null, result.offset ?? null);
      case "error":
        throw new InterpreterRuntimeError(result.pythonType ?? "Exception", result.message ?? "", result.traceback ?? "");
      case "timeout":
        // A KeyboardInterrupt without our timer: the code raised it itself.
        throw new InterpreterRuntimeError("KeyboardInterrupt", result.message ?? "", result.traceback ?? "");
      case "memory":
        this.broken = new Error("memory exhausted");
        throw new InterpreterMemoryError(`the run exceeded the ${this.limits.memoryBytes}-byte memory limit`);
      default: {
        // The interpreter failed outside Python's reach; near the memory ceiling that is memory exhaustion.
        this.broken = new Error(result.message ?? "interpreter failure");
        child.kill();
        if (child.memoryBytes >= this.limits.memoryBytes * 0.8) {
          throw new InterpreterMemoryError(`the run exceeded the ${this.limits.memoryBytes}-byte memory limit`);
        }
        throw new InterpreterCrashedError(result.message ?? "interpreter failure");
      }
    }
  }

  /**
   * Answers a host call of a run. A host function that returns a plain value is answered
   * synchronously, in the same event-loop turn as its call (the hot path of host calls); one
   * that returns a promise when it settles.
   */
  private answerCall(functions: Record<string, InterpreterFunction>, name: string, args: string, timedOut: () => boolean): void {
    const child = this.child;
    const fail = (e: unknown): void => {
      const err = e instanceof Error ? e : new Error(String(e));
      child.answer(timedOut() ? { ok: false, interrupted: true } : { ok: false, error: { name: err.name, message: err.message } });
    };
    const succeed = (value: unknown): void => {
      if (timedOut()) {
        child.answer({ ok: false, interrupted: true });
        return;
      }
      let wire: unknown;
      try {
        wire = toWire(value);
      } catch (e) {
        fail(e);
        return;
      }
      child.answer({ ok: true, value: wire });
    };
    if (timedOut()) {
      child.answer({ ok: false, interrupted: true });
      return;
    }
    let value: unknown;
    try {
      const fn = Object.hasOwn(functions, name) ? functions[name] : undefined;
      if (!fn) throw new Error(`no host function named ${name}`);
      const [positional, kwargs] = JSON.parse(args) as [unknown[], Record<string, unknown>];
      const callArgs = fromWire(positional) as unknown[];
      const keys = Object.keys(kwargs);
      if (keys.length > 0) callArgs.push(new PyKwargs(Object.fromEntries(keys.map((k) => [k, fromWire(kwargs[k])]))));
      value = fn(...callArgs);
    } catch (e) {
      fail(e);
      return;
    }
    if (value !== null && (typeof value === "object" || typeof value === "function") && typeof (value as PromiseLike<unknown>).then === "function") {
      Promise.resolve(value as PromiseLike<unknown>).then(succeed, fail);
    } else succeed(value);
  }

  /**
   * Starts a pausable run: it pauses at each call of a function named in `functions` (see
   * pausable.ts). The run sees its inputs and functions only: when the session has run code
   * before, its interpreter is reset first (globals, imported modules, files), so a replay in a
   * fresh interpreter starts from the same state. Randomness and the clock are deterministic
   * during the run (wasm-child/runner.py, `_Deterministic`).
   */
  async start(code: string, options: StartOptions = {}): Promise<Step> {
    this.checkUsable();
    const functions = options.functions ?? [];
    for (const f of functions) {
      if (typeof f !== "string" || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(f)) throw new TypeError(`not a function name: ${String(f)}`);
    }
    const record: RunRecord = {
      code,
      inputs: toWire(options.inputs ?? {}),
      functions: [...functions],
      seed: randomInt(2 ** 47),
      clock: Date.now() / 1000,
      limits: { ...this.limits },
      calls: [],
    };
    return this.begin(record, [], null, options.onPrint, false);
  }

  /** @internal pool.load: replays `calls` and pauses at `paused`. */
  replayRun(
    record: RunRecord,
    calls: CallRecord[],
    paused: { name: string; args: string },
    onPrint: ((text: string, stream: "stdout" | "stderr") => void) | undefined,
  ): Promise<Step> {
    this.checkUsable();
    return this.begin(record, calls, paused, onPrint, true);
  }

  private checkUsable(): void {
    if (this.released) throw new Error("the session was released");
    if (this.broken) throw new InterpreterCrashedError(`the interpreter is no longer usable: ${this.broken.message}`);
    if (this.running) throw new Error("a run is already in progress in this session");
  }

  private async begin(
    record: RunRecord,
    replay: CallRecord[],
    expected: { name: string; args: string } | null,
    onPrint: ((text: string, stream: "stdout" | "stderr") => void) | undefined,
    autoRelease: boolean,
  ): Promise<Step> {
    this.running = true;
    if (this.dirty) {
      let ok = false;
      try {
        ok = (await this.child.reset()).ok === true;
      } catch {
        ok = false;
      }
      if (!ok) {
        this.running = false;
        this.broken = new Error("the interpreter could not be reset");
        if (autoRelease) void this.release();
        throw new InterpreterCrashedError("the interpreter could not be reset before a pausable run");
      }
    }
    this.dirty = true;
    const run: ActiveRun = {
      events: new EventQueue(),
      record,
      replay,
      expected,
      replaying: expected !== null,
      onPrint,
      autoRelease,
      ended: false,
    };
    this.active = run;
    const running = this.child.run(
      {
        code: record.code,
        inputs: JSON.stringify(record.inputs),
        functions: JSON.stringify(record.functions),
        limits: {
          memoryBytes: this.limits.memoryBytes,
          maxOutputBytes: this.limits.maxOutputBytes,
          maxRecursionDepth: this.limits.maxRecursionDepth,
        },
        pausable: JSON.stringify({ seed: record.seed, clock: record.clock }),
      },
      {
        onPrint: (text, stream) => {
          if (!run.replaying) run.onPrint?.(text, stream);
        },
        onCall: (name, args) => run.events.push({ kind: "call", name, args }),
      },
    );
    running.then(
      (reply) => run.events.push({ kind: "result", reply }),
      (error: Error) => run.events.push({ kind: "error", error }),
    );
    return this.advance(run);
  }

  /** Runs Python until its next host call (→ Paused) or its end; `timeoutMs` applies to each such stretch. */
  private async advance(run: ActiveRun): Promise<Step> {
    let timedOut = false;
    let cancelGrace = (): void => {};
    const timer = setTimeout(() => {
      timedOut = true;
      cancelGrace = killIfOverrunning(this.child, this.child.interrupt(), () =>
        run.events.push({ kind: "error", error: new Error("killed after overrunning its deadline") }),
      );
    }, this.limits.timeoutMs);
    let mismatch: string | null = null;
    try {
      for (;;) {
        const ev = await run.events.next();
        if (ev.kind === "call") {
          if (timedOut) {
            this.child.send({ type: "answer", ok: false, interrupted: true });
            continue;
          }
          const i = run.record.calls.length;
          if (i < run.replay.length) {
            const rec = run.replay[i]!;
            if (rec.name !== ev.name || rec.args !== ev.args) {
              mismatch = `host call #${i + 1} differs from the record: recorded ${rec.name}${describeArgs(rec.args)}, replayed ${ev.name}${describeArgs(ev.args)}`;
              break;
            }
            run.record.calls.push(rec);
            this.child.send({ type: "answer", ...rec.result });
            continue;
          }
          if (run.expected) {
            const exp = run.expected;
            run.expected = null;
            if (exp.name !== ev.name || exp.args !== ev.args) {
              mismatch = `the run paused at ${exp.name}${describeArgs(exp.args)} but its replay reached ${ev.name}${describeArgs(ev.args)}`;
              break;
            }
          }
          run.replaying = false;
          return this.pausedStep(run, ev.name, ev.args);
        }
        if (ev.kind === "error") {
          this.broken = ev.error;
          this.end(run);
          if (timedOut) throw new InterpreterTimeoutError(`the run did not stop within ${this.limits.timeoutMs} ms and its interpreter was killed`);
          throw new InterpreterCrashedError(ev.error.message);
        }
        // The run ended.
        if (run.replaying) {
          this.end(run);
          if (timedOut) throw new InterpreterTimeoutError(`the replay took longer than ${this.limits.timeoutMs} ms`);
          throw new InterpreterReplayError(
            `the replay ended after ${run.record.calls.length} host call(s) without reaching the call the run was paused at (${run.expected?.name ?? "?"})`,
          );
        }
        this.end(run);
        if (timedOut) throw new InterpreterTimeoutError(`the run took longer than ${this.limits.timeoutMs} ms`);
        return { done: true, value: this.interpret(ev.reply) };
      }
    } finally {
      clearTimeout(timer);
      cancelGrace();
    }
    // A replay that diverged: stop the run, then report.
    const reusable = await this.abort(run);
    this.end(run, reusable);
    throw new InterpreterReplayError(`${mismatch}; the run is not replayable (see InterpreterReplayError)`);
  }

  private pausedStep(run: ActiveRun, name: string, args: string): Paused {
    const [positional, kwargs] = JSON.parse(args) as [unknown[], Record<string, unknown>];
    const record: RunRecord = { ...run.record, calls: run.record.calls.slice() };
    let used = false;
    const answer = (result: CallResult): Promise<Step> => {
      if (used) throw new Error("this step was already resumed or cancelled");
      if (run.ended) throw new Error("the run has ended");
      used = true;
      run.record.calls.push({ name, args, result });
      this.child.send({ type: "answer", ...result });
      return this.advance(run);
    };
    return {
      done: false,
      name,
      args: fromWire(positional) as unknown[],
      kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, fromWire(v)])),
      resume: async (value: unknown) => answer({ ok: true, value: toWire(value) }),
      throw: async (error: unknown) => {
        const err = error instanceof Error ? error : new Error(String(error));
        return answer({ ok: false, error: { name: err.name, message: err.message } });
      },
      dump: () => encodeDump(record, { name, args }, this.dumpContext.fingerprint, this.dumpContext.secret),
      cancel: async () => {
        if (used || run.ended) return;
        used = true;
        const reusable = await this.abort(run);
        this.end(run, reusable);
      },
    };
  }

  /** Stops a paused or diverged run: the code gets KeyboardInterrupt; true when it ended in time. */
  private async abort(run: ActiveRun): Promise<boolean> {
    if (!this.child.alive) return false;
    // The pending host call raises KeyboardInterrupt; code that swallows it and runs on is killed.
    this.child.send({ type: "answer", ok: false, interrupted: true });
    let expired = false;
    const t = setTimeout(() => {
      expired = true;
      run.events.push({ kind: "error", error: new Error("the run did not stop") });
    }, ABORT_GRACE_MS);
    try {
      for (;;) {
        const ev = await run.events.next();
        if (ev.kind === "call") {
          this.child.send({ type: "answer", ok: false, interrupted: true });
          continue;
        }
        if (ev.kind === "result" && !expired) return true;
        this.child.kill();
        return false;
      }
    } finally {
      clearTimeout(t);
    }
  }

  /** A pausable run is over: the session is free again (a loaded run's session goes back to the pool). */
  private end(run: ActiveRun, reusable = true): void {
    if (run.ended) return;
    run.ended = true;
    if (this.active === run) this.active = null;
    this.running = false;
    if (!reusable && !this.broken) this.broken = new Error("a run could not be stopped");
    if (run.autoRelease) void this.release();
  }

  /** Gives the interpreter back: its state is reset (or the process replaced) before the next checkout. */
  async release(): Promise<void> {
    if (this.released) return;
    const run = this.active;
    if (run && !run.ended) {
      // A paused run is abandoned (its dump, if any, stays valid).
      const reusable = await this.abort(run);
      run.ended = true;
      this.active = null;
      this.running = false;
      if (!reusable && !this.broken) this.broken = new Error("a run could not be stopped");
    }
    if (this.released) return;
    this.released = true;
    let refused: MountRefusal[] | null = null;
    if (this.mountSet && !this.running) {
      // Last write-back (changes of pausable runs), then the mounts leave the interpreter.
      refused = await this.writeBack();
      if (this.child.alive && this.broken === null) {
        try {
          await this.mountSet.detach();
        } catch (e) {
          this.broken = e as Error;
        }
      }
    }
    await this.checkin(this.child, this.broken === null && !this.running);
    if (refused) throw InterpreterSession.mountError(refused, "at release");
  }
}

function describeArgs(args: string): string {
  const text = args.length > 200 ? `${args.slice(0, 200)}…` : args;
  return `(${text})`;
}
