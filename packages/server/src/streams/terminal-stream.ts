/**
 * The terminal WebSocket: binary frames are raw terminal bytes both ways,
 * text frames carry control (client `resize`, server `exit`). Each client
 * first gets the recent output the runtime still keeps (the replay), then
 * live output, through one long-poll read at a time; a slow client holds up
 * only itself. Keystrokes are forwarded in arrival order without waiting for
 * each to be acknowledged.
 */
import type { WebSocket } from "ws";
import { AgentboxError, TerminalClientMessage, WS_CLOSE, closeCodeFor, parseClientMessage, type TerminalServerMessage } from "@agentbox/protocol";
import type { TerminalService } from "../terminal-service.js";
import { drained } from "./backpressure.js";

const READ_BYTES = 1024 * 1024;
const HIGH_WATER = 1024 * 1024;
const POLL_MS = 20_000;

function send(ws: WebSocket, message: TerminalServerMessage): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

function fail(ws: WebSocket, err: unknown): void {
  const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
  if (ws.readyState !== ws.OPEN) return;
  send(ws, { type: "error", code: e.code, message: e.message });
  ws.close(closeCodeFor(e.code), e.code);
}

export async function serveTerminalStream(ws: WebSocket, terminals: TerminalService, sandboxId: string, terminalId: string): Promise<void> {
  // Listen before the first await: a client may type the moment the socket opens.
  ws.on("message", (raw: Buffer, isBinary) => {
    if (isBinary) {
      terminals.input(sandboxId, terminalId, raw).catch((err) => fail(ws, err));
      return;
    }
    const parsed = parseClientMessage(TerminalClientMessage, raw.toString("utf8"));
    if (!parsed.ok) {
      send(ws, { type: "error", code: "INVALID_REQUEST", message: parsed.error });
      return;
    }
    terminals.resize(sandboxId, terminalId, parsed.message.cols, parsed.message.rows).catch((err) => fail(ws, err));
  });

  try {
    await terminals.get(sandboxId, terminalId);
  } catch (err) {
    fail(ws, err);
    return;
  }
  let offset = 0; // from the start: the runtime answers from the oldest byte it still keeps
  while (ws.readyState === ws.OPEN) {
    let r;
    try {
      r = await terminals.read(sandboxId, terminalId, offset, READ_BYTES, POLL_MS);
    } catch (err) {
      fail(ws, err);
      return;
    }
    if (ws.readyState !== ws.OPEN) return;
    if (r.attachment.length > 0) ws.send(r.attachment, { binary: true });
    offset = r.result.offset + r.result.bytes;
    if (r.result.exited) {
      const exit: TerminalServerMessage = { type: "exit", exitCode: r.result.exitCode ?? null };
      if (r.result.signal) exit.signal = r.result.signal;
      send(ws, exit);
      ws.close(WS_CLOSE.NORMAL, "exited");
      return;
    }
    await drained(ws, HIGH_WATER);
  }
}
