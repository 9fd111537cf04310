/**
 * Pausable runs of the embedded Python interpreter: start → Paused → resume/throw, dump → load
 * in another pool and in a fresh process, tampered dumps, replay divergence.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import {
  InterpreterDumpError,
  InterpreterPool,
  InterpreterReplayError,
  InterpreterRuntimeError,
  InterpreterTimeoutError,
  PyKwargs,
  type Step,
} from "../src/index.js";

let pool: InterpreterPool;
let other: InterpreterPool;
before(async () => {
  [pool, other] = await Promise.all([InterpreterPool.create({ min: 1, max: 3 }), InterpreterPool.create({ min: 1, max: 1 })]);
});
after(async () => {
  await Promise.all([pool.close(), other.close()]);
});

/** The host side of the runs below. */
function host(name: string, args: unknown[], kwargs: Record<string, unknown>): unknown {
  if (name === "fetch") return { id: args[0], value: (args[0] as number) * ((kwargs.scale as number | undefined) ?? 1) };
  if (name === "note") return `noted ${String(args[0])}`;
  throw new Error(`unknown ${name}`);
}

const CODE = `
import random, time, datetime, uuid
total = 0
for i in range(3):
    total += fetch(i, scale=10)["value"]
tag = note(sorted({"alpha", "beta", "gamma"}))
(total, tag, random.random(), time.time() >= start, datetime.datetime.now().year > 2000, uuid.uuid4().hex, sorted({"x", "y"} | {"z"}))
`;

async function finish(step: Step, onPause?: (s: Step & { done: false }, i: number) => Promise<Step | null>): Promise<unknown> {
  let i = 0;
  while (!step.done) {
    const replaced = onPause ? await onPause(step, i) : null;
    if (replaced) {
      step = replaced;
      if (step.done) break;
    }
    step = await step.resume(host(step.name, step.args, step.kwargs));
    i++;
  }
  return step.value;
}

