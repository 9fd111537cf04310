/**
 * cgroup drivers. This machine has cgroup v1 controllers, so v1 runs against
 * the real cgroupfs; v2 cannot be mounted with controllers here, so its file
 * protocol is checked against a directory laid out like cgroupfs (a stand-in,
 * said so: writes land in plain files, nothing is enforced).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CgroupV2Driver, detectCgroups, type SandboxCgroup } from "../src/cgroups.js";

const limits = { memoryBytes: 256 * 2 ** 20, cpu: 0.5, pids: 64, storageBytes: 2 ** 30 };

test("v1 on this host: limits are written and a group's processes are killed", { skip: !existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes") }, async () => {
  const driver = detectCgroups();
  assert.equal(driver.kind, "v1");
  const path = `agentbox/test-${process.pid}`;
  const group = driver.create(path, limits);
  try {
    assert.equal(readFileSync(`/sys/fs/cgroup/memory/${path}/memory.limit_in_bytes`, "utf8").trim(), String(256 * 2 ** 20));
    assert.equal(readFileSync(`/sys/fs/cgroup/pids/${path}/pids.max`, "utf8").trim(), "64");
    assert.equal(readFileSync(`/sys/fs/cgroup/cpu/${path}/cpu.cfs_quota_us`, "utf8").trim(), "50000");
    assert.deepEqual(group.limitsOff, []);
    const child = group.child("cmd");
    const proc = spawn("sh", ["-c", `for f in ${child.procsFiles.join(" ")}; do echo $$ > $f; done; sleep 60 & sleep 60`], { stdio: "ignore" });
    // Wait for the shell and both sleeps, however long a loaded machine takes to start them.
    for (let i = 0; i < 1000 && child.pids().length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(child.pids().length, 3);
    const exited = new Promise((r) => proc.once("exit", (_c, s) => r(s)));
    await child.kill();
    assert.equal(await exited, "SIGKILL");
    assert.deepEqual(child.pids(), []);
  } finally {
    group.remove();
  }
  assert.equal(existsSync(`/sys/fs/cgroup/memory/${path}`), false);
});

const hasV1 = existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes");
const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("v1 on this host: kills of one group share one loop, so none outlives another and kills the group's next user", { skip: !hasV1 }, async () => {
  const driver = detectCgroups();
  const path = `agentbox/test-reuse-${process.pid}`;
  const group = driver.create(path, limits);
  try {
    const child = group.child("cmd");
    const enter = `for f in ${child.procsFiles.join(" ")}; do echo $$ > $f; done`;
    const first = spawn("sh", ["-c", `${enter}; sleep 60 & sleep 60`], { stdio: "ignore" });
    for (let i = 0; i < 200 && child.pids().length < 3; i++) await sleepMs(5);
    // A command ends while its session is being deleted: two kills, as in the runtime.
    const k1 = child.kill();
    const k2 = child.kill();
    assert.equal(k1, k2);
    await Promise.all([k1, k2]);
    assert.deepEqual(child.pids(), []);
    assert.equal(first.exitCode ?? first.signalCode ?? (await new Promise((r) => first.once("exit", (_c, s) => r(s)))), "SIGKILL");
    // The group is handed to the next command: nothing kills it any more.
    const next = spawn("sh", ["-c", `${enter}; sleep 0.3; echo done`], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    next.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise((r) => next.once("exit", (c, s) => r(c ?? s)));
    assert.equal(code, 0);
    assert.equal(out, "done\n");
  } finally {
    group.remove();
  }
});

/** 50 sleeps and a shell loop that counts into a file as fast as it can (in place, never truncated: a read never sees it empty): 51 processes. */
async function startWorkload(group: SandboxCgroup, counter: string) {
  const child = group.child("cmd");
  const script = `for f in ${child.procsFiles.join(" ")}; do echo $$ > $f; done
i=0; while [ $i -lt 50 ]; do sleep 600 & i=$((i+1)); done
n=0; while :; do n=$((n+1)); echo $n 1<> ${counter}; done`;
  const proc = spawn("sh", ["-c", script], { stdio: "ignore" });
  const exited = new Promise((r) => proc.once("exit", (_c, s) => r(s)));
  for (let i = 0; i < 1000 && child.pids().length < 51; i++) await sleepMs(10);
  assert.equal(child.pids().length, 51);
  for (let i = 0; i < 1000 && !existsSync(counter); i++) await sleepMs(10); // and it has begun counting
  return { child, exited };
}

