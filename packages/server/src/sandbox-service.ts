/**
 * Sandbox lifecycle: create, look up, list, extend, delete, expire, and
 * reconcile the store with what the runtime actually holds.
 */
import { randomBytes } from "node:crypto";
import {
  AgentboxError,
  parseBytes,
  parseCpu,
  type CreateSandboxRequest,
  type ExecRequest,
  type ExecResult,
  type ListSandboxesQuery,
  type Sandbox,
  type SandboxStatus,
} from "@agentbox/protocol";
import type { RuntimeClient } from "@agentbox/runtime";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxRecord, Store } from "./store.js";
import { findTemplate, type Template } from "./templates.js";

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

function newSandboxId(): string {
  const bytes = randomBytes(12);
  let id = "sb-";
  for (const b of bytes) id += ID_ALPHABET[b % ID_ALPHABET.length];
  return id;
}

export function toSandbox(r: SandboxRecord): Sandbox {
  const s: Sandbox = {
    id: r.id,
    template: r.template,
    status: r.status,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    metadata: r.metadata,
    resources: r.resources,
    network: r.network,
  };
  if (r.statusMessage) s.statusMessage = r.statusMessage;
  if (r.limitsOff.length > 0) s.limitsOff = r.limitsOff;
  return s;
}

type ParsedCreate = Required<Pick<CreateSandboxRequest, "template" | "timeoutSeconds" | "env" | "metadata" | "wait">> &
  Pick<CreateSandboxRequest, "pool" | "volumeMounts">;

