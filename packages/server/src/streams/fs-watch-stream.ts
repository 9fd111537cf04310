/**
 * The watch WebSocket: filesystem events under a path, as JSON text frames,
 * from a watcher running in the sandbox. Closing the socket stops the watcher.
 * Events are pulled only while the client keeps up: a client that stops
 * reading leaves them in the watcher's pipe and then the kernel's queue, which
 * overflows (the client is told) instead of the server's memory growing.
 */
import type { WebSocket } from "ws";
import { AgentboxError, WS_CLOSE, closeCodeFor, type WatchEvent, type WatchMessage } from "@agentbox/protocol";
import type { RuntimeLink } from "../runtime-link.js";
import type { SandboxService } from "../sandbox-service.js";
import { drained } from "./backpressure.js";

const POLL_MS = 20_000;
const HIGH_WATER = 1024 * 1024;

function send(ws: WebSocket, message: WatchMessage): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

export async function serveWatchStream(ws: WebSocket, sandboxes: SandboxService, runtime: RuntimeLink, sandboxId: string, path: string, recursive: boolean): Promise<void> {
  let handle: string | undefined;
  let closed = false;
  ws.once("close", () => {
    closed = true;
    if (handle) void runtime.request("fs.abort", { sandboxId, handle }).catch(() => undefined);
  });
  try {
    sandboxes.requireReady(sandboxId);
    handle = (await runtime.request("fs.openWatch", { sandboxId, path, recursive })).handle;
    if (closed) {
      await runtime.request("fs.abort", { sandboxId, handle }).catch(() => undefined);
      return;
    }
    send(ws, { type: "ready" }); // the helper answers only once its inotify watches are in place
    while (ws.readyState === ws.OPEN) {
      const r = await runtime.request("fs.watchEvents", { sandboxId, handle, waitMs: POLL_MS });
      for (const event of r.events) send(ws, event as WatchEvent);
      if (r.done) {
        ws.close(WS_CLOSE.NORMAL, "watch ended");
        return;
      }
      await drained(ws, HIGH_WATER);
    }
  } catch (err) {
    const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
    send(ws, { type: "error", code: e.code, message: e.message });
    if (ws.readyState === ws.OPEN) ws.close(closeCodeFor(e.code), e.code);
  }
}
