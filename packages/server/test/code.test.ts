/**
 * Code contexts end to end: a real server, real sandboxes, CPython and Node
 * workers inside them, the SDK over HTTP and the session WebSocket.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Agentbox, Tuple, isAgentboxError, type Sandbox } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";

/** A minimal pure-Python wheel, written by hand (there is no PyPI here). */
function buildWheel(dir: string, name: string, version: string, body: string): string {
  const file = join(dir, `${name}-${version}-py3-none-any.whl`);
  const script = `
import zipfile, hashlib, base64, sys
name, version, body, out = sys.argv[1:5]
files = {f"{name}/__init__.py": body.encode(),
         f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n".encode(),
         f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
record = []
for path, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(data)}")
record.append(f"{name}-{version}.dist-info/RECORD,,")
files[f"{name}-{version}.dist-info/RECORD"] = ("\\n".join(record) + "\\n").encode()
with zipfile.ZipFile(out, "w") as z:
    for path, data in files.items():
        z.writestr(path, data)
`;
  execFileSync("/usr/bin/python3", ["-c", script, name, version, body, file]);
  return file;
}

describe("code contexts", () => {
  /** Every message of one run on the raw session WebSocket. */
  const sessionMessages = (contextId: string, run: Record<string, unknown>) =>
    new Promise<Array<Record<string, unknown>>>((resolve, reject) => {
      const url = `${h.server.url.replace("http", "ws")}/v1/sandboxes/${sb.id}/code/contexts/${contextId}/session`;
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${h.server.apiKey}` } });
      const out: Array<Record<string, unknown>> = [];
      ws.on("open", () => ws.send(JSON.stringify(run)));
      ws.on("message", (d) => {
        const m = JSON.parse(String(d)) as Record<string, unknown>;
        out.push(m);
        if (m.type === "done" || m.type === "failed") {
          ws.close();
          resolve(out);
        }
      });
      ws.on("error", reject);
    });

  let h: Harness;
  let client: Agentbox;
  let sb: Sandbox;
  let work: string;

  before(async () => {
    h = await startHarness();
    client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
    sb = await client.sandboxes.create();
    work = mkdtempSync(join(tmpdir(), "agentbox-code-"));
  });
  after(async () => {
    await h.close();
    rmSync(work, { recursive: true, force: true });
  });

  test("python: state across runs, the trailing expression's value, stdout and stderr", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    assert.equal(ctx.info.language, "python");
    const a = await ctx.run("x = 40\nimport sys\nprint('out'); print('err', file=sys.stderr)");
    assert.deepEqual([a.stdout, a.stderr, a.results, a.executionCount], ["out\n", "err\n", [], 1]);
    const b = await ctx.run("x + 2");
    assert.deepEqual(b.results, [{ text: "42", isMain: true }]);
    assert.equal(b.executionCount, 2);
    const none = await ctx.run("None");
    assert.deepEqual(none.results, []);
    // The worker runs inside the sandbox, as its user.
    const who = await ctx.run("import os, socket; (os.getuid(), socket.gethostname(), os.getcwd())");
    assert.equal(who.results[0]!.text, "(1000, 'sandbox', '/workspace')");
  });

  test("python: tracebacks show only the user's cells, with line numbers", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    await ctx.run("def a():\n    return b()\n\ndef b():\n    return c()\n");
    await ctx.run("def c():\n    return 1 / 0\n");
    const ex = await ctx.run("x = 1\na()");
    assert.equal(ex.error?.name, "ZeroDivisionError");
    assert.equal(ex.error?.value, "division by zero");
    assert.equal(
      ex.error?.traceback,
      [
        "Traceback (most recent call last):",
        '  File "<cell-3>", line 2, in <module>',
        "    a()",
        '  File "<cell-1>", line 2, in a',
        "    return b()",
        "           ^^^",
        '  File "<cell-1>", line 5, in b',
        "    return c()",
        "           ^^^",
        '  File "<cell-2>", line 2, in c',
        "    return 1 / 0",
        "           ~~^~~",
        "ZeroDivisionError: division by zero",
        "",
      ].join("\n"),
    );
  });

  test("python: a NameError reads exactly as CPython's", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    const ex = await ctx.run("undefined_thing + 1");
    const cpython = await sb.exec(["python3", "-c", "undefined_thing + 1"]);
    const last = cpython.stderr.trim().split("\n").at(-1)!;
    assert.equal(`${ex.error?.name}: ${ex.error?.value}`, last);
  });

  test("python: host functions with positional and keyword arguments, values both ways, errors, nesting, async", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    const calls: unknown[] = [];
    const functions = {
      add: (a: number, b: number) => a + b,
      describe: (...args: unknown[]) => {
        calls.push(args);
        return { got: args.length, bytes: new Uint8Array([1, 2, 255]), tuple: Tuple.from([1, "two"]), big: 2n ** 70n };
      },
      fail: () => {
        throw Object.assign(new Error("no such user"), { name: "KeyError" });
      },
      slow: async (x: number) => {
        await new Promise((r) => setTimeout(r, 20));
        return x * 2;
      },
    };
    const ex = await ctx.run(
      [
        "r = describe(1, b'\\x00\\x01', (3, 4), name='n', flag=True)",
        "print(type(r['bytes']).__name__, r['bytes'], r['tuple'], r['big'])",
        "try:",
        "    fail()",
        "except KeyError as e:",
        "    print('caught', repr(e))",
        "nested = add(add(1, 2), slow(5))",
        "import asyncio",
        "async def go():",
        "    return await slow(21)",
        "(nested, await go())",
      ].join("\n"),
      { functions },
    );
    assert.equal(ex.error, undefined, ex.error?.traceback);
    assert.equal(ex.stdout, "bytes b'\\x01\\x02\\xff' (1, 'two') 1180591620717411303424\ncaught KeyError('no such user')\n");
    assert.equal(ex.results[0]!.text, "(13, 42)");
    assert.equal(calls.length, 1);
    const [args] = calls as [unknown[]];
    assert.equal(args[0], 1);
    assert.deepEqual(args[1], new Uint8Array([0, 1]));
    assert.ok(args[2] instanceof Tuple);
    assert.deepEqual([...(args[2] as Tuple)], [3, 4]);
    assert.deepEqual(args[3], { name: "n", flag: true });
    // Names the host did not declare still raise NameError; the code's own definition wins.
    const shadow = await ctx.run("def add(a, b):\n    return 'mine'\nadd(1, 2)", { functions });
    assert.equal(shadow.results[0]!.text, "'mine'");
    const unknown = await ctx.run("nope(1)", { functions });
    assert.equal(`${unknown.error?.name}: ${unknown.error?.value}`, "NameError: name 'nope' is not defined");
  });

  test("python: output streams in order, interleaved with host calls", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    const seen: string[] = [];
    await ctx.run("print('a')\nping()\nprint('b')\nimport sys; print('c', file=sys.stderr)\n'end'", {
      functions: { ping: () => void seen.push("ping") },
      onStdout: (t) => seen.push(`out:${t}`),
      onStderr: (t) => seen.push(`err:${t}`),
      onResult: (r) => seen.push(`result:${r.text}`),
    });
    assert.deepEqual(seen, ["out:a\n", "ping", "out:b\n", "err:c\n", "result:'end'"]);
  });

  test("python: a run past its timeout is interrupted; a crash is WORKER_CRASHED; the context works afterwards", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    await ctx.run("kept = 1");
    const slow = await ctx.run("while True:\n    pass", { timeoutMs: 300 });
    assert.equal(slow.error?.name, "TimeoutError");
    // Interrupted (KeyboardInterrupt inside): the worker survived, state kept.
    assert.equal((await ctx.run("kept")).results[0]!.text, "1");
    await assert.rejects(ctx.run("import os\nos._exit(1)"), (e) => isAgentboxError(e, "WORKER_CRASHED"));
    // Replaced: fresh state.
    const after = await ctx.run("'kept' in dir()");
    assert.equal(after.results[0]!.text, "False");
    assert.equal((await ctx.run("1 + 1")).results[0]!.text, "2");
  });

  test("python: dependencies go into the context's own environment; flags are refused; PEP 723 installs first", async () => {
    const wheel = buildWheel(work, "agentboxdemo", "0.1", "VALUE = 'from the wheel'\n");
    await sb.files.mkdir("/workspace/wheels");
    await sb.files.write(`/workspace/wheels/${wheel.split("/").at(-1)}`, readFileSync(wheel));
    const one = await sb.code.createContext({ language: "python" });
    // pip reads its options from the environment too: this context installs from the local wheels.
    const two = await sb.code.createContext({ language: "python", env: { PIP_FIND_LINKS: "/workspace/wheels", PIP_NO_INDEX: "1" } });
    const installed = await one.installDependencies(["agentboxdemo"], { findLinks: "/workspace/wheels" });
    assert.match(installed.output, /Successfully installed agentboxdemo-0\.1/);
    assert.equal((await one.run("import agentboxdemo; agentboxdemo.VALUE")).results[0]!.text, "'from the wheel'");
    const isolated = await two.run("import agentboxdemo");
    assert.equal(isolated.error?.name, "ModuleNotFoundError");
    await assert.rejects(one.installDependencies(["--index-url=http://evil"]), (e) => isAgentboxError(e, "INVALID_REQUEST"));
    await assert.rejects(one.installDependencies([""]), (e) => isAgentboxError(e, "INVALID_REQUEST"));
    const pep = await two.run(
      "# /// script\n# dependencies = ['agentboxdemo']\n# ///\nimport agentboxdemo\nagentboxdemo.VALUE",
    );
    assert.equal(pep.error?.name ?? pep.results[0]?.text, "'from the wheel'", pep.error?.traceback ?? pep.stderr);
    // A package index served on the sandbox's own loopback (a plain directory listing is a simple index).
    await sb.files.mkdir("/workspace/index/simple/agentboxdemo", { recursive: true });
    await sb.files.write(`/workspace/index/simple/agentboxdemo/${wheel.split("/").at(-1)}`, readFileSync(wheel));
    await sb.startProcess(["python3", "-m", "http.server", "8765", "--bind", "127.0.0.1", "--directory", "/workspace/index"], { id: "index" });
    const three = await sb.code.createContext({ language: "python" });
    let viaIndex: { output: string } | undefined;
    for (let i = 0; i < 50 && !viaIndex; i++) {
      viaIndex = await three.installDependencies(["agentboxdemo"], { indexUrl: "http://127.0.0.1:8765/simple" }).catch(async () => {
        await new Promise((r) => setTimeout(r, 100));
        return undefined;
      });
    }
    assert.match(viaIndex!.output, /Successfully installed agentboxdemo-0\.1/);
    assert.equal((await three.run("import agentboxdemo; agentboxdemo.VALUE")).results[0]!.text, "'from the wheel'");
  });

  test("javascript: state, top-level await, last expression, console, errors, host functions", async () => {
    const ctx = await sb.code.createContext({ language: "javascript" });
    await ctx.run("let n = 40; function twice(x) { return x * 2 }");
    const a = await ctx.run("console.log('hi'); console.error('oops'); await new Promise(r => setTimeout(r, 5)); n + 2");
    assert.deepEqual([a.stdout, a.stderr, a.results[0]?.text], ["hi\n", "oops\n", "42"]);
    const err = await ctx.run("function boom() { throw new TypeError('bad') }\nboom()");
    assert.equal(err.error?.name, "TypeError");
    assert.match(err.error!.traceback, /<cell-3>/);
    assert.doesNotMatch(err.error!.traceback, /agentbox-worker|agentbox_worker/);
    const host = await ctx.run("const r = await lookup(twice(n)); try { await fail() } catch (e) { console.log('caught', e.message) }; r", {
      functions: { lookup: (x: number) => `#${x}`, fail: () => { throw new Error("host says no"); } },
    });
    assert.equal(host.stdout, "caught host says no\n");
    assert.equal(host.results[0]!.text, "'#80'");
  });

  test("javascript: a runaway loop times out with state kept; a crash is WORKER_CRASHED and the context works again", async () => {
    const ctx = await sb.code.createContext({ language: "javascript" });
    await ctx.run("let kept = 3");
    const slow = await ctx.run("while (true) {}", { timeoutMs: 300 });
    assert.equal(slow.error?.name, "TimeoutError");
    assert.equal((await ctx.run("kept")).results[0]!.text, "3");
    await assert.rejects(ctx.run("process.kill(process.pid, 'SIGKILL')"), (e) => isAgentboxError(e, "WORKER_CRASHED"));
    assert.equal((await ctx.run("typeof kept")).results[0]!.text, "'undefined'");
  });

  test("hostile code: no host secrets, forged calls reach no undeclared function, junk on the frame pipe kills only its own worker", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    const env = await ctx.run("import os; sorted(k for k in os.environ if 'AGENTBOX' in k or 'KEY' in k)");
    assert.equal(env.results[0]!.text, "[]");
    const key = await ctx.run(`open(${JSON.stringify(join(h.dataDir, "api-key"))}).read()`);
    assert.equal(key.error?.name, "FileNotFoundError");
    // A cell that writes a well-formed `call` frame for an undeclared name on every descriptor:
    // the client of the session never sees it.
    const seen = await sessionMessages(ctx.id, {
      type: "run",
      functions: ["declared"],
      code: [
        "import os, json, struct",
        "msg = json.dumps({'type': 'call', 'callId': 'forged', 'name': 'secret', 'args': [], 'kwargs': {}}).encode()",
        "for fd in range(3, 64):",
        "    try:",
        "        os.write(fd, struct.pack('>I', len(msg)) + msg)",
        "    except OSError:",
        "        pass",
        "'still here'",
      ].join("\n"),
    });
    assert.equal(seen.some((m) => m.type === "call"), false, JSON.stringify(seen));
    assert.equal(seen.at(-1)?.type, "done");
    // Junk on the frame pipe: the parent drops that worker, the context gets a new one.
    const junk = await ctx.run("import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\xff\\xff\\xff\\xffjunk')\n    except OSError:\n        pass").catch((e: unknown) => e);
    assert.ok(isAgentboxError(junk, "WORKER_CRASHED"), String(junk));
    assert.equal((await ctx.run("40 + 2")).results[0]!.text, "42");
    // Other contexts and the sandbox are untouched.
    assert.equal((await sb.exec("echo fine")).stdout, "fine\n");
  });

  test("python-wasm: the embedded interpreter as a context: state, repr of results, output, host functions, errors", async () => {
    const ctx = await sb.code.createContext({ language: "python-wasm" });
    assert.equal(ctx.info.language, "python-wasm");
    await ctx.run("x = 20");
    const a = await ctx.run("print('hello'); (x * 2 + 2, 'ok', None, b'\\x00', {1, 2}, 2**70)");
    assert.equal(a.stdout, "hello\n");
    assert.equal(a.results[0]!.text, "(42, 'ok', None, b'\\x00', {1, 2}, 1180591620717411303424)");
    const host = await ctx.run("double(x)", { functions: { double: (n: number) => n * 2 } });
    assert.equal(host.results[0]!.text, "40");
    const err = await ctx.run("1 / 0");
    assert.equal(err.error?.name, "ZeroDivisionError");
    // Nothing of the sandbox or the host: no files, no subprocesses.
    const escape = await ctx.run("import js");
    assert.match(escape.error?.name ?? "", /^(ImportError|ModuleNotFoundError)$/);
    await assert.rejects(ctx.installDependencies(["anything"]), (e) => isAgentboxError(e, "INVALID_REQUEST"));
    await ctx.remove();
  });

  test("contexts: list, get, restart, delete; bad requests", async () => {
    const ctx = await sb.code.createContext({ language: "python" });
    await ctx.run("y = 5");
    const listed = await sb.code.listContexts();
    assert.ok(listed.some((c) => c.id === ctx.id));
    const restarted = await ctx.restart();
    assert.equal(restarted.executionCount, 0);
    assert.equal((await ctx.run("'y' in dir()")).results[0]!.text, "False");
    await ctx.remove();
    await assert.rejects(sb.code.getContext(ctx.id), (e) => isAgentboxError(e, "NOT_FOUND"));
    const bad = await h.api("POST", `/v1/sandboxes/${sb.id}/code/contexts`, { language: "cobol" });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /^language: /);
    const flag = await h.api("POST", `/v1/sandboxes/${sb.id}/code/contexts/nope/dependencies`, { requirements: ["-r", "x.txt"] });
    assert.equal(flag.status, 400);
    assert.match(flag.body.error.message, /^requirements\.0: must be a requirement, not an option/);
  });
});

