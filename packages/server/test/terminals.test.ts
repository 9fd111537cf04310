/**
 * PTY terminals through the real server, runtime, sandbox and WebSocket:
 * echo, resize, replay on reattach, several clients, the create race, exit,
 * and delete.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startHarness, type Harness } from "./harness.js";

let h: Harness;
let sb: string;

/** A terminal client that collects output (as text) and control messages. */
class TermClient {
  output = "";
  controls: Array<Record<string, unknown>> = [];
  closeCode: number | undefined;
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  private readonly ws: WebSocket;

  constructor(sandbox: string, terminal: string) {
    this.ws = new WebSocket(`${h.server.url.replace("http", "ws")}/v1/sandboxes/${sandbox}/terminals/${terminal}/connect?token=${h.server.apiKey}`);
    this.ws.on("message", (data: Buffer, binary) => {
      if (binary) this.output += data.toString("utf8");
      else this.controls.push(JSON.parse(data.toString("utf8")));
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", () => resolve());
      this.ws.once("error", reject);
    });
    this.closed = new Promise((resolve) => this.ws.once("close", (code) => resolve((this.closeCode = code))));
  }

  type(text: string): void {
    this.ws.send(Buffer.from(text, "utf8"));
  }

  resize(cols: number, rows: number): void {
    this.ws.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  async waitFor(pattern: RegExp, ms = 10_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = pattern.exec(this.output);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; got ${JSON.stringify(this.output.slice(-500))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    this.ws.close();
  }
}

async function terminal(body: Record<string, unknown> = {}): Promise<any> {
  const res = await h.api("POST", `/v1/sandboxes/${sb}/terminals`, body);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

before(async () => {
  h = await startHarness();
  sb = (await h.createSandbox()).id;
});
after(async () => {
  await h.close();
});

describe("terminals", () => {
  test("a login shell on a PTY: echo, TERM, UTF-8, job control", async () => {
    const t = await terminal({ cols: 100, rows: 30 });
    assert.equal(t.cols, 100);
    assert.equal(t.rows, 30);
    assert.ok(t.pid > 1, `pid inside the sandbox: ${t.pid}`);
    const c = new TermClient(sb, t.id);
    await c.opened;
    await c.waitFor(/\$ $/);
    c.type("echo \"[$TERM|$LANG|$(( 6 * 7 ))|żółw]\"; ps -o pgid= -p $$ | tr -d ' '; echo $$\r");
    const m = await c.waitFor(/\[(.*)\|(.*)\|42\|żółw\]\r\n(\d+)\r\n(\d+)\r\n/);
    assert.equal(m[1], "xterm-256color");
    assert.equal(m[2], "C.UTF-8");
    assert.equal(m[3], m[4], "the shell leads its own process group");
    assert.equal(Number(m[4]), t.pid);
    // Only the terminal crossed over from the runtime: no other descriptor, no host process in sight.
    c.type("echo -n fds:; ls /proc/$$/fd | tr '\\n' ' '; echo; echo -n procs:; ps -eo comm= | sort -u | tr '\\n' ' '; echo\r");
    const fds = await c.waitFor(/[\r\n]fds:(.*)\r\n/);
    assert.equal(fds[1], "0 1 2 255 ");
    const procs = await c.waitFor(/[\r\n]procs:(.*)\r\n/);
    assert.doesNotMatch(procs[1]!, /agentbox|node|systemd/);
    assert.match(procs[1]!, /bash/);
    c.close();
  });

  test("resize reaches the PTY (stty size)", async () => {
    const t = await terminal({ cols: 80, rows: 24 });
    const c = new TermClient(sb, t.id);
    await c.opened;
    await c.waitFor(/\$ $/);
    c.type("stty size\r");
    await c.waitFor(/[\r\n]24 80\r\n/);
    c.resize(132, 50);
    // The terminal's size changes once the PTY is resized: wait for that, not a fixed time.
    for (let i = 0; i < 1000; i++) {
      const got = (await h.api("GET", `/v1/sandboxes/${sb}/terminals/${t.id}`)).body;
      if (got.cols === 132 && got.rows === 50) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    c.type("stty size\r");
    await c.waitFor(/[\r\n]50 132\r\n/);
    const info = await h.api("GET", `/v1/sandboxes/${sb}/terminals/${t.id}`);
    assert.equal(info.body.cols, 132);
    assert.equal(info.body.rows, 50);
    c.close();
  });

  test("reattaching replays recent output (at least 256 KiB), then goes live", async () => {
    const t = await terminal();
    const first = new TermClient(sb, t.id);
    await first.opened;
    await first.waitFor(/\$ $/);
    // 300 KiB of numbered lines, then a marker.
    first.type("seq -f 'line-%06g' 1 27000; echo REPLAY-END\r");
    await first.waitFor(/\r\nREPLAY-END\r\n/);
    first.close();
    await first.closed;
    const second = new TermClient(sb, t.id);
    await second.opened;
    await second.waitFor(/\r\nREPLAY-END\r\n/);
    const lines = second.output.match(/line-\d{6}/g) ?? [];
    assert.ok(lines.length * 13 >= 256 * 1024, `replayed ${lines.length} lines`);
    assert.equal(lines[lines.length - 1], "line-027000");
    // Contiguous: no gaps in what was replayed.
    const firstNo = Number(lines[0]!.slice(5));
    assert.equal(lines.length, 27000 - firstNo + 1);
    second.type("echo live-$((1+1))\r");
    await second.waitFor(/live-2/);
    second.close();
  });

  test("two clients see the same output and both can type", async () => {
    const t = await terminal();
    const a = new TermClient(sb, t.id);
    const b = new TermClient(sb, t.id);
    await Promise.all([a.opened, b.opened]);
    await Promise.all([a.waitFor(/\$ $/), b.waitFor(/\$ $/)]);
    a.type("echo from-a-$((10+1))\r");
    await Promise.all([a.waitFor(/from-a-11/), b.waitFor(/from-a-11/)]);
    b.type("echo from-b-$((20+2))\r");
    await Promise.all([a.waitFor(/from-b-22/), b.waitFor(/from-b-22/)]);
    a.close();
    b.close();
  });

  test("concurrent creates of one id make exactly one PTY", async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () => h.api("POST", `/v1/sandboxes/${sb}/terminals`, { id: "race", command: "sleep 300" })),
    );
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 201]);
    assert.equal(new Set(results.map((r) => r.body.pid)).size, 1);
    // The terminal is listed once its program's pid is known, which may be before `sh` has
    // exec'd `sleep`: wait for it, and never see two.
    let count = "";
    for (let i = 0; i < 100 && count !== "1\n"; i++) {
      count = (await h.exec(sb, { command: "pgrep -c -x -f 'sleep 300' || true" })).stdout;
      assert.ok(count === "0\n" || count === "1\n", `sleeps running: ${count}`);
      if (count !== "1\n") await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(count, "1\n");
    assert.equal((await h.api("DELETE", `/v1/sandboxes/${sb}/terminals/race`)).status, 200);
  });

  test("the shell's exit reaches every client as an exit message, then a normal close", async () => {
    const t = await terminal();
    const a = new TermClient(sb, t.id);
    const b = new TermClient(sb, t.id);
    await Promise.all([a.opened, b.opened]);
    await a.waitFor(/\$ $/);
    a.type("exit 5\r");
    assert.equal(await a.closed, 1000);
    assert.equal(await b.closed, 1000);
    assert.deepEqual(a.controls, [{ type: "exit", exitCode: 5 }]);
    assert.deepEqual(b.controls, [{ type: "exit", exitCode: 5 }]);
    const info = await h.api("GET", `/v1/sandboxes/${sb}/terminals/${t.id}`);
    assert.equal(info.body.status, "exited");
    assert.equal(info.body.exitCode, 5);
    // A client attaching after the exit still gets the replay and the exit.
    const late = new TermClient(sb, t.id);
    assert.equal(await late.closed, 1000);
    assert.match(late.output, /exit 5/);
    assert.deepEqual(late.controls, [{ type: "exit", exitCode: 5 }]);
  });

  test("a command terminal runs the command; the terminal outlives its clients", async () => {
    const t = await terminal({ command: "read line; echo \"got:$line\"; exit 9" });
    assert.equal(t.command, "read line; echo \"got:$line\"; exit 9");
    const a = new TermClient(sb, t.id);
    await a.opened;
    a.close();
    await a.closed;
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await h.api("GET", `/v1/sandboxes/${sb}/terminals/${t.id}`)).body.status, "running");
    const b = new TermClient(sb, t.id);
    await b.opened;
    b.type("hello\r");
    await b.closed;
    assert.match(b.output, /got:hello/);
    assert.deepEqual(b.controls, [{ type: "exit", exitCode: 9 }]);
  });

  test("resizes and keystrokes after the program hangs up the PTY are dropped, never an error", async () => {
    // The program closes its side of the PTY and lives on for a while: the PTY is gone
    // before the exit. A client resizing then (the CLI resizes on attach) must not be failed.
    const t = await terminal({ command: "trap '' HUP; echo hanging-up; exec </dev/null >/dev/null 2>&1; sleep 0.6; exit 4" });
    const c = new TermClient(sb, t.id);
    await c.opened;
    await c.waitFor(/hanging-up/);
    const spam = setInterval(() => {
      c.resize(90, 25);
      c.type("x");
    }, 5);
    const code = await c.closed;
    clearInterval(spam);
    assert.deepEqual(c.controls, [{ type: "exit", exitCode: 4 }]);
    assert.equal(code, 1000);
  });

  test("delete kills the shell and its children and closes clients", async () => {
    const t = await terminal();
    const c = new TermClient(sb, t.id);
    await c.opened;
    await c.waitFor(/\$ $/);
    c.type("sleep 301 & sleep 302 & echo started\r");
    await c.waitFor(/\r\nstarted\r\n/);
    assert.equal((await h.exec(sb, { command: "pgrep -c -x -f 'sleep 30[12]'" })).stdout, "2\n");
    assert.equal((await h.api("DELETE", `/v1/sandboxes/${sb}/terminals/${t.id}`)).status, 200);
    await c.closed;
    assert.equal(c.controls[0]?.type, "exit");
    assert.equal((await h.exec(sb, { command: "pgrep -c -x -f 'sleep 30[12]' || true" })).stdout, "0\n");
    assert.equal((await h.api("GET", `/v1/sandboxes/${sb}/terminals/${t.id}`)).status, 404);
    assert.equal((await h.api("DELETE", `/v1/sandboxes/${sb}/terminals/${t.id}`)).status, 404);
  });

  test("exited terminals stay listed up to a cap, the oldest forgotten first", async () => {
    const other = (await h.createSandbox()).id;
    for (let i = 0; i < 18; i++) {
      const res = await h.api("POST", `/v1/sandboxes/${other}/terminals`, { id: `short-${i}`, command: `exit ${i}` });
      assert.equal(res.status, 201);
    }
    let list: Array<{ id: string; status: string }> = [];
    for (let i = 0; i < 200; i++) {
      list = (await h.api("GET", `/v1/sandboxes/${other}/terminals`)).body.terminals;
      if (list.length === 16 && list.every((t) => t.status === "exited")) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(list.length, 16);
    assert.ok(!list.some((t) => t.id === "short-0" || t.id === "short-1"));
    await h.api("DELETE", `/v1/sandboxes/${other}`);
  });

  test("terminals end with their sandbox", async () => {
    const other = (await h.createSandbox()).id;
    const res = await h.api("POST", `/v1/sandboxes/${other}/terminals`, {});
    const c = new TermClient(other, res.body.id);
    await c.opened;
    await c.waitFor(/\$ $/);
    await h.api("DELETE", `/v1/sandboxes/${other}`);
    const code = await c.closed;
    assert.ok(code === 1000 || code === 4404 || code === 4409, `close code ${code}`);
  });

  test("wrong ids and bad input", async () => {
    const missing = new TermClient(sb, "no-such-terminal");
    assert.equal(await missing.closed, 4404);
    assert.equal(missing.controls[0]?.code, "NOT_FOUND");
    for (const body of [{ cols: 0 }, { rows: 100000 }, { cols: "80" }, { command: "" }, { id: "../x" }]) {
      const res = await h.api("POST", `/v1/sandboxes/${sb}/terminals`, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.error.code, "INVALID_REQUEST");
    }
    const t = await terminal();
    const c = new TermClient(sb, t.id);
    await c.opened;
    c.resize(0, 0);
    (c as any).ws.send("not json");
    for (let i = 0; i < 1000 && c.controls.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(c.controls.map((m) => m.code), ["INVALID_REQUEST", "INVALID_REQUEST"]);
    c.type("echo still-$((3*3))\r");
    await c.waitFor(/still-9/);
    c.close();
  });
});
