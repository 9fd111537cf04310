/**
 * Schemas of sessions (opt-in persistent shells) and terminals (PTYs) in the
 * public API (shared/design/API.md, "Sessions" and "Terminals").
 */
import { z } from "zod";
import { noNul } from "./validation.js";
import { MAX_EXEC_TIMEOUT_MS, PROCESS_ID_PATTERN } from "./api.js";

const envMap = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"),
  z.string().refine(noNul, "must not contain NUL bytes"),
);
const idField = z.string().regex(PROCESS_ID_PATTERN, "must be 1-64 characters of A-Z a-z 0-9 . _ -");

// ---------------------------------------------------------------- sessions

export const CreateSessionRequest = z.strictObject({
  id: idField.optional(),
  cwd: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
  env: envMap.optional(),
  /** Default timeout of each exec in the session (a call's own timeoutMs wins). */
  timeoutMs: z.number().int().min(1).max(MAX_EXEC_TIMEOUT_MS).optional(),
});
export type CreateSessionRequest = z.input<typeof CreateSessionRequest>;

export const SessionStatus = z.enum(["idle", "busy", "terminated"]);

export const SessionInfo = z.object({
  id: z.string(),
  /** The shell's working directory after the last command. */
  cwd: z.string(),
  status: SessionStatus,
  timeoutMs: z.number().int().optional(),
  createdAt: z.string(),
  /** Once terminated: why, and the shell's exit code when it exited by itself. */
  terminatedReason: z.enum(["exit", "timeout", "killed", "deleted"]).optional(),
  exitCode: z.number().int().nullable().optional(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

// ---------------------------------------------------------------- terminals

export const MAX_TERMINAL_COLS = 1000;
export const MAX_TERMINAL_ROWS = 500;
/** Recent output kept per terminal and replayed to each client that attaches. */
export const TERMINAL_REPLAY_BYTES = 1024 * 1024;

const cols = z.number().int().min(1).max(MAX_TERMINAL_COLS);
const rows = z.number().int().min(1).max(MAX_TERMINAL_ROWS);

export const CreateTerminalRequest = z.strictObject({
  id: idField.optional(),
  cols: cols.default(80),
  rows: rows.default(24),
  cwd: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
  env: envMap.optional(),
  /** Run this (with /bin/sh -c) instead of a login shell. */
  command: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
});
export type CreateTerminalRequest = z.input<typeof CreateTerminalRequest>;

export const TerminalInfo = z.object({
  id: z.string(),
  /** Pid of the terminal's first process inside the sandbox. */
  pid: z.number().int(),
  cols: z.number().int(),
  rows: z.number().int(),
  command: z.string().optional(),
  cwd: z.string(),
  status: z.enum(["running", "exited"]),
  exitCode: z.number().int().nullable().optional(),
  signal: z.string().optional(),
  createdAt: z.string(),
});
export type TerminalInfo = z.infer<typeof TerminalInfo>;

/** Text frames from a terminal client; binary frames are raw input bytes. */
export const TerminalClientMessage = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("resize"), cols, rows }),
]);
export type TerminalClientMessage = z.infer<typeof TerminalClientMessage>;

/** Text frames to a terminal client; binary frames are raw output bytes. */
export type TerminalServerMessage =
  | { type: "exit"; exitCode: number | null; signal?: string }
  | { type: "error"; code: string; message: string };
