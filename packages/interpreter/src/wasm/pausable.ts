/**
 * Pausable runs: the steps `session.start` and `pool.load` return, and the dump format.
 *
 * A run pauses at each call of a declared host function. Within one session the interpreter
 * simply waits (blocked in the call) until `resume`/`throw`. A dump does not hold interpreter
 * memory: it holds the code, the inputs, the declared names, the run's seed and start time, the
 * limits, every host result given so far and the call the run is paused at. `pool.load` replays
 * the run in a fresh interpreter, answering host calls from the record in order (each replayed
 * call's name and arguments must equal the recorded ones) and pauses at the first call past the
 * record, which must equal the recorded paused call.
 *
 * What keeps a replay faithful is set up in wasm-child/runner.py (`_Deterministic`): seeded
 * randomness, a recorded and deterministic clock, a fixed hash seed, globals built from the
 * inputs only, an interpreter reset before the run. What makes a run non-replayable: object
 * identity (`id()`, default hashes and reprs with addresses), real durations, running into a
 * resource limit, host files (mounts) that change between dump and load, and a different
 * interpreter build (refused: the dump records Pyodide's version and the runner's hash).
 * A divergence that changes which host function is called or with which arguments is detected
 * (InterpreterReplayError); one that only changes the final value cannot be.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { InterpreterDumpError } from "./errors.js";
import type { InterpreterLimits } from "./pool.js";

export interface Done {
  done: true;
  value: unknown;
}

export interface Paused {
  done: false;
  /** The host function the code called. */
  name: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  /** Gives the call its result; the run goes on to the next step. A step can be resumed once. */
  resume(value: unknown): Promise<Step>;
  /** Makes the call raise (HostError "<name>: <message>" in Python); the run goes on to the next step. */
  throw(error: unknown): Promise<Step>;
  /** The run up to this point, for `pool.load` in any pool or process (same interpreter build). */
  dump(): Uint8Array;
  /** Abandons the run (its interpreter is reset for reuse, or replaced). */
  cancel(): Promise<void>;
}

export type Step = Done | Paused;

export interface StartOptions {
  /** Python globals of the run; a pausable run sees these (and the functions) only. */
  inputs?: Record<string, unknown>;
  /** Names of the host functions the code may call; each call pauses the run. */
  functions?: string[];
  onPrint?: (text: string, stream: "stdout" | "stderr") => void;
}

export interface LoadOptions {
  /** Overrides of the recorded limits (the recursion depth should stay as recorded). */
  limits?: Partial<InterpreterLimits>;
  /** Output printed after the paused point (output of the replayed part is not repeated). */
  onPrint?: (text: string, stream: "stdout" | "stderr") => void;
}

export type CallResult = { ok: true; value: unknown } | { ok: false; error: { name: string; message: string } };

export interface CallRecord {
  name: string;
  /** The call's arguments exactly as the interpreter encoded them (JSON of [args, kwargs]). */
  args: string;
  result: CallResult;
}

export interface RunRecord {
  code: string;
  /** Inputs in wire form. */
  inputs: unknown;
  functions: string[];
  seed: number;
  clock: number;
  limits: InterpreterLimits;
  /** Host calls answered so far, in order. */
  calls: CallRecord[];
}

export interface DumpBody extends RunRecord {
  format: number;
  interpreter: string;
  paused: { name: string; args: string };
}

const MAGIC = Buffer.from("ABPYRUN1", "latin1");
const FORMAT = 1;

function digest(body: Buffer, secret: string | Uint8Array | undefined): Buffer {
  return secret === undefined ? createHash("sha256").update(body).digest() : createHmac("sha256", secret).update(body).digest();
}

export function encodeDump(record: RunRecord, paused: { name: string; args: string }, interpreter: string, secret?: string | Uint8Array): Uint8Array {
  const body: DumpBody = { format: FORMAT, interpreter, ...record, calls: record.calls.slice(), paused };
  const json = Buffer.from(JSON.stringify(body), "utf8");
  return new Uint8Array(Buffer.concat([MAGIC, digest(json, secret), json]));
}

export function decodeDump(bytes: Uint8Array, interpreter: string, secret?: string | Uint8Array): DumpBody {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < MAGIC.length + 32 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new InterpreterDumpError("not a dump of a pausable Python run");
  }
  const mac = buf.subarray(MAGIC.length, MAGIC.length + 32);
  const json = buf.subarray(MAGIC.length + 32);
  if (!timingSafeEqual(mac, digest(json, secret))) {
    throw new InterpreterDumpError(
      secret === undefined ? "the dump is corrupted or was altered (its hash does not match)" : "the dump was altered or signed with another key",
    );
  }
  let body: DumpBody;
  try {
    body = JSON.parse(json.toString("utf8")) as DumpBody;
  } catch {
    throw new InterpreterDumpError("the dump is not readable");
  }
  if (body.format !== FORMAT) throw new InterpreterDumpError(`dump format ${String(body.format)} is not supported (expected ${FORMAT})`);
  if (body.interpreter !== interpreter) {
    throw new InterpreterDumpError(`the dump was made by another interpreter build (${String(body.interpreter)}, this is ${interpreter})`);
  }
  if (
    typeof body.code !== "string" ||
    !Array.isArray(body.functions) ||
    !body.functions.every((f) => typeof f === "string") ||
    !Array.isArray(body.calls) ||
    typeof body.seed !== "number" ||
    typeof body.clock !== "number" ||
    typeof body.paused?.name !== "string" ||
    typeof body.paused?.args !== "string"
  ) {
    throw new InterpreterDumpError("the dump is malformed");
  }
  return body;
}
