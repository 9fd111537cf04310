/**
 * A worker as a plain child process of this one, with no sandbox: for the
 * remote worker host (which runs where isolation is already provided) and
 * for tests of the protocol. The runtime starts workers inside sandboxes.
 */
import { spawn } from "node:child_process";
import { workerLaunch, type CodeLanguage } from "./languages.js";
import { SubprocessTransport } from "./transports.js";
import { Worker } from "./worker.js";

export interface LocalWorkerOptions {
  programs?: { python?: string; node?: string };
  env?: Record<string, string>;
  cwd?: string;
  /** Configure it before returning (default true). */
  configure?: boolean;
}

export async function startLocalWorker(language: CodeLanguage, options: LocalWorkerOptions = {}): Promise<Worker> {
  const launch = workerLaunch(language, options.programs);
  const child = spawn(launch.argv[0]!, launch.argv.slice(1), {
    stdio: ["pipe", "pipe", "pipe"],
    ...(options.env ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const transport = new SubprocessTransport({ stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exited, kill: (s) => child.kill(s) }, launch.source);
  const worker = new Worker(transport);
  if (options.configure !== false) await worker.configure();
  return worker;
}
