/**
 * The worker protocol's conformance suite: every worker implementation and
 * transport runs the same checks (docs/design/worker-protocol.md). Workers
 * run here as plain child processes (no sandbox: these are protocol tests),
 * and once more behind a remote worker host over WebSocket.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { TurnEnder, WorkerEvent } from "@agentbox/protocol";
import { WebSocketTransport, Worker, startLocalWorker, startWorkerServer, type CodeLanguage, type RunningWorkerServer } from "../src/index.js";

const PROGRAMS = { python: "/usr/bin/python3", node: process.execPath };

interface Subject {
  name: string;
  language: CodeLanguage;
  /** A worker, configured unless `configure` is false. */
  start(configure?: boolean): Promise<Worker>;
}

/** Code in each language for the checks below. */
const SNIPPETS = {
  python: { sum: "1 + 1", print: "print('a'); print('b')\n7", state1: "v = 5", state2: "v * 2", call: "echo(b'\\x00', (1, 2), 2**70)", stateCheck: "'v' in globals()" },
  javascript: { sum: "1 + 1", print: "console.log('a'); console.log('b'); 7", state1: "var v = 5", state2: "v * 2", call: "await echo(new Uint8Array([0]), [1, 2], 2n ** 70n)", stateCheck: "typeof v !== 'undefined'" },
} as const;

async function turn(worker: Worker, code: string, functions?: Record<string, (args: unknown[]) => unknown>): Promise<{ events: WorkerEvent[]; ender: TurnEnder }> {
  const events: WorkerEvent[] = [];
  const ender = await worker.request({ type: "feed", code, ...(functions ? { functions: Object.keys(functions) } : {}) }, { onEvent: (e) => events.push(e), ...(functions ? { functions } : {}), timeoutMs: 20_000 });
  return { events, ender };
}

function conformance(subject: Subject): void {
  const s = SNIPPETS[subject.language];
  describe(`worker protocol conformance: ${subject.name}`, () => {
    test("configure, then a feed answers complete with the trailing value", async () => {
      const w = await subject.start();
      const { ender } = await turn(w, s.sum);
      assert.equal(ender.type, "complete");
      assert.deepEqual(ender.type === "complete" && ender.results, [{ text: "2", isMain: true }]);
      await w.shutdown();
    });

    test("events come before exactly one turn-ender, in order", async () => {
      const w = await subject.start();
      const { events, ender } = await turn(w, s.print);
      assert.deepEqual(events.map((e) => e.type === "print" && e.text).join(""), "a\nb\n");
      assert.equal(ender.type, "complete");
      await w.shutdown();
    });

    test("a version mismatch is refused with a fatal_error and the worker exits", async () => {
      const w = await subject.start(false);
      await assert.rejects(w.configure({ protocolVersion: 99 }), /version/i);
      assert.equal(w.alive, false);
    });

    test("an undecodable payload gets a ProtocolError and the session lives on", async () => {
      const w = await subject.start();
      await turn(w, s.state1);
      const payload = Buffer.from("{not json", "utf8");
      const raw = subject.name.includes("websocket") ? payload : Buffer.concat([Buffer.from([0, 0, 0, payload.length]), payload]);
      const ender = await w.requestRaw(raw, { timeoutMs: 10_000 });
      assert.equal(ender.type, "error");
      assert.equal(ender.type === "error" && ender.name, "ProtocolError");
      const { ender: after } = await turn(w, s.state2);
      assert.deepEqual(after.type === "complete" && after.results[0]?.text, "10");
      await w.shutdown();
    });

    test("an oversize frame is fatal for that worker only", async () => {
      const w = await subject.start();
      const other = await subject.start();
      const head = Buffer.alloc(4);
      head.writeUInt32BE(64 * 1024 * 1024, 0);
      const dead = new Promise<void>((resolve) => {
        const previous = w.transport.onClose;
        w.transport.onClose = (reason) => {
          previous?.(reason);
          resolve();
        };
      });
      w.transport.sendRaw(subject.name.includes("websocket") ? Buffer.alloc(17 * 1024 * 1024) : Buffer.concat([head, Buffer.from("{}")]));
      await dead;
      assert.equal(w.alive, false);
      const { ender } = await turn(other, s.sum);
      assert.equal(ender.type, "complete");
      await other.shutdown();
    });

    test("host calls: arguments and results with bytes, tuples and big integers", async () => {
      const w = await subject.start();
      const seen: unknown[][] = [];
      const { ender } = await turn(w, s.call, {
        echo: (args) => {
          seen.push(args);
          return { ok: args.length };
        },
      });
      assert.equal(ender.type, "complete", JSON.stringify(ender));
      assert.deepEqual(seen[0]![0], new Uint8Array([0]));
      assert.deepEqual([...(seen[0]![1] as unknown[])], [1, 2]);
      assert.equal(seen[0]![2], 2n ** 70n);
      await w.shutdown();
    });

    test("reset gives fresh state; shutdown ends the worker", async () => {
      const w = await subject.start();
      await turn(w, s.state1);
      assert.equal((await w.request({ type: "reset" })).type, "ok");
      const { ender } = await turn(w, s.stateCheck);
      assert.equal(ender.type === "complete" && ender.results[0]?.text, subject.language === "python" ? "False" : "false");
      await w.shutdown();
      assert.equal(w.alive, false);
    });
  });
}

let remote: RunningWorkerServer;
before(async () => {
  remote = await startWorkerServer({ token: "t0ken", programs: PROGRAMS });
});
after(() => remote.close());

const remoteWorker = async (language: CodeLanguage, configure = true) => {
  const transport = await WebSocketTransport.connect(`${remote.url}/?language=${language}`, { headers: { authorization: "Bearer t0ken" } });
  const w = new Worker(transport);
  if (configure) await w.configure();
  return w;
};

for (const language of ["python", "javascript"] as const) {
  conformance({ name: `${language} subprocess`, language, start: (configure = true) => startLocalWorker(language, { programs: PROGRAMS, configure }) });
  conformance({ name: `${language} over websocket`, language, start: (configure = true) => remoteWorker(language, configure) });
}

test("the remote worker host refuses a wrong token", async () => {
  await assert.rejects(WebSocketTransport.connect(`${remote.url}/?language=python`, { headers: { authorization: "Bearer nope" } }), /401/);
});

