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
  /** The raw bytes after the JSON, as one buffer (joined on first use). */
  readonly attachment: Buffer | undefined;
  /** The same bytes as the slices they arrived in: no copy (for bulk data). */
  readonly attachmentParts: Buffer[] | undefined;
}

function frame(message: unknown, parts: Buffer[] | undefined): DecodedFrame {
  let joined: Buffer | undefined;
  return {
    message,
    attachmentParts: parts,
    get attachment() {
      if (parts === undefined) return undefined;
      joined ??= parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      return joined;
    },
  };
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

  /** Bytes received past the last whole frame (the decoder is left empty). */
  takeRemainder(): Buffer {
    const rest = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

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
      this.skip(4);
      const parts = this.take(length);
      // The JSON runs to the first newline; it is small and usually within the first slice.
      let jsonEnd = -1;
      let at = 0;
      let upTo = parts.length;
      for (const [i, p] of parts.entries()) {
        const nl = p.indexOf(0x0a);
        if (nl >= 0) {
          jsonEnd = at + nl;
          upTo = i + 1;
          break;
        }
        at += p.length;
      }
      const whole = jsonEnd < 0;
      const headBytes = whole ? length : jsonEnd;
      const json = upTo === 1 ? parts[0]!.subarray(0, headBytes) : Buffer.concat(parts.slice(0, upTo)).subarray(0, headBytes);
      let message: unknown;
      try {
        message = JSON.parse(json.toString("utf8"));
      } catch {
        throw new FrameError("frame is not valid JSON");
      }
      out.push(frame(message, whole ? undefined : sliceParts(parts, jsonEnd + 1)));
    }
  }

  private skip(n: number): void {
    this.take(n);
  }

  /** The next `n` bytes as slices of what arrived (no copy). */
  private take(n: number): Buffer[] {
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const c = this.chunks[0]!;
      if (c.length <= need) {
        parts.push(c);
        this.chunks.shift();
        need -= c.length;
      } else {
        parts.push(c.subarray(0, need));
        this.chunks[0] = c.subarray(need);
        need = 0;
      }
    }
    this.buffered -= n;
    return parts;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    return Buffer.concat(this.chunks.slice(0, n)).subarray(0, n);
  }

}

/** `parts` from byte `from` on. */
function sliceParts(parts: Buffer[], from: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = from;
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    out.push(skip > 0 ? p.subarray(skip) : p);
    skip = 0;
  }
  return out;
}
