/**
 * The embedded Python interpreter (Pyodide in locked-down child processes)
 * side by side with @pydantic/monty, both in this process's hands, in one run.
 */
import { readFileSync, readdirSync } from "node:fs";
import { Monty } from "@pydantic/monty";
import { InterpreterPool } from "@agentbox/interpreter";
import { summarize, time, type Summary } from "./stats.js";

export interface EmbeddedRow {
  name: string;
  agentbox: Summary;
  monty: Summary;
}

const FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(25)";
const SQUARES = "sum(i * i for i in range(10**6))";
const CALLS = "s = 0\nfor i in range(1000):\n    s += inc(i)\ns";

/** RSS of this process's children that run the embedded interpreter (bytes each). */
function childRss(): number[] {
  const out: number[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      if (!new RegExp(`^PPid:\\s+${process.pid}$`, "m").test(status)) continue;
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("wasm-child")) continue;
      out.push(Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) * 1024);
    } catch {
      /* gone */
    }
  }
  return out;
}

export async function embeddedBench(n: number): Promise<{ rows: EmbeddedRow[]; agentboxRssPerInterpreter: number; montyRssPerInstance: number; killOvershootMs: number[] }> {
  const pool = await InterpreterPool.create({ min: 2, max: 4 });
  try {
    const rows: EmbeddedRow[] = [];
    const measure = async (name: string, k: number, ours: () => Promise<unknown>, theirs: () => unknown) => {
      for (let i = 0; i < 3; i++) {
        await ours();
        theirs();
      }
      const a: number[] = [];
      const b: number[] = [];
      for (let i = 0; i < k; i++) {
        a.push(await time(ours));
        b.push(await time(async () => theirs()));
      }
      rows.push({ name, agentbox: summarize(a), monty: summarize(b) });
    };
    // Checkout + run from a warm pool. Warm: the first checkouts make the pool start its spare
    // interpreters (seconds of CPU each), so those are let finish first. The release (a reset,
    // which a real caller does not wait for either) is awaited but not timed, so that it does not
    // compete with the next checkout for this machine's two cores.
    const checkoutRun = async () => {
      const s = await pool.checkout();
      const v = await s.run("1 + 1");
      if (v !== 2) throw new Error(`1 + 1 gave ${String(v)}`);
      return s;
    };
    for (let i = 0; i < 5; i++) await (await checkoutRun()).release();
    while (pool.size.starting > 0) await new Promise((r) => setTimeout(r, 50));
    {
      const a: number[] = [];
      const b: number[] = [];
      for (let i = 0; i < n * 10; i++) {
        const t = performance.now();
        const s = await checkoutRun();
        a.push(performance.now() - t);
        await s.release();
        b.push(await time(async () => new Monty("1 + 1").run()));
      }
      rows.push({ name: "checkout + run `1 + 1`", agentbox: summarize(a), monty: summarize(b) });
    }
    const session = await pool.checkout({ limits: { timeoutMs: 60_000 } });
    const inc = (x: unknown) => (x as number) + 1;
    await measure("1,000 host function calls", n, () => session.run(CALLS, { functions: { inc } }), () => new Monty(CALLS).run({ externalFunctions: { inc } }));
    await measure("fib(25)", n, () => session.run(FIB), () => new Monty(FIB).run());
    await measure("sum(i*i for i in range(10**6))", n, () => session.run(SQUARES), () => new Monty(SQUARES).run());
    await session.release();
    // Memory: each warm interpreter is a process of its own; Monty lives in this one.
    const rss = childRss();
    const before = process.memoryUsage().rss;
    const keep: Monty[] = [];
    for (let i = 0; i < 200; i++) keep.push(new Monty(FIB));
    const montyRssPerInstance = Math.max(0, process.memoryUsage().rss - before) / 200;
    void keep;
    // A loop that swallows the interrupt: how long past its limit until it stops.
    const killOvershootMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await pool.checkout({ limits: { timeoutMs: 100 } });
      const t = performance.now();
      await s.run("while True:\n    try:\n        while True: pass\n    except BaseException: pass").catch(() => undefined);
      killOvershootMs.push(performance.now() - t - 100);
      await s.release().catch(() => undefined);
    }
    return { rows, agentboxRssPerInterpreter: rss.reduce((a, b) => a + b, 0) / Math.max(1, rss.length), montyRssPerInstance, killOvershootMs };
  } finally {
    await pool.close();
  }
}
