/**
 * Pull-style reading from a socket: wait for a head, a line or some bytes. The egress proxy
 * speaks HTTP/1.1 and SOCKS5 with it, forwarding bytes as they came rather than parsing and
 * re-serializing whole messages.
 */
import type { Socket } from "node:net";

export class HeadTooLargeError extends Error {}

/** What node:net keeps of a socket's libuv handle (used to hand sockets to the splice relay). */
interface SocketHandle {
  fd?: number;
  reading?: boolean;
  readStart?: () => number;
  readStop?: () => number;
}

function handleOf(socket: Socket): SocketHandle | undefined {
  return (socket as unknown as { _handle?: SocketHandle })._handle;
}

/** The socket's descriptor, or -1. */
export function socketFd(socket: Socket): number {
  return handleOf(socket)?.fd ?? -1;
}

/**
 * Stop reading from the socket itself: pause() alone lets it read on until its buffer is full,
 * and read() starts it again. Call again after draining the stream with read().
 */
export function stopReading(socket: Socket): void {
  socket.pause();
  const handle = handleOf(socket);
  if (handle?.readStop) {
    handle.reading = false;
    handle.readStop();
  }
}

/** Undo stopReading: the stream may still count a read as in flight, so resume() alone would not read. */
export function startReading(socket: Socket): void {
  const handle = handleOf(socket);
  if (handle?.readStart && !handle.reading) {
    handle.reading = true;
    handle.readStart();
  }
  socket.resume();
}

const CRLF = Buffer.from("\r\n");
const CRLFCRLF = Buffer.from("\r\n\r\n");

export class SocketReader {
  private buffered: Buffer = Buffer.alloc(0);
  private ended = false;
  private waiter: (() => void) | undefined;
  private pausedByUs = false;

  private readonly onData = (chunk: Buffer) => {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    if (this.buffered.length > this.maxBuffered && !this.pausedByUs) {
      this.pausedByUs = true;
      this.socket.pause();
    }
    this.wake();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake();
  };

  constructor(
    readonly socket: Socket,
    /** Past this many unread bytes the socket is paused until they are taken. */
    private readonly maxBuffered = 1024 * 1024,
  ) {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.resume();
  }

  get atEnd(): boolean {
    return this.ended && this.buffered.length === 0;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    if (this.pausedByUs) {
      this.pausedByUs = false;
      this.socket.resume();
    }
    await new Promise<void>((resolve) => (this.waiter = resolve));
    return true;
  }

  private take(n: number): Buffer {
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    if (this.pausedByUs && this.buffered.length <= this.maxBuffered / 2) {
      this.pausedByUs = false;
      this.socket.resume();
    }
    return out;
  }

  /** Bytes up to and including `delimiter`; null at a clean end; HeadTooLargeError past `max`. */
  private async until(delimiter: Buffer, max: number): Promise<Buffer | null> {
    let from = 0;
    for (;;) {
      const at = this.buffered.indexOf(delimiter, from);
      if (at >= 0 && at + delimiter.length > max) throw new HeadTooLargeError(`more than ${max} bytes without a line end`);
      if (at >= 0) return this.take(at + delimiter.length);
      if (this.buffered.length > max) throw new HeadTooLargeError(`more than ${max} bytes without a line end`);
      from = Math.max(0, this.buffered.length - delimiter.length + 1);
      if (!(await this.more())) {
        if (this.buffered.length === 0) return null;
        throw new Error("the connection ended in the middle of a message");
      }
    }
  }

  /** A message head (through the blank line). */
  head(max: number): Promise<Buffer | null> {
    return this.until(CRLFCRLF, max);
  }

  line(max: number): Promise<Buffer | null> {
    return this.until(CRLF, max);
  }

  /** Exactly `n` bytes (throws if the connection ends first); no promise when they are here already. */
  exact(n: number): Buffer | Promise<Buffer> {
    return this.buffered.length >= n ? this.take(n) : this.exactLater(n);
  }

  private async exactLater(n: number): Promise<Buffer> {
    while (this.buffered.length < n) {
      if (!(await this.more())) throw new Error("the connection ended in the middle of a message");
    }
    return this.take(n);
  }

  /** What is there (waiting for at least one byte), at most `max`; null at the end. */
  async some(max: number): Promise<Buffer | null> {
    while (this.buffered.length === 0) {
      if (!(await this.more())) return null;
    }
    return this.take(Math.min(max, this.buffered.length));
  }

  /** Everything read but not taken yet. */
  takeBuffered(): Buffer {
    return this.take(this.buffered.length);
  }

  /** Stop reading from the socket itself (stopReading) and hand over everything read so far. `resumeSource` undoes it. */
  suspend(): Buffer {
    stopReading(this.socket);
    // Whatever the stream still holds arrives through onData.
    while (this.socket.read() !== null) {
      /* appended by onData */
    }
    stopReading(this.socket);
    this.pausedByUs = false;
    return this.take(this.buffered.length);
  }

  resumeSource(): void {
    startReading(this.socket);
  }

  /** Stop reading: the socket is the caller's again (paused), with what was read but not taken. */
  detach(): Buffer {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    this.socket.pause();
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }
}
