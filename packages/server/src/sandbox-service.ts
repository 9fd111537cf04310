/**
 * Sandbox lifecycle: create, look up, list, extend, delete, expire, and
 * reconcile the store with what the runtime actually holds.
 */
import { randomBytes } from "node:crypto";
import {
  AgentboxError,
  MAX_TIMEOUT_SECONDS,
  type CreateSandboxRequest,
  type ExecRequest,
  type ExecResult,
  type ListSandboxesQuery,
  type Sandbox,
  type SandboxStatus,
  type Template,
  type VolumeMount,
  type NetworkPolicy,
  type EgressLogEntry,
} from "@agentbox/protocol";
import type { RuntimeClient } from "@agentbox/runtime";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxRecord, Store } from "./store.js";
import type { EffectiveTemplate, TemplateService } from "./template-service.js";

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
  if (r.pool) s.pool = r.pool;
  if (r.volumeMounts.length > 0) s.volumeMounts = r.volumeMounts;
  if (r.pausedAt && r.status === "paused") s.pausedAt = r.pausedAt;
  return s;
}

type ParsedCreate = Required<Pick<CreateSandboxRequest, "timeoutSeconds" | "env" | "metadata" | "wait">> &
  Pick<CreateSandboxRequest, "template" | "pool" | "volumeMounts" | "network">;

/** Template mounts, then the request's: a path given by both takes the request's. */
function mergeMounts(fromTemplate: VolumeMount[], fromRequest: VolumeMount[] = []): VolumeMount[] {
  const byPath = new Map<string, VolumeMount>();
  for (const m of [...fromTemplate, ...fromRequest]) byPath.set(m.path.replace(/\/+$/, ""), m);
  return [...byPath.values()];
}

export class SandboxService {
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly runtime: RuntimeLink,
    private readonly templates: TemplateService,
    private readonly volumeExists: (name: string) => boolean,
    private readonly log: (message: string) => void,
  ) {}

  /** Create a sandbox of a template (`pool` marks one made idle for that pool). */
  async create(req: ParsedCreate, pool?: { name: string; idle: boolean }): Promise<Sandbox> {
    const template = this.templates.effective(req.template ?? "default");
    const mounts = mergeMounts(template.volumeMounts, req.volumeMounts);
    mounts.forEach((m) => {
      if (!this.volumeExists(m.volume)) throw new AgentboxError("NOT_FOUND", `volume ${m.volume} does not exist`, { field: "volumeMounts", volume: m.volume });
    });
    const now = new Date();
    const record: SandboxRecord = {
      id: newSandboxId(),
      template: template.name,
      status: "provisioning",
      statusMessage: undefined,
      createdAt: now.toISOString(),
      // Idle pool sandboxes wait without a deadline; claiming one sets it.
      expiresAt: new Date(now.getTime() + (pool?.idle ? MAX_TIMEOUT_SECONDS : req.timeoutSeconds) * 1000).toISOString(),
      metadata: req.metadata,
      env: { ...template.env, ...req.env },
      resources: template.resources,
      network: req.network ?? template.network,
      limitsOff: [],
      workdir: template.workdir,
      pool: pool?.name,
      claimed: !pool?.idle,
      volumeMounts: mounts,
      pausedAt: undefined,
    };
    this.store.insertSandbox(record);
    const provisioning = this.provision(record, template).finally(() => this.inFlight.delete(record.id));
    this.inFlight.set(record.id, provisioning);
    if (req.wait) await provisioning;
    return this.get(record.id);
  }

  private async provision(record: SandboxRecord, template: EffectiveTemplate): Promise<void> {
    try {
      const created = await this.runtime.request("sandbox.create", {
        id: record.id,
        image: template.image,
        workdir: template.workdir,
        user: template.user,
        mounts: record.volumeMounts,
        limits: template.limits,
        network: record.network,
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

  /** The sandbox with its live resource use (when it is running or paused). */
  async describe(id: string): Promise<Sandbox> {
    const r = this.record(id);
    const out = toSandbox(r);
    if (r.status === "ready" || r.status === "paused") {
      const usage = await this.runtime.request("sandbox.usage", { id }).catch(() => undefined);
      if (usage) out.usage = usage;
    }
    return out;
  }

  /** Sandboxes handed to users; with `pool`, that pool's (idle ones included). */
  list(query: ListSandboxesQuery & { pool?: string }): Sandbox[] {
    const filter: { status?: SandboxStatus; template?: string; metadata?: Record<string, string>; pool?: string; claimed?: boolean } = {};
    if (query.pool !== undefined) filter.pool = query.pool;
    else filter.claimed = true;
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
    this.store.deletePorts(id);
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

  // ---------------------------------------------------------------- lifecycle

  /** Freeze every process of a ready sandbox. Its TTL keeps running while it is paused. */
  async pause(id: string): Promise<Sandbox> {
    const r = this.record(id);
    if (r.status === "paused") throw new AgentboxError("CONFLICT", `sandbox ${id} is already paused`, { id, status: r.status });
    this.requireReady(id);
    await this.runtime.request("sandbox.pause", { id });
    this.store.setPaused(id, new Date().toISOString());
    return this.get(id);
  }

  async resume(id: string): Promise<Sandbox> {
    const r = this.record(id);
    if (r.status === "ready") throw new AgentboxError("CONFLICT", `sandbox ${id} is not paused`, { id, status: r.status });
    if (r.status !== "paused") {
      throw new AgentboxError("SANDBOX_NOT_READY", `sandbox ${id} is ${r.status}; only a paused sandbox can be resumed`, { id, status: r.status });
    }
    await this.runtime.request("sandbox.resume", { id });
    this.store.setPaused(id, undefined);
    return this.get(id);
  }

  /** Turn a ready or paused sandbox's filesystem into a new template layered on its own. */
  async snapshot(id: string, templateName: string): Promise<Template> {
    const r = this.record(id);
    if (r.status !== "paused") this.requireReady(id);
    if (this.templates.exists(templateName)) throw new AgentboxError("CONFLICT", `template ${templateName} already exists`, { template: templateName });
    const { layer } = await this.runtime.request("sandbox.snapshot", { id });
    if (this.templates.exists(templateName)) throw new AgentboxError("CONFLICT", `template ${templateName} already exists`, { template: templateName });
    return this.templates.fromSnapshot(templateName, r.template, layer);
  }

  /** New network rules for a running (or paused) sandbox: they apply to its next connections. */
  async updateNetwork(id: string, network: NetworkPolicy): Promise<Sandbox> {
    const r = this.record(id);
    if (r.status !== "paused") this.requireReady(id);
    if (network.mode !== r.network.mode) {
      throw new AgentboxError("CONFLICT", `sandbox ${id} runs with network mode "${r.network.mode}", which cannot change while it runs; only the rules of an allowlist sandbox can`, {
        field: "network.mode",
        mode: r.network.mode,
      });
    }
    await this.runtime.request("sandbox.network", { id, network });
    this.store.setNetwork(id, network);
    return this.get(id);
  }

  async networkLog(id: string, limit: number): Promise<EgressLogEntry[]> {
    const r = this.record(id);
    if (r.status !== "paused") this.requireReady(id);
    return (await this.runtime.request("sandbox.networkLog", { id, limit })).entries;
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
      if ((r.status === "ready" || r.status === "paused") && (!held || held.status === "failed")) {
        this.store.setStatus(r.id, "failed", "lost: the runtime holding this sandbox stopped");
      } else if ((r.status === "ready" || r.status === "paused") && held && held.status !== r.status) {
        this.store.setPaused(r.id, held.status === "paused" ? new Date().toISOString() : undefined);
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
