import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { FrameDecoder, encodeFrame } from "@agentbox/protocol";
import { runtimeSocketPath } from "@agentbox/runtime";
import { startServer } from "../src/index.js";
import { startHarness } from "./harness.js";

function runtimePidOf(dataDir: string): number {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (argv.some((a) => a.endsWith("runtime/dist/src/main.js")) && argv.includes(dataDir)) return Number(name);
    } catch {
      /* exited */
    }
  }
  throw new Error(`no runtime for ${dataDir}`);
}

/** Whether `pid` still runs (a zombie has closed its files: not running). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

describe("server and runtime", () => {
  test("a runtime speaking another protocol version is refused with VERSION_MISMATCH", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "agentbox-vm-"));
    // A stand-in runtime from the future: it answers hello with version 99.
    const fake = createServer((socket) => {
      const decoder = new FrameDecoder();
      socket.on("data", (d) => {
        for (const m of decoder.push(d)) if ((m as { type?: string }).type === "hello") socket.write(encodeFrame({ type: "hello", protocolVersion: 99 }));
      });
    });
    await new Promise<void>((r) => fake.listen(runtimeSocketPath(dataDir), r));
    try {
      await assert.rejects(startServer({ port: 0, dataDir }), (err: any) => {
        assert.equal(err.code, "VERSION_MISMATCH");
        return true;
      });
    } finally {
      fake.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("when the runtime dies its sandboxes are reported failed and a new runtime takes over", async () => {
    const h = await startHarness();
    try {
      const s = await h.createSandbox();
      const before = runtimePidOf(h.dataDir);
      process.kill(before, "SIGKILL");
      // Wait until it is dead (its socket closed), however long that takes under load, then give the
      // server a moment to see its connection close.
      for (let i = 0; i < 1000 && isAlive(before); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(isAlive(before), false);
      await new Promise((r) => setTimeout(r, 300));
      // The next request reconnects (starting a new runtime) and reconciles the store.
      const fresh = await h.createSandbox();
      assert.equal(fresh.status, "ready");
      assert.notEqual(runtimePidOf(h.dataDir), before);
      const lost = await h.api("GET", `/v1/sandboxes/${s.id}`);
      assert.equal(lost.body.status, "failed");
      assert.equal(lost.body.statusMessage, "lost: the runtime holding this sandbox stopped");
      const exec = await h.api("POST", `/v1/sandboxes/${s.id}/exec`, { command: "true" });
      assert.equal(exec.status, 409);
      assert.equal(exec.body.error.code, "SANDBOX_NOT_READY");
      // The dead runtime's holders are gone too (bwrap dies with its parent).
      const holders = readdirSync("/proc").filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, "utf8").startsWith("sleep\0infinity");
        } catch {
          return false;
        }
      });
      assert.equal((await h.exec(fresh.id, { command: "echo ok" })).stdout, "ok\n");
      assert.ok(holders.length >= 1);
    } finally {
      await h.close();
    }
  });
});