const count = (file: string): number => {
  const n = Number.parseInt(readFileSync(file, "utf8"), 10);
  return Number.isNaN(n) ? -1 : n;
};

test("v1 on this host: freeze stops every process, thaw resumes them; usage is live", { skip: !hasV1 }, async () => {
  const driver = detectCgroups();
  const path = `agentbox/test-freeze-${process.pid}`;
  const group = driver.create(path, limits);
  const tmp = mkdtempSync(join(tmpdir(), "freeze-"));
  const counter = join(tmp, "n");
  try {
    const { exited } = await startWorkload(group, counter);
    await sleepMs(100);
    const use1 = group.usage();
    assert.equal(use1.processes, 51);
    assert.ok(use1.memoryBytes > 0, `memory ${use1.memoryBytes}`);
    assert.ok(use1.cpuSeconds > 0, `cpu ${use1.cpuSeconds}`);

    await group.freeze();
    assert.equal(group.frozen(), true);
    const a = count(counter);
    await sleepMs(300);
    assert.equal(count(counter), a, "the counter advanced while frozen");
    const frozenUse = group.usage();
    assert.equal(frozenUse.processes, 51);

    await group.thaw();
    assert.equal(group.frozen(), false);
    // Give the thawed loop time to count and use CPU: poll rather than a fixed 300 ms (it is CPU-limited and a loaded machine is slow).
    for (let i = 0; i < 1000 && (count(counter) === a || !(group.usage().cpuSeconds > frozenUse.cpuSeconds + 0.01)); i++) await sleepMs(10);
    assert.notEqual(count(counter), a, "the counter did not advance after thaw");
    // The busy loop kept using CPU between the two readings (once thawed).
    assert.ok(group.usage().cpuSeconds > frozenUse.cpuSeconds + 0.01);

    // Many pauses + resumes of the whole group (51 processes, one busy and throttled by the 0.5 CPU
    // limit, which the freeze lifts while it waits): each completes, and the limit comes back.
    // Their speed is bench (j)'s row, on a sandbox running the same mix.
    for (let i = 0; i < 50; i++) {
      await group.freeze();
      assert.equal(group.frozen(), true);
      await group.thaw();
      assert.equal(group.frozen(), false);
    }
    assert.equal(readFileSync(`/sys/fs/cgroup/cpu/${path}/cpu.cfs_quota_us`, "utf8").trim(), "50000", "the CPU limit is back");

    // Killing a paused sandbox works and leaves the group thawed and empty.
    await group.freeze();
    await group.kill();
    assert.deepEqual(group.pids(), []);
    assert.equal(group.frozen(), false);
    assert.equal(group.usage().processes, 0);
    assert.equal(await exited, "SIGKILL");
  } finally {
    await group.kill();
    group.remove();
    rmSync(tmp, { recursive: true, force: true });
  }
  assert.equal(existsSync(`/sys/fs/cgroup/freezer/${path}`), false);
});

