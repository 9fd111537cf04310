/**
 * Warm pools: each keeps `replicas` idle, ready sandboxes of its template.
 * A claim hands one over with a single store update and the pool refills in
 * the background. A template that keeps failing makes the pool back off
 * (exponentially, up to a minute) and say why, instead of retrying in a storm.
 * Idle sandboxes are ordinary sandboxes in the store and the runtime, so
 * they survive a server restart like any other.
 */
import {
  AgentboxError,
  type CreatePoolRequest,
  type CreateSandboxRequest,
  type PatchPoolRequest,
  type Pool,
  type Sandbox,
} from "@agentbox/protocol";
import { toSandbox, type SandboxService } from "./sandbox-service.js";
import type { PoolRecord, Store } from "./store.js";
import type { TemplateService } from "./template-service.js";

/** Creates a pool may have in flight at once (they compete with users' creates for the disk). */
const MAX_CONCURRENT_CREATES = 2;
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** How often pools are checked even when nothing asked (a failed sandbox, an expired backoff). */
const RECONCILE_INTERVAL_MS = 1000;

interface PoolState {
  inFlight: number;
  failures: number;
  lastError: string | undefined;
  retryAt: number;
}

type ParsedClaim = Required<Pick<CreateSandboxRequest, "timeoutSeconds" | "env" | "metadata">> & Pick<CreateSandboxRequest, "template" | "volumeMounts" | "network"> & { pool: string };

