/*
 * agentbox code worker for JavaScript: one Node 20 process keeps one code context and speaks the
 * worker protocol (docs/design/worker-protocol.md) on fd 0 / fd 1 in 4-byte big-endian framed JSON.
 * Built-ins only, CommonJS, self-contained: it is shipped to the sandbox as the first frame.
 *
 * Started as `node -e "$BOOTSTRAP"` (the same one-liner as NODE_BOOTSTRAP in src/languages.ts), which
 * reads this file's source as one frame with fs.readSync and runs it as a CommonJS function:
 *
 *   const fs=require('fs');const h=Buffer.alloc(4);let o=0;while(o<4)o+=fs.readSync(0,h,o,4-o,null);const n=h.readUInt32BE(0);const s=Buffer.alloc(n);o=0;while(o<n)o+=fs.readSync(0,s,o,n-o,null);const m={exports:{}};new Function('require','module','exports','__filename','__dirname',s.toString())(require,m,m.exports,'<agentbox-worker>','/')
 *
 * It also runs directly (`node agentbox_worker.cjs`, no source frame first) for tests.
 *
 * How it works:
 * - I/O: after the bootstrap, fd 0 is read by a single asynchronous stream; frames are written to fd 1
 *   with a synchronous write (ordered, never queued behind the code's output). `console`,
 *   `process.stdout` and `process.stderr` are streams that turn writes into `print` events, and
 *   `process.stdin` is empty. Node cannot dup2 fds 0/1 away, so the other ways code could reach them
 *   are redirected (see guardStdio): child processes given the worker's stdio, and fs writes to fd 1/2.
 *   Output produced between turns (timers) is held and sent at the start of the next feed: a worker
 *   must not speak outside a turn.
 * - State: one vm context per worker (a new one on `reset`). Each cell is compiled as a vm.Script
 *   named `<cell-N>`. Top-level `let`/`const`/`var`/`class`/`import` declarations are rewritten into
 *   assignments to script-scope `let` bindings declared in the context (once) before the cell runs:
 *   they persist across cells, may be declared again by a later cell (agents re-run cells), never
 *   stay in the temporal dead zone after an error, and stay fast (a vm context's global object is
 *   ~100x slower to look up than a lexical binding). Top-level function declarations stay hoisted
 *   functions of the global object.
 * - Results: only a trailing expression statement is the main result (`undefined`: none). A cell
 *   without top-level `await` runs as the script itself and gives that value as its completion
 *   value; a cell with one runs as `(async () => { ... })()` where that statement becomes
 *   `return (...)`. A main result that is a promise is awaited (so `hostFn(1)` shows its value).
 * - Host functions are async functions of the context: `call` out, `resume_call` in, by callId; the
 *   turn ends once no call is in flight. Values cross as context-realm objects.
 * - SIGINT: ignored between turns; during a feed it ends the feed with a `KeyboardInterrupt` error
 *   (state kept) when the code is awaiting, and stops a synchronous cell (vm breakOnSigint). A busy
 *   loop after an `await` cannot be interrupted: the parent kills the worker.
 * - process.exit() in a cell ends the cell (status 0: complete; else a SystemExit error), not the worker.
 *
 * Limits: the statement splitter is a tokenizer-level approximation of the JS grammar, checked by V8
 * (a rewrite that does not compile falls back to the code as written); `const` bindings become
 * mutable, and top-level `var`s are not properties of globalThis; a `var` nested in a top-level block
 * of a cell with top-level await stays local to that cell; `import ... from "x"` and `import("x")`
 * (a string literal) resolve packages from the install directory, then the working directory (a
 * computed `import(x)`: the working directory only); `findLinks` is ignored (npm).
 */
"use strict";

const fs = require("fs");
const vm = require("vm");
const util = require("util");
const path = require("path");
const os = require("os");
const net = require("net");
const url = require("url");
const crypto = require("crypto");
const childProcess = require("child_process");
const { Writable, Readable } = require("stream");
const { Console } = require("console");
const Module = require("module");
const { StringDecoder } = require("string_decoder");

const PROTOCOL_VERSION = 1;
const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
const INTERNAL_FILENAME = "agentbox:worker-internal";
const BACKLOG_MAX_BYTES = 1024 * 1024;

// Where our own stack frames point (the bootstrap's `new Function`, or this file when run directly).
const SELF_MARK = (() => {
  const line = (new Error().stack || "").split("\n")[1] || "";
  const m = line.match(/\((.*?):\d+:\d+\)\s*$/) || line.match(/at (.*?):\d+:\d+\s*$/);
  return m ? m[1] : null;
})();

// ------------------------------------------------------------------ frames out

// Our own references: fs.writeSync/fs.write are redirected for the code (see guardStdio).
const rawWriteSync = fs.writeSync;
const rawWrite = fs.write;

let maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
let maxOutputBytes;
let scriptName;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += rawWriteSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err && err.code === "EAGAIN") {
        Atomics.wait(sleeper, 0, 0, 1);
        continue;
      }
      if (fd === 1) process.exit(1); // the parent is gone
      return;
    }
  }
}

function diag(text) {
  writeAll(2, Buffer.from(`agentbox worker: ${text}\n`));
}

function frameOf(json) {
  const len = Buffer.byteLength(json);
  const buf = Buffer.allocUnsafe(4 + len);
  buf.writeUInt32BE(len, 0);
  buf.write(json, 4, "utf8");
  return buf;
}

/** Cut a string to at most `bytes` UTF-8 bytes, on a character boundary. */
function cutUtf8(text, bytes) {
  if (bytes <= 0) return "";
  if (Buffer.byteLength(text) <= bytes) return text;
  let s = Buffer.from(text).subarray(0, bytes).toString("utf8");
  if (s.endsWith("\ufffd")) s = s.slice(0, -1);
  return s;
}

function send(msg) {
  let json = JSON.stringify(msg);
  if (Buffer.byteLength(json) > maxFrameBytes) {
    if (msg.type === "print") {
      // Split in halves (a character boundary) until each frame fits.
      const text = msg.text;
      let mid = Math.floor(text.length / 2);
      if (mid > 0 && text.charCodeAt(mid - 1) >= 0xd800 && text.charCodeAt(mid - 1) < 0xdc00) mid--;
      if (mid === 0) return;
      send({ type: "print", stream: msg.stream, text: text.slice(0, mid) });
      send({ type: "print", stream: msg.stream, text: text.slice(mid) });
      return;
    }
    const room = Math.max(256, Math.floor(maxFrameBytes / 8) - 1024);
    const note = "\n[truncated: over the frame size limit]";
    if (msg.type === "complete") msg = { ...msg, results: msg.results.map((r) => ({ ...r, text: r.text && cutUtf8(r.text, room) + note })) };
    else if (msg.type === "error") msg = { ...msg, value: cutUtf8(msg.value, room) + note, traceback: cutUtf8(msg.traceback, room) + note };
    else if (msg.type === "fatal_error") msg = { ...msg, message: cutUtf8(msg.message, room) };
    json = JSON.stringify(msg);
  }
  writeAll(1, frameOf(json));
}

function fatal(message, code) {
  try {
    send({ type: "fatal_error", message });
  } finally {
    process.exit(code);
  }
}

// ------------------------------------------------------------------ output

/** The current request: { type, prints, outBytes, truncated, interrupt? }. */
let turn = null;
let backlog = [];
let backlogBytes = 0;
let backlogDropped = 0;

function sendPrint(stream, text) {
  send({ type: "print", stream, text });
}

function emitPrint(stream, text) {
  if (!text) return;
  if (!turn || !turn.prints) {
    const bytes = Buffer.byteLength(text);
    if (backlogBytes + bytes > BACKLOG_MAX_BYTES) backlogDropped += bytes;
    else {
      backlog.push([stream, text]);
      backlogBytes += bytes;
    }
    return;
  }
  if (maxOutputBytes !== undefined) {
    if (turn.truncated) return;
    const bytes = Buffer.byteLength(text);
    if (turn.outBytes + bytes > maxOutputBytes) {
      const part = cutUtf8(text, maxOutputBytes - turn.outBytes);
      if (part) sendPrint(stream, part);
      turn.outBytes = maxOutputBytes;
      turn.truncated = true;
      sendPrint("stderr", `\n[output truncated: the code printed more than ${maxOutputBytes} bytes]\n`);
      return;
    }
    turn.outBytes += bytes;
  }
  sendPrint(stream, text);
}

function flushBacklog() {
  const items = backlog;
  const dropped = backlogDropped;
  backlog = [];
  backlogBytes = 0;
  backlogDropped = 0;
  for (const [stream, text] of items) emitPrint(stream, text);
  if (dropped) emitPrint("stderr", `[${dropped} bytes of output printed between runs were dropped]\n`);
}

