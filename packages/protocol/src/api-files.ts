/**
 * Schemas of the Files section of the public API (shared/design/API.md).
 * Paths are resolved as a process in the sandbox sees them; relative ones are
 * relative to the workdir (`/workspace`).
 */
import { z } from "zod";

const path = z.string().min(1, "must not be empty").refine((s) => !s.includes("\0"), "must not contain NUL bytes");
const flag = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

export const FileEntry = z.object({
  name: z.string(),
  path: z.string(),
  type: z.enum(["file", "dir", "symlink", "other"]),
  size: z.number(),
  /** Permission bits (e.g. 420 = 0o644). */
  mode: z.number().int(),
  mtime: z.string(),
  symlinkTarget: z.string().optional(),
});
export type FileEntry = z.infer<typeof FileEntry>;

export const PathQuery = z.object({ path });
export const ReadFileQuery = PathQuery;
export const WriteFileQuery = z.object({
  path,
  /** Octal permission bits, e.g. "644" or "0755" (default 644). */
  mode: z
    .string()
    .regex(/^0?[0-7]{3,4}$/, "must be octal permission bits like 644 or 0755")
    .transform((m) => parseInt(m, 8))
    .optional(),
});
export const ListQuery = z.object({ path, depth: z.coerce.number().int().min(1).max(64).default(1) });
export const DeleteQuery = z.object({ path, recursive: flag.default(false) });
export const WatchQuery = z.object({ path, recursive: flag.default(true) });

export const MkdirRequest = z.strictObject({ path, recursive: z.boolean().optional() });
export const MoveRequest = z.strictObject({ from: path, to: path });

/** A change under a watched directory, or word that some were lost. */
export type WatchEvent = { type: "create" | "modify" | "delete" | "rename"; path: string; entry?: FileEntry } | { type: "overflow" };

/** Messages of the watch WebSocket. */
export type WatchMessage =
  /** Sent once, first: the watcher runs in the sandbox, so every later change is reported. */
  | { type: "ready" }
  | WatchEvent
  | { type: "error"; code: string; message: string };
