/**
 * Code contexts of one sandbox: each context is one worker (CPython or Node)
 * started inside the sandbox, taken from a small warm pool per language.
 * A run either waits for its end (`run`) or streams: `start`, then `events`
 * long-polled, with host-function calls answered by `resume`.
 */
import { randomBytes } from "node:crypto";
import {
  AgentboxError,
  type CallEvent,
  type CodeContextInfo,
  type CreateCodeContextRequest,
  type Execution,
  type InstallDependenciesBody,
  type RunCodeRequest,
  type TurnEnder,
  type WorkerEvent,
} from "@agentbox/protocol";
import { PyKwargs, SubprocessTransport, Worker, WorkerFailure, WorkerPool, workerLaunch, type CallAnswer, type CodeLanguage, type InterpreterSession } from "@agentbox/interpreter";
import { decodeValue, encodeValue } from "@agentbox/protocol";
import { checkoutWasm, wasmError, wasmResults } from "./wasm-contexts.js";
import type { LocalSandbox } from "@agentbox/isolation";
import { resolveCwd } from "./exec-runner.js";

/** Contexts a sandbox may have at once. */
const MAX_CONTEXTS = 32;
/** Longest a run may take when the request names no timeout. */
const DEFAULT_RUN_TIMEOUT_MS = 10 * 60_000;
/** Output kept per stream of a run's Execution. */
const MAX_EXECUTION_OUTPUT = 10 * 1024 * 1024;

interface Stream {
  queue: WorkerEvent[];
  done: boolean;
  /** Readers waiting for events (one normally; a resume and an events call may overlap). */
  waiters: Set<() => void>;
  calls: Map<string, (answer: CallAnswer) => void>;
}

interface Context {
  info: CodeContextInfo;
  worker: Worker;
  /** For `python-wasm`: the embedded interpreter's session (then `worker` is unused). */
  wasm: InterpreterSession | undefined;
  /** Its interpreter ran out of memory, crashed or was killed: the next run gets another. */
  wasmBroken?: boolean;
  /** Whether the worker came from the pool's defaults (it may go back) and had no dependencies installed. */
  pooled: boolean;
  env: Record<string, string>;
  busy: boolean;
  stream: Stream | undefined;
}

export class CodeContexts {
  private readonly contexts = new Map<string, Context>();
  private readonly pools = new Map<CodeLanguage, WorkerPool>();
  private defaults: { env: Record<string, string>; cwd: string } | undefined;

  constructor(private readonly sandbox: LocalSandbox) {}

  /** Start a worker of `language` in the sandbox and configure it. */
  private async spawnWorker(language: CodeLanguage, cwd: string, env: Record<string, string>): Promise<Worker> {
    const launch = workerLaunch(language);
    const group = this.sandbox.acquireGroup();
    let proc;
    try {
      proc = await this.sandbox.spawn({ argv: launch.argv, cwd, env: { ...this.sandbox.baseEnv, ...env, PYTHONDONTWRITEBYTECODE: "1" } }, group);
    } catch (err) {
      await this.sandbox.releaseGroup(group);
      throw err;
    }
    const exited = proc.exited.then((st) => {
      void this.sandbox.releaseGroup(group);
      return { code: st.code, signal: st.signal };
    });
    const transport = new SubprocessTransport(
      {
        stdin: proc.stdin!,
        stdout: proc.stdout,
        stderr: proc.stderr,
        exited,
        // SIGINT goes to the program (the enter helper forwards it); SIGKILL ends its whole tree.
        kill: (signal) => (signal === "SIGKILL" ? void group.kill() : proc.kill(signal)),
      },
      launch.source,
    );
    const worker = new Worker(transport);
    try {
      await worker.configure();
    } catch (err) {
      worker.kill();
      throw new AgentboxError("RUNTIME_UNAVAILABLE", `the ${language} worker did not start: ${(err as Error).message}`);
    }
    return worker;
  }

