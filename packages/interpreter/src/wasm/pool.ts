/**
 * InterpreterPool and InterpreterSession: real CPython (Pyodide) in separate processes under
 * Node's permission model, warm ahead of demand, with per-session limits.
 */
import { InterpreterChild, defaultPyodideDir, type ChildMessage } from "./child.js";
import {
  InterpreterCrashedError,
  InterpreterMemoryError,
  InterpreterRuntimeError,
  InterpreterSyntaxError,
  InterpreterTimeoutError,
} from "./errors.js";
import { PyKwargs, fromWire, toWire } from "./values.js";

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
}

/** How long an interrupted run may take to stop before its process is killed. */
const INTERRUPT_GRACE_MS = 25;

export class InterpreterPool {
  private readonly idle: InterpreterChild[] = [];
  private readonly all = new Set<InterpreterChild>();
  private starting = 0;
  private readonly waiters: Array<{ resolve: (c: InterpreterChild) => void; reject: (e: Error) => void }> = [];
  private closed = false;
  /** Load time (ms) of each interpreter started, for reporting. */
  readonly loadTimes: number[] = [];

  private constructor(
    readonly min: number,
    readonly max: number,
    private readonly pyodideDir: string,
  ) {}

  static async create(options: InterpreterPoolOptions = {}): Promise<InterpreterPool> {
    const min = options.min ?? 1;
    const max = Math.max(options.max ?? 4, min, 1);
    const pool = new InterpreterPool(min, max, options.pyodideDir ?? defaultPyodideDir());
    const started = Array.from({ length: min }, () => pool.spawn());
    await Promise.all(started);
    return pool;
  }

  get size(): { idle: number; total: number; starting: number } {
    return { idle: this.idle.length, total: this.all.size, starting: this.starting };
  }

  /** Starts one interpreter; when ready it serves a waiter or joins the idle list. */
  private async spawn(): Promise<void> {
    const child = new InterpreterChild(this.pyodideDir);
    this.all.add(child);
    this.starting++;
    child.onExit(() => {
      this.all.delete(child);
      const i = this.idle.indexOf(child);
      if (i >= 0) this.idle.splice(i, 1);
      if (!this.closed) this.topUp();
    });
    try {
      const { loadMs } = await child.ready;
      this.loadTimes.push(loadMs);
      this.starting--;
      this.give(child);
    } catch (e) {
      this.starting--;
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
    while (!this.closed && this.all.size < this.max && this.idle.length + this.starting < Math.max(this.min, this.waiters.length)) {
      this.spawn().catch(() => {});
    }
  }

  async checkout(options: { limits?: Partial<InterpreterLimits> } = {}): Promise<InterpreterSession> {
    if (this.closed) throw new Error("the pool is closed");
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    let child = this.idle.pop();
    if (!child) {
      child = await new Promise<InterpreterChild>((resolve, reject) => {
        this.waiters.push({ resolve, reject });
        this.topUp();
      });
    }
    this.topUp();
    return new InterpreterSession(child, limits, (c, reusable) => this.checkin(c, reusable));
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

export class InterpreterSession {
  private released = false;
  private running = false;
  /** Set when the interpreter cannot be trusted for another run (memory exhausted, killed, …). */
  private broken: Error | null = null;

  constructor(
    private readonly child: InterpreterChild,
    readonly limits: InterpreterLimits,
    private readonly checkin: (child: InterpreterChild, reusable: boolean) => Promise<void>,
  ) {}

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
    let timedOut = false;
    let grace: NodeJS.Timeout | undefined;
    // A run whose code swallows the interrupt ends when its process is killed, not when the
    // kernel has reaped it: the code cannot run on after SIGKILL.
    let killed!: (e: Error) => void;
    const whenKilled = new Promise<never>((_, reject) => (killed = reject));
    const timer = setTimeout(() => {
      timedOut = true;
      child.interrupt();
      grace = setTimeout(() => {
        child.kill();
        killed(new Error("killed after overrunning its deadline"));
      }, INTERRUPT_GRACE_MS);
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
          onCall: (name, args) => void this.answerCall(functions, name, args, () => timedOut),
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
      clearTimeout(grace);
      this.running = false;
    }
    if (timedOut) throw new InterpreterTimeoutError(`the run took longer than ${this.limits.timeoutMs} ms`);
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

  private async answerCall(functions: Record<string, InterpreterFunction>, name: string, args: string, timedOut: () => boolean): Promise<void> {
    let answer: Record<string, unknown>;
    try {
      const fn = Object.hasOwn(functions, name) ? functions[name] : undefined;
      if (!fn) throw new Error(`no host function named ${name}`);
      const [positional, kwargs] = JSON.parse(args) as [unknown[], Record<string, unknown>];
      const callArgs = (fromWire(positional) as unknown[]).slice();
      const kw = Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, fromWire(v)]));
      if (Object.keys(kw).length > 0) callArgs.push(new PyKwargs(kw));
      const value = await fn(...callArgs);
      answer = { ok: true, value: toWire(value) };
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      answer = { ok: false, error: { name: err.name, message: err.message } };
    }
    if (!timedOut()) this.child.send({ type: "answer", ...answer });
  }

  /** Gives the interpreter back: its state is reset (or the process replaced) before the next checkout. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.checkin(this.child, this.broken === null && !this.running);
  }
}
