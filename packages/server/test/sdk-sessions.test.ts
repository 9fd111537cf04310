/** The SDK's sessions and terminals against a real server. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Agentbox, isAgentboxError, type Sandbox } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";

describe("SDK sessions and terminals", () => {
  let h: Harness;
  let client: Agentbox;
  let sb: Sandbox;

  before(async () => {
    h = await startHarness();
    client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
    sb = await client.sandboxes.create();
  });
  after(async () => {
    await h.close();
  });

  test("session state persists; top-level exec stays stateless; snapshots feed processes", async () => {
    const sh = await sb.createSession({ cwd: "/tmp", env: { A: "1" } });
    assert.equal(sh.info.cwd, "/tmp");
    await sh.exec("mkdir -p work && cd work && export B=2");
    const r = await sh.exec("echo $PWD $A $B");
    assert.equal(r.stdout, "/tmp/work 1 2\n");
    assert.equal((await sh.refresh()).cwd, "/tmp/work");
    assert.equal((await sb.exec("echo $PWD ${B-none}")).stdout, "/workspace none\n");
    assert.equal((await sh.exec(["printf", "%s", "a b"])).stdout, "a b");
    assert.equal((await sh.exec("cat", { stdin: new TextEncoder().encode("bytes") })).stdout, "bytes");
    const proc = await sh.startProcess("echo $PWD $B");
    const done = await proc.wait();
    assert.equal(done.exitCode, 0);
    assert.equal(done.stdout, "/tmp/work 2\n");
    assert.ok((await sb.sessions()).some((s) => s.id === sh.id));
    const again = await sb.session(sh.id);
    assert.equal(again.info.cwd, "/tmp/work");
  });

  test("a terminated session throws SESSION_TERMINATED with status 410", async () => {
    const sh = await sb.createSession();
    const r = await sh.exec("exit 3");
    assert.equal(r.exitCode, 3);
    await assert.rejects(sh.exec("true"), (e: unknown) => isAgentboxError(e, "SESSION_TERMINATED") && e.status === 410);
    await sh.delete();
    await assert.rejects(sb.session(sh.id), (e: unknown) => isAgentboxError(e, "NOT_FOUND"));
  });

  test("terminals: create, connect, type, resize, exit", async () => {
    const term = await sb.terminals.create({ cols: 90, rows: 20 });
    assert.equal(term.info.cols, 90);
    const conn = await term.connect();
    let out = "";
    conn.onData((d) => (out += d.toString("utf8")));
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 1000 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 10));
      assert.match(out, re);
    };
    await waitFor(/\$ $/);
    conn.write("stty size\r");
    await waitFor(/[\r\n]20 90\r\n/);
    conn.resize(70, 15);
    // The terminal's size changes once the PTY is resized: wait for that, not a fixed time.
    for (let i = 0; i < 1000; i++) {
      const info = await term.refresh();
      if (info.cols === 70 && info.rows === 15) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    conn.write("stty size; exit 4\r");
    assert.deepEqual(await conn.exited, { exitCode: 4 });
    await conn.closed;
    assert.match(out, /[\r\n]15 70\r\n/);
    assert.equal((await term.refresh()).status, "exited");
    assert.ok((await sb.terminals.list()).some((t) => t.id === term.id));
    await sb.terminals.delete(term.id);
    await assert.rejects(sb.terminals.get(term.id), (e: unknown) => isAgentboxError(e, "NOT_FOUND"));
  });

  test("a detached terminal keeps running; connecting to a missing one fails with NOT_FOUND", async () => {
    const term = await sb.terminals.create({ id: "keep", command: "cat" });
    const first = await term.connect();
    first.write("one\r");
    first.close();
    await first.closed;
    await assert.rejects(first.exited, (e: unknown) => isAgentboxError(e, "CONNECTION_FAILED"));
    const second = await (await sb.terminals.get("keep")).connect();
    // Listen late: what arrived before (the replay) is handed to the first listener.
    await new Promise((r) => setTimeout(r, 200));
    let out = "";
    second.onData((d) => (out += d.toString()));
    second.write("two\r");
    for (let i = 0; i < 500 && !/two\r\ntwo/.test(out); i++) await new Promise((r) => setTimeout(r, 10));
    assert.match(out, /one\r\none\r\n.*two\r\ntwo/s);
    await term.delete();
    const exit = await second.exited;
    assert.equal(exit.exitCode, null);
    assert.equal(exit.signal, "SIGKILL");
    // The handle outlives the terminal: connecting now reports NOT_FOUND.
    const late = await term.connect();
    await assert.rejects(late.exited, (e: unknown) => isAgentboxError(e, "NOT_FOUND"));
  });
});
