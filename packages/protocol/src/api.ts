/**
 * Schemas of the public HTTP API (shared/design/API.md). The server validates
 * requests with them and the SDK types its calls with them.
 */
import { z } from "zod";
import { noNul } from "./validation.js";
import { parseNetworkRule } from "./network-rules.js";
import { SandboxUsage, VolumeMount } from "./api-mounts.js";
import { parseBytes, parseCpu } from "./units.js";

export const API_VERSION = "v1";
export const DEFAULT_PORT = 7878;
export const DEFAULT_HOST = "127.0.0.1";

const envMap = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"), z.string());
const metadataMap = z.record(z.string().min(1).max(128), z.string().max(1024));

export const SandboxStatus = z.enum(["provisioning", "ready", "paused", "failed", "deleted"]);
export type SandboxStatus = z.infer<typeof SandboxStatus>;

export const Resources = z.strictObject({
  cpu: z.string().refine((s) => parseCpu(s) !== undefined, "must be a CPU quantity like \"500m\" or \"2\""),
  memory: z.string().refine((s) => parseBytes(s) !== undefined, "must be a size like \"512Mi\""),
  storage: z.string().refine((s) => parseBytes(s) !== undefined, "must be a size like \"1Gi\""),
  pids: z.number().int().min(8).max(1_000_000),
});
export type Resources = z.infer<typeof Resources>;

const NetworkRuleText = z.string().superRefine((text, ctx) => {
  const rule = parseNetworkRule(text);
  if (typeof rule === "string") ctx.addIssue({ code: z.ZodIssueCode.custom, message: rule });
});

/** See network-rules.ts for the rule grammar; `deny` is checked before `allow`. */
export const NetworkPolicy = z.strictObject({
  mode: z.enum(["none", "allowlist", "open"]),
  allow: z.array(NetworkRuleText).max(1000).optional(),
  deny: z.array(NetworkRuleText).max(1000).optional(),
});
export type NetworkPolicy = z.infer<typeof NetworkPolicy>;

export const Sandbox = z.object({
  id: z.string(),
  template: z.string(),
  pool: z.string().optional(),
  status: SandboxStatus,
  statusMessage: z.string().optional(),
  createdAt: z.string(),
  expiresAt: z.string(),
  metadata: z.record(z.string(), z.string()),
  resources: Resources,
  network: NetworkPolicy,
  /** Limits the host could not enforce for this sandbox (e.g. no cgroup delegation). */
  limitsOff: z.array(z.string()).optional(),
  volumeMounts: z.array(VolumeMount).optional(),
  /** When it was paused (while status is `paused`). */
  pausedAt: z.string().optional(),
  /** Live resource use; on `GET /v1/sandboxes/:id` of a ready or paused sandbox. */
  usage: SandboxUsage.optional(),
});
export type Sandbox = z.infer<typeof Sandbox>;

export const MAX_TIMEOUT_SECONDS = 30 * 24 * 3600;
export const DEFAULT_TIMEOUT_SECONDS = 3600;

export const CreateSandboxRequest = z.strictObject({
  /** Default: the pool's template with `pool`, else "default". */
  template: z.string().min(1).max(128).optional(),
  pool: z.string().min(1).max(128).optional(),
  timeoutSeconds: z.number().int().min(1).max(MAX_TIMEOUT_SECONDS).default(DEFAULT_TIMEOUT_SECONDS),
  env: envMap.default({}),
  metadata: metadataMap.default({}),
  /** Mounted in addition to the template's (a path given in both takes this one). */
  volumeMounts: z.array(VolumeMount).max(16).optional(),
  /** Instead of the template's network policy. */
  network: NetworkPolicy.optional(),
  wait: z.boolean().default(true),
});
export type CreateSandboxRequest = z.input<typeof CreateSandboxRequest>;

export const SetTimeoutRequest = z.strictObject({
  timeoutSeconds: z.number().int().min(1).max(MAX_TIMEOUT_SECONDS),
});

