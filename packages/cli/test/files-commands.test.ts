/** `agentbox cp` and `agentbox ls` as child processes against a real server. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import pty from "node-pty";
import { startServer, type RunningServer } from "@agentbox/server";

const CLI = fileURLToPath(new URL("../src/main.js", import.meta.url));
let server: RunningServer;
let dataDir: string;
let work: string;
let sb: string;

function env(): Record<string, string> {
  return { PATH: process.env["PATH"] ?? "/usr/bin:/bin", AGENTBOX_URL: server.url, AGENTBOX_API_KEY: server.apiKey };
}

function cli(args: string[], stdin?: Buffer | string): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: work, env: env(), stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
    child.stdin.end(stdin ?? "");
  });
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "agentbox-cp-test-"));
  work = mkdtempSync(join(tmpdir(), "agentbox-cp-work-"));
  server = await startServer({ port: 0, dataDir, keepRuntime: false });
  const r = await cli(["sandbox", "create"]);
  sb = r.stdout.toString().trim();
});
after(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe("agentbox cp", () => {
  test("a file up and down, byte for byte, keeping its mode; into existing directories by name", async () => {
    const data = randomBytes(2 * 1024 * 1024 + 7);
    writeFileSync(join(work, "data.bin"), data, { mode: 0o640 });
    const up = await cli(["cp", "data.bin", `${sb}:/workspace/in/data.bin`]);
    assert.equal(up.code, 0, up.stderr);
    assert.equal(up.stderr, "", "no progress bar when stderr is not a terminal");
    const mode = await cli(["exec", sb, "--", "stat", "-c", "%a %s", "/workspace/in/data.bin"]);
    assert.equal(mode.stdout.toString(), `640 ${data.length}\n`);
    assert.equal((await cli(["cp", "data.bin", `${sb}:in/`])).code, 0);
    mkdirSync(join(work, "back"));
    const down = await cli(["cp", `${sb}:in/data.bin`, "back"]);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(readFileSync(join(work, "back/data.bin")), data);
    assert.equal(statSync(join(work, "back/data.bin")).mode & 0o777, 0o640);
  });

  test("directories both ways, docker cp style", async () => {
    mkdirSync(join(work, "proj/src"), { recursive: true });
    writeFileSync(join(work, "proj/src/main.py"), "print('hi')\n");
    symlinkSync("src/main.py", join(work, "proj/entry"));
    assert.equal((await cli(["cp", "proj", `${sb}:/workspace/p1`])).code, 0);
    assert.equal((await cli(["exec", sb, "--", "cat", "/workspace/p1/entry"])).stdout.toString(), "print('hi')\n");
    // To an existing directory: placed inside it.
    assert.equal((await cli(["cp", "proj", `${sb}:/workspace/p1`])).code, 0);
    assert.equal((await cli(["exec", sb, "--", "test", "-f", "/workspace/p1/proj/src/main.py"])).code, 0);
    const down = await cli(["cp", `${sb}:/workspace/p1`, join(work, "copy")]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(readFileSync(join(work, "copy/src/main.py"), "utf8"), "print('hi')\n");
    assert.equal(readlinkSync(join(work, "copy/entry")), "src/main.py");
  });

  test("stdin and stdout with -, --json, and errors", async () => {
    assert.equal((await cli(["cp", "-", `${sb}:piped.txt`], "from stdin\n")).code, 0);
    const out = await cli(["cp", `${sb}:piped.txt`, "-"]);
    assert.equal(out.stdout.toString(), "from stdin\n");
    const json = await cli(["cp", `${sb}:piped.txt`, join(work, "p.txt"), "--json"]);
    const parsed = JSON.parse(json.stdout.toString());
    assert.equal(parsed.bytes, 11);
    const missing = await cli(["cp", `${sb}:/no/such`, "x"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND/);
    const both = await cli(["cp", "a", "b"]);
    assert.equal(both.code, 1);
    assert.match(both.stderr, /SANDBOX:PATH/);
    const denied = await cli(["cp", "-", `${sb}:/etc/x`], "x");
    assert.match(denied.stderr, /PERMISSION_DENIED/);
  });

  test("a progress bar on a terminal for large transfers", async () => {
    writeFileSync(join(work, "big.bin"), randomBytes(24 * 1024 * 1024));
    const term = pty.spawn(process.execPath, [CLI, "cp", "big.bin", `${sb}:big.bin`], { cwd: work, env: env(), cols: 120, rows: 10 });
    let output = "";
    term.onData((d) => (output += d));
    const code = await new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode)));
    assert.equal(code, 0, output);
    assert.match(output, /big\.bin \[=+\] 100% 24\.0 MiB\/24\.0 MiB/);
  });
});

describe("agentbox ls", () => {
  test("plain, long, depth and json", async () => {
    await cli(["exec", sb, "--", "sh", "-c", "mkdir -p /workspace/ls/d && echo hi > /workspace/ls/f && ln -s f /workspace/ls/l"]);
    const plain = await cli(["ls", sb, "ls"]);
    assert.equal(plain.stdout.toString(), "d/\nf\nl\n");
    const long = await cli(["ls", `${sb}:ls`, "-l"]);
    assert.match(long.stdout.toString(), /^MODE\s+SIZE\s+MODIFIED\s+NAME\n/);
    assert.match(long.stdout.toString(), /-rw-r--r--\s+3 B\s+\S+ \S+\s+f\n/);
    assert.match(long.stdout.toString(), /lrwxrwxrwx\s+1 B\s+\S+ \S+\s+l -> f\n/);
    const json = JSON.parse((await cli(["ls", sb, "/workspace/ls", "--depth", "2", "--json"])).stdout.toString());
    assert.deepEqual(json.map((e: { path: string }) => e.path).sort(), ["/workspace/ls/d", "/workspace/ls/f", "/workspace/ls/l"]);
    const missing = await cli(["ls", sb, "/nope"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND/);
  });
});

describe("agentbox watch", () => {
  /** `agentbox watch …` running, resolved once it says it is watching. */
  async function startWatch(args: string[]) {
    const child = spawn(process.execPath, [CLI, "watch", ...args], { cwd: work, env: env(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
    await new Promise<void>((resolve, reject) => {
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
        if (stderr.includes("Ctrl-C stops\n")) resolve();
      });
      void exited.then(() => reject(new Error(`watch exited before it was watching: ${stderr}`)));
    });
    return { child, exited, out: () => stdout, err: () => stderr };
  }

  test("changes as lines; --count ends it with 0; Ctrl-C ends it with 0", async () => {
    await cli(["exec", sb, "--", "mkdir -p /workspace/wch"]);
    const w = await startWatch([sb, "wch", "-n", "2"]);
    assert.equal(w.err(), "Watching wch; Ctrl-C stops\n");
    await cli(["exec", sb, "--", "mkdir /workspace/wch/d && touch /workspace/wch/d/f"]);
    assert.equal(await w.exited, 0);
    assert.equal(w.out(), "create    /workspace/wch/d/\ncreate    /workspace/wch/d/f\n");

    const json = await startWatch([`${sb}:wch`, "--no-recursive", "--json"]);
    assert.equal(json.err(), "Watching wch (not its subdirectories); Ctrl-C stops\n");
    await cli(["exec", sb, "--", "touch /workspace/wch/d/inner && rm -r /workspace/wch/d"]);
    for (let i = 0; i < 1000 && !json.out().includes("/workspace/wch/d\""); i++) await new Promise((r) => setTimeout(r, 10));
    json.child.kill("SIGINT");
    assert.equal(await json.exited, 0);
    assert.deepEqual(
      json.out().trimEnd().split("\n").map((line) => JSON.parse(line)),
      [{ type: "delete", path: "/workspace/wch/d" }],
    );
  });

  test("a missing directory fails at once; the directory going away ends the watch with 1", async () => {
    const missing = await cli(["watch", sb, "no/such"]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, "error: NOT_FOUND: /workspace/no/such: No such file or directory\n");
    await cli(["exec", sb, "--", "mkdir -p /workspace/gone"]);
    const w = await startWatch([sb, "gone"]);
    await cli(["exec", sb, "--", "rm -r /workspace/gone"]);
    assert.equal(await w.exited, 1);
    assert.equal(w.out(), "delete    /workspace/gone\n");
    assert.match(w.err(), /error: CONNECTION_FAILED: the watch ended: the directory or its sandbox went away\n$/);
  });
});
