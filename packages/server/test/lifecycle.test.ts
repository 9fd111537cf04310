import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startServer } from "../src/index.js";
import { startHarness, type Harness } from "./harness.js";

/** How many sandbox layers (on the host) hold a workspace file of this name. */
function layerFilesNamed(dataDir: string, name: string): number {
  const dir = join(dataDir, "sandboxes");
  return readdirSync(dir).filter((slot) => existsSync(join(dir, slot, "layer", "upper", "workspace", name))).length;
}

describe("sandbox lifecycle", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  test("create returns a ready sandbox with the default template's settings", async () => {
    const before = Date.now();
    const res = await h.api("POST", "/v1/sandboxes", { metadata: { owner: "alice" }, timeoutSeconds: 120 });
    assert.equal(res.status, 201);
    const s = res.body;
    assert.match(s.id, /^sb-[a-z0-9]{12}$/);
    assert.equal(s.status, "ready");
    assert.equal(s.template, "default");
    assert.deepEqual(s.metadata, { owner: "alice" });
    assert.deepEqual(s.resources, { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 });
    assert.deepEqual(s.network, { mode: "none" });
    // Every limit is enforced here (cgroup v1 controllers, and a disk of its own for storage).
    assert.equal(s.limitsOff, undefined);
    assert.equal(s.statusMessage, undefined);
    const ttl = Date.parse(s.expiresAt) - Date.parse(s.createdAt);
    assert.equal(ttl, 120_000);
    assert.ok(Date.parse(s.createdAt) >= before - 1000);
    const got = await h.api("GET", `/v1/sandboxes/${s.id}`);
    assert.equal(got.status, 200);
    // GET adds live resource use: nothing runs yet but the namespace holder.
    const { usage, ...rest } = got.body;
    assert.deepEqual(rest, s);
    // bubblewrap, its init (pid 1 inside) and (once its setup ends, just after the create answers) the holder.
    assert.ok([2, 3].includes(usage.processes), `processes ${usage.processes}`);
    assert.equal(typeof usage.cpuSeconds, "number");
    assert.ok(usage.memoryBytes > 0);
  });

  test("default timeout is one hour", async () => {
    const s = await h.createSandbox();
    assert.equal(Date.parse(s.expiresAt) - Date.parse(s.createdAt), 3600_000);
  });

  test("list filters by status and metadata", async () => {
    const x = await h.createSandbox({ metadata: { team: "x", env: "ci" } });
    const y = await h.createSandbox({ metadata: { team: "y", env: "ci" } });
    const byTeam = await h.api("GET", "/v1/sandboxes?metadata.team=x");
    assert.deepEqual(byTeam.body.sandboxes.map((s: any) => s.id), [x.id]);
    const byEnv = await h.api("GET", "/v1/sandboxes?metadata.env=ci&status=ready");
    assert.deepEqual(byEnv.body.sandboxes.map((s: any) => s.id).sort(), [x.id, y.id].sort());
    await h.api("DELETE", `/v1/sandboxes/${y.id}`);
    const afterDelete = await h.api("GET", "/v1/sandboxes?metadata.env=ci");
    assert.deepEqual(afterDelete.body.sandboxes.map((s: any) => s.id), [x.id]);
    const deleted = await h.api("GET", "/v1/sandboxes?status=deleted&metadata.env=ci");
    assert.deepEqual(deleted.body.sandboxes.map((s: any) => s.id), [y.id]);
  });

  test("wait:false returns provisioning, then it becomes ready", async () => {
    const res = await h.api("POST", "/v1/sandboxes", { wait: false });
    assert.equal(res.status, 201);
    assert.equal(res.body.status, "provisioning");
    let status = "provisioning";
    for (let i = 0; i < 100 && status === "provisioning"; i++) {
      await new Promise((r) => setTimeout(r, 50));
      status = (await h.api("GET", `/v1/sandboxes/${res.body.id}`)).body.status;
    }
    assert.equal(status, "ready");
  });

  test("delete kills every process and removes the layers and cgroup", async () => {
    const s = await h.createSandbox();
    await h.exec(s.id, { command: `echo data > /workspace/marker-${s.id}; sleep 100 > /dev/null 2>&1 &` });
    assert.equal(layerFilesNamed(h.dataDir, `marker-${s.id}`), 1);
    const res = await h.api("DELETE", `/v1/sandboxes/${s.id}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.status, "deleted");
    assert.equal(layerFilesNamed(h.dataDir, `marker-${s.id}`), 0);
    const cgroups = readdirSync("/sys/fs/cgroup/pids/agentbox", { recursive: true }).map(String);
    assert.ok(!cgroups.some((c) => c.includes(s.id)), "cgroup left behind");
    const exec = await h.api("POST", `/v1/sandboxes/${s.id}/exec`, { command: "true" });
    assert.equal(exec.status, 409);
    assert.equal(exec.body.error.code, "SANDBOX_NOT_READY");
    const again = await h.api("DELETE", `/v1/sandboxes/${s.id}`);
    assert.equal(again.status, 200);
  });

  test("a sandbox expires after its TTL and a timeout extension moves the deadline", async () => {
    const short = await h.createSandbox({ timeoutSeconds: 1 });
    await h.exec(short.id, { command: `touch /workspace/marker-${short.id}` });
    const extended = await h.createSandbox({ timeoutSeconds: 1 });
    const ext = await h.api("POST", `/v1/sandboxes/${extended.id}/timeout`, { timeoutSeconds: 60 });
    assert.equal(ext.status, 200);
    assert.ok(Date.parse(ext.body.expiresAt) - Date.now() > 55_000);
    const extendedAt = Date.now();
    // Poll for the reaper's delete instead of a fixed 1.8 s: on a loaded machine it may take longer.
    let gone = await h.api("GET", `/v1/sandboxes/${short.id}`);
    for (const deadline = Date.now() + 15_000; gone.body.status !== "deleted" && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 100));
      gone = await h.api("GET", `/v1/sandboxes/${short.id}`);
    }
    assert.equal(gone.body.status, "deleted");
    assert.equal(gone.body.statusMessage, "expired: its timeout passed");
    // The status turns "deleted" first (nothing new may start), then the runtime removes its files.
    for (let i = 0; i < 150 && layerFilesNamed(h.dataDir, `marker-${short.id}`) > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(layerFilesNamed(h.dataDir, `marker-${short.id}`), 0);
    // The extended one's original 1 s deadline is well past too (as after the fixed wait before).
    const left = extendedAt + 1800 - Date.now();
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    const alive = await h.api("GET", `/v1/sandboxes/${extended.id}`);
    assert.equal(alive.body.status, "ready");
  });

  test("data dir files are private to root", () => {
    assert.equal(statSync(h.server.apiKeyFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(h.dataDir, "agentbox.db")).mode & 0o777, 0o600);
    assert.equal(statSync(h.dataDir).mode & 0o777, 0o700);
  });
});

describe("bad input", () => {
  let h: Harness;
  let id: string;
  before(async () => {
    h = await startHarness();
    id = (await h.createSandbox()).id;
  });
  after(() => h.close());

  test("every endpoint but /healthz needs the key", async () => {
    assert.equal((await h.api("GET", "/healthz", undefined, { key: null })).status, 200);
    for (const key of [null, "wrong", `${h.server.apiKey}x`, ""]) {
      const res = await h.api("GET", "/v1/sandboxes", undefined, { key });
      assert.equal(res.status, 401);
      assert.equal(res.body.error.code, "UNAUTHORIZED");
    }
    assert.equal((await h.api("GET", "/metrics", undefined, { key: null })).status, 401);
  });

  test("malformed JSON is a 400 naming the body", async () => {
    const res = await h.api("POST", "/v1/sandboxes", undefined, { raw: "{not json" });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "INVALID_REQUEST");
    assert.match(res.body.error.message, /^body: malformed JSON/);
  });

  test("wrong types, unknown fields and missing fields name the field", async () => {
    const cases: Array<[string, string, unknown, RegExp]> = [
      ["POST", "/v1/sandboxes", { timeoutSeconds: "soon" }, /^timeoutSeconds: /],
      ["POST", "/v1/sandboxes", { timeoutSeconds: -5 }, /^timeoutSeconds: /],
      ["POST", "/v1/sandboxes", { metadata: { a: 1 } }, /^metadata\.a: /],
      ["POST", "/v1/sandboxes", { colour: "red" }, /^colour: unknown field/],
      ["POST", "/v1/sandboxes", { env: { "BAD NAME": "x" } }, /^env\.BAD NAME: /],
      ["POST", `/v1/sandboxes/${id}/exec`, {}, /^command: exactly one of command or argv/],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: "true", argv: ["true"] }, /^command: exactly one/],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: "echo \u0000" }, /^command: must not contain NUL/],
      ["POST", `/v1/sandboxes/${id}/exec`, { argv: ["ls", "a\u0000b"] }, /^argv\.1: must not contain NUL/],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: "true", env: { A: "x\u0000" } }, /^env\.A: must not contain NUL/],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: "true", stdin: "a", stdinBase64: "YQ==" }, /^stdinBase64: give stdin or stdinBase64/],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: "true", stdinBase64: "not base64!" }, /^stdinBase64: /],
      ["POST", `/v1/sandboxes/${id}/exec`, { argv: [] }, /^argv: /],
      ["POST", `/v1/sandboxes/${id}/exec`, { command: "true", timeoutMs: 0 }, /^timeoutMs: /],
      ["POST", `/v1/sandboxes/${id}/timeout`, {}, /^timeoutSeconds: /],
      ["POST", "/v1/sandboxes", [1, 2], /^body: /],
    ];
    for (const [method, path, body, message] of cases) {
      const res = await h.api(method, path, body);
      assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}`);
      assert.equal(res.body.error.code, "INVALID_REQUEST");
      assert.match(res.body.error.message, message);
    }
  });

  test("unknown sandbox, template and endpoint", async () => {
    for (const [method, path] of [
      ["GET", "/v1/sandboxes/sb-nope"],
      ["DELETE", "/v1/sandboxes/sb-nope"],
      ["POST", "/v1/sandboxes/sb-nope/exec"],
      ["POST", "/v1/sandboxes/..%2F..%2Fetc/exec"],
    ] as const) {
      const res = await h.api(method, path, method === "POST" ? { command: "true" } : undefined);
      assert.equal(res.status, 404, path);
      assert.equal(res.body.error.code, "SANDBOX_NOT_FOUND");
    }
    const tpl = await h.api("POST", "/v1/sandboxes", { template: "nope" });
    assert.equal(tpl.status, 404);
    assert.equal(tpl.body.error.code, "NOT_FOUND");
    const ep = await h.api("GET", "/v1/nothing");
    assert.equal(ep.status, 404);
    assert.equal(ep.body.error.code, "NOT_FOUND");
    const method = await h.api("PUT", "/v1/sandboxes");
    assert.equal(method.status, 405);
  });

  test("a huge body is refused with 413 and the server stays up", async () => {
    const res = await h.api("POST", `/v1/sandboxes/${id}/exec`, { command: "true", stdin: "x".repeat(17 * 1024 * 1024) });
    assert.equal(res.status, 413);
    assert.equal(res.body.error.code, "PAYLOAD_TOO_LARGE");
    assert.equal((await h.exec(id, { command: "echo up" })).stdout, "up\n");
  });

  test("a client that disconnects mid-request does not hurt the server", async () => {
    const url = new URL(h.server.url);
    await new Promise<void>((resolve) => {
      const req = request({ host: url.hostname, port: url.port, method: "POST", path: `/v1/sandboxes/${id}/exec`, headers: { authorization: `Bearer ${h.server.apiKey}`, "content-length": "1000" } });
      req.on("error", () => resolve());
      req.write('{"command": "sle');
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 50);
    });
    const abandoned = fetch(`${h.server.url}/v1/sandboxes/${id}/exec`, {
      method: "POST",
      headers: { authorization: `Bearer ${h.server.apiKey}` },
      body: JSON.stringify({ command: "sleep 1; echo late" }),
      signal: AbortSignal.timeout(100),
    }).catch(() => "aborted");
    assert.equal(await abandoned, "aborted");
    assert.equal((await h.exec(id, { command: "echo fine" })).stdout, "fine\n");
  });

  test("/metrics speaks Prometheus text", async () => {
    const res = await h.api("GET", "/metrics");
    assert.equal(res.status, 200);
    assert.match(res.body, /^agentbox_sandboxes\{status="ready"\} [1-9]/m);
    assert.match(res.body, /^agentbox_runtime_up 1$/m);
  });
});

