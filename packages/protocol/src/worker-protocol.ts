/**
 * The worker protocol (docs/design/worker-protocol.md): what a parent and a
 * code worker (CPython or Node, in a sandbox or remote) say to each other.
 * Frames are a 4-byte big-endian length and a JSON payload; each request
 * gets events and exactly one turn-ender.
 */
import { z } from "zod";

export const WORKER_PROTOCOL_VERSION = 1;
export const WORKER_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** A tagged value (see "Values" in the design doc); checked loosely here, decoded by each side. */
export const WireValue: z.ZodType<unknown> = z.unknown();

export const ConfigureRequest = z.strictObject({
  type: z.literal("configure"),
  protocolVersion: z.number().int(),
  limits: z.strictObject({ maxOutputBytes: z.number().int().positive().optional(), maxFrameBytes: z.number().int().positive().optional() }).optional(),
  scriptName: z.string().optional(),
});
export const FeedRequest = z.strictObject({
  type: z.literal("feed"),
  code: z.string(),
  functions: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/)).optional(),
});
export const InstallDependenciesRequest = z.strictObject({
  type: z.literal("install_dependencies"),
  requirements: z.array(z.string()),
  indexUrl: z.string().optional(),
  findLinks: z.string().optional(),
});
export const ResetRequest = z.strictObject({ type: z.literal("reset") });
export const ShutdownRequest = z.strictObject({ type: z.literal("shutdown") });
export const ResumeCall = z.strictObject({
  type: z.literal("resume_call"),
  callId: z.string(),
  value: WireValue.optional(),
  error: z.strictObject({ name: z.string(), message: z.string() }).optional(),
});

export const WorkerRequest = z.discriminatedUnion("type", [ConfigureRequest, FeedRequest, InstallDependenciesRequest, ResetRequest, ShutdownRequest]);
export type WorkerRequest = z.infer<typeof WorkerRequest>;
export type ResumeCall = z.infer<typeof ResumeCall>;

export const CodeResult = z.object({
  text: z.string().optional(),
  json: z.unknown().optional(),
  png: z.string().optional(),
  html: z.string().optional(),
  svg: z.string().optional(),
  isMain: z.boolean(),
});
export type CodeResult = z.infer<typeof CodeResult>;

export const PrintEvent = z.object({ type: z.literal("print"), stream: z.enum(["stdout", "stderr"]), text: z.string() });
export const CallEvent = z.object({
  type: z.literal("call"),
  callId: z.string(),
  name: z.string(),
  args: z.array(WireValue),
  kwargs: z.record(z.string(), WireValue),
});
export const CompleteEvent = z.object({ type: z.literal("complete"), results: z.array(CodeResult), executionCount: z.number().int() });
export const ErrorEvent = z.object({
  type: z.literal("error"),
  name: z.string(),
  value: z.string(),
  traceback: z.string(),
  executionCount: z.number().int().optional(),
});
export const OkEvent = z.object({ type: z.literal("ok") });
export const FatalErrorEvent = z.object({ type: z.literal("fatal_error"), message: z.string() });

export const WorkerEvent = z.discriminatedUnion("type", [PrintEvent, CallEvent, CompleteEvent, ErrorEvent, OkEvent, FatalErrorEvent]);
export type WorkerEvent = z.infer<typeof WorkerEvent>;
export type CallEvent = z.infer<typeof CallEvent>;
export type TurnEnder = Extract<WorkerEvent, { type: "complete" | "error" | "ok" | "fatal_error" }>;

export function isTurnEnder(e: WorkerEvent): e is TurnEnder {
  return e.type === "complete" || e.type === "error" || e.type === "ok" || e.type === "fatal_error";
}

/** Frame a payload: a 4-byte big-endian length, then the JSON. */
export function encodeWorkerFrame(message: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(message), "utf8");
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(payload.length, 0);
  return Buffer.concat([head, payload]);
}

/**
 * Incremental frame reader. `push` returns the complete payloads; a length over `maxBytes`
 * throws (fatal for the stream).
 */
export class WorkerFrameReader {
  private buffer: Buffer = Buffer.alloc(0);
  constructor(private readonly maxBytes = WORKER_MAX_FRAME_BYTES) {}

  push(chunk: Buffer): Buffer[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const out: Buffer[] = [];
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32BE(0);
      if (length > this.maxBytes) throw new Error(`frame of ${length} bytes is over the ${this.maxBytes}-byte limit`);
      if (this.buffer.length < 4 + length) break;
      out.push(this.buffer.subarray(4, 4 + length));
      this.buffer = this.buffer.subarray(4 + length);
    }
    return out;
  }

  /** Bytes of an unfinished frame (a stream that ends with some is broken). */
  get pending(): number {
    return this.buffer.length;
  }
}

// ---------------------------------------------------------------- values

/** A Python tuple, as the host sees it (an array that crosses back as a tuple). */
export class Tuple extends Array<unknown> {}

/** JS value → wire value (host function results and arguments). */
export function encodeValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (Number.isNaN(v)) return { $float: "nan" };
    if (v === Infinity) return { $float: "inf" };
    if (v === -Infinity) return { $float: "-inf" };
    return v;
  }
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : { $int: v.toString() };
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString("base64") };
  if (v instanceof Tuple) return { $tuple: [...v].map(encodeValue) };
  if (Array.isArray(v)) return v.map(encodeValue);
  if (typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, encodeValue(x)] as const);
    const obj = Object.fromEntries(entries);
    return entries.length === 1 && entries[0]![0].startsWith("$") ? { $dict: obj } : obj;
  }
  throw new TypeError(`a ${typeof v} cannot be sent to the worker`);
}

/** Wire value → JS value: bytes → Uint8Array, tuple → Tuple (an array), big ints → bigint. */
export function decodeValue(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(decodeValue);
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length === 1 && entries[0]![0].startsWith("$")) {
    const [tag, x] = entries[0]!;
    switch (tag) {
      case "$bytes":
        return new Uint8Array(Buffer.from(String(x), "base64"));
      case "$tuple":
        return Tuple.from((x as unknown[]).map(decodeValue));
      case "$int":
        return BigInt(String(x));
      case "$float":
        return x === "nan" ? NaN : x === "inf" ? Infinity : -Infinity;
      case "$dict":
        return Object.fromEntries(Object.entries(x as Record<string, unknown>).map(([k, y]) => [k, decodeValue(y)]));
    }
  }
  return Object.fromEntries(entries.map(([k, x]) => [k, decodeValue(x)]));
}
