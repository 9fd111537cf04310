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
import { CgroupV2Driver, detectCgroups } from "../src/cgroups.js";

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
    await new Promise((r) => setTimeout(r, 200));
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

test("no usable cgroups: everything still runs and the limits are reported off", () => {
  const root = mkdtempSync(join(tmpdir(), "no-cgroup-"));
  try {
    mkdirSync(join(root, "memory"));
    const driver = detectCgroups(root);
    assert.equal(driver.kind, "none");
    assert.deepEqual(driver.create("x", limits).limitsOff, ["memory", "cpu", "pids"]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
