/**
 * Hostile code: every test here tries to break out of a sandbox and must fail.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { startHarness, type Harness } from "./harness.js";

describe("isolation", () => {
  let h: Harness;
  let a: string;
  let b: string;
  const rootSecret = `/root/agentbox-secret-${process.pid}`;
  before(async () => {
    h = await startHarness();
    const created = await Promise.all([h.createSandbox(), h.createSandbox()]);
    a = created[0].id;
    b = created[1].id;
    mkdirSync("/root", { recursive: true });
    writeFileSync(rootSecret, "root-secret\n");
    writeFileSync(`${h.dataDir}/host-secret.txt`, "data-dir-secret\n");
  });
  after(async () => {
    rmSync(rootSecret, { force: true });
    await h.close();
  });

  test("runs as an unprivileged user with no capabilities and no_new_privs", async () => {
    const r = await h.exec(a, { command: "id -u; id -g; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status" });
    assert.equal(
      r.stdout,
      "1000\n1000\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n",
    );
  });

  test("a command inherits no descriptor but its own stdio, even while others run", async () => {
    const busy = h.exec(a, { command: "sleep 1" });
    try {
      const r = await h.exec(a, { command: "for fd in $(seq 3 255); do [ -e /proc/$$/fd/$fd ] && echo open $fd; done; echo checked" });
      assert.equal(r.stdout, "checked\n");
    } finally {
      await busy;
    }
  });

  test("cannot create user namespaces (no way back to privileges)", async () => {
    const r = await h.exec(a, { command: "unshare -U true; echo rc=$?" });
    assert.match(r.stdout, /rc=1/);
  });

  test("ps shows only the sandbox's own processes", async () => {
    const r = await h.exec(a, { command: "ps -eo pid=,comm=" });
    const procs = r.stdout.trim().split("\n").map((l: string) => l.trim().split(/\s+/));
    assert.deepEqual(procs.map((p: string[]) => p[0]), ["1", "2", procs[2]![0], procs[3]![0]]);
    assert.deepEqual(procs.map((p: string[]) => p[1]), ["bwrap", "sleep", "sh", "ps"]);
    const hostPid = String(process.pid);
    const kill = await h.exec(a, { command: `kill -0 ${hostPid}; echo rc=$?` });
    assert.match(kill.stdout + kill.stderr, /rc=1/);
  });

  test("two sandboxes cannot see each other's files or processes", async () => {
    await h.exec(a, { command: "echo only-a > /workspace/a.txt; echo tmp-a > /tmp/a.txt; sleep 30 & echo started" });
    const r = await h.exec(b, { command: "ls /workspace /tmp; cat /workspace/a.txt /tmp/a.txt 2>&1; ps -eo comm=" });
    assert.doesNotMatch(r.stdout, /only-a|tmp-a/);
    assert.match(r.stdout, /No such file/);
    const own = await h.exec(a, { command: "cat /workspace/a.txt" });
    assert.equal(own.stdout, "only-a\n");
  });

  test("host files outside the image are invisible: data dir, /root, API key", async () => {
    const r = await h.exec(a, {
      command: `cat ${h.dataDir}/host-secret.txt ${rootSecret} ${h.server.apiKeyFile} 2>&1; ls /root 2>&1; find / -xdev -name 'host-secret.txt' -o -name 'api-key' 2>/dev/null | head`,
    });
    assert.doesNotMatch(r.stdout, /data-dir-secret|root-secret/);
    assert.ok(!r.stdout.includes(h.server.apiKey), "API key leaked");
    const grep = await h.exec(a, {
      command: `grep -rls '${h.server.apiKey}' /etc /home /tmp /workspace /root /var /run /opt /mnt /dev; echo done`,
      timeoutMs: 60_000,
    });
    assert.equal(grep.stdout, "done\n");
  });

  test("/proc paths do not lead to the host", async () => {
    const r = await h.exec(a, {
      command: "ls /proc/1/root/ 2>&1 | head -50; cat /proc/1/environ 2>&1 | tr '\\0' '\\n'; ls /proc/1/cwd/ 2>&1",
    });
    assert.doesNotMatch(r.stdout, /agentbox-test-|ab_|AGENTBOX/);
    const sys = await h.exec(a, { command: "echo x > /proc/sys/kernel/hostname; echo rc=$?; cat /proc/sys/kernel/hostname" });
    assert.match(sys.stdout, /rc=[12]\nsandbox\n/);
  });

  test("writes do not reach the host", async () => {
    const marker = `/tmp/agentbox-escape-${process.pid}`;
    const r = await h.exec(a, {
      command: `echo x > ${marker}; echo x > /usr/agentbox-escape 2>&1; echo rc=$?; echo x > /etc/agentbox-escape; echo rc=$?; touch /bin/escape; echo rc=$?`,
    });
    assert.match(r.stdout, /rc=[12]\nrc=[12]\nrc=[12]/);
    assert.throws(() => readFileSync(marker));
    assert.throws(() => readFileSync("/usr/agentbox-escape"));
  });

  test("no network: only the sandbox's own loopback, no route to the host or the server", async () => {
    const port = new URL(h.server.url).port;
    const r = await h.exec(a, {
      command: `cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; python3 -c "
import socket
for host in ['127.0.0.1', '10.0.2.2', '1.1.1.1']:
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect((host, ${port})); print(host, 'connected')
    except OSError as e:
        print(host, 'refused' if isinstance(e, ConnectionRefusedError) else 'unreachable')
"`,
    });
    assert.equal(r.stdout, "lo\n127.0.0.1 refused\n10.0.2.2 unreachable\n1.1.1.1 unreachable\n");
  });

  test("processes of one sandbox talk over its own loopback", async () => {
    const r = await h.exec(a, {
      command: `python3 -c "
import socket, threading
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(b'pong'); c.close()
threading.Thread(target=serve).start()
s = socket.create_connection(('127.0.0.1', port)); print(s.recv(4).decode())
"`,
    });
    assert.equal(r.stdout, "pong\n");
  });

  test("a fork bomb is contained and the sandbox and host stay usable", async () => {
    const r = await h.exec(a, { command: "bomb() { bomb | bomb & }; bomb; sleep 2; echo still-here", timeoutMs: 8000 });
    assert.ok(r.reason === "timeout" || r.stdout.includes("still-here"), JSON.stringify(r));
    const after1 = await h.exec(a, { command: "echo alive" });
    assert.equal(after1.stdout, "alive\n");
    const other = await h.exec(b, { command: "echo other-alive" });
    assert.equal(other.stdout, "other-alive\n");
  });

  test("pids limit holds", async () => {
    const r = await h.exec(a, {
      command: `python3 -c "
import os, time
n = 0
try:
    while n < 400:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        n += 1
except OSError as e:
    print('fork failed', e.errno)
print(len([p for p in os.listdir('/proc') if p.isdigit()]))
"`,
      timeoutMs: 20000,
    });
    const [failure, count] = r.stdout.trim().split("\n");
    assert.equal(failure, "fork failed 11");
    // The whole sandbox (holder, helper, python and its children) stays within pids: 256.
    assert.ok(Number(count) > 200 && Number(count) <= 256, `process count ${count}`);
  });

  test("a memory bomb is reported as oom and the sandbox survives", async () => {
    const r = await h.exec(a, { command: "python3 -c 'b = []\nwhile True: b.append(bytearray(16 << 20))'" });
    assert.equal(r.reason, "oom");
    assert.equal((await h.exec(a, { command: "echo ok" })).stdout, "ok\n");
  });

  test("a disk fill stops at the sandbox's storage size (1Gi) and takes nothing from other sandboxes", async () => {
    const big = await h.exec(a, { command: "fallocate -l 2G /workspace/huge; echo rc=$?; rm -f /workspace/huge", timeoutMs: 60_000 });
    assert.match(big.stderr, /No space left on device/);
    const fill = await h.exec(a, { command: "dd if=/dev/zero of=/workspace/fill bs=1M count=1100 status=none; echo rc=$?; stat -c %s /workspace/fill", timeoutMs: 120_000 });
    assert.match(fill.stderr, /No space left on device/);
    const [rc, size] = fill.stdout.trim().split("\n");
    assert.equal(rc, "rc=1");
    assert.ok(Number(size) > 900 * 2 ** 20 && Number(size) <= 2 ** 30, `filled ${size} bytes`);
    // The other sandbox writes as usual; this one recovers once the file is gone.
    assert.equal((await h.exec(b, { command: "head -c 1048576 /dev/zero > /workspace/x && stat -c %s /workspace/x" })).stdout, "1048576\n");
    assert.equal((await h.exec(a, { command: "rm /workspace/fill; echo ok > /workspace/after && cat /workspace/after" })).stdout, "ok\n");
  });

  test("the server's runtime socket is not reachable", async () => {
    const r = await h.exec(a, { command: `ls -la ${h.dataDir} 2>&1; ls /run 2>&1` });
    assert.doesNotMatch(r.stdout, /runtime\.sock/);
  });
});
