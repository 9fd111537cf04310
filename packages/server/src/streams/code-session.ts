/**
 * The code session WebSocket. The runtime serves it itself when the server can
 * hand it the client's plain TCP connection (`handOffCodeSession`): a host call
 * then skips the server. Otherwise (TLS, or the hand-off failed) the server
 * serves it, each step a runtime request.
 */
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { WebSocket } from "ws";
import { serveCodeSession, startReading, stopReading } from "@agentbox/runtime";
import type { CodeService } from "../code-service.js";
import { relayFd } from "../file-service.js";

export function serveCodeSessionHere(ws: WebSocket, code: CodeService, sandboxId: string, contextId: string): void {
  const runtime = code.runtime;
  serveCodeSession(ws, {
    check: () => code.get(sandboxId, contextId),
    start: async (request, functions) => {
      code.requireReady(sandboxId);
      return runtime.request("code.start", { sandboxId, contextId, request, ...(functions ? { functions } : {}) });
    },
    events: (waitMs) => runtime.request("code.events", { sandboxId, contextId, waitMs }),
    resume: (callId, answer, waitMs) => runtime.request("code.resume", { sandboxId, contextId, callId, ...answer, waitMs }),
  });
}

/**
 * Hand an authenticated upgrade request for a code session to the runtime. True when the runtime
 * took the connection (this process then lets go of its copy); false when it did not, having
 * written nothing to it, so that the caller serves the session here.
 */
export async function handOffCodeSession(req: IncomingMessage, socket: Socket, head: Buffer, code: CodeService, sandboxId: string, contextId: string): Promise<boolean> {
  const fd = relayFd(socket);
  if (fd < 0) return false;
  try {
    code.requireReady(sandboxId);
  } catch {
    return false; // served here, which reports why
  }
  // From here on the runtime reads the connection: this process must not take its bytes.
  stopReading(socket);
  const early: Buffer[] = [head];
  for (let chunk = socket.read() as Buffer | null; chunk; chunk = socket.read() as Buffer | null) early.push(chunk);
  stopReading(socket); // read() may have started the socket reading again
  try {
    await code.runtime.request("code.attach", {
      sandboxId,
      contextId,
      fd,
      url: req.url ?? "/",
      headers: req.headers as Record<string, string | string[]>,
      headBase64: Buffer.concat(early).toString("base64"),
    });
  } catch {
    const rest = Buffer.concat(early.slice(1));
    if (rest.length > 0) socket.unshift(rest);
    startReading(socket);
    return false;
  }
  socket.destroy(); // closes this process's descriptor only: the connection is the runtime's now
  return true;
}
