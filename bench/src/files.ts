/**
 * Files throughput: a file uploaded to and downloaded from a sandbox through
 * the SDK, against `cat src | cat > dst` on this machine (disk to disk
 * through a pipe), with the server's and runtime's RSS sampled throughout.
 */
import { spawn } from "node:child_process";
import { request as httpRequest } from "node:http";
import { createReadStream, createWriteStream, rmSync, watch } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Sandbox } from "@agentbox/sdk";
import { rss } from "./memory.js";

/** The server's and runtime's RSS sampled every 20 ms: growth = peak - at start. */
function sampleRss(serverPid: number, runtimePid: number): { growth(): { serverRssGrowth: number; runtimeRssGrowth: number }; stop(): void } {
  const before = [rss(serverPid), rss(runtimePid)] as const;
  const peak = [before[0], before[1]];
  const timer = setInterval(() => {
    peak[0] = Math.max(peak[0]!, rss(serverPid));
    peak[1] = Math.max(peak[1]!, rss(runtimePid));
  }, 20);
  return {
    growth: () => ({ serverRssGrowth: peak[0]! - before[0], runtimeRssGrowth: peak[1]! - before[1] }),
    stop: () => clearInterval(timer),
  };
}

/** A Node HTTP server in a child process that stores a PUT body in `file` and serves it back on GET. */
async function bareHttpServer(file: string): Promise<{ upload(src: string): Promise<void>; download(dst: string): Promise<void>; close(): void }> {
  const code = `
    const http = require("node:http"); const fs = require("node:fs"); const { pipeline } = require("node:stream/promises");
    const srv = http.createServer(async (req, res) => {
      if (req.method === "PUT") { await pipeline(req, fs.createWriteStream(${JSON.stringify(file)})); res.end("{}"); }
      else { res.writeHead(200, { "content-length": fs.statSync(${JSON.stringify(file)}).size }); await pipeline(fs.createReadStream(${JSON.stringify(file)}, { highWaterMark: 1 << 20 }), res); }
    }).listen(0, "127.0.0.1", () => console.log(srv.address().port));`;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve) => child.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))));
  const base = `http://127.0.0.1:${port}/f`;
  return {
    upload: (src) =>
      new Promise((resolve, reject) => {
        const req = httpRequest(base, { method: "PUT" }, (res) => res.resume().on("end", () => resolve()));
        req.on("error", reject);
        createReadStream(src, { highWaterMark: 1 << 20 }).pipe(req);
      }),
    download: (dst) =>
      new Promise((resolve, reject) => {
        httpRequest(base, (res) => void pipeline(res, createWriteStream(dst)).then(resolve, reject)).on("error", reject).end();
      }),
    close: () => child.kill(),
  };
}

export interface FilesResult {
  bytes: number;
  catMs: number;
  /** A bare Node HTTP server on loopback, file to file, no sandbox: the floor of any Node HTTP file API here. */
  nodeHttpUpMs: number;
  nodeHttpDownMs: number;
  uploadMs: number;
  downloadMs: number;
  serverRssGrowth: number;
  runtimeRssGrowth: number;
}

