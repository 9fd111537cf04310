/**
 * `agentbox template`, `volume`, `pool` and `sandbox pause|resume|snapshot`
 * as child processes against a real server, with images built by umoci.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pty from "node-pty";
import { startServer, type RunningServer } from "@agentbox/server";
import { CLI, cliEnv, runCli, type CliRun } from "./run-cli.js";
import { buildTestImages, type TestImages } from "@agentbox/isolation/test-images";

let server: RunningServer;
let dataDir: string;
let work: string;
let images: TestImages;

const env = () => cliEnv(server);
const cli = (args: string[]): Promise<CliRun> => runCli(args, { env: env(), cwd: work });

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "agentbox-tpl-cli-"));
  work = mkdtempSync(join(tmpdir(), "agentbox-tpl-cli-work-"));
  images = buildTestImages(work);
  server = await startServer({ port: 0, dataDir, keepRuntime: false });
});
after(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe("agentbox template", () => {
  test("create with limits, list, get --json, bad units", async () => {
    const created = await cli(["template", "create", "small", "--cpu", "500m", "--memory", "128Mi", "--pids", "64", "-e", "A=1", "--workdir", "/srv"]);
    assert.equal(created.code, 0, created.stderr);
    assert.equal(created.stdout, "small\n");
    const list = await cli(["template", "list"]);
    assert.match(list.stdout, /^NAME\s+STATUS\s+IMAGE\s+LAYERS\s+CPU\s+MEMORY\s+STORAGE\s+PIDS\n/);
    assert.match(list.stdout, /\nsmall\s+ready\s+host\s+0\s+500m\s+128Mi\s+1Gi\s+64\n/);
    const got = JSON.parse((await cli(["template", "get", "small", "--json"])).stdout);
    assert.deepEqual([got.env, got.workdir], [{ A: "1" }, "/srv"]);
    const bad = await cli(["template", "create", "bad", "--memory", "1GB"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: INVALID_REQUEST: resources\.memory: must be a size like "512Mi"/);
    const sb = (await cli(["sandbox", "create", "--template", "small"])).stdout.trim();
    assert.equal((await cli(["exec", sb, "--", "sh", "-c", "echo $A; pwd; cat /sys/fs/cgroup/pids.max 2>/dev/null || true"])).stdout.split("\n").slice(0, 2).join("\n"), "1\n/srv");
  });

  test("import an OCI image with a progress bar on a terminal", async () => {
    // A layer big enough (16 MiB of random bytes) for the import to be seen in progress.
    const layout = join(work, "big-layout");
    const bundle = join(work, "big-bundle");
    execFileSync("cp", ["-a", images.layout, layout]);
    execFileSync("umoci", ["unpack", "--image", `${layout}:t`, bundle]);
    writeFileSync(join(bundle, "rootfs", "big.bin"), randomBytes(16 * 2 ** 20));
    execFileSync("umoci", ["repack", "--image", `${layout}:t`, bundle]);
    execFileSync("sh", ["-c", `cd ${layout} && tar -cf ${join(work, "big-oci.tar")} .`]);
    const term = pty.spawn(process.execPath, [CLI, "template", "import", "big", join(work, "big-oci.tar")], { cwd: work, env: env(), cols: 140, rows: 10 });
    let output = "";
    term.onData((d) => (output += d));
    const code = await new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode)));
    assert.equal(code, 0, output);
    assert.match(output, /upload big \[=+\] 100% \d+\.\d MiB\/\d+\.\d MiB/);
    assert.match(output, /import big \[=+\] 100% \d+\.\d MiB\/\d+\.\d MiB/);
    assert.match(output, /\nbig\r?\n/);
    // Without a terminal: no bar, just the name; and the image runs.
    const plain = await cli(["template", "import", "bb", images.dockerArchive]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, "bb\n");
    assert.equal(plain.stderr, "");
    const sb = (await cli(["sandbox", "create", "--template", "bb"])).stdout.trim();
    assert.equal((await cli(["exec", sb, "--", "busybox", "sh", "-c", "echo $GREETING"])).stdout, "the-image\n");
    const missing = await cli(["template", "import", "nope", join(work, "missing.tar")]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: NOT_FOUND: .*missing\.tar: no such file or directory/);
    writeFileSync(join(work, "junk.tar"), "not an image");
    const junk = await cli(["template", "import", "junk", join(work, "junk.tar")]);
    assert.equal(junk.code, 1);
    assert.match(junk.stderr, /^error: INVALID_REQUEST: template junk failed: image oci:\S+\.tar: .*is not a readable tar archive/);
    // --server-path: the server reads the path itself, which must be under an --image-root.
    const denied = await cli(["template", "import", "srv", images.layout, "--server-path"]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /^error: PERMISSION_DENIED: image: .* is not under an image root/);
  });

  test("build runs each step and snapshots; a failing step stops it", async () => {
    const live = async () => JSON.parse((await cli(["sandbox", "list", "--json"])).stdout).length as number;
    const before = await live();
    const built = await cli(["template", "build", "built", "--from", "default", "--run", "echo one > /workspace/a", "--run", "cat /workspace/a && echo two >> /workspace/a"]);
    assert.equal(built.code, 0, built.stderr);
    assert.equal(built.stdout, "built\n");
    assert.match(built.stderr, /step 1\/2: echo one > \/workspace\/a\nstep 2\/2: cat \/workspace\/a && echo two >> \/workspace\/a\none\n/);
    const sb = (await cli(["sandbox", "create", "--template", "built"])).stdout.trim();
    assert.equal((await cli(["exec", sb, "--", "cat", "/workspace/a"])).stdout, "one\ntwo\n");
    const failing = await cli(["template", "build", "never", "--from", "default", "--run", "exit 3"]);
    assert.equal(failing.code, 1);
    assert.match(failing.stderr, /error: INVALID_REQUEST: step 1 \(exit 3\) failed with exit code 3/);
    assert.equal((await cli(["template", "get", "never"])).code, 1);
    // The temporary sandboxes are gone (the one made from the new template is the only new one).
    assert.equal(await live(), before + 1);
  });
});

describe("agentbox volume, pool and sandbox lifecycle", () => {
  test("volume create, mount, list, rm", async () => {
    assert.equal((await cli(["volume", "create", "v1", "--size", "32Mi"])).stdout, "v1\n");
    const sb = (await cli(["sandbox", "create", "--volume", "v1:/v"])).stdout.trim();
    await cli(["exec", sb, "--", "sh", "-c", "head -c 1048576 /dev/zero > /v/f"]);
    const list = await cli(["volume", "list"]);
    assert.match(list.stdout, new RegExp(`\\nv1\\s+ready\\s+32Mi\\s+1\\.0 MiB\\s+${sb}\\n`));
    const busy = await cli(["volume", "rm", "v1"]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /^error: CONFLICT: volume v1 is mounted by sandbox/);
    await cli(["sandbox", "rm", sb]);
    assert.equal((await cli(["volume", "rm", "v1"])).code, 0);
  });

  test("pool create, claim, scale, get", async () => {
    assert.equal((await cli(["pool", "create", "p", "--template", "default", "--replicas", "1"])).code, 0);
    let p: any;
    for (let i = 0; i < 200; i++) {
      p = JSON.parse((await cli(["pool", "get", "p", "--json"])).stdout);
      if (p.ready === 1) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(p.ready, 1);
    const claimed = await cli(["sandbox", "create", "--pool", "p", "--json"]);
    assert.equal(JSON.parse(claimed.stdout).pool, "p");
    // Scaling down happens in the background: the answer may still count the idle one.
    assert.match((await cli(["pool", "scale", "p", "0"])).stdout, /^p: 0 replicas \([01] ready\)\n$/);
    assert.equal((await cli(["pool", "rm", "p"])).code, 0);
  });

  test("pause, resume, snapshot, get shows usage", async () => {
    const sb = (await cli(["sandbox", "create"])).stdout.trim();
    await cli(["exec", sb, "--", "sh", "-c", "echo kept > /workspace/k"]);
    assert.equal((await cli(["sandbox", "pause", sb])).stdout, `${sb} paused\n`);
    const refused = await cli(["exec", sb, "--", "true"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /SANDBOX_NOT_READY: sandbox .* is paused/);
    assert.equal((await cli(["sandbox", "resume", sb])).stdout, `${sb} ready\n`);
    const shown = await cli(["sandbox", "get", sb]);
    assert.match(shown.stdout, /\nUSAGE\s+memory=[\d.]+ \S+ cpu=\d+\.\d\ds disk=[\d.]+ \S+ processes=3\n/);
    assert.equal((await cli(["sandbox", "snapshot", sb, "snap"])).stdout, "snap\n");
    const again = (await cli(["sandbox", "create", "--template", "snap"])).stdout.trim();
    assert.equal((await cli(["exec", again, "--", "cat", "/workspace/k"])).stdout, "kept\n");
  });
});