export const ListSandboxesQuery = z.object({
  status: SandboxStatus.optional(),
  template: z.string().optional(),
  metadata: z.record(z.string(), z.string()).default({}),
});
export type ListSandboxesQuery = z.input<typeof ListSandboxesQuery>;

export const DEFAULT_OUTPUT_CAP_BYTES = 10 * 1024 * 1024;
export const MAX_EXEC_TIMEOUT_MS = 24 * 3600 * 1000;

export const ExecRequest = z
  .strictObject({
    command: z.string().min(1).optional(),
    argv: z.array(z.string()).min(1).optional(),
    cwd: z.string().min(1).optional(),
    env: envMap.optional(),
    timeoutMs: z.number().int().min(1).max(MAX_EXEC_TIMEOUT_MS).optional(),
    stdin: z.string().optional(),
    /** Binary stdin, base64-encoded (instead of `stdin`). */
    stdinBase64: z.base64().optional(),
    maxOutputBytes: z.number().int().min(0).max(64 * 1024 * 1024).optional(),
  })
  .refine((r) => (r.command === undefined) !== (r.argv === undefined), {
    message: "exactly one of command or argv is required",
    path: ["command"],
  })
  .refine((r) => r.stdin === undefined || r.stdinBase64 === undefined, {
    message: "give stdin or stdinBase64, not both",
    path: ["stdinBase64"],
  })
  .superRefine((r, ctx) => {
    // What becomes an exec argument, a path or an environment entry cannot hold NUL.
    const fields: Array<[string[], string | undefined]> = [
      [["command"], r.command],
      [["cwd"], r.cwd],
      ...(r.argv ?? []).map((a, i): [string[], string] => [["argv", String(i)], a]),
      ...Object.entries(r.env ?? {}).map(([k, v]): [string[], string] => [["env", k], v]),
    ];
    for (const [path, value] of fields) {
      if (value?.includes("\0")) ctx.addIssue({ code: "custom", message: "must not contain NUL bytes", path });
    }
  });
export type ExecRequest = z.input<typeof ExecRequest>;

export const ExitReason = z.enum(["timeout", "killed", "oom"]);
export type ExitReason = z.infer<typeof ExitReason>;

export const ExecResult = z.object({
  stdout: z.string(),
  stderr: z.string(),
  exitCode: z.number().int().nullable(),
  signal: z.string().optional(),
  reason: ExitReason.optional(),
  truncated: z.object({ stdout: z.boolean(), stderr: z.boolean() }),
  durationMs: z.number(),
});
export type ExecResult = z.infer<typeof ExecResult>;

export const Health = z.object({ status: z.literal("ok"), version: z.string() });

// ---------------------------------------------------------------- processes

export const PROCESS_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export const DEFAULT_PROCESS_LOG_BYTES = 16 * 1024 * 1024;

export const ProcessStatus = z.enum(["running", "exited"]);

export const ProcessInfo = z.object({
  id: z.string(),
  pid: z.number().int(),
  command: z.string().optional(),
  argv: z.array(z.string()).optional(),
  cwd: z.string(),
  sessionId: z.string().optional(),
  status: ProcessStatus,
  exitCode: z.number().int().nullable().optional(),
  signal: z.string().optional(),
  reason: ExitReason.optional(),
  startedAt: z.string(),
  endedAt: z.string().optional(),
});
export type ProcessInfo = z.infer<typeof ProcessInfo>;

export const StartProcessRequest = z
  .strictObject({
    id: z.string().regex(PROCESS_ID_PATTERN, "must be 1-64 characters of A-Z a-z 0-9 . _ -").optional(),
    command: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
    argv: z.array(z.string().refine(noNul, "must not contain NUL bytes")).min(1).optional(),
    cwd: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"), z.string().refine(noNul, "must not contain NUL bytes")).optional(),
    timeoutMs: z.number().int().min(1).max(MAX_EXEC_TIMEOUT_MS * 30).optional(),
    sessionId: z.string().optional(),
    /** Size of each stream's output log (default 16 MiB); older output is evicted past it. */
    maxLogBytes: z.number().int().min(4096).max(256 * 1024 * 1024).optional(),
  })
  .refine((r) => (r.command === undefined) !== (r.argv === undefined), {
    message: "exactly one of command or argv is required",
    path: ["command"],
  });