  private pool(language: CodeLanguage): WorkerPool {
    let pool = this.pools.get(language);
    if (!pool) {
      const d = this.defaults!;
      pool = new WorkerPool({ create: () => this.spawnWorker(language, d.cwd, d.env), min: 1, max: MAX_CONTEXTS + 1 });
      this.pools.set(language, pool);
    }
    return pool;
  }

  private context(id: string): Context {
    const c = this.contexts.get(id);
    if (!c) throw new AgentboxError("NOT_FOUND", `code context ${id} does not exist`);
    return c;
  }

  async create(req: CreateCodeContextRequest, sandboxEnv: Record<string, string>, defaultCwd: string): Promise<CodeContextInfo> {
    if (this.contexts.size >= MAX_CONTEXTS) throw new AgentboxError("LIMIT_EXCEEDED", `a sandbox may have at most ${MAX_CONTEXTS} code contexts`);
    this.defaults ??= { env: sandboxEnv, cwd: defaultCwd };
    const cwd = resolveCwd(req.cwd, defaultCwd);
    if (req.language === "python-wasm") {
      const id = `ctx-${randomBytes(6).toString("hex")}`;
      const info: CodeContextInfo = { id, language: req.language, cwd: "/", executionCount: 0, createdAt: new Date().toISOString() };
      const wasm = await checkoutWasm();
      this.contexts.set(id, { info, worker: undefined as unknown as Worker, wasm, pooled: false, env: {}, busy: false, stream: undefined });
      return { ...info };
    }
    const env = { ...sandboxEnv, ...(req.env ?? {}) };
    // The warm pool's workers were started with the sandbox's defaults: only those fit.
    const pooled = cwd === this.defaults.cwd && JSON.stringify(env) === JSON.stringify(this.defaults.env);
    const language = req.language;
    const worker = pooled ? await this.pool(language).checkout() : await this.spawnWorker(language, cwd, env);
    const id = `ctx-${randomBytes(6).toString("hex")}`;
    const info: CodeContextInfo = { id, language, cwd, executionCount: 0, createdAt: new Date().toISOString() };
    this.contexts.set(id, { info, worker, wasm: undefined, pooled, env, busy: false, stream: undefined });
    return { ...info };
  }

  list(): CodeContextInfo[] {
    return [...this.contexts.values()].map((c) => ({ ...c.info }));
  }

  get(id: string): CodeContextInfo {
    return { ...this.context(id).info };
  }

  async delete(id: string): Promise<boolean> {
    const c = this.contexts.get(id);
    if (!c) return false;
    this.contexts.delete(id);
    if (c.wasm) await c.wasm.release().catch(() => undefined);
    else if (c.pooled && !c.busy) await this.pool(c.info.language as CodeLanguage).release(c.worker, true);
    else await c.worker.shutdown();
    return true;
  }

  /** A fresh worker for the context (state lost). */
  async restart(id: string): Promise<CodeContextInfo> {
    const c = this.context(id);
    if (c.wasm) {
      await c.wasm.release().catch(() => undefined);
      c.wasm = await checkoutWasm();
      c.busy = false;
      c.info.executionCount = 0;
      return { ...c.info };
    }
    c.worker.kill();
    c.worker = await this.spawnWorker(c.info.language as CodeLanguage, c.info.cwd, c.env);
    c.pooled = false;
    c.busy = false;
    c.info.executionCount = 0;
    return { ...c.info };
  }

  private begin(c: Context): void {
    if (c.busy) throw new AgentboxError("CONFLICT", `code context ${c.info.id} is running other code`);
    c.busy = true;
  }

  /** After a run: a worker that died or timed out is replaced, so the context stays usable. */
  private async end(c: Context): Promise<void> {
    c.busy = false;
    if (c.wasm) {
      if (c.wasmBroken) {
        c.wasmBroken = false;
        await c.wasm.release().catch(() => undefined);
        c.wasm = await checkoutWasm();
        c.info.executionCount = 0;
      }
      return;
    }
    if (!c.worker.alive) {
      c.worker = await this.spawnWorker(c.info.language as CodeLanguage, c.info.cwd, c.env);
      c.pooled = false;
      c.info.executionCount = 0;
    }
  }

