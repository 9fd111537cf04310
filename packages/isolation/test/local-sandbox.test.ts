/**
 * A command's cgroup group is a lease (LocalSandbox.acquireGroup): once released, a late kill
 * through it must not reach the group, which may already serve the next command. The group
 * under the lease is a stand-in that counts calls (said so); the real groups' kill is covered
 * in cgroups.test.ts, and leases in every server test that runs commands.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { CgroupGroup } from "../src/cgroups.js";
import { GroupLease } from "../src/local-sandbox.js";

function countingGroup(): CgroupGroup & { kills: number; removes: number } {
  const g = {
    kills: 0,
    removes: 0,
    procsFiles: ["/sys/fs/cgroup/x/cgroup.procs"],
    kill: async () => void g.kills++,
    remove: () => void g.removes++,
    pids: () => [101, 102],
    oomKills: () => 3,
  };
  return g;
}

test("a lease passes everything through until released; then kill, pids and remove reach nothing", async () => {
  const group = countingGroup();
  const lease = new GroupLease(group);
  assert.deepEqual(lease.procsFiles, ["/sys/fs/cgroup/x/cgroup.procs"]);
  assert.deepEqual(lease.pids(), [101, 102]);
  await lease.kill();
  assert.equal(group.kills, 1);
  lease.released = true; // what releaseGroup does before it kills and hands the group on
  await lease.kill();
  lease.remove();
  assert.equal(group.kills, 1);
  assert.equal(group.removes, 0);
  assert.deepEqual(lease.pids(), []);
  assert.equal(lease.oomKills(), 3, "still readable: callers compare it after the command ended");
  // The next command's lease over the same group works as before.
  const next = new GroupLease(group);
  await next.kill();
  assert.equal(group.kills, 2);
});
