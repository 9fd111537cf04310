/**
 * Code contexts: `sandbox.code`. A context is a stateful interpreter (Python
 * or JavaScript) in the sandbox whose code can call functions you provide.
 *
 *   const ctx = await sandbox.code.createContext({ language: "python" });
 *   await ctx.run("x = 41");
 *   const ex = await ctx.run("lookup(x + 1)", { functions: { lookup: async (n) => `#${n}` } });
 *   ex.results[0].text; // "'#42'"
 */
import WebSocket from "ws";
import {
  Tuple,
  decodeValue,
  encodeValue,
  type CodeContextInfo,
  type CodeSessionServerMessage,
  type CreateCodeContextRequest,
  type Execution,
} from "@agentbox/protocol";
import { AgentboxApiError, CONNECTION_FAILED, isSdkErrorCode } from "./errors.js";
import type { HttpTransport } from "./http.js";

export type { CodeContextInfo, CreateCodeContextRequest, Execution };
export { Tuple };

/** A host function: positional arguments, then keyword arguments (from Python) as the last one. */
export type CodeFunction = (...args: any[]) => unknown;

export interface RunOptions {
  /** Functions the code may call by name. Values cross as JSON, bytes (Uint8Array), tuples (Tuple), bigints. */
  functions?: Record<string, CodeFunction>;
  onStdout?: (text: string) => void;
  onStderr?: (text: string) => void;
  onResult?: (result: Execution["results"][number]) => void;
  /** The run is interrupted after this long (`error.name` "TimeoutError"). */
  timeoutMs?: number;
}

export class Code {
  /** @internal */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandboxId: string,
  ) {}

  private get base(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/code/contexts`;
  }

  async createContext(request: CreateCodeContextRequest): Promise<CodeContext> {
    const info = await this.http.request<CodeContextInfo>("POST", this.base, { body: request });
    return new CodeContext(this.http, this.base, info);
  }

  async getContext(id: string): Promise<CodeContext> {
    return new CodeContext(this.http, this.base, await this.http.request<CodeContextInfo>("GET", `${this.base}/${encodeURIComponent(id)}`));
  }

  async listContexts(): Promise<CodeContextInfo[]> {
    return (await this.http.request<{ contexts: CodeContextInfo[] }>("GET", this.base)).contexts;
  }
}

export class CodeContext {
  private current: CodeContextInfo;

  /** @internal */
  constructor(
    private readonly http: HttpTransport,
    private readonly base: string,
    info: CodeContextInfo,
  ) {
    this.current = info;
  }

  get id(): string {
    return this.current.id;
  }

  get info(): Readonly<CodeContextInfo> {
    return this.current;
  }

  private get path(): string {
    return `${this.base}/${encodeURIComponent(this.current.id)}`;
  }

  /**
   * Run code; resolves with the Execution (an error in the code is `execution.error`, not a
   * rejection). With functions or streaming callbacks the run goes over the session WebSocket.
   */
  async run(code: string, options: RunOptions = {}): Promise<Execution> {
    const streaming = options.functions !== undefined || options.onStdout || options.onStderr || options.onResult;
    if (!streaming) {
      const body = { code, ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) };
      const ex = await this.http.request<Execution>("POST", `${this.path}/run`, { body, timeoutMs: null });
      this.current = { ...this.current, executionCount: ex.executionCount };
      return ex;
    }
    return this.runStreaming(code, options);
  }

  private runStreaming(code: string, options: RunOptions): Promise<Execution> {
    const url = this.http.websocketUrl(`${this.path}/session`);
    const ws = new WebSocket(url, { headers: this.http.baseHeaders() });
    const functions = options.functions ?? {};
    const ex: Execution = { results: [], stdout: "", stderr: "", executionCount: this.current.executionCount };
    return new Promise<Execution>((resolve, reject) => {
      let settled = false;
      const finish = (error?: Error) => {
        if (settled) return;
        settled = true;
        ws.close(1000);
        if (error) reject(error);
        else {
          this.current = { ...this.current, executionCount: ex.executionCount };
          resolve(ex);
        }
      };
      ws.once("open", () => {
        ws.send(JSON.stringify({ type: "run", code, functions: Object.keys(functions), ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) }));
      });
      ws.on("message", (data) => {
        const m = JSON.parse(String(data)) as CodeSessionServerMessage;
        switch (m.type) {
          case "stdout":
            ex.stdout += m.text;
            options.onStdout?.(m.text);
            break;
          case "stderr":
            ex.stderr += m.text;
            options.onStderr?.(m.text);
            break;
          case "result": {
            const { type: _t, ...result } = m;
            ex.results.push(result);
            options.onResult?.(result);
            break;
          }
          case "call":
            void callHost(functions[m.name], m).then((answer) => ws.send(JSON.stringify({ callId: m.callId, ...answer })));
            break;
          case "error":
            ex.error = { name: m.name, value: m.value, traceback: m.traceback };
            break;
          case "done":
            ex.executionCount = m.executionCount || ex.executionCount;
            if (ex.error?.name === "WorkerCrashed") finish(new AgentboxApiError("WORKER_CRASHED", `the worker died during the run: ${ex.error.value}`));
            else finish();
            break;
          case "failed":
            finish(new AgentboxApiError(isSdkErrorCode(m.code) ? m.code : "INTERNAL", m.message));
            break;
        }
      });
      ws.once("error", (err) => finish(new AgentboxApiError(CONNECTION_FAILED, `code session: ${err.message}`, { cause: err })));
      ws.once("close", () => finish(new AgentboxApiError(CONNECTION_FAILED, "the code session closed before the run ended")));
    });
  }

  /** Install packages into this context's own environment (Python: a virtualenv; JavaScript: node_modules). */
  installDependencies(requirements: string[], options: { indexUrl?: string; findLinks?: string } = {}): Promise<{ output: string }> {
    return this.http.request("POST", `${this.path}/dependencies`, { body: { requirements, ...options }, timeoutMs: null });
  }

  /** A fresh interpreter for this context (its state is lost). */
  async restart(): Promise<CodeContextInfo> {
    this.current = await this.http.request<CodeContextInfo>("POST", `${this.path}/restart`, { body: {} });
    return this.current;
  }

  async remove(): Promise<void> {
    await this.http.request("DELETE", this.path);
  }
}

async function callHost(
  fn: CodeFunction | undefined,
  m: { name: string; args: unknown[]; kwargs: Record<string, unknown> },
): Promise<{ type: "return"; value: unknown } | { type: "raise"; error: { name: string; message: string } }> {
  try {
    if (!fn) throw Object.assign(new Error(`no host function named ${m.name}`), { name: "NameError" });
    const args = m.args.map(decodeValue);
    const kwargs = Object.fromEntries(Object.entries(m.kwargs).map(([k, v]) => [k, decodeValue(v)]));
    const value = await (Object.keys(kwargs).length > 0 ? fn(...args, kwargs) : fn(...args));
    return { type: "return", value: encodeValue(value) };
  } catch (err) {
    const e = err as { name?: unknown; message?: unknown };
    return { type: "raise", error: { name: typeof e?.name === "string" ? e.name : "Error", message: typeof e?.message === "string" ? e.message : String(err) } };
  }
}
