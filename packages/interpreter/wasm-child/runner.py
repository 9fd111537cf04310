# agentbox python-wasm runner: loaded into a private namespace of the Pyodide thread before
# any user code. Sets up the Python-side lockdown, value encoding and the run/reset entry points.
import sys, ast, json, base64, math, io, builtins, linecache, traceback, os, stat, time, asyncio, functools, inspect, opcode

BLOCKED = frozenset({"js", "pyodide_js", "pyodide", "_pyodide", "_pyodide_core", "ctypes", "_ctypes",
                     "micropip", "pyodide_http", "_pyodide_sentinel"})
CODE_NAME = "<code>"
_emit = None
_hostcall = None
_limits = {"out": 1 << 20, "rec": 1000}
_used = [0]


class _Blocker:
    """First entry of sys.meta_path: refuses the modules that lead to the JavaScript side."""
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"import of {name!r} is not allowed", name=name)
        return None


class OutputLimitExceeded(BaseException):
    pass


class HostError(Exception):
    """A host function raised; the message carries the host error's name and message."""


class _Writer(io.TextIOBase):
    def __init__(self, stream):
        self._stream = stream

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        data = s.encode("utf-8", "replace")
        left = _limits["out"] - _used[0]
        if len(data) > left:
            if left > 0:
                _emit(self._stream, data[:left].decode("utf-8", "ignore"))
            _used[0] = _limits["out"]
            raise OutputLimitExceeded(f"output is over the {_limits['out']}-byte limit")
        _used[0] += len(data)
        if s:
            _emit(self._stream, s)
        return len(s)

    def flush(self):
        pass


MAX_SAFE = (1 << 53) - 1

# ---- async code
# Pyodide's own event loop (pyodide.webloop) hands callbacks to the JavaScript event loop: they
# would run outside the run's reach, after it returned, between two users. Async code gets a
# loop of its own instead (_Loop), run to completion inside the run.
_getframe = sys._getframe
_monotonic = time.monotonic
_sleep = getattr(time.sleep, "__wrapped__", time.sleep)  # Pyodide wraps time.sleep and asyncio.run
_asyncio_run = getattr(asyncio.run, "__wrapped__", asyncio.run)
_orig_gather = asyncio.tasks.gather
_webloop = sys.modules.get("pyodide.webloop")  # gone from sys.modules after the lockdown
_CO_ASYNC = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_GET_AWAITABLE = opcode.opmap["GET_AWAITABLE"]
_TICKS = range(64)
_CACHES = bytes(opcode._inline_cache_entries.get(name, 0) for name in opcode.opname)


def _awaited(frame):
    """True when the call `frame` is making has its result awaited at once (`await f(...)`): the
    next instruction is GET_AWAITABLE. co_code is the unspecialized bytecode, so the number of
    inline cache entries after the call is the base opcode's."""
    code = frame.f_code.co_code
    i = frame.f_lasti
    j = i + 2 + 2 * _CACHES[code[i]]
    return j < len(code) and code[j] == _GET_AWAITABLE


class _HostResult:
    """What a host call awaited directly returns: an awaitable of the value, which is already known."""
    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def __await__(self):
        return self._value
        yield  # noqa: unreachable - makes this a generator that finishes at once


async def _plain(value):
    return value


@functools.wraps(_orig_gather)
def _gather(*aws, return_exceptions=False):
    # Host calls that are not awaited directly give plain values (see _host_function), and
    # `gather(f(1), f(2))` is the usual way to call several: plain values pass through.
    return _orig_gather(*(a if inspect.isawaitable(a) else _plain(a) for a in aws), return_exceptions=return_exceptions)


class _Loop(asyncio.BaseEventLoop):
    """The event loop of async code: pure Python in the interpreter's thread. There is no I/O to
    wait for, only timers, so it is its own selector and waiting is sleeping."""

    def __init__(self):
        super().__init__()
        # Added to the clock when a sleep did not move it (the deterministic clock of pausable runs).
        self._skew = 0.0

    @property
    def _selector(self):
        return self

    def time(self):
        return time.monotonic() + self._skew

    def select(self, timeout):
        if timeout is None:
            raise RuntimeError("the async code waits for something that can never happen "
                               "(no task can go on and no timer is pending)")
        if timeout > 0:
            before = self.time()
            start = _monotonic()
            # A signal handler can add a callback meanwhile: asyncio.run's, at the run's time limit.
            while not self._ready:
                left = timeout - (_monotonic() - start)
                if left <= 0:
                    lag = timeout - (self.time() - before)
                    if lag > 0:
                        self._skew += lag
                    break
                _sleep(min(left, 0.005))
                # The run's interrupt (its time limit) is polled by the interpreter every 50 loop
                # ticks or calls, never during a sleep: tick between short naps.
                for _ in _TICKS:
                    pass
        return ()

    def _process_events(self, event_list):
        pass

    def _write_to_self(self):
        pass


