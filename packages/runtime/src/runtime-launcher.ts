/**
 * Finding or starting the runtime of a data directory. The runtime runs
 * detached (its own session), so stopping the server — SIGTERM or Ctrl-C —
 * leaves it and its sandboxes running for the next server to find.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, openSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AgentboxError } from "@agentbox/protocol";
import { RuntimeClient } from "./runtime-client.js";

const MAX_SOCKET_PATH = 100; // sun_path is 108 bytes

export function runtimeSocketPath(dataDir: string): string {
  const inDataDir = join(resolve(dataDir), "runtime.sock");
  if (inDataDir.length <= MAX_SOCKET_PATH) return inDataDir;
  const hash = createHash("sha256").update(resolve(dataDir)).digest("hex").slice(0, 16);
  return `/tmp/agentbox-${hash}.sock`;
}

export const RUNTIME_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

/** Start a runtime process for `dataDir` that outlives its parent. */
export function spawnRuntime(dataDir: string): number {
  mkdirSync(dataDir, { recursive: true, mode: 0o711 });
  const log = openSync(join(dataDir, "runtime.log"), "a", 0o600);
  const child = spawn(process.execPath, [RUNTIME_MAIN, "--data-dir", resolve(dataDir), "--socket", runtimeSocketPath(dataDir)], {
    detached: true,
    stdio: ["ignore", log, log],
    // The runtime and its sandboxes get no secret from our environment.
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NODE_ENV: process.env.NODE_ENV ?? "production" },
  });
  child.unref();
  return child.pid ?? 0;
}

function isAbsent(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOENT" || code === "ECONNREFUSED";
}

/** Connect to the runtime of `dataDir`, starting one if none answers. */
export async function connectOrStartRuntime(dataDir: string, timeoutMs = 15_000): Promise<RuntimeClient> {
  const socket = runtimeSocketPath(dataDir);
  try {
    return await RuntimeClient.connect(socket);
  } catch (err) {
    if (!isAbsent(err)) throw err;
  }
  spawnRuntime(dataDir);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await RuntimeClient.connect(socket);
    } catch (err) {
      if (!isAbsent(err)) throw err;
      if (Date.now() > deadline) {
        throw new AgentboxError("RUNTIME_UNAVAILABLE", `the runtime did not start within ${timeoutMs} ms; see ${join(dataDir, "runtime.log")}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
