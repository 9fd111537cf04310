/**
 * ProcessHandle against a FAKE server (test/fake-process-server.ts: node:http +
 * ws's WebSocketServer speaking the stream contract), which can drop
 * connections, restart, refuse upgrades and evict output on cue. The real
 * server is exercised by the integration tests.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import {
  Agentbox,
  DEFAULT_RECONNECT_POLICY,
  isAgentboxError,
  type AgentboxApiError,
  type ProcessChunk,
  type ProcessHandle,
  type Sandbox,
} from "../src/index.js";
import { completeUtf8Length } from "../src/process-handle.js";
import { FAKE_KEY, FAKE_SANDBOX, FakeProcessServer } from "./fake-process-server.js";

async function sandbox(fake: FakeProcessServer): Promise<Sandbox> {
  return new Agentbox({ url: fake.url, apiKey: FAKE_KEY }).sandboxes.get(FAKE_SANDBOX);
}

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function collect(handle: ProcessHandle): { chunks: ProcessChunk[]; done: Promise<unknown> } {
  const chunks: ProcessChunk[] = [];
  const done = (async () => {
    for await (const chunk of handle) chunks.push(chunk);
  })();
  done.catch(() => undefined);
  return { chunks, done };
}

describe("ProcessHandle", () => {
  it("startProcess posts the request, attaches with the key from offset 0, and wait() returns output and status", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    const proc = await sb.startProcess(["sh", "-c", "echo hi"], { id: "p1", cwd: "/tmp", env: { A: "1" }, timeoutMs: 5000 });
    const post = fake.requests.find((r) => r.method === "POST");
    assert.equal(post?.path, "/v1/sandboxes/sb-1/processes");
    assert.deepEqual(post?.body, { argv: ["sh", "-c", "echo hi"], id: "p1", cwd: "/tmp", env: { A: "1" }, timeoutMs: 5000 });
    assert.equal(proc.id, "p1");
    assert.equal(proc.pid, 100);
    assert.equal(proc.sandboxId, "sb-1");
    await until("attach", () => fake.live("p1").length === 1);
    const conn = fake.connections[0]!;
    assert.equal(conn.headers.authorization, `Bearer ${FAKE_KEY}`);
    assert.deepEqual(conn.query, { stdoutOffset: 0, stderrOffset: 0, token: null, format: "binary" });
    fake.emit("p1", "stdout", "hi\n");
    fake.emit("p1", "stderr", "warn\n");
    fake.finish("p1", { exitCode: 3 });
    const result = await proc.wait();
    assert.deepEqual(result, { exitCode: 3, stdout: "hi\n", stderr: "warn\n", truncated: { stdout: false, stderr: false } });
    assert.equal(proc.exited, true);
    assert.equal(proc.info.status, "exited");
    assert.equal(proc.info.exitCode, 3);
    assert.deepEqual(proc.offsets, { stdout: 3, stderr: 5 });
    // A string is a shell command.
    await sb.startProcess("echo $HOME", { reconnect: false });
    assert.deepEqual(fake.requests.filter((r) => r.method === "POST")[1]?.body, { command: "echo $HOME" });
  });

  for (const format of ["binary", "json"] as const) {
    it(`reassembles the output byte for byte across dropped connections, resuming at the offsets received (${format} frames)`, async () => {
      await using fake = await FakeProcessServer.start();
      const sb = await sandbox(fake);
      fake.addProcess("p");
      const proc = await sb.getProcess("p", { reconnect: { initialDelayMs: 10 }, format });
      const resumedFrom: Array<{ stdout: number; stderr: number }> = [];
      proc.on("reconnecting", () => resumedFrom.push(proc.offsets));
      const iteration = collect(proc);
      await until("attach", () => fake.live("p").length === 1);

      const pieces = ["héllo ", "wörld ", "€uro ", "😀 ", "plain ascii\n"];
      for (let round = 0; round < 30; round++) {
        for (const [i, piece] of pieces.entries()) {
          fake.emit("p", i % 2 === 0 ? "stdout" : "stderr", `${round}:${piece}`);
        }
        // Cut the connection while frames are still in flight, every few rounds; keep writing meanwhile.
        if (round % 7 === 3) fake.dropAll();
        if (round % 7 === 5) await until("reattach", () => fake.live("p").length === 1);
      }
      await until("reattach", () => fake.live("p").length === 1);
      fake.finish("p", { exitCode: 0 });
      const result = await proc.wait();
      await iteration.done;

      const out = fake.get("p").out;
      assert.ok(Buffer.from(result.stdout, "utf8").equals(out.stdout), "stdout differs");
      assert.ok(Buffer.from(result.stderr, "utf8").equals(out.stderr), "stderr differs");
      assert.equal(iteration.chunks.filter((c) => c.stream === "stdout").map((c) => c.data).join(""), result.stdout);
      assert.equal(iteration.chunks.filter((c) => c.stream === "stderr").map((c) => c.data).join(""), result.stderr);
      assert.deepEqual(proc.offsets, { stdout: out.stdout.length, stderr: out.stderr.length });

      // Every reconnection asked for exactly the bytes received before the drop.
      assert.ok(fake.connections.length >= 5, `expected several connections, got ${fake.connections.length}`);
      assert.equal(resumedFrom.length, fake.connections.length - 1);
      for (const [i, offsets] of resumedFrom.entries()) {
        const next = fake.connections[i + 1]!;
        assert.deepEqual({ stdout: next.query.stdoutOffset, stderr: next.query.stderrOffset }, offsets);
      }
      // And the chunks are contiguous: each starts where the previous one of its stream ended.
      const end = { stdout: 0, stderr: 0 };
      for (const chunk of iteration.chunks) {
        assert.equal(chunk.offset, end[chunk.stream]);
        end[chunk.stream] += Buffer.byteLength(chunk.data);
      }
      assert.ok(fake.connections.every((c) => c.query.format === (format === "binary" ? "binary" : null)));
    });
  }

  it("close 1001: reconnects at once, then keeps trying while the server restarts", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { reconnect: { restartIntervalMs: 20, restartWindowMs: 10_000 } });
    const delays: number[] = [];
    proc.on("reconnecting", (info) => delays.push(info.delayMs));
    await until("attach", () => fake.live("p").length === 1);
    fake.emit("p", "stdout", "before\n");
    await until("output", () => proc.offsets.stdout === 7);

    await fake.stop(); // closes with 1001
    fake.emit("p", "stdout", "while down\n"); // the process keeps running
    await until("several tries", () => delays.length >= 4);
    await fake.restart();
    await until("reattach", () => fake.live("p").length === 1);
    fake.emit("p", "stdout", "after\n");
    fake.finish("p", { exitCode: 0 });
    const result = await proc.wait();
    assert.equal(result.stdout, "before\nwhile down\nafter\n");
    assert.equal(delays[0], 0, "the first try after 1001 is immediate");
    assert.ok(delays.slice(1).every((d) => d === 20), `then every restartIntervalMs: ${delays.join(",")}`);
    assert.equal(fake.connections[1]!.query.stdoutOffset, 7);
  });

  it("close 1001: gives up when the server does not come back within the window", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { reconnect: { restartIntervalMs: 20, restartWindowMs: 200 } });
    await until("attach", () => fake.live("p").length === 1);
    const started = Date.now();
    await fake.stop();
    await assert.rejects(proc.wait(), (e: unknown) => isAgentboxError(e, "CONNECTION_FAILED") && /did not come back within 200 ms/.test(e.message));
    assert.ok(Date.now() - started >= 190);
    await fake.restart(); // so that dispose has something to close
  });

  it("backs off 0.5 s doubling to 8 s by default, and gives up after 5 failed tries with a typed error", async () => {
    assert.deepEqual({ ...DEFAULT_RECONNECT_POLICY }, {
      initialDelayMs: 500,
      maxDelayMs: 8000,
      maxRetries: 5,
      restartIntervalMs: 500,
      restartWindowMs: 30_000,
    });
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { reconnect: { initialDelayMs: 10, maxDelayMs: 40 } });
    const delays: number[] = [];
    const attempts: number[] = [];
    proc.on("reconnecting", (info) => {
      delays.push(info.delayMs);
      attempts.push(info.attempt);
    });
    const errors: AgentboxApiError[] = [];
    proc.on("error", (e) => errors.push(e));
    const iteration = collect(proc);
    await until("attach", () => fake.live("p").length === 1);
    fake.emit("p", "stdout", "partial\n");
    await until("output", () => proc.offsets.stdout === 8);

    fake.refuseUpgrades = 503;
    fake.dropAll();
    const error = await proc.wait().then(
      () => assert.fail("wait() should reject"),
      (e: unknown) => e,
    );
    assert.ok(isAgentboxError(error, "CONNECTION_FAILED"));
    assert.match(error.message, /failed 6 times in a row; last: RUNTIME_UNAVAILABLE: refused by the test/);
    assert.deepEqual(error.details, { sandboxId: "sb-1", processId: "p", closeCode: 1006, stdoutOffset: 8, stderrOffset: 0 });
    assert.deepEqual(delays, [10, 20, 40, 40, 40]);
    assert.deepEqual(attempts, [1, 2, 3, 4, 5]);
    assert.equal(fake.upgrades, 1 + 5);
    assert.deepEqual(errors, [error]);
    // The iteration yields what arrived, then throws the same error.
    await assert.rejects(iteration.done, (e: unknown) => e === error);
    assert.deepEqual(iteration.chunks.map((c) => c.data), ["partial\n"]);
    await sleep(100);
    assert.equal(fake.upgrades, 6, "no more tries after giving up");

    // reconnect() attaches again and gives wait() a new chance.
    fake.refuseUpgrades = undefined;
    proc.reconnect();
    await until("reattach", () => fake.live("p").length === 1);
    assert.equal(fake.connections.at(-1)!.query.stdoutOffset, 8);
    fake.finish("p", { exitCode: 0 });
    assert.equal((await proc.wait()).stdout, "partial\n");
  });

  it("does not retry when the process does not exist (HTTP 404 or close 4404), nor with a bad key", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { reconnect: { initialDelayMs: 10 } });
    await until("attach", () => fake.live("p").length === 1);
    fake.processes.delete("p");
    fake.dropAll();
    await assert.rejects(proc.wait(), (e: unknown) => isAgentboxError(e, "NOT_FOUND") && e.status === 404);
    assert.equal(fake.upgrades, 2);

    fake.notFound = "close";
    fake.addProcess("q");
    const q = await sb.getProcess("q", { reconnect: { initialDelayMs: 10 } });
    await until("attach", () => fake.live("q").length === 1);
    fake.processes.delete("q");
    fake.dropAll();
    await assert.rejects(q.wait(), (e: unknown) => isAgentboxError(e, "NOT_FOUND") && e.details?.["closeCode"] === 4404);
    assert.equal(fake.upgrades, 4);

    fake.addProcess("r");
    const bad = await new Agentbox({ url: fake.url, apiKey: "wrong" }).sandboxes.get(FAKE_SANDBOX).catch((e: unknown) => e);
    assert.ok(isAgentboxError(bad, "UNAUTHORIZED"));
    // (the handle never gets this far with a bad key; check the upgrade on its own)
    const { ProcessHandle } = await import("../src/process-handle.js");
    const { HttpTransport } = await import("../src/http.js");
    const handle = new ProcessHandle(new HttpTransport({ baseUrl: fake.url, apiKey: "wrong" }), FAKE_SANDBOX, fake.get("r").info);
    await assert.rejects(handle.wait(), (e: unknown) => isAgentboxError(e, "UNAUTHORIZED") && e.status === 401);
    assert.equal(fake.upgrades, 5);
  });

  it("kill() goes over the socket and the handle does not reconnect after the exit", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p");
    await until("attach", () => proc.connected);
    await proc.kill("SIGTERM");
    const result = await proc.wait();
    assert.deepEqual(result, { exitCode: null, signal: "SIGTERM", reason: "killed", stdout: "", stderr: "", truncated: { stdout: false, stderr: false } });
    assert.deepEqual(fake.connections[0]!.received, [{ type: "kill", signal: "SIGTERM" }]);
    assert.deepEqual(fake.get("p").kills, ["SIGTERM"]);
    await sleep(150);
    assert.equal(fake.upgrades, 1);
    assert.equal(fake.requests.filter((r) => r.path.endsWith("/kill")).length, 0);
    await proc.kill(); // after the exit: nothing to do
    assert.deepEqual(fake.get("p").kills, ["SIGTERM"]);
  });

  it("kill() on a disconnected handle uses HTTP and does not attach again; wait() resolves after reconnect()", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p");
    await until("attach", () => proc.connected);
    fake.emit("p", "stdout", "out\n");
    await until("output", () => proc.offsets.stdout === 4);
    const iteration = collect(proc);
    proc.disconnect();
    await iteration.done; // iterations end at disconnect()
    assert.deepEqual(iteration.chunks.map((c) => c.data), ["out\n"]);
    let settled = false;
    const waiting = proc.wait().then(
      (r) => ((settled = true), r),
      (e: unknown) => ((settled = true), Promise.reject(e)),
    );
    await proc.kill();
    const kill = fake.requests.find((r) => r.path === "/v1/sandboxes/sb-1/processes/p/kill");
    assert.deepEqual(kill?.body, {});
    assert.equal(proc.info.status, "exited"); // from the kill response
    await sleep(150);
    assert.equal(fake.upgrades, 1);
    assert.equal(settled, false, "wait() stays pending while disconnected");
    proc.reconnect();
    const result = await waiting;
    assert.equal(result.signal, "SIGKILL");
    assert.equal(result.stdout, "out\n");
    assert.equal(fake.connections[1]!.query.stdoutOffset, 4);
  });

  it("async iteration and callbacks both see every chunk, in order", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const seen: string[] = [];
    const proc = await sb.getProcess("p", { onStdout: (data) => seen.push(`out:${data}`) });
    const unsubscribe = proc.onStderr((data) => seen.push(`err:${data}`));
    const all: ProcessChunk[] = [];
    proc.on("chunk", (c) => all.push(c));
    const iteration = collect(proc);
    await until("attach", () => proc.connected);
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) {
      const stream = i % 3 === 0 ? "stderr" : "stdout";
      fake.emit("p", stream, `line ${i}\n`);
      expected.push(`${stream === "stdout" ? "out" : "err"}:line ${i}\n`);
      if (i % 50 === 0) await sleep(1); // let some arrive while the iterator is busy, some in bursts
    }
    fake.finish("p", { exitCode: 0 });
    await proc.wait();
    await iteration.done;
    assert.deepEqual(seen, expected);
    assert.deepEqual(iteration.chunks.map((c) => `${c.stream === "stdout" ? "out" : "err"}:${c.data}`), expected);
    assert.deepEqual(all, iteration.chunks);
    // A late iterator still gets everything since attaching (keepOutput), then ends.
    const late: string[] = [];
    for await (const chunk of proc) late.push(chunk.data);
    assert.equal(late.length, 200);
    unsubscribe();
  });

  it("keepOutput: false keeps nothing for wait() nor for iterators that start late", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { keepOutput: false });
    const early = collect(proc);
    await until("attach", () => proc.connected);
    fake.emit("p", "stdout", "a");
    fake.emit("p", "stdout", "b");
    fake.finish("p", { exitCode: 0 });
    const result = await proc.wait();
    await early.done;
    assert.equal(result.stdout, "");
    assert.deepEqual(early.chunks.map((c) => c.data), ["a", "b"]);
    const late: ProcessChunk[] = [];
    for await (const chunk of proc) late.push(chunk);
    assert.deepEqual(late, []);
  });

  it("keepOutput: false: an iteration that falls behind pauses the socket instead of buffering, and loses nothing", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { keepOutput: false });
    const iterator = proc[Symbol.asyncIterator]();
    await until("attach", () => proc.connected);
    const mib = Buffer.alloc(1024 * 1024, "x");
    for (let i = 0; i < 48; i++) fake.emit("p", "stdout", mib);
    fake.finish("p", { exitCode: 0 });
    await sleep(300);
    const received = proc.offsets.stdout;
    assert.ok(received < 24 * mib.length, `read ${received} bytes while nobody consumed`);
    let total = 0;
    for (let r = await iterator.next(); r.done !== true; r = await iterator.next()) total += r.value.data.length;
    assert.equal(total, 48 * mib.length);
    assert.equal((await proc.wait()).exitCode, 0);
  });

  for (const format of ["json", "binary"] as const) {
    it(`offsets count the bytes a chunk covers, not the string's length (${format} frames)`, async () => {
      await using fake = await FakeProcessServer.start();
      const sb = await sandbox(fake);
      fake.addProcess("p");
      const proc = await sb.getProcess("p", { reconnect: { initialDelayMs: 10 }, format });
      const iteration = collect(proc);
      await until("attach", () => proc.connected);
      fake.emit("p", "stdout", Buffer.from([0xff])); // invalid UTF-8: arrives as U+FFFD (3 bytes re-encoded), covers 1
      fake.emit("p", "stdout", "€"); // 3 bytes, 1 UTF-16 unit
      fake.emit("p", "stdout", "😀"); // 4 bytes, 2 UTF-16 units
      await until("output", () => iteration.chunks.length === 3);
      assert.deepEqual(iteration.chunks.map((c) => [c.data, c.offset]), [["\uFFFD", 0], ["€", 1], ["😀", 4]]);
      assert.deepEqual(proc.offsets, { stdout: 8, stderr: 0 });
      fake.dropAll();
      await until("reattach", () => fake.live("p").length === 1);
      assert.equal(fake.connections[1]!.query.stdoutOffset, 8);
      fake.emit("p", "stdout", "!");
      fake.finish("p", { exitCode: 0 });
      assert.equal((await proc.wait()).stdout, "\uFFFD€😀!");
      await iteration.done;
      assert.deepEqual(iteration.chunks.at(-1), { stream: "stdout", data: "!", offset: 8 });
    });
  }

  it("binary frames: a character cut between frames is delivered whole, also across a drop", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { reconnect: { initialDelayMs: 10 } });
    const iteration = collect(proc);
    await until("attach", () => proc.connected);
    const euro = Buffer.from("€"); // e2 82 ac
    fake.emit("p", "stdout", Buffer.concat([Buffer.from("a"), euro.subarray(0, 1)]));
    fake.emit("p", "stdout", euro.subarray(1, 2));
    await until("first byte", () => proc.offsets.stdout === 1);
    await sleep(20);
    assert.deepEqual(proc.offsets, { stdout: 1, stderr: 0 }, "a partial character is not counted as received");
    fake.dropAll();
    await until("reattach", () => fake.live("p").length === 1);
    assert.equal(fake.connections[1]!.query.stdoutOffset, 1);
    fake.emit("p", "stdout", Buffer.concat([euro.subarray(2), Buffer.from("😀").subarray(0, 3)]));
    fake.emit("p", "stdout", Buffer.concat([Buffer.from("😀").subarray(3), Buffer.from([0xe2, 0x82])])); // ends cut
    fake.finish("p", { exitCode: 0 });
    const result = await proc.wait();
    await iteration.done;
    assert.equal(result.stdout, "a€😀\uFFFD");
    assert.deepEqual(iteration.chunks.map((c) => [c.data, c.offset]), [["a", 0], ["€", 1], ["😀", 4], ["\uFFFD", 8]]);
    assert.deepEqual(proc.offsets, { stdout: 10, stderr: 0 });
  });

  it("completeUtf8Length keeps a cut character for the next frame", () => {
    const cases: Array<[number[], number]> = [
      [[], 0],
      [[0x61], 1],
      [[0x61, 0xe2], 1],
      [[0x61, 0xe2, 0x82], 1],
      [[0x61, 0xe2, 0x82, 0xac], 4],
      [[0xf0, 0x9f, 0x98], 0],
      [[0xf0, 0x9f, 0x98, 0x80], 4],
      [[0xc3], 0],
      [[0xc3, 0xa9], 2],
      [[0xff], 1],
      [[0x80, 0x80, 0x80, 0x80], 4],
    ];
    for (const [bytes, expected] of cases) assert.equal(completeUtf8Length(Uint8Array.from(bytes)), expected, `${bytes}`);
  });

  it("skips output it already has, and keeps only the new part of an overlapping chunk", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p");
    const iteration = collect(proc);
    await until("attach", () => proc.connected);
    fake.emit("p", "stdout", "hel");
    await until("output", () => proc.offsets.stdout === 3);
    const socket = fake.live("p")[0]!.socket;
    socket.send(JSON.stringify({ type: "stdout", data: "hel", offset: 0, bytes: 3 }));
    socket.send(JSON.stringify({ type: "stdout", data: "hello", offset: 0, bytes: 5 }));
    fake.get("p").out.stdout = Buffer.from("hello");
    fake.finish("p", { exitCode: 0 });
    assert.equal((await proc.wait()).stdout, "hello");
    await iteration.done;
    assert.deepEqual(iteration.chunks.map((c) => [c.data, c.offset]), [["hel", 0], ["lo", 3]]);
  });

  it("reports evicted output: on the next chunk, as an event and in the result", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    const p = fake.addProcess("p");
    p.out.stdout = Buffer.from("0123456789");
    fake.evict("p", "stdout", 6);
    const events: unknown[] = [];
    const proc = await sb.getProcess("p");
    proc.on("truncated", (t) => events.push(t));
    const iteration = collect(proc);
    await until("output", () => proc.offsets.stdout === 10);
    fake.finish("p", { exitCode: 0 });
    const result = await proc.wait();
    await iteration.done;
    assert.equal(result.stdout, "6789");
    assert.deepEqual(result.truncated, { stdout: true, stderr: false });
    assert.deepEqual(events, [{ stream: "stdout", requestedOffset: 0, availableOffset: 6 }]);
    assert.deepEqual(iteration.chunks, [{ stream: "stdout", data: "6789", offset: 6, truncated: { requestedOffset: 0, availableOffset: 6 } }]);
  });

  it("sends input over the socket when attached, else over HTTP, in order", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p");
    await until("attach", () => proc.connected);
    await Promise.all([proc.sendInput("a"), proc.sendInput("b")]);
    await until("frames", () => fake.get("p").input.length === 2);
    assert.deepEqual(fake.connections[0]!.received, [{ type: "input", data: "a" }, { type: "input", data: "b" }]);
    proc.disconnect();
    await Promise.all([proc.sendInput("c"), proc.sendInput("d"), proc.closeStdin()]);
    assert.deepEqual(fake.get("p").input, ["a", "b", "c", "d"]);
    assert.equal(fake.get("p").stdinClosed, true);
    assert.deepEqual(
      fake.requests.filter((r) => r.method === "POST").map((r) => [r.path.split("/").at(-1), r.body]),
      [["input", { data: "c" }], ["input", { data: "d" }], ["close-stdin", {}]],
    );
  });

  it("input sent while the server restarts waits for the stream to be back", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p", { reconnect: { restartIntervalMs: 20 } });
    await until("attach", () => proc.connected);
    await fake.stop();
    const sent = proc.sendInput("while down");
    const closed = proc.closeStdin();
    await sleep(100);
    assert.deepEqual(fake.get("p").input, []);
    await fake.restart();
    await Promise.all([sent, closed]);
    await until("frames", () => fake.get("p").stdinClosed);
    assert.deepEqual(fake.get("p").input, ["while down"]);
    assert.equal(fake.get("p").stdinClosed, true);
    assert.deepEqual(fake.connections.at(-1)!.received, [{ type: "input", data: "while down" }, { type: "close_stdin" }]);
    // Once the handle has given up, input fails instead of waiting.
    proc.disconnect();
    await fake.stop();
    await assert.rejects(proc.sendInput("late"), (e: unknown) => isAgentboxError(e, "CONNECTION_FAILED"));
    await fake.restart();
  });

  it("attaches to an exited process and gets the rest of its output and its exit", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    const p = fake.addProcess("done");
    p.out.stdout = Buffer.from("abcdef");
    fake.finish("done", { exitCode: 1 });
    const proc = await sb.getProcess("done", { stdoutOffset: 2 });
    assert.equal(proc.info.status, "exited");
    const result = await proc.wait();
    assert.deepEqual(result, { exitCode: 1, stdout: "cdef", stderr: "", truncated: { stdout: false, stderr: false } });
    assert.deepEqual(fake.connections[0]!.query, { stdoutOffset: 2, stderrOffset: 0, token: null, format: "binary" });
    await sleep(100);
    assert.equal(fake.upgrades, 1);
  });

  it("an error frame that does not end the stream is an event, not a failure", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    fake.addProcess("p");
    const proc = await sb.getProcess("p");
    await until("attach", () => proc.connected);
    const event = once(proc, "serverError");
    fake.live("p")[0]!.socket.send(JSON.stringify({ type: "error", code: "INVALID_REQUEST", message: "bad frame" }));
    assert.deepEqual(await event, [{ code: "INVALID_REQUEST", message: "bad frame" }]);
    fake.emit("p", "stdout", "still here");
    fake.finish("p", { exitCode: 0 });
    assert.equal((await proc.wait()).stdout, "still here");
  });

  it("lists, inspects, reads logs of and kills processes over HTTP", async () => {
    await using fake = await FakeProcessServer.start();
    const sb = await sandbox(fake);
    const p = fake.addProcess("p", { command: "make", argv: undefined });
    p.out.stdout = Buffer.from("hello world");
    p.out.stderr = Buffer.from("err");
    const list = await sb.processes();
    assert.deepEqual(list.map((i) => i.id), ["p"]);
    assert.equal((await sb.process("p")).command, "make");
    await assert.rejects(sb.process("nope"), (e: unknown) => isAgentboxError(e, "NOT_FOUND"));
    const logs = await sb.processLogs("p", { stdout: 6 });
    assert.deepEqual(logs, { status: "running", stdout: "world", stdoutOffset: 11, stderr: "err", stderrOffset: 3 });
    const logsRequest = fake.requests.find((r) => r.path.endsWith("/logs"));
    assert.equal(logsRequest?.query.toString(), "stdoutOffset=6");
    const killed = await sb.killProcess("p", "SIGINT");
    assert.equal(killed.status, "exited");
    assert.deepEqual(fake.get("p").kills, ["SIGINT"]);
  });
});
