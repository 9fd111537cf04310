/** The SDK's templates, volumes, pools and lifecycle calls against a real server. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Agentbox, isAgentboxError } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";

describe("SDK templates, volumes, pools, lifecycle", () => {
  let h: Harness;
  let client: Agentbox;

  before(async () => {
    h = await startHarness();
    client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
  });
  after(() => h.close());

  test("templates and volumes", async () => {
    const vol = await client.volumes.create({ name: "sdkvol", size: "16Mi" });
    assert.deepEqual([vol.name, vol.size, vol.status, vol.usedBytes], ["sdkvol", "16Mi", "ready", 0]);
    const t = await client.templates.create({ name: "sdk", resources: { memory: "128Mi" }, env: { K: "v" }, volumeMounts: [{ volume: "sdkvol", path: "/vol" }] });
    assert.equal(t.status, "ready");
    assert.equal(t.resources.memory, "128Mi");
    assert.deepEqual((await client.templates.list()).map((x) => x.name), ["default", "sdk"]);
    const updated = await client.templates.update("sdk", { env: { K: "w" } });
    assert.deepEqual(updated.env, { K: "w" });
    const settled = await client.templates.waitUntilSettled("sdk");
    assert.equal(settled.status, "ready");
    const sb = await client.sandboxes.create({ template: "sdk" });
    assert.equal((await sb.exec("echo $K > /vol/k; cat /vol/k")).stdout, "w\n");
    assert.deepEqual((await client.volumes.get("sdkvol")).mountedBy, [sb.id]);
    await assert.rejects(client.volumes.delete("sdkvol"), (e) => isAgentboxError(e, "CONFLICT"));
    await assert.rejects(client.templates.create({ name: "sdk" }), (e) => isAgentboxError(e, "CONFLICT"));
    await assert.rejects(client.templates.create({ name: "x", resources: { cpu: "lots" } }), (e) => isAgentboxError(e, "INVALID_REQUEST") && /resources\.cpu/.test((e as Error).message));
    await sb.delete();
    assert.equal((await client.volumes.list()).length, 1);
    await client.templates.delete("sdk");
    await client.volumes.delete("sdkvol");
    await assert.rejects(client.volumes.get("sdkvol"), (e) => isAgentboxError(e, "NOT_FOUND"));
  });

  test("pools, pause, resume, snapshot, usage", async () => {
    const pool = await client.pools.create({ name: "sdkpool", template: "default", replicas: 1 });
    assert.equal(pool.replicas, 1);
    for (let i = 0; i < 200 && (await client.pools.get("sdkpool")).ready < 1; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal((await client.sandboxes.list({ pool: "sdkpool" })).length, 1);
    const sb = await client.sandboxes.create({ pool: "sdkpool", env: { CLAIMED: "1" } });
    assert.equal(sb.info.pool, "sdkpool");
    assert.equal((await sb.exec("echo $CLAIMED")).stdout, "1\n");
    assert.equal((await client.pools.update("sdkpool", { replicas: 0 })).replicas, 0);
    await client.pools.delete("sdkpool");
    assert.deepEqual((await client.pools.list()).map((p) => p.name), []);

    await sb.exec("echo saved > /workspace/s");
    assert.equal((await sb.pause()).status, "paused");
    assert.equal(sb.status, "paused");
    await assert.rejects(sb.exec("true"), (e) => isAgentboxError(e, "SANDBOX_NOT_READY"));
    await assert.rejects(sb.pause(), (e) => isAgentboxError(e, "CONFLICT"));
    const info = await sb.refresh();
    assert.equal(info.usage?.processes, 3);
    assert.equal((await sb.resume()).status, "ready");
    const tpl = await sb.snapshot("sdksnap");
    assert.deepEqual([tpl.name, tpl.parent, tpl.layers], ["sdksnap", "default", 1]);
    const next = await client.sandboxes.create({ template: "sdksnap" });
    assert.equal((await next.exec("cat /workspace/s")).stdout, "saved\n");
  });
});
