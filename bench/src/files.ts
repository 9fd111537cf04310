/**
 * Files throughput: a file uploaded to and downloaded from a sandbox through
 * the SDK, against `cat src | cat > dst` on this machine (disk to disk
 * through a pipe), with the server's and runtime's RSS sampled throughout.
 */
import { spawn } from "node:child_process";
import { createReadStream, createWriteStream, rmSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import type { Sandbox } from "@agentbox/sdk";
import { rss } from "./memory.js";

export interface FilesResult {
  bytes: number;
  catMs: number;
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

export async function filesThroughput(sb: Sandbox, mib: number, serverPid: number, runtimePid: number, dir: string): Promise<FilesResult> {
  const src = `${dir}/bench-src.bin`;
  const dst = `${dir}/bench-dst.bin`;
  const back = `${dir}/bench-back.bin`;
  await sh(`head -c ${mib}M /dev/urandom > ${src}`);
  const bytes = mib * 1024 * 1024;
  // Warm the page cache for both sides alike.
  await sh(`cat ${src} > /dev/null`);
  let t = performance.now();
  await sh(`cat ${src} | cat > ${dst}`);
  const catMs = performance.now() - t;

  const serverBefore = rss(serverPid);
  const runtimeBefore = rss(runtimePid);
  let serverMax = serverBefore;
  let runtimeMax = runtimeBefore;
  const sampler = setInterval(() => {
    serverMax = Math.max(serverMax, rss(serverPid));
    runtimeMax = Math.max(runtimeMax, rss(runtimePid));
  }, 20);
  try {
    t = performance.now();
    await sb.files.write("/workspace/bench.bin", createReadStream(src));
    const uploadMs = performance.now() - t;
    t = performance.now();
    await pipeline(await sb.files.read("/workspace/bench.bin", { format: "stream" }), createWriteStream(back));
    const downloadMs = performance.now() - t;
    return { bytes, catMs, uploadMs, downloadMs, serverRssGrowth: serverMax - serverBefore, runtimeRssGrowth: runtimeMax - runtimeBefore };
  } finally {
    clearInterval(sampler);
    for (const f of [src, dst, back]) rmSync(f, { force: true });
    await sb.files.remove("/workspace/bench.bin").catch(() => undefined);
  }
}
