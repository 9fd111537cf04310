/**
 * Schemas of the Templates, volumes, pools section of the public API and of
 * the sandbox lifecycle calls (pause, resume, snapshot, live usage).
 */
import { z } from "zod";
import { noNul } from "./validation.js";
import { NetworkPolicy, Resources } from "./api.js";
import { ResourceName, SandboxPath, VolumeMount } from "./api-mounts.js";
import { parseBytes, parseCpu } from "./units.js";

export const ImageRef = z
  .string()
  .min(1)
  .max(4096)
  .refine(noNul, "must not contain NUL bytes")
  .refine((s) => s === "host" || /^(dir|oci):\//.test(s), 'must be "host", "dir:<absolute path>" or "oci:<absolute path>"');

/** Smallest values that leave a sandbox able to start a shell. */
const MIN_MEMORY_BYTES = 16 * 2 ** 20;
const MIN_STORAGE_BYTES = 8 * 2 ** 20;

/** Resources as a request gives them: every field optional, each parsed strictly. */
export const ResourcesInput = z.strictObject({
  cpu: z
    .string()
    .refine((s) => parseCpu(s) !== undefined, 'must be a CPU quantity like "500m" or "2"')
    .refine((s) => (parseCpu(s) ?? 0) >= 0.01, 'must be at least "10m"')
    .optional(),
  memory: z
    .string()
    .refine((s) => parseBytes(s) !== undefined, 'must be a size like "512Mi" (units Ki Mi Gi Ti, or k M G T)')
    .refine((s) => (parseBytes(s) ?? 0) >= MIN_MEMORY_BYTES, 'must be at least "16Mi"')
    .optional(),
  storage: z
    .string()
    .refine((s) => parseBytes(s) !== undefined, 'must be a size like "1Gi" (units Ki Mi Gi Ti, or k M G T)')
    .refine((s) => (parseBytes(s) ?? 0) >= MIN_STORAGE_BYTES, 'must be at least "8Mi"')
    .optional(),
  pids: z.number().int().min(8).max(1_000_000).optional(),
});

const envMap = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"),
  z.string().refine(noNul, "must not contain NUL bytes"),
);

/** A user name or numeric uid inside the sandbox; never root (sandboxes run unprivileged). */
const UserName = z
  .string()
  .regex(/^([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,9})$/, "must be a user name or a numeric uid")
  .refine((u) => u !== "root" && Number(u) !== 0, "sandboxes never run as root: give an unprivileged user");

export const TemplateStatus = z.enum(["provisioning", "ready", "failed"]);
export type TemplateStatus = z.infer<typeof TemplateStatus>;

export const ImportProgress = z.object({
  layersDone: z.number(),
  layersTotal: z.number(),
  bytesDone: z.number(),
  bytesTotal: z.number(),
});
export type ImportProgress = z.infer<typeof ImportProgress>;

export const Template = z.object({
  name: z.string(),
  image: z.string(),
  resources: Resources,
  volumeMounts: z.array(VolumeMount),
  env: z.record(z.string(), z.string()),
  network: NetworkPolicy,
  user: z.string(),
  workdir: z.string(),
  status: TemplateStatus,
  statusMessage: z.string().optional(),
  /** For a snapshot: the template it was layered on. */
  parent: z.string().optional(),
  /** Filesystem layers under the sandbox's own (image layers, then snapshot layers). */
  layers: z.number().int(),
  /** While an image is imported. */
  progress: ImportProgress.optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type Template = z.infer<typeof Template>;

export const CreateTemplateRequest = z.strictObject({
  name: ResourceName,
  image: ImageRef.default("host"),
  resources: ResourcesInput.default({}),
  volumeMounts: z.array(VolumeMount).max(16).default([]),
  env: envMap.default({}),
  network: NetworkPolicy.optional(),
  /** Default: the image's configured user if it is unprivileged, else `user`. */
  user: UserName.optional(),
  /** Default: the image's WorkingDir, else `/workspace`. */
  workdir: SandboxPath.optional(),
  /** Answer once the image is imported (ready or failed); false: at once, while provisioning. */
  wait: z.boolean().default(true),
});
export type CreateTemplateRequest = z.input<typeof CreateTemplateRequest>;

export const PatchTemplateRequest = z.strictObject({
  image: ImageRef.optional(),
  resources: ResourcesInput.optional(),
  volumeMounts: z.array(VolumeMount).max(16).optional(),
  env: envMap.optional(),
  network: NetworkPolicy.optional(),
  user: UserName.optional(),
  workdir: SandboxPath.optional(),
  wait: z.boolean().default(true),
});
export type PatchTemplateRequest = z.input<typeof PatchTemplateRequest>;

export const VolumeStatus = z.enum(["ready", "failed"]);

export const Volume = z.object({
  name: z.string(),
  size: z.string(),
  status: VolumeStatus,
  statusMessage: z.string().optional(),
  usedBytes: z.number(),
  /** Live sandboxes that mount it. */
  mountedBy: z.array(z.string()),
  createdAt: z.string(),
});
export type Volume = z.infer<typeof Volume>;

export const MAX_VOLUME_BYTES = 2 ** 40;

export const CreateVolumeRequest = z.strictObject({
  name: ResourceName,
  size: z
    .string()
    .refine((s) => parseBytes(s) !== undefined, 'must be a size like "1Gi" (units Ki Mi Gi Ti, or k M G T)')
    .refine((s) => (parseBytes(s) ?? 0) >= 16 * 2 ** 20, 'must be at least "16Mi"')
    .refine((s) => (parseBytes(s) ?? 0) <= MAX_VOLUME_BYTES, 'must be at most "1Ti"')
    .default("1Gi"),
});
export type CreateVolumeRequest = z.input<typeof CreateVolumeRequest>;

export const MAX_POOL_REPLICAS = 256;

export const Pool = z.object({
  name: z.string(),
  template: z.string(),
  replicas: z.number().int(),
  /** Idle sandboxes ready to be claimed. */
  ready: z.number().int(),
  provisioning: z.number().int(),
  /** Creates that failed in a row (reset by the next success); while > 0 the pool backs off. */
  failed: z.number().int(),
  status: z.enum(["ready", "scaling", "backoff"]),
  statusMessage: z.string().optional(),
  /** When the next attempt is due while backing off. */
  retryAt: z.string().optional(),
  createdAt: z.string(),
});
export type Pool = z.infer<typeof Pool>;

export const CreatePoolRequest = z.strictObject({
  name: ResourceName,
  template: ResourceName,
  replicas: z.number().int().min(0).max(MAX_POOL_REPLICAS),
});
export type CreatePoolRequest = z.input<typeof CreatePoolRequest>;

export const PatchPoolRequest = z.strictObject({
  replicas: z.number().int().min(0).max(MAX_POOL_REPLICAS).optional(),
  template: ResourceName.optional(),
});
export type PatchPoolRequest = z.input<typeof PatchPoolRequest>;

export const SnapshotRequest = z.strictObject({ template: ResourceName });

