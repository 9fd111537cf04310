/**
 * The runtime's live sandboxes: creation (with a unique unprivileged host uid
 * each), lookup, deletion, and clean-up of what a crashed runtime left behind.
 */
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import {
  AgentboxError,
  type CreateSandboxParams,
  type ExecParams,
  type ExecResult,
  type ProcessInfo,
  type RuntimeSandbox,
  type StartProcessParams,
} from "@agentbox/protocol";
import {
  LocalSandbox,
  Spawner,
  checkHost,
  detectCgroups,
  ensureHostImage,
  prepareLayers,
  rootfsPaths,
  unmountRootfs,
  type CgroupDriver,
  type HostCheck,
  type HostImage,
} from "@agentbox/isolation";
import { runExec } from "./exec-runner.js";
import { ProcessSupervisor } from "./process-supervisor.js";
import { SessionRegistry } from "./sessions.js";
import { FileService } from "./files.js";
import { TerminalRegistry } from "./terminals.js";

/** Sandbox users map to host uids from here up, one per live sandbox. */
export const HOST_UID_BASE = 2_000_000;
/** Disk size of the layers prepared ahead of time: the default template's storage (1Gi). */
export const SPARE_DISK_BYTES = 1024 ** 3;
/** Layers prepared ahead of time for the next sandboxes (see prepareLayers). */
const SPARE_LAYERS = 8;
/** Root filesystems are mounted below here (see rootfsPaths for why not in the data dir). */
const MOUNTS_ROOT = "/run/agentbox";

interface Entry {
  sandbox: LocalSandbox;
  processes: ProcessSupervisor;
  sessions: SessionRegistry;
  terminals: TerminalRegistry;
  files: FileService;
  slot: number;
  createdAt: string;
  workdir: string;
}

export class SandboxManager {
  private readonly sandboxes = new Map<string, Entry>();
  private readonly creating = new Map<string, Promise<RuntimeSandbox>>();
  private readonly usedSlots = new Set<number>();
  private readonly cgroups: CgroupDriver;
  private readonly cgroupPrefix: string;
  private readonly sandboxesDir: string;
  private readonly mountsDir: string;
  private image: HostImage | undefined;
  private host: HostCheck | undefined;
  private readonly spawner = new Spawner();
  private readonly spareSlots: number[] = [];
  private refilling: Promise<void> | undefined;

  constructor(private readonly dataDir: string, cgroups?: CgroupDriver) {
    this.cgroups = cgroups ?? detectCgroups();
    const instance = createHash("sha256").update(dataDir).digest("hex").slice(0, 12);
    this.cgroupPrefix = `agentbox/${instance}`;
    this.sandboxesDir = join(dataDir, "sandboxes");
    this.mountsDir = join(MOUNTS_ROOT, instance);
  }

  get cgroupKind(): string {
    return this.cgroups.kind;
  }

  get size(): number {
    return this.sandboxes.size;
  }

  /** Remove layers and cgroups of sandboxes whose holders died with an earlier runtime. */
  /** Start the process spawner and remove what a crashed runtime left behind. */
  async start(): Promise<void> {
    this.spawner.start();
    await this.cleanupStale();
    await this.refillSpares();
  }

  /** Keep SPARE_LAYERS slots with prepared, empty layers ready for the next creates. */
  private refillSpares(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    this.refilling ??= (async () => {
      try {
        while (this.spareSlots.length < SPARE_LAYERS) {
          const slot = this.allocateSlot();
          try {
            await prepareLayers(this.slotPaths(slot), HOST_UID_BASE + slot, [], SPARE_DISK_BYTES);
            this.spareSlots.push(slot);
          } catch {
            await unmountRootfs(this.slotPaths(slot));
            this.usedSlots.delete(slot);
            return;
          }
        }
      } finally {
        this.refilling = undefined;
      }
    })();
    return this.refilling;
  }

  private quietTimer: NodeJS.Timeout | undefined;
  private stopping = false;

  /**
   * Refill after a create has been answered, never during one (the disk work would slow
   * it down). Half-full or better: wait until creates pause; lower: refill at once, or a
   * burst of creates would end up preparing layers on its critical path.
   */
  private refillWhenQuiet(): void {
    if (this.quietTimer) clearTimeout(this.quietTimer);
    const low = this.spareSlots.length < SPARE_LAYERS / 2;
    this.quietTimer = setTimeout(() => void this.refillSpares(), low ? 1 : 50);
    this.quietTimer.unref();
  }

  /** A slot with empty layers on a disk of `storageBytes`: a spare one if it has that size. */
  private async takeSlot(storageBytes: number): Promise<number> {
    const spare = storageBytes === SPARE_DISK_BYTES ? this.spareSlots.shift() : undefined;
    if (spare !== undefined) return spare;
    const slot = this.allocateSlot();
    try {
      await prepareLayers(this.slotPaths(slot), HOST_UID_BASE + slot, [], storageBytes);
    } catch (err) {
      await unmountRootfs(this.slotPaths(slot));
      this.usedSlots.delete(slot);
      throw err;
    }
    return slot;
  }

  async cleanupStale(): Promise<void> {
    mkdirSync(this.sandboxesDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.mountsDir, { recursive: true, mode: 0o711 });
    chmodSync(MOUNTS_ROOT, 0o711);
    chmodSync(this.mountsDir, 0o711);
    for (const path of this.cgroups.list(this.cgroupPrefix)) {
      const group = this.cgroups.open(path);
      await group.kill();
      group.remove();
    }
    const names = new Set([...readdirSync(this.sandboxesDir), ...readdirSync(this.mountsDir)]);
    for (const name of names) await unmountRootfs(rootfsPaths(join(this.sandboxesDir, name), join(this.mountsDir, name)));
  }

