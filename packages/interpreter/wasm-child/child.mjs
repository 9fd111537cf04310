// agentbox python-wasm child: main thread. Started by @agentbox/interpreter as
//   node --experimental-permission --allow-fs-read=<pyodide>/* --allow-fs-read=<this dir>/* --allow-worker child.mjs <pyodide dir>
// with an empty environment. Speaks length-prefixed JSON frames (4-byte big-endian length)
// on stdin/stdout with the parent and runs Pyodide in a worker thread (pyodide-thread.mjs) so
// that it can interrupt it. A run's host calls and output do not pass through here: the
// Pyodide thread exchanges them with the parent directly over fds 3 (parent → thread) and
// 4 (thread → parent), see pyodide-thread.mjs.
import { Worker } from "node:worker_threads";

const pyodideDir = process.argv[2];
const interrupt = new SharedArrayBuffer(4);
const interruptView = new Int32Array(interrupt);

function send(message) {
  const payload = Buffer.from(JSON.stringify(message), "utf8");
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(payload.length, 0);
  process.stdout.write(Buffer.concat([head, payload]));
}

const thread = new Worker(new URL("./pyodide-thread.mjs", import.meta.url), {
  workerData: { pyodideDir, interrupt, callIn: 3, callOut: 4 },
  env: {},
  stdout: true,
  stderr: true,
});
thread.stdout.resume();
thread.stderr.resume();
thread.on("message", (m) => {
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
      // SIGINT → KeyboardInterrupt in Python (a pending host call is answered by the parent).
      Atomics.store(interruptView, 0, 2);
      // The parent counts the run's grace from here: until now it may only have been waiting
      // for this thread to get a core.
      send({ type: "interrupt-set" });
      return;
    case "run":
      Atomics.store(interruptView, 0, 0);
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