  /** A run in the embedded interpreter; `functions` answer host calls. */
  private async runWasm(c: Context, req: RunCodeRequest, onPrint: (text: string, stream: "stdout" | "stderr") => void, functions: Record<string, (...args: unknown[]) => unknown> = {}): Promise<TurnEnder> {
    const count = c.info.executionCount + 1;
    try {
      const value = await c.wasm!.run(req.code, { onPrint, functions, ...(req.timeoutMs !== undefined ? { timeoutMs: req.timeoutMs } : {}) });
      c.info.executionCount = count;
      return { type: "complete", results: wasmResults(value), executionCount: count };
    } catch (err) {
      c.info.executionCount = count;
      const error = wasmError(err);
      if (error.name === "WorkerCrashed" || error.name === "MemoryError" || /killed/.test(error.value)) c.wasmBroken = true;
      return { type: "error", ...error, executionCount: count };
    }
  }

  /** Run `code` and wait for its end. */
  async run(id: string, req: RunCodeRequest): Promise<Execution> {
    const c = this.context(id);
    this.begin(c);
    if (c.wasm) {
      const out = { stdout: "", stderr: "" };
      try {
        const ender = await this.runWasm(c, req, (text, stream) => void (out[stream].length < MAX_EXECUTION_OUTPUT && (out[stream] += text)));
        return this.execution(c, ender, out, ender.type === "complete" ? ender.results : []);
      } finally {
        await this.end(c);
      }
    }
    const out = { stdout: "", stderr: "" };
    const results: Execution["results"] = [];
    try {
      const ender = await c.worker.request(
        { type: "feed", code: req.code },
        {
          timeoutMs: req.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS,
          onEvent: (e) => {
            if (e.type === "print" && out[e.stream].length < MAX_EXECUTION_OUTPUT) out[e.stream] += e.text;
          },
        },
      ).catch((err: Error) => failureAsEnder(err));
      if (ender.type === "complete") results.push(...ender.results);
      return this.execution(c, ender, out, results);
    } finally {
      await this.end(c);
    }
  }

  private execution(c: Context, ender: TurnEnder, out: { stdout: string; stderr: string }, results: Execution["results"]): Execution {
    if (ender.type === "complete") c.info.executionCount = ender.executionCount;
    else if (ender.type === "error" && ender.executionCount !== undefined) c.info.executionCount = ender.executionCount;
    const execution: Execution = { results, stdout: out.stdout, stderr: out.stderr, executionCount: c.info.executionCount };
    if (ender.type === "error") execution.error = { name: ender.name, value: ender.value, traceback: ender.traceback };
    if (ender.type === "fatal_error") execution.error = { name: "WorkerCrashed", value: ender.message, traceback: "" };
    return execution;
  }