class _Policy(asyncio.events._BaseDefaultEventLoopPolicy):
    _loop_factory = _Loop


def _no_js_event_loop(*args, **kwargs):
    raise RuntimeError("the JavaScript event loop is not available")


def _set_up_asyncio():
    """asyncio as async code finds it: new loops are _Loop, no loop is running, Pyodide's
    wrappers of asyncio.run and time.sleep are undone and its loop cannot schedule anything."""
    if _webloop is not None:
        _webloop.scheduleCallback = _no_js_event_loop
    asyncio.run = asyncio.runners.run = _asyncio_run
    time.sleep = _sleep
    asyncio.gather = asyncio.tasks.gather = _gather
    asyncio.events._set_event_loop_policy(_Policy())
    asyncio.events._set_running_loop(None)


async def _run_async(body, tail, G):
    """A run with top-level `await`: all of it runs as one task of the run's loop, so that its
    plain statements see the running loop too."""
    r = eval(body, G)
    if body.co_flags & inspect.CO_COROUTINE:
        await r
    if tail is None:
        return None
    value = eval(tail, G)
    if tail.co_flags & inspect.CO_COROUTINE:
        value = await value
    return value


def _finish_loop(loop):
    """Like the end of asyncio.run: tasks still pending are cancelled (and run to their end),
    async generators closed."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(_orig_gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def enc(v, depth=0):
    if v is None or v is True or v is False:
        return v
    t = type(v)
    if depth > 200:
        return {"$repr": [t.__name__, "<too deep>"]}
    if t is int:
        return v if -MAX_SAFE <= v <= MAX_SAFE else {"$int": str(v)}
    if t is float:
        if math.isfinite(v):
            return v
        return {"$float": "nan" if v != v else ("inf" if v > 0 else "-inf")}
    if t is str:
        return v
    if t is bytes:
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if t is list:
        return [enc(x, depth + 1) for x in v]
    if t is tuple:
        return {"$tuple": [enc(x, depth + 1) for x in v]}
    if t is dict:
        if all(type(k) is str for k in v):
            return {"$dict": {k: enc(x, depth + 1) for k, x in v.items()}}
        return {"$map": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
    if t is set or t is frozenset:
        return {"$set": [enc(x, depth + 1) for x in v]}
    try:
        r = repr(v)
    except BaseException as e:  # noqa: BLE001 - a hostile __repr__
        r = f"<unrepresentable: {type(e).__name__}>"
    if len(r) > 10000:
        r = r[:10000] + "..."
    return {"$repr": [t.__name__, r]}


def dec(v):
    if isinstance(v, list):
        return [dec(x) for x in v]
    if isinstance(v, dict):
        (tag, x), = v.items()
        if tag == "$dict":
            return {k: dec(y) for k, y in x.items()}
        if tag == "$int":
            return int(x)
        if tag == "$float":
            return float(x)
        if tag == "$bytes":
            return base64.b64decode(x)
        if tag == "$tuple":
            return tuple(dec(y) for y in x)
        if tag == "$set":
            return {dec(y) for y in x}
        if tag == "$map":
            return {dec(k): dec(y) for k, y in x}
        raise ValueError(f"unknown tag {tag}")
    return v


_esc = json.encoder.encode_basestring_ascii
_scan = json.decoder.JSONDecoder().scan_once


def _plain_json(args):
    """json.dumps(list(args)) for arguments that need no tags (ints, strs, bools, None), else None;
    built by hand because json.dumps itself costs more than the rest of a host call."""
    parts = []
    for a in args:
        t = type(a)
        if t is int:
            if not -MAX_SAFE <= a <= MAX_SAFE:
                return None
            parts.append(int.__repr__(a))
        elif t is str:
            parts.append(_esc(a))
        elif a is None:
            parts.append("null")
        elif a is True:
            parts.append("true")
        elif a is False:
            parts.append("false")
        else:
            return None
    return "[" + ", ".join(parts) + "]"


def _host_function(name):
    # The hot path of a host call. The request is "<name>\n<JSON [args, kwargs]>"; the answer
    # "1<JSON value>" (a result), "0<JSON {name, message}>" (the host function threw) or "2"
    # (interrupted: the run timed out or was abandoned).
    prefix = name + "\n["
    dumps, hostcall, scan, getframe = json.dumps, _hostcall, _scan, _getframe

    def call(*args, **kwargs):
        positional = _plain_json(args)
        if positional is None:
            positional = dumps(enc(list(args)))
        if kwargs:
            answer = hostcall(prefix + positional + ", " + dumps({k: enc(x) for k, x in kwargs.items()}) + "]")
        else:
            answer = hostcall(prefix + positional + ", {}]")
        tag = answer[:1]
        if tag == "1":
            v = scan(answer, 1)[0]
            t = type(v)
            if t is list or t is dict:
                v = dec(v)
            # `await f(...)` in async code: an awaitable of the value; anywhere else the value.
            caller = getframe(1)
            if caller.f_code.co_flags & _CO_ASYNC and _awaited(caller):
                return _HostResult(v)
            return v
        if tag == "2":
            raise KeyboardInterrupt
        err = scan(answer, 1)[0] if tag == "0" else {"message": "malformed answer"}
        raise HostError(f"{err.get('name', 'Error')}: {err.get('message', '')}")
    call.__name__ = call.__qualname__ = name
    return call


_orig_setrecursionlimit = sys.setrecursionlimit


def _guarded_setrecursionlimit(n):
    if n > _limits["rec"]:
        raise ValueError(f"the recursion limit cannot be raised above {_limits['rec']}")
    _orig_setrecursionlimit(n)


def _fresh_globals():
    return {"__name__": "__main__", "__builtins__": builtins, "HostError": HostError}


_state = {"G": None}


def lockdown():
    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    keep = [f for f in sys.meta_path
            if type(f).__module__.partition(".")[0] not in BLOCKED and "Js" not in type(f).__name__]
    sys.meta_path[:] = [_Blocker()] + keep
    sys.setrecursionlimit = _guarded_setrecursionlimit
    sys.stdout = _Writer("stdout")
    sys.stderr = _Writer("stderr")
    sys.stdin = io.StringIO("")
    _set_up_asyncio()
    os.environ.clear()
    os.environ.update({"HOME": "/home/pyodide", "PATH": "/", "LANG": "C.UTF-8", "PWD": "/"})
    # warm the modules the runner uses at run time
    import traceback as _t, linecache as _l  # noqa: F401
    global _snapshot
    _snapshot = {
        "modules": dict(sys.modules),
        "builtins": dict(builtins.__dict__),
        "meta_path": list(sys.meta_path),
        "path": list(sys.path),
        "path_hooks": list(sys.path_hooks),
        "environ": dict(os.environ),
        "sys": {k: getattr(sys, k) for k in ("stdout", "stderr", "stdin", "displayhook", "excepthook",
                                             "setrecursionlimit", "ps1", "ps2") if hasattr(sys, k)},
    }
    # The virtual filesystem as the lockdown left it: a later user's files are removed at reset,
    # and what existed is made read-only, so nothing written can reach the next user.
    _snapshot["files"] = _seal_tree()
    _state["G"] = _fresh_globals()


_SKIP_TREES = ("/proc", "/dev", "/sys")
_USER_TREES = ("/tmp", "/home/pyodide")


def _walk_paths():
    """Every path under / except the kernel-like trees and mounts (other filesystems: the pool's business)."""
    out = []
    root_dev = os.stat("/").st_dev
    stack = ["/"]
    while stack:
        d = stack.pop()
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = d.rstrip("/") + "/" + n
            if p in _SKIP_TREES:
                continue
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_dev != root_dev:
                continue
            out.append(p)
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
    return out


def _seal_tree():
    paths = set(_walk_paths())
    for p in paths:
        if p.startswith(_USER_TREES) or p in _USER_TREES:
            continue
        try:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, st.st_mode & ~0o222)
        except OSError:
            pass
    return paths


