/**
 * Stateless exec: run one command in a sandbox, collect its output (capped),
 * enforce its timeout, and kill everything it left behind when it returns.
 */
import { posix } from "node:path";
import { DEFAULT_OUTPUT_CAP_BYTES, type ExecRequest, type ExecResult, type ExitReason } from "@agentbox/protocol";
import type { LocalSandbox } from "@agentbox/isolation";
import { CappedBuffer } from "./capped-buffer.js";

export interface ExecContext {
  sandbox: LocalSandbox;
  /** The sandbox's own env (from create). */
  env: Record<string, string>;
  defaultCwd: string;
}

export function resolveCwd(cwd: string | undefined, defaultCwd: string): string {
  if (cwd === undefined) return defaultCwd;
  return posix.resolve(defaultCwd, cwd);
}

export async function runExec(ctx: ExecContext, request: ExecRequest): Promise<ExecResult> {
  const started = performance.now();
  const argv = request.argv ?? ["/bin/sh", "-c", request.command!];
  const cwd = resolveCwd(request.cwd, ctx.defaultCwd);
  const env = { ...ctx.sandbox.baseEnv, ...ctx.env, ...request.env };
  const group = ctx.sandbox.acquireGroup();
  const oomBefore = group.oomKills();
  const cap = request.maxOutputBytes ?? DEFAULT_OUTPUT_CAP_BYTES;
  const stdout = new CappedBuffer(cap);
  const stderr = new CappedBuffer(cap);
  const child = await ctx.sandbox.spawn({ argv, cwd, env }, group).catch(async (err: Error) => {
    await ctx.sandbox.releaseGroup(group);
    throw err;
  });
  child.stdout.on("data", (d: Buffer) => stdout.push(d));
  child.stderr.on("data", (d: Buffer) => stderr.push(d));
  const stdin = child.stdin!;
  stdin.on("error", () => undefined); // the command may exit without reading stdin
  if (request.stdin !== undefined) stdin.end(request.stdin);
  else if (request.stdinBase64 !== undefined) stdin.end(Buffer.from(request.stdinBase64, "base64"));
  else stdin.end();

  let reason: ExitReason | undefined;
  const timer =
    request.timeoutMs !== undefined
      ? setTimeout(() => {
          reason = "timeout";
          void group.kill();
        }, request.timeoutMs)
      : undefined;

  const { code, signal } = await child.exited;
  if (timer) clearTimeout(timer);
  // Our stdin end also reads (see spawner.ts): drop whatever the command never read.
  stdin.destroy();
  const oomKilled = group.oomKills() > oomBefore;
  // Background children die with the call; then their pipe ends close too.
  await ctx.sandbox.releaseGroup(group);
  await Promise.all([child.stdout, child.stderr].map((s) => (s.closed ? undefined : new Promise((r) => s.once("close", r)))));

  // A shell may survive the OOM kill of its child and exit 137 itself: still an OOM.
  if (reason === undefined && oomKilled) reason = "oom";
  else if (reason === undefined && signal === "SIGKILL") reason = "killed";
  const result: ExecResult = {
    stdout: stdout.text(),
    stderr: stderr.text(),
    exitCode: signal ? null : code,
    truncated: { stdout: stdout.truncated, stderr: stderr.truncated },
    durationMs: Math.round((performance.now() - started) * 100) / 100,
  };
  if (signal) result.signal = signal;
  if (reason) result.reason = reason;
  return result;
}