test("v1 on this host: a command killed inside a paused sandbox dies when it resumes", { skip: !hasV1 }, async () => {
  const group = detectCgroups().create(`agentbox/test-pausedkill-${process.pid}`, limits);
  const tmp = mkdtempSync(join(tmpdir(), "freeze-"));
  try {
    const { child, exited } = await startWorkload(group, join(tmp, "n"));
    await group.freeze();
    const t0 = Date.now();
    await child.kill();
    // (Generous for a loaded machine, yet well under the ~4 s the kill loop would spend on a frozen group.)
    assert.ok(Date.now() - t0 < 2000, "kill of a command in a paused sandbox must not wait for the resume");
    assert.equal(group.frozen(), true);
    await group.thaw();
    assert.equal(await exited, "SIGKILL");
    for (let i = 0; i < 100 && child.pids().length > 0; i++) await sleepMs(10);
    assert.deepEqual(child.pids(), []);
  } finally {
    await group.kill();
    group.remove();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("v2 file protocol: freeze waits for `frozen 1`, thaw for `frozen 0`; usage from the v2 files", async () => {
  const root = mkdtempSync(join(tmpdir(), "fake-cgroup2-"));
  try {
    writeFileSync(join(root, "cgroup.controllers"), "cpu memory pids\n");
    const group = new CgroupV2Driver(root).create("agentbox/i/sb", limits);
    const dir = join(root, "agentbox/i/sb");
    // Stand-in for the kernel: this test writes cgroup.events itself.
    writeFileSync(join(dir, "cgroup.events"), "populated 1\nfrozen 0\n");
    let done = false;
    const freezing = group.freeze().then(() => (done = true));
    assert.equal(readFileSync(join(dir, "cgroup.freeze"), "utf8"), "1");
    await sleepMs(30);
    assert.equal(done, false, "freeze resolved before the kernel reported the group frozen");
    assert.equal(group.frozen(), false);
    // Not frozen at once: the CPU limit is lifted so throttled processes can reach the freezer...
    assert.equal(readFileSync(join(dir, "cpu.max"), "utf8"), "max");
    writeFileSync(join(dir, "cgroup.events"), "populated 1\nfrozen 1\n");
    await freezing;
    assert.equal(group.frozen(), true);
    // ...and put back once they have.
    assert.equal(readFileSync(join(dir, "cpu.max"), "utf8"), "50000 100000");

    done = false;
    const thawing = group.thaw().then(() => (done = true));
    assert.equal(readFileSync(join(dir, "cgroup.freeze"), "utf8"), "0");
    await sleepMs(30);
    assert.equal(done, false);
    writeFileSync(join(dir, "cgroup.events"), "populated 1\nfrozen 0\n");
    await thawing;
    assert.equal(group.frozen(), false);

    writeFileSync(join(dir, "memory.current"), "12345678\n");
    writeFileSync(join(dir, "cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n");
    writeFileSync(join(dir, "cgroup.procs"), "10\n11\n");
    mkdirSync(join(dir, "cmd-1"));
    writeFileSync(join(dir, "cmd-1", "cgroup.procs"), "12\n13\n14\n");
    assert.deepEqual(group.usage(), { memoryBytes: 12345678, cpuSeconds: 2.5, processes: 5 });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("v2 file protocol: limits, controllers enabled down the path", () => {
  const root = mkdtempSync(join(tmpdir(), "fake-cgroup2-"));
  try {
    writeFileSync(join(root, "cgroup.controllers"), "cpu memory pids\n");
    const driver = new CgroupV2Driver(root);
    const group = driver.create("agentbox/i/sb", limits);
    const dir = join(root, "agentbox/i/sb");
    assert.equal(readFileSync(join(dir, "memory.max"), "utf8"), String(256 * 2 ** 20));
    assert.equal(readFileSync(join(dir, "memory.swap.max"), "utf8"), "0");
    assert.equal(readFileSync(join(dir, "pids.max"), "utf8"), "64");
    assert.equal(readFileSync(join(dir, "cpu.max"), "utf8"), "50000 100000");
    assert.equal(readFileSync(join(root, "cgroup.subtree_control"), "utf8"), "+memory +pids +cpu");
    assert.equal(readFileSync(join(root, "agentbox/i/cgroup.subtree_control"), "utf8"), "+memory +pids +cpu");
    writeFileSync(join(dir, "memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n");
    assert.equal(group.oomKills(), 2);
    const child = group.child("cmd-1");
    assert.deepEqual(child.procsFiles, [join(dir, "cmd-1", "cgroup.procs")]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("no usable cgroups: everything still runs and the limits are reported off; pausing is refused", async () => {
  const root = mkdtempSync(join(tmpdir(), "no-cgroup-"));
  try {
    mkdirSync(join(root, "memory"));
    const driver = detectCgroups(root);
    assert.equal(driver.kind, "none");
    const group = driver.create("x", limits);
    assert.deepEqual(group.limitsOff, ["memory", "cpu", "pids"]);
    await assert.rejects(group.freeze(), (err: { code?: string; message: string }) => err.code === "RUNTIME_UNAVAILABLE" && /cgroups/.test(err.message));
    await assert.rejects(group.thaw(), { code: "RUNTIME_UNAVAILABLE" });
    assert.equal(group.frozen(), false);
    assert.deepEqual(group.usage(), { memoryBytes: 0, cpuSeconds: 0, processes: 0 });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