describe("code sessions: who serves them", () => {
  /** A raw session socket, its messages collected. */
  const openSession = (url: string, key: string, sandboxId: string, contextId: string) => {
    const ws = new WebSocket(`${url.replace("http", "ws")}/v1/sandboxes/${sandboxId}/code/contexts/${contextId}/session`, { headers: { authorization: `Bearer ${key}` } });
    const messages: Array<Record<string, unknown>> = [];
    let closeCode: number | undefined;
    ws.on("message", (d) => messages.push(JSON.parse(String(d)) as Record<string, unknown>));
    const closed = new Promise<number>((r) => ws.once("close", (code) => r((closeCode = code))));
    const opened = new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    const waitFor = async (pred: (m: Record<string, unknown>) => boolean) => {
      for (let i = 0; i < 1500; i++) {
        const m = messages.find(pred);
        if (m) return m;
        if (closeCode !== undefined) throw new Error(`closed with ${closeCode}: ${JSON.stringify(messages)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`timed out: ${JSON.stringify(messages)}`);
    };
    return { ws, messages, opened, closed, waitFor };
  };

  test("the runtime serves a session: a run waiting on a host call carries on while the server restarts", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "agentbox-code-restart-"));
    try {
      const first = await startHarness({ dataDir, keepRuntime: true });
      const sbId = (await first.createSandbox()).id;
      const ctx = (await first.api("POST", `/v1/sandboxes/${sbId}/code/contexts`, { language: "python" })).body;
      const s = openSession(first.server.url, first.server.apiKey, sbId, ctx.id);
      await s.opened;
      s.ws.send(JSON.stringify({ type: "run", code: "x = ask(20)\nx + ask(1)", functions: ["ask"] }));
      const call = await s.waitFor((m) => m.type === "call");
      await first.close(); // the server is gone; the runtime and the session are not
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(s.ws.readyState, WebSocket.OPEN);
      s.ws.send(JSON.stringify({ type: "return", callId: call.callId, value: 21 }));
      const second = await s.waitFor((m) => m.type === "call" && m.callId !== call.callId);
      s.ws.send(JSON.stringify({ type: "return", callId: second.callId, value: 21 }));
      await s.waitFor((m) => m.type === "done");
      assert.deepEqual(
        s.messages.filter((m) => m.type === "result").map((m) => m.text),
        ["42"],
      );
      // A server on the same data dir, stopping its runtime: the session closes with 1001.
      const next = await startHarness({ dataDir, keepRuntime: false });
      await next.close();
      assert.equal(await s.closed, 1001);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("the server serves a session it does not hand off: host calls and output; a paused sandbox closes it with 4409", async () => {
    const h = await startHarness({ handOffCodeSessions: false });
    try {
      const sbId = (await h.createSandbox()).id;
      const ctx = (await h.api("POST", `/v1/sandboxes/${sbId}/code/contexts`, { language: "python" })).body;
      const s = openSession(h.server.url, h.server.apiKey, sbId, ctx.id);
      await s.opened;
      s.ws.send(JSON.stringify({ type: "run", code: "print('before')\nx = ask(20)\nx + ask(1)", functions: ["ask"] }));
      for (const value of [21, 21]) {
        const call = await s.waitFor((m) => m.type === "call" && !(m as { answered?: boolean }).answered);
        (call as { answered?: boolean }).answered = true;
        s.ws.send(JSON.stringify({ type: "return", callId: call.callId, value }));
      }
      await s.waitFor((m) => m.type === "done");
      assert.deepEqual(
        s.messages.filter((m) => m.type !== "call").map((m) => [m.type, m.text]),
        [["stdout", "before\n"], ["result", "42"], ["done", undefined]],
      );
      s.ws.close();
      await s.closed;
      assert.equal((await h.api("POST", `/v1/sandboxes/${sbId}/pause`, {})).status, 200);
      const paused = openSession(h.server.url, h.server.apiKey, sbId, ctx.id);
      assert.equal(await paused.closed, 4409);
      assert.equal(paused.messages[0]?.code, "SANDBOX_NOT_READY");
      assert.equal((await h.api("POST", `/v1/sandboxes/${sbId}/resume`, {})).status, 200);
    } finally {
      await h.close();
    }
  });

  test("with hand-off on, a missing context or a paused sandbox is refused as before: 4404 / 4409", async () => {
    const h = await startHarness();
    try {
      const sbId = (await h.createSandbox()).id;
      const ctx = (await h.api("POST", `/v1/sandboxes/${sbId}/code/contexts`, { language: "python" })).body;
      const missing = openSession(h.server.url, h.server.apiKey, sbId, "no-such-context");
      assert.equal(await missing.closed, 4404);
      assert.equal(missing.messages[0]?.code, "NOT_FOUND");
      assert.equal((await h.api("POST", `/v1/sandboxes/${sbId}/pause`, {})).status, 200);
      const paused = openSession(h.server.url, h.server.apiKey, sbId, ctx.id);
      assert.equal(await paused.closed, 4409);
      assert.equal(paused.messages[0]?.code, "SANDBOX_NOT_READY");
    } finally {
      await h.close();
    }
  });
});
