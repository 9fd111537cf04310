/**
 * Exposed ports: a sandbox's port made reachable through the server at
 * `/v1/sandboxes/:id/ports/:port/…`, guarded by the API key or the port's own token.
 * Closing the port (or deleting the sandbox) revokes the token.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { AgentboxError, type ExposedPort } from "@agentbox/protocol";
import type { SandboxService } from "./sandbox-service.js";
import type { PortRecord, Store } from "./store.js";

/** Ports one sandbox may expose at once. */
export const MAX_EXPOSED_PORTS = 32;

export function portPrefix(sandboxId: string, port: number): string {
  return `/v1/sandboxes/${encodeURIComponent(sandboxId)}/ports/${port}`;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class PortService {
  constructor(
    private readonly store: Store,
    private readonly sandboxes: SandboxService,
  ) {}

  /** Expose `port` (again: the same token); `base` is the server URL the caller used. */
  expose(sandboxId: string, port: number, base: string): ExposedPort {
    this.sandboxes.requireReady(sandboxId);
    const existing = this.store.getPort(sandboxId, port);
    if (existing) return this.describe(existing, base);
    if (this.store.listPorts(sandboxId).length >= MAX_EXPOSED_PORTS) {
      throw new AgentboxError("LIMIT_EXCEEDED", `a sandbox may expose at most ${MAX_EXPOSED_PORTS} ports; close one first`, { limit: MAX_EXPOSED_PORTS });
    }
    const record: PortRecord = { sandboxId, port, token: randomBytes(24).toString("base64url"), createdAt: new Date().toISOString() };
    this.store.putPort(record);
    return this.describe(record, base);
  }

  list(sandboxId: string, base: string): ExposedPort[] {
    this.sandboxes.get(sandboxId);
    return this.store.listPorts(sandboxId).map((r) => this.describe(r, base));
  }

  get(sandboxId: string, port: number, base: string): ExposedPort {
    return this.describe(this.record(sandboxId, port), base);
  }

  close(sandboxId: string, port: number): { port: number; closed: boolean } {
    this.sandboxes.get(sandboxId);
    return { port, closed: this.store.deletePorts(sandboxId, port) > 0 };
  }

  /** The exposed port, or NOT_FOUND (never exposed, or closed). */
  record(sandboxId: string, port: number): PortRecord {
    this.sandboxes.get(sandboxId);
    const r = this.store.getPort(sandboxId, port);
    if (!r) throw new AgentboxError("NOT_FOUND", `port ${port} of sandbox ${sandboxId} is not exposed`, { sandboxId, port });
    return r;
  }

  tokenMatches(record: PortRecord, given: string | undefined): boolean {
    return given !== undefined && sameSecret(record.token, given);
  }

  private describe(r: PortRecord, base: string): ExposedPort {
    return { port: r.port, url: `${base}${portPrefix(r.sandboxId, r.port)}/?token=${r.token}`, createdAt: r.createdAt };
  }
}
