/**
 * The runtime protocol: what the server (control plane) and a runtime
 * (execution plane) say to each other over a unix socket, in frames
 * (see framing.ts). The first frame each way is a `hello` carrying the
 * protocol version; a runtime refuses a peer of another version with
 * VERSION_MISMATCH and closes. After that, requests carry an `id` and get
 * exactly one response with the same `id`.
 */
import { z } from "zod";
import { ExecRequest, ExecResult, ProcessInfo, ProcessLogs, SignalName, StartProcessRequest } from "./api.js";
import { CreateSessionRequest, CreateTerminalRequest, SessionInfo, TerminalInfo } from "./api-sessions.js";
import { SandboxUsage, VolumeMount } from "./api-mounts.js";
import { ImportProgress } from "./api-templates.js";
import { CodeContextInfo, CreateCodeContextRequest, Execution, InstallDependenciesBody, RunCodeRequest } from "./api-code.js";
import { WorkerEvent } from "./worker-protocol.js";
import { NetworkPolicy } from "./api.js";
import { EgressLogEntry } from "./api-network.js";

export const RUNTIME_PROTOCOL_VERSION = 8;

/** Frame cap for what the runtime accepts (requests carry at most a 16 MiB HTTP body). */
export const RUNTIME_MAX_REQUEST_FRAME_BYTES = 64 * 1024 * 1024;
/**
 * Frame cap for what the server accepts from its runtime: an exec result carries
 * up to 2 × 64 MiB of output, which JSON may escape up to 6× (NUL becomes \u0000).
 */
export const RUNTIME_MAX_RESPONSE_FRAME_BYTES = 1024 * 1024 * 1024;

export const Hello = z.object({
  type: z.literal("hello"),
  protocolVersion: z.number().int(),
  runtimeVersion: z.string().optional(),
  pid: z.number().int().optional(),
});
export type Hello = z.infer<typeof Hello>;

/**
 * Instead of a hello, a connection may open with a tunnel request: the runtime connects to
 * `port` inside the sandbox, answers `tunnel-open` (or an error frame and closes), and from
 * then on the connection carries that TCP stream's raw bytes both ways (exposed ports).
 * The peer must not send anything after the request until it has read `tunnel-open`.
 */
export const TunnelRequest = z.object({
  type: z.literal("tunnel"),
  protocolVersion: z.number().int(),
  sandboxId: z.string(),
  port: z.number().int().min(1).max(65535),
});
export type TunnelRequest = z.infer<typeof TunnelRequest>;
export const TunnelOpen = z.object({ type: z.literal("tunnel-open") });

