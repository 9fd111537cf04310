/**
 * The built `agentbox` command, run as a child process against a real server
 * started in this process (real runtime, real bubblewrap sandboxes).
 *
 * Children are spawned asynchronously: a synchronous spawn would block the
 * event loop the in-process server answers on.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { startServer, type RunningServer } from "@agentbox/server";

const CLI = fileURLToPath(new URL("../src/main.js", import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("agentbox CLI", () => {
  let server: RunningServer;
  let dataDir: string;
  let workDir: string;
  let id: string;

  /** Run the CLI with the server's URL and key in its environment (and nothing else of ours). */
  function cli(args: string[], opts: { stdin?: string | Buffer; env?: Record<string, string> } = {}): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], {
        cwd: workDir,
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          AGENTBOX_URL: server.url,
          AGENTBOX_API_KEY: server.apiKey,
          ...opts.env,
        },
        stdio: ["pipe", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(opts.stdin ?? "");
    });
  }

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "agentbox-cli-test-"));
    workDir = mkdtempSync(join(tmpdir(), "agentbox-cli-cwd-"));
    server = await startServer({ port: 0, dataDir, keepRuntime: false });
  });
  after(async () => {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(workDir, { recursive: true, force: true });
  });

  test("sandbox create --json prints a ready sandbox", async () => {
    const r = await cli(["sandbox", "create", "--json", "--timeout", "600", "-m", "suite=cli", "-e", "GREETING=hello"]);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
    const info = JSON.parse(r.stdout);
    assert.match(info.id, /^sb-[a-z0-9]{12}$/);
    assert.equal(info.status, "ready");
    assert.equal(info.template, "default");
    assert.deepEqual(info.metadata, { suite: "cli" });
    assert.equal(Date.parse(info.expiresAt) - Date.parse(info.createdAt), 600_000);
    id = info.id;
  });

  test("sandbox create without --json prints only the id", async () => {
    const r = await cli(["sandbox", "create", "-m", "suite=plain"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^sb-[a-z0-9]{12}\n$/);
    const rm = await cli(["sandbox", "rm", r.stdout.trim()]);
    assert.equal(rm.code, 0);
  });

  test("sandbox list --json, with a metadata filter", async () => {
    const r = await cli(["sandbox", "list", "--json", "--metadata", "suite=cli"]);
    assert.equal(r.code, 0);
    const list = JSON.parse(r.stdout);
    assert.deepEqual(list.map((s: { id: string }) => s.id), [id]);
    assert.equal(list[0].status, "ready");
    const none = await cli(["--json", "sandbox", "list", "--metadata", "suite=nobody"]);
    assert.deepEqual(JSON.parse(none.stdout), []);
    const table = await cli(["sandbox", "ls", "-m", "suite=cli"]);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /^ID\s+STATUS\s+TEMPLATE\s+EXPIRES\n/);
    assert.match(table.stdout, new RegExp(`\\n${id}\\s+ready\\s+default\\s+\\S+Z\\n$`));
  });

  test("exec passes stdout and stderr through and exits with the command's code", async () => {
    const r = await cli(["exec", id, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"]);
    assert.equal(r.stdout, "hi\n");
    assert.equal(r.stderr, "oops\n");
    assert.equal(r.code, 3);
    const ok = await cli(["exec", id, "--", "true"]);
    assert.equal(ok.code, 0);
    assert.equal(ok.stdout, "");
  });

  test("exec: one argument with a space runs in a shell; env, cwd and stdin", async () => {
    const shell = await cli(["exec", id, "--", 'echo "$GREETING $EXTRA" | tr a-z A-Z && pwd']);
    assert.equal(shell.stdout, "HELLO \n/workspace\n");
    const opts = await cli(["exec", id, "--cwd", "/tmp", "-e", "EXTRA=x", "-e", "MORE=y", "--", "sh", "-c", 'echo "$EXTRA$MORE"; pwd']);
    assert.equal(opts.stdout, "xy\n/tmp\n");
    assert.equal(opts.code, 0);
    const stdin = await cli(["exec", id, "--stdin", "--", "wc", "-c"], { stdin: "12345678" });
    assert.equal(stdin.stdout.trim(), "8");
    const binary = await cli(["exec", id, "--stdin", "--", "od", "-An", "-tx1"], { stdin: Buffer.from([0, 0xff, 0xfe, 0x80]) });
    assert.equal(binary.stdout.replace(/\s+/g, " ").trim(), "00 ff fe 80");
  });

  test("exec --json prints the ExecResult and keeps the exit code", async () => {
    const r = await cli(["exec", id, "--json", "--", "sh", "-c", "echo hi; exit 3"]);
    assert.equal(r.code, 3);
    assert.equal(r.stderr, "");
    const result = JSON.parse(r.stdout);
    assert.equal(typeof result.durationMs, "number");
    delete result.durationMs;
    assert.deepEqual(result, { stdout: "hi\n", stderr: "", exitCode: 3, truncated: { stdout: false, stderr: false } });
  });

  test("exec --timeout exits 124; a signal exits 128+N", async () => {
    const started = Date.now();
    const r = await cli(["exec", id, "--timeout", "300", "--", "sh", "-c", "echo started; sleep 30"]);
    assert.equal(r.code, 124);
    assert.equal(r.stdout, "started\n");
    assert.ok(Date.now() - started < 15_000);
    const json = await cli(["exec", id, "--json", "--timeout", "300", "--", "sleep", "30"]);
    assert.equal(json.code, 124);
    const result = JSON.parse(json.stdout);
    assert.equal(result.reason, "timeout");
    assert.equal(result.exitCode, null);
    const signalled = await cli(["exec", id, "--", "sh", "-c", "kill -TERM $$"]);
    assert.equal(signalled.code, 143);
  });

  test("sandbox timeout moves the expiry", async () => {
    const before = Date.now();
    const r = await cli(["sandbox", "timeout", id, "120", "--json"]);
    assert.equal(r.code, 0);
    const expires = Date.parse(JSON.parse(r.stdout).expiresAt);
    assert.ok(expires >= before + 120_000 && expires <= Date.now() + 120_000);
  });

  test("an unknown id exits 1 with SANDBOX_NOT_FOUND on stderr", async () => {
    for (const args of [["exec", "sb-nope", "--", "true"], ["sandbox", "get", "sb-nope"], ["sandbox", "rm", "sb-nope"]]) {
      const r = await cli(args);
      assert.equal(r.code, 1, args.join(" "));
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /^error: SANDBOX_NOT_FOUND: /, args.join(" "));
    }
    const json = await cli(["--json", "sandbox", "get", "sb-nope"]);
    assert.equal(json.code, 1);
    assert.deepEqual(JSON.parse(json.stdout), {
      error: { code: "SANDBOX_NOT_FOUND", message: "sandbox sb-nope does not exist", details: { id: "sb-nope" } },
    });
  });

  test("a wrong key exits 1 with UNAUTHORIZED", async () => {
    const r = await cli(["sandbox", "list"], { env: { AGENTBOX_API_KEY: "wrong" } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: UNAUTHORIZED: /);
  });

  test("sandbox rm deletes the sandbox", async () => {
    const r = await cli(["sandbox", "rm", id]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${id}\n`);
    const got = await cli(["sandbox", "get", id, "--json"]);
    assert.equal(JSON.parse(got.stdout).status, "deleted");
    const exec = await cli(["exec", id, "--", "true"]);
    assert.equal(exec.code, 1);
    assert.match(exec.stderr, /^error: SANDBOX_NOT_READY: /);
  });

  test("--help of each command shows its examples", async () => {
    const cases: Array<[string[], string]> = [
      [["--help"], "$ agentbox serve"],
      [["serve", "--help"], "$ agentbox serve --port 8080"],
      [["sandbox", "--help"], "$ agentbox sandbox list"],
      [["sandbox", "create", "--help"], "$ agentbox sandbox create"],
      [["sandbox", "list", "--help"], "$ agentbox sandbox list --json"],
      [["sandbox", "get", "--help"], "$ agentbox sandbox get"],
      [["sandbox", "rm", "--help"], "$ agentbox sandbox rm"],
      [["sandbox", "timeout", "--help"], "$ agentbox sandbox timeout"],
      [["exec", "--help"], "$ agentbox exec sb-1234"],
      [["watch", "--help"], "$ agentbox watch $SB out -n 1"],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    cases.forEach(([args, example], i) => {
      const r = results[i]!;
      assert.equal(r.code, 0, args.join(" "));
      assert.ok(r.stdout.includes("Examples:"), `${args.join(" ")} has no Examples section`);
      assert.ok(r.stdout.includes(example), `${args.join(" ")} does not show "${example}"`);
    });
  });

  describe("processes: run, ps, logs, kill", () => {
    let sb: string;

    /** Like cli(), but returns at once: the child, a promise of its end, and its output so far. */
    function startCli(args: string[]): { child: ReturnType<typeof spawn>; out: { stdout: string; stderr: string }; done: Promise<Run> } {
      const child = spawn(process.execPath, [CLI, ...args], {
        cwd: workDir,
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", AGENTBOX_URL: server.url, AGENTBOX_API_KEY: server.apiKey },
        stdio: ["pipe", "pipe", "pipe"],
      });
      const out = { stdout: "", stderr: "" };
      child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d));
      child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d));
      const done = new Promise<Run>((resolve, reject) => {
        child.on("error", reject);
        child.on("close", (code) => resolve({ code, ...out }));
      });
      child.stdin!.end();
      return { child, out, done };
    }

    async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!condition()) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }

    async function processes(): Promise<Array<Record<string, any>>> {
      const r = await cli(["ps", sb, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    }

    before(async () => {
      const r = await cli(["sandbox", "create", "--timeout", "600", "-m", "suite=cli-processes"]);
      assert.equal(r.code, 0, r.stderr);
      sb = r.stdout.trim();
    });
    after(async () => {
      await cli(["sandbox", "rm", sb]);
    });

    test("run streams stdout and stderr as they come and exits with the process's code", async () => {
      const run = startCli(["run", sb, "--", "sh", "-c", "echo a; echo b >&2; sleep 1; exit 4"]);
      // The output is printed while the process still runs.
      await until(() => run.out.stdout === "a\n" && run.out.stderr === "b\n", "the first output");
      assert.equal(run.child.exitCode, null, "run is still attached");
      const r = await run.done;
      assert.equal(r.code, 4);
      assert.equal(r.stdout, "a\n");
      assert.equal(r.stderr, "b\n");
      const quick = await cli(["run", sb, "--", "sh", "-c", "echo a; echo b >&2; exit 4"]);
      assert.deepEqual(quick, { code: 4, stdout: "a\n", stderr: "b\n" });
    });

    test("run: one argument with a space runs in a shell; --cwd and -e", async () => {
      const r = await cli(["run", sb, "--cwd", "/tmp", "-e", "FOO=bar", "--", 'echo "$FOO" | tr a-z A-Z; pwd']);
      assert.deepEqual(r, { code: 0, stdout: "BAR\n/tmp\n", stderr: "" });
    });

    test("run passes stdin through and closes it at the end", async () => {
      const r = await cli(["run", sb, "--", "cat"], { stdin: "hello\nwörld €\n" });
      assert.deepEqual(r, { code: 0, stdout: "hello\nwörld €\n", stderr: "" });
      const counted = await cli(["run", sb, "--", "wc", "-l"], { stdin: "1\n2\n3\n" });
      assert.equal(counted.stdout.trim(), "3");
      // --no-stdin: the process reads end-of-file at once.
      const none = await cli(["run", sb, "--no-stdin", "--", "wc", "-c"], { stdin: "ignored" });
      assert.equal(none.stdout.trim(), "0");
    });

    test("run --timeout exits 124; a signal exits 128+N", async () => {
      const started = Date.now();
      const r = await cli(["run", sb, "--timeout", "300", "--", "sleep", "10"]);
      assert.equal(r.code, 124);
      assert.equal(r.stdout, "");
      assert.ok(Date.now() - started < 8000, "ended soon after its timeout");
      const signalled = await cli(["run", sb, "--", "sh", "-c", "kill -TERM $$"]);
      assert.equal(signalled.code, 143);
    });

    test("run --json prints started, output and exit as JSON lines", async () => {
      const r = await cli(["run", sb, "--json", "--id", "json-run", "--", "sh", "-c", "echo hi; exit 2"]);
      assert.equal(r.code, 2);
      const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(lines[0].type, "started");
      assert.equal(lines[0].id, "json-run");
      assert.equal(typeof lines[0].pid, "number");
      assert.deepEqual(lines.slice(1), [{ type: "stdout", data: "hi\n", offset: 0 }, { type: "exit", exitCode: 2 }]);
    });

    test("run -d prints the id; ps lists the process (--json and table)", async () => {
      const r = await cli(["run", sb, "-d", "--id", "sleeper", "--", "sleep", "30"]);
      assert.deepEqual(r, { code: 0, stdout: "sleeper\n", stderr: "" });
      const listed = (await processes()).find((p) => p.id === "sleeper");
      assert.ok(listed !== undefined, "ps --json lists it");
      assert.equal(listed.status, "running");
      assert.deepEqual(listed.argv, ["sleep", "30"]);
      assert.equal(typeof listed.pid, "number");
      const table = await cli(["ps", sb]);
      assert.equal(table.code, 0);
      assert.match(table.stdout, /^ID\s+PID\s+STATUS\s+EXIT\s+COMMAND\n/);
      assert.match(table.stdout, /\nsleeper\s+\d+\s+running\s+-\s+sleep 30\n/);
    });

    test("kill ends a running process (SIGKILL by default, or --signal)", async () => {
      const r = await cli(["kill", sb, "sleeper"]);
      assert.deepEqual(r, { code: 0, stdout: "sleeper\n", stderr: "" });
      const wait = await cli(["logs", "-f", sb, "sleeper"]);
      assert.equal(wait.code, 137);
      const info = (await processes()).find((p) => p.id === "sleeper");
      assert.equal(info?.status, "exited");
      assert.equal(info?.signal, "SIGKILL");
      assert.equal(info?.reason, "killed");
      assert.match((await cli(["ps", sb])).stdout, /\nsleeper\s+\d+\s+exited\s+SIGKILL \(killed\)\s+sleep 30\n/);

      assert.equal((await cli(["run", sb, "-d", "--id", "termed", "--", "sleep", "30"])).code, 0);
      const term = await cli(["kill", sb, "termed", "--signal", "TERM", "--json"]);
      assert.equal(term.code, 0);
      assert.equal(JSON.parse(term.stdout).id, "termed");
      assert.equal((await cli(["logs", "-f", sb, "termed"])).code, 143);

      const bad = await cli(["kill", sb, "termed", "-s", "NOPE"]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /unknown signal "NOPE"/);
      const missing = await cli(["kill", sb, "no-such-process"]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^error: [A-Z_]*NOT_FOUND: /);
    });

    test("logs prints the output of a finished process: stdout to stdout, stderr to stderr", async () => {
      const run = await cli(["run", sb, "--id", "finished", "--", "sh", "-c", "echo out; echo err >&2; printf 'no newline'"]);
      assert.equal(run.code, 0);
      const r = await cli(["logs", sb, "finished"]);
      assert.deepEqual(r, { code: 0, stdout: "out\nno newline", stderr: "err\n" });
      const json = await cli(["logs", sb, "finished", "--json"]);
      assert.deepEqual(json.stdout.trim().split("\n").map((l) => JSON.parse(l)), [
        { type: "stdout", data: "out\nno newline", offset: 0 },
        { type: "stderr", data: "err\n", offset: 0 },
        { type: "exit", exitCode: 0 },
      ]);
      const missing = await cli(["logs", sb, "no-such-process"]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^error: [A-Z_]*NOT_FOUND: /);
    });

    test("logs -f follows a running process until it exits, with its exit code", async () => {
      const started = await cli(["run", sb, "-d", "--no-stdin", "--id", "counter", "--", "sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.3; done; echo done >&2; exit 5"]);
      assert.equal(started.code, 0);
      const follow = startCli(["logs", "-f", sb, "counter"]);
      await until(() => follow.out.stdout.startsWith("1\n"), "the first line");
      assert.equal(follow.child.exitCode, null, "still following");
      const r = await follow.done;
      assert.deepEqual(r, { code: 5, stdout: "1\n2\n3\n4\n5\n", stderr: "done\n" });
      // Without -f, the same output, and exit code 0 (logs itself succeeded).
      assert.deepEqual(await cli(["logs", sb, "counter"]), { code: 0, stdout: "1\n2\n3\n4\n5\n", stderr: "done\n" });
    });

    test("--help of run, ps, logs and kill shows examples", async () => {
      for (const [command, example] of [["run", "$ agentbox run sb-1234"], ["ps", "$ agentbox ps sb-1234"], ["logs", "$ agentbox logs -f sb-1234"], ["kill", "$ agentbox kill sb-1234"]] as const) {
        const r = await cli([command, "--help"]);
        assert.equal(r.code, 0);
        assert.ok(r.stdout.includes(example), `${command} --help does not show "${example}"`);
      }
    });
  });
});
