/**
 * One worker seen from its parent: a strict request/turn state machine over a
 * transport, host-function calls answered in the middle of a turn, and a
 * watchdog for each request. A worker that dies, sends a broken frame or
 * overruns its deadline without answering the interrupt is dead for good;
 * the pool replaces it.
 */
import {
  WORKER_PROTOCOL_VERSION,
  WorkerEvent,
  decodeValue,
  encodeValue,
  isTurnEnder,
  type CallEvent,
  type TurnEnder,
  type WorkerRequest,
} from "@agentbox/protocol";
import type { WorkerTransport } from "./transports.js";

/** A host function: positional arguments, keyword arguments (Python), and its result. */
export type HostFunction = (args: unknown[], kwargs: Record<string, unknown>) => unknown;

/** A relay's answer to a `call`, in wire values (no decoding on the way). */
export type CallAnswer = { value: unknown } | { error: { name: string; message: string } };

export interface TurnOptions {
  onEvent?: (event: WorkerEvent) => void;
  /** Host functions by name, for `call` events. */
  functions?: Record<string, HostFunction>;
  /** Instead of `functions`: answer each call with wire values (a relay to a remote client). */
  onCall?: (call: CallEvent) => Promise<CallAnswer>;
  /** Past this the code is interrupted; `graceMs` later, the worker is killed. */
  timeoutMs?: number;
}

/** Why a turn ended without the worker's own turn-ender. */
export class WorkerFailure extends Error {
  constructor(
    readonly kind: "timeout" | "crashed",
    message: string,
  ) {
    super(message);
    this.name = kind === "timeout" ? "TimeoutError" : "WorkerCrashed";
  }
}

const INTERRUPT_GRACE_MS = 500;

/** The hot events (print, call) checked by hand; the rest by their schema. */
function parseEvent(raw: unknown): WorkerEvent {
  const e = raw as Record<string, unknown>;
  if (e?.type === "print" && (e.stream === "stdout" || e.stream === "stderr") && typeof e.text === "string") return e as WorkerEvent;
  if (e?.type === "call" && typeof e.callId === "string" && typeof e.name === "string" && Array.isArray(e.args) && typeof e.kwargs === "object" && e.kwargs !== null) {
    return e as WorkerEvent;
  }
  return WorkerEvent.parse(raw);
}

export class Worker {
  private current: { resolve: (e: TurnEnder) => void; reject: (e: Error) => void; options: TurnOptions } | undefined;
  private deadReason: string | undefined;
  /** Feeds served (for recycling). */
  uses = 0;

  constructor(readonly transport: WorkerTransport) {
    transport.onPayload = (payload) => this.receive(payload);
    transport.onClose = (reason) => this.die(reason);
  }

  get alive(): boolean {
    return this.deadReason === undefined;
  }

  get busy(): boolean {
    return this.current !== undefined;
  }

  private die(reason: string): void {
    if (this.deadReason !== undefined) return;
    this.deadReason = reason;
    const turn = this.current;
    this.current = undefined;
    turn?.reject(new WorkerFailure("crashed", reason));
  }

  private receive(payload: Buffer): void {
    let event: WorkerEvent;
    try {
      event = parseEvent(JSON.parse(payload.toString("utf8")));
    } catch {
      this.transport.kill();
      this.die("the worker sent a message that is not part of the protocol");
      return;
    }
    const turn = this.current;
    if (!turn) {
      // Nothing asked: a worker speaking out of turn is broken.
      this.transport.kill();
      this.die(`the worker sent ${event.type} outside a turn`);
      return;
    }
    if (event.type === "call") {
      turn.options.onEvent?.(event);
      if (turn.options.onCall) {
        void turn.options.onCall(event).then(
          (answer) => this.transport.send({ type: "resume_call", callId: event.callId, ...answer }),
          (err: Error) => this.transport.send({ type: "resume_call", callId: event.callId, error: { name: err.name || "Error", message: err.message } }),
        );
      } else void this.answer(event, turn.options.functions ?? {});
      return;
    }
    if (isTurnEnder(event)) {
      this.current = undefined;
      if (event.type === "fatal_error") {
        this.transport.kill();
        this.die(`fatal: ${event.message}`);
      }
      turn.resolve(event);
      return;
    }
    turn.options.onEvent?.(event);
  }

