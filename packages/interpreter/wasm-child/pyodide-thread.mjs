// agentbox python-wasm child: the Pyodide thread. Loads Pyodide with a memory ceiling,
// installs the Python-side lockdown (runner.py), then removes from this thread's JavaScript
// scope everything that code escaping Python could abuse (process, fetch, code generation…).
import { parentPort, workerData } from "node:worker_threads";
import { constants as fsConstants, readFileSync, readSync, writeSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { createMountFs } from "./mount-fs.mjs";

const { pyodideDir, interrupt, callIn, callOut } = workerData;
// Everything this thread sends goes to the parent over the direct pipe (below), in order.
const post = (message) => sendDirect(JSON_MESSAGE, JSON.stringify(message));
const onMessage = parentPort.on.bind(parentPort);
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

// This thread's id, for the parent to count the CPU Python uses (and not V8's compiler threads)
// when it decides whether an interrupted run has overrun. Its one readable file under /proc.
const threadId = Number(readFileSync("/proc/thread-self/stat", "latin1").split(" ")[0]);

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

// ---- the run's hot path: a pipe pair straight to the parent process (fd callOut → parent,
// parent → fd callIn), written and read synchronously from this thread, so that a host call
// costs one write and one blocking read here, and no hop through the child's main thread.
// Frames: 4-byte big-endian length, then UTF-8 text. To the parent: "c<name>\n<args JSON>"
// (a host call, answered on callIn: see _host_function in runner.py), "o<text>" / "e<text>"
// (stdout / stderr), "j<JSON message>" (ready, a run's result, replies to requests, which come from
// the parent through the main thread), all in order on one pipe.
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let outBuf = new Uint8Array(1 << 16);
let inBuf = new Uint8Array(1 << 16);
let inStart = 0, inEnd = 0;
function sendDirect(kind, text) {
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  const max = 5 + text.length * 3;
  if (outBuf.length < max) outBuf = new Uint8Array(Math.max(max, outBuf.length * 2));
  outBuf[4] = kind;
  const n = 1 + encoder.encodeInto(text, outBuf.subarray(5)).written;
  outBuf[0] = n >>> 24; outBuf[1] = (n >>> 16) & 255; outBuf[2] = (n >>> 8) & 255; outBuf[3] = n & 255;
  let off = 0;
  while (off < n + 4) off += writeSync(callOut, outBuf, off, n + 4 - off);
}
function readDirect() {
  for (;;) {
    const have = inEnd - inStart;
    if (have >= 4) {
      const n = ((inBuf[inStart] << 24) | (inBuf[inStart + 1] << 16) | (inBuf[inStart + 2] << 8) | inBuf[inStart + 3]) >>> 0;
      if (have >= 4 + n) {
        const text = decoder.decode(inBuf.subarray(inStart + 4, inStart + 4 + n));
        inStart += 4 + n;
        if (inStart === inEnd) inStart = inEnd = 0;
        return text;
      }
      if (inBuf.length < 4 + n) {
        const bigger = new Uint8Array(Math.max(4 + n, inBuf.length * 2));
        bigger.set(inBuf.subarray(inStart, inEnd));
        inBuf = bigger; inEnd = have; inStart = 0;
      }
    }
    if (inStart > 0 && inEnd === inBuf.length) {
      inBuf.copyWithin(0, inStart, inEnd); inEnd -= inStart; inStart = 0;
    }
    const got = readSync(callIn, inBuf, inEnd, inBuf.length - inEnd, null);
    if (got === 0) throw new Error("the host closed the call pipe");
    inEnd += got;
  }
}
const STDOUT = 111, STDERR = 101, CALL = 99, JSON_MESSAGE = 106; // "o", "e", "c", "j"
function emit(stream, text) {
  sendDirect(stream === "stderr" ? STDERR : STDOUT, text);
}
function hostcall(request) {
  sendDirect(CALL, request);
  return readDirect();
}

const runnerSource = readFileSync(new URL("./runner.py", import.meta.url), "utf8");
const ns = py.runPython("{'__name__': '_agentbox_runner'}");
py.runPython(runnerSource, { globals: ns });
const runFn = ns.get("run");
const resetFn = ns.get("reset");
ns.get("setup")(emit, hostcall);
ns.get("warm")(3000);
ns.destroy();

// Mounts (mount-fs.mjs) keep their own handle on the in-memory filesystem, removed from `py` below.
const mountFs = createMountFs(py.FS, py.ERRNO_CODES);

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
// Emscripten's clocks (time.monotonic, perf_counter) read performance.now(): keep that one function.
const clock = Object.freeze({ now: () => now() });
for (const key of REMOVE) {
  try { delete globalThis[key]; } catch {}
  try { if (key in globalThis) Object.defineProperty(globalThis, key, { value: undefined, writable: false, configurable: false }); } catch {}
}
// Pyodide's FFI uses the global `Function` (instanceof, prototype methods): keep a stand-in
// with the same prototype that cannot construct code.
const FunctionStandIn = function Function() { throw new EvalError("code generation is disabled"); };
FunctionStandIn.prototype = Function.prototype;
Object.defineProperty(globalThis, "Function", { value: FunctionStandIn, writable: false, configurable: false });
Object.defineProperty(globalThis, "performance", { value: clock, writable: false, configurable: false });
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
  } else if (mountFs.handles(m.type)) {
    post(mountFs.handle(m));
  } else if (m.type === "probe") {
    post({ type: "probe-result", id: m.id, result: probe() });
  }
});
post({ type: "ready", loadMs: now() - started, memoryBytes: wasmMemoryBytes(), threadId });
