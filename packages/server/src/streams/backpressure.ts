/**
 * Backpressure for the streaming WebSockets: a relay reads its next batch only
 * once the client's socket has at most `highWater` bytes unsent, so a slow
 * client holds up only its own stream and the server's memory stays bounded.
 */
import type { WebSocket } from "ws";

/** Resolves once `ws` has at most `highWater` bytes unsent, or is no longer open. */
export async function drained(ws: WebSocket, highWater: number): Promise<void> {
  while (ws.readyState === ws.OPEN && ws.bufferedAmount > highWater) await new Promise((r) => setTimeout(r, 1));
}
