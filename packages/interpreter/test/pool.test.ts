/**
 * WorkerPool and the parent's watchdog, with real CPython workers as plain
 * child processes (the pool is transport-agnostic; the runtime's pools start
 * the same workers inside sandboxes).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { WorkerFailure, WorkerPool, startLocalWorker } from "../src/index.js";

const PROGRAMS = { python: "/usr/bin/python3" };
const start = () => startLocalWorker("python", { programs: PROGRAMS });
const until = async (what: string, fn: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test("the pool keeps min workers warm; checkout takes one at once and refills", async () => {
  let created = 0;
  const pool = new WorkerPool({ create: () => (created++, start()), min: 2, max: 4 });
  pool.warm();
  await until("two warm workers", () => pool.size.idle === 2);
  const t = performance.now();
  const w = await pool.checkout();
  const ms = performance.now() - t;
  // It took a warm one (no start of its own, which takes over 100 ms); the bound is loose for a loaded machine.
  assert.equal(pool.size.idle, 1);
  assert.ok(ms < 100, `checkout of a warm worker took ${ms} ms`);
  assert.equal((await w.request({ type: "feed", code: "21 * 2" })).type, "complete");
  await until("refill", () => pool.size.idle === 2);
  assert.equal(created, 3);
  await pool.release(w, false);
  await pool.close();
});

test("a worker that dies mid-turn is reported as crashed; a dead idle worker is replaced", async () => {
  const pool = new WorkerPool({ create: start, min: 1, max: 4 });
  pool.warm();
  await until("a warm worker", () => pool.size.idle === 1);
  const w = await pool.checkout();
  await assert.rejects(w.request({ type: "feed", code: "import os\nos._exit(3)" }), (e) => e instanceof WorkerFailure && e.kind === "crashed" && /code 3/.test(e.message));
  assert.equal(w.alive, false);
  await pool.release(w, true);
  await until("a warm worker again", () => pool.size.idle === 1);
  const idle = await pool.checkout();
  idle.kill();
  await pool.release(idle, true);
  await until("a replacement", () => pool.size.idle === 1);
  await pool.close();
});

test("watchdog: an interrupt stops a runaway loop and keeps the worker; one that ignores it is killed", async () => {
  const w = await start();
  await w.request({ type: "feed", code: "kept = 7" });
  const interrupted = await w.request({ type: "feed", code: "while True:\n    pass" }, { timeoutMs: 200 });
  assert.equal(interrupted.type, "error");
  assert.equal(interrupted.type === "error" && interrupted.name, "TimeoutError");
  const still = await w.request({ type: "feed", code: "kept" });
  assert.equal(still.type === "complete" && still.results[0]?.text, "7");
  const t = performance.now();
  await assert.rejects(
    w.request({ type: "feed", code: "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass" }, { timeoutMs: 200 }),
    (e) => e instanceof WorkerFailure && e.kind === "timeout",
  );
  const ms = performance.now() - t;
  assert.ok(ms >= 200 && ms < 10_000, `killed after ${ms} ms`);
  assert.equal(w.alive, false);
});

test("workers are recycled after recycleAfter feeds; a released worker comes back reset", async () => {
  const pool = new WorkerPool({ create: start, min: 1, max: 2, recycleAfter: 2 });
  const w = await pool.checkout();
  await w.request({ type: "feed", code: "secret = 1" });
  await pool.release(w, true);
  const again = await pool.checkout();
  assert.equal(again, w, "the idle worker was reused");
  const state = await again.request({ type: "feed", code: "'secret' in globals()" });
  assert.equal(state.type === "complete" && state.results[0]?.text, "False");
  await pool.release(again, true); // its second feed: worn out, shut down
  await until("it is gone", () => !again.alive);
  await pool.close();
});
