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
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    cases.forEach(([args, example], i) => {
      const r = results[i]!;
      assert.equal(r.code, 0, args.join(" "));
      assert.ok(r.stdout.includes("Examples:"), `${args.join(" ")} has no Examples section`);
      assert.ok(r.stdout.includes(example), `${args.join(" ")} does not show "${example}"`);
    });
  });
});