  private async answer(call: CallEvent, functions: Record<string, HostFunction>): Promise<void> {
    const fn = functions[call.name];
    try {
      if (!fn) throw Object.assign(new Error(`no host function ${call.name}`), { name: "NameError" });
      const kwargs = Object.fromEntries(Object.entries(call.kwargs).map(([k, v]) => [k, decodeValue(v)]));
      const value = await fn(call.args.map(decodeValue), kwargs);
      this.transport.send({ type: "resume_call", callId: call.callId, value: encodeValue(value) });
    } catch (err) {
      const e = err as { name?: unknown; message?: unknown };
      this.transport.send({
        type: "resume_call",
        callId: call.callId,
        error: { name: typeof e?.name === "string" ? e.name : "Error", message: typeof e?.message === "string" ? e.message : String(err) },
      });
    }
  }

  /** Send one request and wait for its turn-ender (events go to `onEvent`). */
  request(request: WorkerRequest, options: TurnOptions = {}): Promise<TurnEnder> {
    if (request.type === "feed") this.uses++;
    return this.turn(() => this.transport.send(request), options);
  }

  /** Send raw bytes as a request and wait for the turn-ender (protocol tests: malformed payloads). */
  requestRaw(bytes: Buffer, options: TurnOptions = {}): Promise<TurnEnder> {
    return this.turn(() => this.transport.sendRaw(bytes), options);
  }

  private turn(send: () => void, options: TurnOptions): Promise<TurnEnder> {
    if (this.deadReason !== undefined) return Promise.reject(new WorkerFailure("crashed", this.deadReason));
    if (this.current) return Promise.reject(new Error("the worker is busy with another request"));
    return new Promise<TurnEnder>((resolve, reject) => {
      let interruptTimer: NodeJS.Timeout | undefined;
      let killTimer: NodeJS.Timeout | undefined;
      let timedOut = false;
      const settle = () => {
        clearTimeout(interruptTimer);
        clearTimeout(killTimer);
      };
      this.current = {
        options,
        resolve: (e) => {
          settle();
          if (timedOut && e.type === "error") {
            // The interrupt arrived: the code stopped, the worker lives on (state kept).
            resolve({ ...e, name: "TimeoutError", value: `the run took longer than ${options.timeoutMs} ms and was interrupted` });
          } else resolve(e);
        },
        reject: (err) => {
          settle();
          reject(timedOut ? new WorkerFailure("timeout", `the run took longer than ${options.timeoutMs} ms; its worker was replaced (state lost)`) : err);
        },
      };
      if (options.timeoutMs !== undefined) {
        interruptTimer = setTimeout(() => {
          timedOut = true;
          this.transport.interrupt();
          killTimer = setTimeout(() => {
            this.transport.kill();
            this.die("killed after overrunning its deadline");
          }, INTERRUPT_GRACE_MS);
        }, options.timeoutMs);
      }
      send();
    });
  }

  /** Configure the worker (first request); a version mismatch rejects. */
  async configure(options: { scriptName?: string; maxOutputBytes?: number; maxFrameBytes?: number; protocolVersion?: number } = {}): Promise<void> {
    const limits: { maxOutputBytes?: number; maxFrameBytes?: number } = {};
    if (options.maxOutputBytes !== undefined) limits.maxOutputBytes = options.maxOutputBytes;
    if (options.maxFrameBytes !== undefined) limits.maxFrameBytes = options.maxFrameBytes;
    const answer = await this.request({
      type: "configure",
      protocolVersion: options.protocolVersion ?? WORKER_PROTOCOL_VERSION,
      limits,
      ...(options.scriptName !== undefined ? { scriptName: options.scriptName } : {}),
    }, { timeoutMs: 30_000 });
    if (answer.type !== "ok") throw new WorkerFailure("crashed", answer.type === "fatal_error" ? answer.message : `configure answered ${answer.type}`);
  }

  /** Ask the worker to exit; kill it if it does not answer soon. */
  async shutdown(): Promise<void> {
    if (!this.alive) return;
    const timer = setTimeout(() => this.transport.kill(), 2000);
    await this.request({ type: "shutdown" }).catch(() => undefined);
    clearTimeout(timer);
    this.transport.kill();
    this.die("shut down");
  }

  kill(): void {
    this.transport.kill();
    this.die("killed");
  }
}