  async create(params: CreateSandboxParams): Promise<RuntimeSandbox> {
    const existing = this.sandboxes.get(params.id);
    if (existing) return this.describe(params.id, existing);
    const pending = this.creating.get(params.id);
    if (pending) return pending;
    const promise = this.doCreate(params).finally(() => this.creating.delete(params.id));
    this.creating.set(params.id, promise);
    return promise;
  }

  private async doCreate(params: CreateSandboxParams): Promise<RuntimeSandbox> {
    if (params.image !== "host") {
      throw new AgentboxError("INVALID_REQUEST", `image ${JSON.stringify(params.image)} is not supported by this runtime yet (only "host")`);
    }
    // A host that passed once keeps passing: check again only until it does.
    const host = this.host?.ok ? this.host : (this.host = checkHost());
    if (!host.ok) throw new AgentboxError("RUNTIME_UNAVAILABLE", host.problems.join("; "));
    this.image ??= ensureHostImage(join(this.dataDir, "images"));
    const slot = await this.takeSlot(params.limits.storageBytes);
    try {
      const sandbox = await LocalSandbox.start({
        id: params.id,
        rootfs: this.slotPaths(slot),
        image: this.image,
        limits: params.limits,
        workdir: params.workdir,
        hostUid: HOST_UID_BASE + slot,
        cgroupPath: `${this.cgroupPrefix}/${params.id}`,
        cgroups: this.cgroups,
        bwrap: host.bwrap!,
        spawner: this.spawner,
      });
      this.refillWhenQuiet();
      const entry: Entry = {
        sandbox,
        processes: new ProcessSupervisor(sandbox),
        sessions: new SessionRegistry(sandbox),
        terminals: new TerminalRegistry(sandbox),
        files: new FileService(sandbox, params.workdir),
        slot,
        createdAt: new Date().toISOString(),
        workdir: params.workdir,
      };
      this.sandboxes.set(params.id, entry);
      return this.describe(params.id, entry);
    } catch (err) {
      this.usedSlots.delete(slot);
      throw err;
    }
  }

  /** Layers live by slot (not by sandbox id) so they can be prepared before the id is known. */
  private slotPaths(slot: number) {
    return rootfsPaths(join(this.sandboxesDir, `slot-${slot}`), join(this.mountsDir, `slot-${slot}`));
  }

  private allocateSlot(): number {
    let slot = 0;
    while (this.usedSlots.has(slot)) slot++;
    this.usedSlots.add(slot);
    return slot;
  }

  private describe(id: string, entry: Entry): RuntimeSandbox {
    const alive = entry.sandbox.alive;
    const out: RuntimeSandbox = {
      id,
      status: alive ? "ready" : "failed",
      limitsOff: entry.sandbox.limitsOff,
      createdAt: entry.createdAt,
    };
    if (!alive) out.statusMessage = "the sandbox's namespace holder exited";
    return out;
  }

  list(): RuntimeSandbox[] {
    return [...this.sandboxes].map(([id, e]) => this.describe(id, e));
  }

  get(id: string): LocalSandbox {
    const entry = this.sandboxes.get(id);
    if (!entry) throw new AgentboxError("SANDBOX_NOT_FOUND", `sandbox ${id} does not exist in the runtime`);
    if (!entry.sandbox.alive) throw new AgentboxError("SANDBOX_NOT_READY", `sandbox ${id} is not running`);
    return entry.sandbox;
  }

  async delete(id: string): Promise<boolean> {
    await this.creating.get(id)?.catch(() => undefined);
    const entry = this.sandboxes.get(id);
    if (!entry) return false;
    this.sandboxes.delete(id);
    entry.files.closeAll();
    await entry.sandbox.destroy();
    this.usedSlots.delete(entry.slot);
    void this.refillSpares();
    return true;
  }

  /** The processes of a running sandbox. */
  processes(id: string): ProcessSupervisor {
    this.get(id);
    return this.sandboxes.get(id)!.processes;
  }

  /** The shell sessions of a running sandbox. */
  sessions(id: string): SessionRegistry {
    this.get(id);
    return this.sandboxes.get(id)!.sessions;
  }

  /** The files API of a running sandbox. */
  files(id: string): FileService {
    this.get(id);
    return this.sandboxes.get(id)!.files;
  }

  /** The terminals of a running sandbox. */
  terminals(id: string): TerminalRegistry {
    this.get(id);
    return this.sandboxes.get(id)!.terminals;
  }

  /** Start a process; with a sessionId, from a snapshot of that session's cwd and env. */
  async startProcess(params: StartProcessParams): Promise<{ info: ProcessInfo; created: boolean }> {
    const processes = this.processes(params.sandboxId);
    const { sessionId } = params.request;
    if (sessionId === undefined) return processes.start(params.request, { env: params.env, defaultCwd: params.defaultCwd });
    const snap = await this.sessions(params.sandboxId).get(sessionId).snapshot();
    // The snapshot is the whole environment the shell would give a child; nothing is layered under it.
    return processes.start(params.request, { env: snap.env, defaultCwd: snap.cwd, replaceEnv: true });
  }

  async exec(params: ExecParams): Promise<ExecResult> {
    const sandbox = this.get(params.sandboxId);
    return runExec({ sandbox, env: params.env, defaultCwd: params.defaultCwd }, params.request);
  }

  async destroyAll(): Promise<void> {
    this.stopping = true;
    if (this.quietTimer) clearTimeout(this.quietTimer);
    await Promise.all([...this.sandboxes.keys()].map((id) => this.delete(id)));
    await this.refilling;
    for (const slot of this.spareSlots.splice(0)) await unmountRootfs(this.slotPaths(slot));
    this.spawner.stop();
  }
}