export class PoolService {
  private readonly state = new Map<string, PoolState>();
  private timer: NodeJS.Timeout | undefined;
  private reconciling = false;
  private again = false;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly templates: TemplateService,
    private readonly sandboxes: SandboxService,
    private readonly log: (message: string) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.kick(), RECONCILE_INTERVAL_MS);
    this.timer.unref();
    this.kick();
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  private stateOf(name: string): PoolState {
    let s = this.state.get(name);
    if (!s) this.state.set(name, (s = { inFlight: 0, failures: 0, lastError: undefined, retryAt: 0 }));
    return s;
  }

  private record(name: string): PoolRecord {
    const p = this.store.getPool(name);
    if (!p) throw new AgentboxError("NOT_FOUND", `pool ${name} does not exist`, { pool: name });
    return p;
  }

  private view(p: PoolRecord): Pool {
    const idle = this.store.listSandboxes({ pool: p.name, claimed: false });
    const ready = idle.filter((s) => s.status === "ready").length;
    const provisioning = idle.filter((s) => s.status === "provisioning").length;
    const st = this.stateOf(p.name);
    const backingOff = st.failures > 0 && st.retryAt > Date.now();
    const out: Pool = {
      name: p.name,
      template: p.template,
      replicas: p.replicas,
      ready,
      provisioning,
      failed: st.failures,
      status: backingOff ? "backoff" : ready === p.replicas && provisioning === 0 ? "ready" : "scaling",
      createdAt: p.createdAt,
    };
    if (st.failures > 0 && st.lastError) {
      out.statusMessage = `${st.failures} create(s) in a row failed; last: ${st.lastError}`;
      if (backingOff) out.retryAt = new Date(st.retryAt).toISOString();
    }
    return out;
  }

  create(req: CreatePoolRequest): Pool {
    if (this.store.getPool(req.name)) throw new AgentboxError("CONFLICT", `pool ${req.name} already exists`, { pool: req.name });
    if (!this.templates.exists(req.template)) throw new AgentboxError("NOT_FOUND", `template: template ${req.template} does not exist`, { field: "template" });
    const record: PoolRecord = { name: req.name, template: req.template, replicas: req.replicas, createdAt: new Date().toISOString() };
    this.store.putPool(record);
    this.kick();
    return this.view(record);
  }

  get(name: string): Pool {
    return this.view(this.record(name));
  }

  list(): Pool[] {
    return this.store.listPools().map((p) => this.view(p));
  }

  patch(name: string, req: PatchPoolRequest): Pool {
    const p = this.record(name);
    if (req.template !== undefined && !this.templates.exists(req.template)) {
      throw new AgentboxError("NOT_FOUND", `template: template ${req.template} does not exist`, { field: "template" });
    }
    const next = { ...p, ...(req.replicas !== undefined ? { replicas: req.replicas } : {}), ...(req.template !== undefined ? { template: req.template } : {}) };
    this.store.putPool(next);
    if (req.template !== undefined && req.template !== p.template) this.state.delete(name);
    this.kick();
    return this.view(next);
  }

  /** Delete the pool and its idle sandboxes; claimed ones are the users' and stay. */
  async delete(name: string): Promise<void> {
    this.record(name);
    this.store.deletePool(name);
    this.state.delete(name);
    for (const s of this.store.listSandboxes({ pool: name, claimed: false })) await this.sandboxes.delete(s.id, "its pool was deleted").catch(() => undefined);
  }

  /** Pools that make sandboxes of `template`. */
  usingTemplate(template: string): string[] {
    return this.store.listPools().filter((p) => p.template === template).map((p) => p.name);
  }

  /** Hand over an idle sandbox at once; with none idle, create one (and the pool catches up). */
  async claim(req: ParsedClaim): Promise<Sandbox> {
    const pool = this.record(req.pool);
    if (req.template !== undefined && req.template !== pool.template) {
      throw new AgentboxError("INVALID_REQUEST", `template: pool ${pool.name} makes sandboxes of template ${pool.template}, not ${req.template}`, { field: "template" });
    }
    if (req.network !== undefined) {
      throw new AgentboxError("INVALID_REQUEST", "network: a pool's sandboxes are made ahead of time with their template's network; PATCH the sandbox's rules after claiming it", { field: "network" });
    }
    if (req.volumeMounts?.length) {
      throw new AgentboxError("INVALID_REQUEST", "volumeMounts: a pool's sandboxes are made ahead of time; mount volumes through the pool's template", { field: "volumeMounts" });
    }
    const expiresAt = new Date(Date.now() + req.timeoutSeconds * 1000).toISOString();
    const claimed = this.store.claimFromPool(pool.name, { expiresAt, metadata: req.metadata, env: req.env });
    this.kick();
    if (claimed) return toSandbox(claimed);
    return this.sandboxes.create(
      { template: pool.template, timeoutSeconds: req.timeoutSeconds, env: req.env, metadata: req.metadata, wait: true },
      { name: pool.name, idle: false },
    );
  }

  /** Ask for a reconcile pass soon (coalesced). */
  kick(): void {
    if (this.closed) return;
    if (this.reconciling) {
      this.again = true;
      return;
    }
    this.reconciling = true;
    setImmediate(() => {
      void this.reconcile()
        .catch((err: Error) => this.log(`pools: ${err.message}`))
        .finally(() => {
          this.reconciling = false;
          if (this.again) {
            this.again = false;
            this.kick();
          }
        });
    });
  }

  private async reconcile(): Promise<void> {
    for (const pool of this.store.listPools()) {
      const st = this.stateOf(pool.name);
      const idle = this.store.listSandboxes({ pool: pool.name, claimed: false });
      // Failed ones and ones of a template the pool no longer uses go away.
      for (const s of idle) {
        if (s.status === "failed" || (s.template !== pool.template && s.status !== "deleted")) {
          await this.sandboxes.delete(s.id, s.status === "failed" ? "failed while idle in its pool" : "its pool changed template").catch(() => undefined);
        }
      }
      const live = this.store.listSandboxes({ pool: pool.name, claimed: false }).filter((s) => s.status === "ready" || s.status === "provisioning");
      const surplus = live.length - pool.replicas;
      if (surplus > 0) {
        // Scale down: provisioning ones first (they are not yet useful), then the newest ready ones.
        const order = [...live].sort((a, b) => (a.status === b.status ? b.createdAt.localeCompare(a.createdAt) : a.status === "provisioning" ? -1 : 1));
        for (const s of order.slice(0, surplus)) await this.sandboxes.delete(s.id, "its pool scaled down").catch(() => undefined);
        continue;
      }
      // `live` already counts our creates in flight (they are provisioning in the store).
      const missing = Math.min(-surplus, MAX_CONCURRENT_CREATES - st.inFlight);
      if (missing <= 0 || Date.now() < st.retryAt) continue;
      // A template still importing its image is not a failure: wait for it.
      if (this.templates.statusOf(pool.template) === "provisioning") continue;
      for (let i = 0; i < missing; i++) void this.createOne(pool, st);
    }
  }

  private async createOne(pool: PoolRecord, st: PoolState): Promise<void> {
    st.inFlight++;
    let error: string | undefined;
    try {
      const sb = await this.sandboxes.create({ template: pool.template, timeoutSeconds: 1, env: {}, metadata: {}, wait: true }, { name: pool.name, idle: true });
      if (sb.status === "failed") error = sb.statusMessage ?? "the sandbox failed to start";
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    } finally {
      st.inFlight--;
    }
    if (this.state.get(pool.name) !== st) return; // the pool was deleted or re-templated meanwhile
    if (error === undefined) {
      st.failures = 0;
      st.lastError = undefined;
      st.retryAt = 0;
    } else {
      st.failures++;
      st.lastError = error;
      st.retryAt = Date.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (st.failures - 1));
      this.log(`pool ${pool.name}: create failed (${st.failures} in a row, next try in ${Math.round((st.retryAt - Date.now()) / 1000)} s): ${error}`);
    }
    this.kick();
  }
}
