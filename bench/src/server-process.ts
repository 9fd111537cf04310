/** Starts `agentbox serve` as its own process (as users run it) on a free port with a fresh data dir. */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../../packages/cli/dist/src/main.js", import.meta.url));

export interface ServerProcess {
  /** The server's own process (the runtime is another one). */
  pid: number;
  url: string;
  apiKey: string;
  dataDir: string;
  stop(): Promise<void>;
}

export async function startServerProcess(): Promise<ServerProcess> {
  const dataDir = mkdtempSync(join(tmpdir(), "agentbox-bench-"));
  const child: ChildProcess = spawn(process.execPath, [CLI, "serve", "--port", "0", "--data-dir", dataDir, "--no-keep-runtime", "--image-root", tmpdir(), "--json"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf("\n");
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  const { url, apiKey } = JSON.parse(line) as { url: string; apiKey: string };
  return {
    pid: child.pid!,
    url,
    apiKey,
    dataDir,
    stop: async () => {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
