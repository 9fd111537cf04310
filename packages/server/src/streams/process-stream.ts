/**
 * The process stream WebSocket: relays a process's output from the runtime,
 * from the client's offsets, and the client's input, close_stdin and kill
 * back. One long-poll read at a time per client, and no read while the
 * client's socket still has over HIGH_WATER bytes unsent: a slow client slows
 * only its own stream, never the process (the runtime keeps reading into the
 * bounded log) nor other clients.
 */
import type { WebSocket } from "ws";
import {
  AgentboxError,
  StreamClientMessage,
  WS_CLOSE,
  closeCodeFor,
  parseClientMessage,
  type StreamServerMessage,
} from "@agentbox/protocol";
import type { ProcessService } from "../process-service.js";
import { drained } from "./backpressure.js";

const READ_BYTES = 4 * 1024 * 1024;
const HIGH_WATER = 2 * 1024 * 1024;
const POLL_MS = 20_000;

export interface StreamTarget {
  sandboxId: string;
  processId: string;
  stdoutOffset: number;
  stderrOffset: number;
  /** `?format=binary`: output as binary frames (see readBinaryMessages in the runtime). */
  binary: boolean;
}

function send(ws: WebSocket, message: StreamServerMessage): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

export async function serveProcessStream(ws: WebSocket, processes: ProcessService, target: StreamTarget): Promise<void> {
  const { sandboxId, processId } = target;
  ws.on("message", (raw, isBinary) => void onClientMessage(ws, processes, target, raw, isBinary));

  let info;
  try {
    info = await processes.get(sandboxId, processId);
  } catch (err) {
    const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
    send(ws, { type: "error", code: e.code, message: e.message });
    ws.close(closeCodeFor(e.code), e.code);
    return;
  }
  send(ws, { type: "started", id: info.id, pid: info.pid });

  // One read ahead: the next read is in flight while the client drains the current one.
  const read = (stdout: number, stderr: number) => {
    const pending = processes.readMessages(sandboxId, processId, stdout, stderr, READ_BYTES, POLL_MS, target.binary);
    pending.catch(() => undefined); // if the client leaves first, nobody awaits it
    return pending;
  };
  let next = read(target.stdoutOffset, target.stderrOffset);
  while (ws.readyState === ws.OPEN) {
    let current;
    try {
      current = await next;
    } catch (err) {
      const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
      if (ws.readyState === ws.OPEN) {
        send(ws, { type: "error", code: e.code, message: e.message });
        ws.close(closeCodeFor(e.code), e.code);
      }
      return;
    }
    const { result, attachment } = current;
    if (!result.exited) next = read(result.stdoutOffset, result.stderrOffset);
    let at = 0;
    for (const [i, length] of result.messageBytes.entries()) {
      if (ws.readyState !== ws.OPEN) return;
      ws.send(attachment.subarray(at, at + length), { binary: result.binary?.[i] ?? false });
      at += length;
    }
    if (result.exited) {
      ws.close(WS_CLOSE.NORMAL, "exited");
      return;
    }
    await drained(ws, HIGH_WATER);
  }
  // The socket closed with a read in flight: let it finish quietly.
  next.catch(() => undefined);
}

async function onClientMessage(ws: WebSocket, processes: ProcessService, t: StreamTarget, raw: unknown, isBinary: boolean): Promise<void> {
  const parsed = isBinary
    ? ({ ok: false, error: "binary frames are not accepted; send JSON text" } as const)
    : parseClientMessage(StreamClientMessage, String(raw));
  if (!parsed.ok) {
    send(ws, { type: "error", code: "INVALID_REQUEST", message: parsed.error });
    return;
  }
  const message = parsed.message;
  try {
    if (message.type === "input") await processes.input(t.sandboxId, t.processId, { data: message.data });
    else if (message.type === "input_base64") await processes.input(t.sandboxId, t.processId, { dataBase64: message.data });
    else if (message.type === "close_stdin") await processes.closeStdin(t.sandboxId, t.processId);
    else await processes.kill(t.sandboxId, t.processId, message.signal ?? "SIGKILL");
  } catch (err) {
    const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
    send(ws, { type: "error", code: e.code, message: e.message });
  }
}
