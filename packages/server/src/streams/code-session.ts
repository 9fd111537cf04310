/**
 * The code session WebSocket: runs whose output streams as it happens and
 * whose host-function calls go to the client (`call`), which answers
 * (`return` / `raise`). One run at a time per socket.
 */
import type { WebSocket } from "ws";
import { AgentboxError, CodeSessionClientMessage, type CodeSessionServerMessage, type WorkerEvent } from "@agentbox/protocol";
import type { CodeService } from "../code-service.js";
import { parseClientMessage } from "./client-message.js";
import { closeCodeFor } from "./process-stream.js";

const POLL_MS = 20_000;

function send(ws: WebSocket, message: CodeSessionServerMessage): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

function relay(ws: WebSocket, e: WorkerEvent): boolean {
  switch (e.type) {
    case "print":
      send(ws, { type: e.stream, text: e.text });
      return false;
    case "call":
      send(ws, { type: "call", callId: e.callId, name: e.name, args: e.args, kwargs: e.kwargs });
      return false;
    case "complete":
      for (const r of e.results) send(ws, { type: "result", ...r });
      send(ws, { type: "done", executionCount: e.executionCount });
      return true;
    case "error":
      send(ws, { type: "error", name: e.name, value: e.value, traceback: e.traceback });
      send(ws, { type: "done", executionCount: e.executionCount ?? 0 });
      return true;
    default:
      send(ws, { type: "error", name: "WorkerCrashed", value: e.type === "fatal_error" ? e.message : e.type, traceback: "" });
      send(ws, { type: "done", executionCount: 0 });
      return true;
  }
}

export function serveCodeSession(ws: WebSocket, code: CodeService, sandboxId: string, contextId: string): void {
  const runtime = code.runtime;
  let running = false;
  const fail = (err: unknown) => {
    const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
    send(ws, { type: "failed", code: e.code, message: e.message });
    return e;
  };
  const pump = async () => {
    try {
      for (;;) {
        const r = await runtime.request("code.events", { sandboxId, contextId, waitMs: POLL_MS });
        let ended = false;
        for (const e of r.events) ended = relay(ws, e) || ended;
        if (r.done || ended) break;
      }
    } catch (err) {
      fail(err);
    } finally {
      running = false;
    }
  };
  ws.on("message", (raw: Buffer, isBinary: boolean) => {
    const parsed = isBinary ? { ok: false as const, error: "binary messages are not part of this protocol" } : parseClientMessage(CodeSessionClientMessage, raw.toString("utf8"));
    if (!parsed.ok) {
      send(ws, { type: "failed", code: "INVALID_REQUEST", message: parsed.error });
      return;
    }
    const m = parsed.message;
    if (m.type === "run") {
      if (running) {
        send(ws, { type: "failed", code: "CONFLICT", message: "a run is already in progress on this session" });
        return;
      }
      running = true;
      void (async () => {
        try {
          code.requireReady(sandboxId);
          await runtime.request("code.start", {
            sandboxId,
            contextId,
            request: { code: m.code, ...(m.timeoutMs !== undefined ? { timeoutMs: m.timeoutMs } : {}) },
            ...(m.functions ? { functions: m.functions } : {}),
          });
        } catch (err) {
          running = false;
          fail(err);
          return;
        }
        await pump();
      })();
      return;
    }
    const answer = m.type === "return" ? { value: m.value ?? null } : { error: m.error };
    void runtime.request("code.resume", { sandboxId, contextId, callId: m.callId, ...answer }).catch((err) => fail(err));
  });
  ws.on("close", () => undefined);
  void (async () => {
    try {
      await code.get(sandboxId, contextId);
    } catch (err) {
      const e = fail(err);
      if (ws.readyState === ws.OPEN) ws.close(closeCodeFor(e.code), e.code);
    }
  })();
}
