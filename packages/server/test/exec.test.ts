import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startHarness, type Harness } from "./harness.js";

describe("stateless exec", () => {
  let h: Harness;
  let id: string;
  before(async () => {
    h = await startHarness();
    id = (await h.createSandbox({ env: { SANDBOX_VAR: "from-create" } })).id;
  });
  after(() => h.close());

  test("exit codes pass through exactly", async () => {
    for (const code of [0, 1, 42, 255]) {
      const r = await h.exec(id, { command: `exit ${code}` });
      assert.equal(r.exitCode, code);
      assert.equal(r.reason, undefined);
    }
  });

  test("stdout and stderr stay separate", async () => {
    const r = await h.exec(id, { command: "echo out1; echo err1 >&2; printf out2; printf err2 >&2" });
    assert.equal(r.stdout, "out1\nout2");
    assert.equal(r.stderr, "err1\nerr2");
    assert.deepEqual(r.truncated, { stdout: false, stderr: false });
    assert.equal(typeof r.durationMs, "number");
  });

  test("argv runs without a shell", async () => {
    const r = await h.exec(id, { argv: ["printf", "%s|", "a b", "$HOME", "*"] });
    assert.equal(r.stdout, "a b|$HOME|*|");
  });

  test("stdin reaches the command", async () => {
    const r = await h.exec(id, { command: "tr a-z A-Z", stdin: "hello sandbox\n" });
    assert.equal(r.stdout, "HELLO SANDBOX\n");
    const none = await h.exec(id, { command: "cat" });
    assert.equal(none.stdout, "");
    assert.equal(none.exitCode, 0);
  });

  test("binary stdin arrives byte-exact through stdinBase64", async () => {
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10, 0]);
    const r = await h.exec(id, { command: "od -An -tx1 | tr -s ' '", stdinBase64: bytes.toString("base64") });
    assert.equal(r.stdout, " 00 01 02 ff fe 80 0a 00\n");
    const nul = await h.exec(id, { command: "wc -c", stdin: "a\u0000b" });
    assert.equal(nul.stdout.trim(), "3");
  });

  test("env and cwd: defaults, sandbox env, per-call env, relative cwd", async () => {
    const r = await h.exec(id, { command: 'echo "$SANDBOX_VAR $CALL_VAR $HOME $USER"; pwd', env: { CALL_VAR: "per-call" } });
    assert.equal(r.stdout, "from-create per-call /home/user user\n/workspace\n");
    await h.exec(id, { command: "mkdir -p sub/dir" });
    assert.equal((await h.exec(id, { command: "pwd", cwd: "sub/dir" })).stdout, "/workspace/sub/dir\n");
    assert.equal((await h.exec(id, { command: "pwd", cwd: "/tmp" })).stdout, "/tmp\n");
    const missing = await h.exec(id, { command: "pwd", cwd: "/nope" });
    assert.equal(missing.exitCode, 126);
    assert.match(missing.stderr, /cannot change directory to \/nope/);
  });

  test("the server's environment never reaches the sandbox", async () => {
    process.env.AGENTBOX_TEST_SECRET = "leak-me";
    const r = await h.exec(id, { command: "env" });
    assert.doesNotMatch(r.stdout, /leak-me|AGENTBOX_API_KEY|AGENTBOX_TEST_SECRET/);
    const keys = r.stdout.trim().split("\n").map((l: string) => l.split("=")[0]).sort();
    assert.deepEqual(keys, ["HOME", "HOSTNAME", "LANG", "LOGNAME", "PATH", "PWD", "SANDBOX_VAR", "USER"].sort());
  });

  test("timeout kills the command and a background child it started", async () => {
    const started = Date.now();
    const r = await h.exec(id, { command: "(sleep 30; echo survived > /workspace/bg-timeout) & echo started; sleep 30", timeoutMs: 500 });
    assert.equal(r.reason, "timeout");
    assert.equal(r.exitCode, null);
    assert.equal(r.signal, "SIGKILL");
    assert.equal(r.stdout, "started\n");
    assert.ok(Date.now() - started < 10_000);
    const ps = await h.exec(id, { command: "ps -eo comm= | grep -c '^sleep$' || true" });
    assert.equal(ps.stdout.trim(), "1", "only the namespace holder's sleep is left");
  });

  test("background children left behind are killed when the exec returns, even in a new session", async () => {
    const r = await h.exec(id, { command: "setsid sleep 60 > /dev/null 2>&1 & nohup sleep 61 > /dev/null 2>&1 & echo ok" });
    assert.equal(r.stdout, "ok\n");
    const ps = await h.exec(id, { command: "ps -eo args= | grep -E '^sleep 6[01]$' | wc -l" });
    assert.equal(ps.stdout.trim(), "0");
  });

  test("output over the cap is cut and flagged, per stream", async () => {
    const r = await h.exec(id, { command: "head -c 5000 /dev/zero | tr '\\0' a; echo small >&2", maxOutputBytes: 1000 });
    assert.equal(r.stdout, "a".repeat(1000));
    assert.deepEqual(r.truncated, { stdout: true, stderr: false });
    assert.equal(r.stderr, "small\n");
    const big = await h.exec(id, { command: "yes | head -c 11000000; head -c 3000000 /dev/zero >&2" });
    assert.equal(big.stdout.length, 10 * 1024 * 1024);
    assert.equal(big.stderr, "\0".repeat(3000000));
    assert.equal(big.truncated.stdout, true);
  });

  test("a cut never splits a UTF-8 character", async () => {
    const r = await h.exec(id, { command: "printf 'ééééé'", maxOutputBytes: 5 });
    assert.equal(r.stdout, "éé");
    assert.equal(r.truncated.stdout, true);
  });

  test("concurrent execs in one sandbox each get their own output", async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => h.exec(id, { command: `sleep 0.2; echo run-${i}; echo e-${i} >&2; exit ${i}` })),
    );
    results.forEach((r, i) => {
      assert.equal(r.stdout, `run-${i}\n`);
      assert.equal(r.stderr, `e-${i}\n`);
      assert.equal(r.exitCode, i);
    });
  });

  test("a missing program is exit code 127", async () => {
    const r = await h.exec(id, { argv: ["/no/such/program"] });
    assert.equal(r.exitCode, 127);
  });

  test("the filesystem persists between execs; processes do not", async () => {
    await h.exec(id, { command: "echo persisted > /workspace/file.txt; export GONE=1" });
    const r = await h.exec(id, { command: 'cat /workspace/file.txt; echo "[$GONE]"' });
    assert.equal(r.stdout, "persisted\n[]\n");
  });
});
