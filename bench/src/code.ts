/**
 * Code contexts at the API through the SDK: creating a context (from the
 * sandbox's warm pool), a `1+1` run on a warm context, and 1,000 host
 * function calls in one run; against a plain `python3 -c '1+1'` spawn.
 */
import type { Sandbox } from "@agentbox/sdk";
import { rawPython } from "./baselines.js";
import { interleave, time } from "./stats.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function codeBench(sb: Sandbox, n: number): Promise<{ create: number[]; run: number[]; python: number[]; callbacks1000Ms: number[] }> {
  // The first context starts the sandbox's pool; later ones come from it.
  const first = await sb.code.createContext({ language: "python" });
  await first.run("1+1");
  const contexts = [first];
  const create: number[] = [];
  for (let i = 0; i < n; i++) {
    await sleep(60); // let the pool start its next warm worker (untimed)
    create.push(await time(async () => contexts.push(await sb.code.createContext({ language: "python" }))));
  }
  for (const c of contexts.splice(1)) await c.remove();
  for (let i = 0; i < 20; i++) await first.run("1+1");
  const [run, python] = await interleave(n * 5, () => first.run("1+1"), rawPython);
  const callbacks1000Ms: number[] = [];
  for (let i = 0; i < Math.max(3, Math.round(n / 10)); i++) {
    callbacks1000Ms.push(await time(async () => {
      const ex = await first.run("s = 0\nfor i in range(1000):\n    s += inc(i)\ns", { functions: { inc: (x: number) => x + 1 } });
      if (ex.results[0]?.text !== "500500") throw new Error(`callbacks: ${JSON.stringify(ex)}`);
    }));
  }
  await first.remove();
  return { create, run, python, callbacks1000Ms };
}
