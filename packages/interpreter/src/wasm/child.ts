/**
 * One interpreter process: `node --experimental-permission` running wasm-child/child.mjs,
 * with Pyodide in a worker thread inside it. Parent side of its frame protocol: control
 * frames (run, reset, interrupt → result, …) on stdin/stdout with the child's main thread; a
 * run's host calls and output on a pipe pair straight to the Pyodide thread (fd 3: answers
 * to it, fd 4: calls and output from it), the hot path of host calls.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { setPriority } from "node:os";
import type { Readable, Writable } from "node:stream";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { WorkerFrameReader, encodeWorkerFrame } from "@agentbox/protocol";

/** wasm-child/ sits beside src/ and dist/ in the package. */
export const CHILD_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../../wasm-child");

/** V8 code generation options of the interpreter process (docs/embedded.md, "Performance"). */
export const WASM_FLAGS = ["--wasm-inlining", "--wasm-inlining-budget=20000", "--wasm-inlining-max-size=2000"];

export function defaultPyodideDir(): string {
  return dirname(createRequire(import.meta.url).resolve("pyodide/package.json"));
}

export interface ChildMessage {
  type: string;
  [key: string]: unknown;
}

export interface RunRequest {
  code: string;
  inputs: string;
  functions: string;
  limits: { memoryBytes: number; maxOutputBytes: number; maxRecursionDepth: number };
  /** JSON {seed, clock} for a pausable (replayable) run. */
  pausable?: string;
}

export interface RunHandlers {
  onPrint?: (text: string, stream: "stdout" | "stderr") => void;
  onCall: (name: string, args: string) => void;
}

export class InterpreterChild {
  readonly process: ChildProcess;
  readonly ready: Promise<{ loadMs: number; memoryBytes: number }>;
  alive = true;
  memoryBytes = 0;
  private nextId = 1;
  private pending = new Map<number, { resolve: (m: ChildMessage) => void; reject: (e: Error) => void; handlers?: RunHandlers }>();
  /** Handlers of the one run in flight. */
  private runHandlers: RunHandlers | null = null;
  /** The Pyodide thread waits for the answer to a host call. */
  private callPending = false;
  /** Output the run may still print (the cap outside the Pyodide thread's reach). */
  private outputLeft = Infinity;
  private onReady: (m: ChildMessage) => void = () => {};
  /** Until ready: the child warms its host-call path up (runner.py, warm). */
  private warming = true;
  /** Booted at the low priority of a spare: restored when someone waits for it, and again at ready. */
  private lowered = false;
  /** The id of the thread Python runs in (from the child, at ready). */
  pythonThread: number | undefined;
  private readonly answerPipe: Writable;
  private stderr = "";
  private exitListeners: Array<() => void> = [];

