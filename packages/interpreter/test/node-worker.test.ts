/**
 * The JavaScript code worker (workers/node/agentbox_worker.cjs) on its own: started the way the
 * runtime starts it (`node -e BOOTSTRAP`, the source as the first frame), here as a plain local
 * child process, and driven frame by frame.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { WorkerFrameReader, decodeValue, encodeValue, encodeWorkerFrame } from "@agentbox/protocol";
import { workerLaunch } from "../src/languages.js";

const WORKER_FILE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "workers", "node", "agentbox_worker.cjs");

type Msg = Record<string, any>;
type HostFn = (...args: any[]) => unknown;

const TURN_ENDERS = new Set(["complete", "error", "ok", "fatal_error"]);
const started = new Set<ChildProcessWithoutNullStreams>();
after(() => {
  for (const proc of started) if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
});

/** One worker process and the frames it sends. */
class Driver {
  private readonly reader = new WorkerFrameReader();
  private readonly inbox: Msg[] = [];
  private wake: (() => void) | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = "";

  private constructor(readonly proc: ChildProcessWithoutNullStreams) {
    started.add(proc);
    proc.stdout.on("data", (chunk: Buffer) => {
      for (const payload of this.reader.push(chunk)) this.inbox.push(JSON.parse(payload.toString("utf8")));
      this.wake?.();
    });
    proc.stderr.on("data", (d: Buffer) => (this.stderr += d.toString()));
    proc.stdin.on("error", () => undefined);
    this.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  }

  /** Start a worker: by the bootstrap (default) or by running the file directly. */
  static async start(options: { direct?: boolean; env?: Record<string, string>; configure?: Msg | false } = {}): Promise<Driver> {
    const env = { ...process.env, ...options.env };
    let d: Driver;
    if (options.direct) {
      d = new Driver(spawn(process.execPath, [WORKER_FILE], { stdio: "pipe", env }));
    } else {
      const launch = workerLaunch("javascript", { node: process.execPath });
      d = new Driver(spawn(launch.argv[0]!, launch.argv.slice(1), { stdio: "pipe", env }));
      const head = Buffer.alloc(4);
      head.writeUInt32BE(launch.source.length, 0);
      d.proc.stdin.write(Buffer.concat([head, launch.source]));
    }
    if (options.configure !== false) {
      const { ender } = await d.request(options.configure ?? { type: "configure", protocolVersion: 1 });
      assert.equal(ender.type, "ok");
    }
    return d;
  }

  send(message: unknown): void {
    this.proc.stdin.write(encodeWorkerFrame(message));
  }

  sendRaw(bytes: Buffer): void {
    this.proc.stdin.write(bytes);
  }

  /** The next frame from the worker. */
  async next(timeoutMs = 20_000): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame from the worker within ${timeoutMs} ms (stderr: ${this.stderr})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.inbox.shift()!;
  }

  /** Events until the turn-ender. `onCall` answers `call` events (by default from `functions`). */
  async collect(options: { functions?: Record<string, HostFn>; onCall?: (call: Msg) => void } = {}): Promise<{ events: Msg[]; ender: Msg }> {
    const events: Msg[] = [];
    for (;;) {
      const m = await this.next();
      if (TURN_ENDERS.has(m.type)) return { events, ender: m };
      events.push(m);
      if (m.type === "call") {
        if (options.onCall) options.onCall(m);
        else void this.answer(m, options.functions ?? {});
      }
    }
  }

  async answer(call: Msg, functions: Record<string, HostFn>): Promise<void> {
    try {
      const fn = functions[call.name];
      if (!fn) throw Object.assign(new Error(`no host function ${call.name}`), { name: "NameError" });
      const value = await fn(...(call.args as unknown[]).map(decodeValue));
      this.send({ type: "resume_call", callId: call.callId, value: encodeValue(value) });
    } catch (err) {
      const e = err as Error;
      this.send({ type: "resume_call", callId: call.callId, error: { name: e.name, message: e.message } });
    }
  }

  async request(message: Msg, options: { functions?: Record<string, HostFn>; onCall?: (call: Msg) => void } = {}): Promise<{ events: Msg[]; ender: Msg }> {
    this.send(message);
    return this.collect(options);
  }

  feed(code: string, functions?: Record<string, HostFn>) {
    return this.request({ type: "feed", code, ...(functions ? { functions: Object.keys(functions) } : {}) }, functions ? { functions } : {});
  }

  /** The main result's text of a feed that must complete. */
  async value(code: string, functions?: Record<string, HostFn>): Promise<string | undefined> {
    const { ender } = await this.feed(code, functions);
    assert.equal(ender.type, "complete", JSON.stringify(ender));
    return ender.results.find((r: Msg) => r.isMain)?.text;
  }

  async shutdown(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const { ender } = await this.request({ type: "shutdown" });
      assert.equal(ender.type, "ok");
    }
    const { code } = await this.exited;
    assert.equal(code, 0);
  }
}

