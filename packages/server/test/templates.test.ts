/**
 * Templates: CRUD, strict resource parsing, and limits from a template
 * enforced on its sandboxes (measured inside them).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startHarness, type Harness } from "./harness.js";

describe("templates", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  test("the default template exists and cannot be deleted", async () => {
    const res = await h.api("GET", "/v1/templates/default");
    assert.equal(res.status, 200);
    const t = res.body;
    assert.equal(t.image, "host");
    assert.equal(t.status, "ready");
    assert.deepEqual(t.resources, { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 });
    assert.deepEqual(t.network, { mode: "none" });
    assert.equal(t.workdir, "/workspace");
    assert.equal(t.user, "user");
    assert.equal(t.layers, 0);
    const del = await h.api("DELETE", "/v1/templates/default");
    assert.equal(del.status, 409);
    assert.equal(del.body.error.code, "CONFLICT");
  });

  test("create, list, patch and delete", async () => {
    const created = await h.api("POST", "/v1/templates", { name: "small", resources: { memory: "256Mi" }, env: { A: "1" }, workdir: "/srv" });
    assert.equal(created.status, 201);
    assert.equal(created.body.status, "ready");
    // Unspecified resources come from the defaults.
    assert.deepEqual(created.body.resources, { cpu: "1", memory: "256Mi", storage: "1Gi", pids: 256 });
    assert.equal(created.body.workdir, "/srv");
    const dup = await h.api("POST", "/v1/templates", { name: "small" });
    assert.equal(dup.status, 409);
    const list = await h.api("GET", "/v1/templates");
    assert.deepEqual(list.body.templates.map((t: any) => t.name), ["default", "small"]);
    const patched = await h.api("PATCH", "/v1/templates/small", { resources: { pids: 64 }, env: { B: "2" } });
    assert.equal(patched.status, 200);
    assert.deepEqual(patched.body.resources, { cpu: "1", memory: "256Mi", storage: "1Gi", pids: 64 });
    assert.deepEqual(patched.body.env, { B: "2" });
    const sb = await h.createSandbox({ template: "small", env: { C: "3" } });
    assert.equal(sb.template, "small");
    assert.deepEqual(sb.resources, patched.body.resources);
    const r = await h.exec(sb.id, { command: 'echo "$A-$B-$C $(pwd) $(id -un)"' });
    assert.equal(r.stdout, "-2-3 /srv user\n");
    assert.equal((await h.api("DELETE", "/v1/templates/small")).status, 200);
    assert.equal((await h.api("GET", "/v1/templates/small")).status, 404);
    // Its sandbox lives on.
    assert.equal((await h.exec(sb.id, { command: "echo alive" })).stdout, "alive\n");
    const gone = await h.api("POST", "/v1/sandboxes", { template: "small" });
    assert.equal(gone.status, 404);
  });

  test("bad resources are refused naming the field", async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ memory: "512MB" }, /^resources\.memory: must be a size like "512Mi"/],
      [{ memory: "1Ki" }, /^resources\.memory: must be at least "16Mi"/],
      [{ cpu: "half" }, /^resources\.cpu: must be a CPU quantity/],
      [{ cpu: "0.5m" }, /^resources\.cpu: must be at least "10m"/],
      [{ storage: "1Gb" }, /^resources\.storage: must be a size/],
      [{ pids: 1.5 }, /^resources\.pids: /],
      [{ pids: "100" }, /^resources\.pids: /],
      [{ gpus: 1 }, /^resources\.gpus: unknown field/],
    ];
    for (const [resources, message] of cases) {
      const res = await h.api("POST", "/v1/templates", { name: "bad", resources });
      assert.equal(res.status, 400, JSON.stringify(resources));
      assert.equal(res.body.error.code, "INVALID_REQUEST");
      assert.match(res.body.error.message, message);
    }
    for (const [body, message] of [
      [{ name: "Bad Name" }, /^name: /],
      [{ name: "x", image: "docker.io/library/alpine" }, /^image: must be "host"/],
      [{ name: "x", user: "root" }, /^user: sandboxes never run as root/],
      [{ name: "x", user: "0" }, /^user: sandboxes never run as root/],
      [{ name: "x", workdir: "relative" }, /^workdir: must be an absolute path/],
      [{ name: "x", volumeMounts: [{ volume: "v", path: "/proc/x" }] }, /^volumeMounts\.0\.path: /],
      [{ name: "x", network: { mode: "allowlist", allow: ["bad host"] } }, /^network\.allow\.0: "bad host" is not a host name/],
    ] as Array<[Record<string, unknown>, RegExp]>) {
      const res = await h.api("POST", "/v1/templates", body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(res.body.error.message, message);
    }
    const missingVolume = await h.api("POST", "/v1/templates", { name: "x", volumeMounts: [{ volume: "nope", path: "/data" }] });
    assert.equal(missingVolume.status, 404);
    assert.match(missingVolume.body.error.message, /^volumeMounts\.0\.volume: volume nope does not exist/);
    assert.equal((await h.api("GET", "/v1/templates/x")).status, 404);
    // Malformed bodies and wrong types on every new endpoint.
    for (const path of ["/v1/templates", "/v1/volumes", "/v1/pools", "/v1/sandboxes/sb-x/snapshot"]) {
      const res = await h.api("POST", path, undefined, { raw: "{not json" });
      assert.equal(res.status, 400, path);
      assert.equal(res.body.error.code, "INVALID_REQUEST");
    }
    for (const [path, body, message] of [
      ["/v1/pools", { name: "p", template: "default", replicas: -1 }, /^replicas: /],
      ["/v1/pools", { name: "p", template: "default", replicas: 1000 }, /^replicas: /],
      ["/v1/pools", { name: "p", template: "nope", replicas: 1 }, /^template: template nope does not exist/],
      ["/v1/volumes", { name: "../x" }, /^name: /],
      ["/v1/volumes", { name: "x", size: 5 }, /^size: /],
      ["/v1/templates", { name: "x", env: { "BAD-NAME": "1" } }, /^env\.BAD-NAME: /],
    ] as Array<[string, unknown, RegExp]>) {
      const res = await h.api("POST", path, body);
      assert.ok(res.status === 400 || res.status === 404, `${path} ${JSON.stringify(body)}: ${res.status}`);
      assert.match(res.body.error.message, message);
    }
    assert.equal((await h.api("PATCH", "/v1/pools/nope", { replicas: 1 })).status, 404);
    assert.equal((await h.api("DELETE", "/v1/volumes/nope")).status, 404);
  });

  test("memory, pids and cpu limits of a template hold inside its sandboxes", async () => {
    const t = await h.api("POST", "/v1/templates", { name: "tight", resources: { memory: "64Mi", pids: 32, cpu: "250m" } });
    assert.equal(t.status, 201);
    const sb = await h.createSandbox({ template: "tight" });
    // Memory: the cgroup's limit as the sandbox sees it, and a 200 MiB allocation is killed.
    const oom = await h.exec(sb.id, { command: "head -c 200M /dev/zero | tail > /dev/null; echo survived" });
    assert.equal(oom.reason, "oom");
    // pids: of 60 background sleeps only as many start as fit under 32 (a shell whose fork fails
    // stops; the count uses only shell builtins, since no process can start once it is full).
    const pids = await h.exec(sb.id, { command: "(for i in $(seq 60); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#", timeoutMs: 20_000 });
    const visible = Number(pids.stdout.trim());
    assert.ok(visible >= 25 && visible <= 32, `${visible} processes visible under pids=32 (60 were asked for)`);
    // CPU: a busy loop for 2-3 s of wall time gets about a quarter of one CPU.
    const cpu = await h.exec(sb.id, {
      argv: ["bash", "-c", "end=$((SECONDS+3)); while [ $SECONDS -lt $end ]; do :; done; times"],
      timeoutMs: 20_000,
    });
    const [userMin, userSec] = /^(\d+)m([\d.]+)s/.exec(cpu.stdout)!.slice(1).map(Number) as [number, number];
    const userSeconds = userMin * 60 + userSec;
    assert.ok(userSeconds < 1.5, `busy loop used ${userSeconds}s of CPU in 2-3 s of wall time under a 250m limit (unlimited: 2-3 s): ${cpu.stdout}`);
    assert.ok(userSeconds > 0.1, `busy loop used ${userSeconds}s`);
  });
});
