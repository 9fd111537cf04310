/**
 * `agentbox shell` and `agentbox session`, run as child processes against a
 * real server. `shell` runs inside a real PTY (node-pty), as in a user's
 * terminal: raw mode, SIGWINCH, the detach key and the exit code.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import pty from "node-pty";
import { startServer, type RunningServer } from "@agentbox/server";

const CLI = fileURLToPath(new URL("../src/main.js", import.meta.url));

let server: RunningServer;
let dataDir: string;
let sb: string;

function env(): Record<string, string> {
  return { PATH: process.env["PATH"] ?? "/usr/bin:/bin", AGENTBOX_URL: server.url, AGENTBOX_API_KEY: server.apiKey, TERM: "xterm-256color" };
}

/** The CLI in a PTY of the given size, with its output collected. */
class PtyCli {
  output = "";
  readonly exited: Promise<number>;
  readonly term: pty.IPty;

  constructor(args: string[], cols = 100, rows = 30) {
    this.term = pty.spawn(process.execPath, [CLI, ...args], { cols, rows, env: env(), name: "xterm-256color" });
    this.term.onData((d) => (this.output += d));
    this.exited = new Promise((resolve) => this.term.onExit(({ exitCode }) => resolve(exitCode)));
  }

  async waitFor(pattern: RegExp, ms = 15_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = pattern.exec(this.output);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; got ${JSON.stringify(this.output.slice(-600))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: env(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "agentbox-shell-test-"));
  server = await startServer({ port: 0, dataDir, keepRuntime: false });
  const created = await cli(["sandbox", "create"]);
  assert.equal(created.code, 0, created.stderr);
  sb = created.stdout.trim();
});
after(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe("agentbox shell", () => {
  test("sized like the user's terminal, resized on SIGWINCH, detached with Ctrl-], reattached with replay, exit code passed on", async () => {
    const first = new PtyCli(["shell", sb, "--id", "cli-term"], 100, 30);
    await first.waitFor(/\[terminal cli-term in .*Ctrl-\] detaches\]/);
    await first.waitFor(/\$ $/);
    first.term.write("stty size\r");
    await first.waitFor(/[\r\n]30 100\r+\n/);
    first.term.resize(120, 40);
    // The CLI passes the SIGWINCH on: wait until the server's terminal has the new size, not a fixed time.
    for (let i = 0; i < 1000; i++) {
      const res = await fetch(`${server.url}/v1/sandboxes/${sb}/terminals/cli-term`, { headers: { authorization: `Bearer ${server.apiKey}` } });
      const info = (await res.json()) as { cols?: number; rows?: number };
      if (info.cols === 120 && info.rows === 40) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    first.term.write("stty size; echo before-detach-$((2+3))\r");
    await first.waitFor(/[\r\n]40 120\r+\n/);
    await first.waitFor(/before-detach-5/);
    first.term.write("\x1d");
    assert.equal(await first.exited, 0);
    assert.match(first.output, /detached from terminal cli-term; reattach with: agentbox shell \S+ --attach cli-term/);

    const list = await cli(["terminal", "list", sb, "--json"]);
    const terms = JSON.parse(list.stdout);
    assert.equal(terms.length, 1);
    assert.equal(terms[0].status, "running");

    const second = new PtyCli(["shell", sb, "--attach", "cli-term"], 90, 20);
    await second.waitFor(/before-detach-5/); // the replay
    second.term.write("stty size; exit 3\r");
    await second.waitFor(/[\r\n]20 90\r+\n/);
    assert.equal(await second.exited, 3);
  });

  test("a command terminal; attaching to a missing terminal fails with NOT_FOUND", async () => {
    const run = new PtyCli(["shell", sb, "-c", "echo cmd-$((7*6)); exit 0"]);
    await run.waitFor(/cmd-42/);
    assert.equal(await run.exited, 0, run.output);
    const missing = await cli(["shell", sb, "--attach", "nope"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND/);
  });

  test("terminal rm kills it", async () => {
    const t = new PtyCli(["shell", sb, "--id", "to-remove"]);
    await t.waitFor(/\$ $/);
    const rm = await cli(["terminal", "rm", sb, "to-remove"]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(await t.exited, 137);
  });
});

describe("agentbox session", () => {
  test("create, exec with state carried over, exit codes, list, rm", async () => {
    const created = await cli(["session", "create", sb, "--cwd", "/tmp", "-e", "A=1"]);
    assert.equal(created.code, 0, created.stderr);
    const s = created.stdout.trim();
    assert.equal((await cli(["session", "exec", sb, s, "--", "mkdir -p d && cd d && export B=2"])).code, 0);
    const r = await cli(["session", "exec", sb, s, "--", "echo $PWD $A $B; echo err >&2"]);
    assert.equal(r.stdout, "/tmp/d 1 2\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(r.code, 0);
    const s2 = (await cli(["session", "create", sb])).stdout.trim();
    assert.equal((await cli(["session", "exec", sb, s2, "--", "false"])).code, 1);
    const json = await cli(["session", "exec", sb, s2, "--json", "--", "printf", "%s", "a b"]);
    assert.equal(JSON.parse(json.stdout).stdout, "a b");
    const timedOut = await cli(["session", "exec", sb, s2, "--timeout", "200", "--", "sleep 5"]);
    assert.equal(timedOut.code, 124);
    const gone = await cli(["session", "exec", sb, s2, "--", "true"]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /SESSION_TERMINATED/);
    const list = await cli(["session", "list", sb]);
    assert.match(list.stdout, new RegExp(`${s}\\s+idle\\s+/tmp/d`));
    assert.match(list.stdout, new RegExp(`${s2}\\s+terminated \\(timeout\\)`));
    assert.equal((await cli(["session", "rm", sb, s])).code, 0);
    assert.match((await cli(["session", "exec", sb, s, "--", "true"])).stderr, /NOT_FOUND/);
  });
});