  /** Start a streaming run; read it with `events`, answer calls with `resume`. */
  start(id: string, req: RunCodeRequest, functions: string[] | undefined): void {
    const c = this.context(id);
    this.begin(c);
    const stream: Stream = { queue: [], done: false, waiters: new Set(), calls: new Map() };
    c.stream = stream;
    const push = (e: WorkerEvent) => {
      stream.queue.push(e);
      for (const wake of stream.waiters) wake();
    };
    // The code runs in the sandbox and can write any frame: a call to a name this run did not
    // declare never reaches the client.
    const declared = new Set(functions ?? []);
    if (c.wasm) {
      let next = 0;
      const relay = (name: string) => (...args: unknown[]) =>
        new Promise<unknown>((resolve, reject) => {
          const callId = `w${++next}`;
          const kw = args.at(-1) instanceof PyKwargs ? (args.pop() as PyKwargs).values : {};
          stream.calls.set(callId, (answer) => {
            if ("error" in answer) reject(Object.assign(new Error(answer.error.message), { name: answer.error.name }));
            else resolve(decodeValue(answer.value));
          });
          push({ type: "call", callId, name, args: args.map((a) => encodeValue(a)), kwargs: Object.fromEntries(Object.entries(kw).map(([k, v]) => [k, encodeValue(v)])) });
        });
      const fns = Object.fromEntries([...declared].map((n) => [n, relay(n)]));
      void this.runWasm(c, req, (text, s) => push({ type: "print", stream: s, text }), fns).then(async (ender) => {
        await this.end(c).catch(() => undefined);
        stream.done = true;
        push(ender);
      });
      return;
    }
    void c.worker
      .request(
        { type: "feed", code: req.code, ...(functions?.length ? { functions } : {}) },
        {
          timeoutMs: req.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS,
          onEvent: (e) => {
            if (e.type !== "call" || declared.has(e.name)) push(e);
          },
          onCall: (call: CallEvent) =>
            declared.has(call.name) && !stream.calls.has(call.callId)
              ? new Promise<CallAnswer>((resolve) => stream.calls.set(call.callId, resolve))
              : Promise.resolve({ error: { name: "NameError", message: `name '${call.name}' is not a host function of this run` } }),
        },
      )
      .catch((err: Error) => failureAsEnder(err))
      .then((ender) => {
        if (ender.type === "complete") c.info.executionCount = ender.executionCount;
        else if (ender.type === "error" && ender.executionCount !== undefined) c.info.executionCount = ender.executionCount;
        return this.end(c).then(() => ender, () => ender);
      })
      .then((ender) => {
        stream.done = true;
        push(ender);
      });
  }

  async events(id: string, waitMs: number): Promise<{ events: WorkerEvent[]; done: boolean }> {
    const c = this.context(id);
    const stream = c.stream;
    if (!stream) throw new AgentboxError("NOT_FOUND", `code context ${id} has no run in progress`);
    if (stream.queue.length === 0 && !stream.done && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          stream.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, waitMs);
        stream.waiters.add(wake);
      });
    }
    const events = stream.queue.splice(0);
    const done = stream.done && stream.queue.length === 0;
    if (done && c.stream === stream) c.stream = undefined;
    return { events, done };
  }

  resume(id: string, callId: string, answer: CallAnswer): void {
    const resolve = this.context(id).stream?.calls.get(callId);
    if (!resolve) throw new AgentboxError("NOT_FOUND", `no host call ${callId} is waiting in code context ${id}`);
    this.context(id).stream!.calls.delete(callId);
    resolve(answer);
  }

  async install(id: string, req: InstallDependenciesBody): Promise<{ output: string }> {
    const c = this.context(id);
    if (c.wasm) throw new AgentboxError("INVALID_REQUEST", "python-wasm contexts cannot install packages (the embedded interpreter has only its standard library)");
    this.begin(c);
    let output = "";
    try {
      const request = { type: "install_dependencies" as const, requirements: req.requirements, ...(req.indexUrl ? { indexUrl: req.indexUrl } : {}), ...(req.findLinks ? { findLinks: req.findLinks } : {}) };
      const ender = await c.worker
        .request(request, { timeoutMs: 30 * 60_000, onEvent: (e) => void (e.type === "print" && (output += e.text)) })
        .catch((err: Error) => failureAsEnder(err));
      // Installed packages live in the worker: it never goes back to the pool.
      c.pooled = false;
      if (ender.type === "error") throw new AgentboxError("INVALID_REQUEST", `installing ${req.requirements.join(" ")} failed: ${ender.value}`, { output: output.slice(-4000) });
      return { output };
    } finally {
      await this.end(c);
    }
  }

  async closeAll(): Promise<void> {
    for (const c of this.contexts.values()) {
      if (c.wasm) void c.wasm.release().catch(() => undefined);
      else c.worker.kill();
    }
    this.contexts.clear();
    await Promise.all([...this.pools.values()].map((p) => p.close()));
  }
}

/** A timeout or a crash, reported as the run's error. */
function failureAsEnder(err: Error): TurnEnder {
  if (err instanceof WorkerFailure) {
    return { type: "error", name: err.name, value: err.message, traceback: "" };
  }
  throw err;
}