  /** `background`: a spare made ahead of demand boots at a low priority until someone waits for it (`hurry`). */
  constructor(pyodideDir: string, background = false) {
    this.process = spawn(
      process.execPath,
      [
        "--experimental-permission",
        // CPython's eval loop calls many small helpers: inlining them within the wasm module
        // makes pure-Python code ~15% faster (bench l). V8 11's flags, off by default there.
        ...WASM_FLAGS,
        `--allow-fs-read=${pyodideDir}/*`,
        `--allow-fs-read=${CHILD_DIR}/*`,
        // Only for the Pyodide thread to learn its own id (see cpuMs).
        "--allow-fs-read=/proc/thread-self/stat",
        "--allow-worker",
        "--no-warnings",
        `${CHILD_DIR}/child.mjs`,
        pyodideDir,
      ],
      { env: {}, stdio: ["pipe", "pipe", "pipe", "pipe", "pipe"] },
    );
    if (background && this.process.pid !== undefined) this.lowered = setBootPriority(this.process.pid, true);
    this.answerPipe = this.process.stdio[3] as Writable;
    this.answerPipe.on("error", () => {});
    const direct = new WorkerFrameReader(64 * 1024 * 1024);
    (this.process.stdio[4] as Readable).on("data", (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = direct.push(chunk);
      } catch {
        this.kill();
        return;
      }
      for (const f of frames) this.direct(f);
    });
    let readyResolve!: (v: { loadMs: number; memoryBytes: number }) => void;
    let readyReject!: (e: Error) => void;
    this.ready = new Promise((res, rej) => ((readyResolve = res), (readyReject = rej)));
    this.ready.catch(() => {});
    const reader = new WorkerFrameReader(64 * 1024 * 1024);
    this.process.stdout!.on("data", (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = reader.push(chunk);
      } catch {
        this.kill();
        return;
      }
      for (const f of frames) this.control(f, 0);
    });
    this.onReady = (m) => {
      this.warming = false;
      this.hurry(); // also catches a thread made from a lowered one while an earlier hurry ran
      this.lowered = false;
      this.memoryBytes = m.memoryBytes as number;
      // Taken once, at boot, before any user code has run in the child.
      if (this.pythonThread === undefined && typeof m.threadId === "number" && Number.isInteger(m.threadId) && m.threadId > 0) this.pythonThread = m.threadId;
      readyResolve({ loadMs: m.loadMs as number, memoryBytes: m.memoryBytes as number });
    };
    this.process.stderr!.on("data", (d: Buffer) => {
      if (this.stderr.length < 16384) this.stderr += d.toString("utf8");
    });
    this.process.stdin!.on("error", () => {});
    this.process.on("exit", (code, signal) => {
      this.alive = false;
      const err = new Error(`interpreter process exited (${signal ?? code})${this.stderr ? `: ${this.stderr.slice(0, 2000)}` : ""}`);
      readyReject(err);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      for (const l of this.exitListeners) l();
    });
  }

  onExit(listener: () => void): void {
    if (!this.alive) listener();
    else this.exitListeners.push(listener);
  }

  /** A JSON message from the child (from `offset` in the frame): ready, fatal, a reply to a request. */
  private control(frame: Buffer, offset: number): void {
    let m: ChildMessage;
    try {
      m = JSON.parse(frame.toString("utf8", offset)) as ChildMessage;
    } catch {
      this.kill();
      return;
    }
    if (m.type === "ready") this.onReady(m);
    else this.dispatch(m);
  }

  /**
   * A frame of the direct pipe from the Pyodide thread: "c<name>\n<args>" (host call),
   * "o<text>" / "e<text>" (output), "j<JSON>" (any other message: ready, results, replies).
   */
  private direct(frame: Buffer): void {
    const kind = frame[0];
    if (kind === 106 /* j */) this.control(frame, 1);
    else if (kind === 99 /* c */) {
      const text = frame.toString("utf8", 1);
      const nl = text.indexOf("\n");
      this.callPending = true;
      const run = this.runHandlers;
      if (run && nl > 0) run.onCall(text.slice(0, nl), text.slice(nl + 1));
      else if (this.warming) this.answer({ ok: true, value: 1 }); // runner.py warm(), before ready
      else this.answer({ ok: false, error: { name: "Error", message: "no run in flight" } });
    } else if (kind === 111 /* o */ || kind === 101 /* e */) {
      if (this.outputLeft > 0) {
        // Second cap on output, outside the reach of code in the Pyodide thread.
        let bytes = frame.subarray(1);
        if (bytes.length > this.outputLeft) bytes = bytes.subarray(0, this.outputLeft);
        this.outputLeft -= bytes.length;
        this.runHandlers?.onPrint?.(bytes.toString("utf8"), kind === 111 ? "stdout" : "stderr");
      }
    } else {
      this.kill();
      return;
    }
  }

  /**
   * Answers the host call the Pyodide thread waits for ({ok: true, value} with a wire value,
   * {ok: false, error: {name, message}} or {ok: false, interrupted: true}); no-op when none.
   */
  answer(answer: Record<string, unknown>): void {
    if (!this.callPending || !this.alive) return;
    this.callPending = false;
    // Wire form (runner.py, _host_function): "1<JSON value>", "0<JSON error>", "2".
    const payload =
      answer.ok === true
        ? `1${JSON.stringify(answer.value ?? null)}`
        : answer.interrupted === true
          ? "2"
          : `0${JSON.stringify(answer.error ?? { name: "Error", message: "no answer" })}`;
    const length = Buffer.byteLength(payload, "utf8");
    const frame = Buffer.allocUnsafe(4 + length);
    frame.writeUInt32BE(length, 0);
    frame.write(payload, 4, "utf8");
    this.answerPipe.write(frame);
  }

  private dispatch(m: ChildMessage): void {
    if (m.type === "fatal") {
      this.kill();
      return;
    }
    if (m.type === "interrupt-set") {
      const waiting = this.interruptsSet.splice(0);
      for (const resolve of waiting) resolve();
      return;
    }
    if (m.type === "result") {
      this.runHandlers = null;
      this.callPending = false;
    }
    const id = m.id as number;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (typeof m.memoryBytes === "number") this.memoryBytes = m.memoryBytes;
    p.resolve(m);
  }

  send(message: { type: string; [key: string]: unknown }): void {
    if (message.type === "answer") {
      const { type: _type, ...answer } = message;
      this.answer(answer);
      return;
    }
    if (this.alive) this.process.stdin!.write(encodeWorkerFrame(message));
  }

  private request(message: { type: string; [key: string]: unknown }, handlers?: RunHandlers): Promise<ChildMessage> {
    if (!this.alive) return Promise.reject(new Error("interpreter process is gone"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...(handlers ? { handlers } : {}) });
      this.send({ ...message, id });
    });
  }

  run(req: RunRequest, handlers: RunHandlers): Promise<ChildMessage> {
    this.runHandlers = handlers;
    this.callPending = false;
    this.outputLeft = req.limits.maxOutputBytes;
    return this.request({ type: "run", ...req }, handlers);
  }

  reset(): Promise<ChildMessage> {
    return this.request({ type: "reset" });
  }

  /** A request to the Pyodide thread's mount filesystem (mounts.ts ↔ wasm-child/mount-fs.mjs). */
  fsRequest(message: { type: `fs-${string}`; [key: string]: unknown }): Promise<ChildMessage> {
    return this.request(message);
  }

  /** What JavaScript in the Pyodide thread can reach (for escape tests). */
  probe(): Promise<ChildMessage> {
    return this.request({ type: "probe" });
  }

  /** Callers of interrupt() waiting for the child to have set the interrupt. */
  private readonly interruptsSet: Array<() => void> = [];

  /**
   * Stops the run: KeyboardInterrupt in Python, also out of a pending host call. Resolves once
   * the child's main thread has set the interrupt the Pyodide thread polls (never if it is gone).
   */
  interrupt(): Promise<void> {
    const set = new Promise<void>((resolve) => this.interruptsSet.push(resolve));
    this.send({ type: "interrupt" });
    this.answer({ ok: false, interrupted: true });
    return set;
  }

  /**
   * CPU time (ms) the Python thread (before it is known: the whole process) has used. From the
   * scheduler's own sum in `schedstat`, to the nanosecond, where the kernel keeps it; else from
   * `stat`, whose user + system ticks come in 10 ms steps (USER_HZ), too coarse to tell 10 ms of
   * CPU from 20. NaN when gone.
   */
  cpuMs(): number {
    // The Python thread's own, once known: V8 compiles hot wasm in other threads of the process,
    // and that CPU (tens of ms in a fresh interpreter) is not the run overrunning.
    const dir = this.pythonThread ? `/proc/${this.process.pid}/task/${this.pythonThread}` : undefined;
    if (dir) {
      try {
        const schedstat = readFileSync(`${dir}/schedstat`, "latin1");
        return Number(schedstat.slice(0, schedstat.indexOf(" "))) / 1e6;
      } catch {
        /* no schedstat in this kernel, or gone: try stat */
      }
    }
    try {
      const stat = readFileSync(`${dir ?? `/proc/${this.process.pid}`}/stat`, "latin1");
      // Fields after the command name (which may hold spaces) start past its closing parenthesis.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return (Number(fields[11]) + Number(fields[12])) * 10;
    } catch {
      return NaN;
    }
  }

  /** Someone waits for this interpreter: finish booting at normal priority. */
  hurry(): void {
    if (this.lowered && this.process.pid !== undefined) setBootPriority(this.process.pid, false);
  }

  kill(): void {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill("SIGKILL");
    this.alive = false;
  }
}

/** The nice value an interpreter boots at: warming a spare must not slow the runs in progress. */
const BOOT_NICE = 10;

/**
 * Lower (`booting`) or restore the priority of every thread of process `pid`. Only as root:
 * anyone else could not raise it back (RLIMIT_NICE), and the interpreter would stay slow.
 * Threads inherit the nice value of the thread that made them, so the Pyodide thread and V8's
 * own, created during boot, are lowered with the main thread and restored one by one.
 */
function setBootPriority(pid: number, booting: boolean): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    const tids = booting ? [String(pid)] : readdirSync(`/proc/${pid}/task`);
    for (const tid of tids) {
      try {
        setPriority(Number(tid), booting ? BOOT_NICE : 0);
      } catch {
        /* the thread is gone */
      }
    }
  } catch {
    /* the process is gone */
  }
  return true;
}
