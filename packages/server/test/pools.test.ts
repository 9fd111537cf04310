/**
 * Warm pools: fill, claim (with claim-time env), refill, scale down, back
 * off on a failing template, and survive a server restart.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { removeDataDir, startHarness, type Harness } from "./harness.js";

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("pools", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agentbox-pools-"));
  let h: Harness;
  after(async () => {
    await h?.close();
    await removeDataDir(dataDir);
  });

  const pool = async (name: string) => (await h.api("GET", `/v1/pools/${name}`)).body;
  const readyCount = (name: string, n: number) => until(`${name} to have ${n} ready`, async () => {
    const p = await pool(name);
    return p.ready === n && p.provisioning === 0 ? p : undefined;
  });

  test("a pool fills, hands sandboxes over at once and refills", async () => {
    // The runtime outlives this first server (see the restart test).
    h = await startHarness({ dataDir, keepRuntime: true });
    assert.equal((await h.api("POST", "/v1/templates", { name: "pooled", env: { FROM: "template" } })).status, 201);
    const created = await h.api("POST", "/v1/pools", { name: "warm", template: "pooled", replicas: 2 });
    assert.equal(created.status, 201);
    assert.equal(created.body.replicas, 2);
    await readyCount("warm", 2);
    // Idle sandboxes are the pool's: not in the plain list.
    assert.deepEqual((await h.api("GET", "/v1/sandboxes")).body.sandboxes, []);
    assert.equal((await h.api("GET", "/v1/sandboxes?pool=warm")).body.sandboxes.length, 2);

    const claimed = await h.api("POST", "/v1/sandboxes", { pool: "warm", env: { CLAIM: "yes" }, metadata: { who: "test" }, timeoutSeconds: 300 });
    assert.equal(claimed.status, 201);
    const sb = claimed.body;
    assert.equal(sb.status, "ready");
    assert.equal(sb.pool, "warm");
    assert.equal(sb.template, "pooled");
    assert.deepEqual(sb.metadata, { who: "test" });
    assert.equal(Date.parse(sb.expiresAt) - Date.now() <= 300_000, true);
    assert.ok(Date.parse(sb.expiresAt) - Date.now() > 290_000);
    const env = await h.exec(sb.id, { command: 'echo "$FROM $CLAIM"' });
    assert.equal(env.stdout, "template yes\n");
    assert.deepEqual((await h.api("GET", "/v1/sandboxes")).body.sandboxes.map((s: any) => s.id), [sb.id]);
    // The pool makes another one in the background.
    await readyCount("warm", 2);
    const mismatch = await h.api("POST", "/v1/sandboxes", { pool: "warm", template: "default" });
    assert.equal(mismatch.status, 400);
    assert.match(mismatch.body.error.message, /^template: pool warm makes sandboxes of template pooled/);
    assert.equal((await h.api("POST", "/v1/sandboxes", { pool: "nope" })).status, 404);
  });

  test("scaling up and down", async () => {
    assert.equal((await h.api("PATCH", "/v1/pools/warm", { replicas: 3 })).body.replicas, 3);
    await readyCount("warm", 3);
    assert.equal((await h.api("PATCH", "/v1/pools/warm", { replicas: 1 })).status, 200);
    await readyCount("warm", 1);
    const idle = (await h.api("GET", "/v1/sandboxes?pool=warm")).body.sandboxes.filter((s: any) => s.status === "ready");
    // One idle plus the sandbox claimed in the test before.
    assert.equal(idle.length, 2);
    const deletedIdle = (await h.api("GET", "/v1/sandboxes?pool=warm&status=deleted")).body.sandboxes;
    assert.equal(deletedIdle.length, 2);
    assert.match(deletedIdle[0].statusMessage, /its pool scaled down/);
  });

  test("pool sandboxes survive a server restart", async () => {
    const before = (await h.api("GET", "/v1/sandboxes?pool=warm&status=ready")).body.sandboxes.map((s: any) => s.id).sort();
    assert.equal(before.length, 2);
    await h.close(); // the server only: its runtime and sandboxes stay
    h = await startHarness({ dataDir });
    const after = (await h.api("GET", "/v1/sandboxes?pool=warm&status=ready")).body.sandboxes.map((s: any) => s.id).sort();
    assert.deepEqual(after, before);
    assert.equal((await pool("warm")).ready, 1);
    const claimed = await h.createSandbox({ pool: "warm" });
    assert.ok(before.includes(claimed.id));
    assert.equal((await h.exec(claimed.id, { command: "echo still here" })).stdout, "still here\n");
  });

  test("a failing template backs off and says why", async () => {
    const bad = await h.api("POST", "/v1/templates", { name: "broken", user: "nosuchuser" });
    assert.equal(bad.status, 201);
    assert.equal((await h.api("POST", "/v1/pools", { name: "sad", template: "broken", replicas: 2 })).status, 201);
    const p = await until("backoff", async () => {
      const x = await pool("sad");
      return x.status === "backoff" ? x : undefined;
    });
    assert.ok(p.failed >= 1);
    assert.match(p.statusMessage, /user nosuchuser is not in the image's \/etc\/passwd/);
    assert.equal(p.ready, 0);
    // Backing off: after 1.5 s there were at most a few attempts, not a storm.
    await new Promise((r) => setTimeout(r, 1500));
    const later = await pool("sad");
    assert.ok(later.failed <= 4, `failed ${later.failed} times in ~2 s`);
    const failedSandboxes = (await h.api("GET", "/v1/sandboxes?pool=sad&status=deleted")).body.sandboxes.length;
    // Read after `later`: up to two more attempts (creates in flight) may have ended since.
    assert.ok(failedSandboxes <= later.failed + 2, `${failedSandboxes} failed sandboxes, pool says ${later.failed}`);
    // Fixing the template lets the pool recover.
    await h.api("PATCH", "/v1/templates/broken", { user: "user" });
    await until("recovery", async () => ((await pool("sad")).ready === 2 ? true : undefined), 90_000);
    assert.equal((await pool("sad")).failed, 0);
    const del = await h.api("DELETE", "/v1/templates/broken");
    assert.equal(del.status, 409);
    assert.match(del.body.error.message, /used by pool sad/);
    assert.equal((await h.api("DELETE", "/v1/pools/sad")).status, 200);
    assert.equal((await h.api("GET", "/v1/sandboxes?pool=sad&status=ready")).body.sandboxes.length, 0);
  });
});