def _remove(p):
    """Remove a file, link or directory tree (what cannot be removed stays)."""
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            _clear_dir(p)
            os.rmdir(p)
        else:
            os.unlink(p)
    except OSError:
        pass


def _remove_new_paths(known):
    """Remove what a user created outside the known tree, deepest first."""
    for p in sorted(set(_walk_paths()) - known, key=len, reverse=True):
        _remove(p)


def _clear_dir(path):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for e in entries:
        _remove(os.path.join(path, e))


def reset():
    """Forget everything of the previous user: globals, imported modules, builtins, sys state, files."""
    s = _snapshot
    builtins.__dict__.clear()
    builtins.__dict__.update(s["builtins"])
    for name in list(sys.modules):
        if name not in s["modules"]:
            del sys.modules[name]
    sys.modules.update(s["modules"])
    sys.meta_path[:] = s["meta_path"]
    sys.path[:] = s["path"]
    sys.path_hooks[:] = s["path_hooks"]
    sys.path_importer_cache.clear()
    for k, v in s["sys"].items():
        setattr(sys, k, v)
    os.environ.clear()
    os.environ.update(s["environ"])
    _orig_setrecursionlimit(1000)
    _set_up_asyncio()
    for d in _USER_TREES:
        _clear_dir(d)
    _remove_new_paths(s["files"])
    try:
        os.chdir("/home/pyodide")
    except OSError:
        pass
    linecache.cache.pop(CODE_NAME, None)
    _state["G"] = _fresh_globals()
    return "ok"


