/**
 * Schemas shared by the sandbox and template sections of the API: resource
 * names, volume mounts and live usage (kept apart so both can import them).
 */
import { z } from "zod";
import { noNul } from "./validation.js";

/** Names of templates, volumes and pools. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const ResourceName = z.string().regex(NAME_PATTERN, "must be 1-63 characters of a-z 0-9 . _ - starting with a letter or digit");

/** An absolute path inside the sandbox with no `.`/`..` segments. */
export const SandboxPath = z
  .string()
  .max(1024)
  .refine(noNul, "must not contain NUL bytes")
  .refine((s) => s.startsWith("/"), "must be an absolute path")
  .refine((s) => !s.split("/").some((seg) => seg === "." || seg === ".."), "must not contain . or .. segments");

/** Where a volume may not be mounted: the root and what the sandbox's own mounts own. */
const RESERVED_MOUNT_POINTS = ["/", "/proc", "/dev", "/sys", "/tmp", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"];

export const VolumeMount = z.strictObject({
  volume: ResourceName,
  path: SandboxPath.refine((p) => {
    const norm = p.replace(/\/+$/, "") || "/";
    return !RESERVED_MOUNT_POINTS.some((r) => norm === r || (r !== "/" && r !== "/tmp" && norm.startsWith(`${r}/`)));
  }, `must not be / or ${RESERVED_MOUNT_POINTS.slice(1).join(", ")} (or under them, except /tmp)`),
  readOnly: z.boolean().optional(),
});
export type VolumeMount = z.infer<typeof VolumeMount>;

/** Live resource use of a running or paused sandbox. */
export const SandboxUsage = z.object({
  memoryBytes: z.number(),
  cpuSeconds: z.number(),
  /** Bytes written to the sandbox's own disk (its writable layer). */
  diskBytes: z.number(),
  processes: z.number().int(),
});
export type SandboxUsage = z.infer<typeof SandboxUsage>;
