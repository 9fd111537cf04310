/**
 * Lifecycle: pause freezes every process and resume continues them, status
 * transitions are validated, live usage is reported, and a snapshot becomes
 * a template whose sandboxes see the files (owned by their own user).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startHarness, type Harness } from "./harness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("pause, resume, usage and snapshots", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());
  /**
   * Wait until a counter below has written its first value (it says so once), rather than a fixed
   * time that a loaded machine may need more than. Its log, not a command: no helper in the sandbox.
   */
  const counting = async (sandboxId: string, processId: string) => {
    let out = "";
    for (const deadline = Date.now() + 10_000; out === "" && Date.now() < deadline; ) {
      out = (await h.api("GET", `/v1/sandboxes/${sandboxId}/processes/${processId}/logs`)).body.stdout;
      if (out === "") await sleep(20);
    }
    assert.equal(out, "counting\n");
  };

  test("pause stops a counter and resume continues it", async () => {
    const sb = await h.createSandbox();
    const start = await h.api("POST", `/v1/sandboxes/${sb.id}/processes`, {
      id: "counter",
      command: "i=0; while true; do i=$((i+1)); echo $i > /workspace/count.new; mv /workspace/count.new /workspace/count; [ $i = 1 ] && echo counting; sleep 0.02; done",
    });
    assert.equal(start.status, 201);
    await counting(sb.id, "counter");
    const paused = await h.api("POST", `/v1/sandboxes/${sb.id}/pause`);
    assert.equal(paused.status, 200);
    assert.equal(paused.body.status, "paused");
    assert.ok(paused.body.pausedAt);
    const read = async () => Number((await h.api("GET", `/v1/sandboxes/${sb.id}/files?path=/workspace/count`)).body);
    // Reading files of a paused sandbox: refused like every command (its helper would freeze too).
    const refusedRead = await h.api("GET", `/v1/sandboxes/${sb.id}/files?path=/workspace/count`);
    assert.equal(refusedRead.status, 409);
    assert.equal(refusedRead.body.error.code, "SANDBOX_NOT_READY");
    const exec = await h.api("POST", `/v1/sandboxes/${sb.id}/exec`, { command: "true" });
    assert.equal(exec.status, 409);
    assert.equal(exec.body.error.code, "SANDBOX_NOT_READY");
    assert.match(exec.body.error.message, /is paused/);
    const got = await h.api("GET", `/v1/sandboxes/${sb.id}`);
    assert.equal(got.body.status, "paused");
    // The holder's three, then the counter: its entry helper, its shell and (unless frozen between two) its sleep.
    assert.ok([5, 6].includes(got.body.usage.processes), `processes ${got.body.usage.processes}`);
    const cpuPaused = got.body.usage.cpuSeconds;
    await sleep(400);
    assert.equal((await h.api("GET", `/v1/sandboxes/${sb.id}`)).body.usage.cpuSeconds, cpuPaused);
    // Invalid transitions.
    const again = await h.api("POST", `/v1/sandboxes/${sb.id}/pause`);
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, "CONFLICT");
    const resumed = await h.api("POST", `/v1/sandboxes/${sb.id}/resume`);
    assert.equal(resumed.body.status, "ready");
    assert.equal(resumed.body.pausedAt, undefined);
    const c1 = await read();
    let c2 = c1;
    for (const deadline = Date.now() + 10_000; c2 <= c1 + 3 && Date.now() < deadline; ) {
      await sleep(100);
      c2 = await read();
    }
    assert.ok(c2 > c1 + 3, `counter went from ${c1} to ${c2} after resume`);
    const notPaused = await h.api("POST", `/v1/sandboxes/${sb.id}/resume`);
    assert.equal(notPaused.status, 409);
    assert.equal(notPaused.body.error.code, "CONFLICT");
    // A paused sandbox can be deleted.
    assert.equal((await h.api("POST", `/v1/sandboxes/${sb.id}/pause`)).status, 200);
    const del = await h.api("DELETE", `/v1/sandboxes/${sb.id}`);
    assert.equal(del.body.status, "deleted");
    const deleted = await h.api("POST", `/v1/sandboxes/${sb.id}/resume`);
    assert.equal(deleted.status, 409);
    assert.equal(deleted.body.error.code, "SANDBOX_NOT_READY");
    assert.equal((await h.api("POST", `/v1/sandboxes/sb-nope/pause`)).status, 404);
  });

  test("the counter does not advance while paused", async () => {
    const sb = await h.createSandbox();
    const proc = await h.api("POST", `/v1/sandboxes/${sb.id}/processes`, { command: "i=0; while true; do i=$((i+1)); echo $i > /workspace/count.new; mv /workspace/count.new /workspace/count; [ $i = 1 ] && echo counting; sleep 0.02; done" });
    await counting(sb.id, proc.body.id);
    await h.api("POST", `/v1/sandboxes/${sb.id}/pause`);
    const snapA = await h.api("POST", `/v1/sandboxes/${sb.id}/snapshot`, { template: "frozen-counter" });
    assert.equal(snapA.status, 201);
    await sleep(300);
    await h.api("POST", `/v1/sandboxes/${sb.id}/resume`);
    const first = Number((await h.exec(sb.id, { command: "cat /workspace/count" })).stdout);
    // The snapshot, taken while paused, holds the value the counter had then.
    const fromSnap = await h.createSandbox({ template: "frozen-counter" });
    const snapValue = Number((await h.exec(fromSnap.id, { command: "cat /workspace/count" })).stdout);
    // (The counter ticks every 20 ms once resumed; the exec after resume may take a few ticks on a busy machine.)
    assert.ok(snapValue > 0 && snapValue <= first && first - snapValue <= 25, `snapshot ${snapValue}, after resume ${first}`);
  });

  test("usage reports memory, CPU, disk and processes", async () => {
    const sb = await h.createSandbox();
    await h.exec(sb.id, { command: "head -c 5000000 /dev/urandom > /workspace/blob" });
    const u = (await h.api("GET", `/v1/sandboxes/${sb.id}`)).body.usage;
    assert.ok(u.diskBytes >= 5_000_000 && u.diskBytes < 5_000_000 + 256 * 1024, `diskBytes ${u.diskBytes}`);
    assert.ok(u.cpuSeconds > 0);
    assert.ok(u.memoryBytes > 0);
    assert.equal(u.processes, 3);
  });

  test("snapshot: a new sandbox of the new template sees the files, owned by its own user", async () => {
    const sb = await h.createSandbox({ env: { X: "1" } });
    const prep = await h.exec(sb.id, {
      command: "mkdir -p /workspace/proj/sub && echo hello > /workspace/proj/sub/a.txt && echo v1 > ~/.config && rm -f /workspace/gone; ln -s sub/a.txt /workspace/proj/link; echo ok",
    });
    assert.equal(prep.stdout, "ok\n", prep.stderr);
    const snap = await h.api("POST", `/v1/sandboxes/${sb.id}/snapshot`, { template: "proj" });
    assert.equal(snap.status, 201);
    assert.equal(snap.body.name, "proj");
    assert.equal(snap.body.parent, "default");
    assert.equal(snap.body.status, "ready");
    assert.equal(snap.body.layers, 1);
    // The source keeps running.
    assert.equal((await h.exec(sb.id, { command: "echo still" })).stdout, "still\n");
    const dup = await h.api("POST", `/v1/sandboxes/${sb.id}/snapshot`, { template: "proj" });
    assert.equal(dup.status, 409);

    const b = await h.createSandbox({ template: "proj" });
    const r = await h.exec(b.id, {
      command: "cat /workspace/proj/sub/a.txt ~/.config; readlink /workspace/proj/link; stat -c '%U %a' /workspace/proj/sub/a.txt; echo more >> /workspace/proj/sub/a.txt && cat /workspace/proj/sub/a.txt",
    });
    assert.equal(r.stdout, "hello\nv1\nsub/a.txt\nuser 644\nhello\nmore\n", r.stderr);
    // Layered again: a snapshot of a snapshot.
    await h.exec(b.id, { command: "rm -r /workspace/proj/sub && echo two > /workspace/second" });
    const snap2 = await h.api("POST", `/v1/sandboxes/${b.id}/snapshot`, { template: "proj2" });
    assert.equal(snap2.body.layers, 2);
    assert.equal(snap2.body.parent, "proj");
    const c = await h.createSandbox({ template: "proj2" });
    const r2 = await h.exec(c.id, { command: "ls /workspace/proj; cat /workspace/second" });
    assert.equal(r2.stdout, "link\ntwo\n");
    const bad = await h.api("POST", `/v1/sandboxes/${c.id}/snapshot`, { template: "Bad Name" });
    assert.equal(bad.status, 400);
  });
});
