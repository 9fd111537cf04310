/**
 * Shell sessions through the real server, runtime and sandbox: state that
 * persists, output and exit codes exactly as the shell produced them, and
 * what happens on timeout, exit and delete.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startHarness, type Harness } from "./harness.js";

let h: Harness;
let sb: string;

async function session(body: Record<string, unknown> = {}): Promise<string> {
  const res = await h.api("POST", `/v1/sandboxes/${sb}/sessions`, body);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.id;
}

async function run(sid: string, command: string, extra: Record<string, unknown> = {}) {
  const res = await h.api("POST", `/v1/sandboxes/${sb}/sessions/${sid}/exec`, { command, ...extra });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

before(async () => {
  h = await startHarness();
  sb = (await h.createSandbox()).id;
});
after(async () => {
  await h.close();
});

describe("sessions", () => {
  test("cd, export, functions and aliases persist to the next call", async () => {
    const s = await session();
    await run(s, "mkdir -p /tmp/a/b && cd /tmp/a/b");
    await run(s, "export GREETING='hello world'");
    await run(s, "greet() { echo \"fn:$1:$GREETING\"; }");
    await run(s, "alias say='echo alias-says'");
    const r = await run(s, "pwd; greet x; say hi");
    assert.equal(r.stdout, "/tmp/a/b\nfn:x:hello world\nalias-says hi\n");
    assert.equal(r.stderr, "");
    assert.equal(r.exitCode, 0);
    const info = await h.api("GET", `/v1/sandboxes/${sb}/sessions/${s}`);
    assert.equal(info.body.cwd, "/tmp/a/b");
    assert.equal(info.body.status, "idle");
  });

  test("create takes cwd and env; the created session reports its cwd", async () => {
    const res = await h.api("POST", `/v1/sandboxes/${sb}/sessions`, { cwd: "/tmp", env: { ONLY_HERE: "yes" } });
    assert.equal(res.status, 201);
    assert.equal(res.body.cwd, "/tmp");
    const r = await run(res.body.id, 'echo "$PWD $ONLY_HERE"');
    assert.equal(r.stdout, "/tmp yes\n");
  });

  test("two sessions are independent, and top-level exec sees neither", async () => {
    const a = await session();
    const b = await session();
    await run(a, "cd /tmp && export WHO=a && f() { echo a; }");
    await run(b, "cd / && export WHO=b");
    assert.equal((await run(a, 'echo "$PWD $WHO"; f')).stdout, "/tmp a\na\n");
    const rb = await run(b, 'echo "$PWD $WHO"; type f >/dev/null 2>&1 || echo no-f');
    assert.equal(rb.stdout, "/ b\nno-f\n");
    const top = await h.exec(sb, { command: 'echo "$PWD [${WHO-unset}]"' });
    assert.equal(top.stdout, "/workspace [unset]\n");
  });

  test("stdout and stderr stay separate", async () => {
    const s = await session();
    const r = await run(s, "echo out1; echo err1 >&2; echo out2; echo err2 >&2");
    assert.equal(r.stdout, "out1\nout2\n");
    assert.equal(r.stderr, "err1\nerr2\n");
  });

  test("exit codes are exact: 0, 1, 127, 255", async () => {
    const s = await session();
    assert.equal((await run(s, "true")).exitCode, 0);
    assert.equal((await run(s, "false")).exitCode, 1);
    const missing = await run(s, "no-such-command-xyz");
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /no-such-command-xyz: command not found/);
    assert.equal((await run(s, "(exit 255)")).exitCode, 255);
    assert.equal((await run(s, "sh -c 'exit 42'")).exitCode, 42);
  });

  test("output that prints marker-like text, or lacks a trailing newline, is returned exactly", async () => {
    const s = await session();
    const fake = "__agentbox_00000000000000000000000000000000__:0:/\0";
    const r = await run(s, `printf '%s' 'a${"__agentbox_"}'; printf '__agentbox_%s__:0:/\\0' 0123; printf 'no-newline'`);
    assert.equal(r.stdout, "a__agentbox___agentbox_0123__:0:/\0no-newline");
    const r2 = await run(s, `printf '${fake.replace("\0", "\\0")}' ; printf x >&2`);
    assert.equal(r2.stdout, fake);
    assert.equal(r2.stderr, "x");
    assert.equal(r2.exitCode, 0);
    // The session is still in step afterwards.
    assert.equal((await run(s, "echo next")).stdout, "next\n");
  });

  test("heredocs, multi-line commands, quotes and unicode", async () => {
    const s = await session();
    const r = await run(s, "cat <<'EOF'\nline 'one'\n\"two\" $HOME \\n\nEOF\nfor i in 1 2; do\n  echo \"i=$i\"\ndone\necho 'żółw ✓'");
    assert.equal(r.stdout, "line 'one'\n\"two\" $HOME \\n\ni=1\ni=2\nżółw ✓\n");
    const bad = await run(s, "if true; then");
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /syntax error/);
    assert.equal((await run(s, "echo still-alive")).stdout, "still-alive\n");
  });

  test("a command that reads stdin does not eat the next command; stdin can be given", async () => {
    const s = await session();
    const r = await run(s, "cat; read x; echo \"read:[$x] rc=$?\"");
    assert.equal(r.stdout, "read:[] rc=1\n");
    assert.equal((await run(s, "echo after")).stdout, "after\n");
    const withInput = await run(s, "tr a-z A-Z", { stdin: "hello\nworld" });
    assert.equal(withInput.stdout, "HELLO\nWORLD");
  });

  test("calls on one session run one at a time, in order", async () => {
    const s = await session();
    await run(s, "n=0");
    const calls = Array.from({ length: 8 }, (_, i) =>
      h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { command: `sleep 0.0$((8 - ${i})); n=$((n + 1)); echo "${i}:$n"` }),
    );
    const results = await Promise.all(calls);
    assert.deepEqual(results.map((r) => r.body.stdout), Array.from({ length: 8 }, (_, i) => `${i}:${i + 1}\n`));
  });

  test("argv is run as quoted words in the session", async () => {
    const s = await session();
    await run(s, "cd /tmp");
    const res = await h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { argv: ["printf", "%s|", "a b", "it's", "$HOME", "pwd"] });
    assert.equal(res.body.stdout, "a b|it's|$HOME|pwd|");
  });

  test("a timed-out command is killed with its children and the session ends", async () => {
    const s = await session();
    await run(s, "sleep 300 & echo $! > /tmp/bg-pid");
    const r = await run(s, "sleep 300; echo never", { timeoutMs: 300 });
    assert.equal(r.reason, "timeout");
    assert.equal(r.exitCode, null);
    assert.equal(r.stdout, "");
    const again = await h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { command: "echo hi" });
    assert.equal(again.status, 410);
    assert.equal(again.body.error.code, "SESSION_TERMINATED");
    const info = await h.api("GET", `/v1/sandboxes/${sb}/sessions/${s}`);
    assert.equal(info.body.status, "terminated");
    assert.equal(info.body.terminatedReason, "timeout");
    // The background sleep went with the session.
    const ps = await h.exec(sb, { command: "kill -0 $(cat /tmp/bg-pid) 2>/dev/null && echo alive || echo gone" });
    assert.equal(ps.stdout, "gone\n");
  });

  test("a builtin loop that never ends is stopped by the session's timeout", async () => {
    const s = await session({ timeoutMs: 300 });
    const r = await run(s, "while :; do :; done");
    assert.equal(r.reason, "timeout");
    assert.equal((await h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { command: "true" })).status, 410);
  });

  test("exit ends the session cleanly with its code", async () => {
    const s = await session();
    const r = await run(s, "echo bye; exit 7");
    assert.equal(r.stdout, "bye\n");
    assert.equal(r.exitCode, 7);
    assert.equal(r.reason, undefined);
    const info = await h.api("GET", `/v1/sandboxes/${sb}/sessions/${s}`);
    assert.equal(info.body.status, "terminated");
    assert.equal(info.body.terminatedReason, "exit");
    assert.equal(info.body.exitCode, 7);
    const later = await h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { command: "true" });
    assert.equal(later.body.error.code, "SESSION_TERMINATED");
    assert.match(later.body.error.message, /exited with code 7/);
  });

  test("a process started from a session gets a snapshot of its cwd and env, and writes nothing back", async () => {
    const s = await session();
    await run(s, "cd /tmp && export SNAP=one && LOCAL_ONLY=x");
    const start = await h.api("POST", `/v1/sandboxes/${sb}/processes`, {
      id: "from-session",
      sessionId: s,
      command: 'echo "$PWD $SNAP [${LOCAL_ONLY-unset}]"; cd /; export SNAP=changed',
    });
    assert.equal(start.status, 201, JSON.stringify(start.body));
    assert.equal(start.body.sessionId, s);
    assert.equal(start.body.cwd, "/tmp");
    const done = await h.api("GET", `/v1/sandboxes/${sb}/processes/from-session/wait?timeoutMs=10000`);
    assert.equal(done.body.exitCode, 0);
    const logs = await h.api("GET", `/v1/sandboxes/${sb}/processes/from-session/logs`);
    assert.equal(logs.body.stdout, "/tmp one [unset]\n");
    assert.equal((await run(s, 'echo "$PWD $SNAP"')).stdout, "/tmp one\n");
    const top = await h.api("POST", `/v1/sandboxes/${sb}/processes`, { id: "top-level", command: 'echo "$PWD [${SNAP-unset}]"' });
    assert.equal(top.body.cwd, "/workspace");
    await h.api("GET", `/v1/sandboxes/${sb}/processes/top-level/wait?timeoutMs=10000`);
    assert.equal((await h.api("GET", `/v1/sandboxes/${sb}/processes/top-level/logs`)).body.stdout, "/workspace [unset]\n");
  });

  test("list, delete (killing what the session started), and wrong ids", async () => {
    const s = await session({ id: "named-session" });
    assert.equal(s, "named-session");
    const again = await h.api("POST", `/v1/sandboxes/${sb}/sessions`, { id: "named-session" });
    assert.equal(again.status, 200);
    await run(s, "sleep 300 & echo $! > /tmp/named-bg");
    const list = await h.api("GET", `/v1/sandboxes/${sb}/sessions`);
    assert.ok(list.body.sessions.some((x: { id: string }) => x.id === "named-session"));
    assert.equal((await h.api("DELETE", `/v1/sandboxes/${sb}/sessions/${s}`)).status, 200);
    const ps = await h.exec(sb, { command: "kill -0 $(cat /tmp/named-bg) 2>/dev/null && echo alive || echo gone" });
    assert.equal(ps.stdout, "gone\n");
    assert.equal((await h.api("GET", `/v1/sandboxes/${sb}/sessions/${s}`)).status, 404);
    assert.equal((await h.api("DELETE", `/v1/sandboxes/${sb}/sessions/${s}`)).status, 404);
    assert.equal((await h.api("POST", `/v1/sandboxes/${sb}/sessions/nope/exec`, { command: "true" })).status, 404);
    assert.equal((await h.api("POST", `/v1/sandboxes/${sb}/processes`, { sessionId: "nope", command: "true" })).status, 404);
    assert.equal((await h.api("POST", `/v1/sandboxes/nope/sessions`, {})).status, 404);
  });

  test("bad input gets a 400 naming the field", async () => {
    const bad = await h.api("POST", `/v1/sandboxes/${sb}/sessions`, { cwd: 5 });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /^cwd:/);
    const noDir = await h.api("POST", `/v1/sandboxes/${sb}/sessions`, { cwd: "/does/not/exist" });
    assert.equal(noDir.status, 400);
    assert.match(noDir.body.error.message, /cannot change directory/);
    const s = await session();
    const withCwd = await h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { command: "true", cwd: "/" });
    assert.equal(withCwd.status, 400);
    assert.match(withCwd.body.error.message, /^cwd:/);
    const nul = await h.api("POST", `/v1/sandboxes/${sb}/sessions/${s}/exec`, { command: "cat", stdinBase64: Buffer.from("a\0b").toString("base64") });
    assert.equal(nul.status, 400);
    assert.equal((await run(s, "echo ok")).stdout, "ok\n");
  });

  test("sessions end with their sandbox", async () => {
    const other = (await h.createSandbox()).id;
    const res = await h.api("POST", `/v1/sandboxes/${other}/sessions`, {});
    assert.equal(res.status, 201);
    await h.api("DELETE", `/v1/sandboxes/${other}`);
    const after = await h.api("POST", `/v1/sandboxes/${other}/sessions/${res.body.id}/exec`, { command: "true" });
    assert.equal(after.status, 409);
    assert.equal(after.body.error.code, "SANDBOX_NOT_READY");
  });
});
