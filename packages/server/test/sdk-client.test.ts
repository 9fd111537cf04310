/**
 * The real SDK against a real server (real runtime, real bubblewrap sandboxes).
 * One sandbox is shared by the exec tests; the lifecycle tests make their own.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agentbox, isAgentboxError, type ProcessChunk, type ProcessHandle, type Sandbox } from "@agentbox/sdk";
import { removeDataDir, startHarness, type Harness } from "./harness.js";

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
      // get adds the live resource use; the rest is the same record.
      const { usage, ...rest } = got.info;
      assert.deepEqual(rest, sb.info);
      // bubblewrap, its pid 1 and (once its setup ends, just after the create answers) the holder.
      assert.ok([2, 3].includes(usage?.processes ?? 0), `processes ${usage?.processes}`);
      assert.deepEqual(JSON.parse(JSON.stringify(got)), got.info);
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

/** `count` bursts of `lines` numbered lines (`<burst>-<line>\n`), `sleep` seconds apart: the command, and exactly what it prints. */
function numberedBursts(count: number, lines: number, sleep: number): { command: string; expected: string } {
  const command = `for i in $(seq 1 ${count}); do seq 1 ${lines} | sed "s/^/$i-/"; sleep ${sleep}; done`;
  let expected = "";
  for (let i = 1; i <= count; i++) for (let k = 1; k <= lines; k++) expected += `${i}-${k}\n`;
  return { command, expected };
}

/** Each chunk starts where the one before it (of the same stream) ended: no gap, no overlap. */
function assertContiguous(chunks: ProcessChunk[]): void {
  const end = { stdout: 0, stderr: 0 };
  for (const chunk of chunks) {
    assert.equal(chunk.offset, end[chunk.stream], `a ${chunk.stream} chunk at ${chunk.offset}, expected ${end[chunk.stream]}`);
    assert.equal(chunk.truncated, undefined);
    end[chunk.stream] += Buffer.byteLength(chunk.data, "utf8");
  }
}

