/** A framed, JSON-message connection over a socket (either end of the runtime protocol). */
import type { Socket } from "node:net";
import { FrameDecoder, encodeFrame } from "@agentbox/protocol";

export class FramedConnection {
  private readonly decoder: FrameDecoder;
  private closed = false;

  constructor(
    readonly socket: Socket,
    onMessage: (message: unknown) => void,
    onClose: (reason: Error | undefined) => void,
    maxFrameBytes?: number,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes);
    socket.on("data", (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = this.decoder.push(chunk);
      } catch (err) {
        // A broken frame means the peer cannot be trusted to stay in sync: drop it.
        this.close();
        onClose(err as Error);
        return;
      }
      for (const m of messages) onMessage(m);
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      if (!this.closed) {
        this.closed = true;
        onClose(undefined);
      }
    });
  }

  send(message: unknown): void {
    if (!this.closed) this.socket.write(encodeFrame(message));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
    this.socket.destroySoon?.();
  }
}