def _error(kind, e, frames=True):
    tb_text = ""
    if frames:
        user = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == CODE_NAME]
        tb_text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(user)) if user else ""
        tb_text += "".join(traceback.format_exception_only(type(e), e))
    try:
        message = str(e)
    except BaseException:  # noqa: BLE001
        message = "<unprintable>"
    return json.dumps({"status": kind, "pythonType": type(e).__name__, "message": message, "traceback": tb_text})


class _Deterministic:
    """Pausable runs (session.start / pool.load) are replayed from their recorded host results in a
    fresh interpreter, so everything else the code observes must be the same in every process:
    - randomness: the `random` module, new unseeded `random.Random()` instances, `os.urandom`
      (hence `secrets`, `uuid.uuid4`, `random.SystemRandom`) draw from a generator seeded by the
      run's recorded seed;
    - the clock: `time.time()` & co. and `datetime.now()`/`today()`/`date.today()` read a clock
      that starts at the run's recorded start time and advances 1 µs per reading;
    - hashing: the interpreter runs with PYTHONHASHSEED=0 (set and dict-of-set orders);
    - globals: a fresh dict built from the inputs only (the session resets the interpreter first
      when it has run code before, so no module state carries over either);
    - async code: _Loop's timers read the clock above.
    What stays non-replayable (not detectable here): object identity (`id()`, default `hash()`
    and reprs of objects, memory addresses, the numbers of default asyncio task names, counted
    in C per process), the interpreter's own timing (`time.sleep` real
    duration, timeouts), resource exhaustion near the limits, and host files read through mounts
    that change between the dump and the load. Any such divergence that changes the name or the
    arguments of a host call is detected at load time (InterpreterReplayError)."""

    def __init__(self, seed, clock):
        import random, time, datetime
        self.random, self.time, self.datetime = random, time, datetime
        self.rng = random.Random(seed)
        self.t0 = float(clock)
        self.ticks = 0
        self.saved = []

    def now(self):
        self.ticks += 1
        return self.t0 + self.ticks * 1e-6

    def _set(self, obj, name, value):
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def __enter__(self):
        random, time, datetime, rng, now = self.random, self.time, self.datetime, self.rng, self.now
        orig_seed = random.Random.seed

        def seed(inst, a=None, version=2):
            return orig_seed(inst, rng.getrandbits(64) if a is None else a, version)

        def urandom(n):
            return rng.randbytes(n)

        self._set(random.Random, "seed", seed)
        self._set(random, "_urandom", urandom)
        self._set(os, "urandom", urandom)
        if hasattr(sys.modules.get("posix"), "urandom"):
            self._set(sys.modules["posix"], "urandom", urandom)
        random.seed(rng.getrandbits(64))
        ns = lambda: int(now() * 1e9)  # noqa: E731
        for name in ("time", "monotonic", "perf_counter", "process_time", "thread_time"):
            if hasattr(time, name):
                self._set(time, name, now)
                self._set(time, name + "_ns", ns)
        real_localtime, real_gmtime, real_ctime, real_strftime = time.localtime, time.gmtime, time.ctime, time.strftime
        self._set(time, "localtime", lambda secs=None: real_localtime(now() if secs is None else secs))
        self._set(time, "gmtime", lambda secs=None: real_gmtime(now() if secs is None else secs))
        self._set(time, "ctime", lambda secs=None: real_ctime(now() if secs is None else secs))
        self._set(time, "strftime", lambda fmt, t=None: real_strftime(fmt, real_localtime(now()) if t is None else t))
        real_dt, real_date, utc = datetime.datetime, datetime.date, datetime.timezone.utc

        class _Meta(type):
            # instances of the real classes pass isinstance() checks against the stand-ins
            def __instancecheck__(cls, obj):
                return isinstance(obj, cls._real)

            def __subclasscheck__(cls, sub):
                return issubclass(sub, cls._real)

        class date(real_date, metaclass=_Meta):
            _real = real_date

            @classmethod
            def today(cls):
                return real_date.fromtimestamp(now())

        class datetime_(real_dt, metaclass=_Meta):
            _real = real_dt

            @classmethod
            def now(cls, tz=None):
                return real_dt.fromtimestamp(now(), tz)

            @classmethod
            def today(cls):
                return real_dt.fromtimestamp(now())

            @classmethod
            def utcnow(cls):
                return real_dt.fromtimestamp(now(), utc).replace(tzinfo=None)

        datetime_.__name__ = datetime_.__qualname__ = "datetime"
        datetime_.__module__ = date.__module__ = "datetime"
        self._set(datetime, "datetime", datetime_)
        self._set(datetime, "date", date)
        return self

    def __exit__(self, *exc):
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)
        self.saved.clear()
        self.random.seed()
        return False


