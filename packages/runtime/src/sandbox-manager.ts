/**
 * The runtime's live sandboxes: creation (with a unique unprivileged host uid
 * each), lookup, deletion, and clean-up of what a crashed runtime left behind.
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  AgentboxError,
  type CreateSandboxParams,
  type ExecParams,
  type ExecResult,
  type PreparedImage,
  type ProcessInfo,
  type RuntimeSandbox,
  type RuntimeVolume,
  type SandboxUsage,
  type StartProcessParams,
  type NetworkPolicy,
  type EgressLogEntry,
  type ImportProgress,
} from "@agentbox/protocol";
import {
  EgressProxy,
  ImageStore,
  NET_HELPER,
  LocalSandbox,
  OPEN_NETWORK_RESOLV_CONF,
  slirp4netnsPath,
  type SandboxNetwork,
  type SpawnedProcess,
  Spawner,
  VolumeStore,
  captureLayer,
  giveOwnedPaths,
  resolveUser,
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
import { connectToPort } from "./port-connector.js";
import { ProcessSupervisor } from "./process-supervisor.js";
import { SessionRegistry } from "./sessions.js";
import { FileService } from "./files.js";
import { TerminalRegistry } from "./terminals.js";
import { CodeContexts } from "./code-contexts.js";
import { closeWasmPool } from "./wasm-contexts.js";

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
  code: CodeContexts;
  slot: number;
  createdAt: string;
  workdir: string;
  /** Image layers (digests) under its own: kept by image GC while it lives. */
  layers: string[];
  mounts: Array<{ volume: string; path: string; readOnly: boolean }>;
  paused: boolean;
  /** What the sandbox's empty disk used right after it was made (subtracted from live disk use). */
  diskBaseline: number;
  network: NetworkPolicy;
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
  private readonly images: ImageStore;
  private readonly volumes: VolumeStore;
  /** Imports in flight, by image reference: concurrent prepares of one image share one import. */
  private readonly imports = new Map<string, { promise: Promise<PreparedImage>; progress?: ImportProgress }>();
  /** Disk use of each slot's empty disk. */
  private readonly diskBaselines = new Map<number, number>();
  /** One egress proxy for every allowlist sandbox, each on its own listener. */
  private readonly egress = new EgressProxy({ relay: (a, b, count) => this.spawner.relay(process.pid, a, b, NET_HELPER, count) });

  constructor(private readonly dataDir: string, cgroups?: CgroupDriver) {
    this.cgroups = cgroups ?? detectCgroups();
    const instance = createHash("sha256").update(dataDir).digest("hex").slice(0, 12);
    this.cgroupPrefix = `agentbox/${instance}`;
    this.sandboxesDir = join(dataDir, "sandboxes");
    this.mountsDir = join(MOUNTS_ROOT, instance);
    this.images = new ImageStore(join(dataDir, "images"));
    this.volumes = new VolumeStore(join(dataDir, "volumes"), join(this.mountsDir, "volumes"));
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
            this.diskBaselines.set(slot, diskUsed(this.slotPaths(slot).layer));
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
      this.diskBaselines.set(slot, diskUsed(this.slotPaths(slot).layer));
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
    names.delete("volumes");
    names.delete("resolv.conf");
    // Egress proxy sockets an earlier version made for its sandboxes.
    if (names.delete("net")) rmSync(join(this.mountsDir, "net"), { recursive: true, force: true });
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
    // A host that passed once keeps passing: check again only until it does.
    const host = this.host?.ok ? this.host : (this.host = checkHost());
    if (!host.ok) throw new AgentboxError("RUNTIME_UNAVAILABLE", host.problems.join("; "));
    const root = this.rootOf(params.image);
    const user = resolveUser(root.lowers, params.user ?? "user");
    const owned = params.image.layers.map((d) => this.ownedPaths(d));
    try {
      return await this.createIn(params, root, user, owned, host.bwrap!);
    } finally {
      this.attaching.delete(params.id);
    }
  }

  private async createIn(
    params: CreateSandboxParams,
    root: { lowers: string[]; binds: Array<[string, string]> },
    user: ReturnType<typeof resolveUser>,
    owned: string[][],
    bwrap: string,
  ): Promise<RuntimeSandbox> {
    const mounts = await this.attachVolumes(params.id, params.mounts ?? []);
    const network = await this.attachNetwork(params.id, params.network);
    let slot: number;
    try {
      slot = await this.takeSlot(params.limits.storageBytes);
    } catch (err) {
      await this.egress.detach(params.id);
      throw err;
    }
    const hostUid = HOST_UID_BASE + slot;
    try {
      for (const m of mounts) if (!m.readOnly) await this.volumes.chownTo(m.volume, hostUid);
      const sandbox = await LocalSandbox.start({
        id: params.id,
        rootfs: this.slotPaths(slot),
        root,
        mounts: mounts.map((m) => ({ source: m.source, path: m.path, readOnly: m.readOnly })),
        user,
        limits: params.limits,
        workdir: params.workdir,
        hostUid,
        cgroupPath: `${this.cgroupPrefix}/${params.id}`,
        cgroups: this.cgroups,
        bwrap,
        spawner: this.spawner,
        network,
        ...(owned.some((o) => o.length > 0)
          ? { prepareRoot: async (merged: string) => { for (const paths of owned) await giveOwnedPaths(merged, paths, hostUid); } }
          : {}),
      });
      this.refillWhenQuiet();
      const entry: Entry = {
        sandbox,
        processes: new ProcessSupervisor(sandbox),
        sessions: new SessionRegistry(sandbox),
        terminals: new TerminalRegistry(sandbox),
        // relay-n moves bytes from side B to side A: toward the peer for a read, from it for a write.
        files: new FileService(sandbox, params.workdir, (local, via, peerFd, count, toPeer) =>
          toPeer
            ? this.spawner.relay(process.pid, peerFd, local, NET_HELPER, count, { via, side: "a" })
            : this.spawner.relay(process.pid, local, peerFd, NET_HELPER, count, { via, side: "b" }),
        ),
        code: new CodeContexts(sandbox),
        slot,
        createdAt: new Date().toISOString(),
        workdir: params.workdir,
        layers: params.image.layers,
        mounts: mounts.map(({ volume, path, readOnly }) => ({ volume, path, readOnly })),
        paused: false,
        diskBaseline: this.diskBaselines.get(slot) ?? 0,
        network: params.network,
      };
      this.sandboxes.set(params.id, entry);
      return this.describe(params.id, entry);
    } catch (err) {
      this.usedSlots.delete(slot);
      await this.egress.detach(params.id);
      throw err;
    }
  }

  /** The host side of a sandbox's network: its place in the egress proxy, or what open mode needs. */
  private async attachNetwork(id: string, policy: NetworkPolicy): Promise<SandboxNetwork> {
    if (policy.mode === "allowlist") {
      this.egress.attach(id, policy);
      return { mode: "allowlist", serve: (listener) => this.egress.serve(id, listener) };
    }
    if (policy.mode === "open") {
      if (!slirp4netnsPath()) {
        throw new AgentboxError("RUNTIME_UNAVAILABLE", 'network mode "open" needs slirp4netns on the host (run `bash scripts/setup.sh` as root, or `apt-get install slirp4netns`)');
      }
      const resolvConf = join(this.mountsDir, "resolv.conf");
      if (!existsSync(resolvConf)) writeFileSync(resolvConf, OPEN_NETWORK_RESOLV_CONF, { mode: 0o644 });
      return { mode: "open", resolvConf };
    }
    return { mode: "none" };
  }

  /** New egress rules for a running sandbox; they apply to its next connections. */
  setNetwork(id: string, policy: NetworkPolicy): { network: NetworkPolicy } {
    const entry = this.entry(id);
    if (policy.mode !== entry.network.mode) {
      throw new AgentboxError("CONFLICT", `a running sandbox keeps its network mode (${entry.network.mode}); only the rules of an allowlist sandbox can change`, {
        field: "network.mode",
      });
    }
    entry.network = policy;
    this.egress.setPolicy(id, policy);
    return { network: policy };
  }

  /** A connection to `port` inside the sandbox, as the stdin/stdout of our connector (exposed ports). */
  openPort(id: string, port: number): Promise<SpawnedProcess> {
    return connectToPort(this.get(id), port);
  }

  networkLog(id: string, limit: number): { entries: EgressLogEntry[] } {
    this.entry(id);
    return { entries: this.egress.log(id, limit) };
  }

  /** Volumes being attached by creates in flight (not yet in `sandboxes`), for the one-writer rule. */
  private readonly attaching = new Map<string, Array<{ volume: string; readOnly: boolean }>>();

  /**
   * Mount each volume on the host. A volume has at most one read-write user at a time: its files
   * belong to that sandbox's host uid, which no other sandbox shares (any number may read it).
   */
  private async attachVolumes(id: string, mounts: Array<{ volume: string; path: string; readOnly?: boolean | undefined }>) {
    const wanted = mounts.map((m) => ({ volume: m.volume, path: m.path, readOnly: m.readOnly === true }));
    for (const m of wanted) {
      if (!this.volumes.exists(m.volume)) throw new AgentboxError("NOT_FOUND", `volume ${m.volume} does not exist`, { field: "volumeMounts", volume: m.volume });
      if (m.readOnly) continue;
      const writer = this.volumeUsers(m.volume).find((u) => !u.readOnly && u.sandbox !== id);
      if (writer) {
        throw new AgentboxError("CONFLICT", `volume ${m.volume} is mounted read-write by sandbox ${writer.sandbox}; mount it readOnly, or delete that sandbox first`, {
          volume: m.volume,
          sandbox: writer.sandbox,
        });
      }
    }
    this.attaching.set(id, wanted);
    const out: Array<{ volume: string; path: string; readOnly: boolean; source: string }> = [];
    for (const m of wanted) out.push({ ...m, source: await this.volumes.mount(m.volume) });
    return out;
  }

  private volumeUsers(volume: string): Array<{ sandbox: string; readOnly: boolean }> {
    const users: Array<{ sandbox: string; readOnly: boolean }> = [];
    for (const [id, e] of this.sandboxes) for (const m of e.mounts) if (m.volume === volume) users.push({ sandbox: id, readOnly: m.readOnly });
    for (const [id, ms] of this.attaching) for (const m of ms) if (m.volume === volume) users.push({ sandbox: id, readOnly: m.readOnly });
    return users;
  }

  /** Lower layers (top first) and read-only binds of a sandbox's root. */
  private rootOf(image: CreateSandboxParams["image"]): { lowers: string[]; binds: Array<[string, string]> } {
    const layers = image.layers.map((digest) => {
      const path = this.images.layerPath(digest);
      if (!path) throw new AgentboxError("NOT_FOUND", `image layer ${digest} is not in this runtime's store (import the template's image again)`);
      return path;
    }).reverse();
    if (image.base === "none") {
      if (layers.length === 0) throw new AgentboxError("INVALID_REQUEST", "an image with no base needs at least one layer");
      return { lowers: layers, binds: [] };
    }
    this.image ??= ensureHostImage(join(this.dataDir, "images"));
    return { lowers: [...layers, this.image.skeleton], binds: this.image.binds };
  }

  /** Paths of a snapshot layer that belong to the sandbox user (see snapshot-layer.ts). */
  private ownedPaths(digest: string): string[] {
    const file = join(this.dataDir, "images", "owned", `${digest.replace(/^sha256:/, "")}.json`);
    if (!existsSync(file)) return [];
    return JSON.parse(readFileSync(file, "utf8")) as string[];
  }

  // ---------------------------------------------------------------- images

  /** Import an image reference; concurrent calls for one reference share the import. */
  prepareImage(ref: string): Promise<PreparedImage> {
    if (ref === "host") return Promise.resolve({ base: "host", layers: [], config: { env: {} } });
    const running = this.imports.get(ref);
    if (running) return running.promise;
    const state: { promise: Promise<PreparedImage>; progress?: ImportProgress } = { promise: Promise.resolve(undefined as never) };
    const onProgress = (p: ImportProgress) => (state.progress = p);
    state.promise = (async (): Promise<PreparedImage> => {
      if (ref.startsWith("oci:")) {
        const img = await this.images.importOci(ref.slice(4), onProgress);
        return { base: "none", layers: img.digests, config: img.config };
      }
      if (ref.startsWith("dir:")) {
        const img = await this.images.importDir(ref.slice(4), onProgress);
        return { base: "none", layers: img.digests, config: img.config };
      }
      throw new AgentboxError("INVALID_REQUEST", `image ${JSON.stringify(ref)} is not "host", "dir:<path>" or "oci:<path>"`, { field: "image" });
    })().finally(() => this.imports.delete(ref));
    this.imports.set(ref, state);
    return state.promise;
  }

  importProgress(ref: string): ImportProgress | undefined {
    return this.imports.get(ref)?.progress;
  }

  /** Remove stored layers that no template keeps and no live sandbox uses. */
  gcImages(keep: string[]): number {
    const all = new Set(keep);
    for (const e of this.sandboxes.values()) for (const d of e.layers) all.add(d);
    if (this.imports.size > 0) return 0; // an import in flight may be about to reuse a layer
    const removed = this.images.gc(all);
    const ownedDir = join(this.dataDir, "images", "owned");
    if (existsSync(ownedDir)) {
      for (const name of readdirSync(ownedDir)) if (!all.has(`sha256:${name.replace(/\.json$/, "")}`)) rmSync(join(ownedDir, name), { force: true });
    }
    return removed;
  }

  /** Copy a sandbox's writable layer, frozen so that it is consistent, into a new image layer. */
  async snapshot(id: string): Promise<string> {
    const entry = this.entry(id);
    const wasPaused = entry.paused;
    const staging = join(this.dataDir, "images", `snapshot-${id}-${Date.now()}`);
    if (!wasPaused) await entry.sandbox.cgroup.freeze();
    let owned: string[];
    try {
      owned = await captureLayer(this.slotPaths(entry.slot).upper, staging, HOST_UID_BASE + entry.slot);
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    } finally {
      if (!wasPaused) await entry.sandbox.cgroup.thaw();
    }
    const { digest } = await this.images.adoptLayer(staging);
    const ownedDir = join(this.dataDir, "images", "owned");
    mkdirSync(ownedDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(ownedDir, `${digest.replace(/^sha256:/, "")}.json`), JSON.stringify(owned));
    return digest;
  }

  // ---------------------------------------------------------------- volumes

  private describeVolume(name: string, usage: { sizeBytes: number; usedBytes: number }): RuntimeVolume {
    return { name, ...usage, mountedBy: [...new Set(this.volumeUsers(name).map((u) => u.sandbox))] };
  }

  async createVolume(name: string, sizeBytes: number): Promise<RuntimeVolume> {
    return this.describeVolume(name, await this.volumes.create(name, sizeBytes));
  }

  async getVolume(name: string): Promise<RuntimeVolume> {
    if (!this.volumes.exists(name)) throw new AgentboxError("NOT_FOUND", `volume ${name} does not exist`);
    return this.describeVolume(name, await this.volumes.usage(name));
  }

  async listVolumes(): Promise<RuntimeVolume[]> {
    return Promise.all(this.volumes.list().map((n) => this.getVolume(n)));
  }

  async deleteVolume(name: string): Promise<boolean> {
    if (!this.volumes.exists(name)) return false;
    const users = this.volumeUsers(name);
    if (users.length > 0) {
      throw new AgentboxError("CONFLICT", `volume ${name} is mounted by sandbox ${users.map((u) => u.sandbox).join(", ")}; delete those sandboxes first`, {
        volume: name,
        mountedBy: users.map((u) => u.sandbox),
      });
    }
    await this.volumes.remove(name);
    return true;
  }

  // ---------------------------------------------------------------- lifecycle

  private entry(id: string): Entry {
    const entry = this.sandboxes.get(id);
    if (!entry) throw new AgentboxError("SANDBOX_NOT_FOUND", `sandbox ${id} does not exist in the runtime`);
    if (!entry.sandbox.alive) throw new AgentboxError("SANDBOX_NOT_READY", `sandbox ${id} is not running`);
    return entry;
  }

  /** Freeze every process of the sandbox. */
  async pause(id: string): Promise<RuntimeSandbox> {
    const entry = this.entry(id);
    if (!entry.paused) {
      await entry.sandbox.cgroup.freeze();
      entry.paused = true;
    }
    return this.describe(id, entry);
  }

  async resume(id: string): Promise<RuntimeSandbox> {
    const entry = this.entry(id);
    if (entry.paused) {
      await entry.sandbox.cgroup.thaw();
      entry.paused = false;
    }
    return this.describe(id, entry);
  }

  usage(id: string): SandboxUsage {
    const entry = this.entry(id);
    const u = entry.sandbox.cgroup.usage();
    const disk = Math.max(0, diskUsed(this.slotPaths(entry.slot).layer) - entry.diskBaseline);
    return { memoryBytes: u.memoryBytes, cpuSeconds: u.cpuSeconds, diskBytes: disk, processes: u.processes };
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
      status: alive ? (entry.paused ? "paused" : "ready") : "failed",
      limitsOff: entry.sandbox.limitsOff,
      createdAt: entry.createdAt,
    };
    if (!alive) out.statusMessage = "the sandbox's namespace holder exited";
    return out;
  }

  list(): RuntimeSandbox[] {
    return [...this.sandboxes].map(([id, e]) => this.describe(id, e));
  }

  /** As `get`, and not paused (a paused sandbox's processes cannot answer). */
  requireRunning(id: string): void {
    if (this.entry(id).paused) throw new AgentboxError("SANDBOX_NOT_READY", `sandbox ${id} is paused`, { id, status: "paused" });
  }

  /**
   * Descriptor `fd` of the process at the other end of our unix socket `via` (the server), a
   * client's connection it hands over, taken by the spawner: a handle for `new net.Socket`.
   */
  takePeerSocket(via: number, fd: number): Promise<object> {
    return this.spawner.take(via, fd);
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
    await entry.code.closeAll().catch(() => undefined);
    await entry.sandbox.destroy();
    await this.egress.detach(id);
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

  /** The code contexts of a running sandbox. */
  code(id: string): CodeContexts {
    this.get(id);
    return this.sandboxes.get(id)!.code;
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
    await this.volumes.unmountAll();
    await closeWasmPool().catch(() => undefined);
    await this.egress.close();
    this.spawner.stop();
  }
}

/** Bytes in use on the filesystem mounted at `path` (0 if it cannot be read). */
function diskUsed(path: string): number {
  try {
    const st = statfsSync(path);
    return (st.blocks - st.bfree) * st.bsize;
  } catch {
    return 0;
  }
}