export type StartProcessRequest = z.input<typeof StartProcessRequest>;

export const ProcessInputRequest = z
  .strictObject({ data: z.string().optional(), dataBase64: z.base64().optional() })
  .refine((r) => (r.data === undefined) !== (r.dataBase64 === undefined), { message: "exactly one of data or dataBase64 is required", path: ["data"] });

export const SIGNAL_NAMES = [
  "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGWINCH", "SIGALRM",
] as const;
export const SignalName = z.enum(SIGNAL_NAMES);

export const KillRequest = z.strictObject({ signal: SignalName.default("SIGKILL") });

const offsetParam = z.coerce.number().int().min(0).default(0);
export const LogsQuery = z.object({ stdoutOffset: offsetParam, stderrOffset: offsetParam });
export const WaitQuery = z.object({ timeoutMs: z.coerce.number().int().min(0).max(MAX_EXEC_TIMEOUT_MS).default(30_000) });

export const Truncation = z.object({ requestedOffset: z.number(), availableOffset: z.number() });

export const ProcessLogs = z.object({
  stdout: z.string(),
  stderr: z.string(),
  /** Byte offsets just after the returned data: where to resume. */
  stdoutOffset: z.number(),
  stderrOffset: z.number(),
  truncated: z.object({ stdout: Truncation.optional(), stderr: Truncation.optional() }).optional(),
  /** More output than one answer carries already exists: ask again from the returned offsets. */
  more: z.boolean().optional(),
  status: ProcessStatus,
  exitCode: z.number().int().nullable().optional(),
  signal: z.string().optional(),
  reason: ExitReason.optional(),
});
export type ProcessLogs = z.infer<typeof ProcessLogs>;

/** Messages of the process stream WebSocket. */
export type StreamServerMessage =
  | { type: "started"; id: string; pid: number }
  | { type: "stdout" | "stderr"; data: string; offset: number; bytes: number }
  | { type: "truncated"; stream: "stdout" | "stderr"; requestedOffset: number; availableOffset: number }
  | { type: "exit"; exitCode: number | null; signal?: string; reason?: ExitReason }
  | { type: "error"; code: string; message: string };

export const StreamClientMessage = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("input"), data: z.string() }),
  z.strictObject({ type: z.literal("input_base64"), data: z.base64() }),
  z.strictObject({ type: z.literal("close_stdin") }),
  z.strictObject({ type: z.literal("kill"), signal: SignalName.optional() }),
]);
export type StreamClientMessage = z.infer<typeof StreamClientMessage>;

/** WebSocket close codes beyond the standard ones. */
export const WS_CLOSE = { NORMAL: 1000, GOING_AWAY: 1001, UNAUTHORIZED: 4401, NOT_FOUND: 4404, NOT_READY: 4409 } as const;

/** Largest WebSocket frame a client may send; bigger ones close the socket (1009). */
export const MAX_CLIENT_FRAME_BYTES = 1024 * 1024;

/**
 * The close code a stream ends with when it fails with error `code`. The runtime went away
 * (server stopping, or it died): 1001, reconnect with your offsets. The process or sandbox is
 * gone: 4404 / 4409, do not retry. Else 1011.
 */
export function closeCodeFor(code: string): number {
  if (code === "RUNTIME_UNAVAILABLE") return WS_CLOSE.GOING_AWAY;
  if (code === "NOT_FOUND" || code === "SANDBOX_NOT_FOUND") return WS_CLOSE.NOT_FOUND;
  if (code === "SANDBOX_NOT_READY") return WS_CLOSE.NOT_READY;
  return 1011;
}
