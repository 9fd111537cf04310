/** Schemas of the Network and ports section of the API (shared/design/API.md). */
import { z } from "zod";
import { NetworkPolicy } from "./api.js";

/** `PATCH /v1/sandboxes/:id`: new rules apply to the sandbox's next connections. */
export const UpdateSandboxRequest = z.strictObject({
  network: NetworkPolicy,
});
export type UpdateSandboxRequest = z.infer<typeof UpdateSandboxRequest>;

/** One connection a sandbox asked its egress proxy for (allowed or not). */
export const EgressLogEntry = z.object({
  time: z.string(),
  host: z.string(),
  port: z.number(),
  allowed: z.boolean(),
  reason: z.string().optional(),
  /** The address connected to (allowed connections). */
  address: z.string().optional(),
  /** `http` (a proxied request), `connect` (an HTTP CONNECT tunnel) or `socks`. */
  protocol: z.enum(["http", "connect", "socks"]),
  bytesOut: z.number(),
  bytesIn: z.number(),
});
export type EgressLogEntry = z.infer<typeof EgressLogEntry>;

export const NetworkLogQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
});

export const MAX_PORT = 65535;
export const ExposePortRequest = z.strictObject({
  port: z.number().int().min(1).max(MAX_PORT),
});
export type ExposePortRequest = z.infer<typeof ExposePortRequest>;

export const ExposedPort = z.object({
  port: z.number(),
  /** Reaches the port (HTTP and WebSocket) with no other credential: it embeds the port's token. */
  url: z.string(),
  createdAt: z.string(),
});
export type ExposedPort = z.infer<typeof ExposedPort>;