describe("processes through the SDK", () => {
  let h: Harness;
  let client: Agentbox;
  let sb: Sandbox;

  before(async () => {
    h = await startHarness();
    client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
    sb = await client.sandboxes.create({ env: { FROM_CREATE: "yes" }, timeoutSeconds: 600 });
  });
  after(() => h.close());

  test("startProcess with a string runs in a shell; wait() gives the exit code and the output", async () => {
    const proc = await sb.startProcess('echo "out $FROM_CREATE $EXTRA"; echo err >&2; pwd; exit 7', { env: { EXTRA: "x" }, cwd: "/tmp" });
    assert.match(proc.id, /^[A-Za-z0-9._-]{1,64}$/);
    assert.equal(typeof proc.pid, "number");
    assert.equal(proc.sandboxId, sb.id);
    assert.equal(proc.info.command, 'echo "out $FROM_CREATE $EXTRA"; echo err >&2; pwd; exit 7');
    const result = await proc.wait();
    assert.deepEqual(result, { exitCode: 7, stdout: "out yes x\n/tmp\n", stderr: "err\n", truncated: { stdout: false, stderr: false } });
    assert.equal(proc.exited, true);
    assert.equal(proc.info.status, "exited");
    assert.equal(proc.info.exitCode, 7);
    assert.deepEqual(proc.offsets, { stdout: 15, stderr: 4 });
    // wait() again: the same result.
    assert.deepEqual(await proc.wait(), result);
  });

  test("startProcess with argv runs without a shell", async () => {
    const proc = await sb.startProcess(["printf", "[%s]", "a b", "$HOME", "*", "; exit 9"]);
    assert.deepEqual(proc.info.argv, ["printf", "[%s]", "a b", "$HOME", "*", "; exit 9"]);
    assert.equal(proc.info.command, undefined);
    const result = await proc.wait();
    assert.equal(result.stdout, "[a b][$HOME][*][; exit 9]");
    assert.equal(result.exitCode, 0);
    assert.equal((await (await sb.startProcess(["/no/such/program"])).wait()).exitCode, 127);
  });

  test("async iteration (however late it starts) and onStdout callbacks all see every chunk", async () => {
    const { command, expected } = numberedBursts(5, 500, 0.05);
    const fromOption: string[] = [];
    const proc = await sb.startProcess(command, { onStdout: (data) => fromOption.push(data) });
    const fromMethod: string[] = [];
    const fromEvent: ProcessChunk[] = [];
    proc.onStdout((data) => fromMethod.push(data));
    proc.on("chunk", (chunk) => fromEvent.push(chunk));
    const iterate = async (): Promise<ProcessChunk[]> => {
      const seen: ProcessChunk[] = [];
      for await (const chunk of proc) seen.push(chunk);
      return seen;
    };
    const early = iterate();
    // Let output arrive before the second iteration starts: it still begins with the first chunk.
    while (proc.offsets.stdout === 0) await new Promise((r) => setTimeout(r, 10));
    const late = iterate();
    const result = await proc.wait();
    const [earlyChunks, lateChunks] = await Promise.all([early, late]);

    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, expected);
    assert.ok(earlyChunks.length > 1, "the output came in several chunks");
    assert.deepEqual(lateChunks, earlyChunks);
    assert.deepEqual(fromEvent, earlyChunks);
    assertContiguous(earlyChunks);
    assert.equal(earlyChunks.map((c) => c.data).join(""), expected);
    assert.deepEqual(fromOption, earlyChunks.map((c) => c.data));
    assert.deepEqual(fromMethod, fromOption);
    // An iteration started after the exit replays everything, then ends.
    assert.deepEqual(await iterate(), earlyChunks);
  });

  test("stdout and stderr are told apart, in order, with their own offsets", async () => {
    const proc = await sb.startProcess("echo o1; sleep 0.1; echo e1 >&2; sleep 0.1; echo o2; sleep 0.1; echo e2 >&2");
    const chunks: ProcessChunk[] = [];
    const stderr: string[] = [];
    proc.onStderr((data) => stderr.push(data));
    for await (const chunk of proc) chunks.push(chunk);
    assert.deepEqual(
      chunks.map((c) => [c.stream, c.data, c.offset]),
      [["stdout", "o1\n", 0], ["stderr", "e1\n", 0], ["stdout", "o2\n", 3], ["stderr", "e2\n", 3]],
    );
    assert.deepEqual(stderr, ["e1\n", "e2\n"]);
  });

  test("sendInput and closeStdin reach the process (cat)", async () => {
    const proc = await sb.startProcess(["cat"]);
    await proc.sendInput("one\n");
    // Wait for the echo before sending more: input and output interleave.
    for await (const chunk of proc) {
      assert.equal(chunk.data, "one\n");
      break;
    }
    await proc.sendInput("twö ");
    await proc.sendInput("€😀\n");
    await proc.closeStdin();
    const result = await proc.wait();
    assert.equal(result.stdout, "one\ntwö €😀\n");
    assert.equal(result.exitCode, 0);
  });

  test("kill() ends the process and its children: SIGKILL by default, reason killed", async () => {
    const proc = await sb.startProcess("sleep 30 & sleep 30; echo never");
    const started = Date.now();
    await proc.kill();
    const result = await proc.wait();
    assert.equal(result.exitCode, null);
    assert.equal(result.signal, "SIGKILL");
    assert.equal(result.reason, "killed");
    assert.equal(result.stdout, "");
    assert.ok(Date.now() - started < 5000);
    assert.equal(proc.info.status, "exited");
    assert.equal(proc.info.reason, "killed");
    // Neither sleep is left running in the sandbox (its own pid 2 is `sleep infinity`).
    assert.equal((await sb.exec("ps -e -o args= | grep -c '^sleep 30$' || true")).stdout.trim(), "0");
    // kill() after the exit is a no-op.
    await proc.kill();
  });

  test("kill(signal) delivers that signal; a process that handles it exits on its own terms", async () => {
    // The signal goes to every process in the tree. A child forked but not yet exec'd still has the
    // shell's trap, so "ready" waits until the one child has become `sleep`: then only the shell traps.
    const proc = await sb.startProcess(
      `trap 'echo got TERM; exit 3' TERM; sleep 30 & until read -r c < /proc/$!/comm && [ "$c" = sleep ]; do :; done; echo ready; wait`,
    );
    for await (const chunk of proc) {
      assert.equal(chunk.data, "ready\n");
      break;
    }
    await proc.kill("SIGTERM");
    const result = await proc.wait();
    assert.equal(result.exitCode, 3);
    assert.equal(result.stdout, "ready\ngot TERM\n");
  });

  test("timeoutMs ends the process with reason timeout", async () => {
    const result = await (await sb.startProcess("echo start; sleep 30", { timeoutMs: 300 })).wait();
    assert.equal(result.reason, "timeout");
    assert.equal(result.exitCode, null);
    assert.equal(result.stdout, "start\n");
  });

  test("starting an existing id attaches to that process instead of starting another", async () => {
    const first = await sb.startProcess("echo first; sleep 0.5; echo done", { id: "same-id" });
    const again = await sb.startProcess("echo second", { id: "same-id" });
    assert.equal(first.id, "same-id");
    assert.equal(again.id, "same-id");
    assert.equal(again.pid, first.pid);
    assert.equal(again.info.command, "echo first; sleep 0.5; echo done");
    const [a, b] = await Promise.all([first.wait(), again.wait()]);
    assert.equal(a.stdout, "first\ndone\n");
    assert.deepEqual(b, a);
    // Even after the exit: the same, exited process, with all its output.
    const late = await sb.startProcess("echo third", { id: "same-id" });
    assert.equal(late.info.status, "exited");
    assert.deepEqual(await late.wait(), a);
    assert.equal((await sb.processes()).filter((p) => p.id === "same-id").length, 1);
  });

  test("getProcess(id, {stdoutOffset}) reattaches from an offset and gets exactly the rest", async () => {
    const lines = Array.from({ length: 8 }, (_, i) => `line ${i + 1} é\n`);
    const full = lines.join("");
    const proc = await sb.startProcess("for i in 1 2 3 4 5 6 7 8; do echo \"line $i é\"; sleep 0.1; done; echo bye >&2", { id: "resume" });
    let seen = "";
    for await (const chunk of proc) {
      seen += chunk.data;
      if (seen.length > 0) break;
    }
    proc.disconnect();
    assert.equal(proc.connected, false);
    assert.equal(proc.exited, false, "the process outlives the handle");
    const offsets = proc.offsets;
    assert.equal(offsets.stdout, Buffer.byteLength(seen));
    assert.ok(offsets.stdout < Buffer.byteLength(full));

    const rest = await sb.getProcess("resume", { stdoutOffset: offsets.stdout, stderrOffset: offsets.stderr });
    const chunks: ProcessChunk[] = [];
    rest.on("chunk", (c) => chunks.push(c));
    const result = await rest.wait();
    assert.equal(result.exitCode, 0);
    assert.equal(seen + result.stdout, full);
    assert.equal(result.stdout, Buffer.from(full).subarray(offsets.stdout).toString());
    assert.equal(result.stderr, "bye\n");
    assert.equal(chunks.find((c) => c.stream === "stdout")?.offset, offsets.stdout);
    assert.deepEqual(rest.offsets, { stdout: Buffer.byteLength(full), stderr: 4 });

    // After the exit too, from any offset: "line 8 é\n" is the last 10 bytes.
    const tail = await sb.getProcess("resume", { stdoutOffset: Buffer.byteLength(full) - 10, stderrOffset: 4 });
    assert.deepEqual(await tail.wait(), { exitCode: 0, stdout: "line 8 é\n", stderr: "", truncated: { stdout: false, stderr: false } });

    // The disconnected handle can attach again, from its own offsets.
    proc.reconnect();
    const resumed = await proc.wait();
    assert.equal(resumed.stdout, full);
    assert.equal(resumed.stderr, "bye\n");
  });

  test("multi-byte characters arrive whole, even split across writes; invalid bytes arrive as U+FFFD", async () => {
    for (const format of ["binary", "json"] as const) {
      // "€" = e2 82 ac and "😀" = f0 9f 98 80, each written in two parts; then ff (never valid) and an unfinished e2 82 at the end.
      const proc = await sb.startProcess(
        ["sh", "-c", String.raw`printf 'a\342'; sleep 0.2; printf '\202\254 \360\237'; sleep 0.2; printf '\230\200\377b\n'; printf '\377' >&2; sleep 0.1; printf 'é\342\202'`],
        { format },
      );
      const chunks: ProcessChunk[] = [];
      proc.on("chunk", (c) => chunks.push(c));
      const result = await proc.wait();
      assert.equal(result.stdout, "a€ 😀\uFFFDb\né\uFFFD", format);
      assert.equal(result.stderr, "\uFFFD", format);
      // No chunk holds a lone surrogate or a cut character, and the offsets count bytes, not UTF-16 units.
      for (const chunk of chunks) assert.equal(chunk.data, Buffer.from(chunk.data, "utf8").toString("utf8"));
      assert.deepEqual(proc.offsets, { stdout: 1 + 3 + 1 + 4 + 1 + 2 + 2 + 2, stderr: 1 }, format);
      // Chunks start only on character boundaries of the bytes: a|€| |😀|ff|b|\n|é|e2 82.
      const offsets = chunks.filter((c) => c.stream === "stdout").map((c) => c.offset);
      assert.equal(offsets[0], 0);
      for (let i = 1; i < offsets.length; i++) assert.ok(offsets[i]! > offsets[i - 1]!, `${format}: offsets ${offsets.join(",")}`);
      for (const offset of offsets) assert.ok([0, 1, 4, 5, 9, 10, 11, 12, 14].includes(offset), `${format}: a chunk at ${offset}`);
    }
  });

  test("processes(), process(), processLogs() and killProcess() without a handle", async () => {
    const proc = await sb.startProcess("echo out; echo err >&2; sleep 30", { id: "listed" });
    while (proc.offsets.stdout < 4 || proc.offsets.stderr < 4) await new Promise((r) => setTimeout(r, 10));
    const listed = (await sb.processes()).find((p) => p.id === "listed");
    assert.equal(listed?.status, "running");
    assert.equal(listed?.pid, proc.pid);
    assert.equal(listed?.command, "echo out; echo err >&2; sleep 30");
    assert.equal((await sb.process("listed")).status, "running");

    const logs = await sb.processLogs("listed");
    assert.equal(logs.stdout, "out\n");
    assert.equal(logs.stderr, "err\n");
    assert.equal(logs.stdoutOffset, 4);
    assert.equal(logs.stderrOffset, 4);
    const from2 = await sb.processLogs("listed", { stdout: 2, stderr: 4 });
    assert.equal(from2.stdout, "t\n");
    assert.equal(from2.stderr, "");

    await sb.killProcess("listed", "SIGTERM");
    const result = await proc.wait();
    assert.equal(result.signal, "SIGTERM");
    assert.equal(result.reason, "killed");
    const after = await sb.process("listed");
    assert.equal(after.status, "exited");
    assert.equal(after.signal, "SIGTERM");
    assert.equal(typeof after.endedAt, "string");

    const missing = await sdkError(sb.process("no-such-process"));
    assert.equal(missing.status, 404);
    const attach = await sdkError(sb.getProcess("no-such-process"));
    assert.equal(attach.status, 404);
  });

  test("bad input is INVALID_REQUEST and starts nothing", async () => {
    const before = (await sb.processes()).length;
    const e = await sdkError(sb.startProcess("true", { id: "not a valid id!" }));
    assert.equal(e.code, "INVALID_REQUEST");
    assert.equal(e.status, 400);
    const t = await sdkError(sb.startProcess("true", { timeoutMs: -1 }));
    assert.equal(t.code, "INVALID_REQUEST");
    assert.equal((await sb.processes()).length, before);
  });
});

