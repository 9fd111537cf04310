/**
 * `npm run bench`: agentbox against the floors it is built on, in one run.
 *   (a) create a sandbox + first exec of `true`  vs  a raw bwrap sandbox running `true`
 *   (b) exec round trip of `true` through the SDK vs  a raw child_process spawn of `true`
 *   (c) idle memory per sandbox with N sandboxes alive
 *   (d) stream throughput, (e) output latency, (f) concurrent streams
 *   (g) session exec round trip of `true` vs a stateless exec of `true`
 *   (h) keystroke echo through the terminal WebSocket vs a raw local PTY
 *   (i) file upload and download through the SDK vs `cat src | cat > dst`, and server RSS meanwhile;
 *       watch latency vs `fs.watch` of a host directory
 *   (j) claim from a warm pool, create from a 3-layer OCI template vs from `host`, pause + resume
 *       of a sandbox running 50 processes
 *   (k) code contexts: create from the warm pool, `1+1` round trip, 1,000 host calls, vs `python3 -c`
 *   (l) the embedded Python interpreter (Pyodide) side by side with @pydantic/monty
 *   (m) HTTP GET and a 100 MiB download through the allowlist egress proxy vs straight from the host
 * Options: --quick (fewer iterations), --json (machine-readable result), --sandboxes N,
 * --only a,g,h (run just those sections).
 */
import { parseArgs } from "node:util";
import { Agentbox, type Sandbox } from "@agentbox/sdk";
import { rawBwrap, rawSpawn } from "./baselines.js";
import { descendants, findRuntimePid, pss, rss, sandboxCgroupMemory } from "./memory.js";
import { startServerProcess } from "./server-process.js";
import { agentboxKeystrokes, rawPtyKeystrokes } from "./terminals.js";
import { bigDownload, bigUpload, filesThroughput, watchLatency } from "./files.js";
import { concurrentStreams, firstChunkLatency, rawPipeThroughput, sdkThroughput } from "./streams.js";
import { fmt, interleave, mib, summarize, type Summary } from "./stats.js";
import { ociCreates, pauseResume, poolClaims } from "./lifecycle.js";
import { codeBench } from "./code.js";
import { embeddedBench } from "./embedded.js";
import { networkBench } from "./network.js";

const { values } = parseArgs({
  options: { quick: { type: "boolean" }, json: { type: "boolean" }, sandboxes: { type: "string" }, only: { type: "string" } },
});
const quick = values.quick ?? false;
const only = values.only?.split(",").map((x) => x.trim());
const want = (section: string) => only === undefined || only.includes(section);
const idleCount = Number(values.sandboxes ?? (quick ? 50 : 200));
const log = (line: string) => {
  if (!values.json) console.log(line);
};

function row(name: string, ours: Summary, base: Summary, baseName: string, target: number) {
  const ratio = ours.p50 / base.p50;
  log(`${name}`);
  log(`  agentbox  p50 ${fmt(ours.p50)}  p95 ${fmt(ours.p95)}  (n=${ours.n})`);
  log(`  ${baseName.padEnd(8)}  p50 ${fmt(base.p50)}  p95 ${fmt(base.p95)}`);
  log(`  ratio p50 ${ratio.toFixed(2)}x  p95 ${(ours.p95 / base.p95).toFixed(2)}x  (target <= ${target}x: ${ratio <= target ? "met" : "MISSED"})`);
  return { agentbox: ours, baseline: base, ratioP50: ratio, ratioP95: ours.p95 / base.p95, target, met: ratio <= target };
}

