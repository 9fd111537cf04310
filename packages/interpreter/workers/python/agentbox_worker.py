"""agentbox CPython code worker: speaks the worker protocol (docs/design/worker-protocol.md).

The parent starts it with `python3 -u -c "$BOOTSTRAP"` and sends this file's source as the
first frame (4-byte big-endian length, then UTF-8). BOOTSTRAP is this exact line:

import sys;r=sys.stdin.buffer.read;exec(compile(r(int.from_bytes(r(4),"big")).decode(),"<agentbox-worker>","exec"),{"__name__":"__agentbox_worker__"})

Any bootstrap that reads the source through sys.stdin.buffer works (what it read ahead is
recovered). The file also runs directly: `python3 agentbox_worker.py`.

File descriptors: frames are read from a private dup of fd 0 and written to a private dup of
fd 1. fd 0 becomes /dev/null; fds 1 and 2 become pipes drained by a thread into `print` events,
so nothing the user's code (or a C extension, or a child process) writes can corrupt the frame
stream. sys.stdout / sys.stderr are replaced by writers that emit `print` events directly.

Choices the protocol leaves open:
- scriptName: the cells' filename; "{n}" in it is replaced by the execution count.
- A host function returns its value directly; where the call is immediately awaited
  (`await f(x)`, in a coroutine) it returns an awaitable of that value instead. It is not a
  coroutine otherwise, so `asyncio.gather(f(1), f(2))` does not take it.
- sys.exit() / sys.exit(0) in a cell completes it; another exit status is an error.
- Tracebacks keep the cells' frames only (library frames are left out too).
- A resume_call nobody waits for (its call was interrupted) is ignored, not an error.

Standard library only; Python 3.11.
"""

import ast
import base64
import bisect
import builtins
import codecs
import collections
import io
import itertools
import json
import linecache
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import types

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_SAFE_INT = 2**53 - 1
CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
PENDING_FLUSH_DELAY = 0.002  # a partial line is sent after this long without a newline
PENDING_MAX_CHARS = 8192
BACKLOG_MAX_CHARS = 1 << 20
MAIN_THREAD_ID = threading.get_ident()
_EXCEPTHOOK = sys.__excepthook__


class _S:
    """All of the worker's mutable state (one worker = one context)."""

    in_fd = -1
    out_fd = -1
    err_fd = -1  # the real stderr, for the worker's own last-resort diagnostics
    wake_r = -1
    wake_w = -1
    pid = 0
    child = False  # True in a process forked by the user's code
    max_frame = DEFAULT_MAX_FRAME_BYTES
    max_output = 0  # 0: unlimited
    script_name = None
    # turn + output
    in_turn = False
    feed_turn = False
    out_used = 0
    out_truncated = False
    pend_stream = None
    pend = []
    pend_len = 0
    backlog = collections.deque()
    backlog_len = 0
    # interrupts
    user = False  # the main thread is running the user's code
    critical = 0  # the main thread is inside the worker (frames, host calls): defer SIGINT
    pending_int = False
    # execution
    globals = None
    count = 0
    cell_names = set()
    loop = None
    # host calls
    call_ids = itertools.count(1)
    reading = False
    waiting = set()
    cancelled = set()
    results = {}
    requests = collections.deque()
    eof = False
    # installs
    venv = None
    site_dirs = []
    installed = set()
    last_index_url = None
    last_find_links = None
    fflush = None


OUT_LOCK = threading.RLock()  # pending output, frame writes, fd drains, turn state
COND = threading.Condition(threading.Lock())  # the frame reader and host-call results
KICK = threading.Event()  # wakes the flusher thread


class _TooLarge(Exception):
    pass


class _Interrupted(Exception):
    pass


class _Bad:
    """A payload that is not a usable message (answered with ProtocolError)."""

    def __init__(self, text):
        self.text = text


# ------------------------------------------------------------------ frames out


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _dumps(obj):
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them (valid JSON, decodable by the parent)
        return _ASCII_ENCODER.encode(obj).encode("ascii")


