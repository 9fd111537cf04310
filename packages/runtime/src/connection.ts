/** A framed, JSON-message connection over a socket (either end of the runtime protocol). */
import type { Socket } from "node:net";
import { FrameDecoder, encodeFrame, encodeFrameHead, type DecodedFrame } from "@agentbox/protocol";

export class FramedConnection {
  private readonly decoder: FrameDecoder;
  private closed = false;

  constructor(
    readonly socket: Socket,
    onMessage: (message: unknown, frame: DecodedFrame) => void,
    onClose: (reason: Error | undefined) => void,
    maxFrameBytes?: number,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes);
    socket.on("data", (chunk: Buffer) => {
      let frames: DecodedFrame[];
      try {
        frames = this.decoder.pushFrames(chunk);
      } catch (err) {
        // A broken frame means the peer cannot be trusted to stay in sync: drop it.
        this.close();
        onClose(err as Error);
        return;
      }
      for (const f of frames) onMessage(f.message, f);
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      if (!this.closed) {
        this.closed = true;
        onClose(undefined);
      }
    });
  }

  /** Send a frame; a large attachment is written as its own buffer(s), not copied into the frame. */
  send(message: unknown, attachment?: Buffer | Buffer[]): void {
    if (this.closed) return;
    if (!Array.isArray(attachment)) {
      this.socket.write(encodeFrame(message, attachment));
      return;
    }
    const parts = attachment;
    const size = parts.reduce((n, b) => n + b.length, 0);
    const head = encodeFrameHead(message, size);
    this.socket.cork();
    this.socket.write(head);
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  /**
   * Stop framing: the socket carries raw bytes from now on (a tunnel). Our listeners are
   * removed; the caller owns the socket. Bytes already read past the last frame are returned.
   */
  release(): Buffer {
    this.closed = true;
    this.socket.removeAllListeners("data");
    this.socket.removeAllListeners("close");
    return this.decoder.takeRemainder();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
    this.socket.destroySoon?.();
  }
}
