/**
 * Process streaming benchmarks (issue: replayable streaming output):
 *   (d) throughput of `head -c SIZE /dev/zero | base64` from a sandbox to the SDK,
 *       against the same command read by Node from a raw pipe;
 *   (e) latency from a process writing a line to the SDK seeing it;
 *   (f) 100 concurrent streaming processes in one sandbox, checked byte for byte.
 */
import { spawn } from "node:child_process";
import type { Sandbox } from "@agentbox/sdk";
import { summarize, type Summary } from "./stats.js";

/** Wall-clock milliseconds with sub-millisecond precision (comparable with `date +%s%N`). */
const nowMs = () => performance.timeOrigin + performance.now();

export async function rawPipeThroughput(command: string): Promise<{ bytes: number; ms: number }> {
  const t = performance.now();
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], { stdio: ["ignore", "pipe", "ignore"] });
    child.stdout.setEncoding("utf8"); // the SDK hands out text too
    child.stdout.on("data", (d: string) => (bytes += d.length));
    child.once("error", reject);
    child.once("close", () => resolve());
  });
  return { bytes, ms: performance.now() - t };
}

export async function sdkThroughput(sandbox: Sandbox, command: string): Promise<{ bytes: number; ms: number; truncations: number }> {
  const t = performance.now();
  let truncations = 0;
  let bytes = 0;
  const proc = await sandbox.startProcess(command, {
    maxLogBytes: 256 * 1024 * 1024,
    keepOutput: false,
    onStdout: (data) => (bytes += data.length),
  });
  proc.on("truncated", () => truncations++);
  const result = await proc.wait();
  if (result.exitCode !== 0) throw new Error(`throughput command exited ${result.exitCode}`);
  return { bytes, ms: performance.now() - t, truncations };
}

/** Each line the process prints is its own write time; the SDK notes when it sees it. */
export async function firstChunkLatency(sandbox: Sandbox, lines: number): Promise<Summary> {
  const latencies: number[] = [];
  let pending = "";
  const proc = await sandbox.startProcess(`for i in $(seq 1 ${lines}); do sleep 0.03; date +%s%N; done`, {
    onStdout: (data) => {
      const seen = nowMs();
      pending += data;
      const parts = pending.split("\n");
      pending = parts.pop() ?? "";
      for (const p of parts) latencies.push(seen - Number(p) / 1e6);
    },
  });
  await proc.wait();
  return summarize(latencies);
}

export async function concurrentStreams(sandbox: Sandbox, count: number, linesEach: number): Promise<{ ms: number; lostOrWrong: number; bytes: number }> {
  const expected = Array.from({ length: linesEach }, (_, i) => `${i + 1}\n`).join("");
  const t = performance.now();
  const handles = await Promise.all(
    Array.from({ length: count }, (_, i) => sandbox.startProcess(`seq 1 ${linesEach}`, { id: `bench-${Date.now()}-${i}` })),
  );
  const results = await Promise.all(handles.map((h) => h.wait()));
  const lostOrWrong = results.filter((r) => r.stdout !== expected).length;
  return { ms: performance.now() - t, lostOrWrong, bytes: results.reduce((n, r) => n + r.stdout.length, 0) };
}
