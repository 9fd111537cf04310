/**
 * The real SDK against a real server (real runtime, real bubblewrap sandboxes).
 * One sandbox is shared by the exec tests; the lifecycle tests make their own.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Agentbox, isAgentboxError, type Sandbox } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";

/** Await `promise`, expect it to reject with an SDK error, and return that error. */
async function sdkError(promise: Promise<unknown>): Promise<{ code: string; status: number; message: string; details: Record<string, unknown> | undefined }> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isAgentboxError(error), `expected an AgentboxApiError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

describe("SDK against a real server", () => {
  let h: Harness;
  let client: Agentbox;
  let sb: Sandbox;

  before(async () => {
    h = await startHarness();
    client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
    sb = await client.sandboxes.create({ env: { FROM_CREATE: "yes" }, metadata: { suite: "sdk-exec" }, timeoutSeconds: 600 });
  });
  after(() => h.close());

  describe("sandboxes", () => {
    test("create returns a ready sandbox; get returns the same record", async () => {
      assert.match(sb.id, /^sb-[a-z0-9]{12}$/);
      assert.equal(sb.status, "ready");
      assert.equal(sb.info.template, "default");
      assert.deepEqual(sb.info.metadata, { suite: "sdk-exec" });
      assert.deepEqual(sb.info.resources, { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 });
      assert.deepEqual(sb.info.network, { mode: "none" });
      assert.equal(Date.parse(sb.info.expiresAt) - Date.parse(sb.info.createdAt), 600_000);
      const got = await client.sandboxes.get(sb.id);
      assert.deepEqual(got.info, sb.info);
      assert.deepEqual(JSON.parse(JSON.stringify(got)), sb.info);
    });

    test("list filters by metadata", async () => {
      const other = await client.sandboxes.create({ metadata: { suite: "sdk-list", color: "blue" } });
      try {
        assert.deepEqual((await client.sandboxes.list({ metadata: { suite: "sdk-list" } })).map((s) => s.id), [other.id]);
        assert.deepEqual((await client.sandboxes.list({ metadata: { suite: "sdk-exec" } })).map((s) => s.id), [sb.id]);
        assert.deepEqual((await client.sandboxes.list({ metadata: { suite: "sdk-list", color: "red" } })).map((s) => s.id), []);
        const ready = (await client.sandboxes.list({ status: "ready" })).map((s) => s.id).sort();
        assert.deepEqual(ready, [sb.id, other.id].sort());
      } finally {
        await other.delete();
      }
      assert.deepEqual((await client.sandboxes.list({ status: "deleted" })).map((s) => s.id), [other.id]);
    });

    test("setTimeout moves expiresAt", async () => {
      const before = Date.now();
      const info = await sb.setTimeout(120);
      const after = Date.now();
      assert.equal(info.id, sb.id);
      const expires = Date.parse(info.expiresAt);
      assert.ok(expires >= before + 120_000 && expires <= after + 120_000, `expiresAt ${info.expiresAt} not 120 s from now`);
      assert.equal(sb.info.expiresAt, info.expiresAt);
      assert.equal((await client.sandboxes.get(sb.id)).info.expiresAt, info.expiresAt);
      const byId = await client.sandboxes.setTimeout(sb.id, 900);
      const expires2 = Date.parse(byId.expiresAt);
      assert.ok(expires2 >= after + 900_000 && expires2 <= Date.now() + 900_000, `expiresAt ${byId.expiresAt} not 900 s from now`);
    });

    test("delete sets status deleted; the record stays readable but leaves the default list", async () => {
      const doomed = await client.sandboxes.create({ metadata: { suite: "sdk-delete" } });
      await doomed.delete();
      assert.equal(doomed.status, "deleted");
      assert.equal((await client.sandboxes.get(doomed.id)).status, "deleted");
      assert.deepEqual((await client.sandboxes.list({ metadata: { suite: "sdk-delete" } })).map((s) => s.id), []);
      assert.deepEqual((await client.sandboxes.list({ status: "deleted", metadata: { suite: "sdk-delete" } })).map((s) => s.id), [doomed.id]);
      const exec = await sdkError(doomed.exec("true"));
      assert.equal(exec.code, "SANDBOX_NOT_READY");
      assert.equal(exec.status, 409);
      // Deleting by id also works (and is idempotent on the server).
      await client.sandboxes.delete(doomed.id);
    });

    test("Symbol.asyncDispose deletes the sandbox", async () => {
      const disposable = await client.sandboxes.create({ metadata: { suite: "sdk-dispose" } });
      assert.equal(disposable.status, "ready");
      await disposable[Symbol.asyncDispose]();
      assert.equal(disposable.status, "deleted");
      assert.equal((await client.sandboxes.get(disposable.id)).status, "deleted");
      // A second dispose is a no-op.
      await disposable[Symbol.asyncDispose]();
    });

    test("`await using` deletes the sandbox at the end of the scope", async () => {
      let id: string;
      {
        await using scoped = await client.sandboxes.create({ metadata: { suite: "sdk-using" } });
        id = scoped.id;
        assert.equal((await scoped.exec("echo in-scope")).stdout, "in-scope\n");
        assert.equal((await client.sandboxes.get(id)).status, "ready");
      }
      assert.equal((await client.sandboxes.get(id)).status, "deleted");
    });
  });

  describe("exec", () => {
    test("a string runs in a shell", async () => {
      const r = await sb.exec("echo out; echo err >&2; echo $((6 * 7)) | tr 4 X");
      assert.equal(r.stdout, "out\nX2\n");
      assert.equal(r.stderr, "err\n");
      assert.equal(r.exitCode, 0);
      assert.equal(r.signal, undefined);
      assert.equal(r.reason, undefined);
      assert.deepEqual(r.truncated, { stdout: false, stderr: false });
      assert.equal(typeof r.durationMs, "number");
    });

    test("an array runs as argv, without a shell", async () => {
      const r = await sb.exec(["printf", "[%s]", "a b", "$HOME", "*", "; exit 9"]);
      assert.equal(r.stdout, "[a b][$HOME][*][; exit 9]");
      assert.equal(r.exitCode, 0);
    });

    test("the exit code passes through", async () => {
      assert.equal((await sb.exec("exit 3")).exitCode, 3);
      assert.equal((await sb.exec(["sh", "-c", "exit 255"])).exitCode, 255);
      assert.equal((await sb.exec(["/no/such/program"])).exitCode, 127);
    });

    test("stdin reaches the command", async () => {
      const r = await sb.exec("tr a-z A-Z", { stdin: "hello sdk\n" });
      assert.equal(r.stdout, "HELLO SDK\n");
      const counted = await sb.exec(["wc", "-c"], { stdin: "12345" });
      assert.equal(counted.stdout.trim(), "5");
    });

    test("env: the sandbox's and the call's", async () => {
      const r = await sb.exec('echo "$FROM_CREATE $FROM_CALL"', { env: { FROM_CALL: "per call" } });
      assert.equal(r.stdout, "yes per call\n");
      assert.equal((await sb.exec('echo "[$FROM_CALL]"')).stdout, "[]\n");
    });

    test("cwd: default /workspace, absolute and relative", async () => {
      assert.equal((await sb.exec("pwd")).stdout, "/workspace\n");
      assert.equal((await sb.exec(["pwd"], { cwd: "/tmp" })).stdout, "/tmp\n");
      await sb.exec("mkdir -p rel/dir");
      assert.equal((await sb.exec("pwd", { cwd: "rel/dir" })).stdout, "/workspace/rel/dir\n");
    });

    test("timeout kills the command: reason timeout", async () => {
      const started = Date.now();
      const r = await sb.exec("echo before; sleep 30; echo after", { timeoutMs: 300 });
      assert.equal(r.reason, "timeout");
      assert.equal(r.exitCode, null);
      assert.equal(r.signal, "SIGKILL");
      assert.equal(r.stdout, "before\n");
      assert.ok(Date.now() - started < 10_000, "the exec returned soon after its timeout");
    });
  });

  describe("typed errors", () => {
    test("a wrong id is SANDBOX_NOT_FOUND", async () => {
      const get = await sdkError(client.sandboxes.get("sb-doesnotexist"));
      assert.equal(get.code, "SANDBOX_NOT_FOUND");
      assert.equal(get.status, 404);
      assert.equal(get.message, "sandbox sb-doesnotexist does not exist");
      assert.deepEqual(get.details, { id: "sb-doesnotexist" });
      assert.equal((await sdkError(client.sandboxes.delete("sb-doesnotexist"))).code, "SANDBOX_NOT_FOUND");
      assert.equal((await sdkError(client.sandboxes.setTimeout("sb-doesnotexist", 60))).code, "SANDBOX_NOT_FOUND");
    });

    test("a wrong key is UNAUTHORIZED", async () => {
      const bad = new Agentbox({ url: h.server.url, apiKey: "not-the-key" });
      const e = await sdkError(bad.sandboxes.list());
      assert.equal(e.code, "UNAUTHORIZED");
      assert.equal(e.status, 401);
      assert.equal((await sdkError(bad.sandboxes.get(sb.id))).code, "UNAUTHORIZED");
      // Health needs no key.
      assert.deepEqual(await bad.health(), { status: "ok", version: "0.1.0" });
    });

    test("a bad body is INVALID_REQUEST naming the field, and changes nothing", async () => {
      const before = (await client.sandboxes.list()).length;
      const e = await sdkError(client.sandboxes.create({ timeoutSeconds: -1 }));
      assert.equal(e.code, "INVALID_REQUEST");
      assert.equal(e.status, 400);
      assert.match(e.message, /^timeoutSeconds: /);
      assert.equal((await client.sandboxes.list()).length, before);

      const t = await sdkError(sb.setTimeout(0));
      assert.equal(t.code, "INVALID_REQUEST");
      assert.match(t.message, /^timeoutSeconds: /);

      const x = await sdkError(sb.exec("true", { timeoutMs: -5 }));
      assert.equal(x.code, "INVALID_REQUEST");
      assert.match(x.message, /^timeoutMs: /);
      // The sandbox is unharmed.
      assert.equal((await sb.exec("echo still here")).stdout, "still here\n");
    });
  });
});