function sh(command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", command], { stdio: "ignore" });
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${command} exited ${code}`))));
  });
}

export async function filesThroughput(sb: Sandbox, mib: number, serverPid: number, runtimePid: number, dir: string, rounds = 3): Promise<FilesResult> {
  const src = `${dir}/bench-src.bin`;
  const dst = `${dir}/bench-dst.bin`;
  const back = `${dir}/bench-back.bin`;
  await sh(`head -c ${mib}M /dev/urandom > ${src}`);
  const bytes = mib * 1024 * 1024;
  // Warm the page cache for both sides alike.
  await sh(`cat ${src} > /dev/null`);
  const sampler = sampleRss(serverPid, runtimePid);
  // Rounds of baseline, upload and download interleaved, so the disk's moods hit all three.
  const cat: number[] = [];
  const up: number[] = [];
  const down: number[] = [];
  const httpUp: number[] = [];
  const httpDown: number[] = [];
  const bare = await bareHttpServer(dst);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  try {
    for (let round = 0; round < rounds; round++) {
      let t = performance.now();
      await sh(`cat ${src} | cat > ${dst}`);
      cat.push(performance.now() - t);
      rmSync(dst, { force: true });
      t = performance.now();
      await sb.files.uploadFile(src, "/workspace/bench.bin");
      up.push(performance.now() - t);
      t = performance.now();
      await sb.files.downloadFile("/workspace/bench.bin", back);
      down.push(performance.now() - t);
      rmSync(back, { force: true });
      t = performance.now();
      await bare.upload(src);
      httpUp.push(performance.now() - t);
      t = performance.now();
      await bare.download(back);
      httpDown.push(performance.now() - t);
      rmSync(back, { force: true });
    }
    return {
      bytes,
      catMs: median(cat),
      nodeHttpUpMs: median(httpUp),
      nodeHttpDownMs: median(httpDown),
      uploadMs: median(up),
      downloadMs: median(down),
      ...sampler.growth(),
    };
  } finally {
    bare.close();
    sampler.stop();
    for (const f of [src, dst, back]) rmSync(f, { force: true });
    await sb.files.remove("/workspace/bench.bin").catch(() => undefined);
  }
}

/** A 900 MiB upload (what fits the default 1 GiB disk) with both processes' RSS sampled. */
export async function bigUpload(sb: Sandbox, serverPid: number, runtimePid: number): Promise<{ bytes: number; ms: number; serverRssGrowth: number; runtimeRssGrowth: number }> {
  const sampler = sampleRss(serverPid, runtimePid);
  const total = 900 * 2 ** 20;
  const chunk = Buffer.alloc(2 ** 20, 0x61);
  async function* zeros() {
    for (let sent = 0; sent < total; sent += chunk.length) yield chunk;
  }
  try {
    const t = performance.now();
    const r = await sb.files.write("/workspace/big-upload.bin", Readable.from(zeros()));
    return { bytes: r.size, ms: performance.now() - t, ...sampler.growth() };
  } finally {
    sampler.stop();
    await sb.files.remove("/workspace/big-upload.bin").catch(() => undefined);
  }
}

/** A 1 GiB download (a sparse file: the sandbox's disk holds 1 GiB) with both processes' RSS sampled. */
export async function bigDownload(sb: Sandbox, serverPid: number, runtimePid: number): Promise<{ bytes: number; ms: number; serverRssGrowth: number; runtimeRssGrowth: number }> {
  await sb.exec("truncate -s 1G /workspace/sparse-1g.bin");
  const sampler = sampleRss(serverPid, runtimePid);
  try {
    const t = performance.now();
    let bytes = 0;
    for await (const chunk of await sb.files.read("/workspace/sparse-1g.bin", { format: "stream" })) bytes += (chunk as Buffer).length;
    return { bytes, ms: performance.now() - t, ...sampler.growth() };
  } finally {
    sampler.stop();
    await sb.files.remove("/workspace/sparse-1g.bin").catch(() => undefined);
  }
}

/**
 * Watch latency: from starting a command that creates a file to holding its `create` event
 * (the event's arrival time, whether or not the command has returned by then).
 * Ours: `sb.exec` writes under a watched sandbox directory (the SDK's watch WebSocket).
 * Baseline: a spawned `sh` writes under a host directory watched with `fs.watch` in this process.
 */
export async function watchLatency(sb: Sandbox, hostDir: string, n: number): Promise<{ ours: number[]; baseline: number[] }> {
  const waiters = new Map<string, (at: number) => void>();
  const arrived = (name: string) => waiters.get(name)?.(performance.now());
  const eventFor = (name: string) => new Promise<number>((resolve) => waiters.set(name, resolve));
  await sb.exec("mkdir -p /workspace/watch-bench");
  const watcher = await sb.files.watch("/workspace/watch-bench", (e) => {
    if (e.type === "create") arrived(e.path.slice(e.path.lastIndexOf("/") + 1));
  });
  const dir = `${hostDir}/watch-bench`;
  await sh(`mkdir -p ${dir}`);
  const hostWatcher = watch(dir, (_type, name) => {
    if (name) arrived(String(name));
  });
  const ours: number[] = [];
  const baseline: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      let name = `a${i}`;
      let seen = eventFor(name);
      let t = performance.now();
      const [, oursAt] = await Promise.all([sb.exec(`echo x > /workspace/watch-bench/${name}`), seen]);
      ours.push(oursAt - t);
      name = `b${i}`;
      seen = eventFor(name);
      t = performance.now();
      const [, baseAt] = await Promise.all([sh(`echo x > ${dir}/${name}`), seen]);
      baseline.push(baseAt - t);
    }
    return { ours, baseline };
  } finally {
    watcher.close();
    hostWatcher.close();
    rmSync(dir, { recursive: true, force: true });
    await sb.exec("rm -rf /workspace/watch-bench").catch(() => undefined);
  }
}