describe("start-up", () => {
  test("a busy port is a clear error and starts no runtime", async () => {
    const h = await startHarness();
    const port = Number(new URL(h.server.url).port);
    const dataDir = mkdtempSync(join(tmpdir(), "agentbox-busy-"));
    try {
      await assert.rejects(startServer({ port, dataDir }), (err: any) => {
        assert.equal(err.code, "CONFLICT");
        assert.match(err.message, /already in use/);
        return true;
      });
      assert.equal(existsSync(join(dataDir, "runtime.sock")), false);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      await h.close();
    }
  });
});

describe("restarts", () => {
  test("a restarted server finds its sandboxes; the runtime outlives the server", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "agentbox-restart-"));
    try {
      const first = await startHarness({ dataDir, keepRuntime: true });
      const s = await first.createSandbox();
      await first.exec(s.id, { command: "echo kept > /workspace/f; sleep 300 > /dev/null 2>&1 &" });
      await first.close();
      const second = await startHarness({ dataDir, keepRuntime: false });
      try {
        const got = await second.api("GET", `/v1/sandboxes/${s.id}`);
        assert.equal(got.body.status, "ready");
        const r = await second.exec(s.id, { command: "cat /workspace/f" });
        assert.equal(r.stdout, "kept\n");
        assert.equal(second.server.apiKey, first.server.apiKey);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
