// agentbox python-wasm child: the Pyodide thread. Loads Pyodide with a memory ceiling,
// installs the Python-side lockdown (runner.py), then removes from this thread's JavaScript
// scope everything that code escaping Python could abuse (process, fetch, code generation…).
import { parentPort, workerData, receiveMessageOnPort } from "node:worker_threads";
import { constants as fsConstants, readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { pyodideDir, interrupt, callSignal, callPort } = workerData;
const callSignalView = new Int32Array(callSignal);
const post = parentPort.postMessage.bind(parentPort);
const onMessage = parentPort.on.bind(parentPort);
const atomicsWait = Atomics.wait, atomicsStore = Atomics.store;
const stringify = JSON.stringify;
const now = performance.now.bind(performance);

// ---- memory ceiling: growth of any wasm memory past the limit fails (→ MemoryError in Python)
const PAGE = 65536;
let memoryLimit = Infinity;
const originalGrow = WebAssembly.Memory.prototype.grow;
const guardedGrow = function grow(delta) {
  if (this.buffer.byteLength + delta * PAGE > memoryLimit) throw new RangeError("memory limit reached");
  return originalGrow.call(this, delta);
};
Object.defineProperty(WebAssembly.Memory.prototype, "grow", { value: guardedGrow, writable: false, configurable: false });

// ---- Pyodide 314 reads process.binding('constants') in NODEFS.staticInit; the permission model denies it.
process.binding = (name) => {
  if (name === "constants") return { fs: fsConstants };
  throw new Error(`process.binding(${name}) is not available`);
};

const started = now();
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const jsglobals = Object.create(null);
const py = await loadPyodide({
  indexURL: `${pyodideDir}/`,
  jsglobals,
  // A fixed hash seed: set and dict-of-set iteration orders must be the same in every process
  // for pausable runs to replay (pool.load) deterministically.
  env: { HOME: "/home/pyodide", PYTHONHASHSEED: "0" },
  stdout: () => {},
  stderr: () => {},
});
py.setInterruptBuffer(new Int32Array(interrupt));

function emit(stream, text) {
  post({ type: "print", stream, text });
}
function hostcall(name, payload) {
  atomicsStore(callSignalView, 0, 0);
  post({ type: "call", name, args: payload });
  atomicsWait(callSignalView, 0, 0);
  atomicsStore(callSignalView, 0, 0);
  const received = receiveMessageOnPort(callPort);
  return stringify(received ? received.message : { ok: false, error: { name: "Error", message: "no answer" } });
}

const runnerSource = readFileSync(new URL("./runner.py", import.meta.url), "utf8");
const ns = py.runPython("{'__name__': '_agentbox_runner'}");
py.runPython(runnerSource, { globals: ns });
const runFn = ns.get("run");
const resetFn = ns.get("reset");
ns.get("setup")(emit, hostcall);
ns.destroy();

// ---- second wall: nothing to abuse in this thread's JavaScript scope
const heapOf = py._module;
const wasmMemoryBytes = () => heapOf?.HEAPU8?.buffer.byteLength ?? 0;
for (const key of ["loadPackage", "loadPackagesFromImports", "mountNodeFS", "mountNativeFS", "registerJsModule",
  "unregisterJsModule", "pyimport", "runPython", "runPythonAsync", "loadedPackages", "_api", "_module", "FS", "PATH",
  "ERRNO_CODES", "globals", "pyodide_py", "setStdin", "setStdout", "setStderr", "registerComlink", "unpackArchive",
  "dumpState", "makeMemorySnapshot"]) {
  try { delete py[key]; } catch {}
}
const thrower = function () { throw new EvalError("code generation is disabled"); };
for (const fn of [function () {}, async function () {}, function* () {}, async function* () {}]) {
  try { Object.defineProperty(Object.getPrototypeOf(fn), "constructor", { value: thrower, writable: false, configurable: false }); } catch {}
}
const REMOVE = ["process", "fetch", "Request", "Response", "Headers", "FormData", "WebSocket", "EventSource",
  "XMLHttpRequest", "require", "module", "exports", "__filename", "__dirname", "Buffer", "navigator",
  "BroadcastChannel", "MessageChannel", "MessagePort", "Worker", "SharedWorker", "importScripts", "eval",
  "performance", "setImmediate", "clearImmediate", "crypto", "WebAssembly"];
for (const key of REMOVE) {
  try { delete globalThis[key]; } catch {}
  try { if (key in globalThis) Object.defineProperty(globalThis, key, { value: undefined, writable: false, configurable: false }); } catch {}
}
// Pyodide's FFI uses the global `Function` (instanceof, prototype methods): keep a stand-in
// with the same prototype that cannot construct code.
const FunctionStandIn = function Function() { throw new EvalError("code generation is disabled"); };
FunctionStandIn.prototype = Function.prototype;
Object.defineProperty(globalThis, "Function", { value: FunctionStandIn, writable: false, configurable: false });
Object.freeze(jsglobals);

function probe() {
  // What code that escaped Python would find in this thread (for the escape tests).
  const out = {};
  out.process = typeof globalThis.process;
  out.require = typeof globalThis.require;
  out.fetch = typeof globalThis.fetch;
  out.WebSocket = typeof globalThis.WebSocket;
  out.eval = typeof globalThis.eval;
  out.Function = typeof globalThis.Function;
  try { out.functionConstructor = String((function () {}).constructor("return 1")()); } catch (e) { out.functionConstructor = `denied: ${e.message}`; }
  try { out.asyncFunctionConstructor = typeof (async function () {}).constructor("return 1"); } catch (e) { out.asyncFunctionConstructor = `denied: ${e.message}`; }
  try { out.pyodideApi = Object.keys(py).filter((k) => /load|mount|_api|_module|FS|pyimport|runPython/.test(k)).join(","); } catch (e) { out.pyodideApi = `error ${e.message}`; }
  try { readFileSync("/etc/passwd"); out.readEtcPasswd = "allowed"; } catch (e) { out.readEtcPasswd = `denied: ${e.code ?? e.message}`; }
  return out;
}

onMessage("message", (m) => {
  if (m.type === "run") {
    memoryLimit = Math.max(m.limits.memoryBytes, 0);
    const t0 = now();
    let result;
    try {
      result = runFn(m.code, m.inputs, m.functions, m.limits.maxOutputBytes, m.limits.maxRecursionDepth, m.pausable ?? null);
    } catch (e) {
      result = stringify({ status: "fatal", message: String(e && e.message || e) });
    }
    memoryLimit = Infinity;
    post({ type: "result", id: m.id, result, ms: now() - t0, memoryBytes: wasmMemoryBytes() });
  } else if (m.type === "reset") {
    let ok = true;
    try { resetFn(); } catch { ok = false; }
    post({ type: "reset-done", id: m.id, ok });
  } else if (m.type === "probe") {
    post({ type: "probe-result", id: m.id, result: probe() });
  }
});
post({ type: "ready", loadMs: now() - started, memoryBytes: wasmMemoryBytes() });
