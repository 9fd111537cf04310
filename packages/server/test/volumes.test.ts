/**
 * Volumes: persistence across sandboxes and a server restart, size and
 * readOnly enforcement, usedBytes, and CONFLICT while mounted.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { removeDataDir, startHarness, type Harness } from "./harness.js";

describe("volumes", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agentbox-volumes-"));
  let h: Harness;
  after(async () => {
    await h?.close();
    await removeDataDir(dataDir);
  });

  test("a volume keeps its data across sandboxes and a server restart", async () => {
    h = await startHarness({ dataDir });
    const created = await h.api("POST", "/v1/volumes", { name: "data", size: "32Mi" });
    assert.equal(created.status, 201);
    assert.deepEqual({ ...created.body, createdAt: undefined }, { name: "data", size: "32Mi", status: "ready", usedBytes: 0, mountedBy: [], createdAt: undefined });
    assert.equal((await h.api("POST", "/v1/volumes", { name: "data" })).status, 409);

    const a = await h.createSandbox({ volumeMounts: [{ volume: "data", path: "/data" }] });
    assert.deepEqual(a.volumeMounts, [{ volume: "data", path: "/data" }]);
    const w = await h.exec(a.id, { command: "head -c 3000000 /dev/zero > /data/blob && echo one > /data/note && mkdir -p /data/d && echo ok" });
    assert.equal(w.stdout, "ok\n", w.stderr);
    const v = await h.api("GET", "/v1/volumes/data");
    assert.deepEqual(v.body.mountedBy, [a.id]);
    assert.ok(v.body.usedBytes >= 3_000_000 && v.body.usedBytes < 3_000_000 + 64 * 1024, `usedBytes ${v.body.usedBytes}`);
    // Deleting a mounted volume is a conflict.
    const busy = await h.api("DELETE", "/v1/volumes/data");
    assert.equal(busy.status, 409);
    assert.equal(busy.body.error.code, "CONFLICT");
    await h.api("DELETE", `/v1/sandboxes/${a.id}`);

    // A second sandbox (another host uid) sees the files and may change them.
    const b = await h.createSandbox({ volumeMounts: [{ volume: "data", path: "/mnt/vol" }] });
    const r = await h.exec(b.id, { command: "cat /mnt/vol/note && echo two >> /mnt/vol/note && touch /mnt/vol/d/x && stat -c %U /mnt/vol/note" });
    assert.equal(r.stdout, "one\nuser\n", r.stderr);
    await h.api("DELETE", `/v1/sandboxes/${b.id}`);

    // Restart the server and its runtime: the data is still there.
    await h.close();
    h = await startHarness({ dataDir });
    const again = await h.api("GET", "/v1/volumes");
    assert.deepEqual(again.body.volumes.map((x: any) => [x.name, x.status]), [["data", "ready"]]);
    const c = await h.createSandbox({ volumeMounts: [{ volume: "data", path: "/data", readOnly: true }] });
    assert.equal((await h.exec(c.id, { command: "cat /data/note; ls /data/d" })).stdout, "one\ntwo\nx\n");
  });

  test("readOnly mounts refuse writes with EROFS", async () => {
    const sb = await h.createSandbox({ volumeMounts: [{ volume: "data", path: "/ro", readOnly: true }] });
    const r = await h.exec(sb.id, { command: "echo x > /ro/new; rm /ro/note; echo rc=$?" });
    assert.match(r.stderr, /Read-only file system/);
    assert.equal(r.stdout, "rc=1\n");
    assert.equal((await h.exec(sb.id, { command: "cat /ro/note" })).stdout, "one\ntwo\n");
  });

  test("a write past the volume's size fails with ENOSPC inside the sandbox", async () => {
    assert.equal((await h.api("POST", "/v1/volumes", { name: "tiny", size: "16Mi" })).status, 201);
    const sb = await h.createSandbox({ volumeMounts: [{ volume: "tiny", path: "/tiny" }] });
    const r = await h.exec(sb.id, { command: "head -c 40M /dev/zero > /tiny/fill; echo rc=$?; df -k /tiny | tail -1" });
    assert.match(r.stderr, /No space left on device/);
    assert.match(r.stdout, /^rc=1\n/);
    const v = await h.api("GET", "/v1/volumes/tiny");
    assert.ok(v.body.usedBytes > 10 * 2 ** 20 && v.body.usedBytes <= 16 * 2 ** 20, `usedBytes ${v.body.usedBytes}`);
    // The sandbox's own disk is untouched by it.
    assert.equal((await h.exec(sb.id, { command: "echo fine > /workspace/f && cat /workspace/f" })).stdout, "fine\n");
  });

  test("one read-write user at a time; templates mount volumes too", async () => {
    assert.equal((await h.api("POST", "/v1/volumes", { name: "shared", size: "16Mi" })).status, 201);
    const t = await h.api("POST", "/v1/templates", { name: "with-vol", volumeMounts: [{ volume: "shared", path: "/shared" }] });
    assert.equal(t.status, 201);
    const writer = await h.createSandbox({ template: "with-vol" });
    assert.equal((await h.exec(writer.id, { command: "echo w > /shared/f && cat /shared/f" })).stdout, "w\n");
    const second = await h.api("POST", "/v1/sandboxes", { template: "with-vol" });
    assert.equal(second.status, 201);
    assert.equal(second.body.status, "failed");
    assert.match(second.body.statusMessage, new RegExp(`volume shared is mounted read-write by sandbox ${writer.id}`));
    // A reader may join, and a request's mount at the same path replaces the template's.
    const reader = await h.createSandbox({ template: "with-vol", volumeMounts: [{ volume: "shared", path: "/shared", readOnly: true }] });
    assert.equal((await h.exec(reader.id, { command: "cat /shared/f" })).stdout, "w\n");
    const missing = await h.api("POST", "/v1/sandboxes", { volumeMounts: [{ volume: "nope", path: "/x" }] });
    assert.equal(missing.status, 404);
    const bad = await h.api("POST", "/v1/volumes", { name: "x", size: "10MB" });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /^size: must be a size/);
    await h.api("DELETE", `/v1/sandboxes/${writer.id}`);
    await h.api("DELETE", `/v1/sandboxes/${reader.id}`);
    assert.equal((await h.api("DELETE", "/v1/volumes/shared")).status, 200);
    assert.equal((await h.api("GET", "/v1/volumes/shared")).status, 404);
  });
});
