/**
 * `python-wasm` code contexts: the embedded interpreter (Pyodide in locked-down
 * child processes, no Linux sandbox) behind the same context API as the
 * sandbox's CPython and Node workers. One pool serves the whole runtime.
 */
import {
  InterpreterError,
  InterpreterMemoryError,
  InterpreterPool,
  InterpreterRuntimeError,
  InterpreterSyntaxError,
  InterpreterTimeoutError,
  PyKwargs,
  PyTuple,
  type InterpreterSession,
} from "@agentbox/interpreter";
import type { CodeResult } from "@agentbox/protocol";

let shared: Promise<InterpreterPool> | undefined;

/** The runtime's pool of embedded interpreters (started on first use, one kept warm). */
export function wasmPool(): Promise<InterpreterPool> {
  shared ??= InterpreterPool.create({ min: 1, max: 32 });
  return shared;
}

export async function closeWasmPool(): Promise<void> {
  const pool = shared;
  shared = undefined;
  if (pool) await (await pool).close();
}

export function checkoutWasm(): Promise<InterpreterSession> {
  return wasmPool().then((p) => p.checkout({ limits: { timeoutMs: 10 * 60_000 } }));
}

function quote(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  const body = [...s]
    .map((c) => {
      if (c === "\\") return "\\\\";
      if (c === q) return `\\${q}`;
      if (c === "\n") return "\\n";
      if (c === "\r") return "\\r";
      if (c === "\t") return "\\t";
      const code = c.codePointAt(0)!;
      return code < 0x20 || code === 0x7f ? `\\x${code.toString(16).padStart(2, "0")}` : c;
    })
    .join("");
  return `${q}${body}${q}`;
}

/** Python's repr of a value the embedded interpreter returned (its types map back one to one). */
export function pythonRepr(v: unknown): string {
  if (v === null || v === undefined) return "None";
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "nan";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    return String(v);
  }
  if (typeof v === "string") return quote(v);
  if (v instanceof Uint8Array) {
    let s = "b'";
    for (const b of v) s += b === 0x27 ? "\\'" : b === 0x5c ? "\\\\" : b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
    return `${s}'`;
  }
  if (v instanceof PyTuple) return v.length === 1 ? `(${pythonRepr(v[0])},)` : `(${[...v].map(pythonRepr).join(", ")})`;
  if (Array.isArray(v)) return `[${v.map(pythonRepr).join(", ")}]`;
  if (v instanceof Set) return v.size === 0 ? "set()" : `{${[...v].map(pythonRepr).join(", ")}}`;
  if (v instanceof Map) return `{${[...v].map(([k, x]) => `${pythonRepr(k)}: ${pythonRepr(x)}`).join(", ")}}`;
  if (v instanceof PyKwargs) return pythonRepr(v.values);
  if (typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (typeof o.type === "string" && typeof o.repr === "string" && Object.keys(o).length === 2) return o.repr;
    return `{${Object.entries(o).map(([k, x]) => `${quote(k)}: ${pythonRepr(x)}`).join(", ")}}`;
  }
  return String(v);
}

/** The main result of a run, as a code context reports it. */
export function wasmResults(value: unknown): CodeResult[] {
  return value === null || value === undefined ? [] : [{ text: pythonRepr(value), isMain: true }];
}

/** An embedded interpreter's error as a code context's `error`. */
export function wasmError(err: unknown): { name: string; value: string; traceback: string } {
  if (err instanceof InterpreterRuntimeError) return { name: err.pythonType, value: err.message, traceback: err.traceback };
  if (err instanceof InterpreterSyntaxError) return { name: "SyntaxError", value: err.message, traceback: `SyntaxError: ${err.message}\n` };
  if (err instanceof InterpreterTimeoutError) return { name: "TimeoutError", value: err.message, traceback: "" };
  if (err instanceof InterpreterMemoryError) return { name: "MemoryError", value: err.message, traceback: "" };
  if (err instanceof InterpreterError) return { name: "WorkerCrashed", value: err.message, traceback: "" };
  throw err;
}
