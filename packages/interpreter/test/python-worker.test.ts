/**
 * The CPython code worker (workers/python/agentbox_worker.py), driven over the worker protocol
 * exactly as a parent does: `python3 -u -c BOOTSTRAP`, the worker's source as the first frame,
 * then requests. Runs locally (no sandbox); no network.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import {
  encodeValue,
  encodeWorkerFrame,
  isTurnEnder,
  WorkerEvent,
  WorkerFrameReader,
  type CallEvent,
  type TurnEnder,
} from "@agentbox/protocol";

const PYTHON = "/usr/bin/python3";
const WORKER_PATH = fileURLToPath(new URL("../../workers/python/agentbox_worker.py", import.meta.url));
const WORKER_SOURCE = readFileSync(WORKER_PATH, "utf8");
const BOOTSTRAP =
  'import sys;r=sys.stdin.buffer.read;exec(compile(r(int.from_bytes(r(4),"big")).decode(),"<agentbox-worker>","exec"),{"__name__":"__agentbox_worker__"})';

type Answer = { value?: unknown; error?: { name: string; message: string } };
type OnCall = (call: CallEvent) => Answer | Promise<Answer>;
interface Turn {
  events: WorkerEvent[];
  /** Arrival times (performance.now()) of `events`. */
  times: number[];
  ender: TurnEnder;
}

/** A worker process and a tiny parent: send a request, collect events until the turn-ender. */
class Driver {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = "";
  private readonly reader = new WorkerFrameReader();
  private readonly queue: Array<{ event: WorkerEvent; at: number }> = [];
  private wake: (() => void) | null = null;
  private closed = false;

  constructor(env: Record<string, string> = {}, withSource: Buffer = Buffer.alloc(0)) {
    this.proc = spawn(PYTHON, ["-u", "-c", BOOTSTRAP], { env: { ...process.env, ...env }, stdio: "pipe" });
    this.proc.stdout.on("data", (chunk: Buffer) => {
      const at = performance.now();
      for (const payload of this.reader.push(chunk)) {
        this.queue.push({ event: WorkerEvent.parse(JSON.parse(payload.toString("utf8"))), at });
      }
      this.wake?.();
    });
    this.proc.stderr.on("data", (chunk: Buffer) => (this.stderr += chunk.toString("utf8")));
    this.proc.stdin.on("error", () => {});
    this.exited = new Promise((resolve) =>
      this.proc.on("close", (code, signal) => {
        this.closed = true;
        this.wake?.();
        resolve({ code, signal });
      }),
    );
    const source = Buffer.from(WORKER_SOURCE, "utf8");
    const head = Buffer.alloc(4);
    head.writeUInt32BE(source.length, 0);
    this.proc.stdin.write(Buffer.concat([head, source, withSource]));
  }

  send(message: unknown): void {
    this.proc.stdin.write(encodeWorkerFrame(message));
  }

  sendRaw(bytes: Buffer): void {
    this.proc.stdin.write(bytes);
  }

