// agentbox python-wasm child: main thread. Started by @agentbox/interpreter as
//   node --experimental-permission --allow-fs-read=<pyodide>/* --allow-fs-read=<this dir>/* --allow-worker child.mjs <pyodide dir>
// with an empty environment. Speaks length-prefixed JSON frames (4-byte big-endian length)
// on stdin/stdout with the parent, runs Pyodide in a worker thread (pyodide-thread.mjs) so
// that it can interrupt it, and relays host-function answers into that thread.
import { Worker, MessageChannel } from "node:worker_threads";

const pyodideDir = process.argv[2];
const interrupt = new SharedArrayBuffer(4);
const interruptView = new Int32Array(interrupt);
const callSignal = new SharedArrayBuffer(4);
const callSignalView = new Int32Array(callSignal);
const { port1: callPort, port2: threadCallPort } = new MessageChannel();
let callPending = false;
let outputLeft = Infinity;

function send(message) {
  const payload = Buffer.from(JSON.stringify(message), "utf8");
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(payload.length, 0);
  process.stdout.write(Buffer.concat([head, payload]));
}

function answerCall(answer) {
  if (!callPending) return;
  callPending = false;
  callPort.postMessage(answer);
  Atomics.store(callSignalView, 0, 1);
  Atomics.notify(callSignalView, 0);
}

const thread = new Worker(new URL("./pyodide-thread.mjs", import.meta.url), {
  workerData: { pyodideDir, interrupt, callSignal, callPort: threadCallPort },
  transferList: [threadCallPort],
  env: {},
  stdout: true,
  stderr: true,
});
thread.stdout.resume();
thread.stderr.resume();
thread.on("message", (m) => {
  if (m.type === "print") {
    // Second cap on output, outside the reach of code in the Pyodide thread.
    if (outputLeft <= 0) return;
    let text = m.text;
    const bytes = Buffer.byteLength(text, "utf8");
    if (bytes > outputLeft) text = Buffer.from(text, "utf8").subarray(0, outputLeft).toString("utf8");
    outputLeft -= bytes;
    send({ type: "print", stream: m.stream, text });
    return;
  }
  if (m.type === "call") callPending = true;
  send(m);
});
thread.on("error", (e) => {
  send({ type: "fatal", message: String(e && e.stack || e) });
  process.exit(3);
});
thread.on("exit", (code) => {
  send({ type: "fatal", message: `pyodide thread exited (${code})` });
  process.exit(4);
});

let buffer = Buffer.alloc(0);
process.stdin.on("data", (chunk) => {
  buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4) {
    const length = buffer.readUInt32BE(0);
    if (buffer.length < 4 + length) break;
    const message = JSON.parse(buffer.subarray(4, 4 + length).toString("utf8"));
    buffer = buffer.subarray(4 + length);
    handle(message);
  }
});
process.stdin.on("end", () => process.exit(0));

function handle(m) {
  switch (m.type) {
    case "interrupt":
      Atomics.store(interruptView, 0, 2); // SIGINT → KeyboardInterrupt in Python
      answerCall({ ok: false, interrupted: true });
      return;
    case "answer":
      answerCall(m);
      return;
    case "run":
      Atomics.store(interruptView, 0, 0);
      outputLeft = m.limits?.maxOutputBytes ?? Infinity;
      thread.postMessage(m);
      return;
    case "reset":
      Atomics.store(interruptView, 0, 0); // an interrupt left over from an abandoned run
      thread.postMessage(m);
      return;
    default:
      thread.postMessage(m);
  }
}
