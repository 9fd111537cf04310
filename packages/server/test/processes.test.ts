import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { startHarness, type Harness } from "./harness.js";
import { attach, collector, streamUrl } from "./stream-client.js";

const numbered = (n: number) => Array.from({ length: n }, (_, i) => `line ${i + 1}\n`).join("");

describe("processes", () => {
  let h: Harness;
  let sb: string;
  const base = () => `/v1/sandboxes/${sb}/processes`;
  const start = async (body: Record<string, unknown>) => {
    const r = await h.api("POST", base(), body);
    assert.ok(r.status === 201 || r.status === 200, JSON.stringify(r.body));
    return r.body;
  };
  const wait = async (id: string) => (await h.api("GET", `${base()}/${id}/wait?timeoutMs=20000`)).body;
  before(async () => {
    h = await startHarness();
    sb = (await h.createSandbox()).id;
  });
  after(() => h.close());

  test("start, get, list, wait; exit code and timestamps", async () => {
    const p = await start({ id: "basic", command: "echo out; echo err >&2; exit 7" });
    assert.equal(p.id, "basic");
    assert.equal(p.status, "running");
    assert.ok(p.pid > 1, `pid ${p.pid} is the pid inside the sandbox`);
    const done = await wait("basic");
    assert.equal(done.status, "exited");
    assert.equal(done.exitCode, 7);
    assert.ok(Date.parse(done.endedAt) >= Date.parse(done.startedAt));
    const list = (await h.api("GET", base())).body.processes;
    assert.ok(list.some((x: any) => x.id === "basic" && x.exitCode === 7));
    const logs = (await h.api("GET", `${base()}/basic/logs`)).body;
    assert.deepEqual([logs.stdout, logs.stderr, logs.stdoutOffset, logs.stderrOffset, logs.exitCode], ["out\n", "err\n", 4, 4, 7]);
    const tail = (await h.api("GET", `${base()}/basic/logs?stdoutOffset=2`)).body;
    assert.equal(tail.stdout, "t\n");
    assert.equal(tail.more, undefined);
  });

  test("starting an id that exists returns the same process", async () => {
    const first = await h.api("POST", base(), { id: "once", command: "sleep 5" });
    const again = await h.api("POST", base(), { id: "once", command: "echo never" });
    assert.equal(first.status, 201);
    assert.equal(again.status, 200);
    assert.equal(again.body.pid, first.body.pid);
    assert.equal(again.body.command, "sleep 5");
    const both = await Promise.all([1, 2, 3].map(() => h.api("POST", base(), { id: "race", command: "sleep 5" })));
    assert.equal(new Set(both.map((r) => r.body.pid)).size, 1);
    assert.deepEqual(both.map((r) => r.status).sort(), [200, 200, 201]);
    await h.api("POST", `${base()}/once/kill`, {});
    await h.api("POST", `${base()}/race/kill`, {});
  });

  test("a process is visible to ps in a later exec, and its localhost server is reachable", async () => {
    await start({ id: "web", command: "python3 -m http.server 8123 --bind 127.0.0.1" });
    let out = "";
    for (let i = 0; i < 50 && !out.includes("Directory listing"); i++) {
      out = (await h.exec(sb, { command: "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8123/').read().decode())\" 2>/dev/null" })).stdout;
      if (!out) await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(out, /Directory listing/);
    const ps = await h.exec(sb, { command: "ps -eo args= | grep -c '^python3 -m http.server'" });
    assert.equal(ps.stdout, "1\n");
    const killed = await h.api("POST", `${base()}/web/kill`, { signal: "SIGTERM" });
    assert.equal(killed.status, 200);
    const done = await wait("web");
    assert.equal(done.signal, "SIGTERM");
    assert.equal(done.reason, "killed");
  });

  test("kill reaches a setsid grandchild and a nohup child", async () => {
    await start({ id: "tree", command: "setsid sh -c 'sleep 300' & nohup sleep 301 > /dev/null 2>&1 & sleep 302" });
    // Wait until all three sleeps run (a fixed wait was too short on a loaded machine).
    let before = { stdout: "" };
    for (const deadline = Date.now() + 10_000; before.stdout !== "3\n" && Date.now() < deadline; ) {
      before = await h.exec(sb, { command: "ps -eo args= | grep -cE '^sleep 30[012]$' || true" });
      if (before.stdout !== "3\n") await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(before.stdout, "3\n");
    const killed = await h.api("POST", `${base()}/tree/kill`, {});
    assert.equal(killed.status, 200);
    const done = await wait("tree");
    assert.equal(done.reason, "killed");
    const after = await h.exec(sb, { command: "ps -eo args= | grep -cE '^sleep 30[012]$' || true" });
    assert.equal(after.stdout, "0\n");
  });

  test("timeoutMs bounds the whole life of the process", async () => {
    const t0 = Date.now();
    await start({ id: "slow", command: "sleep 60 & sleep 61", timeoutMs: 400 });
    const done = await wait("slow");
    assert.equal(done.reason, "timeout");
    assert.equal(done.exitCode, null);
    assert.ok(Date.now() - t0 < 10_000);
    const left = await h.exec(sb, { command: "ps -eo args= | grep -cE '^sleep 6[01]$' || true" });
    assert.equal(left.stdout, "0\n");
  });

  test("stdin: input echoes through cat; close-stdin ends it", async () => {
    await start({ id: "cat", command: "cat" });
    await h.api("POST", `${base()}/cat/input`, { data: "first\n" });
    await h.api("POST", `${base()}/cat/input`, { data: "zweite ✓\n" });
    await h.api("POST", `${base()}/cat/input`, { dataBase64: Buffer.from([0x62, 0x00, 0x0a]).toString("base64") });
    assert.equal((await h.api("POST", `${base()}/cat/input`, {})).status, 400);
    assert.equal((await h.api("POST", `${base()}/cat/close-stdin`)).status, 200);
    const done = await wait("cat");
    assert.equal(done.exitCode, 0);
    assert.equal((await h.api("GET", `${base()}/cat/logs`)).body.stdout, "first\nzweite ✓\nb\u0000\n");
  });

  test("stream: started, output with offsets, exit, close 1000; stdin over the socket", async () => {
    await start({ id: "ws-cat", command: "cat; echo done >&2" });
    const c = collector();
    await attach(streamUrl(h.server.url, sb, "ws-cat"), h.server.apiKey, c, {
      onOpen: (ws) => {
        ws.send(JSON.stringify({ type: "input", data: "over the socket\n" }));
        ws.send(JSON.stringify({ type: "close_stdin" }));
      },
    });
    assert.deepEqual(c.messages[0], { type: "started", id: "ws-cat", pid: c.messages[0].pid });
    assert.equal(Buffer.concat(c.stdout).toString(), "over the socket\n");
    assert.equal(Buffer.concat(c.stderr).toString(), "done\n");
    assert.deepEqual(c.messages.at(-1), { type: "exit", exitCode: 0 });
    assert.equal(c.close?.code, 1000);
  });

  test("100,000 numbered lines reassemble byte-exact across three forced disconnects", async () => {
    // Ten bursts, so the disconnects fall in the middle of the output.
    await start({ id: "lines", command: "for i in $(seq 0 9); do seq $((i*10000+1)) $((i*10000+10000)) | sed 's/^/line /'; sleep 0.1; done" });
    const c = collector();
    for (let i = 0; i < 3; i++) {
      await attach(streamUrl(h.server.url, sb, "lines", c.offsets), h.server.apiKey, c, { stopAfterBytes: 150_000 });
      assert.equal(c.close?.code, 1006);
    }
    await attach(streamUrl(h.server.url, sb, "lines", c.offsets), h.server.apiKey, c);
    assert.equal(c.close?.code, 1000);
    assert.equal(Buffer.concat(c.stdout).toString(), numbered(100_000));
    assert.equal(c.messages.filter((m) => m.type === "started").length, 4);
  });

  test("format=binary streams raw bytes with their stream and offset", async () => {
    await start({ id: "bin", command: "printf 'ab\\377\\376\\000cd'; printf 'E' >&2" });
    await wait("bin");
    const frames: Array<{ stream: number; offset: number; data: Buffer }> = [];
    const texts: any[] = [];
    await new Promise<void>((resolve) => {
      const ws = new WebSocket(`${streamUrl(h.server.url, sb, "bin")}&format=binary`, { headers: { authorization: `Bearer ${h.server.apiKey}` } });
      ws.on("message", (raw: Buffer, isBinary) => {
        if (isBinary) frames.push({ stream: raw[0]!, offset: Number(raw.readBigUInt64BE(1)), data: raw.subarray(9) });
        else texts.push(JSON.parse(String(raw)));
      });
      ws.on("close", () => resolve());
    });
    assert.deepEqual(frames.map((f) => [f.stream, f.offset, [...f.data]]), [
      [1, 0, [0x61, 0x62, 0xff, 0xfe, 0x00, 0x63, 0x64]],
      [2, 0, [0x45]],
    ]);
    assert.deepEqual(texts.map((t) => t.type), ["started", "exit"]);
  });

  test("multi-byte characters split by the pipe never appear broken", async () => {
    // Writes of 1 byte at a time cut every character across reads.
    const text = "héllo wörld ✓ 😀 ".repeat(200);
    await start({ id: "utf8", command: `printf '%s' '${text}' | python3 -c "import sys,time\nfor b in sys.stdin.buffer.read():\n sys.stdout.buffer.write(bytes([b])); sys.stdout.flush()"` });
    const c = collector();
    await attach(streamUrl(h.server.url, sb, "utf8"), h.server.apiKey, c);
    const chunks = c.messages.filter((m) => m.type === "stdout").map((m) => m.data as string);
    assert.ok(chunks.every((d) => !d.includes("\ufffd")), "a chunk holds a broken character");
    assert.equal(chunks.join(""), text);
  });

  test("truncated is sent when the requested offset was evicted", async () => {
    await start({ id: "evict", command: "seq 1 20000", maxLogBytes: 4096 });
    await wait("evict");
    const c = collector();
    await attach(streamUrl(h.server.url, sb, "evict"), h.server.apiKey, c).catch(() => c);
    const t = c.messages.find((m) => m.type === "truncated");
    const total = Buffer.byteLength(Array.from({ length: 20000 }, (_, i) => `${i + 1}\n`).join(""));
    assert.deepEqual(t, { type: "truncated", stream: "stdout", requestedOffset: 0, availableOffset: total - 4096 });
    const first = c.messages.find((m) => m.type === "stdout");
    assert.equal(first.offset, total - 4096);
    const logs = (await h.api("GET", `${base()}/evict/logs`)).body;
    assert.deepEqual(logs.truncated, { stdout: { requestedOffset: 0, availableOffset: total - 4096 } });
  });

  test("logs answers at most 8 MiB a stream and says when there is more", async () => {
    await start({ id: "big", command: "head -c 9000000 /dev/zero | tr '\\0' y" });
    await wait("big");
    const first = (await h.api("GET", `${base()}/big/logs`)).body;
    assert.equal(first.stdoutOffset, 8 * 1024 * 1024);
    assert.equal(first.more, true);
    assert.equal(first.status, "running", "exit is reported only once everything was read");
    const rest = (await h.api("GET", `${base()}/big/logs?stdoutOffset=${first.stdoutOffset}`)).body;
    assert.equal(rest.stdoutOffset, 9_000_000);
    assert.equal(rest.more, undefined);
    assert.equal(rest.status, "exited");
  });

  test("two attached clients both get everything", async () => {
    await start({ id: "two", command: "sleep 0.3; seq 1 5000" });
    const [a, b] = await Promise.all([1, 2].map(() => attach(streamUrl(h.server.url, sb, "two"), h.server.apiKey, collector())));
    const expected = Array.from({ length: 5000 }, (_, i) => `${i + 1}\n`).join("");
    assert.equal(Buffer.concat(a!.stdout).toString(), expected);
    assert.equal(Buffer.concat(b!.stdout).toString(), expected);
  });

  test("a client that never reads neither slows the process nor grows memory without bound", async () => {
    await start({ id: "flood", command: "head -c 50000000 /dev/zero | tr '\\0' x; echo end", maxLogBytes: 1 << 20 });
    // Attach and then stop reading: pause the underlying socket.
    const ws = new WebSocket(streamUrl(h.server.url, sb, "flood"), { headers: { authorization: `Bearer ${h.server.apiKey}` } });
    await new Promise((r) => ws.once("open", r));
    (ws as any)._socket.pause();
    const t0 = Date.now();
    const done = await wait("flood");
    assert.equal(done.exitCode, 0);
    assert.ok(Date.now() - t0 < 15_000, "the process was stalled by the reader");
    const logs = (await h.api("GET", `${base()}/flood/logs?stdoutOffset=0`)).body;
    assert.equal(logs.truncated.stdout.availableOffset, 50_000_004 - (1 << 20));
    assert.ok(logs.stdout.endsWith("xend\n"));
    assert.equal(logs.more, undefined);
    ws.terminate();
  });

  test("malformed frames and unknown message types get an error; the process keeps running", async () => {
    await start({ id: "sturdy", command: "sleep 2; echo fine" });
    const c = collector();
    await attach(streamUrl(h.server.url, sb, "sturdy"), h.server.apiKey, c, {
      onOpen: (ws) => {
        ws.send("{not json");
        ws.send(JSON.stringify({ type: "explode" }));
        ws.send(JSON.stringify({ type: "kill", signal: "SIGNOPE" }));
        ws.send(Buffer.from([1, 2, 3]));
      },
    });
    const errors = c.messages.filter((m) => m.type === "error");
    assert.equal(errors.length, 4);
    assert.ok(errors.every((e) => e.code === "INVALID_REQUEST"));
    assert.equal(Buffer.concat(c.stdout).toString(), "fine\n");
    assert.deepEqual(c.messages.at(-1), { type: "exit", exitCode: 0 });
  });

  test("unknown process, bad offsets and a wrong key", async () => {
    const c = collector();
    await attach(streamUrl(h.server.url, sb, "nope"), h.server.apiKey, c);
    assert.equal(c.messages[0].type, "error");
    assert.equal(c.messages[0].code, "NOT_FOUND");
    assert.equal(c.close?.code, 4404);
    const bad = collector();
    await attach(`${streamUrl(h.server.url, sb, "basic")}&stdoutOffset=-1`.replace("stdoutOffset=0&", ""), h.server.apiKey, bad);
    assert.equal(bad.messages[0].code, "INVALID_REQUEST");
    const unauthorized = await new Promise<number>((resolve) => {
      const ws = new WebSocket(streamUrl(h.server.url, sb, "basic"), { headers: { authorization: "Bearer wrong" } });
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.on("error", () => undefined);
    });
    assert.equal(unauthorized, 401);
    assert.equal((await h.api("GET", `${base()}/nope`)).body.error.code, "NOT_FOUND");
    assert.equal((await h.api("POST", base(), { command: "true", id: "../x" })).status, 400);
  });

  test("deleting the sandbox ends its streams with 4409 or 4404, not a retryable code", async () => {
    const other = (await h.createSandbox()).id;
    await h.api("POST", `/v1/sandboxes/${other}/processes`, { id: "doomed", command: "sleep 30" });
    const c = collector();
    const attached = attach(streamUrl(h.server.url, other, "doomed"), h.server.apiKey, c);
    // Delete only once the stream is being served (its "started" message), however long that takes.
    for (const deadline = Date.now() + 10_000; c.messages.length === 0 && c.close === undefined && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(c.messages[0]?.type, "started");
    const t0 = Date.now();
    await h.api("DELETE", `/v1/sandboxes/${other}`);
    await attached;
    // Either the kill is seen as the process's exit, or the stream is told the sandbox is gone.
    if (c.close!.code === 1000) assert.deepEqual(c.messages.at(-1), { type: "exit", exitCode: null, signal: "SIGKILL", reason: "killed" });
    else assert.ok([4404, 4409].includes(c.close!.code), `close code ${c.close!.code}`);
    assert.ok(Date.now() - t0 < 5000);
  });

  test("100 concurrent streaming processes lose no byte", async () => {
    const ids = Array.from({ length: 100 }, (_, i) => `many-${i}`);
    await Promise.all(ids.map((id, i) => start({ id, command: `seq 1 ${1000 + i}` })));
    const results = await Promise.all(ids.map((id) => attach(streamUrl(h.server.url, sb, id), h.server.apiKey, collector())));
    results.forEach((c, i) => {
      assert.equal(Buffer.concat(c.stdout).toString(), Array.from({ length: 1000 + i }, (_, k) => `${k + 1}\n`).join(""));
    });
  });

  test("at least the last 256 exited processes keep their exit codes; zombies are reaped", async () => {
    for (let i = 0; i < 260; i += 20) {
      await Promise.all(Array.from({ length: 20 }, (_, k) => start({ id: `done-${i + k}`, command: `exit ${(i + k) % 100}` })));
    }
    await wait("done-259");
    const got = await h.api("GET", `${base()}/done-259`);
    assert.equal(got.body.exitCode, 59);
    const zombies = await h.exec(sb, { command: "ps -eo stat= | grep -c '^Z' || true" });
    assert.equal(zombies.stdout, "0\n");
  });
});

describe("stream keep-alive", () => {
  test("the server pings every open stream", async () => {
    const h = await startHarness({ pingIntervalMs: 100 });
    try {
      const sb = (await h.createSandbox()).id;
      await h.api("POST", `/v1/sandboxes/${sb}/processes`, { id: "idle", command: "sleep 30" });
      const ws = new WebSocket(streamUrl(h.server.url, sb, "idle"), { headers: { authorization: `Bearer ${h.server.apiKey}` } });
      let pings = 0;
      ws.on("ping", () => pings++);
      await new Promise((resolve, reject) => (ws.once("open", resolve), ws.once("error", reject)));
      // Wait for three pings rather than a fixed 550 ms (timers run late on a loaded machine);
      // at one per 100 ms they cannot all come in much less than 200 ms.
      const t0 = Date.now();
      for (const deadline = t0 + 10_000; pings < 3 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
      const ms = Date.now() - t0;
      ws.terminate();
      assert.ok(pings >= 3, `${pings} pings in ${ms} ms`);
      assert.ok(ms >= 150, `${pings} pings in ${ms} ms`);
    } finally {
      await h.close();
    }
  });
});

describe("processes across a server restart", () => {
  test("a reconnecting client gets exactly the missing bytes; stopping closes streams with 1001", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "agentbox-proc-restart-"));
    try {
      const first = await startHarness({ dataDir, keepRuntime: true });
      const sb = (await first.createSandbox()).id;
      await first.api("POST", `/v1/sandboxes/${sb}/processes`, { id: "long", command: "for i in $(seq 1 30); do seq 1 2000 | sed \"s/^/$i-/\"; sleep 0.05; done" });
      const c = collector();
      const attached = attach(streamUrl(first.server.url, sb, "long"), first.server.apiKey, c);
      // Restart once some output has arrived (a fixed wait could end before the stream was attached).
      for (const deadline = Date.now() + 10_000; c.offsets.stdout === 0 && c.close === undefined && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(c.offsets.stdout > 0, "some output arrived before the restart");
      await first.close();
      await attached;
      assert.equal(c.close?.code, 1001);
      const second = await startHarness({ dataDir, keepRuntime: false });
      try {
        await attach(streamUrl(second.server.url, sb, "long", c.offsets), second.server.apiKey, c);
        assert.equal(c.close?.code, 1000);
        const expected = Array.from({ length: 30 }, (_, i) => Array.from({ length: 2000 }, (_, k) => `${i + 1}-${k + 1}\n`).join("")).join("");
        assert.equal(Buffer.concat(c.stdout).toString(), expected);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