  async next(timeoutMs = 30_000): Promise<{ event: WorkerEvent; at: number }> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (this.closed) throw new Error(`the worker exited (stderr: ${this.stderr})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("no event from the worker in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.queue.shift()!;
  }

  /** One turn: the request, then events until a turn-ender; `call` events are answered by `onCall`. */
  async turn(request: unknown, onCall?: OnCall): Promise<Turn> {
    this.send(request);
    const events: WorkerEvent[] = [];
    const times: number[] = [];
    for (;;) {
      const { event, at } = await this.next();
      events.push(event);
      times.push(at);
      if (event.type === "call") {
        const call = event;
        Promise.resolve(onCall ? onCall(call) : { error: { name: "NameError", message: `no host function ${call.name}` } }).then(
          (answer) => this.send({ type: "resume_call", callId: call.callId, ...answer }),
        );
      }
      if (isTurnEnder(event)) return { events, times, ender: event };
    }
  }

  feed(code: string, functions?: string[], onCall?: OnCall): Promise<Turn> {
    return this.turn({ type: "feed", code, ...(functions ? { functions } : {}) }, onCall);
  }

  async configure(extra: Record<string, unknown> = {}): Promise<void> {
    const { ender } = await this.turn({ type: "configure", protocolVersion: 1, ...extra });
    assert.deepEqual(ender, { type: "ok" });
  }

  kill(): void {
    if (!this.closed) this.proc.kill("SIGKILL");
  }
}

/** The main result's text of a feed that must complete. */
function mainText(turn: Turn): string | undefined {
  assert.equal(turn.ender.type, "complete", JSON.stringify(turn.ender));
  if (turn.ender.type !== "complete") throw new Error("unreachable");
  return turn.ender.results.find((r) => r.isMain)?.text;
}

function prints(turn: Turn, stream?: "stdout" | "stderr"): string {
  return turn.events
    .filter((e): e is Extract<WorkerEvent, { type: "print" }> => e.type === "print" && (!stream || e.stream === stream))
    .map((e) => e.text)
    .join("");
}

function errorOf(turn: Turn): Extract<WorkerEvent, { type: "error" }> {
  assert.equal(turn.ender.type, "error", JSON.stringify(turn.ender));
  return turn.ender as Extract<WorkerEvent, { type: "error" }>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Build a minimal pure-Python wheel by hand (a zip with the module and its dist-info). */
function buildWheel(dir: string, name: string, moduleSource: string): void {
  const script = `
import base64, hashlib, sys, zipfile
d, name, src = sys.argv[1], sys.argv[2], sys.argv[3]
info = f"{name}-0.1.dist-info"
files = {
    f"{name}/__init__.py": src.encode(),
    f"{info}/METADATA": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: 0.1\\n".encode(),
    f"{info}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: agentbox-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
record = []
for path, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(data)}")
record.append(f"{info}/RECORD,,")
files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
with zipfile.ZipFile(f"{d}/{name}-0.1-py3-none-any.whl", "w") as z:
    for path, data in files.items():
        z.writestr(path, data)
`;
  const r = spawnSync(PYTHON, ["-c", script, dir, name, moduleSource], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
}

describe("python worker: protocol basics", () => {
  let w: Driver;
  before(async () => {
    w = new Driver();
    await w.configure();
  });
  after(() => w.kill());

  test("state persists across feeds; the trailing expression is the main result", async () => {
    assert.equal(mainText(await w.feed("x = 20\ny = x + 1")), undefined);
    const t = await w.feed("x * 2 + y");
    assert.equal(mainText(t), "61");
    assert.equal(mainText(await w.feed("'a' + 'b'")), "'ab'");
    assert.equal(mainText(await w.feed("[1, (2, 3), {'k': None}]")), "[1, (2, 3), {'k': None}]");
  });

  test("a trailing None is no result; statements only is no result", async () => {
    const t = await w.feed("None");
    assert.equal(t.ender.type, "complete");
    assert.deepEqual(t.ender.type === "complete" && t.ender.results, []);
    const t2 = await w.feed("print('hi')");
    assert.deepEqual(t2.ender.type === "complete" && t2.ender.results, []);
    assert.equal(prints(t2), "hi\n");
  });

  test("executionCount increments per feed and names the cells", async () => {
    const a = await w.feed("1");
    const b = await w.feed("import sys\nsys._getframe().f_code.co_filename");
    assert.equal(a.ender.type, "complete");
    assert.equal(b.ender.type, "complete");
    if (a.ender.type !== "complete" || b.ender.type !== "complete") return;
    assert.equal(b.ender.executionCount, a.ender.executionCount + 1);
    assert.equal(b.ender.results[0]!.text, `'<cell-${b.ender.executionCount}>'`);
  });

  test("stdout and stderr are separate streams", async () => {
    const t = await w.feed("import sys\nprint('out1')\nprint('err1', file=sys.stderr)\nsys.stdout.write('out2\\n')\nsys.stderr.buffer.write(b'err2\\n')");
    assert.equal(prints(t, "stdout"), "out1\nout2\n");
    assert.equal(prints(t, "stderr"), "err1\nerr2\n");
  });

  test("os.write to fds 1 and 2, and child processes, do not corrupt the frame stream", async () => {
    const t = await w.feed(
      [
        "import os, subprocess",
        "os.write(1, b'raw-out\\n')",
        "os.write(2, b'raw-err\\n')",
        "os.write(1, bytes(range(256)) * 100)",
        "subprocess.run(['sh', '-c', 'echo child-out; echo child-err >&2'])",
        "print('after')",
        "'done'",
      ].join("\n"),
    );
    assert.equal(mainText(t), "'done'");
    const out = prints(t, "stdout");
    assert.match(out, /raw-out\n/);
    assert.match(out, /child-out\n/);
    assert.match(out, /after\n$/);
    assert.match(prints(t, "stderr"), /raw-err\n[\s\S]*child-err\n/);
    assert.equal(mainText(await w.feed("1+1")), "2");
  });

  test("input() reads end-of-file and cannot steal frames", async () => {
    const t = await w.feed("try:\n    input()\nexcept EOFError as e:\n    r = 'eof'\nimport sys\n(r, sys.stdin.read())");
    assert.equal(mainText(t), "('eof', '')");
  });

  test("output streams while the cell runs", async () => {
    const start = performance.now();
    const t = await w.feed("import time\nprint('first')\ntime.sleep(0.6)\nprint('second', end='')\ntime.sleep(0.6)\n'end'");
    assert.equal(mainText(t), "'end'");
    const firstAt = t.times[t.events.findIndex((e) => e.type === "print" && e.text === "first\n")]!;
    const secondAt = t.times[t.events.findIndex((e) => e.type === "print" && e.text === "second")]!;
    const endAt = t.times[t.times.length - 1]!;
    // Measured against the end, not the start: a loaded machine may be slow to start the cell, but
    // 1.2 s of sleeps still separate a streamed first line from the end.
    assert.ok(endAt - firstAt > 600, `first print ${endAt - firstAt} ms before the end (${firstAt - start} ms after the start)`);
    assert.ok(endAt - secondAt > 400, `a partial line arrives before the cell ends (${endAt - secondAt} ms before)`);
  });

  test("a trailing expression's rich representations", async () => {
    const t = await w.feed(
      [
        "import base64",
        "class Rich:",
        "    def __repr__(self): return 'Rich()'",
        "    def _repr_html_(self): return '<b>rich</b>'",
        "    def _repr_png_(self): return b'\\x89PNG-not-really'",
        "    def _repr_svg_(self): return '<svg/>'",
        "    def _repr_json_(self): return {'a': [1, 2]}",
        "Rich()",
      ].join("\n"),
    );
    assert.equal(t.ender.type, "complete");
    if (t.ender.type !== "complete") return;
    assert.deepEqual(t.ender.results, [
      {
        isMain: true,
        text: "Rich()",
        html: "<b>rich</b>",
        svg: "<svg/>",
        png: Buffer.from("\x89PNG-not-really", "latin1").toString("base64"),
        json: { a: [1, 2] },
      },
    ]);
    const cls = await w.feed("Rich");
    assert.deepEqual(cls.ender.type === "complete" && cls.ender.results, [{ isMain: true, text: "<class '__main__.Rich'>" }]);
  });

  test("top-level await on one event loop that lives across feeds", async () => {
    await w.feed("import asyncio\nasync def current():\n    return asyncio.get_running_loop()\nloop1 = await current()\nbg = asyncio.ensure_future(asyncio.sleep(0.05, result='bg-done'))");
    assert.equal(mainText(await w.feed("(await current()) is loop1")), "True");
    assert.equal(mainText(await w.feed("await bg")), "'bg-done'");
    assert.equal(mainText(await w.feed("await asyncio.sleep(0.01, result=5)")), "5");
  });

  test("sys.exit(0) completes; sys.exit(3) is an error; the worker lives on", async () => {
    const ok = await w.feed("import sys\nprint('bye')\nsys.exit(0)");
    assert.equal(ok.ender.type, "complete");
    const bad = errorOf(await w.feed("import sys\nsys.exit(3)"));
    assert.equal(bad.name, "SystemExit");
    assert.equal(bad.value, "3");
    assert.equal(mainText(await w.feed("'alive'")), "'alive'");
  });

  test("output of threads that outlive a cell arrives with the next feed", async () => {
    // The thread leaves a file once it has printed: wait for that, not a fixed time (late on a loaded machine).
    const dir = mkdtempSync(join(tmpdir(), "agentbox-py-thread-"));
    const printed = join(dir, "printed");
    try {
      const t = await w.feed(`import threading, time\ndef later():\n    time.sleep(0.2)\n    print('from the thread')\n    open(${JSON.stringify(printed)}, 'w').close()\nthreading.Thread(target=later).start()\n'started'`);
      assert.equal(mainText(t), "'started'");
      assert.equal(prints(t), "");
      for (let i = 0; i < 1000 && !existsSync(printed); i++) await sleep(10);
      assert.ok(existsSync(printed), "the thread ran");
      const next = await w.feed("'next'");
      assert.equal(prints(next), "from the thread\n");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("forked children and C-level stdio are captured too", async () => {
    const t = await w.feed(
      [
        "import os, ctypes",
        "pid = os.fork()",
        "if pid == 0:",
        "    print('from the fork')",
        "    os._exit(0)",
        "os.waitpid(pid, 0)",
        "libc = ctypes.CDLL(None)",
        "libc.printf(b'from printf\\n')",
        "'parent'",
      ].join("\n"),
    );
    assert.equal(mainText(t), "'parent'");
    assert.match(prints(t, "stdout"), /from the fork\n/);
    assert.match(prints(t, "stdout"), /from printf\n/);
  });

  test("the cells' module is __main__: classes pickle, dataclasses work", async () => {
    const t = await w.feed("import pickle, dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\npickle.loads(pickle.dumps(P(3)))");
    assert.equal(mainText(t), "P(x=3)");
  });

  test("open matplotlib figures become PNG results (only once pyplot is imported)", async () => {
    // A stand-in for matplotlib.pyplot (not installed here): the worker only uses its figure API.
    const setup = [
      "import sys, types",
      "class Figure:",
      "    def __init__(self, n): self.n = n",
      "    def __repr__(self): return f'<Figure {self.n}>'",
      "    def savefig(self, buf, format, **options): buf.write(b'PNG' + bytes([self.n]))",
      "figs = {}",
      "plt = types.ModuleType('matplotlib.pyplot')",
      "plt.get_fignums = lambda: sorted(figs)",
      "plt.figure = lambda n: figs.setdefault(n, Figure(n))",
      "plt.close = lambda n: figs.pop(n, None)",
      "plt.figure(1)",
      "plt.figure(2)",
      "None",
    ].join("\n");
    const before = await w.feed(setup);
    assert.deepEqual(before.ender.type === "complete" && before.ender.results, [], "matplotlib not imported: nothing rendered");
    const t = await w.feed("sys.modules['matplotlib'] = types.ModuleType('matplotlib')\nsys.modules['matplotlib.pyplot'] = plt\n'plotted'");
    assert.equal(t.ender.type, "complete");
    if (t.ender.type !== "complete") return;
    assert.deepEqual(t.ender.results, [
      { isMain: true, text: "'plotted'" },
      { isMain: false, text: "<Figure 1>", png: Buffer.from("PNG\x01").toString("base64") },
      { isMain: false, text: "<Figure 2>", png: Buffer.from("PNG\x02").toString("base64") },
    ]);
    assert.equal(mainText(await w.feed("len(figs)")), "0");
    await w.feed("del sys.modules['matplotlib.pyplot'], sys.modules['matplotlib']");
  });

  test("reset: fresh globals, the execution count starts again", async () => {
    await w.feed("keep = 1");
    assert.deepEqual((await w.turn({ type: "reset" })).ender, { type: "ok" });
    const e = errorOf(await w.feed("keep"));
    assert.equal(e.name, "NameError");
    assert.equal(e.executionCount, 1);
    const t = await w.feed("__name__");
    assert.equal(mainText(t), "'__main__'");
    assert.equal(t.ender.type === "complete" && t.ender.executionCount, 2);
    assert.equal(mainText(await w.feed("import asyncio\nawait asyncio.sleep(0, result='new loop')")), "'new loop'");
  });
});

describe("python worker: errors", () => {
  let w: Driver;
  before(async () => {
    w = new Driver();
    await w.configure();
  });
  after(() => w.kill());

  test("a traceback three calls deep shows only the cells' frames, as CPython formats them", async () => {
    await w.feed("def outer(x):\n    return middle(x) + 1\n\ndef middle(x):\n    return inner(x) * 2");
    await w.feed("def inner(x):\n    y = 10\n    return y / x");
    const e = errorOf(await w.feed("z = 5\nouter(0)"));
    assert.equal(e.name, "ZeroDivisionError");
    assert.equal(e.value, "division by zero");
    assert.equal(e.executionCount, 3);
    assert.equal(
      e.traceback,
      [
        "Traceback (most recent call last):",
        '  File "<cell-3>", line 2, in <module>',
        "    outer(0)",
        '  File "<cell-1>", line 2, in outer',
        "    return middle(x) + 1",
        "           ^^^^^^^^^",
        '  File "<cell-1>", line 5, in middle',
        "    return inner(x) * 2",
        "           ^^^^^^^^",
        '  File "<cell-2>", line 3, in inner',
        "    return y / x",
        "           ~~^~~",
        "ZeroDivisionError: division by zero",
        "",
      ].join("\n"),
    );
  });

  test("chained exceptions keep both tracebacks, without the worker's frames", async () => {
    const e = errorOf(await w.feed("try:\n    {}['k']\nexcept KeyError as err:\n    raise ValueError('wrapped') from err"));
    assert.equal(e.name, "ValueError");
    assert.match(e.traceback, /^Traceback \(most recent call last\):\n  File "<cell-\d+>", line 2, in <module>\n    \{\}\['k'\]\n[\s\S]*KeyError: 'k'\n\nThe above exception was the direct cause of the following exception:\n\n/);
    assert.doesNotMatch(e.traceback, /agentbox-worker|agentbox_worker/);
  });

  test("NameError messages are CPython's, suggestion included", async () => {
    for (const code of ["foo_bar_baz + 1", "number_of_items = 3\nnumber_of_itmes"]) {
      const reference = spawnSync(PYTHON, ["-c", code], { encoding: "utf8" });
      const lastLine = reference.stderr.trimEnd().split("\n").pop();
      const e = errorOf(await w.feed(code));
      assert.equal(e.name, "NameError");
      assert.equal(e.traceback.trimEnd().split("\n").pop(), lastLine);
    }
    const e = errorOf(await w.feed("undefined_thing"));
    assert.equal(e.value, "name 'undefined_thing' is not defined");
  });

  test("SyntaxError is formatted like CPython's, with the caret", async () => {
    const e = errorOf(await w.feed("x = 1\nif x:\nprint(x)"));
    assert.equal(e.name, "IndentationError");
    const s = errorOf(await w.feed("a = (1 +\n"));
    assert.equal(s.name, "SyntaxError");
    const plain = errorOf(await w.feed("x = = 2"));
    assert.equal(plain.name, "SyntaxError");
    assert.match(plain.traceback, /^  File "<cell-\d+>", line 1\n    x = = 2\n        \^\nSyntaxError: invalid syntax\n$/);
    const reference = spawnSync(PYTHON, ["-c", "x = = 2"], { encoding: "utf8" }).stderr.replace('"<string>"', '"<cell-N>"');
    assert.equal(plain.traceback.replace(/<cell-\d+>/, "<cell-N>"), reference);
    assert.equal(mainText(await w.feed("'fine'")), "'fine'");
  });

  test("tracebacks are byte-identical to CPython running the same code as a script", async () => {
    const scratch = mkdtempSync(join(tmpdir(), "agentbox-pyref-"));
    try {
      const snippets = [
        "def f(a):\n    return g(a) + 1\n\ndef g(a):\n    return {'k': 1}[a]\n\nx = [\n    f('missing'),\n]",
        "items = [1, 2]\nitems.apend(3)",
        "def h():\n    counter = 1\n    return countr + 1\nh()",
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    raise RuntimeError('while handling')",
        "raise ExceptionGroup('many', [ValueError('one'), TypeError('two')])",
        "x = 1\nclass C:\n    def m(self):\n        return self.value\nC().m()",
        "print('unclosed'",
        "def f():\n  return 1\n    return 2",
        "assert 1 + 1 == 3, 'math'",
      ];
      for (const code of snippets) {
        const file = join(scratch, "snippet.py");
        writeFileSync(file, code);
        const reference = spawnSync(PYTHON, [file], { encoding: "utf8" });
        const e = errorOf(await w.feed(code));
        assert.equal(e.traceback, reference.stderr.replaceAll(`"${file}"`, `"<cell-${e.executionCount}>"`), code);
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  test("library frames are left out: only the cells' frames remain", async () => {
    const e = errorOf(await w.feed("import json\ndef parse(s):\n    return json.loads(s)\nparse('{bad')"));
    assert.equal(e.name, "JSONDecodeError");
    assert.equal(
      e.traceback,
      [
        "Traceback (most recent call last):",
        `  File "<cell-${e.executionCount}>", line 4, in <module>`,
        "    parse('{bad')",
        `  File "<cell-${e.executionCount}>", line 3, in parse`,
        "    return json.loads(s)",
        "           ^^^^^^^^^^^^^",
        "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "",
      ].join("\n"),
    );
  });

  test("KeyboardInterrupt (SIGINT) stops a busy loop, a sleep; the worker serves the next feed", async () => {
    // Imports come before "ready" so the signal lands in the wait itself, never mid-import on a slow machine.
    const loops = [["", "while True:\n    pass"], ["import time", "time.sleep(60)"], ["import asyncio", "await asyncio.sleep(60)"]];
    for (const [setup, loop] of loops) {
      w.send({ type: "feed", code: `${setup}\nprint('ready', flush=True)\n${loop}` });
      const ready = await w.next();
      assert.equal(ready.event.type, "print");
      await sleep(50);
      process.kill(w.proc.pid!, "SIGINT");
      let ender;
      do ender = (await w.next()).event;
      while (!isTurnEnder(ender));
      assert.equal(ender.type, "error");
      if (ender.type !== "error") return;
      assert.equal(ender.name, "KeyboardInterrupt");
      assert.match(ender.traceback, /^Traceback \(most recent call last\):\n  File "<cell-\d+>", line \d+, in <module>\n/);
      assert.match(ender.traceback, /\nKeyboardInterrupt\n$/);
      assert.equal(mainText(await w.feed("40 + 2")), "42");
    }
    process.kill(w.proc.pid!, "SIGINT"); // while idle: ignored
    await sleep(50);
    assert.equal(mainText(await w.feed("'still here'")), "'still here'");
  });

  test("KeyboardInterrupt while waiting for a host function; its late answer is ignored", async () => {
    const t = await w.feed("print('calling')\nslow(1)", ["slow"], async () => {
      process.kill(w.proc.pid!, "SIGINT");
      await sleep(300);
      return { value: "too late" };
    });
    const e = errorOf(t);
    assert.equal(e.name, "KeyboardInterrupt");
    assert.match(e.traceback, /line 2, in <module>\n    slow\(1\)\n/);
    await sleep(400);
    assert.equal(mainText(await w.feed("'next'")), "'next'");
  });
});

describe("python worker: host functions", () => {
  let w: Driver;
  before(async () => {
    w = new Driver();
    await w.configure();
  });
  after(() => w.kill());

  test("positional and keyword arguments; values cross with their tags", async () => {
    let seen: CallEvent | undefined;
    const t = await w.feed("r = f(1, 'two', b'\\x00\\xff', (1, 2), 2**70, float('nan'), -1.5, None, [True], k={'$x': 1}, d={'a': (3,)})\nr", ["f"], (call) => {
      seen = call;
      return { value: encodeValue({ ok: true, big: 2n ** 64n, raw: new Uint8Array([1, 2, 3]), inf: -Infinity }) };
    });
    assert.deepEqual(seen!.name, "f");
    assert.deepEqual(seen!.args, [1, "two", { $bytes: "AP8=" }, { $tuple: [1, 2] }, { $int: "1180591620717411303424" }, { $float: "nan" }, -1.5, null, [true]]);
    assert.deepEqual(seen!.kwargs, { k: { $dict: { $x: 1 } }, d: { a: { $tuple: [3] } } });
    assert.equal(mainText(t), "{'ok': True, 'big': 18446744073709551616, 'raw': b'\\x01\\x02\\x03', 'inf': -inf}");
  });

  test("tuples, bytes and big ints come back as Python types", async () => {
    const t = await w.feed("v = echo((1, 2), b'abc', 2**80)\n[type(x).__name__ for x in v] + [v == [(1, 2), b'abc', 2**80]]", ["echo"], (call) => ({ value: call.args }));
    assert.equal(mainText(t), "['tuple', 'bytes', 'int', True]");
    const tagged = await w.feed("echo({'$tuple': [1]}, {'a': 1})", ["echo"], (call) => ({ value: call.args }));
    assert.equal(mainText(tagged), "[{'$tuple': [1]}, {'a': 1}]");
  });

  test("arguments that cannot cross raise TypeError in the code", async () => {
    const t = await w.feed("try:\n    f({1: 'int key'})\nexcept TypeError as e:\n    r1 = str(e)\ntry:\n    f(object())\nexcept TypeError as e:\n    r2 = str(e)\n(r1, r2)", ["f"]);
    assert.equal(t.events.filter((e) => e.type === "call").length, 0);
    assert.equal(mainText(t), `('dict keys sent to the host must be str, not int', "a value of type 'object' cannot be sent to the host")`);
  });

  test("a host error arrives as the builtin exception of that name, else RuntimeError", async () => {
    const t = await w.feed(
      "out = []\nfor name in ['ValueError', 'KeyError', 'HttpError']:\n    try:\n        fail(name)\n    except Exception as e:\n        out.append((type(e).__name__, str(e)))\nout",
      ["fail"],
      (call) => ({ error: { name: String(call.args[0]), message: "bad input" } }),
    );
    assert.equal(mainText(t), "[('ValueError', 'bad input'), ('KeyError', \"'bad input'\"), ('RuntimeError', 'bad input')]");
    const e = errorOf(await w.feed("x = 1\nfail('PermissionError')", ["fail"], () => ({ error: { name: "PermissionError", message: "no" } })));
    assert.equal(e.name, "PermissionError");
    assert.match(e.traceback, /^Traceback \(most recent call last\):\n  File "<cell-\d+>", line 2, in <module>\n    fail\('PermissionError'\)\nPermissionError: no\n$/);
  });

  test("nested callbacks: one host function's result is passed to another", async () => {
    const calls: string[] = [];
    const t = await w.feed("add(double(3), double(double(1)))", ["add", "double"], (call) => {
      calls.push(`${call.name}(${call.args.join(",")})`);
      const args = call.args as number[];
      return { value: call.name === "double" ? args[0]! * 2 : args[0]! + args[1]! };
    });
    assert.equal(mainText(t), "10");
    assert.deepEqual(calls, ["double(3)", "double(1)", "double(2)", "add(6,4)"]);
  });

  test("prints and calls arrive in order", async () => {
    const t = await w.feed("print('a')\nprint('b', end='')\nf(1)\nprint('c')\nf(2)\nprint('d')", ["f"], async (call) => {
      await sleep(20);
      return { value: call.args[0] };
    });
    const seq = t.events.map((e) => (e.type === "print" ? `print:${e.text}` : e.type === "call" ? `call:${e.args[0]}` : e.type));
    assert.deepEqual(seq, ["print:a\n", "print:b", "call:1", "print:c\n", "call:2", "print:d\n", "complete"]);
  });

  test("host functions from async code: `await f(x)`, and plain calls stay synchronous", async () => {
    const t = await w.feed(
      "import asyncio\nasync def g(x):\n    a = await f(x)\n    b = f(x + 1)\n    return a + b\nawait asyncio.sleep(0)\nr = await g(1)\ns = f(10) + 1\n(r, s, await f(5))",
      ["f"],
      (call) => ({ value: (call.args[0] as number) * 100 }),
    );
    assert.equal(mainText(t), "(300, 1001, 500)");
    const err = await w.feed("async def h():\n    try:\n        await f(1)\n    except ValueError as e:\n        return 'caught ' + str(e)\nawait h()", ["f"], () => ({ error: { name: "ValueError", message: "boom" } }));
    assert.equal(mainText(err), "'caught boom'");
  });

  test("a user's definition shadows a declared function; declared ones go after the feed", async () => {
    await w.feed("def mine(x):\n    return 'own ' + str(x)");
    const t = await w.feed("mine(1)", ["mine"]);
    assert.equal(t.events.filter((e) => e.type === "call").length, 0);
    assert.equal(mainText(t), "'own 1'");
    const same = await w.feed("def g():\n    return 'defined here'\ng()", ["g"]);
    assert.equal(same.events.filter((e) => e.type === "call").length, 0);
    assert.equal(mainText(same), "'defined here'");
    assert.equal(mainText(await w.feed("g()")), "'defined here'");
    assert.equal(mainText(await w.feed("len([1])", ["len"])), "1");
    assert.equal(mainText(await w.feed("temp(7)", ["temp"], (c) => ({ value: c.args[0] }))), "7");
    assert.equal(errorOf(await w.feed("temp(7)")).name, "NameError");
  });

  test("host functions called from threads", async () => {
    const t = await w.feed(
      "from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor(4) as ex:\n    r = list(ex.map(sq, range(8)))\nr",
      ["sq"],
      async (call) => {
        await sleep(5);
        return { value: (call.args[0] as number) ** 2 };
      },
    );
    assert.equal(mainText(t), "[0, 1, 4, 9, 16, 25, 36, 49]");
  });
});

describe("python worker: limits and broken input", () => {
  test("configure with another protocol version: fatal_error, exit 1", async () => {
    const w = new Driver();
    const { ender } = await w.turn({ type: "configure", protocolVersion: 2 });
    assert.equal(ender.type, "fatal_error");
    assert.match(ender.type === "fatal_error" ? ender.message : "", /protocol version 2.*version 1/);
    assert.equal((await w.exited).code, 1);
  });

  test("a malformed payload is a ProtocolError and the session lives on", async () => {
    const w = new Driver();
    try {
      await w.configure();
      await w.feed("kept = 'yes'");
      const raw = Buffer.from("this is not json", "utf8");
      const head = Buffer.alloc(4);
      head.writeUInt32BE(raw.length);
      w.sendRaw(Buffer.concat([head, raw]));
      const first = (await w.next()).event;
      assert.equal(first.type, "error");
      assert.equal(first.type === "error" && first.name, "ProtocolError");
      for (const bad of [{ type: "bogus" }, { type: "feed" }, [1, 2], { type: "configure" }, { type: "install_dependencies", requirements: "x" }]) {
        const e = errorOf(await w.turn(bad));
        assert.equal(e.name, "ProtocolError");
      }
      assert.equal(mainText(await w.feed("kept")), "'yes'");
    } finally {
      w.kill();
    }
  });

  test("an oversize frame is fatal: fatal_error, exit 2", async () => {
    const w = new Driver();
    await w.configure({ limits: { maxFrameBytes: 1000 } });
    assert.equal(mainText(await w.feed("'x' * 10")), "'xxxxxxxxxx'");
    w.send({ type: "feed", code: "#" + "x".repeat(2000) });
    const { event } = await w.next();
    assert.equal(event.type, "fatal_error");
    assert.match(event.type === "fatal_error" ? event.message : "", /over the 1000-byte limit/);
    assert.equal((await w.exited).code, 2);
  });

  test("the default limit (16 MiB) applies without configure; a stream ending mid-frame is fatal", async () => {
    const w = new Driver();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(16 * 1024 * 1024 + 1);
    w.sendRaw(head);
    assert.equal((await w.next()).event.type, "fatal_error");
    assert.equal((await w.exited).code, 2);

    const w2 = new Driver();
    await w2.configure();
    w2.sendRaw(encodeWorkerFrame({ type: "feed", code: "1" }).subarray(0, 10));
    w2.proc.stdin.end();
    assert.equal((await w2.next()).event.type, "fatal_error");
    assert.equal((await w2.exited).code, 2);
  });

  test("maxOutputBytes caps a feed's output, with one notice", async () => {
    const w = new Driver();
    try {
      await w.configure({ limits: { maxOutputBytes: 100 } });
      const t = await w.feed("for i in range(100):\n    print('0123456789')\n'done'");
      assert.equal(mainText(t), "'done'");
      assert.equal(prints(t, "stdout").length, 100);
      assert.match(prints(t, "stderr"), /^\n\[agentbox: output truncated[^\n]*\]\n$/);
      const next = await w.feed("print('fresh budget')");
      assert.equal(prints(next), "fresh budget\n");
    } finally {
      w.kill();
    }
  });

  test("big output is split into frames under the limit", async () => {
    const w = new Driver();
    try {
      await w.configure({ limits: { maxFrameBytes: 4096 } });
      const t = await w.feed("print('é' * 20000)\nlen('x' * 50000)");
      assert.equal(prints(t), "é".repeat(20000) + "\n");
      assert.equal(mainText(t), "50000");
      const big = await w.feed("'y' * 50000");
      assert.equal(big.ender.type, "complete");
      assert.match(mainText(big)!, /truncated/);
    } finally {
      w.kill();
    }
  });

  test("requests written together with the source (read ahead by the bootstrap) are served", async () => {
    const w = new Driver({}, Buffer.concat([encodeWorkerFrame({ type: "configure", protocolVersion: 1 }), encodeWorkerFrame({ type: "feed", code: "6 * 7" })]));
    try {
      assert.deepEqual((await w.next()).event, { type: "ok" });
      const done = (await w.next()).event;
      assert.equal(done.type, "complete");
      assert.equal(done.type === "complete" && done.results[0]!.text, "42");
    } finally {
      w.kill();
    }
  });

  test("scriptName names the cells in tracebacks", async () => {
    const w = new Driver();
    try {
      await w.configure({ scriptName: "<job-{n}>" });
      const e = errorOf(await w.feed("x = 1\nraise ValueError('named')"));
      assert.equal(e.traceback, 'Traceback (most recent call last):\n  File "<job-1>", line 2, in <module>\n    raise ValueError(\'named\')\nValueError: named\n');
    } finally {
      w.kill();
    }
  });

  test("shutdown: ok, then exit 0", async () => {
    const w = new Driver();
    await w.configure();
    assert.deepEqual((await w.turn({ type: "shutdown" })).ender, { type: "ok" });
    assert.equal((await w.exited).code, 0);
  });
});

describe("python worker: dependencies", () => {
  let dir: string;
  let wheels: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "agentbox-pyworker-"));
    wheels = join(dir, "wheels");
    mkdirSync(wheels);
    buildWheel(wheels, "abxdemo", "VALUE = 42\ndef hello(name):\n    return 'hello ' + name\n");
    buildWheel(wheels, "abxpep", "ANSWER = 'from pep 723'\n");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("flag-like or empty requirements are refused", async () => {
    const w = new Driver({ AGENTBOX_VENV_DIR: join(dir, "venv-refuse") });
    try {
      await w.configure();
      for (const reqs of [["-e", "."], ["--index-url=http://evil"], [""], ["ok", "  "]]) {
        const e = errorOf(await w.turn({ type: "install_dependencies", requirements: reqs }));
        assert.equal(e.name, "ValueError");
      }
    } finally {
      w.kill();
    }
  });

  test("install from find-links into the context's venv; importable there, not in another worker", async () => {
    const a = new Driver({ AGENTBOX_VENV_DIR: join(dir, "venv-a") });
    const b = new Driver({ AGENTBOX_VENV_DIR: join(dir, "venv-b") });
    try {
      await a.configure();
      await b.configure();
      assert.equal(errorOf(await a.feed("import abxdemo")).name, "ModuleNotFoundError");
      const t = await a.turn({ type: "install_dependencies", requirements: ["abxdemo"], findLinks: wheels });
      assert.deepEqual(t.ender, { type: "ok" }, prints(t));
      assert.match(prints(t, "stderr"), /Successfully installed abxdemo-0\.1/);
      assert.equal(mainText(await a.feed("import abxdemo\n(abxdemo.VALUE, abxdemo.hello('you'))")), "(42, 'hello you')");
      assert.equal(mainText(await a.feed("abxdemo.__file__.startswith(" + JSON.stringify(join(dir, "venv-a")) + ")")), "True");
      assert.equal(errorOf(await b.feed("import abxdemo")).name, "ModuleNotFoundError");
      const missing = errorOf(await a.turn({ type: "install_dependencies", requirements: ["abx-no-such-thing"], findLinks: wheels }));
      assert.equal(missing.name, "InstallError");
      assert.match(missing.value, /No matching distribution|Could not find a version/);
    } finally {
      a.kill();
      b.kill();
    }
  });

  test("a PEP 723 block installs its dependencies before the cell runs", async () => {
    const w = new Driver({ AGENTBOX_VENV_DIR: join(dir, "venv-pep"), PIP_FIND_LINKS: wheels, PIP_NO_INDEX: "1" });
    try {
      await w.configure();
      const code = "# /// script\n# dependencies = [\n#   \"abxpep\",\n# ]\n# ///\nimport abxpep\nabxpep.ANSWER";
      const t = await w.feed(code);
      assert.equal(mainText(t), "'from pep 723'");
      assert.match(prints(t, "stderr"), /Successfully installed abxpep-0\.1/);
      const again = await w.feed(code);
      assert.equal(mainText(again), "'from pep 723'");
      assert.equal(prints(again), "", "an installed block is not installed again");
    } finally {
      w.kill();
    }
  });
});

describe("python worker: speed", () => {
  test("feed round trip and host callbacks", async (t) => {
    const w = new Driver();
    try {
      await w.configure();
      for (let i = 0; i < 20; i++) await w.feed("1+1");
      const samples: number[] = [];
      for (let i = 0; i < 200; i++) {
        const start = performance.now();
        const turn = await w.feed("1+1");
        samples.push(performance.now() - start);
        assert.equal(mainText(turn), "2");
      }
      samples.sort((a, b) => a - b);
      const median = samples[100]!;
      const start = performance.now();
      const calls = await w.feed("s = 0\nfor i in range(1000):\n    s += f(i)\ns", ["f"], (call) => ({ value: call.args[0] }));
      const callsMs = performance.now() - start;
      assert.equal(mainText(calls), "499500");
      t.diagnostic(`feed 1+1 round trip: median ${median.toFixed(3)} ms over 200 (p90 ${samples[180]!.toFixed(3)} ms)`);
      t.diagnostic(`1000 host callbacks in one feed: ${callsMs.toFixed(1)} ms (${((callsMs * 1000) / 1000).toFixed(0)} µs each)`);
      assert.ok(median < 20, `median ${median} ms`);
    } finally {
      w.kill();
    }
  });
});
