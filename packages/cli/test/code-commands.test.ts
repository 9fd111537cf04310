/** `agentbox run-code` and `agentbox worker` as child processes against a real server. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startServer, type RunningServer } from "@agentbox/server";
import { CLI, cliEnv, runCli, type CliRun } from "./run-cli.js";
import { WebSocketTransport, Worker } from "@agentbox/interpreter";

let server: RunningServer;
let dataDir: string;
let work: string;
let sb: string;

function cli(args: string[], stdin = "", extraEnv: Record<string, string> = {}): Promise<CliRun> {
  return runCli(args, { env: cliEnv(server, extraEnv), cwd: work, stdin });
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "agentbox-code-cli-"));
  work = mkdtempSync(join(tmpdir(), "agentbox-code-cli-work-"));
  server = await startServer({ port: 0, dataDir, keepRuntime: false });
  sb = (await cli(["sandbox", "create"])).stdout.trim();
});
after(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe("agentbox run-code", () => {
  test("a file, stdin or -c; output, then the value; state with --context; errors exit 1", async () => {
    writeFileSync(join(work, "job.py"), "import sys\nprint('working')\nprint('careful', file=sys.stderr)\nanswer = 6 * 7\nanswer\n");
    const file = await cli(["run-code", sb, "--language", "python", "job.py"]);
    assert.equal(file.code, 0, file.stderr);
    assert.equal(file.stdout, "working\n42\n");
    assert.equal(file.stderr, "careful\n");
    assert.equal((await cli(["run-code", sb], "1 + 1\n")).stdout, "2\n");
    const json = JSON.parse((await cli(["run-code", sb, "-c", "x = 41", "--json"])).stdout);
    assert.match(json.context, /^ctx-/);
    assert.equal(json.executionCount, 1);
    assert.equal((await cli(["run-code", sb, "--context", json.context, "-c", "x + 1"])).stdout, "42\n");
    const err = await cli(["run-code", sb, "-c", "1/0"]);
    assert.equal(err.code, 1);
    assert.match(err.stderr, /File "<cell-1>", line 1, in <module>\n    1\/0\n    ~\^~\nZeroDivisionError: division by zero\n$/);
    const js = await cli(["run-code", sb, "-l", "javascript", "-c", "console.log('js'); [1,2].map(x => x * 2)"]);
    assert.equal(js.stdout, "js\n[ 2, 4 ]\n");
    const bad = await cli(["run-code", sb, "-l", "cobol", "-c", "1"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /cobol/);
  });
});

describe("agentbox worker", () => {
  test("hosts workers over WebSocket for a token holder", async () => {
    const child = spawn(process.execPath, [CLI, "worker", "--listen", "127.0.0.1:0", "--json"], { env: { PATH: process.env["PATH"] ?? "", AGENTBOX_WORKER_TOKEN: "s3cret" }, stdio: ["ignore", "pipe", "inherit"] });
    try {
      const url = await new Promise<string>((resolve) => {
        let out = "";
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          const m = /"url": "([^"]+)"/.exec(out);
          if (m) resolve(m[1]!);
        });
      });
      const w = new Worker(await WebSocketTransport.connect(`${url}/?language=python`, { headers: { authorization: "Bearer s3cret" } }));
      await w.configure();
      const r = await w.request({ type: "feed", code: "sum(range(10))" });
      assert.deepEqual(r.type === "complete" && r.results, [{ text: "45", isMain: true }]);
      await w.shutdown();
      await assert.rejects(WebSocketTransport.connect(`${url}/?language=python`, { headers: { authorization: "Bearer wrong" } }), /401/);
    } finally {
      child.kill("SIGTERM");
    }
  });
  test("refuses to start without a token", async () => {
    const r = await cli(["worker", "--listen", "127.0.0.1:0"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /token is required/);
  });
});
