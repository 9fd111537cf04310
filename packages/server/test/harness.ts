/**
 * Test harness: a real server on a loopback port with its own data dir and
 * runtime, and a small fetch helper. Nothing is mocked.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type RunningServer } from "../src/index.js";

export interface Harness {
  server: RunningServer;
  dataDir: string;
  api<T = any>(method: string, path: string, body?: unknown, opts?: { key?: string | null; raw?: string }): Promise<{ status: number; body: T }>;
  createSandbox(body?: Record<string, unknown>): Promise<any>;
  exec(id: string, body: Record<string, unknown>): Promise<any>;
  /** Stop the server; with `keepRuntime` false (default) the runtime and its sandboxes go too. */
  close(): Promise<void>;
}

/**
 * Remove a data directory after its server closed. A runtime told to stop answers at once and
 * finishes removing its sandboxes (and preparing layers it had started) afterwards: try again
 * until it is done.
 */
export async function removeDataDir(dir: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      rmSync(dir, { recursive: true, force: true });
      return;
    } catch (error) {
      if (attempt >= 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

export async function startHarness(
  opts: {
    dataDir?: string;
    keepRuntime?: boolean;
    reaperIntervalMs?: number;
    /** Port to listen on (default 0: a free one); give the port of a closed harness to come back at the same URL. */
    port?: number;
    pingIntervalMs?: number;
    handOffCodeSessions?: boolean;
    /** Host directories templates may import images from (default: the system's temp dir, where tests build them). */
    imageRoots?: string[];
  } = {},
): Promise<Harness> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "agentbox-test-"));
  const server = await startServer({
    port: opts.port ?? 0,
    dataDir,
    keepRuntime: opts.keepRuntime ?? false,
    reaperIntervalMs: opts.reaperIntervalMs ?? 200,
    imageRoots: opts.imageRoots ?? [tmpdir()],
    ...(opts.pingIntervalMs !== undefined ? { pingIntervalMs: opts.pingIntervalMs } : {}),
    ...(opts.handOffCodeSessions !== undefined ? { handOffCodeSessions: opts.handOffCodeSessions } : {}),
  });
  const api: Harness["api"] = async (method, path, body, o = {}) => {
    const headers: Record<string, string> = {};
    const key = o.key === undefined ? server.apiKey : o.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    let payload: string | undefined;
    if (o.raw !== undefined) payload = o.raw;
    else if (body !== undefined) payload = JSON.stringify(body);
    if (payload !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(server.url + path, { method, headers, body: payload });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON (e.g. /metrics) */
    }
    return { status: res.status, body: parsed as any };
  };
  return {
    server,
    dataDir,
    api,
    async createSandbox(body = {}) {
      const res = await api("POST", "/v1/sandboxes", body);
      if (res.status !== 201) throw new Error(`create failed: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    },
    async exec(id, body) {
      const res = await api("POST", `/v1/sandboxes/${id}/exec`, body);
      if (res.status !== 200) throw new Error(`exec failed: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    },
    async close() {
      await server.close();
      if (!opts.dataDir && !(opts.keepRuntime ?? false)) await removeDataDir(dataDir);
    },
  };
}