describe("python-wasm pausable runs", () => {
  test("pause → resume → same result as a run with the host functions called directly", async () => {
    const s = await pool.checkout();
    try {
      const direct = await s.run("fetch(2, scale=3)['value'] + fetch(1)['value']", {
        functions: {
          fetch: (...a: unknown[]) => {
            const kw = a.at(-1) instanceof PyKwargs ? (a.pop() as PyKwargs).values : {};
            return host("fetch", a, kw);
          },
        },
      });
      let step = await s.start("fetch(2, scale=3)['value'] + fetch(1)['value']", { functions: ["fetch"] });
      assert.equal(step.done, false);
      if (step.done) return;
      assert.equal(step.name, "fetch");
      assert.deepEqual(step.args, [2]);
      assert.deepEqual(step.kwargs, { scale: 3 });
      const value = await finish(step);
      assert.equal(value, direct);
      assert.equal(value, 7);
      // the session is usable afterwards
      assert.equal(await s.run("1 + 1"), 2);
    } finally {
      await s.release();
    }
  });

  test("a run without host calls is done at once; inputs only, no earlier globals", async () => {
    const s = await pool.checkout();
    try {
      await s.run("leftover = 5");
      const step = await s.start("[x * 2, 'leftover' in globals()]", { inputs: { x: 21 } });
      assert.deepEqual(step, { done: true, value: [42, false] });
    } finally {
      await s.release();
    }
  });

  test("the deterministic clock and randomness are confined to the pausable run", async () => {
    const s = await pool.checkout();
    try {
      const step = await s.start("import time, random, datetime\n[time.time.__name__, random.Random.seed.__qualname__, datetime.datetime.now().year > 2000]");
      assert.deepEqual(step, { done: true, value: ["now", "_Deterministic.__enter__.<locals>.seed", true] });
      assert.deepEqual(await s.run("import time, random\n[time.time.__name__, random.Random.seed.__qualname__, time.time() > 1.7e9]"), [
        "time",
        "Random.seed",
        true,
      ]);
    } finally {
      await s.release();
    }
  });

  test("the time limit applies to each stretch of Python between pauses", async () => {
    // (A limit of 1 s, not less: the stretch up to the pause must fit in it on a loaded machine too.)
    const s = await pool.checkout({ limits: { timeoutMs: 1000 } });
    try {
      const step = await s.start("fetch(1)\nwhile True:\n    pass", { functions: ["fetch"] });
      if (step.done) assert.fail("expected a pause");
      await new Promise((r) => setTimeout(r, 1500)); // paused time does not count
      await assert.rejects(step.resume(1), InterpreterTimeoutError);
      assert.equal(await s.run("3"), 3);
    } finally {
      await s.release();
    }
  });

  test("throw raises in Python and can be caught", async () => {
    const s = await pool.checkout();
    try {
      const step = await s.start(
        "try:\n    r = fetch(1)\nexcept HostError as e:\n    r = 'caught: ' + str(e)\nr",
        { functions: ["fetch"] },
      );
      assert.equal(step.done, false);
      if (step.done) return;
      const end = await step.throw(new RangeError("no such record"));
      assert.deepEqual(end, { done: true, value: "caught: RangeError: no such record" });
      // uncaught: a typed runtime error
      const step2 = await s.start("fetch(1)", { functions: ["fetch"] });
      assert.equal(step2.done, false);
      if (step2.done) return;
      await assert.rejects(step2.throw(new Error("boom")), (e: unknown) => e instanceof InterpreterRuntimeError && e.pythonType === "HostError");
    } finally {
      await s.release();
    }
  });

  test("a step resumes once", async () => {
    const s = await pool.checkout();
    try {
      const step = await s.start("fetch(1)['value']", { functions: ["fetch"] });
      if (step.done) assert.fail("expected a pause");
      const end = await step.resume({ value: 3 });
      assert.deepEqual(end, { done: true, value: 3 });
      await assert.rejects(step.resume(4), /already resumed/);
    } finally {
      await s.release();
    }
  });

  test("dump → load in another pool at every pause → same result (randomness, clock, uuid, set order included)", async () => {
    const s = await pool.checkout();
    try {
      const live = await s.start(CODE, { inputs: { start: 0 }, functions: ["fetch", "note"] });
      if (live.done) assert.fail("expected a pause");
      const bytes0 = live.dump();
      const uninterrupted = await finish(live);
      const first = await other.load(bytes0);
      if (first.done) assert.fail("expected a pause");
      const loads: string[] = [];
      // Dump at each pause, abandon the live run, continue from the dump in the other pool.
      const value = await finish(first, async (step, i) => {
        const bytes = step.dump();
        await step.cancel();
        const loaded = await (i % 2 === 0 ? other : pool).load(bytes);
        assert.equal(loaded.done, false);
        if (loaded.done) return loaded;
        assert.equal(loaded.name, step.name);
        assert.deepEqual(loaded.args, step.args);
        assert.deepEqual(loaded.kwargs, step.kwargs);
        loads.push(loaded.name);
        return loaded;
      });
      assert.deepEqual(loads, ["fetch", "fetch", "fetch", "note"]);
      assert.deepEqual(value, uninterrupted);
      const v = value as unknown[];
      assert.equal(v[0], 30);
      assert.equal(v[1], "noted alpha,beta,gamma");
      assert.equal(v[3], true);
    } finally {
      await s.release();
    }
  });

  test("an awaited host call in async code pauses, resumes, throws and replays from a dump", async () => {
    const code = `
import asyncio
async def main():
    a = await fetch(1)
    await asyncio.sleep(0.01)
    b, c = await asyncio.gather(fetch(2, scale=5), note("x"))
    try:
        await fetch(3)
    except HostError as e:
        d = str(e)
    return [a["value"], b["value"], c, d]
await main()`;
    const s = await pool.checkout();
    const dumps: Uint8Array[] = [];
    const seen: string[] = [];
    let value: unknown;
    try {
      let step = await s.start(code, { functions: ["fetch", "note"] });
      while (!step.done) {
        seen.push(`${step.name}(${JSON.stringify(step.args)}, ${JSON.stringify(step.kwargs)})`);
        dumps.push(step.dump());
        step = step.name === "fetch" && step.args[0] === 3 ? await step.throw(new RangeError("gone")) : await step.resume(host(step.name, step.args, step.kwargs));
      }
      value = step.value;
    } finally {
      await s.release();
    }
    assert.deepEqual(seen, ["fetch([1], {})", "fetch([2], {\"scale\":5})", "note([\"x\"], {})", "fetch([3], {})"]);
    assert.deepEqual(value, [1, 10, "noted x", "RangeError: gone"]);
    // each dump loads in the other pool at its paused call and finishes with the same value
    for (const [i, bytes] of dumps.entries()) {
      let step = await other.load(bytes);
      if (step.done) assert.fail("expected a pause");
      assert.equal(`${step.name}(${JSON.stringify(step.args)}, ${JSON.stringify(step.kwargs)})`, seen[i]);
      while (!step.done) {
        step = step.name === "fetch" && step.args[0] === 3 ? await step.throw(new RangeError("gone")) : await step.resume(host(step.name, step.args, step.kwargs));
      }
      assert.deepEqual(step.value, value, `loaded at pause #${i + 1}`);
    }
  });

  test("output of the replayed part is not repeated after a load", async () => {
    const s = await pool.checkout();
    let bytes: Uint8Array;
    const live: string[] = [];
    try {
      const step = await s.start("print('before')\nx = ask()\nprint('after', x)\nx", { functions: ["ask"], onPrint: (t) => live.push(t) });
      if (step.done) assert.fail("expected a pause");
      bytes = step.dump();
    } finally {
      await s.release();
    }
    assert.deepEqual(live.join(""), "before\n");
    const printed: string[] = [];
    const loaded = await other.load(bytes, { onPrint: (t) => printed.push(t) });
    if (loaded.done) assert.fail("expected a pause");
    assert.deepEqual(await loaded.resume(7), { done: true, value: 7 });
    assert.equal(printed.join(""), "after 7\n");
  });

  test("pause → dump → load in a fresh process → resume → same result", async () => {
    const s = await pool.checkout();
    const dir = mkdtempSync(join(tmpdir(), "pydump-"));
    try {
      let step = await s.start(CODE, { inputs: { start: 0 }, functions: ["fetch", "note"] });
      if (step.done) assert.fail("expected a pause");
      step = await step.resume(host(step.name, step.args, step.kwargs));
      if (step.done) assert.fail("expected a pause");
      const file = join(dir, "run.dump");
      writeFileSync(file, step.dump());
      const uninterrupted = await finish(step);
      const index = resolve(dirname(fileURLToPath(import.meta.url)), "../src/index.js");
      const script = `
        import { readFileSync } from "node:fs";
        const { InterpreterPool } = await import(${JSON.stringify(index)});
        const pool = await InterpreterPool.create({ min: 1, max: 1 });
        let step = await pool.load(new Uint8Array(readFileSync(${JSON.stringify(file)})));
        const seen = [];
        while (!step.done) {
          seen.push(step.name);
          const a = step.args, kw = step.kwargs;
          const r = step.name === "fetch" ? { id: a[0], value: a[0] * (kw.scale ?? 1) } : "noted " + String(a[0]);
          step = await step.resume(r);
        }
        process.stdout.write(JSON.stringify({ seen, value: step.value }));
        await pool.close();
      `;
      const out = await new Promise<string>((res, rej) =>
        execFile(process.execPath, ["--input-type=module", "-e", script], { timeout: 60_000 }, (err, stdout, stderr) =>
          err ? rej(new Error(`${err.message}\n${stderr}`)) : res(stdout),
        ),
      );
      const { seen, value } = JSON.parse(out) as { seen: string[]; value: unknown };
      assert.deepEqual(seen, ["fetch", "fetch", "note"]);
      assert.deepEqual(value, JSON.parse(JSON.stringify(uninterrupted)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await s.release();
    }
  });

  test("a tampered, truncated or foreign dump is refused", async () => {
    const s = await pool.checkout();
    let bytes: Uint8Array;
    try {
      const step = await s.start("fetch(1)", { functions: ["fetch"] });
      if (step.done) assert.fail("expected a pause");
      bytes = step.dump();
    } finally {
      await s.release();
    }
    const flipped = bytes.slice();
    flipped[flipped.length - 5]! ^= 1;
    await assert.rejects(pool.load(flipped), InterpreterDumpError);
    await assert.rejects(pool.load(bytes.slice(0, 30)), InterpreterDumpError);
    await assert.rejects(pool.load(new TextEncoder().encode("hello")), InterpreterDumpError);
    // a signing pool refuses unsigned dumps, and dumps signed with another key
    const signed = await InterpreterPool.create({ min: 0, max: 1, dumpSecret: "k1" });
    const signed2 = await InterpreterPool.create({ min: 0, max: 1, dumpSecret: "k2" });
    try {
      await assert.rejects(signed.load(bytes), InterpreterDumpError);
      const ss = await signed.checkout();
      const step = await ss.start("fetch(2)", { functions: ["fetch"] });
      if (step.done) assert.fail("expected a pause");
      const signedBytes = step.dump();
      await ss.release();
      await assert.rejects(signed2.load(signedBytes), InterpreterDumpError);
      const again = await signed.load(signedBytes);
      if (again.done) assert.fail("expected a pause");
      assert.deepEqual(await again.resume(5), { done: true, value: 5 });
    } finally {
      await Promise.all([signed.close(), signed2.close()]);
    }
  });

  test("a replay whose host calls diverge from the record → InterpreterReplayError", async () => {
    const s = await pool.checkout();
    let bytes: Uint8Array;
    try {
      let step = await s.start("a = fetch(1)\nb = fetch(2)\na + b", { functions: ["fetch"] });
      if (step.done) assert.fail("expected a pause");
      step = await step.resume(10);
      if (step.done) assert.fail("expected a pause");
      bytes = step.dump();
    } finally {
      await s.release();
    }
    // Re-hash an edited body (unsigned dumps only detect corruption): the code now calls differently.
    const edit = (f: (body: Record<string, unknown>) => void): Uint8Array => {
      const buf = Buffer.from(bytes);
      const body = JSON.parse(buf.subarray(40).toString("utf8")) as Record<string, unknown>;
      f(body);
      const json = Buffer.from(JSON.stringify(body), "utf8");
      return new Uint8Array(Buffer.concat([buf.subarray(0, 8), createHash("sha256").update(json).digest(), json]));
    };
    await assert.rejects(
      pool.load(edit((b) => (b.code = "a = fetch(3)\nb = fetch(2)\na + b"))),
      (e: unknown) => e instanceof InterpreterReplayError && /host call #1 differs/.test(e.message),
    );
    await assert.rejects(
      pool.load(edit((b) => (b.code = "a = fetch(1)\nb = fetch(9)\na + b"))),
      (e: unknown) => e instanceof InterpreterReplayError && /paused at fetch/.test(e.message),
    );
    await assert.rejects(
      pool.load(edit((b) => (b.code = "a = fetch(1)\na"))),
      (e: unknown) => e instanceof InterpreterReplayError && /without reaching/.test(e.message),
    );
    // the pool still works and the unedited dump still loads
    const ok = await pool.load(bytes);
    if (ok.done) assert.fail("expected a pause");
    assert.deepEqual(await ok.resume(5), { done: true, value: 15 });
  });

  test("releasing a session with a paused run frees it; the pool keeps working and leaks nothing", async () => {
    const s = await pool.checkout();
    const step = await s.start("secret = 'x'\nfetch(1)", { functions: ["fetch"] });
    assert.equal(step.done, false);
    await s.release();
    const t = await pool.checkout();
    try {
      assert.equal(await t.run("'secret' in globals()"), false);
      assert.equal(await t.run("1 + 1"), 2);
    } finally {
      await t.release();
    }
  });

  test("a run that swallows the abort is stopped anyway", async () => {
    const s = await pool.checkout({ limits: { timeoutMs: 20_000 } });
    const step = await s.start("while True:\n    try:\n        fetch(1)\n    except BaseException:\n        pass", { functions: ["fetch"] });
    if (step.done) assert.fail("expected a pause");
    const t0 = Date.now();
    await step.cancel();
    // Stopped after a short grace, not by the run's time limit (generous: a loaded machine is slow).
    assert.ok(Date.now() - t0 < 10_000, `cancel took ${Date.now() - t0} ms`);
    await assert.rejects(s.run("1"));
    await s.release();
    const t = await pool.checkout();
    assert.equal(await t.run("2"), 2);
    await t.release();
  });
});