export class SandboxService {
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly runtime: RuntimeLink,
    private readonly log: (message: string) => void,
  ) {}

  async create(req: ParsedCreate): Promise<Sandbox> {
    if (req.pool !== undefined) throw new AgentboxError("NOT_FOUND", `pool ${req.pool} does not exist`, { field: "pool" });
    if (req.volumeMounts?.length) throw new AgentboxError("NOT_FOUND", `volume ${req.volumeMounts[0]!.volume} does not exist`, { field: "volumeMounts" });
    const template = findTemplate(req.template);
    if (!template) throw new AgentboxError("NOT_FOUND", `template ${req.template} does not exist`, { field: "template" });
    const now = new Date();
    const record: SandboxRecord = {
      id: newSandboxId(),
      template: template.name,
      status: "provisioning",
      statusMessage: undefined,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + req.timeoutSeconds * 1000).toISOString(),
      metadata: req.metadata,
      env: { ...template.env, ...req.env },
      resources: template.resources,
      network: template.network,
      limitsOff: [],
      workdir: template.workdir,
    };
    this.store.insertSandbox(record);
    const provisioning = this.provision(record, template).finally(() => this.inFlight.delete(record.id));
    this.inFlight.set(record.id, provisioning);
    if (req.wait) await provisioning;
    return this.get(record.id);
  }

  private async provision(record: SandboxRecord, template: Template): Promise<void> {
    try {
      const created = await this.runtime.request("sandbox.create", {
        id: record.id,
        image: template.image,
        workdir: template.workdir,
        limits: {
          memoryBytes: parseBytes(template.resources.memory)!,
          cpu: parseCpu(template.resources.cpu)!,
          pids: template.resources.pids,
          storageBytes: parseBytes(template.resources.storage)!,
        },
      });
      // A delete that arrived while we were provisioning wins.
      if (this.store.getSandbox(record.id)?.status !== "provisioning") {
        await this.runtime.request("sandbox.delete", { id: record.id }).catch(() => undefined);
        return;
      }
      const off = created.limitsOff;
      const message = off.length > 0 ? `limits not enforced on this host: ${off.join(", ")}` : undefined;
      this.store.setStatus(record.id, "ready", message, off);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.log(`sandbox ${record.id} failed to start: ${message}`);
      if (this.store.getSandbox(record.id)?.status === "provisioning") this.store.setStatus(record.id, "failed", message);
      await this.runtime.request("sandbox.delete", { id: record.id }).catch(() => undefined);
    }
  }

  private record(id: string): SandboxRecord {
    const r = this.store.getSandbox(id);
    if (!r) throw new AgentboxError("SANDBOX_NOT_FOUND", `sandbox ${id} does not exist`, { id });
    return r;
  }

  get(id: string): Sandbox {
    return toSandbox(this.record(id));
  }

  list(query: ListSandboxesQuery): Sandbox[] {
    const filter: { status?: SandboxStatus; template?: string; metadata?: Record<string, string> } = {};
    if (query.status) filter.status = query.status;
    if (query.template) filter.template = query.template;
    if (query.metadata) filter.metadata = query.metadata;
    return this.store.listSandboxes(filter).map(toSandbox);
  }

  setTimeout(id: string, timeoutSeconds: number): Sandbox {
    const r = this.record(id);
    if (r.status === "deleted") throw new AgentboxError("SANDBOX_NOT_READY", `sandbox ${id} is deleted`, { id, status: r.status });
    this.store.setExpiry(id, new Date(Date.now() + timeoutSeconds * 1000).toISOString());
    return this.get(id);
  }

  async delete(id: string, why = "deleted"): Promise<Sandbox> {
    const r = this.record(id);
    if (r.status === "deleted") return toSandbox(r);
    this.store.setStatus(id, "deleted", why === "deleted" ? undefined : why);
    await this.inFlight.get(id);
    await this.runtime.request("sandbox.delete", { id });
    return this.get(id);
  }

  /** The sandbox's record, if it is ready to run commands; SANDBOX_NOT_FOUND / SANDBOX_NOT_READY otherwise. */
  requireReady(id: string): SandboxRecord {
    const r = this.record(id);
    if (r.status !== "ready") {
      throw new AgentboxError("SANDBOX_NOT_READY", `sandbox ${id} is ${r.status}${r.statusMessage ? `: ${r.statusMessage}` : ""}`, {
        id,
        status: r.status,
      });
    }
    return r;
  }

  async exec(id: string, request: ExecRequest): Promise<ExecResult> {
    const r = this.requireReady(id);
    return this.runtime.request("sandbox.exec", { sandboxId: id, request, env: r.env, defaultCwd: r.workdir });
  }

  /** Delete every sandbox whose TTL has passed. */
  async reap(now = new Date()): Promise<number> {
    const expired = this.store.expired(now.toISOString());
    for (const r of expired) {
      await this.delete(r.id, "expired: its timeout passed").catch((err: Error) => this.log(`reaper: ${r.id}: ${err.message}`));
    }
    this.store.purgeDeleted(new Date(now.getTime() - 24 * 3600 * 1000).toISOString());
    return expired.length;
  }

  /**
   * After (re)connecting to a runtime: sandboxes the store thinks are alive but the
   * runtime does not hold are failed; sandboxes the runtime holds that the store
   * does not want are removed.
   */
  async reconcile(client: RuntimeClient): Promise<void> {
    const live = new Map((await client.request("sandbox.list", {})).map((s) => [s.id, s]));
    for (const r of this.store.listSandboxes()) {
      if (this.inFlight.has(r.id)) continue;
      const held = live.get(r.id);
      if (r.status === "ready" && (!held || held.status !== "ready")) {
        this.store.setStatus(r.id, "failed", "lost: the runtime holding this sandbox stopped");
      } else if (r.status === "provisioning") {
        if (held?.status === "ready") this.store.setStatus(r.id, "ready", undefined, held.limitsOff);
        else this.store.setStatus(r.id, "failed", "lost: the server stopped while the sandbox was being created");
      }
    }
    for (const id of live.keys()) {
      const r = this.store.getSandbox(id);
      if (!r || r.status === "deleted" || r.status === "failed") {
        await client.request("sandbox.delete", { id }).catch(() => undefined);
      }
    }
  }

  counts(): Record<string, number> {
    return this.store.countByStatus();
  }
}
