/**
 * The code session WebSocket: runs whose output streams as it happens and
 * whose host-function calls go to the client (`call`), which answers
 * (`return` / `raise`). One run at a time per socket. Served by the runtime
 * itself when the server hands it the client's connection, else by the
 * server, each with its own way to reach the context (`CodeSessionBackend`).
 */
import type { WebSocket } from "ws";
import {
  AgentboxError,
  CodeSessionClientMessage,
  closeCodeFor,
  parseClientMessage,
  type CodeSessionServerMessage,
  type RunCodeRequest,
  type WorkerEvent,
} from "@agentbox/protocol";

const POLL_MS = 20_000;

export type CodeEvents = { events: WorkerEvent[]; done: boolean };

/** One code context, as a session reaches it. */
export interface CodeSessionBackend {
  /** Throws (NOT_FOUND, SANDBOX_NOT_READY…) if the context cannot be used. */
  check(): Promise<unknown>;
  start(request: RunCodeRequest, functions: string[] | undefined): Promise<unknown>;
  /** The run's next events, waiting up to `waitMs` for some. */
  events(waitMs: number): Promise<CodeEvents>;
  /** Answer host call `callId`, then the next events as `events` does. */
  resume(callId: string, answer: { value: unknown } | { error: { name: string; message: string } }, waitMs: number): Promise<CodeEvents>;
}

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

export function serveCodeSession(ws: WebSocket, backend: CodeSessionBackend): void {
  let running = false;
  /** Host calls sent to the client and not answered yet. */
  let pending = 0;
  /** Whether a read of the run's events is outstanding. */
  let reading = false;
  const fail = (err: unknown) => {
    const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", String(err));
    send(ws, { type: "failed", code: e.code, message: e.message });
    return e;
  };
  /** Relay a batch of events; true when the run is over. */
  const take = (r: CodeEvents): boolean => {
    let ended = false;
    for (const e of r.events) {
      if (e.type === "call") pending++;
      ended = relay(ws, e) || ended;
    }
    if (r.done || ended) {
      running = false;
      pending = 0;
      return true;
    }
    return false;
  };
  /**
   * Read events until the run ends or waits on the client (a call is out). The answer to the
   * last call brings the next events itself (code.resume waits for them): one round trip a call.
   */
  const read = async (first: Promise<CodeEvents>) => {
    reading = true;
    try {
      let next = first;
      for (;;) {
        if (take(await next) || pending > 0 || ws.readyState !== ws.OPEN) return;
        next = backend.events(POLL_MS);
      }
    } catch (err) {
      running = false;
      fail(err);
    } finally {
      reading = false;
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
      pending = 0;
      void (async () => {
        try {
          await backend.start({ code: m.code, ...(m.timeoutMs !== undefined ? { timeoutMs: m.timeoutMs } : {}) }, m.functions);
        } catch (err) {
          running = false;
          fail(err);
          return;
        }
        await read(backend.events(POLL_MS));
      })();
      return;
    }
    if (!running) {
      send(ws, { type: "failed", code: "NOT_FOUND", message: `no run is waiting for call ${m.callId}` });
      return;
    }
    pending = Math.max(0, pending - 1);
    const answer = m.type === "return" ? { value: m.value ?? null } : { error: m.error };
    const last = pending === 0 && !reading;
    const resumed = backend.resume(m.callId, answer, last ? POLL_MS : 0);
    if (last) void read(resumed);
    else void resumed.then((r) => void (r.events.length > 0 && take(r)), (err) => fail(err));
  });
  void (async () => {
    try {
      await backend.check();
    } catch (err) {
      const e = fail(err);
      if (ws.readyState === ws.OPEN) ws.close(closeCodeFor(e.code), e.code);
    }
  })();
}