export const WireError = z.object({
  code: z.string(),
  message: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type WireError = z.infer<typeof WireError>;

export const RequestFrame = z.object({
  type: z.literal("request"),
  id: z.number().int(),
  method: z.string(),
  params: z.unknown(),
});
export type RequestFrame = z.infer<typeof RequestFrame>;

export const ResponseFrame = z.object({
  type: z.literal("response"),
  id: z.number().int(),
  result: z.unknown().optional(),
  error: WireError.optional(),
});
export type ResponseFrame = z.infer<typeof ResponseFrame>;

/** Sent by a runtime that refuses the connection (e.g. VERSION_MISMATCH), then it closes. */
export const ErrorFrame = z.object({ type: z.literal("error"), error: WireError });

/** Limits in machine units, already parsed from the template's quantities. */
export const SandboxLimits = z.object({
  memoryBytes: z.number().int().positive(),
  cpu: z.number().positive(),
  pids: z.number().int().positive(),
  storageBytes: z.number().int().positive(),
});
export type SandboxLimits = z.infer<typeof SandboxLimits>;

export const RuntimeSandbox = z.object({
  id: z.string(),
  status: z.enum(["ready", "paused", "failed"]),
  statusMessage: z.string().optional(),
  limitsOff: z.array(z.string()),
  createdAt: z.string(),
});
export type RuntimeSandbox = z.infer<typeof RuntimeSandbox>;

export const SANDBOX_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** A sandbox's root filesystem as the runtime builds it. */
export const RuntimeImage = z.object({
  /** "host": the host image (curated /etc, read-only /usr…) under the layers; "none": the layers are the whole root. */
  base: z.enum(["host", "none"]),
  /** Layer digests in the runtime's image store, lowest first. */
  layers: z.array(z.string()),
});
export type RuntimeImage = z.infer<typeof RuntimeImage>;

/** What importing an image gives: its layers and the defaults of its config. */
export const PreparedImage = RuntimeImage.extend({
  config: z.object({ env: z.record(z.string(), z.string()), workdir: z.string().optional(), user: z.string().optional() }),
});
export type PreparedImage = z.infer<typeof PreparedImage>;

export const CreateSandboxParams = z.object({
  id: z.string().regex(SANDBOX_ID_PATTERN),
  image: RuntimeImage,
  limits: SandboxLimits,
  workdir: z.string(),
  /** User name (looked up in the image's /etc/passwd) or numeric uid the sandbox's commands run as. */
  user: z.string().default("user"),
  mounts: z.array(VolumeMount).default([]),
  network: NetworkPolicy.default({ mode: "none" }),
});
export type CreateSandboxParams = z.infer<typeof CreateSandboxParams>;

export const SandboxIdParams = z.object({ id: z.string().regex(SANDBOX_ID_PATTERN) });
const VolumeRef = z.object({ name: z.string() });
export const RuntimeVolume = z.object({ name: z.string(), sizeBytes: z.number(), usedBytes: z.number(), mountedBy: z.array(z.string()) });
export type RuntimeVolume = z.infer<typeof RuntimeVolume>;

export const ExecParams = z.object({
  sandboxId: z.string().regex(SANDBOX_ID_PATTERN),
  request: ExecRequest,
  /** Environment of the sandbox (from the create call); the request's env is layered on top. */
  env: z.record(z.string(), z.string()),
  defaultCwd: z.string(),
});
export type ExecParams = z.input<typeof ExecParams>;

const ProcessRef = z.object({ sandboxId: z.string().regex(SANDBOX_ID_PATTERN), processId: z.string() });

export const StartProcessParams = z.object({
  sandboxId: z.string().regex(SANDBOX_ID_PATTERN),
  request: StartProcessRequest,
  env: z.record(z.string(), z.string()),
  defaultCwd: z.string(),
});
export type StartProcessParams = z.input<typeof StartProcessParams>;

export const ReadProcessParams = ProcessRef.extend({
  stdoutOffset: z.number().int().min(0),
  stderrOffset: z.number().int().min(0),
  maxBytes: z.number().int().min(1).max(8 * 1024 * 1024),
  /** Long poll: wait this long for new output (or the exit) before answering empty. */
  waitMs: z.number().int().min(0).max(60_000),
});

/** Logs plus where each returned chunk starts and how many bytes it covers. */
export const ProcessRead = ProcessLogs.extend({
  stdoutStart: z.number(),
  stderrStart: z.number(),
  stdoutBytes: z.number(),
  stderrBytes: z.number(),
});
export type ProcessRead = z.infer<typeof ProcessRead>;

export const ProcessReadMessages = z.object({
  stdoutOffset: z.number(),
  stderrOffset: z.number(),
  /** Byte length of each message in the attachment, in order. */
  messageBytes: z.array(z.number().int()),
  /** With `binary: true` requests: which messages are binary frames (the rest are JSON text). */
  binary: z.array(z.boolean()).optional(),
  /** Set once every byte was read and the process exited. */
  exited: z.boolean(),
});
export type ProcessReadMessages = z.infer<typeof ProcessReadMessages>;

const SandboxRef = z.object({ sandboxId: z.string().regex(SANDBOX_ID_PATTERN) });
const CodeRef = SandboxRef.extend({ contextId: z.string() });
const SessionRef = SandboxRef.extend({ sessionId: z.string() });
const TerminalRef = SandboxRef.extend({ terminalId: z.string() });

export const CreateSessionParams = SandboxRef.extend({
  request: CreateSessionRequest,
  env: z.record(z.string(), z.string()),
  defaultCwd: z.string(),
});
export type CreateSessionParams = z.input<typeof CreateSessionParams>;

export const CreateTerminalParams = SandboxRef.extend({
  request: CreateTerminalRequest,
  env: z.record(z.string(), z.string()),
  defaultCwd: z.string(),
});
export type CreateTerminalParams = z.input<typeof CreateTerminalParams>;

/** Terminal output from `offset` travels as the frame's attachment (raw bytes). */
export const TerminalRead = z.object({
  offset: z.number(),
  bytes: z.number(),
  /** Set once every byte was read and the terminal's process exited. */
  exited: z.boolean(),
  exitCode: z.number().int().nullable().optional(),
  signal: z.string().optional(),
});
export type TerminalRead = z.infer<typeof TerminalRead>;

export const FsOpRequest = z.discriminatedUnion("op", [
  z.object({ op: z.literal("stat"), path: z.string() }),
  z.object({ op: z.literal("list"), path: z.string(), depth: z.number().int().min(1).max(64) }),
  z.object({ op: z.literal("mkdir"), path: z.string(), recursive: z.boolean() }),
  z.object({ op: z.literal("move"), from: z.string(), to: z.string() }),
  z.object({ op: z.literal("remove"), path: z.string(), recursive: z.boolean() }),
]);
const FsHandleRef = SandboxRef.extend({ handle: z.string() });

/** Each method: its params schema and result schema, shared by both ends. */
export const RuntimeMethods = {
  "runtime.info": { params: z.object({}), result: z.object({ pid: z.number(), version: z.string(), cgroup: z.string(), sandboxes: z.number() }) },
  "sandbox.create": { params: CreateSandboxParams, result: RuntimeSandbox },
  "sandbox.list": { params: z.object({}), result: z.array(RuntimeSandbox) },
  "sandbox.delete": { params: SandboxIdParams, result: z.object({ deleted: z.boolean() }) },
  "sandbox.exec": { params: ExecParams, result: ExecResult },
  "runtime.shutdown": { params: z.object({}), result: z.object({ ok: z.literal(true) }) },
  "sandbox.pause": { params: SandboxIdParams, result: RuntimeSandbox },
  "sandbox.resume": { params: SandboxIdParams, result: RuntimeSandbox },
  "sandbox.usage": { params: SandboxIdParams, result: SandboxUsage },
  /** New egress rules of a running sandbox (its mode cannot change: CONFLICT). */
  "sandbox.network": { params: SandboxIdParams.extend({ network: NetworkPolicy }), result: z.object({ network: NetworkPolicy }) },
  /** The sandbox's egress log, oldest first (the last `limit` entries). */
  "sandbox.networkLog": { params: SandboxIdParams.extend({ limit: z.number().int().min(1).max(10_000) }), result: z.object({ entries: z.array(EgressLogEntry) }) },
  /** The sandbox's writable layer, copied (while it is frozen) into a new image layer. */
  "sandbox.snapshot": { params: SandboxIdParams, result: z.object({ layer: z.string() }) },
  /** Import an image reference ("host", "dir:…", "oci:…"); long-running for big images. */
  "image.prepare": { params: z.object({ image: z.string() }), result: PreparedImage },
  /** Progress of an import in flight (absent when none is). */
  "image.progress": { params: z.object({ image: z.string() }), result: z.object({ progress: ImportProgress.optional() }) },
  /** Remove stored layers that are neither in `keep` nor used by a live sandbox. */
  "image.gc": { params: z.object({ keep: z.array(z.string()) }), result: z.object({ removed: z.number() }) },
  "volume.create": { params: VolumeRef.extend({ sizeBytes: z.number().int().positive() }), result: RuntimeVolume },
  "volume.get": { params: VolumeRef, result: RuntimeVolume },
  "volume.list": { params: z.object({}), result: z.array(RuntimeVolume) },
  "volume.delete": { params: VolumeRef, result: z.object({ deleted: z.boolean() }) },
  "code.create": {
    params: SandboxRef.extend({ request: CreateCodeContextRequest, env: z.record(z.string(), z.string()), defaultCwd: z.string() }),
    result: CodeContextInfo,
  },
  "code.list": { params: SandboxRef, result: z.array(CodeContextInfo) },
  "code.get": { params: CodeRef, result: CodeContextInfo },
  "code.delete": { params: CodeRef, result: z.object({ deleted: z.boolean() }) },
  /** Replace the context's worker (fresh state). */
  "code.restart": { params: CodeRef, result: CodeContextInfo },
  /** Run and wait for the end (no host functions). */
  "code.run": { params: CodeRef.extend({ request: RunCodeRequest }), result: Execution },
  /** Start a run whose events are read with code.events; `call` events are answered with code.resume. */
  "code.start": { params: CodeRef.extend({ request: RunCodeRequest, functions: z.array(z.string()).optional() }), result: z.object({ ok: z.literal(true) }) },
  /** Long-poll the events of the run in progress; `done` once its turn-ender was returned. */
  "code.events": { params: CodeRef.extend({ waitMs: z.number().int().min(0).max(60_000) }), result: z.object({ events: z.array(WorkerEvent), done: z.boolean() }) },
  /** Answer a `call`, then (like code.events) wait up to `waitMs` for the run's next events: one round trip per host call. */
  "code.resume": {
    params: CodeRef.extend({
      callId: z.string(),
      value: z.unknown().optional(),
      error: z.object({ name: z.string(), message: z.string() }).optional(),
      waitMs: z.number().int().min(0).max(60_000).default(0),
    }),
    result: z.object({ events: z.array(WorkerEvent), done: z.boolean() }),
  },
  "code.install": { params: CodeRef.extend({ request: InstallDependenciesBody }), result: z.object({ output: z.string() }) },
  /**
   * Take over a client's code session WebSocket: descriptor `fd` of the server (the peer of this
   * connection, as the kernel names it) is the client's connection, its upgrade request not yet
   * answered; the runtime answers it and serves the session itself, so a host call skips the
   * server's hop. Fails, having written nothing to the client, if the descriptor cannot be taken.
   */
  "code.attach": {
    params: CodeRef.extend({
      fd: z.number().int().min(0),
      url: z.string(),
      headers: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
      /** Bytes of the connection the server read past the upgrade request. */
      headBase64: z.string(),
    }),
    result: z.object({ ok: z.literal(true) }),
  },
  "process.start": { params: StartProcessParams, result: z.object({ info: ProcessInfo, created: z.boolean() }) },
  "process.list": { params: z.object({ sandboxId: z.string().regex(SANDBOX_ID_PATTERN) }), result: z.array(ProcessInfo) },
  "process.get": { params: ProcessRef, result: ProcessInfo },
  "process.input": { params: ProcessRef.extend({ data: z.string().optional(), dataBase64: z.string().optional() }), result: z.object({ ok: z.literal(true) }) },
  "process.closeStdin": { params: ProcessRef, result: z.object({ ok: z.literal(true) }) },
  "process.kill": { params: ProcessRef.extend({ signal: SignalName }), result: ProcessInfo },
  "process.read": { params: ReadProcessParams, result: ProcessRead },
  /**
   * Like process.read, but the output comes back as ready-made stream messages
   * (StreamServerMessage JSON texts) in the frame's attachment, cut by
   * `messageBytes`: the server relays them to WebSocket clients without decoding.
   */
  "process.readMessages": { params: ReadProcessParams.extend({ binary: z.boolean().optional() }), result: ProcessReadMessages },
  "process.wait": { params: ProcessRef.extend({ timeoutMs: z.number().int().min(0) }), result: z.object({ info: ProcessInfo.optional() }) },
  "session.create": { params: CreateSessionParams, result: z.object({ info: SessionInfo, created: z.boolean() }) },
  "session.list": { params: SandboxRef, result: z.array(SessionInfo) },
  "session.get": { params: SessionRef, result: SessionInfo },
  "session.delete": { params: SessionRef, result: z.object({ deleted: z.boolean() }) },
  "session.exec": { params: SessionRef.extend({ request: ExecRequest }), result: ExecResult },
  "terminal.create": { params: CreateTerminalParams, result: z.object({ info: TerminalInfo, created: z.boolean() }) },
  "terminal.list": { params: SandboxRef, result: z.array(TerminalInfo) },
  "terminal.get": { params: TerminalRef, result: TerminalInfo },
  "terminal.delete": { params: TerminalRef, result: z.object({ deleted: z.boolean() }) },
  "terminal.input": { params: TerminalRef.extend({ dataBase64: z.string() }), result: z.object({ ok: z.literal(true) }) },
  "terminal.resize": { params: TerminalRef.extend({ cols: z.number().int().min(1), rows: z.number().int().min(1) }), result: TerminalInfo },
  "fs.op": { params: SandboxRef.extend({ request: FsOpRequest }), result: z.unknown() },
  "fs.openRead": { params: SandboxRef.extend({ path: z.string(), archive: z.boolean().optional() }), result: z.object({ handle: z.string(), size: z.number().optional() }) },
  /** The bytes travel as the response's attachment. */
  "fs.read": {
    params: FsHandleRef.extend({ maxBytes: z.number().int().min(1).max(16 * 1024 * 1024), waitMs: z.number().int().min(0).max(60_000) }),
    result: z.object({ bytes: z.number(), done: z.boolean() }),
  },
  "fs.openWrite": {
    params: SandboxRef.extend({ path: z.string(), mode: z.number().int().min(0).max(0o7777), archive: z.boolean().optional() }),
    result: z.object({ handle: z.string() }),
  },
  /** The bytes travel as the request's attachment. */
  "fs.write": { params: FsHandleRef, result: z.object({ ok: z.literal(true) }) },
  "fs.finishWrite": { params: FsHandleRef, result: z.object({ size: z.number().optional() }) },
  "fs.abort": { params: FsHandleRef, result: z.object({ ok: z.literal(true) }) },
  /** Stop reading a file read ahead; the bytes read so far travel as the response's attachment. */
  "fs.detachRead": { params: FsHandleRef, result: z.object({ bytes: z.number(), done: z.boolean() }) },
  /**
   * Move `count` bytes of a detached read into, or of a write out of, descriptor `fd` of the
   * process at the other end of this connection (a client's socket), by splice.
   */
  "fs.relay": {
    params: FsHandleRef.extend({ fd: z.number().int().min(0), count: z.number().int().min(1) }),
    result: z.object({ moved: z.number() }),
  },
  "fs.openWatch": { params: SandboxRef.extend({ path: z.string(), recursive: z.boolean() }), result: z.object({ handle: z.string() }) },
  "fs.watchEvents": { params: FsHandleRef.extend({ waitMs: z.number().int().min(0).max(60_000) }), result: z.object({ events: z.array(z.unknown()), done: z.boolean() }) },
  "terminal.read": {
    params: TerminalRef.extend({ offset: z.number().int().min(0), maxBytes: z.number().int().min(1).max(8 * 1024 * 1024), waitMs: z.number().int().min(0).max(60_000) }),
    result: TerminalRead,
  },
} as const;

export type RuntimeMethod = keyof typeof RuntimeMethods;
export type RuntimeParams<M extends RuntimeMethod> = z.input<(typeof RuntimeMethods)[M]["params"]>;
export type RuntimeResult<M extends RuntimeMethod> = z.output<(typeof RuntimeMethods)[M]["result"]>;
