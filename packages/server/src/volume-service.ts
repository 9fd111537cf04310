/**
 * Volumes: persistent, size-limited directories that outlive sandboxes and
 * server restarts. The store keeps what was asked for; the runtime keeps the
 * data (an ext4 image per volume) and knows who mounts it.
 */
import { AgentboxError, parseBytes, type CreateVolumeRequest, type RuntimeVolume, type Volume } from "@agentbox/protocol";
import type { RuntimeLink } from "./runtime-link.js";
import type { Store, VolumeRecord } from "./store.js";

export class VolumeService {
  constructor(
    private readonly store: Store,
    private readonly runtime: RuntimeLink,
  ) {}

  private record(name: string): VolumeRecord {
    const v = this.store.getVolume(name);
    if (!v) throw new AgentboxError("NOT_FOUND", `volume ${name} does not exist`, { volume: name });
    return v;
  }

  private view(v: VolumeRecord, live: RuntimeVolume | undefined): Volume {
    if (!live) {
      return { ...v, status: "failed", statusMessage: "its data is missing from the runtime's volumes directory", usedBytes: 0, mountedBy: [] };
    }
    return { ...v, status: "ready", usedBytes: live.usedBytes, mountedBy: live.mountedBy };
  }

  async create(req: Required<CreateVolumeRequest>): Promise<Volume> {
    if (this.store.getVolume(req.name)) throw new AgentboxError("CONFLICT", `volume ${req.name} already exists`, { volume: req.name });
    const record: VolumeRecord = { name: req.name, size: req.size, createdAt: new Date().toISOString() };
    const live = await this.runtime.request("volume.create", { name: req.name, sizeBytes: parseBytes(req.size)! });
    this.store.insertVolume(record);
    return this.view(record, live);
  }

  async get(name: string): Promise<Volume> {
    const v = this.record(name);
    const live = await this.runtime.request("volume.get", { name }).catch((err: AgentboxError) => {
      if (err.code === "NOT_FOUND") return undefined;
      throw err;
    });
    return this.view(v, live);
  }

  async list(): Promise<Volume[]> {
    const live = new Map((await this.runtime.request("volume.list", {})).map((v) => [v.name, v]));
    return this.store.listVolumes().map((v) => this.view(v, live.get(v.name)));
  }

  /** CONFLICT while a live sandbox mounts it. */
  async delete(name: string): Promise<void> {
    this.record(name);
    await this.runtime.request("volume.delete", { name });
    this.store.deleteVolume(name);
  }

  exists(name: string): boolean {
    return this.store.getVolume(name) !== undefined;
  }
}
