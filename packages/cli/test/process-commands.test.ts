/**
 * `agentbox run`, `ps`, `logs` and `kill`, run as child processes against the
 * SDK's FAKE process server (packages/sdk/test/fake-process-server.ts: node:http
 * + ws, speaking the wire contract, driven by each test). They check the CLI's
 * own behaviour: arguments, output, stdin, signals, exit codes. The same
 * commands against the real server belong with cli.test.ts.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import type * as FakeModule from "../../sdk/dist/test/fake-process-server.js";

// The fake lives in the SDK's tests; its compiled form is found from here at run time.
const { FakeProcessServer, FAKE_KEY } = (await import(
  new URL("../../../sdk/dist/test/fake-process-server.js", import.meta.url).href
)) as typeof FakeModule;
type Fake = FakeModule.FakeProcessServer;

const CLI = fileURLToPath(new URL("../src/main.js", import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Child {
  child: ChildProcessWithoutNullStreams;
  done: Promise<Run>;
}

function start(fake: Fake, args: string[], opts: { stdin?: string | null } = {}): Child {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", AGENTBOX_URL: fake.url, AGENTBOX_API_KEY: FAKE_KEY },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const done = new Promise<Run>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
  // null: leave our end of its stdin open (the test writes or ends it later).
  if (opts.stdin !== null) child.stdin.end(opts.stdin ?? "");
  return { child, done };
}

function cli(fake: Fake, args: string[], opts: { stdin?: string } = {}): Promise<Run> {
  return start(fake, args, opts).done;
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe("agentbox process commands (fake server)", () => {
  test("ps prints a table, and the API's list with --json", async () => {
    await using fake = await FakeProcessServer.start();
    fake.addProcess("web", { command: "python3 -m http.server", argv: undefined, pid: 7 });
    fake.addProcess("job", { argv: ["sh", "-c", "echo 'hi there'"], pid: 8 });
    fake.finish("job", { exitCode: 0 });
    fake.addProcess("slow", { argv: ["sleep", "99"], pid: 9 });
    fake.finish("slow", { exitCode: null, signal: "SIGKILL", reason: "timeout" });
    const table = await cli(fake, ["ps", "sb-1"]);
    assert.equal(table.stderr, "");
    assert.equal(table.code, 0);
    assert.deepEqual(table.stdout.split("\n"), [
      "ID    PID  STATUS   EXIT               COMMAND",
      "web   7    running  -                  python3 -m http.server",
      "job   8    exited   0                  sh -c 'echo '\\''hi there'\\'''",
      "slow  9    exited   SIGKILL (timeout)  sleep 99",
      "",
    ]);
    const json = await cli(fake, ["ps", "sb-1", "--json"]);
    assert.deepEqual(JSON.parse(json.stdout).map((p: { id: string }) => p.id), ["web", "job", "slow"]);
    const missing = await cli(fake, ["ps", "sb-nope"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: SANDBOX_NOT_FOUND: /);
  });

  test("logs prints what the server holds, to stdout and stderr; --json as lines", async () => {
    await using fake = await FakeProcessServer.start();
    const p = fake.addProcess("p");
    p.out.stdout = Buffer.from("0123456789out\n");
    p.out.stderr = Buffer.from("err\n");
    fake.evict("p", "stdout", 10);
    const r = await cli(fake, ["logs", "sb-1", "p"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "agentbox: warning: stdout bytes 0-10 were evicted from the process's log before they could be read\nerr\n");
    fake.finish("p", { exitCode: 2 });
    const json = await cli(fake, ["logs", "sb-1", "p", "--json"]);
    assert.equal(json.code, 0);
    assert.deepEqual(jsonLines(json.stdout), [
      { type: "truncated", stream: "stdout", requestedOffset: 0, availableOffset: 10 },
      { type: "stdout", data: "out\n", offset: 10 },
      { type: "stderr", data: "err\n", offset: 0 },
      { type: "exit", exitCode: 2 },
    ]);
    const missing = await cli(fake, ["logs", "sb-1", "nope"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: NOT_FOUND: /);
  });

  test("logs -f follows across a dropped connection and exits with the process's code", async () => {
    await using fake = await FakeProcessServer.start();
    const p = fake.addProcess("p");
    p.out.stdout = Buffer.from("old\n");
    const { done } = start(fake, ["logs", "-f", "sb-1", "p"]);
    await until("attach", () => fake.live("p").length === 1);
    fake.emit("p", "stdout", "one\n");
    fake.emit("p", "stderr", "warn\n");
    fake.dropAll();
    fake.emit("p", "stdout", "two\n"); // while it is away
    await until("reattach", () => fake.live("p").length === 1);
    fake.emit("p", "stdout", "three\n");
    fake.finish("p", { exitCode: 7 });
    const r = await done;
    assert.equal(r.stdout, "old\none\ntwo\nthree\n");
    assert.equal(r.stderr, "warn\n");
    assert.equal(r.code, 7);
    assert.equal(fake.connections[1]!.query.stdoutOffset, 8);
  });

  test("kill sends the signal asked for (SIGKILL by default) and prints the id", async () => {
    await using fake = await FakeProcessServer.start();
    fake.exitOnKill = false;
    fake.addProcess("p");
    const term = await cli(fake, ["kill", "sb-1", "p", "--signal", "term"]);
    assert.equal(term.code, 0);
    assert.equal(term.stdout, "p\n");
    const json = await cli(fake, ["kill", "sb-1", "p", "-s", "2", "--json"]);
    assert.equal(JSON.parse(json.stdout).id, "p");
    await cli(fake, ["kill", "sb-1", "p"]);
    assert.deepEqual(fake.get("p").kills, ["SIGTERM", "SIGINT", undefined]);
    const bad = await cli(fake, ["kill", "sb-1", "p", "-s", "SIGSEGV"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /unknown signal "SIGSEGV"/);
  });

  test("run starts the process, streams its output, passes stdin on and exits with its code", async () => {
    await using fake = await FakeProcessServer.start();
    const { done } = start(fake, ["run", "sb-1", "--id", "job", "--cwd", "/tmp", "-e", "A=1", "--timeout", "5000", "--", "sh", "-c", "cat; exit 3"], {
      stdin: "line 1\nline 2 é\n",
    });
    await until("stdin closed", () => fake.processes.get("job")?.stdinClosed === true);
    const post = fake.requests.find((r) => r.method === "POST" && r.path === "/v1/sandboxes/sb-1/processes");
    assert.deepEqual(post?.body, { argv: ["sh", "-c", "cat; exit 3"], id: "job", cwd: "/tmp", env: { A: "1" }, timeoutMs: 5000 });
    assert.equal(fake.get("job").input.join(""), "line 1\nline 2 é\n");
    await until("attach", () => fake.live("job").length === 1);
    fake.emit("job", "stdout", "line 1\n");
    fake.emit("job", "stderr", "oops\n");
    fake.emit("job", "stdout", "line 2 é\n");
    fake.finish("job", { exitCode: 3 });
    const r = await done;
    assert.equal(r.stdout, "line 1\nline 2 é\n");
    assert.equal(r.stderr, "oops\n");
    assert.equal(r.code, 3);
  });

  test("run: timeout exits 124, a signal 128+N; --json prints one line per event", async () => {
    await using fake = await FakeProcessServer.start();
    const timeout = start(fake, ["run", "sb-1", "--id", "t", "--", "sleep", "10"]);
    await until("attach", () => fake.live("t").length === 1);
    fake.finish("t", { exitCode: null, signal: "SIGKILL", reason: "timeout" });
    assert.equal((await timeout.done).code, 124);

    const json = start(fake, ["run", "sb-1", "--json", "--id", "j", "--", "echo 'a b'"]);
    await until("attach", () => fake.live("j").length === 1);
    fake.emit("j", "stdout", "a b\n");
    fake.finish("j", { exitCode: null, signal: "SIGTERM" });
    const r = await json.done;
    assert.equal(r.code, 143);
    assert.deepEqual(jsonLines(r.stdout), [
      { type: "started", id: "j", pid: fake.get("j").info.pid },
      { type: "stdout", data: "a b\n", offset: 0 },
      { type: "exit", exitCode: null, signal: "SIGTERM" },
    ]);
    assert.equal(fake.get("j").info.command, "echo 'a b'");
  });

  test("run: the first Ctrl-C sends SIGINT to the process, the second SIGKILL", async () => {
    await using fake = await FakeProcessServer.start();
    fake.exitOnKill = false;
    const { child, done } = start(fake, ["run", "sb-1", "--id", "p", "--", "sleep", "100"], { stdin: null });
    await until("attach", () => fake.live("p").length === 1);
    child.kill("SIGINT");
    await until("SIGINT", () => fake.get("p").kills.length === 1);
    child.kill("SIGINT");
    await until("SIGKILL", () => fake.get("p").kills.length === 2);
    assert.deepEqual(fake.get("p").kills, ["SIGINT", "SIGKILL"]);
    assert.equal(fake.get("p").stdinClosed, false, "stdin stays open while ours is");
    fake.finish("p", { exitCode: null, signal: "SIGKILL" });
    const r = await done;
    assert.equal(r.code, 137);
  });

  test("run --no-stdin closes the process's stdin; -d prints the id and leaves it running", async () => {
    await using fake = await FakeProcessServer.start();
    const noStdin = start(fake, ["run", "sb-1", "--no-stdin", "--id", "n", "--", "cat"], { stdin: null });
    await until("stdin closed", () => fake.processes.get("n")?.stdinClosed === true);
    await until("attach", () => fake.live("n").length === 1);
    fake.finish("n", { exitCode: 0 });
    assert.equal((await noStdin.done).code, 0);
    assert.deepEqual(fake.get("n").input, []);

    const detached = await cli(fake, ["run", "sb-1", "-d", "--", "python3", "-m", "http.server"]);
    assert.equal(detached.code, 0);
    assert.equal(detached.stdout, "proc-1\n");
    assert.equal(fake.get("proc-1").info.status, "running");
    assert.equal(fake.get("proc-1").stdinClosed, false);
    const json = await cli(fake, ["run", "sb-1", "-d", "--json", "--id", "x", "--", "true"]);
    assert.equal(JSON.parse(json.stdout).id, "x");

    const badId = await cli(fake, ["run", "sb-1", "--id", "no spaces", "--", "true"]);
    assert.equal(badId.code, 1);
    assert.match(badId.stderr, /a process id is 1-64 characters/);
  });
});
