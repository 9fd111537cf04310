/**
 * One interpreter process: `node --experimental-permission` running wasm-child/child.mjs,
 * with Pyodide in a worker thread inside it. Parent side of its frame protocol.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { WorkerFrameReader, encodeWorkerFrame } from "@agentbox/protocol";

/** wasm-child/ sits beside src/ and dist/ in the package. */
export const CHILD_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../../wasm-child");

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
  private stderr = "";
  private exitListeners: Array<() => void> = [];

  constructor(pyodideDir: string) {
    this.process = spawn(
      process.execPath,
      [
        "--experimental-permission",
        `--allow-fs-read=${pyodideDir}/*`,
        `--allow-fs-read=${CHILD_DIR}/*`,
        "--allow-worker",
        "--no-warnings",
        `${CHILD_DIR}/child.mjs`,
        pyodideDir,
      ],
      { env: {}, stdio: ["pipe", "pipe", "pipe"] },
    );
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
      for (const f of frames) {
        const m = JSON.parse(f.toString("utf8")) as ChildMessage;
        if (m.type === "ready") {
          this.memoryBytes = m.memoryBytes as number;
          readyResolve({ loadMs: m.loadMs as number, memoryBytes: m.memoryBytes as number });
        } else this.dispatch(m);
      }
    });
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

  private dispatch(m: ChildMessage): void {
    if (m.type === "print" || m.type === "call") {
      // Belongs to the one run in flight.
      const run = [...this.pending.values()].find((p) => p.handlers);
      if (m.type === "print") run?.handlers?.onPrint?.(m.text as string, m.stream as "stdout" | "stderr");
      else if (run) run.handlers!.onCall(m.name as string, m.args as string);
      else this.send({ type: "answer", ok: false, error: { name: "Error", message: "no run in flight" } });
      return;
    }
    if (m.type === "fatal") {
      this.kill();
      return;
    }
    const id = m.id as number;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (typeof m.memoryBytes === "number") this.memoryBytes = m.memoryBytes;
    p.resolve(m);
  }

  send(message: unknown): void {
    if (this.alive) this.process.stdin!.write(encodeWorkerFrame(message));
  }

  private request(message: Record<string, unknown>, handlers?: RunHandlers): Promise<ChildMessage> {
    if (!this.alive) return Promise.reject(new Error("interpreter process is gone"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...(handlers ? { handlers } : {}) });
      this.send({ ...message, id });
    });
  }

  run(req: RunRequest, handlers: RunHandlers): Promise<ChildMessage> {
    return this.request({ type: "run", ...req }, handlers);
  }

  reset(): Promise<ChildMessage> {
    return this.request({ type: "reset" });
  }

  /** What JavaScript in the Pyodide thread can reach (for escape tests). */
  probe(): Promise<ChildMessage> {
    return this.request({ type: "probe" });
  }

  interrupt(): void {
    this.send({ type: "interrupt" });
  }

  kill(): void {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill("SIGKILL");
    this.alive = false;
  }
}