const prints = (events: Msg[], stream?: string) =>
  events.filter((e) => e.type === "print" && (stream === undefined || e.stream === stream)).map((e) => e.text).join("");

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe("node worker: code and state", () => {
  test("declarations persist across feeds and may be declared again", async () => {
    const w = await Driver.start();
    assert.equal(await w.value("let a = 1\nconst b = 2\nvar c = 3"), undefined);
    assert.equal(await w.value("a + b + c"), "6");
    assert.equal(await w.value("function f(x) { return x * 10 }\nclass K { get v() { return 'k' } }"), undefined);
    assert.equal(await w.value("f(a) + new K().v"), "'10k'");
    // Running a cell again (or redefining its names) is not an error, unlike a plain script.
    assert.equal(await w.value("const b = 20; class K { get v() { return 'k2' } }; b + new K().v"), "'20k2'");
    assert.equal(await w.value("const { x, y: [z] = [] } = { x: 4, y: [5] }; let u, v = 6; x + z + v + String(u)"), "'15undefined'");
    assert.equal(await w.value("typeof x + typeof z + typeof u"), "'numbernumberundefined'");
    // An error after a declaration does not leave it unusable.
    const { ender } = await w.feed("let late = 1; null.boom; let never = 2");
    assert.equal(ender.type, "error");
    assert.equal(await w.value("late = 5; let never = 3; late + never"), "8");
    await w.shutdown();
  });

  test("top-level await, and the last expression statement is the main result", async () => {
    const w = await Driver.start();
    assert.equal(await w.value("1+1"), "2");
    assert.equal(await w.value("const r = await new Promise((ok) => setTimeout(() => ok(21), 10))\nr * 2"), "42");
    assert.equal(await w.value("r"), "21");
    assert.equal(await w.value("await null; ({ a: [1, 'x'] })"), "{ a: [ 1, 'x' ] }");
    assert.equal(await w.value("{ a: 1 }"), "{ a: 1 }");
    assert.equal(await w.value("'s'"), "'s'");
    assert.equal(await w.value("undefined"), undefined);
    assert.equal(await w.value("let q = 3"), undefined);
    assert.equal(await w.value("await null; let q2 = 3"), undefined);
    assert.equal(await w.value("console.log('x')"), undefined);
    assert.equal(await w.value("for (const i of [1, 2]) {}\nawait null;\n[q, q2]"), "[ 3, 3 ]");
    assert.equal((await w.feed("await null\n[q, q2]")).ender.name, "TypeError", "as in JS, no semicolon is inserted before [: null[q, q2]");
    // Only a trailing expression statement is a result (not a trailing if, loop or try).
    assert.equal(await w.value("if (true) { 5 }"), undefined);
    assert.equal(await w.value("await null\nif (true) { 5 }"), undefined);
    assert.equal(await w.value("try { 5 } finally {}"), undefined);
    assert.equal(await w.value("async function later() { await null; return 'done' }\nawait later()"), "'done'");
    assert.equal(await w.value("later()"), "'done'", "a promise as the main result is awaited");
    assert.equal(await w.value("import path from 'node:path'\nimport { join as j } from 'node:path'\npath.basename(j('a', 'b.txt'))"), "'b.txt'");
    const { ender } = await w.feed("");
    assert.deepEqual(ender, { type: "complete", results: [], executionCount: 19 });
    await w.shutdown();
  });

  test("console and process streams become print events, streamed in order with host calls", async () => {
    const w = await Driver.start();
    const order: string[] = [];
    w.send({ type: "feed", code: "console.log('a', 1, {k: 'v'}); console.info('%s!', 'b'); console.error('e1'); await ping(); process.stdout.write('c\\n'); console.warn('e2'); 'end'", functions: ["ping"] });
    for (;;) {
      const m = await w.next();
      order.push(m.type === "print" ? `${m.stream}:${m.text}` : m.type);
      if (m.type === "call") w.send({ type: "resume_call", callId: m.callId, value: null });
      if (TURN_ENDERS.has(m.type)) break;
    }
    assert.deepEqual(order, ["stdout:a 1 { k: 'v' }\n", "stdout:b!\n", "stderr:e1\n", "call", "stdout:c\n", "stderr:e2\n", "complete"]);
    await w.shutdown();
  });

  test("output after a run ends is held and sent in the next feed, never outside a turn", async () => {
    const w = await Driver.start();
    // The timer leaves a file once it has printed: wait for that, not a fixed time (late on a loaded machine).
    const dir = mkdtempSync(join(tmpdir(), "agentbox-node-worker-late-"));
    const printed = join(dir, "printed");
    try {
      assert.equal(await w.value(`setTimeout(() => { console.log('late'); require('fs').writeFileSync(${JSON.stringify(printed)}, '') }, 30); 'now'`), "'now'");
      for (let i = 0; i < 1000 && !existsSync(printed); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(existsSync(printed), "the timer ran");
      const { events, ender } = await w.feed("'next'");
      assert.equal(prints(events), "late\n");
      assert.equal(ender.results[0].text, "'next'");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await w.shutdown();
  });

  test("errors: name, message and a traceback of the cells only", async () => {
    const w = await Driver.start();
    await w.value("function inner() { throw new RangeError('too far') }");
    const { ender } = await w.feed("let ok = 1\ninner()");
    assert.equal(ender.type, "error");
    assert.equal(ender.name, "RangeError");
    assert.equal(ender.value, "too far");
    assert.equal(ender.executionCount, 2);
    assert.match(ender.traceback, /RangeError: too far/);
    assert.match(ender.traceback, /at inner \(<cell-1>:1:26\)/);
    assert.match(ender.traceback, /at <cell-2>:2:1/);
    assert.doesNotMatch(ender.traceback, /agentbox_worker|\[eval\]|node:internal|node:events|node:vm|<anonymous>/);

    const asyncErr = (await w.feed("await null\nthrow new TypeError('after await')")).ender;
    assert.equal(asyncErr.name, "TypeError");
    assert.match(asyncErr.traceback, /at <cell-3>:2:7/);
    assert.doesNotMatch(asyncErr.traceback, /agentbox_worker|\[eval\]|node:internal|<cell-3>:3:/);

    const syntax = (await w.feed("let = ;")).ender;
    assert.equal(syntax.name, "SyntaxError");
    assert.match(syntax.traceback, /^<cell-4>:1\nlet = ;\n/);
    assert.doesNotMatch(syntax.traceback, /\n\s+at /);

    const thrown = (await w.feed("throw 'plain'")).ender;
    assert.equal(thrown.type, "error");
    assert.equal(thrown.value, "'plain'");
    assert.equal(await w.value("ok"), "1", "the session lives on");
    await w.shutdown();
  });

  test("scriptName names the cells", async () => {
    const w = await Driver.start({ configure: { type: "configure", protocolVersion: 1, scriptName: "main-{n}.js" } });
    const { ender } = await w.feed("\nthrow new Error('x')");
    assert.match(ender.traceback, /at main-1\.js:2:7/);
    await w.shutdown();
  });

  test("reset gives a fresh context and restarts the count", async () => {
    const w = await Driver.start();
    await w.value("let kept = 1; var v = 2; globalThis.g = 3; setInterval(() => console.log('tick'), 5)");
    assert.equal((await w.request({ type: "reset" })).ender.type, "ok");
    await new Promise((r) => setTimeout(r, 50));
    const { events, ender } = await w.feed("[typeof kept, typeof v, typeof g, typeof console.log, typeof setTimeout, typeof require].join()");
    assert.equal(ender.executionCount, 1);
    assert.equal(ender.results[0].text, "'undefined,undefined,undefined,function,function,function'");
    assert.equal(prints(events), "", "the old context's timers were cleared");
    assert.equal(await w.value("let kept = 'again'; kept"), "'again'");
    await w.shutdown();
  });

  test("the worker's own machinery is out of the code's reach", async () => {
    const w = await Driver.start();
    assert.equal(await w.value("[typeof send, typeof writeAll, typeof state, typeof module, typeof fs]"), "[ 'undefined', 'undefined', 'undefined', 'undefined', 'undefined' ]");
    assert.equal(await w.value("process.stdin.read()"), "null", "stdin is empty, frames stay with the worker");
    assert.equal(await w.value("globalThis === global && typeof Buffer.from + typeof structuredClone + typeof URL + typeof TextEncoder"), "'functionfunctionfunctionfunction'");
    await w.shutdown();
  });

  test("child processes and fd writes cannot reach the frames; their output becomes prints", async () => {
    const w = await Driver.start();
    const sync = await w.feed("const cp = require('child_process')\ncp.execSync('echo out; echo err >&2', { stdio: 'inherit' })");
    assert.equal(sync.ender.type, "complete");
    assert.equal(prints(sync.events, "stdout"), "out\n");
    assert.equal(prints(sync.events, "stderr"), "err\n");
    assert.equal(sync.ender.results[0].text, "null", "the return value is the one of an inherited stdout");
    // A child given the worker's stdin reads nothing (it would otherwise eat the frames).
    assert.equal(await w.value("cp.spawnSync('cat', { stdio: 'inherit' }).status"), "0");
    const streamed = await w.feed("const child = cp.spawn('sh', ['-c', 'echo one; sleep 0.05; echo two'], { stdio: 'inherit' }); await new Promise((r) => child.on('close', r)); 'closed'");
    assert.equal(prints(streamed.events, "stdout"), "one\ntwo\n");
    const esm = await w.feed("import { execFileSync } from 'node:child_process'\nexecFileSync('echo', ['esm'], { stdio: [0, 1, 2] })");
    assert.equal(prints(esm.events, "stdout"), "esm\n");
    const fd = await w.feed("require('fs').writeSync(1, 'to fd 1\\n'); require('fs').writeSync(2, Buffer.from('to fd 2\\n'))");
    assert.equal(prints(fd.events, "stdout"), "to fd 1\n");
    assert.equal(prints(fd.events, "stderr"), "to fd 2\n");
    assert.equal(await w.value("'still framed'"), "'still framed'");
    await w.shutdown();
  });

  test("process.exit ends the cell, not the worker", async () => {
    const w = await Driver.start();
    const done = await w.feed("let before = 1; console.log('a'); process.exit(); console.log('b')");
    assert.equal(done.ender.type, "complete");
    assert.equal(prints(done.events), "a\n");
    const failed = (await w.feed("process.exit(3)")).ender;
    assert.deepEqual([failed.type, failed.name], ["error", "SystemExit"]);
    assert.equal(await w.value("before"), "1");
    await w.shutdown();
  });

  test("limits: output over maxOutputBytes is cut with one notice; a print over the frame limit is split", async () => {
    const w = await Driver.start({ configure: { type: "configure", protocolVersion: 1, limits: { maxOutputBytes: 100 } } });
    const { events, ender } = await w.feed("for (let i = 0; i < 50; i++) console.log('line ' + i); 'done'");
    assert.equal(ender.results[0].text, "'done'");
    const out = prints(events, "stdout");
    assert.equal(Buffer.byteLength(out), 100);
    assert.equal(prints(events, "stderr").match(/output truncated/g)?.length, 1);
    assert.match(prints((await w.feed("console.log('fresh budget')")).events), /fresh budget/);
    await w.shutdown();

    const small = await Driver.start({ configure: { type: "configure", protocolVersion: 1, limits: { maxFrameBytes: 4096 } } });
    const big = await small.feed("console.log('é'.repeat(10000)); 1");
    assert.equal(big.ender.type, "complete");
    assert.ok(big.events.length > 1);
    assert.equal(prints(big.events), "é".repeat(10000) + "\n");
    await small.shutdown();
  });
});

describe("node worker: host functions", () => {
  test("arguments and values cross with their tags both ways", async () => {
    const w = await Driver.start();
    const seen: unknown[][] = [];
    const echo = (...args: unknown[]) => {
      seen.push(args);
      return args;
    };
    const text = await w.value(
      "const out = await echo(new Uint8Array([0, 255]), 2n ** 70n, 5n, NaN, -Infinity, [1, 'two', null], { nested: { ok: true }, $weird: 1 }, undefined);\n" +
        "[out[0] instanceof Uint8Array, out[1] === 2n ** 70n, out[2], out[3], out[4], Array.isArray(out[5]) && out[5] instanceof Array, out[6].constructor === Object, out[6].$weird]",
      { echo },
    );
    assert.equal(text, "[ true, true, 5, NaN, -Infinity, true, true, 1 ]");
    assert.deepEqual(seen[0], [new Uint8Array([0, 255]), 2n ** 70n, 5, NaN, -Infinity, [1, "two", null], { nested: { ok: true }, $weird: 1 }, null]);

    // A tuple from the host is an array; a one-key $ object is wrapped as $dict.
    const { ender } = await w.request(
      { type: "feed", code: "const t = await tup(); [Array.isArray(t), t.length, t[1]]", functions: ["tup"] },
      { onCall: (c) => w.send({ type: "resume_call", callId: c.callId, value: { $tuple: [1, { $bytes: "AQ==" }] } }) },
    );
    assert.equal(ender.results[0].text, "[ true, 2, Uint8Array(1) [ 1 ] ]");

    const bad = (await w.feed("await echo(() => 1)", { echo })).ender;
    assert.equal(bad.name, "TypeError");
    assert.match(bad.value, /function cannot be passed/);
    assert.equal(seen.length, 1, "nothing was sent for an argument that cannot be encoded");
    await w.shutdown();
  });

  test("a host error rejects the promise with its name and message", async () => {
    const w = await Driver.start();
    const fail = () => {
      throw Object.assign(new Error("bad input"), { name: "ValueError" });
    };
    assert.equal(await w.value("let caught\ntry { await fail() } catch (e) { caught = [e.name, e.message, e instanceof Error] }\ncaught", { fail }), "[ 'ValueError', 'bad input', true ]");
    assert.equal(await w.value("await typeFail().catch((e) => e instanceof TypeError)", { typeFail: () => { throw new TypeError("t"); } }), "true");
    const { ender } = await w.feed("\nawait fail()", { fail });
    assert.equal(ender.type, "error");
    assert.equal(ender.name, "ValueError");
    assert.equal(ender.value, "bad input");
    assert.match(ender.traceback, /at <cell-3>:2:7/);
    await w.shutdown();
  });

  test("concurrent calls (Promise.all) are all out before any answer, and nested calls work", async () => {
    const w = await Driver.start();
    const calls: Msg[] = [];
    w.send({ type: "feed", code: "await Promise.all([add(1, 2), add(3, 4), add(5, 6)])", functions: ["add"] });
    let ender: Msg;
    for (;;) {
      const m = await w.next();
      if (m.type === "call") {
        calls.push(m);
        if (calls.length === 3) for (const c of [...calls].reverse()) w.send({ type: "resume_call", callId: c.callId, value: c.args[0] + c.args[1] });
        continue;
      }
      ender = m;
      break;
    }
    assert.equal(new Set(calls.map((c) => c.callId)).size, 3);
    assert.deepEqual(calls.map((c) => c.kwargs), [{}, {}, {}]);
    assert.equal(ender.results[0].text, "[ 3, 7, 11 ]");
    const add = (a: number, b: number) => a + b;
    assert.equal(await w.value("await add(await add(1, 2), await add(3, await add(4, 5)))", { add }), "15");
    assert.equal(await w.value("async function sum3(a, b, c) { return add(await add(a, b), c) }\nawait Promise.all([sum3(1, 1, 1), sum3(2, 2, 2)])", { add }), "[ 3, 6 ]");
    assert.equal(await w.value("add(2, 2)", { add }), "4", "called without await: the main result is awaited");
    await w.shutdown();
  });

  test("a call the code does not await is still answered within the turn", async () => {
    const w = await Driver.start();
    const { events, ender } = await w.feed("slow().then((v) => console.log('got', v)); 'started'", { slow: () => new Promise((r) => setTimeout(() => r(7), 30)) });
    assert.equal(ender.results[0].text, "'started'");
    assert.deepEqual(events.map((e) => e.type), ["call", "print"]);
    assert.equal(prints(events), "got 7\n");
    await w.shutdown();
  });

  test("a name the code defines, or that already exists, is not a host function; injected ones are removed", async () => {
    const w = await Driver.start();
    const add = () => "host";
    assert.equal(await w.value("function add() { return 'mine' }\nadd()", { add }), "'mine'");
    assert.equal(await w.value("add()", { add }), "'mine'", "defined by an earlier cell");
    assert.equal(await w.value("const sub = () => 'lexical'; await sub()", { sub: () => "host" }), "'lexical'");
    assert.equal(await w.value("sub()", { sub: () => "host" }), "'lexical'");
    assert.equal(await w.value("await mul()", { mul: () => "host" }), "'host'");
    assert.equal(await w.value("typeof mul"), "'undefined'");
    assert.equal(await w.value("typeof JSON.parse", { JSON: () => "host" }), "'function'", "a builtin wins");
    await w.shutdown();
  });
});

describe("node worker: protocol", () => {
  test("a version mismatch is a fatal_error and exit 1", async () => {
    const w = await Driver.start({ configure: false });
    const { ender } = await w.request({ type: "configure", protocolVersion: 2 });
    assert.equal(ender.type, "fatal_error");
    assert.match(ender.message, /version/);
    assert.equal((await w.exited).code, 1);
  });

  test("an oversize frame is a fatal_error and exit 2", async () => {
    const w = await Driver.start({ configure: { type: "configure", protocolVersion: 1, limits: { maxFrameBytes: 1000 } } });
    const head = Buffer.alloc(4);
    head.writeUInt32BE(1001, 0);
    w.sendRaw(head);
    const m = await w.next();
    assert.equal(m.type, "fatal_error");
    assert.match(m.message, /1001/);
    assert.equal((await w.exited).code, 2);
  });

  test("input that ends inside a frame: exit 2; at a frame boundary: exit 0", async () => {
    const w = await Driver.start();
    w.sendRaw(Buffer.from([0, 0, 0, 50, 123]));
    w.proc.stdin.end();
    assert.equal((await w.exited).code, 2);
    const clean = await Driver.start();
    clean.proc.stdin.end();
    assert.equal((await clean.exited).code, 0);
  });

  test("a malformed payload or an unknown message gets a ProtocolError and the session lives on", async () => {
    const w = await Driver.start();
    await w.value("let keep = 'kept'");
    const junk = Buffer.from("{not json");
    const head = Buffer.alloc(4);
    head.writeUInt32BE(junk.length, 0);
    w.sendRaw(Buffer.concat([head, junk]));
    const a = (await w.collect()).ender;
    assert.deepEqual([a.type, a.name], ["error", "ProtocolError"]);
    for (const bad of [{ type: "dance" }, { type: "feed" }, [1, 2], { type: "feed", code: "1", functions: ["not a name"] }]) {
      const { ender } = await w.request(bad as Msg);
      assert.deepEqual([ender.type, ender.name], ["error", "ProtocolError"], JSON.stringify(bad));
    }
    assert.equal(await w.value("keep"), "'kept'");
    await w.shutdown();
  });

  test("SIGINT: ignored when idle; interrupts a busy loop or a wait, and the state survives", async () => {
    const w = await Driver.start();
    await w.value("let survivor = 'alive'");
    w.proc.kill("SIGINT");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await w.value("survivor"), "'alive'");

    w.send({ type: "feed", code: "console.log('spinning'); for (;;) {}" });
    assert.equal((await w.next()).text, "spinning\n");
    w.proc.kill("SIGINT");
    const loop = (await w.collect()).ender;
    assert.deepEqual([loop.type, loop.name], ["error", "KeyboardInterrupt"]);

    w.send({ type: "feed", code: "console.log('waiting'); await new Promise(() => {})" });
    assert.equal((await w.next()).text, "waiting\n");
    w.proc.kill("SIGINT");
    const wait = (await w.collect()).ender;
    assert.deepEqual([wait.type, wait.name], ["error", "KeyboardInterrupt"]);
    assert.equal(await w.value("survivor"), "'alive'");
    await w.shutdown();
  });

  test("the file also runs directly, without the bootstrap", async () => {
    const w = await Driver.start({ direct: true });
    assert.equal(await w.value("1+1"), "2");
    const { ender } = await w.feed("null.x");
    assert.doesNotMatch(ender.traceback, /agentbox_worker/);
    await w.shutdown();
  });
});

describe("node worker: dependencies", () => {
  const tmp = mkdtempSync(join(tmpdir(), "agentbox-node-worker-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("empty or flag-like requirements are refused", async () => {
    const w = await Driver.start({ env: { AGENTBOX_NODE_DEPS_DIR: join(tmp, "never") } });
    for (const requirements of [[], [""], ["--global"], ["ok-pkg", "-g"], ["  --prefix=/"]]) {
      const { ender } = await w.request({ type: "install_dependencies", requirements });
      assert.deepEqual([ender.type, ender.name], ["error", "ValueError"], JSON.stringify(requirements));
    }
    await w.shutdown();
  });

  const npm = spawnSync("npm", ["--version"], { encoding: "utf8" });
  test("a package installed with npm is then required and imported", { skip: npm.status !== 0 && "npm is not available" }, async () => {
    const pkg = join(tmp, "pkg");
    mkdirSync(pkg);
    writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "agentbox-tiny-test", version: "1.0.0", main: "index.js" }));
    writeFileSync(join(pkg, "index.js"), "module.exports = { hello: (n) => 'hello ' + n };\n");
    const packed = spawnSync("npm", ["pack", "--silent", "--pack-destination", tmp], { cwd: pkg, encoding: "utf8" });
    assert.equal(packed.status, 0, packed.stderr);
    const tarball = join(tmp, packed.stdout.trim().split("\n").pop()!);
    const w = await Driver.start({ env: { AGENTBOX_NODE_DEPS_DIR: join(tmp, "deps") } });
    const missing = (await w.feed("require('agentbox-tiny-test')")).ender;
    assert.equal(missing.type, "error");
    const { events, ender } = await w.request({ type: "install_dependencies", requirements: [tarball] });
    assert.equal(ender.type, "ok", JSON.stringify(ender));
    assert.ok(events.every((e) => e.type === "print" && e.stream === "stderr"));
    assert.equal(await w.value("require('agentbox-tiny-test').hello(1)"), "'hello 1'");
    assert.equal(await w.value("import tiny from 'agentbox-tiny-test'\ntiny.hello(2)"), "'hello 2'");
    assert.equal(await w.value("(await import('agentbox-tiny-test')).default.hello(3)"), "'hello 3'");
    const failed = (await w.request({ type: "install_dependencies", requirements: [join(tmp, "no-such.tgz")] })).ender;
    assert.deepEqual([failed.type, failed.name], ["error", "InstallError"]);
    await w.shutdown();
  });
});

describe("node worker: timing", () => {
  test("round trips: a feed of 1+1, and 1000 host callbacks in one feed", async (t) => {
    const w = await Driver.start();
    for (let i = 0; i < 20; i++) await w.value("1+1");
    const feeds: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      await w.value("1+1");
      feeds.push(performance.now() - t0);
    }
    const runs: number[] = [];
    const add = (a: number, b: number) => a + b;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      assert.equal(await w.value("let acc = 0; for (let i = 0; i < 1000; i++) acc = await add(acc, 1); acc", { add }), "1000");
      runs.push(performance.now() - t0);
    }
    t.diagnostic(`feed 1+1: median ${median(feeds).toFixed(3)} ms over 200`);
    t.diagnostic(`1000 sequential host callbacks in one feed: median ${median(runs).toFixed(1)} ms over 5 (${((median(runs) / 1000) * 1000).toFixed(1)} µs per call)`);
    assert.ok(median(feeds) < 50);
    await w.shutdown();
  });
});