def run(code, inputs_json, functions_json, out_limit, rec_limit, pausable_json=None):
    _used[0] = 0
    _limits["out"] = out_limit
    _limits["rec"] = rec_limit
    pausable = json.loads(pausable_json) if pausable_json else None
    # A pausable run sees its inputs only, never the session's earlier globals.
    G = _fresh_globals() if pausable else _state["G"]
    try:
        try:
            tree = ast.parse(code, CODE_NAME, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            # Top-level `await` is allowed: such code compiles to a coroutine, run on the run's loop.
            body = compile(tree, CODE_NAME, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            tail = compile(last, CODE_NAME, "eval", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT) if last is not None else None
        except (SyntaxError, ValueError) as e:
            return json.dumps({"status": "syntax", "pythonType": type(e).__name__,
                               "message": getattr(e, "msg", None) or str(e),
                               "line": getattr(e, "lineno", None), "offset": getattr(e, "offset", None)})
        linecache.cache[CODE_NAME] = (len(code), None, code.splitlines(True), CODE_NAME)
        for k, v in dec(json.loads(inputs_json)).items():
            G[k] = v
        for name in json.loads(functions_json):
            G[name] = _host_function(name)
        det = _Deterministic(pausable["seed"], pausable["clock"]) if pausable else None
        _orig_setrecursionlimit(rec_limit)
        loop = None
        try:
            if det is not None:
                det.__enter__()
            if (body.co_flags | (tail.co_flags if tail is not None else 0)) & inspect.CO_COROUTINE:
                loop = _Loop()
                value = loop.run_until_complete(_run_async(body, tail, G))
                _finish_loop(loop)
            else:
                exec(body, G)
                value = eval(tail, G) if tail is not None else None
            return json.dumps({"status": "ok", "value": enc(value)})
        finally:
            if loop is not None:
                # Tasks a failed or interrupted run left pending are dropped without a word: their
                # "destroyed but pending" message would come out whenever they are collected.
                for t in asyncio.all_tasks(loop):
                    t._log_destroy_pending = False
                loop.close()
            _orig_setrecursionlimit(max(rec_limit, 1000))
            if det is not None:
                det.__exit__()
    except KeyboardInterrupt as e:
        return _error("timeout", e, frames=False)
    except MemoryError as e:
        return _error("memory", e)
    except BaseException as e:  # noqa: BLE001 - everything the user code raises is reported
        try:
            return _error("error", e)
        except MemoryError as e2:
            return _error("memory", e2, frames=False)


def warm(n):
    """Runs the host-call and output paths before the interpreter is offered, so that the JIT
    tiers of the wasm and JavaScript code under them are up by its first run (the parent answers
    these calls, 1 each, while the child is not ready yet)."""
    f = _host_function("__warm__")
    s = 0
    for i in range(n):
        s += f(i)
    for x in ("text", None, True, 1.5, [1, "a"], {"a": (1,)}):
        s += f(x, key=x)
    for i in range(n // 10):
        print(i)
    _used[0] = 0
    return s


def setup(emit, hostcall):
    global _emit, _hostcall
    _emit = emit
    _hostcall = hostcall
    lockdown()
