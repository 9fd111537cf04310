/**
 * Code contexts at the API through the SDK: creating a context (from the
 * sandbox's warm pool), a `1+1` run on a warm context, and 1,000 host
 * function calls in one run; against a plain `python3 -c '1+1'` spawn.
 */
import type { Sandbox } from "@agentbox/sdk";
import { echoPeer, rawPython } from "./baselines.js";
import { time } from "./stats.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function codeBench(sb: Sandbox, n: number): Promise<{ create: number[]; run: number[]; python: number[]; callbacks1000Ms: number[]; callbacksColdMs: number; rawRoundTripUs: number[] }> {
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
  // Runs back to back, then the spawns: a python3 start between two runs (13 ms of CPU, caches
  // cold) would be measured as part of the run after it.
  const run: number[] = [];
  for (let i = 0; i < n * 5; i++) run.push(await time(() => first.run("1+1")));
  const python: number[] = [];
  for (let i = 0; i < n * 2; i++) python.push(await time(rawPython));
  const callbacks = async () => {
    const ex = await first.run("s = 0\nfor i in range(1000):\n    s += inc(i)\ns", { functions: { inc: (x: number) => x + 1 } });
    if (ex.results[0]?.text !== "500500") throw new Error(`callbacks: ${JSON.stringify(ex)}`);
  };
  // Untimed rounds first: on this machine a call's round trip keeps falling for about 4,000
  // calls (787, 527, 391, 297, then 150-230 ms a round), as the JIT of the four processes on
  // the path and the VM's wake-up latency settle. The first (cold) round is reported beside.
  const callbacksColdMs = await time(callbacks);
  for (let i = 0; i < 4; i++) await callbacks();
  const callbacks1000Ms: number[] = [];
  for (let i = 0; i < Math.max(7, Math.round(n / 5)); i++) callbacks1000Ms.push(await time(callbacks));
  // The machine's floor for one hop, right after: raw process-to-process round trips.
  const peer = await echoPeer();
  const rawRoundTripUs: number[] = [];
  for (let i = 0; i < 5; i++) rawRoundTripUs.push(await peer.roundTripUs(1000));
  peer.close();
  await first.remove();
  return { create, run, python, callbacks1000Ms, callbacksColdMs, rawRoundTripUs };
}
