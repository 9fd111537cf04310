/**
 * A bounded log of one output stream, addressed by byte offset from the start
 * of the stream. Appending never blocks: when the log is over its cap the
 * oldest chunks are evicted, and a reader asking for evicted bytes is told
 * where the log now begins.
 */
import { completeUtf8Length } from "./utf8.js";

export interface LogRead {
  /** Text of the bytes read, cut only at a character boundary (unless the stream ended). */
  data: string;
  /** Offset of the first byte read. */
  offset: number;
  /** How many bytes of the stream `data` covers. */
  bytes: number;
  /** Set when `from` was already evicted: reading started at `offset` instead. */
  truncated?: { requestedOffset: number; availableOffset: number };
}

export class OutputLog {
  private chunks: Buffer[] = [];
  /** Offset of the first retained byte. */
  private startOffset = 0;
  /** Offset just after the last byte. */
  private endOffset = 0;
  private ended = false;
  private readonly waiters = new Set<() => void>();

  constructor(readonly capBytes: number) {}

  get start(): number {
    return this.startOffset;
  }
  get end(): number {
    return this.endOffset;
  }
  get isEnded(): boolean {
    return this.ended;
  }
  /** Bytes held in memory. */
  get retained(): number {
    return this.endOffset - this.startOffset;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.endOffset += chunk.length;
    while (this.endOffset - this.startOffset > this.capBytes && this.chunks.length > 0) {
      const first = this.chunks[0]!;
      const excess = this.endOffset - this.startOffset - this.capBytes;
      if (first.length <= excess) {
        this.chunks.shift();
        this.startOffset += first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.startOffset += excess;
      }
    }
    this.wake();
  }

  /** Drop everything held (offsets stay valid: readers are told it was evicted). */
  discard(): void {
    this.chunks = [];
    this.startOffset = this.endOffset;
  }

  /** No more data will come (the process closed the stream). */
  close(): void {
    this.ended = true;
    this.wake();
  }

  /** Read up to `maxBytes` from `from`. Returns empty data when nothing follows `from` yet. */
  read(from: number, maxBytes = 1 << 20): LogRead {
    let truncated: LogRead["truncated"];
    let offset = Math.min(from, this.endOffset);
    if (offset < this.startOffset) {
      truncated = { requestedOffset: from, availableOffset: this.startOffset };
      offset = this.startOffset;
    }
    const want = Math.min(maxBytes, this.endOffset - offset);
    if (want <= 0) return truncated ? { data: "", offset, bytes: 0, truncated } : { data: "", offset, bytes: 0 };
    const buf = this.slice(offset, offset + want);
    // Never split a character, unless the log ends there for good or one character
    // alone is larger than what we may return.
    let bytes = buf.length;
    const atEnd = offset + bytes === this.endOffset;
    if (!(atEnd && this.ended)) {
      const whole = completeUtf8Length(buf);
      if (whole > 0) bytes = whole;
      else if (atEnd) bytes = 0; // wait for the rest of the character
    }
    const out: LogRead = { data: buf.toString("utf8", 0, bytes), offset, bytes };
    if (truncated) out.truncated = truncated;
    return out;
  }

  /** Raw bytes from `from` (no character alignment): for the binary stream format. */
  readBytes(from: number, maxBytes = 1 << 20): { data: Buffer[]; length: number; offset: number; truncated?: { requestedOffset: number; availableOffset: number } } {
    let offset = Math.min(from, this.endOffset);
    const truncated = offset < this.startOffset ? { requestedOffset: from, availableOffset: this.startOffset } : undefined;
    if (truncated) offset = this.startOffset;
    const length = Math.max(0, Math.min(maxBytes, this.endOffset - offset));
    const data = length > 0 ? this.parts(offset, offset + length) : [];
    return truncated ? { data, length, offset, truncated } : { data, length, offset };
  }

  /** Resolve when data beyond `offset` exists, the log ended, or `ms` passed. */
  waitBeyond(offset: number, ms: number): Promise<void> {
    if (this.endOffset > offset || this.ended || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private slice(from: number, to: number): Buffer {
    const parts = this.parts(from, to);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The retained chunks covering [from, to), trimmed, without copying. Walks from the end: readers are usually near it. */
  private parts(from: number, to: number): Buffer[] {
    const out: Buffer[] = [];
    let pos = this.endOffset;
    for (let i = this.chunks.length - 1; i >= 0 && pos > from; i--) {
      const chunk = this.chunks[i]!;
      const cStart = pos - chunk.length;
      if (cStart < to) out.push(chunk.subarray(Math.max(0, from - cStart), Math.min(chunk.length, to - cStart)));
      pos = cStart;
    }
    return out.reverse();
  }
}
