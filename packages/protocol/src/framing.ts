/**
 * Length-prefixed frames: a 4-byte big-endian length, then that many bytes of
 * UTF-8 JSON, optionally followed by a newline and raw bytes (an attachment,
 * for bulk output that should not be JSON-escaped twice; JSON text never holds
 * a raw newline, so the first one ends it). Frames over the cap are a protocol
 * violation (the peer is broken or hostile), so the decoder reports them and
 * the connection is closed.
 */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

export function encodeFrame(message: unknown, attachment?: Buffer): Buffer {
  const body = Buffer.from(JSON.stringify(message), "utf8");
  const extra = attachment ? 1 + attachment.length : 0;
  const frame = Buffer.allocUnsafe(4 + body.length + extra);
  frame.writeUInt32BE(body.length + extra, 0);
  body.copy(frame, 4);
  if (attachment) {
    frame[4 + body.length] = 0x0a;
    attachment.copy(frame, 5 + body.length);
  }
  return frame;
}

/** Length prefix, JSON and newline of a frame whose `attachmentBytes` follow separately (no copy). */
export function encodeFrameHead(message: unknown, attachmentBytes: number): Buffer {
  const body = Buffer.from(JSON.stringify(message), "utf8");
  const head = Buffer.allocUnsafe(5 + body.length);
  head.writeUInt32BE(body.length + 1 + attachmentBytes, 0);
  body.copy(head, 4);
  head[4 + body.length] = 0x0a;
  return head;
}

export interface DecodedFrame {
  message: unknown;
  attachment: Buffer | undefined;
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/** Incremental decoder: push chunks, get whole decoded messages back. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Whole messages in `chunk` (attachments dropped). */
  push(chunk: Buffer): unknown[] {
    return this.pushFrames(chunk).map((f) => f.message);
  }

  /** Whole frames in `chunk`, with their attachments. */
  pushFrames(chunk: Buffer): DecodedFrame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: DecodedFrame[] = [];
    for (;;) {
      if (this.buffered < 4) return out;
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      if (length > this.maxFrameBytes) {
        throw new FrameError(`frame of ${length} bytes exceeds the maximum of ${this.maxFrameBytes}`);
      }
      if (this.buffered < 4 + length) return out;
      const payload = this.take(4 + length).subarray(4);
      const nl = payload.indexOf(0x0a);
      let message: unknown;
      try {
        message = JSON.parse(payload.toString("utf8", 0, nl < 0 ? payload.length : nl));
      } catch {
        throw new FrameError("frame is not valid JSON");
      }
      out.push({ message, attachment: nl < 0 ? undefined : payload.subarray(nl + 1) });
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    return Buffer.concat(this.chunks).subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const frame = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return frame;
  }
}