/** A writable that turns every write into a print event, synchronously. Never ends. */
class PrintStream extends Writable {
  constructor(stream) {
    // No `fd`: Node would hand fd 1 (the frames) to a child given this stream as its stdio.
    super({ decodeStrings: false });
    this._agentboxStream = stream;
    this._decoder = new StringDecoder("utf8");
    this.isTTY = false;
  }
  write(chunk, encoding, cb) {
    if (typeof encoding === "function") {
      cb = encoding;
      encoding = undefined;
    }
    let text;
    if (typeof chunk === "string") {
      text = encoding && !/^(utf-?8|buffer)$/i.test(encoding) ? Buffer.from(chunk, encoding).toString("utf8") : chunk;
    } else if (ArrayBuffer.isView(chunk)) {
      text = this._decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    } else {
      throw Object.assign(new TypeError('The "chunk" argument must be of type string or an instance of Buffer or Uint8Array'), { code: "ERR_INVALID_ARG_TYPE" });
    }
    emitPrint(this._agentboxStream, text);
    if (typeof cb === "function") process.nextTick(cb);
    return true;
  }
  end(chunk, encoding, cb) {
    if (typeof chunk === "function") cb = chunk;
    else if (chunk !== undefined && chunk !== null) this.write(chunk, typeof encoding === "function" ? undefined : encoding);
    if (typeof encoding === "function") cb = encoding;
    if (typeof cb === "function") process.nextTick(cb);
    return this;
  }
  destroy() {
    return this;
  }
  getColorDepth() {
    return 1;
  }
  hasColors() {
    return false;
  }
}

const stdoutStream = new PrintStream("stdout");
const stderrStream = new PrintStream("stderr");
const emptyStdin = new Readable({ read() { this.push(null); } });
emptyStdin.isTTY = false;

/**
 * fd 0 and fd 1 carry the frames, and Node cannot move them (no dup2). So the ways code reaches them
 * are redirected: a child process given the worker's stdin gets nothing ("ignore"), one given its
 * stdout or stderr ("inherit", 1, 2, process.stdout...) writes into a pipe (asynchronous spawns,
 * streamed) or a temporary file (synchronous ones, sent when the child is done) whose text becomes
 * print events; fs.writeSync/fs.write to fd 1 or 2 become print events. (Opening /dev/stdout, or a
 * native addon writing to fd 1, would still break the frames.)
 */
function guardStdio() {
  const textOf = (data, offsetOrPosition, lengthOrEncoding) => {
    if (typeof data === "string") return typeof lengthOrEncoding === "string" && !/^utf-?8$/i.test(lengthOrEncoding) ? Buffer.from(data, lengthOrEncoding) : Buffer.from(data);
    if (!ArrayBuffer.isView(data)) return null;
    let b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (offsetOrPosition !== null && typeof offsetOrPosition === "object") {
      const { offset = 0, length = b.length - offset } = offsetOrPosition;
      return b.subarray(offset, offset + length);
    }
    const offset = typeof offsetOrPosition === "number" ? offsetOrPosition : 0;
    const length = typeof lengthOrEncoding === "number" ? lengthOrEncoding : b.length - offset;
    return b.subarray(offset, offset + length);
  };
  const decoders = { 1: new StringDecoder("utf8"), 2: new StringDecoder("utf8") };
  const toPrint = (fd, bytes) => emitPrint(fd === 1 ? "stdout" : "stderr", decoders[fd].write(bytes));
  fs.writeSync = function writeSync(fd, data, a, b) {
    if (fd === 1 || fd === 2) {
      const bytes = textOf(data, a, b);
      if (bytes) {
        toPrint(fd, bytes);
        return bytes.length;
      }
    }
    return rawWriteSync.apply(this, arguments);
  };
  fs.write = function write(fd, data, ...rest) {
    const cb = rest[rest.length - 1];
    if ((fd === 1 || fd === 2) && typeof cb === "function") {
      const bytes = textOf(data, rest[0], rest[1]);
      if (bytes) {
        toPrint(fd, bytes);
        process.nextTick(cb, null, bytes.length, data);
        return;
      }
    }
    return rawWrite.apply(this, arguments);
  };

  const cp = require("child_process");
  const orig = { spawn: cp.spawn, spawnSync: cp.spawnSync, execSync: cp.execSync, execFileSync: cp.execFileSync, fork: cp.fork };
  const targetOf = (v, i) => {
    if (v === "inherit") return i === 0 ? "in" : i === 1 ? "stdout" : i === 2 ? "stderr" : null;
    if (v === 0 || v === emptyStdin) return "in";
    if (v === 1 || v === stdoutStream) return "stdout";
    if (v === 2 || v === stderrStream) return "stderr";
    return null;
  };
  /** Options with the worker's own stdio replaced; `finish` sends what a synchronous child wrote. */
  const redirect = (options, defaultStdio, sync) => {
    let stdio = options && options.stdio !== undefined ? options.stdio : defaultStdio;
    if (typeof stdio === "string") stdio = [stdio, stdio, stdio];
    const none = { options, pipes: [], finish() {} };
    if (!Array.isArray(stdio)) return none;
    stdio = [...stdio];
    const pipes = [];
    const files = [];
    let changed = false;
    for (let i = 0; i < stdio.length; i++) {
      const target = targetOf(stdio[i], i);
      if (target === null) continue;
      changed = true;
      if (target === "in") stdio[i] = "ignore";
      else if (sync) {
        const file = path.join(os.tmpdir(), `agentbox-child-${process.pid}-${crypto.randomBytes(6).toString("hex")}`);
        const fd = fs.openSync(file, "w+", 0o600);
        files.push({ fd, file, target });
        stdio[i] = fd;
      } else {
        stdio[i] = "pipe";
        pipes.push([i, target]);
      }
    }
    if (!changed) return none;
    return {
      options: { ...(options || {}), stdio },
      pipes,
      finish() {
        for (const f of files) {
          try {
            emitPrint(f.target, fs.readFileSync(f.file, "utf8"));
          } catch {}
          try {
            fs.closeSync(f.fd);
            fs.unlinkSync(f.file);
          } catch {}
        }
      },
    };
  };
  const forward = (child, r) => {
    for (const [i, target] of r.pipes) {
      const stream = child.stdio && child.stdio[i];
      if (!stream) continue;
      const decoder = new StringDecoder("utf8");
      stream.on("data", (d) => emitPrint(target, decoder.write(d)));
    }
    return child;
  };
  // (file, args?, options?): where the options are.
  const optionsIndex = (args) => (Array.isArray(args[1]) || args[1] === undefined || args[1] === null ? 2 : 1);
  const wrap = (fn, { sync, defaultStdio, explicitOnly, index = optionsIndex }) =>
    function (...args) {
      const i = index(args);
      const options = args[i];
      if ((options !== undefined && (options === null || typeof options !== "object")) || (explicitOnly && !(options && options.stdio !== undefined))) return fn.apply(this, args);
      const r = redirect(options, typeof defaultStdio === "function" ? defaultStdio(options) : defaultStdio, sync);
      if (r.options !== options) {
        while (args.length < i) args.push(undefined);
        args[i] = r.options;
      }
      if (!sync) return forward(fn.apply(this, args), r);
      try {
        return fn.apply(this, args);
      } finally {
        r.finish();
      }
    };
  cp.spawn = wrap(orig.spawn, { sync: false, defaultStdio: "pipe" });
  cp.spawnSync = wrap(orig.spawnSync, { sync: true, defaultStdio: "pipe" });
  cp.execSync = wrap(orig.execSync, { sync: true, explicitOnly: true, index: () => 1 });
  cp.execFileSync = wrap(orig.execFileSync, { sync: true, explicitOnly: true });
  cp.fork = wrap(orig.fork, { sync: false, defaultStdio: (o) => (o && o.silent ? "pipe" : ["inherit", "inherit", "inherit", "ipc"]) });
  Module.syncBuiltinESMExports();
}

/**
 * The context's `process`: the real one, except that exit() ends the cell rather than the worker
 * (as sys.exit() in the Python worker: status 0 completes the cell, another is a SystemExit error).
 */
const contextProcess = new Proxy(process, {
  get(target, key) {
    if (key === "exit" || key === "reallyExit") return processExit;
    return Reflect.get(target, key, target);
  },
});

const EXIT_STATUS = Symbol("agentbox.exitStatus");

function processExit(code) {
  const status = code === undefined || code === null ? (process.exitCode === undefined ? 0 : process.exitCode) : code;
  const err = new Error(`process.exit(${code === undefined ? "" : code}) was called; the context lives on`);
  err.name = "SystemExit";
  err[EXIT_STATUS] = status;
  throw err;
}