describe("SDK process stream across a server restart", () => {
  test("the handle reconnects by itself and wait() returns the complete, byte-identical output", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "agentbox-sdk-restart-"));
    let first: Harness | undefined;
    let second: Harness | undefined;
    let proc: ProcessHandle | undefined;
    try {
      first = await startHarness({ dataDir, keepRuntime: true });
      const port = Number(new URL(first.server.url).port);
      const client = new Agentbox({ url: first.server.url, apiKey: first.server.apiKey });
      const sb = await client.sandboxes.create();
      const { command, expected } = numberedBursts(30, 2000, 0.05);
      proc = await sb.startProcess(command, { id: "long" });
      const chunks: ProcessChunk[] = [];
      const reconnecting: Array<{ attempt: number; delayMs: number; reason: string }> = [];
      let starts = 0;
      proc.on("chunk", (c) => chunks.push(c));
      proc.on("reconnecting", (info) => reconnecting.push(info));
      proc.on("started", () => starts++);
      while (proc.offsets.stdout === 0) await new Promise((r) => setTimeout(r, 10));

      await first.close(); // closes the stream with 1001; the process goes on in the runtime
      first = undefined;
      assert.equal(proc.exited, false);
      // Down long enough for a try to fail (the second `reconnecting`), however long that takes.
      for (let i = 0; i < 1000 && reconnecting.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      const downAt = proc.offsets.stdout;
      second = await startHarness({ dataDir, keepRuntime: false, port });
      assert.equal(second.server.url, client.url);

      const result = await proc.wait();
      assert.equal(result.exitCode, 0);
      assert.equal(result.truncated.stdout, false);
      assert.ok(Buffer.from(result.stdout).equals(Buffer.from(expected)), "stdout differs from what the process printed");
      assert.equal(proc.offsets.stdout, Buffer.byteLength(expected));
      assert.ok(downAt < Buffer.byteLength(expected), "the server was down while the process was still printing");
      assertContiguous(chunks);
      assert.ok(reconnecting.length >= 2, `expected a few reconnection tries, got ${JSON.stringify(reconnecting)}`);
      assert.match(reconnecting[0]!.reason, /1001/);
      assert.equal(reconnecting[0]!.delayMs, 0);
      assert.ok(starts >= 2, "attached again after the restart");
      // The new server tells the same story.
      const logs = await sb.processLogs("long");
      assert.equal(logs.stdoutOffset, Buffer.byteLength(expected));
    } finally {
      proc?.disconnect();
      await first?.close();
      await second?.close();
      await removeDataDir(dataDir);
    }
  });
});