def _write_all(data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(_S.out_fd, view)
        except InterruptedError:
            continue
        except OSError:  # the parent is gone
            os._exit(2)
        view = view[n:]


def _write_locked(payload):
    if len(payload) > _S.max_frame:
        raise _TooLarge(len(payload))
    _write_all(len(payload).to_bytes(4, "big") + payload)


def _send(obj):
    with OUT_LOCK:
        if _S.pend:
            _flush_pending_locked()
        _write_locked(_dumps(obj))


def _fatal(message, code):
    try:
        if OUT_LOCK.acquire(timeout=2):
            _write_all(_frame_bytes({"type": "fatal_error", "message": message}))
    except BaseException:
        pass
    os._exit(code)


def _frame_bytes(obj):
    payload = _dumps(obj)
    return len(payload).to_bytes(4, "big") + payload


# ------------------------------------------------------------------ output


def _queue_print_locked(stream, text):
    """Queue user output (OUT_LOCK held). Coalesced per stream; sent on a newline or soon."""
    if not _S.in_turn:
        if _S.backlog_len < BACKLOG_MAX_CHARS:
            text = text[: BACKLOG_MAX_CHARS - _S.backlog_len]
            _S.backlog.append((stream, text))
            _S.backlog_len += len(text)
        return
    if _S.pend and _S.pend_stream != stream:
        _flush_pending_locked()
    _S.pend_stream = stream
    _S.pend.append(text)
    _S.pend_len += len(text)
    if "\n" in text or "\r" in text or _S.pend_len >= PENDING_MAX_CHARS:
        _flush_pending_locked()
    elif not KICK.is_set():
        KICK.set()


def _flush_pending_locked():
    if not _S.pend:
        return
    stream = _S.pend_stream
    text = _S.pend[0] if len(_S.pend) == 1 else "".join(_S.pend)
    _S.pend = []
    _S.pend_len = 0
    if _S.max_output:
        if _S.out_truncated:
            return
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        room = _S.max_output - _S.out_used
        if size > room:
            text = text.encode("utf-8", "surrogatepass")[: max(room, 0)].decode("utf-8", "ignore")
            _S.out_truncated = True
        _S.out_used += size
    if text:
        _send_print_locked(stream, text)
    if _S.out_truncated:
        _send_print_locked(
            "stderr", "\n[agentbox: output truncated: this cell printed over %d bytes]\n" % _S.max_output
        )


def _send_print_locked(stream, text):
    step = max(1, (_S.max_frame - 64) // 12)
    for i in range(0, len(text), step):
        _write_locked(_dumps({"type": "print", "stream": stream, "text": text[i : i + step]}))


class _Pipe:
    def __init__(self, fd, stream):
        self.fd = fd
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.open = True


PIPES = []
DRAIN_POLL = None


def _drain_fds_locked():
    """Turn what was written to fds 1/2 into print events (OUT_LOCK held)."""
    for p in PIPES:
        while p.open:
            try:
                data = os.read(p.fd, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                p.open = False
                break
            text = p.decoder.decode(data)
            if text:
                _queue_print_locked(p.stream, text)
            if len(data) < 65536:
                break


def _fd_reader_thread():
    poller = select.poll()
    for p in PIPES:
        poller.register(p.fd, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        with OUT_LOCK:
            _drain_fds_locked()
        for p in PIPES:
            if not p.open:
                try:
                    poller.unregister(p.fd)
                except (KeyError, ValueError):
                    pass
        if not any(p.open for p in PIPES):
            return
        if not events:
            time.sleep(0.01)


def _flusher_thread():
    try:  # for C-level stdio (printf from an extension): flushed at the end of each cell
        import ctypes

        _S.fflush = ctypes.CDLL(None).fflush
    except BaseException:
        pass
    while True:
        KICK.wait()
        KICK.clear()
        time.sleep(PENDING_FLUSH_DELAY)
        with OUT_LOCK:
            if _S.pend and _S.in_turn:
                _flush_pending_locked()


def _enter():
    if threading.get_ident() == MAIN_THREAD_ID:
        _S.critical += 1
        return True
    return False


def _leave(main):
    if main:
        _S.critical -= 1
        if _S.critical == 0 and _S.pending_int and _S.user:
            _S.pending_int = False
            raise KeyboardInterrupt


def _user_output(stream, fd, text):
    if _S.child:  # a forked child: its parent drains fds 1/2
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        except OSError:
            pass
        return
    main = _enter()
    try:
        with OUT_LOCK:
            if PIPES and DRAIN_POLL is not None and main and DRAIN_POLL.poll(0):
                _drain_fds_locked()  # keeps os.write(1, ...) output in order with print()
            _queue_print_locked(stream, text)
    finally:
        _leave(main)


class _BinaryOut(io.RawIOBase):
    def __init__(self, text_out):
        self._text = text_out
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self):
        return True

    def write(self, b):
        data = bytes(b)
        text = self._decoder.decode(data)
        if text:
            _user_output(self._text._stream, self._text._fd, text)
        return len(data)

    def fileno(self):
        return self._text._fd

    def isatty(self):
        return False

    def close(self):
        pass


class _TextOut(io.TextIOBase):
    """sys.stdout / sys.stderr: every write becomes part of a `print` event."""

    def __init__(self, stream, fd):
        self._stream = stream
        self._fd = fd
        self._buffer = _BinaryOut(self)

    @property
    def buffer(self):
        return self._buffer

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    @property
    def name(self):
        return "<%s>" % self._stream

    @property
    def line_buffering(self):
        return True

    @property
    def closed(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        if s:
            _user_output(self._stream, self._fd, s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if _S.child or not _S.pend:
            return
        main = _enter()
        try:
            with OUT_LOCK:
                if _S.in_turn:
                    _flush_pending_locked()
        finally:
            _leave(main)

    def fileno(self):
        return self._fd

    def isatty(self):
        return False

    def reconfigure(self, **kwargs):
        pass

    def close(self):
        pass


class _NullIn(io.TextIOBase):
    """sys.stdin: the user's code reads end-of-file (frames arrive on a private fd)."""

    @property
    def encoding(self):
        return "utf-8"

    @property
    def name(self):
        return "<stdin>"

    def readable(self):
        return True

    def read(self, size=-1):
        return ""

    def readline(self, size=-1):
        return ""

    def fileno(self):
        return 0

    def isatty(self):
        return False

    def close(self):
        pass


def _finish_output_locked():
    """Everything written so far becomes events (before a turn-ender)."""
    if _S.fflush is not None:
        try:
            _S.fflush(None)
        except BaseException:
            pass
    try:
        if sys.__stdout__ is not None:
            sys.__stdout__.flush()
        if sys.__stderr__ is not None:
            sys.__stderr__.flush()
    except BaseException:
        pass
    if PIPES:
        _drain_fds_locked()
    _flush_pending_locked()


# ------------------------------------------------------------------ turns


def _begin_turn(feed=False):
    with OUT_LOCK:
        _S.in_turn = True
        _S.feed_turn = feed
        _S.out_used = 0
        _S.out_truncated = False
        _S.pending_int = False
        if feed and _S.backlog:
            backlog, _S.backlog, _S.backlog_len = _S.backlog, collections.deque(), 0
            for stream, text in backlog:
                _queue_print_locked(stream, text)


def _end_turn(event):
    with OUT_LOCK:
        if _S.in_turn:
            _finish_output_locked()
        try:
            _write_locked(_dumps(event))
        except _TooLarge:
            _write_locked(_dumps(_shrink(event)))
        _S.in_turn = False
        _S.feed_turn = False
        with COND:
            if _S.waiting:  # host calls made by threads that outlived the cell
                _S.cancelled.update(_S.waiting)
                COND.notify_all()


def _shrink(event):
    limit = max(256, _S.max_frame // 16)
    if event.get("type") == "complete":
        results = []
        for r in event["results"]:
            text = r.get("text") or ""
            if len(text) > limit:
                text = text[:limit] + "... [truncated]"
            results.append({"text": text + " [rich output dropped: over the frame limit]", "isMain": r["isMain"]})
        return {"type": "complete", "results": results, "executionCount": event["executionCount"]}
    if event.get("type") == "error":
        e = dict(event)
        e["value"] = e["value"][:limit]
        e["traceback"] = e["traceback"][-limit:]
        return e
    return {"type": "error", "name": "ProtocolError", "value": "the answer is over the frame limit", "traceback": ""}


def _error_event(name, value, tb=None, count=None):
    event = {"type": "error", "name": name, "value": value, "traceback": tb if tb is not None else "%s: %s\n" % (name, value)}
    if count is not None:
        event["executionCount"] = count
    return event


def _protocol_error(text):
    _begin_turn()
    _end_turn(_error_event("ProtocolError", text))


# ------------------------------------------------------------------ frames in


class _Reader:
    def __init__(self, fd, initial):
        self.fd = fd
        self.buf = bytearray(initial)

    def read_frame(self, interruptible, spin=0.0):
        """The next payload; None at a clean end of stream; exits on a broken stream. With `spin`,
        polls for that many seconds before it sleeps (see SPIN_S)."""
        buf = self.buf
        spin_until = time.monotonic() + spin if spin else 0.0
        while True:
            need = 4
            if len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if n > _S.max_frame:
                    _fatal("frame of %d bytes is over the %d-byte limit" % (n, _S.max_frame), 2)
                if len(buf) >= 4 + n:
                    payload = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    return payload
                need = 4 + n
            if interruptible and _S.pending_int:
                raise _Interrupted()
            try:
                if spin_until:
                    ready, _, _ = select.select([self.fd, _S.wake_r], [], [], 0)
                    if not ready:
                        if time.monotonic() < spin_until:
                            continue
                        spin_until = 0.0
                        ready, _, _ = select.select([self.fd, _S.wake_r], [], [])
                else:
                    ready, _, _ = select.select([self.fd, _S.wake_r], [], [])
            except InterruptedError:
                continue
            if _S.wake_r in ready:
                _drain_wake()
                if interruptible and _S.pending_int:
                    raise _Interrupted()
            if self.fd not in ready:
                continue
            try:
                data = os.read(self.fd, max(65536, min(need - len(buf), 1 << 22)))
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                if buf:
                    _fatal("the input stream ended inside a frame", 2)
                return None
            buf += data


def _drain_wake():
    try:
        while os.read(_S.wake_r, 4096):
            pass
    except OSError:
        pass


READER = None

# How long a host call polls for its answer before it sleeps. The answer usually comes back
# within a few hundred microseconds; a process that sleeps meanwhile must be woken, which on a
# VM costs tens of microseconds on each side. Polling keeps this core busy for at most this
# long per call.
SPIN_S = 0.0005


def _parse(payload):
    try:
        msg = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        return _Bad("the payload is not JSON: %s" % e)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return _Bad("the payload is not an object with a string `type`")
    return msg


def _next_message(call_id=None, interruptible=False):
    """For the main loop (call_id None): the next request, None at EOF.
    For a host call: its resume_call. One thread reads at a time; the rest wait."""
    while True:
        with COND:
            if call_id is not None:
                if call_id in _S.results:
                    return _S.results.pop(call_id)
                if call_id in _S.cancelled:
                    raise RuntimeError("the cell ended before the host answered")
                if _S.eof:
                    raise RuntimeError("the host closed the connection")
            elif _S.requests:
                return _S.requests.popleft()
            elif _S.eof:
                return None
            if interruptible and _S.pending_int:
                raise _Interrupted()
            if _S.reading:
                COND.wait(0.05 if interruptible else None)
                continue
            _S.reading = True
        try:
            payload = READER.read_frame(interruptible, SPIN_S if call_id is not None else 0.0)
        finally:
            with COND:
                _S.reading = False
                COND.notify_all()
        with COND:
            if payload is None:
                _S.eof = True
                COND.notify_all()
                continue
            msg = _parse(payload)
            if isinstance(msg, dict) and msg["type"] == "resume_call":
                cid = msg.get("callId")
                if isinstance(cid, str) and cid in _S.waiting and cid not in _S.cancelled:
                    _S.results[cid] = msg
                    COND.notify_all()
                # a resume_call nobody waits for (interrupted or abandoned call): ignored
            else:
                _S.requests.append(msg)
                COND.notify_all()


# ------------------------------------------------------------------ values


def _enc(v, depth=0):
    if depth > 200:
        raise TypeError("a value nested this deeply (or cyclic) cannot be sent to the host")
    t = type(v)
    if v is None or t is str or t is bool:
        return v
    if t is int:
        return v if -MAX_SAFE_INT <= v <= MAX_SAFE_INT else {"$int": str(v)}
    if t is float:
        if v != v:
            return {"$float": "nan"}
        if v in (float("inf"), float("-inf")):
            return {"$float": "inf" if v > 0 else "-inf"}
        return v
    if t is list:
        return [_enc(x, depth + 1) for x in v]
    if t is dict:
        return _enc_dict(v, depth)
    if t is tuple:
        return {"$tuple": [_enc(x, depth + 1) for x in v]}
    if t is bytes or t is bytearray or t is memoryview:
        return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return _enc(int(v), depth)
    if isinstance(v, float):
        return _enc(float(v), depth)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, tuple):
        return {"$tuple": [_enc(x, depth + 1) for x in v]}
    if isinstance(v, list):
        return [_enc(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return _enc_dict(v, depth)
    raise TypeError("a value of type %r cannot be sent to the host" % t.__name__)


def _enc_dict(v, depth):
    out = {}
    for k, x in v.items():
        if not isinstance(k, str):
            raise TypeError("dict keys sent to the host must be str, not %s" % type(k).__name__)
        out[str.__str__(k)] = _enc(x, depth + 1)
    if len(out) == 1 and next(iter(out)).startswith("$"):
        return {"$dict": out}
    return out


def _dec(v):
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        tag, x = next(iter(v.items()))
        if tag.startswith("$"):
            try:
                if tag == "$bytes":
                    return base64.b64decode(x)
                if tag == "$tuple":
                    return tuple(_dec(y) for y in x)
                if tag == "$int":
                    return int(x)
                if tag == "$float":
                    return float(x)
                if tag == "$dict":
                    return {k: _dec(y) for k, y in x.items()}
            except (TypeError, ValueError, AttributeError):
                pass
    return {k: _dec(x) for k, x in v.items()}


# ------------------------------------------------------------------ host functions


class _HostAwaitable:
    """What `await f(x)` awaits: the call already happened; awaiting gives its result."""

    __slots__ = ("_value", "_exc")

    def __init__(self, value, exc):
        self._value = value
        self._exc = exc

    def __await__(self):
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc
        return self._value
        yield  # noqa: a generator, so this is a valid __await__


_AWAIT_SITES = {}


def _is_awaited(frame):
    """Is the call the frame is making immediately awaited (`await f(x)`)?"""
    code = frame.f_code
    sites = _AWAIT_SITES.get(code)
    if sites is None:
        import dis

        offsets, awaits = [], set()
        for ins in dis.get_instructions(code):
            offsets.append(ins.offset)
            if ins.opname == "GET_AWAITABLE":
                awaits.add(ins.offset)
        if len(_AWAIT_SITES) > 4096:
            _AWAIT_SITES.clear()
        sites = _AWAIT_SITES[code] = (offsets, awaits)
    offsets, awaits = sites
    if not awaits:
        return False
    i = bisect.bisect_right(offsets, frame.f_lasti)
    return i < len(offsets) and offsets[i] in awaits


def _loop_running():
    aio = sys.modules.get("asyncio")
    return aio is not None and aio.events._get_running_loop() is not None


def _host_exception(err):
    name = err.get("name") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    message = message if isinstance(message, str) else str(message if message is not None else "")
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError(message)


def _host_call(name, args, kwargs):
    if _S.child:
        raise RuntimeError("host function %r cannot be called from a forked process" % name)
    enc_args = [_enc(a) for a in args]
    enc_kwargs = {k: _enc(v) for k, v in kwargs.items()}
    main = _enter()
    try:
        cid = "c%d" % next(_S.call_ids)
        with OUT_LOCK:
            if not _S.in_turn or not _S.feed_turn:
                raise RuntimeError("host function %r can only be called while a cell runs" % name)
            with COND:
                _S.waiting.add(cid)
            try:
                _send({"type": "call", "callId": cid, "name": name, "args": enc_args, "kwargs": enc_kwargs})
            except _TooLarge as e:
                with COND:
                    _S.waiting.discard(cid)
                raise ValueError(
                    "the arguments of %s() are too large to send (%d bytes, limit %d)" % (name, e.args[0], _S.max_frame)
                ) from None
        old_wake = None
        if main:
            old_wake = signal.set_wakeup_fd(_S.wake_w, warn_on_full_buffer=False)
        try:
            msg = _next_message(cid, interruptible=main)
        except _Interrupted:
            _S.pending_int = False
            msg = None
        finally:
            if main and old_wake not in (None, -1, _S.wake_w):
                try:
                    signal.set_wakeup_fd(old_wake)
                except (ValueError, OSError):
                    pass
            with COND:
                _S.waiting.discard(cid)
                _S.cancelled.discard(cid)
                _S.results.pop(cid, None)
    finally:
        _leave(main)
    if msg is None:
        raise KeyboardInterrupt
    err = msg.get("error")
    if err is not None:
        raise _host_exception(err)
    return _dec(msg.get("value"))


def _make_host_function(name):
    def host_function(*args, **kwargs):
        awaited = _loop_running() and _is_awaited(sys._getframe(1))
        if not awaited:
            return _host_call(name, args, kwargs)
        try:
            return _HostAwaitable(_host_call(name, args, kwargs), None)
        except Exception as e:
            return _HostAwaitable(None, e)

    host_function.__name__ = host_function.__qualname__ = name
    host_function.__module__ = "__main__"
    host_function.__doc__ = "Host function %r: runs in the host; `await` it from async code if you like." % name
    host_function._agentbox_host_function = True
    return host_function


# ------------------------------------------------------------------ execution


def _new_globals():
    mod = types.ModuleType("__main__")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    _S.globals = mod.__dict__


def _cell_name(n):
    if _S.script_name:
        return _S.script_name.replace("{n}", str(n))
    return "<cell-%d>" % n


def _is_cell(filename):
    return filename.startswith("<cell-") or filename in _S.cell_names


def _get_loop():
    import asyncio

    if _S.loop is None or _S.loop.is_closed():
        _S.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_S.loop)
    return _S.loop


def _close_loop():
    loop, _S.loop = _S.loop, None
    if loop is None or loop.is_closed():
        return
    import asyncio

    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException:
        pass
    try:
        loop.close()
    except BaseException:
        pass


def _run_coroutine(coro):
    import asyncio

    loop = _get_loop()
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        if task.done():
            if not task.cancelled():
                task.exception()
            raise
        # Interrupted while the cell awaited: cancel it, and report the interrupt where it waited.
        task.cancel()
        try:
            loop.run_until_complete(asyncio.wait([task], timeout=1.0))
        except BaseException:
            pass
        if task.cancelled():
            try:
                task.result()
            except asyncio.CancelledError as cancelled:
                raise KeyboardInterrupt().with_traceback(cancelled.__traceback__) from None
        elif task.done():
            task.exception()
        raise
    except BaseException:
        if not task.done():
            task.cancel()
            try:
                loop.run_until_complete(asyncio.wait([task], timeout=1.0))
            except BaseException:
                pass
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" noise later
        raise


def _execute(source, filename):
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST | flags, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
    body = compile(tree, filename, "exec", flags, dont_inherit=True)
    expr = compile(ast.Expression(last.value), filename, "eval", flags, dont_inherit=True) if last else None
    g = _S.globals
    if body.co_flags & CO_COROUTINE:
        _run_coroutine(eval(body, g))
    else:
        exec(body, g)
    if expr is None:
        return None
    value = eval(expr, g)
    if expr.co_flags & CO_COROUTINE:
        value = _run_coroutine(value)
    return value


def _note(text):
    with OUT_LOCK:
        _queue_print_locked("stderr", text)


def _rich_method(value, attr):
    try:
        method = getattr(value, attr, None)
    except Exception:
        return None
    return method if callable(method) else None


def _main_result(value):
    result = {"isMain": True}
    try:
        result["text"] = repr(value)
    except Exception as e:
        result["text"] = "<repr() failed: %s: %s>" % (type(e).__name__, e)
    if isinstance(value, type):
        return result
    for attr, key in (("_repr_html_", "html"), ("_repr_svg_", "svg"), ("_repr_png_", "png"), ("_repr_json_", "json")):
        method = _rich_method(value, attr)
        if method is None:
            continue
        try:
            data = method()
            if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], dict):
                data = data[0]  # (data, metadata)
            if data is None:
                continue
            if key == "png":
                data = base64.b64encode(data).decode("ascii") if isinstance(data, (bytes, bytearray)) else str(data)
            elif key == "json":
                json.dumps(data, allow_nan=False)
            elif isinstance(data, (bytes, bytearray)):
                data = bytes(data).decode("utf-8", "replace")
            elif not isinstance(data, str):
                data = str(data)
            result[key] = data
        except Exception as e:
            _note("[agentbox: %s() failed: %s: %s]\n" % (attr, type(e).__name__, e))
    return result


def _figure_results(main):
    """Open matplotlib figures (only if the user imported pyplot) become PNG results."""
    if "matplotlib" not in sys.modules:
        return []
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    out = []
    try:
        numbers = list(plt.get_fignums())
    except Exception:
        return []
    for num in numbers:
        try:
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            png = base64.b64encode(buf.getvalue()).decode("ascii")
            if main is not None and main.get("_value_is") is fig:
                main["png"] = png
            else:
                out.append({"text": repr(fig), "png": png, "isMain": False})
        except Exception as e:
            _note("[agentbox: rendering figure %s failed: %s: %s]\n" % (num, type(e).__name__, e))
        finally:
            try:
                plt.close(num)
            except Exception:
                pass
    return out


class _Capture:
    """A stand-in sys.stderr that keeps what this thread writes (other threads' text goes on)."""

    def __init__(self, fallback):
        self.thread = threading.get_ident()
        self.fallback = fallback
        self.parts = []

    def write(self, text):
        if threading.get_ident() == self.thread:
            self.parts.append(str(text))
        elif self.fallback is not None:
            self.fallback.write(text)
        return len(text)

    def flush(self):
        pass


def _suggestion(exc):
    """The ". Did you mean: 'x'?" CPython 3.11 appends to a NameError / AttributeError when it
    prints one. Only its C printer computes it: print a bare probe exception through it."""
    name = getattr(exc, "name", None)
    if not isinstance(name, str):
        return ""
    try:
        if isinstance(exc, NameError):
            tb = exc.__traceback__
            if tb is None:
                return ""
            while tb.tb_next is not None:
                tb = tb.tb_next
            probe = NameError("m", name=name)
            probe.__traceback__ = types.TracebackType(None, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
        elif isinstance(exc, AttributeError):
            if getattr(exc, "obj", None) is None:
                return ""
            probe = AttributeError("m", name=name, obj=exc.obj)
        else:
            return ""
    except Exception:
        return ""
    old_stderr = sys.stderr
    capture = _Capture(old_stderr)
    try:
        sys.stderr = capture
        _EXCEPTHOOK(type(probe), probe, probe.__traceback__)
    except BaseException:
        return ""
    finally:
        if sys.stderr is capture:
            sys.stderr = old_stderr
    lines = "".join(capture.parts).rstrip("\n").split("\n")
    head = "%s: m" % type(probe).__name__
    last = lines[-1] if lines else ""
    if last.startswith(head + ". Did you mean: "):
        return last[len(head) :]
    return ""


def _fix_te(te, exc, seen):
    if te is None or exc is None or id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if _is_cell(f.filename)])
    if isinstance(exc, (NameError, AttributeError)) and isinstance(getattr(te, "_str", None), str):
        te._str += _suggestion(exc)
    _fix_te(te.__cause__, exc.__cause__, seen)
    _fix_te(te.__context__, exc.__context__, seen)
    if getattr(te, "exceptions", None) and isinstance(exc, BaseExceptionGroup):
        for sub_te, sub in zip(te.exceptions, exc.exceptions):
            _fix_te(sub_te, sub, seen)


def _format_exception(e):
    """The exception as CPython prints it (carets, chains, groups, suggestions), cells' frames only."""
    try:
        te = traceback.TracebackException(type(e), e, e.__traceback__, compact=True)
        _fix_te(te, e, set())
        return "".join(te.format())
    except Exception:
        try:
            return "".join(traceback.format_exception_only(type(e), e))
        except Exception:
            return "%s\n" % type(e).__name__


def _safe_str(e):
    try:
        return str(e)
    except Exception:
        return "<str() failed>"


# ------------------------------------------------------------------ installs


def _venv_dir():
    d = os.environ.get("AGENTBOX_VENV_DIR")
    if d:
        return os.path.abspath(os.path.expanduser(d))
    return os.path.join(os.path.expanduser("~"), ".agentbox", "venvs", os.urandom(8).hex())


def _run_quiet(cmd):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def _ensure_venv():
    """The context's venv (created on first use); raises RuntimeError with the reason."""
    if _S.venv is not None:
        return _S.venv
    d = _venv_dir()
    py = os.path.join(d, "bin", "python")
    if not os.path.exists(py):
        os.makedirs(os.path.dirname(d), exist_ok=True)
        base = sys.executable or "python3"
        # Without its own pip: the system pip (visible through --system-site-packages) installs
        # into the venv when run by the venv's python, and creation takes 0.1 s instead of 3 s.
        code, out = _run_quiet([base, "-m", "venv", "--system-site-packages", "--without-pip", d])
        if code != 0:
            raise RuntimeError("creating the venv in %s failed:\n%s" % (d, out))
    code, _ = _run_quiet([py, "-c", "import pip"])
    if code != 0:
        code, out = _run_quiet([py, "-m", "ensurepip", "--default-pip"])
        if code != 0:
            raise RuntimeError("the venv in %s has no pip and ensurepip failed:\n%s" % (d, out))
    code, out = _run_quiet(
        [py, "-c", "import sysconfig,json;print(json.dumps([sysconfig.get_path('purelib'),sysconfig.get_path('platlib')]))"]
    )
    if code != 0:
        raise RuntimeError("cannot read the venv's paths:\n%s" % out)
    paths = json.loads(out.strip().splitlines()[-1])
    _S.site_dirs = list(dict.fromkeys(paths))
    _S.venv = d
    return d


def _activate_venv():
    import importlib
    import site

    for sp in reversed(_S.site_dirs):
        os.makedirs(sp, exist_ok=True)
        if sp not in sys.path:
            sys.path.insert(0, sp)
            site.addsitedir(sp)  # .pth files
    bindir = os.path.join(_S.venv, "bin")
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + (os.pathsep + path if path else "")
    importlib.invalidate_caches()


def _check_requirements(reqs):
    for r in reqs:
        if not isinstance(r, str) or not r.strip():
            return "an empty requirement is not allowed"
        if r.strip().startswith("-"):
            return "requirement %r looks like an option; options are not allowed" % r
    return None


def _install(reqs, index_url=None, find_links=None):
    """pip install into the context's venv, streaming pip's output as stderr print events.
    Returns None on success, else an error event (without executionCount)."""
    try:
        venv = _ensure_venv()
    except Exception as e:
        return _error_event("InstallError", str(e))
    cmd = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    cmd.append("--progress-bar=off")
    if index_url:
        cmd.append("--index-url=" + index_url)
    if find_links:
        cmd.append("--find-links=" + find_links)
        if not index_url:
            cmd.append("--no-index")
    cmd.extend(reqs)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    except OSError as e:
        return _error_event("InstallError", "cannot run pip: %s" % e)
    fd = proc.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    tail = ""
    interrupted = False
    old_wake = signal.set_wakeup_fd(_S.wake_w, warn_on_full_buffer=False)
    try:
        while True:
            if _S.pending_int:
                interrupted = True
                break
            try:
                ready, _, _ = select.select([fd, _S.wake_r], [], [])
            except InterruptedError:
                continue
            if _S.wake_r in ready:
                _drain_wake()
            if fd not in ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            text = decoder.decode(data)
            if text:
                tail = (tail + text)[-8192:]
                with OUT_LOCK:
                    _queue_print_locked("stderr", text)
    finally:
        if old_wake not in (-1, _S.wake_w):
            try:
                signal.set_wakeup_fd(old_wake)
            except (ValueError, OSError):
                pass
    if interrupted:
        _S.pending_int = False
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        return _error_event("KeyboardInterrupt", "the installation was interrupted")
    code = proc.wait()
    proc.stdout.close()
    if code != 0:
        lines = [line for line in tail.splitlines() if line.strip()]
        return _error_event("InstallError", "\n".join(lines[-15:]) or ("pip exited with status %d" % code))
    _activate_venv()
    _S.installed.update(r.strip() for r in reqs)
    return None


def _pep723_dependencies(source):
    """The dependencies of a `# /// script` block (PEP 723), or None without one."""
    if "# /// script" not in source:
        return None
    lines = source.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.rstrip() != "# /// script":
            continue
        run = []
        for later in lines[i + 1 :]:
            if later == "#" or later.startswith("# "):
                run.append(later)
            else:
                break
        closers = [j for j, x in enumerate(run) if x.rstrip() == "# ///"]
        if closers:
            content = run[: closers[-1]]
            blocks.append("".join(x[2:] + "\n" if x.startswith("# ") else "\n" for x in content))
    if not blocks:
        return None
    if len(blocks) > 1:
        raise ValueError("more than one `# /// script` block")
    import tomllib

    meta = tomllib.loads(blocks[0])
    deps = meta.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ValueError("`dependencies` must be a list of strings")
    return deps


# ------------------------------------------------------------------ requests


def _h_configure(msg):
    version = msg.get("protocolVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        return _protocol_error("configure needs an integer protocolVersion")
    if version != PROTOCOL_VERSION:
        _fatal(
            "unsupported worker protocol version %d: this worker speaks version %d" % (version, PROTOCOL_VERSION), 1
        )
    limits = msg.get("limits")
    if limits is not None and not isinstance(limits, dict):
        return _protocol_error("configure.limits must be an object")
    limits = limits or {}
    for key in ("maxOutputBytes", "maxFrameBytes"):
        x = limits.get(key)
        if x is not None and (not isinstance(x, int) or isinstance(x, bool) or x <= 0):
            return _protocol_error("configure.limits.%s must be a positive integer" % key)
    script_name = msg.get("scriptName")
    if script_name is not None and not isinstance(script_name, str):
        return _protocol_error("configure.scriptName must be a string")
    if limits.get("maxOutputBytes") is not None:
        _S.max_output = limits["maxOutputBytes"]
    if limits.get("maxFrameBytes") is not None:
        _S.max_frame = limits["maxFrameBytes"]
    if script_name is not None:
        _S.script_name = script_name or None
    _begin_turn()
    _end_turn({"type": "ok"})


def _h_feed(msg):
    code = msg.get("code")
    functions = msg.get("functions")
    if not isinstance(code, str):
        return _protocol_error("feed needs a string `code`")
    if functions is None:
        functions = []
    if not isinstance(functions, list) or not all(isinstance(f, str) and f.isidentifier() for f in functions):
        return _protocol_error("feed.functions must be a list of identifiers")
    _begin_turn(feed=True)
    _S.count += 1
    n = _S.count
    filename = _cell_name(n)
    _S.cell_names.add(filename)
    lines = io.StringIO(code, newline=None).readlines()  # split as a source file would be
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(code), None, lines, filename)
    if _S.loop is not None:
        import asyncio

        asyncio.set_event_loop(_S.loop)
    signal.signal(signal.SIGINT, _on_sigint)

    try:
        deps = _pep723_dependencies(code)
    except Exception as e:
        return _end_turn(_error_event("ValueError", "invalid `# /// script` metadata: %s" % e, count=n))
    if deps:
        problem = _check_requirements(deps)
        if problem:
            return _end_turn(_error_event("ValueError", problem, count=n))
        if not all(d.strip() in _S.installed for d in deps):
            failure = _install(deps, _S.last_index_url, _S.last_find_links)
            if failure is not None:
                failure["executionCount"] = n
                return _end_turn(failure)

    g = _S.globals
    injected = {}
    for name in functions:
        if name not in g and name not in builtins.__dict__:
            g[name] = injected[name] = _make_host_function(name)

    event = None
    try:
        try:
            _S.user = True
            if _S.pending_int:
                _S.pending_int = False
                raise KeyboardInterrupt
            value = _execute(code, filename)
            main = _main_result(value) if value is not None else None
            if main is not None:
                main["_value_is"] = value
            results = []
            extra = _figure_results(main)
            if main is not None:
                del main["_value_is"]
                results.append(main)
            results.extend(extra)
        finally:
            _S.user = False
        event = {"type": "complete", "results": results, "executionCount": n}
    except SystemExit as e:
        _S.user = False
        if e.code is None or e.code == 0:
            event = {"type": "complete", "results": [], "executionCount": n}
        else:
            event = _error_event(type(e).__name__, _safe_str(e), _format_exception(e), n)
    except BaseException as e:
        _S.user = False
        event = _error_event(type(e).__name__, _safe_str(e), _format_exception(e), n)
    finally:
        _S.user = False
        for name, fn in injected.items():
            if g.get(name) is fn:
                del g[name]
    _end_turn(event)


def _h_install(msg):
    reqs = msg.get("requirements")
    index_url = msg.get("indexUrl")
    find_links = msg.get("findLinks")
    if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
        return _protocol_error("install_dependencies needs `requirements`, a list of strings")
    for key, x in (("indexUrl", index_url), ("findLinks", find_links)):
        if x is not None and not isinstance(x, str):
            return _protocol_error("install_dependencies.%s must be a string" % key)
    _begin_turn()
    problem = _check_requirements(reqs)
    if problem:
        return _end_turn(_error_event("ValueError", problem))
    if index_url or find_links:
        _S.last_index_url, _S.last_find_links = index_url or None, find_links or None
    failure = _install(reqs, index_url or None, find_links or None) if reqs else None
    _end_turn(failure or {"type": "ok"})


def _h_reset(msg):
    _begin_turn()
    _close_loop()
    _new_globals()
    _S.count = 0
    _end_turn({"type": "ok"})


def _h_shutdown(msg):
    _begin_turn()
    _end_turn({"type": "ok"})
    _exit(0)


HANDLERS = {
    "configure": _h_configure,
    "feed": _h_feed,
    "install_dependencies": _h_install,
    "reset": _h_reset,
    "shutdown": _h_shutdown,
}


def _exit(code):
    """Leave like an interpreter would (atexit, objects finalized) without waiting for threads."""
    try:
        import atexit

        atexit._run_exitfuncs()
        if _S.globals is not None:
            _S.globals.clear()
    except BaseException:
        pass
    os._exit(code)


# ------------------------------------------------------------------ startup


def _on_sigint(signum, frame):
    if _S.user and _S.critical == 0 and threading.get_ident() == MAIN_THREAD_ID:
        raise KeyboardInterrupt
    _S.pending_int = True


def _after_fork_in_child():
    _S.child = True
    for fd in (_S.in_fd, _S.out_fd, _S.wake_r, _S.wake_w):
        try:
            os.close(fd)
        except OSError:
            pass
    _S.in_fd = _S.out_fd = -1


def _setup():
    global READER, DRAIN_POLL
    _S.pid = os.getpid()
    # frames: private dups of fds 0 and 1
    _S.in_fd = os.dup(0)
    _S.out_fd = os.dup(1)
    _S.err_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    leftover = b""
    try:  # what the bootstrap's buffered reader already took from the pipe (fd 0 is /dev/null now)
        if sys.stdin is not None and getattr(sys.stdin, "buffer", None) is not None:
            leftover = sys.stdin.buffer.read() or b""
    except (OSError, ValueError):
        pass
    READER = _Reader(_S.in_fd, leftover)
    # fds 1 and 2: pipes drained into print events
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        os.set_blocking(r, False)
        PIPES.append(_Pipe(r, stream))
    DRAIN_POLL = select.poll()
    for p in PIPES:
        DRAIN_POLL.register(p.fd, select.POLLIN)
    _S.wake_r, _S.wake_w = os.pipe()
    os.set_blocking(_S.wake_r, False)
    os.set_blocking(_S.wake_w, False)
    signal.set_wakeup_fd(_S.wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        import faulthandler

        faulthandler.enable(file=_S.err_fd)
    except Exception:
        pass
    sys.stdin = _NullIn()
    sys.stdout = _TextOut("stdout", 1)
    sys.stderr = _TextOut("stderr", 2)
    sys.argv = [""]
    here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else None
    if here and sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path[0] = ""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import warnings

    warnings.filterwarnings("ignore", message=r".*is non-interactive, and thus cannot be shown", category=UserWarning)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _new_globals()
    threading.Thread(target=_fd_reader_thread, name="agentbox-fd-reader", daemon=True).start()
    threading.Thread(target=_flusher_thread, name="agentbox-flusher", daemon=True).start()


def _serve():
    while True:
        msg = _next_message()
        if msg is None:
            _exit(0)
        if isinstance(msg, _Bad):
            _protocol_error(msg.text)
            continue
        kind = msg["type"]
        handler = HANDLERS.get(kind)
        if handler is None:
            _protocol_error("unknown message type %r" % kind)
            continue
        try:
            handler(msg)
        except BaseException as e:  # a bug in the worker, or an interrupt in its own code
            _S.user = False
            if _S.in_turn:
                try:
                    name = "KeyboardInterrupt" if isinstance(e, KeyboardInterrupt) else "InternalError"
                    _end_turn(_error_event(name, _safe_str(e), "".join(traceback.format_exception(e))))
                except BaseException:
                    _fatal("internal error: %r" % (e,), 3)


def main():
    _setup()
    _serve()


if __name__ in ("__main__", "__agentbox_worker__"):
    main()