// ------------------------------------------------------------------ input

let inChunks = [];
let inLength = 0;
let want = -1;
let inputEnded = false;
const queue = [];
let busy = false;

function take(n) {
  const out = Buffer.allocUnsafe(n);
  let off = 0;
  while (off < n) {
    const c = inChunks[0];
    const k = Math.min(c.length, n - off);
    c.copy(out, off, 0, k);
    off += k;
    if (k === c.length) inChunks.shift();
    else inChunks[0] = c.subarray(k);
  }
  inLength -= n;
  return out;
}

function onData(chunk) {
  inChunks.push(chunk);
  inLength += chunk.length;
  for (;;) {
    if (want < 0) {
      if (inLength < 4) return;
      want = take(4).readUInt32BE(0);
      if (want > maxFrameBytes) fatal(`frame of ${want} bytes is over the ${maxFrameBytes}-byte limit`, 2);
    }
    if (inLength < want) return;
    const payload = take(want);
    want = -1;
    onPayload(payload);
  }
}

function onEnd() {
  if (want >= 0 || inLength > 0) fatal("the input ended inside a frame", 2);
  inputEnded = true;
  if (!busy && queue.length === 0) process.exit(0);
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** Why a message is not a valid request (or resume_call), or null. */
function invalid(msg) {
  if (!isObj(msg)) return "a message must be a JSON object";
  switch (msg.type) {
    case "configure":
      if (typeof msg.protocolVersion !== "number" || !Number.isInteger(msg.protocolVersion)) return "configure needs an integer protocolVersion";
      if (msg.limits !== undefined) {
        if (!isObj(msg.limits)) return "configure.limits must be an object";
        for (const k of ["maxOutputBytes", "maxFrameBytes"]) {
          const v = msg.limits[k];
          if (v !== undefined && !(Number.isInteger(v) && v > 0)) return `configure.limits.${k} must be a positive integer`;
        }
      }
      if (msg.scriptName !== undefined && typeof msg.scriptName !== "string") return "configure.scriptName must be a string";
      return null;
    case "feed":
      if (typeof msg.code !== "string") return "feed needs a string code";
      if (msg.functions !== undefined && !(Array.isArray(msg.functions) && msg.functions.every((f) => typeof f === "string" && IDENT.test(f)))) return "feed.functions must be a list of identifiers";
      return null;
    case "install_dependencies":
      if (!Array.isArray(msg.requirements) || !msg.requirements.every((r) => typeof r === "string")) return "install_dependencies needs a list of string requirements";
      if (msg.indexUrl !== undefined && typeof msg.indexUrl !== "string") return "indexUrl must be a string";
      if (msg.findLinks !== undefined && typeof msg.findLinks !== "string") return "findLinks must be a string";
      return null;
    case "reset":
    case "shutdown":
      return null;
    case "resume_call":
      if (typeof msg.callId !== "string") return "resume_call needs a string callId";
      if (msg.error !== undefined && !(isObj(msg.error) && typeof msg.error.name === "string" && typeof msg.error.message === "string")) return "resume_call.error must be {name, message}";
      return null;
    default:
      return `unknown message type ${JSON.stringify(msg.type)}`;
  }
}

function onPayload(payload) {
  let msg;
  let problem;
  try {
    msg = JSON.parse(payload.toString("utf8"));
    problem = invalid(msg);
  } catch (err) {
    problem = `the payload is not JSON (${err.message})`;
  }
  if (problem) {
    if (busy || queue.length) diag(`ignored a malformed message in the middle of a turn: ${problem}`);
    else queue.push({ type: "__protocol_error", message: problem });
  } else if (msg.type === "resume_call") {
    onResume(msg);
    return;
  } else queue.push(msg);
  pump();
}

function pump() {
  if (busy) return;
  const msg = queue.shift();
  if (!msg) {
    if (inputEnded) process.exit(0);
    return;
  }
  busy = true;
  handle(msg)
    .catch((err) => {
      // A bug of ours: still end the turn.
      diag(`internal error: ${err && err.stack}`);
      turn = null;
      send({ type: "error", name: "InternalError", value: String(err && err.message), traceback: String(err && err.stack) });
    })
    .finally(() => {
      busy = false;
      setImmediate(pump);
    });
}

async function handle(msg) {
  switch (msg.type) {
    case "__protocol_error":
      send({ type: "error", name: "ProtocolError", value: msg.message, traceback: `ProtocolError: ${msg.message}` });
      return;
    case "configure":
      return configure(msg);
    case "feed":
      return feed(msg);
    case "install_dependencies":
      return installDependencies(msg);
    case "reset":
      resetContext();
      send({ type: "ok" });
      return;
    case "shutdown":
      send({ type: "ok" });
      process.exit(0);
  }
}

function configure(msg) {
  if (msg.protocolVersion !== PROTOCOL_VERSION) {
    fatal(`this worker speaks protocol version ${PROTOCOL_VERSION}, not ${msg.protocolVersion}`, 1);
  }
  const limits = msg.limits || {};
  if (limits.maxFrameBytes !== undefined) maxFrameBytes = Math.min(limits.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
  if (limits.maxOutputBytes !== undefined) maxOutputBytes = limits.maxOutputBytes;
  if (msg.scriptName !== undefined) scriptName = msg.scriptName;
  send({ type: "ok" });
}

// ------------------------------------------------------------------ errors

function isInternalFrame(line) {
  if (!/^\s+at /.test(line)) return false;
  return (
    (SELF_MARK !== null && line.includes(SELF_MARK)) ||
    line.includes(INTERNAL_FILENAME) ||
    line.includes("[eval]") ||
    /\(?node:(internal\/|vm:)/.test(line)
  );
}

/**
 * An error's stack without the worker's and Node's internal frames. `opts.cell` (the running cell's
 * name): the frames under its last frame are the worker's dispatch. `opts.compile`: a SyntaxError
 * of the cell, whose frames are all ours. `opts.dropLine`: the async wrapper's own frame.
 */
function cleanStack(stack, opts = {}) {
  let lines = stack.split("\n").filter((line) => !isInternalFrame(line) && !(opts.dropLine && line.trim() === opts.dropLine));
  const isFrame = (line) => /^\s+at /.test(line);
  if (opts.compile) lines = lines.filter((line) => !isFrame(line));
  else if (opts.cell) {
    let last = -1;
    lines.forEach((line, i) => {
      if (isFrame(line) && line.includes(`${opts.cell}:`)) last = i;
    });
    if (last >= 0) lines = lines.filter((line, i) => i <= last || !(isFrame(line) && /node:/.test(line)));
  }
  return lines.join("\n");
}

/**
 * Point at the failing line of the cell, as Node prints an uncaught error:
 * `<cell-1>:2`, the line, a caret, an empty line, then the stack.
 */
function sourceHeader(traceback, cell) {
  if (!cell || traceback.startsWith(`${cell.filename}:`)) return traceback;
  const esc = cell.filename.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = traceback.match(new RegExp(`^\\s+at (?:.*\\()?${esc}:(\\d+):(\\d+)\\)?$`, "m"));
  if (!m) return traceback;
  const line = cell.source.split(/\r\n|[\n\r\u2028\u2029]/)[Number(m[1]) - 1];
  if (line === undefined) return traceback;
  return `${cell.filename}:${m[1]}\n${line}\n${" ".repeat(Math.max(0, Number(m[2]) - 1))}^\n\n${traceback}`;
}

function errorEvent(err, executionCount, opts = {}) {
  const event = { type: "error", name: "Error", value: "", traceback: "" };
  if (executionCount !== undefined) event.executionCount = executionCount;
  if (err !== null && (typeof err === "object" || typeof err === "function") && typeof err.message === "string") {
    let name;
    try {
      name = err.name;
    } catch {}
    event.name = typeof name === "string" && name ? name : "Error";
    event.value = err.message;
    let stack;
    try {
      stack = err.stack;
    } catch {}
    const clean = cleanStack(typeof stack === "string" && stack ? stack : `${event.name}: ${event.value}`, opts);
    event.traceback = opts.compile ? clean : sourceHeader(clean, opts.source === undefined ? null : { filename: opts.cell, source: opts.source });
  } else {
    let shown;
    try {
      shown = util.inspect(err);
    } catch {
      shown = String(err);
    }
    event.value = shown;
    event.traceback = `Uncaught ${shown}`;
  }
  return event;
}

const describeUncaught = (err) => errorEvent(err).traceback.replace(/^Uncaught /, "");
process.on("uncaughtException", (err) => emitPrint("stderr", `Uncaught ${describeUncaught(err)}\n`));
process.on("unhandledRejection", (err) => emitPrint("stderr", `Uncaught (in promise) ${describeUncaught(err)}\n`));
process.removeAllListeners("warning");
process.on("warning", (w) => {
  if (w && /USE_MAIN_CONTEXT_DEFAULT_LOADER/.test(String(w.message))) return;
  emitPrint("stderr", `(node:${process.pid}) ${w && w.name}: ${w && w.message}\n`);
});
process.on("SIGINT", () => {
  if (turn && turn.interrupt) turn.interrupt();
});

// ------------------------------------------------------------------ tokenizer

const PUNCT4 = new Set([">>>="]);
const PUNCT3 = new Set(["...", "===", "!==", "**=", "<<=", ">>=", ">>>", "&&=", "||=", "??="]);
const PUNCT2 = new Set(["=>", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "**", "<<", ">>"]);
const KW_BEFORE_EXPR = new Set(["return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw", "case", "do", "else", "yield", "await", "extends"]);
const ID_START = /[\p{ID_Start}$_\\#]/u;
const ID_CONTINUE = /[\p{ID_Continue}$_\\\u200c\u200d]/u;
const NUMBER = /(?:0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?)n?/y;

function isIdStart(c, src, i) {
  if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 36 || c === 95 || c === 35 || c === 92) return true;
  return c > 127 && ID_START.test(String.fromCodePoint(src.codePointAt(i)));
}

function isIdContinue(c, src, i) {
  if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 36 || c === 95 || c === 92) return true;
  return c > 127 && ID_CONTINUE.test(String.fromCodePoint(src.codePointAt(i)));
}

/**
 * Tokens of JS source: {t, v, s, e, nl}. t: "name" | "num" | "str" | "re" | "tmpl" (no substitution)
 * | "tmpl-open" (`...${) | "tmpl-mid" (}...${) | "tmpl-close" (}...`) | "p" (punctuator, v = text).
 * nl: a line break comes before the token. Comments and spaces are dropped.
 */
function tokenize(src) {
  const toks = [];
  const n = src.length;
  const braces = []; // "{" or "${", to know where a template resumes
  let i = 0;
  let nl = false;
  let prev = null;
  const push = (t, v, s, e) => {
    const tok = { t, v, s, e, nl };
    toks.push(tok);
    prev = tok;
    nl = false;
  };
  const template = (start, j, head) => {
    while (j < n) {
      const ch = src.charCodeAt(j);
      if (ch === 92) j += 2;
      else if (ch === 96) {
        push(head ? "tmpl" : "tmpl-close", null, start, j + 1);
        return j + 1;
      } else if (ch === 36 && src.charCodeAt(j + 1) === 123) {
        push(head ? "tmpl-open" : "tmpl-mid", null, start, j + 2);
        braces.push("${");
        return j + 2;
      } else j++;
    }
    push(head ? "tmpl" : "tmpl-close", null, start, n);
    return n;
  };
  const regexAllowed = () => {
    if (!prev) return true;
    if (prev.t === "p") return !(prev.v === ")" || prev.v === "]" || prev.v === "}" || prev.v === "++" || prev.v === "--");
    if (prev.t === "name") return KW_BEFORE_EXPR.has(prev.v);
    return prev.t === "tmpl-open" || prev.t === "tmpl-mid";
  };
  if (src.startsWith("#!")) {
    i = src.indexOf("\n");
    if (i < 0) i = n;
  }
  while (i < n) {
    const c = src.charCodeAt(i);
    if (c === 10 || c === 13 || c === 0x2028 || c === 0x2029) {
      nl = true;
      i++;
      continue;
    }
    if (c === 32 || c === 9 || c === 11 || c === 12 || c === 0xa0 || c === 0xfeff || (c > 127 && /\s/.test(src[i]))) {
      i++;
      continue;
    }
    if (c === 47) {
      const d = src.charCodeAt(i + 1);
      if (d === 47) {
        while (i < n && !/[\n\r\u2028\u2029]/.test(src[i])) i++;
        continue;
      }
      if (d === 42) {
        const j = src.indexOf("*/", i + 2);
        const e = j < 0 ? n : j + 2;
        if (/[\n\r\u2028\u2029]/.test(src.slice(i, e))) nl = true;
        i = e;
        continue;
      }
      if (regexAllowed()) {
        let j = i + 1;
        let cls = false;
        while (j < n) {
          const ch = src[j];
          if (ch === "\\") {
            j += 2;
            continue;
          }
          if (ch === "\n" || ch === "\r") break;
          if (cls) {
            if (ch === "]") cls = false;
          } else if (ch === "[") cls = true;
          else if (ch === "/") {
            j++;
            break;
          }
          j++;
        }
        while (j < n && /[\w$]/.test(src[j])) j++;
        push("re", null, i, j);
        i = j;
        continue;
      }
    }
    if (c === 39 || c === 34) {
      let j = i + 1;
      while (j < n) {
        const ch = src.charCodeAt(j);
        if (ch === 92) j += 2;
        else if (ch === c) {
          j++;
          break;
        } else if (ch === 10 || ch === 13) break;
        else j++;
      }
      push("str", src.slice(i, Math.min(j, n)), i, Math.min(j, n));
      i = j;
      continue;
    }
    if (c === 96) {
      i = template(i, i + 1, true);
      continue;
    }
    if (c === 123) {
      braces.push("{");
      push("p", "{", i, i + 1);
      i++;
      continue;
    }
    if (c === 125) {
      if (braces.pop() === "${") {
        i = template(i, i + 1, false);
        continue;
      }
      push("p", "}", i, i + 1);
      i++;
      continue;
    }
    if ((c >= 48 && c <= 57) || (c === 46 && src.charCodeAt(i + 1) >= 48 && src.charCodeAt(i + 1) <= 57)) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(src);
      const e = m && m[0].length ? i + m[0].length : i + 1;
      push("num", null, i, e);
      i = e;
      continue;
    }
    if (isIdStart(c, src, i)) {
      let j = i + (c > 0xffff || (c >= 0xd800 && c < 0xdc00) ? 2 : 1);
      if (c === 92) j = i + 2;
      while (j < n) {
        const ch = src.charCodeAt(j);
        if (!isIdContinue(ch, src, j)) break;
        j += ch === 92 ? 2 : ch >= 0xd800 && ch < 0xdc00 ? 2 : 1;
      }
      push("name", src.slice(i, j), i, j);
      i = j;
      continue;
    }
    let len = 1;
    if (PUNCT4.has(src.substr(i, 4))) len = 4;
    else if (PUNCT3.has(src.substr(i, 3))) len = 3;
    else if (PUNCT2.has(src.substr(i, 2))) len = src.substr(i, 2) === "?." && /\d/.test(src[i + 2] || "") ? 1 : 2;
    push("p", src.substr(i, len), i, i + len);
    i += len;
  }
  return toks;
}

// ------------------------------------------------------------------ top-level statements

const CONTROL_HEADS = new Set(["if", "for", "while", "switch", "catch", "with"]);
const CONTROL_STATEMENTS = new Set(["if", "for", "while", "do", "try", "switch", "with"]);
const JUMP_STATEMENTS = new Set(["return", "throw", "break", "continue", "debugger"]);
const NO_END = new Set(["in", "instanceof", "typeof", "void", "delete", "new", "await", "extends", "case", "else", "do", "var", "let", "const", "class", "function", "if", "for", "while", "switch", "try", "catch", "finally", "with", "import", "export", "return", "throw", "break", "continue", "yield", "default"]);
const BLOCK_BEFORE = new Set(["else", "try", "finally", "do", "catch"]);

const isP = (tok, v) => tok !== undefined && tok.t === "p" && tok.v === v;
const isName = (tok, v) => tok !== undefined && tok.t === "name" && (v === undefined || tok.v === v);
const isOpen = (tok) => tok.t === "tmpl-open" || (tok.t === "p" && (tok.v === "(" || tok.v === "[" || tok.v === "{"));
const isClose = (tok) => tok.t === "tmpl-close" || (tok.t === "p" && (tok.v === ")" || tok.v === "]" || tok.v === "}"));

function endsExpression(tok) {
  switch (tok.t) {
    case "num":
    case "str":
    case "re":
    case "tmpl":
    case "tmpl-close":
      return true;
    case "name":
      return !NO_END.has(tok.v);
    case "p":
      return tok.v === ")" || tok.v === "]" || tok.v === "}" || tok.v === "++" || tok.v === "--";
    default:
      return false;
  }
}

/** Whether `tok`, first on a new line, continues the expression before it (no automatic semicolon). */
function continuesExpression(tok) {
  if (tok.t === "tmpl" || tok.t === "tmpl-open") return true;
  if (tok.t === "name") return tok.v === "in" || tok.v === "instanceof";
  if (tok.t === "p") return !(tok.v === "{" || tok.v === "!" || tok.v === "~" || tok.v === ";" || tok.v === "++" || tok.v === "--" || tok.v === "#");
  return false;
}

/**
 * Tokens, bracket matches, whether there is a top-level `await` (outside any function body) and the
 * top-level statements: {kind, s, e (inclusive, with its `;`), semi}.
 */
function analyze(src) {
  const toks = tokenize(src);
  const stack = [];
  let fnDepth = 0;
  let tla = false;
  for (let k = 0; k < toks.length; k++) {
    const t = toks[k];
    if (isClose(t) || t.t === "tmpl-mid") {
      const o = stack.pop();
      if (o !== undefined) {
        toks[o].match = k;
        t.open = o;
        if (toks[o].fn) fnDepth--;
      }
    }
    t.depth = stack.length;
    if (t.t === "name" && t.v === "await" && fnDepth === 0) tla = true;
    if (isOpen(t) || t.t === "tmpl-mid") {
      if (t.v === "{") {
        const prev = toks[k - 1];
        if (isP(prev, "=>")) t.fn = true;
        else if (isP(prev, ")") && prev.open !== undefined) {
          const before = toks[prev.open - 1];
          const ctrl = before !== undefined && before.t === "name" && (CONTROL_HEADS.has(before.v) || (before.v === "await" && isName(toks[prev.open - 2], "for")));
          t.fn = !ctrl;
        }
        if (t.fn) fnDepth++;
      }
      stack.push(k);
    }
  }

  // Statements, walking the top level: a bracket group counts as one unit.
  const stmts = [];
  let cur = null;
  let prevLast = null;
  const close = (endIdx) => {
    cur.e = endIdx;
    cur.semi = isP(toks[endIdx], ";");
    stmts.push(cur);
    cur = null;
  };
  const classify = (k) => {
    const t = toks[k];
    const next = toks[k + 1];
    const st = { kind: "expr", s: k, first: t.t === "name" ? t.v : t.v, bodySeen: false };
    if (t.t === "name") {
      if (t.v === "var" || t.v === "const") st.kind = "decl";
      else if (t.v === "let" && next && (next.t === "name" || isP(next, "[") || isP(next, "{"))) st.kind = "decl";
      else if (t.v === "function" || (t.v === "async" && isName(next, "function") && !next.nl)) st.kind = "function";
      else if (t.v === "class" && next && !isP(next, "{") && !isName(next, "extends")) st.kind = "class";
      else if (t.v === "import" && next && !isP(next, "(") && !isP(next, ".")) st.kind = "import";
      else if (t.v === "export") st.kind = "export";
      else if (CONTROL_STATEMENTS.has(t.v)) st.kind = "control";
      else if (JUMP_STATEMENTS.has(t.v)) st.kind = "jump";
      else if (isP(next, ":")) st.kind = "label";
    } else if (isP(t, "{")) st.kind = "block";
    else if (isP(t, ";")) st.kind = "empty";
    return st;
  };
  let k = 0;
  while (k < toks.length) {
    const t = toks[k];
    const last = t.match !== undefined && isOpen(t) ? chainEnd(toks, k) : k;
    // Does `t` start a new statement?
    let starts = cur === null;
    if (!starts) {
      const doWhile = cur.first === "do" && isName(t, "while") && !cur.whileSeen;
      if (isName(t, "else") || isName(t, "catch") || isName(t, "finally") || doWhile) starts = false;
      else if (isP(prevLast, ";") || prevLast.stmtBlockClose) starts = true;
      else if (t.nl) {
        if (prevLast.t === "name" && (JUMP_STATEMENTS.has(prevLast.v) || prevLast.v === "yield")) starts = true;
        else if (isP(t, "++") || isP(t, "--")) starts = endsExpression(prevLast);
        else starts = endsExpression(prevLast) && !prevLast.ctrlClose && !continuesExpression(t);
      }
      if (starts) close(k - 1);
    }
    if (starts) cur = classify(k);
    t.stmtStart = starts;
    if (cur.first === "do" && isName(t, "while") && !starts) cur.whileSeen = true;
    if (isP(t, "{")) {
      const blockish =
        starts ||
        (prevLast && (prevLast.ctrlClose || (prevLast.t === "name" && BLOCK_BEFORE.has(prevLast.v)))) ||
        ((cur.kind === "function" || cur.kind === "class") && !cur.bodySeen) ||
        (cur.kind === "label" && isP(prevLast, ":"));
      if ((cur.kind === "function" || cur.kind === "class") && !cur.bodySeen) {
        cur.bodySeen = true;
        cur.body = k;
      }
      if (blockish && t.match !== undefined) toks[t.match].stmtBlockClose = true;
    } else if (isP(t, "(") && t.match !== undefined && prevLast && prevLast.t === "name") {
      const ctrl = CONTROL_HEADS.has(prevLast.v) || (prevLast.v === "await" && isName(toks[k - 2], "for"));
      const doWhileHead = prevLast.v === "while" && cur.first === "do";
      if (ctrl && !doWhileHead) toks[t.match].ctrlClose = true;
    }
    prevLast = toks[last];
    k = last + 1;
  }
  if (cur) close(toks.length - 1);
  return { toks, tla, stmts };
}

/** The last token of a bracket group (following a template's parts). */
function chainEnd(toks, k) {
  let j = toks[k].match;
  while (j !== undefined && toks[j].t === "tmpl-mid" && toks[j].match !== undefined) j = toks[j].match;
  return j === undefined ? toks.length - 1 : j;
}

/** Names bound by a binding target starting at token `k`; returns the index after the target. */
function bindingNames(toks, k, out) {
  const t = toks[k];
  if (!t) return k;
  if (t.t === "name") {
    out.push(t.v);
    return k + 1;
  }
  if ((isP(t, "{") || isP(t, "[")) && t.match !== undefined) {
    const end = t.match;
    let j = k + 1;
    const obj = t.v === "{";
    while (j < end) {
      if (isP(toks[j], ",")) {
        j++;
        continue;
      }
      if (isP(toks[j], "...")) {
        j = bindingNames(toks, j + 1, out);
      } else if (obj) {
        const key = toks[j];
        let after = isP(key, "[") && key.match !== undefined ? key.match + 1 : j + 1;
        if (isP(toks[after], ":")) j = bindingNames(toks, after + 1, out);
        else {
          if (key.t === "name") out.push(key.v);
          j = after;
        }
      } else j = bindingNames(toks, j, out);
      if (isP(toks[j], "=")) j = skipExpression(toks, j + 1, end);
      while (j < end && !isP(toks[j], ",")) j = skipUnit(toks, j); // be lenient
    }
    return end + 1;
  }
  return k + 1;
}

function skipUnit(toks, j) {
  const t = toks[j];
  return t.match !== undefined && isOpen(t) ? chainEnd(toks, j) + 1 : j + 1;
}

/** From `j`, the index of the next `,` of this level (or `end`). */
function skipExpression(toks, j, end) {
  while (j < end && !isP(toks[j], ",")) j = skipUnit(toks, j);
  return j;
}

// ------------------------------------------------------------------ cell rewriting

/** String value of a string literal token. */
function stringValue(text) {
  if (!text.includes("\\")) return text.slice(1, -1);
  try {
    return text[0] === '"' ? JSON.parse(text) : JSON.parse(`"${text.slice(1, -1).replace(/\\'/g, "'").replace(/"/g, '\\"')}"`);
  } catch {
    return text.slice(1, -1);
  }
}

/**
 * Rewrite a cell. Returns {code, lexical (names to declare), functions (names of hoisted function
 * declarations), isAsync, endsWithExpression, header}, or null when a declaration is not understood.
 */
function rewriteCell(src, state) {
  const { toks, tla, stmts } = analyze(src);
  const edits = [];
  const lexical = [];
  const functions = [];
  let isAsync = tla;
  const header = [];
  for (const st of stmts) {
    const first = toks[st.s];
    const lastTok = st.semi && st.e > st.s ? st.e - 1 : st.e;
    if (st.kind === "decl") {
      const kw = first;
      const names = [];
      let j = st.s + 1;
      while (j <= lastTok) {
        const target = toks[j];
        const before = names.length;
        j = bindingNames(toks, j, names);
        const hasInit = isP(toks[j], "=") && j <= lastTok;
        if (!hasInit && kw.v === "let" && target.t === "name") edits.push({ pos: target.e, del: 0, text: " = void 0" });
        if (hasInit) j = skipExpression(toks, j + 1, lastTok + 1);
        if (names.length === before && target.t !== "name") return null; // not understood
        if (j <= lastTok && !isP(toks[j], ",")) return null;
        j++;
      }
      edits.push({ pos: kw.s, del: kw.e - kw.s, text: ";(" + " ".repeat(kw.e - kw.s - 2) });
      edits.push({ pos: toks[lastTok].e, del: 0, text: ", void 0)" });
      lexical.push(...names);
    } else if (st.kind === "class") {
      const name = toks[st.s + 1];
      if (!name || name.t !== "name" || st.body === undefined || toks[st.body].match === undefined) continue;
      edits.push({ pos: first.s, del: 0, text: `${name.v} = ` });
      edits.push({ pos: toks[toks[st.body].match].e, del: 0, text: ", void 0;" });
      lexical.push(name.v);
    } else if (st.kind === "function") {
      let j = st.s + 1;
      if (first.v === "async") j++;
      if (isP(toks[j], "*")) j++;
      const name = toks[j];
      if (!name || name.t !== "name" || st.body === undefined || toks[st.body].match === undefined) continue;
      if (state.lexNames.has(name.v)) {
        edits.push({ pos: first.s, del: 0, text: `${name.v} = ` });
        edits.push({ pos: toks[toks[st.body].match].e, del: 0, text: ", void 0;" });
      } else functions.push(name.v);
    } else if (st.kind === "import") {
      const rep = rewriteImport(src, toks, st.s, lastTok);
      if (!rep) return null;
      edits.push({ pos: first.s, del: toks[lastTok].e - first.s, text: rep.text });
      lexical.push(...rep.names);
      isAsync = true;
    }
  }
  // import("literal") anywhere: resolved now, as a static import, to see installed packages.
  for (let k = 0; k + 3 < toks.length; k++) {
    const t = toks[k];
    if (!isName(t, "import") || !isP(toks[k + 1], "(") || toks[k + 2].t !== "str" || !(isP(toks[k + 3], ")") || isP(toks[k + 3], ","))) continue;
    if (k > 0 && (isP(toks[k - 1], ".") || isP(toks[k - 1], "?."))) continue;
    const spec = stringValue(toks[k + 2].v);
    const resolved = resolveImport(spec);
    if (resolved !== spec) edits.push({ pos: toks[k + 2].s, del: toks[k + 2].e - toks[k + 2].s, text: JSON.stringify(resolved) });
  }
  let tail = "";
  const lastStmt = [...stmts].reverse().find((s) => s.kind !== "empty");
  const endsWithExpression = lastStmt !== undefined && lastStmt.kind === "expr";
  if (isAsync) {
    for (const f of functions) header.push(`globalThis.${f} = ${f};`);
    if (endsWithExpression) {
      const lastTok = lastStmt.semi && lastStmt.e > lastStmt.s ? lastStmt.e - 1 : lastStmt.e;
      // `return (` goes right after the statement before (keeping this line's columns), or at the
      // end of the wrapper's first line when the expression is the first statement.
      if (lastStmt.s > 0) edits.push({ pos: toks[lastStmt.s - 1].e, del: 0, text: ";return (" });
      else tail = "return (";
      edits.push({ pos: toks[lastTok].e, del: 0, text: ")" });
    }
  }
  edits.sort((a, b) => a.pos - b.pos);
  let out = "";
  let at = 0;
  for (const ed of edits) {
    out += src.slice(at, ed.pos) + ed.text;
    at = ed.pos + ed.del;
  }
  out += src.slice(at);
  return { code: out, lexical, functions, isAsync, endsWithExpression, header: header.concat(tail ? [tail] : []).join(" ") };
}

/** `import ... from "x"` → an assignment from `await import("x")` (same number of lines). */
function rewriteImport(src, toks, s, last) {
  let j = s + 1;
  let def = null;
  let ns = null;
  const named = [];
  let spec = null;
  if (toks[j].t === "str") spec = toks[j];
  else {
    if (toks[j].t === "name" && toks[j].v !== "from") {
      def = toks[j].v;
      j++;
      if (isP(toks[j], ",")) j++;
    }
    if (isP(toks[j], "*") && isName(toks[j + 1], "as") && isName(toks[j + 2])) {
      ns = toks[j + 2].v;
      j += 3;
    } else if (isP(toks[j], "{") && toks[j].match !== undefined) {
      const end = toks[j].match;
      let i = j + 1;
      while (i < end) {
        const imported = toks[i];
        let local = imported;
        if (isName(toks[i + 1], "as")) {
          local = toks[i + 2];
          i += 3;
        } else i++;
        if (!local || local.t !== "name") return null;
        named.push([imported.t === "str" ? imported.v : imported.v, local.v]);
        if (isP(toks[i], ",")) i++;
      }
      j = end + 1;
    }
    if (!isName(toks[j], "from") || toks[j + 1].t !== "str") return null;
    spec = toks[j + 1];
  }
  const source = JSON.stringify(resolveImport(stringValue(spec.v)));
  const names = [];
  const parts = [];
  if (ns) {
    parts.push(`${ns} = await import(${source})`);
    names.push(ns);
    if (def) {
      parts.push(`${def} = ${ns}.default`);
      names.push(def);
    }
  } else if (named.length) {
    const props = named.map(([imp, local]) => (imp === local ? local : `${imp}: ${local}`));
    if (def) props.unshift(`default: ${def}`);
    parts.push(`{${props.join(", ")}} = await import(${source})`);
    names.push(...named.map(([, local]) => local));
    if (def) names.push(def);
  } else if (def) {
    parts.push(`${def} = (await import(${source})).default`);
    names.push(def);
  } else parts.push(`await import(${source})`);
  const lines = (src.slice(toks[s].s, toks[last].e).match(/\n/g) || []).length;
  return { text: `;(${parts.join(", ")}, void 0)` + "\n".repeat(lines), names };
}

// ------------------------------------------------------------------ the context

let depsDirs = [];
const requireCache = new Map();

function requireFrom(base) {
  let r = requireCache.get(base);
  if (!r) {
    r = Module.createRequire(base);
    requireCache.set(base, r);
  }
  return r;
}

function resolveModule(id, options) {
  if (Module.isBuiltin(id)) return id;
  const cwdBase = path.join(process.cwd(), "[agentbox-cell]");
  const bare = !(id.startsWith(".") || path.isAbsolute(id) || id.startsWith("file:"));
  const bases = bare ? [...depsDirs.map((d) => path.join(d, "package.json")), cwdBase] : [cwdBase];
  let firstError;
  for (const base of bases) {
    try {
      return requireFrom(base).resolve(id, options);
    } catch (err) {
      if (!err || err.code !== "MODULE_NOT_FOUND") throw err;
      if (!firstError) firstError = err;
    }
  }
  throw firstError;
}

function resolveImport(spec) {
  if (Module.isBuiltin(spec) || /^(node|data|https?):/.test(spec)) return spec;
  try {
    const p = resolveModule(spec);
    return path.isAbsolute(p) ? url.pathToFileURL(p).href : p;
  } catch {
    return spec;
  }
}

function contextRequire(id) {
  if (typeof id !== "string") throw new TypeError('The "id" argument must be of type string');
  return require(resolveModule(id));
}
contextRequire.resolve = (id, options) => resolveModule(id, options);
contextRequire.cache = require.cache;

const FORWARDED_GLOBALS = [
  "Buffer", "queueMicrotask", "structuredClone", "TextEncoder", "TextDecoder", "URL", "URLSearchParams",
  "AbortController", "AbortSignal", "Blob", "File", "atob", "btoa", "fetch", "Headers", "Request", "Response", "FormData",
  "performance", "crypto", "Event", "EventTarget", "MessageChannel", "MessagePort", "MessageEvent", "BroadcastChannel",
  "DOMException", "ReadableStream", "WritableStream", "TransformStream", "TextEncoderStream", "TextDecoderStream",
  "CompressionStream", "DecompressionStream",
];

/** Per-context state. */
let state;

function newState() {
  const sandbox = {};
  const ctx = vm.createContext(sandbox, { name: "agentbox" });
  const live = new Map(); // timer handle -> clear function
  const define = (name, value) => Object.defineProperty(sandbox, name, { value, writable: true, configurable: true, enumerable: false });
  const track = (set, clear) => {
    const wrapped = function (fn, ...rest) {
      if (typeof fn !== "function") return set(fn, ...rest);
      let h;
      const once = set === setInterval ? fn : function (...args) {
        live.delete(h);
        return fn.apply(this, args);
      };
      h = set(once, ...rest);
      live.set(h, clear);
      return h;
    };
    if (set[util.promisify.custom]) wrapped[util.promisify.custom] = set[util.promisify.custom];
    return wrapped;
  };
  const untrack = (clear) => (h) => {
    live.delete(h);
    return clear(h);
  };
  for (const name of FORWARDED_GLOBALS) {
    if (!(name in globalThis)) continue;
    Object.defineProperty(sandbox, name, {
      get: () => globalThis[name],
      set: (v) => define(name, v),
      configurable: true,
      enumerable: false,
    });
  }
  define("console", new Console({ stdout: stdoutStream, stderr: stderrStream, colorMode: false }));
  define("setTimeout", track(setTimeout, clearTimeout));
  define("setInterval", track(setInterval, clearInterval));
  define("setImmediate", track(setImmediate, clearImmediate));
  define("clearTimeout", untrack(clearTimeout));
  define("clearInterval", untrack(clearInterval));
  define("clearImmediate", untrack(clearImmediate));
  define("require", contextRequire);
  define("process", contextProcess);
  const internal = (code) => vm.runInContext(code, ctx, { filename: INTERNAL_FILENAME });
  define("global", internal("globalThis"));
  const intrinsics = internal("({ Object, Array, Uint8Array, Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError, AggregateError })");
  return {
    ctx,
    sandbox,
    live,
    count: 0,
    lexNames: new Set(),
    varNames: new Set(),
    I: intrinsics,
    hasGlobal: internal("(function (name) { return name in globalThis; })"),
    makeStub: internal("(function (hook) { return function (name) { return ({ async [name](...args) { return hook(name, args); } })[name]; }; })"),
  };
}

function resetContext() {
  if (state) for (const [h, clear] of state.live) clear(h);
  backlog = [];
  backlogBytes = 0;
  backlogDropped = 0;
  state = newState();
}

/** Declare `let` bindings in the context for names a cell assigns. */
function declareLexical(names) {
  const fresh = [...new Set(names)].filter((n) => !state.lexNames.has(n) && !state.varNames.has(n) && /^[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$/u.test(n));
  if (!fresh.length) return;
  const run = (list) => new vm.Script(`let ${list.join(", ")};`, { filename: INTERNAL_FILENAME }).runInContext(state.ctx);
  try {
    run(fresh);
    for (const n of fresh) state.lexNames.add(n);
  } catch {
    for (const n of fresh) {
      try {
        run([n]);
        state.lexNames.add(n);
      } catch {
        state.varNames.add(n); // a function or a non-configurable global: assign to it
      }
    }
  }
}

// ------------------------------------------------------------------ values

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function encodeWire(v, seen) {
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case "boolean":
    case "string":
      return v;
    case "number":
      if (Number.isNaN(v)) return { $float: "nan" };
      if (v === Infinity) return { $float: "inf" };
      if (v === -Infinity) return { $float: "-inf" };
      return v;
    case "bigint":
      return v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : { $int: v.toString() };
    case "object":
      break;
    default:
      throw new TypeError(`a ${typeof v} cannot be passed to a host function`);
  }
  if (util.types.isUint8Array(v)) return { $bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
  if (util.types.isArrayBuffer(v)) return { $bytes: Buffer.from(v).toString("base64") };
  if (seen.has(v)) throw new TypeError("a circular structure cannot be passed to a host function");
  seen.add(v);
  let out;
  if (Array.isArray(v)) {
    out = [];
    for (let i = 0; i < v.length; i++) out.push(encodeWire(v[i], seen));
  } else {
    const proto = Object.getPrototypeOf(v);
    if (proto !== null && Object.getPrototypeOf(proto) !== null) {
      const kind = (v.constructor && v.constructor.name) || "object";
      throw new TypeError(`a ${kind} cannot be passed to a host function (plain objects, arrays, strings, numbers, bigints, booleans, null and Uint8Array can)`);
    }
    out = {};
    const keys = Object.keys(v);
    for (const k of keys) out[k] = encodeWire(v[k], seen);
    if (keys.length === 1 && keys[0].startsWith("$")) out = { $dict: out };
  }
  seen.delete(v);
  return out;
}

/** Wire value → a value of the context's realm. */
function decodeWire(v, I) {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) {
    const a = new I.Array();
    for (const x of v) a.push(decodeWire(x, I));
    return a;
  }
  const keys = Object.keys(v);
  if (keys.length === 1 && keys[0].startsWith("$")) {
    const x = v[keys[0]];
    switch (keys[0]) {
      case "$bytes": {
        const b = Buffer.from(String(x), "base64");
        const u = new I.Uint8Array(b.length);
        u.set(b);
        return u;
      }
      case "$tuple":
        return decodeWire(Array.isArray(x) ? x : [], I);
      case "$int":
        return BigInt(String(x));
      case "$float":
        return x === "nan" ? NaN : x === "-inf" ? -Infinity : Infinity;
      case "$dict":
        return decodeObject(isObj(x) ? x : {}, I);
    }
  }
  return decodeObject(v, I);
}

function decodeObject(v, I) {
  const o = new I.Object();
  for (const k of Object.keys(v)) {
    const x = decodeWire(v[k], I);
    if (k === "__proto__") Object.defineProperty(o, k, { value: x, writable: true, enumerable: true, configurable: true });
    else o[k] = x;
  }
  return o;
}

// ------------------------------------------------------------------ host calls

const pending = new Map(); // callId -> {resolve, reject, site, I, name}
let callSeq = 0;
let drainWaiter = null;

function hostCall(name, args) {
  const I = state.I;
  const site = new Error(); // the caller's stack, for a rejection
  if (!turn || turn.type !== "feed") throw new I.Error(`the host function ${name} was called outside of a run`);
  let wireArgs;
  try {
    const seen = new Set();
    wireArgs = args.map((a) => encodeWire(a, seen));
  } catch (err) {
    throw new I.TypeError(err.message);
  }
  const callId = `c${++callSeq}`;
  const msg = { type: "call", callId, name, args: wireArgs, kwargs: {} };
  const json = JSON.stringify(msg);
  if (Buffer.byteLength(json) > maxFrameBytes) throw new I.TypeError(`the arguments of ${name} are over the ${maxFrameBytes}-byte frame limit`);
  return new Promise((resolve, reject) => {
    pending.set(callId, { resolve, reject, site, I, name });
    writeAll(1, frameOf(json));
  });
}

const JS_ERRORS = new Set(["Error", "TypeError", "RangeError", "SyntaxError", "ReferenceError", "EvalError", "URIError"]);

function onResume(msg) {
  const call = pending.get(msg.callId);
  if (!call) {
    diag(`ignored a resume_call for an unknown call ${JSON.stringify(msg.callId)}`);
    return;
  }
  pending.delete(msg.callId);
  if (msg.error) {
    const { name, message } = msg.error;
    const Ctor = JS_ERRORS.has(name) ? call.I[name] : call.I.Error;
    const err = new Ctor(message);
    if (err.name !== name) Object.defineProperty(err, "name", { value: name, writable: true, configurable: true, enumerable: false });
    const frames = (call.site.stack || "").split("\n").slice(1).filter((l) => !isInternalFrame(l));
    err.stack = [`${name}: ${message}`, ...frames].join("\n");
    call.reject(err);
  } else {
    let value;
    try {
      value = decodeWire(msg.value === undefined ? null : msg.value, call.I);
    } catch (err) {
      call.reject(new call.I.TypeError(`cannot decode the value of ${call.name}: ${err.message}`));
      return;
    }
    call.resolve(value);
  }
  if (pending.size === 0 && drainWaiter) drainWaiter();
}

/** Wait until no host call is pending (calls a floating promise still has in flight). */
async function drainCalls(interrupted) {
  while (pending.size > 0) {
    await Promise.race([new Promise((r) => (drainWaiter = r)), interrupted]);
    drainWaiter = null;
    await new Promise((r) => setImmediate(r));
  }
}

function abandonCalls(reason) {
  for (const [id, call] of pending) {
    pending.delete(id);
    const err = new call.I.Error(reason);
    err.name = "KeyboardInterrupt";
    call.reject(err);
  }
}

// ------------------------------------------------------------------ feed

function cellName(n) {
  if (scriptName === undefined) return `<cell-${n}>`;
  return scriptName.includes("{n}") ? scriptName.split("{n}").join(String(n)) : scriptName;
}

const compileOptions = (filename, lineOffset) => ({
  filename,
  lineOffset,
  importModuleDynamically: vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
});

/** Compile a cell: {script, isAsync, lexical, functions, dropLine} (throws the user's SyntaxError). */
function prepare(code, filename) {
  const compile = (text, lineOffset = 0) => new vm.Script(text, compileOptions(filename, lineOffset));
  const wrap = (body, header = "") => `(async () => {${header}\n${body}\n})()`;
  const lines = (code.match(/\r\n|[\n\r\u2028\u2029]/g) || []).length;
  const asyncTail = `at ${filename}:${lines + 2}:3`;
  // An object literal, as a REPL reads `{a: 1}`.
  if (/^\s*\{/.test(code) && !/;\s*$/.test(code)) {
    try {
      return { script: compile(`(${code}\n)`), isAsync: false, lexical: [], functions: [] };
    } catch {}
  }
  let plan = null;
  try {
    plan = rewriteCell(code, state);
  } catch (err) {
    diag(`could not analyse a cell: ${err && err.stack}`);
    plan = null;
  }
  if (plan) {
    try {
      const script = plan.isAsync ? compile(wrap(plan.code, plan.header ? " " + plan.header : ""), -1) : compile(plan.code);
      return {
        script,
        isAsync: plan.isAsync,
        // Only a trailing expression statement gives a result (not the completion value of a
        // trailing `if`, loop or declaration), as in the async wrapper.
        discard: !plan.endsWithExpression,
        lexical: plan.lexical,
        functions: plan.isAsync ? [] : plan.functions,
        asyncFunctions: plan.isAsync ? plan.functions : [],
        dropLine: plan.isAsync ? asyncTail : undefined,
      };
    } catch {
      // Fall back to the code as written (and its own error, with exact positions).
    }
  }
  const asIs = () => ({ script: compile(code), isAsync: false, lexical: [], functions: [] });
  const wrapped = () => ({ script: compile(wrap(code), -1), isAsync: true, lexical: [], functions: [], dropLine: asyncTail });
  const tla = plan ? plan.isAsync : /\bawait\b/.test(code);
  try {
    return tla ? wrapped() : asIs();
  } catch (err) {
    try {
      return tla ? asIs() : wrapped();
    } catch {
      throw err;
    }
  }
}

function interruptError() {
  const err = new Error("interrupted");
  err.name = "KeyboardInterrupt";
  err.stack = "KeyboardInterrupt: interrupted";
  return err;
}

async function feed(msg) {
  const st = state;
  const n = ++st.count;
  const filename = cellName(n);
  turn = { type: "feed", prints: true, outBytes: 0, truncated: false };
  let interruptNow;
  const interrupted = new Promise((_, reject) => (interruptNow = reject));
  interrupted.catch(() => {});
  turn.interrupt = () => {
    abandonCalls("interrupted");
    interruptNow(interruptError());
  };
  flushBacklog();
  const stubs = new Map();
  for (const name of msg.functions || []) {
    if (stubs.has(name) || st.lexNames.has(name) || st.hasGlobal(name)) continue;
    const stub = st.makeStub(hostCall)(name);
    Object.defineProperty(st.sandbox, name, { value: stub, writable: true, configurable: true, enumerable: false });
    stubs.set(name, stub);
  }
  let event;
  const errorOpts = { cell: filename, compile: true };
  try {
    const cell = prepare(msg.code, filename);
    errorOpts.dropLine = cell.dropLine;
    errorOpts.compile = false;
    errorOpts.source = msg.code;
    declareLexical(cell.lexical);
    let value;
    try {
      // breakOnSigint stops a synchronous cell's busy loop. Not for an async cell: its synchronous
      // part returns at once, and a SIGINT that lands while vm takes its watchdog down is lost; the
      // process's SIGINT handler interrupts the wait instead.
      value = cell.script.runInContext(st.ctx, { breakOnSigint: !cell.isAsync, displayErrors: false });
      if (cell.discard && !cell.isAsync) value = undefined;
    } finally {
      for (const f of cell.functions) if (!st.lexNames.has(f)) st.varNames.add(f);
      for (const f of cell.asyncFunctions || []) if (!st.lexNames.has(f)) st.varNames.add(f);
    }
    if (util.types.isPromise(value)) {
      const p = value;
      p.catch(() => {}); // if interrupted, what it does later is no longer this turn's error
      value = await Promise.race([p, interrupted]);
    }
    await drainCalls(interrupted);
    const results = value === undefined ? [] : [{ text: util.inspect(value), isMain: true }];
    event = { type: "complete", results, executionCount: n };
  } catch (err) {
    if (err && err.code === "ERR_SCRIPT_EXECUTION_INTERRUPTED") err = interruptError();
    const exitStatus = err !== null && typeof err === "object" ? err[EXIT_STATUS] : undefined;
    if (exitStatus === 0 || exitStatus === "0") event = { type: "complete", results: [], executionCount: n };
    else event = errorEvent(err, n, errorOpts);
  } finally {
    for (const [name, stub] of stubs) if (st.sandbox[name] === stub) delete st.sandbox[name];
  }
  abandonCalls("the run ended before the host function answered");
  turn = null;
  send(event);
}

// ------------------------------------------------------------------ dependencies

let defaultDepsDir;

function depsDir() {
  if (process.env.AGENTBOX_NODE_DEPS_DIR) return process.env.AGENTBOX_NODE_DEPS_DIR;
  if (!defaultDepsDir) defaultDepsDir = path.join(os.homedir(), ".agentbox", "node-deps", crypto.randomBytes(6).toString("hex"));
  return defaultDepsDir;
}

function npmCommand() {
  const bin = path.dirname(process.execPath);
  for (const cli of [path.join(bin, "..", "lib", "node_modules", "npm", "bin", "npm-cli.js"), path.join(bin, "node_modules", "npm", "bin", "npm-cli.js")]) {
    if (fs.existsSync(cli)) return [process.execPath, [cli]];
  }
  return ["npm", []];
}

async function installDependencies(msg) {
  turn = { type: "install_dependencies", prints: true, outBytes: 0, truncated: false };
  const fail = (name, value, traceback) => {
    turn = null;
    send({ type: "error", name, value, traceback: traceback || `${name}: ${value}` });
  };
  const reqs = msg.requirements.map((r) => r.trim());
  if (reqs.length === 0) return fail("ValueError", "no requirements to install");
  const bad = reqs.find((r) => r === "" || r.startsWith("-"));
  if (bad !== undefined) return fail("ValueError", `refusing the requirement ${JSON.stringify(bad)}: requirements must be package specs, not empty or options`);
  if (msg.indexUrl !== undefined && (msg.indexUrl.trim() === "" || msg.indexUrl.trim().startsWith("-"))) return fail("ValueError", `refusing the index URL ${JSON.stringify(msg.indexUrl)}`);
  const dir = depsDir();
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    return fail("InstallError", `cannot create ${dir}: ${err.message}`);
  }
  const [cmd, pre] = npmCommand();
  const args = [...pre, "install", "--no-audit", "--no-fund", "--prefix", dir];
  if (msg.indexUrl !== undefined) args.push("--registry", msg.indexUrl.trim());
  args.push(...reqs);
  let tail = "";
  const result = await new Promise((resolve) => {
    let child;
    try {
      child = childProcess.spawn(cmd, args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, npm_config_update_notifier: "false", npm_config_progress: "false", npm_config_color: "false" },
      });
    } catch (err) {
      resolve({ error: err });
      return;
    }
    turn.interrupt = () => {
      child.kill("SIGTERM");
      resolve({ interrupted: true });
    };
    const out = (chunk) => {
      const text = chunk.toString("utf8");
      tail = (tail + text).slice(-4000);
      emitPrint("stderr", text);
    };
    child.stdout.on("data", out);
    child.stderr.on("data", out);
    child.on("error", (err) => resolve({ error: err }));
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
  if (result.interrupted) return fail("KeyboardInterrupt", "the installation was interrupted");
  if (result.error) return fail("InstallError", `cannot run npm: ${result.error.message}`);
  if (result.code !== 0) return fail("InstallError", `npm install failed (${result.signal ? `signal ${result.signal}` : `exit code ${result.code}`})`, tail.trim() || undefined);
  if (!depsDirs.includes(dir)) depsDirs.unshift(dir);
  requireCache.clear();
  turn = null;
  send({ type: "ok" });
}

// ------------------------------------------------------------------ start

function start() {
  guardStdio();
  for (const [name, value] of [["stdout", stdoutStream], ["stderr", stderrStream], ["stdin", emptyStdin]]) {
    Object.defineProperty(process, name, { get: () => value, configurable: true, enumerable: true });
  }
  Object.defineProperty(globalThis, "console", {
    value: new Console({ stdout: stdoutStream, stderr: stderrStream, colorMode: false }),
    writable: true,
    configurable: true,
    enumerable: false,
  });
  resetContext();
  let input;
  let st;
  try {
    st = fs.fstatSync(0);
  } catch {}
  if (st && (st.isFIFO() || st.isSocket())) input = new net.Socket({ fd: 0, readable: true, writable: false });
  else input = fs.createReadStream(null, { fd: 0, autoClose: false, highWaterMark: 1 << 16 });
  input.on("data", onData);
  input.on("end", onEnd);
  input.on("error", (err) => {
    diag(`reading the input failed: ${err.message}`);
    process.exit(2);
  });
}

start();