const server = await startServerProcess();
const results: Record<string, unknown> = {};
try {
  const client = new Agentbox({ url: server.url, apiKey: server.apiKey });
  // Warm-up: the first sandbox builds the host image skeleton; JIT warms up too.
  const warm = await client.sandboxes.create();
  for (let i = 0; i < 20; i++) await warm.exec(["true"]);
  for (let i = 0; i < 5; i++) await rawBwrap();

  log(`agentbox benchmark (${quick ? "quick" : "full"})\n`);

  if (want("a")) {
    // (a) create + first exec
    const created: Sandbox[] = [];
    const [createTimes, bwrapTimes] = await interleave(
      quick ? 15 : 40,
      async () => {
        const sb = await client.sandboxes.create();
        await sb.exec(["true"]);
        created.push(sb);
      },
      rawBwrap,
    );
    results.createAndFirstExec = row("(a) create sandbox + first exec `true`", summarize(createTimes), summarize(bwrapTimes), "raw bwrap", 3);
    await Promise.all(created.map((s) => s.delete()));

  }
  if (want("b")) {
    // (b) exec round trip
    const [execTimes, spawnTimes] = await interleave(quick ? 100 : 300, () => warm.exec(["true"]), rawSpawn);
    log("");
    results.execRoundTrip = row("(b) exec round trip of `true` (SDK over HTTP)", summarize(execTimes), summarize(spawnTimes), "raw spawn", 3);

  }
  if (want("c")) {
    // (c) idle memory
    log("");
    const runtimePid = findRuntimePid(server.dataDir);
    if (!runtimePid) throw new Error("runtime process not found");
    const runtimeBefore = rss(runtimePid);
    const holdersBefore = new Set(descendants(runtimePid));
    const idle: Sandbox[] = [];
    const started = performance.now();
    for (let i = 0; i < idleCount; i += 10) {
      idle.push(...(await Promise.all(Array.from({ length: Math.min(10, idleCount - i) }, () => client.sandboxes.create()))));
    }
    const createSeconds = (performance.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, 2000));
    const runtimeAfter = rss(runtimePid);
    const holderPids = descendants(runtimePid).filter((p) => !holdersBefore.has(p));
    const holdersPss = holderPids.reduce((sum, p) => sum + pss(p), 0);
    const cgroupMemory = sandboxCgroupMemory(idle.map((s) => s.id));
    // Conservative: holders' pages are also inside the cgroup figure, so they count twice.
    const perSandbox = (runtimeAfter + holdersPss + cgroupMemory) / idleCount;
    const perSandboxMarginal = (runtimeAfter - runtimeBefore + cgroupMemory) / idleCount;
    log(`(c) idle memory with ${idleCount} sandboxes (created in ${createSeconds.toFixed(1)} s)`);
    log(`  runtime RSS           ${mib(runtimeAfter)} (was ${mib(runtimeBefore)} with 1 sandbox)`);
    log(`  holder processes      ${holderPids.length} processes, PSS ${mib(holdersPss)}`);
    log(`  sandbox cgroups       ${mib(cgroupMemory)} charged`);
    log(`  per sandbox           ${mib(perSandbox)} = (runtime RSS + holders PSS + cgroup memory) / ${idleCount}  (target <= 3 MiB: ${perSandbox <= 3 * 2 ** 20 ? "met" : "MISSED"})`);
    log(`  per sandbox, marginal ${mib(perSandboxMarginal)} = (runtime RSS growth + cgroup memory) / ${idleCount}`);
    results.idleMemory = {
      sandboxes: idleCount,
      runtimeRssBytes: runtimeAfter,
      holderProcesses: holderPids.length,
      holdersPssBytes: holdersPss,
      cgroupMemoryBytes: cgroupMemory,
      perSandboxBytes: Math.round(perSandbox),
      perSandboxMarginalBytes: Math.round(perSandboxMarginal),
      met: perSandbox <= 3 * 2 ** 20,
    };
    for (let i = 0; i < idle.length; i += 20) await Promise.all(idle.slice(i, i + 20).map((s) => s.delete()));

  }
  if (want("d")) {
    // (d) stream throughput
    log("");
    const size = quick ? "256M" : "1G";
    const command = `head -c ${size} /dev/zero | base64`;
    const raw = await rawPipeThroughput(command);
    const viaSdk = await sdkThroughput(warm, command);
    const rawRate = raw.bytes / raw.ms / 1000;
    const sdkRate = viaSdk.bytes / viaSdk.ms / 1000;
    const tpRatio = sdkRate / rawRate;
    log(`(d) stream throughput of \`${command}\` to the SDK`);
    // A producer faster than the stream is never slowed down: past the log size (256 MiB here) the
    // oldest output is dropped and the client told so. The rate counts bytes delivered.
    log(`  agentbox  ${sdkRate.toFixed(0)} MB/s delivered (${(viaSdk.bytes / 1e6).toFixed(0)} MB in ${(viaSdk.ms / 1000).toFixed(2)} s; ${viaSdk.truncations} truncation notice(s): the producer outran the stream by more than the 256 MiB log)`);
    log(`  raw pipe  ${rawRate.toFixed(0)} MB/s (${(raw.bytes / 1e6).toFixed(0)} MB in ${(raw.ms / 1000).toFixed(2)} s)`);
    log(`  ratio ${tpRatio.toFixed(2)}x  (target >= 0.3x: ${tpRatio >= 0.3 ? "met" : "MISSED"})`);
    results.streamThroughput = { command, sdkMBps: sdkRate, rawMBps: rawRate, ratio: tpRatio, truncations: viaSdk.truncations, met: tpRatio >= 0.3 };

  }
  if (want("e")) {
    // (e) output latency
    log("");
    const latency = await firstChunkLatency(warm, quick ? 30 : 100);
    log("(e) a line written by a process, until the SDK sees it");
    log(`  p50 ${fmt(latency.p50)}  p95 ${fmt(latency.p95)}  (n=${latency.n}; target p50 <= 5 ms: ${latency.p50 <= 5 ? "met" : "MISSED"})`);
    results.outputLatency = { ...latency, met: latency.p50 <= 5 };

  }
  if (want("f")) {
    // (f) concurrent streams
    log("");
    const conc = await concurrentStreams(warm, 100, quick ? 2000 : 20000);
    log(`(f) 100 concurrent streaming processes in one sandbox`);
    log(`  ${(conc.bytes / 1e6).toFixed(1)} MB in ${(conc.ms / 1000).toFixed(2)} s; processes with lost or wrong bytes: ${conc.lostOrWrong} (target 0: ${conc.lostOrWrong === 0 ? "met" : "MISSED"})`);
    results.concurrentStreams = { ...conc, met: conc.lostOrWrong === 0 };

  }
  if (want("g")) {
    // (g) session exec round trip
    log("");
    const session = await warm.createSession();
    for (let i = 0; i < 20; i++) await session.exec("true");
    const [sessionTimes, statelessTimes] = await interleave(quick ? 100 : 300, () => session.exec("true"), () => warm.exec(["true"]));
    results.sessionExec = row("(g) session exec round trip of `true`", summarize(sessionTimes), summarize(statelessTimes), "stateless", 2);
    await session.delete();

  }
  if (want("h")) {
    // (h) keystroke echo
    log("");
    const n = quick ? 100 : 400;
    const ours = await agentboxKeystrokes(warm, n);
    const rawPty = await rawPtyKeystrokes(n);
    log("(h) keystroke echo through the terminal WebSocket (bash readline)");
    log(`  agentbox  p50 ${fmt(ours.p50)}  p95 ${fmt(ours.p95)}  (n=${ours.n}; target p50 <= 5 ms: ${ours.p50 <= 5 ? "met" : "MISSED"})`);
    log(`  raw pty   p50 ${fmt(rawPty.p50)}  p95 ${fmt(rawPty.p95)}  (local node-pty, no sandbox, no network)`);
    log(`  ratio p50 ${(ours.p50 / rawPty.p50).toFixed(2)}x`);
    results.keystrokeEcho = { agentbox: ours, rawPty, ratioP50: ours.p50 / rawPty.p50, met: ours.p50 <= 5 };

  }
  if (want("i")) {
    log("");
    const runtimePid = findRuntimePid(server.dataDir);
    if (!runtimePid) throw new Error("runtime process not found");
    const sizeMib = 256;
    const f = await filesThroughput(warm, sizeMib, server.pid, runtimePid, server.dataDir);
    const rate = (ms: number) => f.bytes / ms / 1000;
    const up = rate(f.uploadMs) / rate(f.catMs);
    const down = rate(f.downloadMs) / rate(f.catMs);
    const rssOk = f.serverRssGrowth <= 64 * 2 ** 20;
    log(`(i) a ${sizeMib} MiB file through the files API (SDK)`);
    log(`  upload    ${rate(f.uploadMs).toFixed(0)} MB/s  ratio ${up.toFixed(2)}x  (target >= 0.5x: ${up >= 0.5 ? "met" : "MISSED"})`);
    log(`  download  ${rate(f.downloadMs).toFixed(0)} MB/s  ratio ${down.toFixed(2)}x  (target >= 0.5x: ${down >= 0.5 ? "met" : "MISSED"})`);
    log(`  cat|cat   ${rate(f.catMs).toFixed(0)} MB/s  (disk to disk through a pipe, same machine)`);
    log(`  bare Node HTTP server, file to file: up ${rate(f.nodeHttpUpMs).toFixed(0)} MB/s, down ${rate(f.nodeHttpDownMs).toFixed(0)} MB/s (agentbox: ${(f.nodeHttpUpMs / f.uploadMs).toFixed(2)}x and ${(f.nodeHttpDownMs / f.downloadMs).toFixed(2)}x of it)`);
    log(`  server RSS growth ${mib(f.serverRssGrowth)} (target <= 64 MiB: ${rssOk ? "met" : "MISSED"}); runtime RSS growth ${mib(f.runtimeRssGrowth)}`);
    const big = await bigDownload(warm, server.pid, runtimePid);
    log(`  1 GiB download: ${(big.bytes / 2 ** 30).toFixed(2)} GiB in ${(big.ms / 1000).toFixed(1)} s; server RSS growth ${mib(big.serverRssGrowth)}, runtime RSS growth ${mib(big.runtimeRssGrowth)}`);
    const bigUp = await bigUpload(warm, server.pid, runtimePid);
    log(`  900 MiB upload: ${(bigUp.bytes / 2 ** 20).toFixed(0)} MiB in ${(bigUp.ms / 1000).toFixed(1)} s; server RSS growth ${mib(bigUp.serverRssGrowth)}, runtime RSS growth ${mib(bigUp.runtimeRssGrowth)}`);
    const w = await watchLatency(warm, server.dataDir, quick ? 20 : 100);
    const [watchOurs, watchBase] = [summarize(w.ours), summarize(w.baseline)];
    const watchOk = watchOurs.p95 <= 200;
    log(`  watch: command start to its create event  p50 ${fmt(watchOurs.p50)}  p95 ${fmt(watchOurs.p95)}  (n=${watchOurs.n})  (target p95 <= 200 ms: ${watchOk ? "met" : "MISSED"})`);
    log(`    host fs.watch of a spawned sh  p50 ${fmt(watchBase.p50)}  p95 ${fmt(watchBase.p95)}  (ratio p50 ${(watchOurs.p50 / watchBase.p50).toFixed(2)}x)`);
    const watchResult = { agentbox: watchOurs, baseline: watchBase, met: watchOk };
    results.files = { ...f, uploadRatio: up, downloadRatio: down, bigDownload: big, bigUpload: bigUp, watch: watchResult, met: up >= 0.5 && down >= 0.5 && rssOk && watchOk };
  }

  if (want("j")) {
    log("");
    const claims = await poolClaims(client, quick ? 20 : 60);
    const claim = summarize(claims.claim);
    const health = summarize(claims.health);
    log("(j) templates, pools, pause/resume (at the API, SDK over HTTP)");
    log(`  claim from a pool  p50 ${fmt(claim.p50)}  p95 ${fmt(claim.p95)}  (n=${claim.n}; GET /healthz p50 ${fmt(health.p50)}, ratio ${(claim.p50 / health.p50).toFixed(2)}x)  (target p50 <= 2 ms: ${claim.p50 <= 2 ? "met" : "MISSED"})`);
    const creates = await ociCreates(client, quick ? 8 : 20);
    const oci = summarize(creates.oci);
    const host = summarize(creates.host);
    const ratio = oci.p50 / host.p50;
    log(`  create from a 3-layer OCI template  p50 ${fmt(oci.p50)}  p95 ${fmt(oci.p95)}  vs from host p50 ${fmt(host.p50)}  ratio ${ratio.toFixed(2)}x  (target <= 2x: ${ratio <= 2 ? "met" : "MISSED"}; import took ${fmt(creates.importMs)})`);
    const pr = await pauseResume(client, quick ? 20 : 60);
    const p = summarize(pr.pauseResume);
    const h2 = summarize(pr.health);
    log(`  pause + resume, 50 processes  p50 ${fmt(p.p50)}  p95 ${fmt(p.p95)}  (two GET /healthz p50 ${fmt(h2.p50)}, ratio ${(p.p50 / h2.p50).toFixed(2)}x)  (target p50 <= 20 ms: ${p.p50 <= 20 ? "met" : "MISSED"})`);
    results.lifecycle = {
      poolClaim: { agentbox: claim, health, met: claim.p50 <= 2 },
      ociCreate: { oci, host, ratioP50: ratio, importMs: creates.importMs, met: ratio <= 2 },
      pauseResume: { agentbox: p, health: h2, met: p.p50 <= 20 },
    };
  }

  if (want("k")) {
    log("");
    const c = await codeBench(warm, quick ? 10 : 30);
    const create = summarize(c.create);
    const run = summarize(c.run);
    const py = summarize(c.python);
    const cb = summarize(c.callbacks1000Ms);
    log("(k) code contexts (Python, SDK over HTTP)");
    log(`  create a context (warm pool)  p50 ${fmt(create.p50)}  p95 ${fmt(create.p95)}  (target p50 <= 20 ms: ${create.p50 <= 20 ? "met" : "MISSED"})`);
    log(`  run \`1+1\` on a warm context  p50 ${fmt(run.p50)}  p95 ${fmt(run.p95)}  (target p50 <= 3 ms: ${run.p50 <= 3 ? "met" : "MISSED"})`);
    log(`  python3 -c '1+1' spawn      p50 ${fmt(py.p50)}  (run is ${(run.p50 / py.p50).toFixed(2)}x of it; a new context ${(create.p50 / py.p50).toFixed(2)}x)`);
    const rt = summarize(c.rawRoundTripUs);
    log(`  1,000 host function calls in one run  p50 ${fmt(cb.p50)}  (target <= 300 ms: ${cb.p50 <= 300 ? "met" : "MISSED"})   untimed first round: ${fmt(c.callbacksColdMs)}`);
    log(`    a call is ${(cb.p50 / rt.p50).toFixed(2)}x a raw Node-to-Node loopback round trip (p50 ${rt.p50.toFixed(1)} us, measured right after); its path crosses two: SDK and runtime, runtime and worker`);
    results.code = { create, run, python: py, callbacks1000: cb, callbacks1000Cold: c.callbacksColdMs, rawRoundTripUs: rt, met: create.p50 <= 20 && run.p50 <= 3 && cb.p50 <= 300 };
  }

  if (want("l")) {
    log("");
    const e = await embeddedBench(quick ? 5 : 15);
    log("(l) embedded Python: agentbox (Pyodide, a locked-down child process each) vs @pydantic/monty, p50");
    log(`  ${"".padEnd(34)} ${"agentbox".padStart(10)} ${"monty".padStart(10)}  ratio`);
    const targets: Record<string, (ours: number, theirs: number) => boolean> = {
      "checkout + run `1 + 1`": (o) => o <= 0.5,
      "1,000 host function calls": (o) => o <= 25,
      "fib(25)": (o, t) => o < t,
      "sum(i*i for i in range(10**6))": (o, t) => o <= 1.5 * t,
    };
    const met: Record<string, boolean> = {};
    for (const r of e.rows) {
      const ok = targets[r.name]!(r.agentbox.p50, r.monty.p50);
      met[r.name] = ok;
      log(`  ${r.name.padEnd(34)} ${fmt(r.agentbox.p50).padStart(10)} ${fmt(r.monty.p50).padStart(10)}  ${(r.agentbox.p50 / r.monty.p50).toFixed(2)}x  (${ok ? "met" : "MISSED"})`);
    }
    log(`  memory per warm interpreter: agentbox ${mib(e.agentboxRssPerInterpreter)} (child process RSS), monty ${mib(e.montyRssPerInstance)} (RSS growth per parsed instance)`);
    log(`  a loop that swallows the interrupt stops ${e.killOvershootMs.map((x) => x.toFixed(0)).join(", ")} ms after its limit (target <= 50 ms)`);
    results.embedded = { ...e, met };
  }
  if (want("m")) {
    log("");
    const n = await networkBench(client, quick ? 2 : 5, quick ? 100 : 300);
    log("(m) egress through the allowlist proxy: one client program, in a sandbox via its proxy vs on the host directly");
    log(`  direct from the host          GET p50 ${fmt(n.directGet.p50)}  p95 ${fmt(n.directGet.p95)}   100 MiB at ${n.directMBps.toFixed(0)} MB/s`);
    for (const [name, m] of [["plain HTTP (absolute-form)", n.plainHttp], ["CONNECT tunnel (HTTPS-style)", n.tunnel]] as const) {
      log(`  ${name.padEnd(29)} GET p50 ${fmt(m.get.p50)}  p95 ${fmt(m.get.p95)}   100 MiB at ${m.MBps.toFixed(0)} MB/s`);
      log(`    GET ratio ${m.getRatio.toFixed(2)}x (target <= 2x: ${m.met.get ? "met" : "MISSED"})   throughput ratio ${m.throughputRatio.toFixed(2)}x (target >= 0.5x: ${m.met.throughput ? "met" : "MISSED"})   untimed first round: GET ${m.coldGetRatio.toFixed(2)}x`);
    }
    results.network = n;
  }

  await warm.delete();
} finally {
  await server.stop();
}
if (values.json) console.log(JSON.stringify(results, null, 2));
