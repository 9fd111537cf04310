/**
 * Templates: what a sandbox is made from (image, resources, env, user,
 * workdir, volume mounts). Creating one imports its image in the runtime
 * (status provisioning → ready | failed); a snapshot is a template whose
 * layers are its parent's plus the sandbox's own.
 */
import {
  AgentboxError,
  parseBytes,
  parseCpu,
  type CreateTemplateRequest,
  type PatchTemplateRequest,
  type Resources,
  type SandboxLimits,
  type Template,
  type VolumeMount,
} from "@agentbox/protocol";
import type { ImageSources } from "./images.js";
import type { RuntimeLink } from "./runtime-link.js";
import type { Store, TemplateRecord } from "./store.js";

export const DEFAULT_TEMPLATE_NAME = "default";
export const DEFAULT_RESOURCES: Resources = { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 };
export const DEFAULT_WORKDIR = "/workspace";
export const DEFAULT_USER = "user";

type ParsedCreate = Omit<Required<CreateTemplateRequest>, "network" | "user" | "workdir" | "resources"> &
  Pick<CreateTemplateRequest, "network" | "user" | "workdir"> & { resources: Partial<Resources> };
type ParsedPatch = Omit<PatchTemplateRequest, "wait"> & { wait: boolean };

/** What a sandbox of a template gets: everything resolved. */
export interface EffectiveTemplate {
  name: string;
  image: { base: "host" | "none"; layers: string[] };
  resources: Resources;
  limits: SandboxLimits;
  env: Record<string, string>;
  workdir: string;
  user: string;
  volumeMounts: VolumeMount[];
  network: TemplateRecord["network"];
}

/** An image's `WorkingDir` as a default: only an absolute path without `..` segments. */
function imageWorkdir(dir: string | undefined): string | undefined {
  return dir?.startsWith("/") && !dir.split("/").includes("..") && !dir.includes("\0") ? dir : undefined;
}

/** An image's `User` ("name", "uid", "uid:gid", "name:group") as a default: only when unprivileged. */
function imageUser(spec: string | undefined): string | undefined {
  const user = spec?.split(":")[0]?.trim();
  if (!user || user === "root" || user === "0") return undefined;
  return /^([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,9})$/.test(user) ? user : undefined;
}


export class TemplateService {
  /** Imports in flight, by template name (a newer import of the same template supersedes an older one). */
  private readonly provisioning = new Map<string, Promise<void>>();
  private generation = 0;
  private readonly generations = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly runtime: RuntimeLink,
    private readonly sources: ImageSources,
    private readonly log: (message: string) => void,
  ) {}

  /** The built-in `default` template, made on first start. */
  ensureDefault(): void {
    if (this.store.getTemplate(DEFAULT_TEMPLATE_NAME)) return;
    const now = new Date().toISOString();
    this.store.putTemplate({
      name: DEFAULT_TEMPLATE_NAME,
      image: "host",
      resources: DEFAULT_RESOURCES,
      volumeMounts: [],
      env: {},
      network: { mode: "none" },
      user: undefined,
      workdir: undefined,
      status: "ready",
      statusMessage: undefined,
      prepared: { base: "host", layers: [], config: { env: {} } },
      parent: undefined,
      extraLayers: [],
      createdAt: now,
      updatedAt: now,
    });
  }

  private record(name: string): TemplateRecord {
    const t = this.store.getTemplate(name);
    if (!t) throw new AgentboxError("NOT_FOUND", `template ${name} does not exist`, { template: name });
    return t;
  }

  private checkVolumes(mounts: VolumeMount[]): void {
    mounts.forEach((m, i) => {
      if (!this.store.getVolume(m.volume)) {
        throw new AgentboxError("NOT_FOUND", `volumeMounts.${i}.volume: volume ${m.volume} does not exist`, { field: `volumeMounts.${i}.volume` });
      }
    });
    const paths = new Set<string>();
    for (const m of mounts) {
      if (paths.has(m.path)) throw new AgentboxError("INVALID_REQUEST", `volumeMounts: two volumes mounted at ${m.path}`, { field: "volumeMounts" });
      paths.add(m.path);
    }
  }

  async create(req: ParsedCreate): Promise<Template> {
    if (this.store.getTemplate(req.name)) throw new AgentboxError("CONFLICT", `template ${req.name} already exists`, { template: req.name });
    this.checkVolumes(req.volumeMounts);
    const image = this.sources.resolve(req.image);
    const now = new Date().toISOString();
    const record: TemplateRecord = {
      name: req.name,
      image,
      resources: { ...DEFAULT_RESOURCES, ...req.resources },
      volumeMounts: req.volumeMounts,
      env: req.env,
      network: req.network ?? { mode: "none" },
      user: req.user,
      workdir: req.workdir,
      status: "provisioning",
      statusMessage: undefined,
      prepared: undefined,
      parent: undefined,
      extraLayers: [],
      createdAt: now,
      updatedAt: now,
    };
    this.store.putTemplate(record);
    const done = this.provision(record.name, record.image);
    if (req.wait) await done;
    return this.get(record.name);
  }

  /** Import the image in the runtime and record the outcome (unless a newer import superseded this one). */
  private provision(name: string, image: string): Promise<void> {
    const generation = ++this.generation;
    this.generations.set(name, generation);
    const promise = (async () => {
      let update: Partial<TemplateRecord>;
      try {
        const prepared = await this.runtime.request("image.prepare", { image });
        update = { status: "ready", statusMessage: undefined, prepared };
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        this.log(`template ${name}: image ${image} failed: ${message}`);
        update = { status: "failed", statusMessage: `image ${image}: ${message}`, prepared: undefined };
      }
      const current = this.store.getTemplate(name);
      if (!current || this.generations.get(name) !== generation) return;
      this.store.putTemplate({ ...current, ...update, updatedAt: new Date().toISOString() });
    })().finally(() => {
      if (this.generations.get(name) === generation) {
        this.generations.delete(name);
        this.provisioning.delete(name);
      }
    });
    this.provisioning.set(name, promise);
    return promise;
  }

  /** After a restart: imports that were cut off are started again. */
  resumeProvisioning(): void {
    for (const t of this.store.listTemplates()) if (t.status === "provisioning" && !this.provisioning.has(t.name)) void this.provision(t.name, t.image);
  }

  toTemplate(t: TemplateRecord): Template {
    const out: Template = {
      name: t.name,
      image: t.image,
      resources: t.resources,
      volumeMounts: t.volumeMounts,
      env: t.env,
      network: t.network,
      user: t.user ?? imageUser(t.prepared?.config.user) ?? DEFAULT_USER,
      workdir: t.workdir ?? imageWorkdir(t.prepared?.config.workdir) ?? DEFAULT_WORKDIR,
      status: t.status,
      layers: (t.prepared?.layers.length ?? 0) + t.extraLayers.length,
      createdAt: t.createdAt,
      updatedAt: t.updatedAt,
    };
    if (t.statusMessage) out.statusMessage = t.statusMessage;
    if (t.parent) out.parent = t.parent;
    return out;
  }

  async get(name: string): Promise<Template> {
    const t = this.record(name);
    const out = this.toTemplate(t);
    if (t.status === "provisioning") {
      const { progress } = await this.runtime.request("image.progress", { image: t.image }).catch(() => ({ progress: undefined }));
      if (progress) out.progress = progress;
    }
    return out;
  }

  list(): Template[] {
    return this.store.listTemplates().map((t) => this.toTemplate(t));
  }

  async patch(name: string, req: ParsedPatch): Promise<Template> {
    const t = this.record(name);
    if (req.volumeMounts) this.checkVolumes(req.volumeMounts);
    if (req.image !== undefined) req = { ...req, image: this.sources.resolve(req.image) };
    if (req.image !== undefined && req.image !== t.image && t.parent) {
      throw new AgentboxError("INVALID_REQUEST", `image: template ${name} is a snapshot of ${t.parent}; its image cannot change`, { field: "image" });
    }
    const next: TemplateRecord = {
      ...t,
      ...(req.resources ? { resources: { ...t.resources, ...req.resources } } : {}),
      ...(req.volumeMounts ? { volumeMounts: req.volumeMounts } : {}),
      ...(req.env ? { env: req.env } : {}),
      ...(req.network ? { network: req.network } : {}),
      ...(req.user !== undefined ? { user: req.user } : {}),
      ...(req.workdir !== undefined ? { workdir: req.workdir } : {}),
      updatedAt: new Date().toISOString(),
    };
    const reimport = req.image !== undefined && req.image !== t.image;
    if (reimport) Object.assign(next, { image: req.image, status: "provisioning", statusMessage: undefined, prepared: undefined });
    this.store.putTemplate(next);
    if (reimport) {
      const done = this.provision(name, req.image!);
      if (req.wait) await done;
    }
    return this.get(name);
  }

  async delete(name: string, inUseByPools: string[]): Promise<void> {
    if (name === DEFAULT_TEMPLATE_NAME) throw new AgentboxError("CONFLICT", "the default template cannot be deleted (change it with PATCH)");
    this.record(name);
    if (inUseByPools.length > 0) {
      throw new AgentboxError("CONFLICT", `template ${name} is used by pool ${inUseByPools.join(", ")}; delete or change those pools first`, { pools: inUseByPools });
    }
    this.generations.delete(name);
    this.store.deleteTemplate(name);
    await this.collectLayers();
  }

  /** Remove image layers no template refers to any more (live sandboxes keep theirs). */
  async collectLayers(): Promise<void> {
    const keep = this.store.listTemplates().flatMap((t) => [...(t.prepared?.layers ?? []), ...t.extraLayers]);
    // An import in flight has no layers recorded yet: the runtime skips collection while one runs.
    await this.runtime.request("image.gc", { keep }).catch((err: Error) => this.log(`image gc: ${err.message}`));
    this.sources.collect(new Set(this.store.listTemplates().map((t) => t.image)));
  }

  /** The template a new sandbox is made from, with everything resolved; it must be ready. */
  effective(name: string): EffectiveTemplate {
    const t = this.record(name);
    if (t.status !== "ready" || !t.prepared) {
      throw new AgentboxError("CONFLICT", `template ${name} is ${t.status}${t.statusMessage ? `: ${t.statusMessage}` : ""}`, { template: name, status: t.status });
    }
    const view = this.toTemplate(t);
    return {
      name,
      image: { base: t.prepared.base, layers: [...t.prepared.layers, ...t.extraLayers] },
      resources: t.resources,
      limits: {
        memoryBytes: parseBytes(t.resources.memory)!,
        cpu: parseCpu(t.resources.cpu)!,
        pids: t.resources.pids,
        storageBytes: parseBytes(t.resources.storage)!,
      },
      env: { ...t.prepared.config.env, ...t.env },
      workdir: view.workdir,
      user: view.user,
      volumeMounts: t.volumeMounts,
      network: t.network,
    };
  }

  /** A new template holding `layer` on top of `parentName`'s layers (a snapshot). */
  fromSnapshot(name: string, parentName: string, layer: string): Template {
    const parent = this.record(parentName);
    if (!parent.prepared) throw new AgentboxError("CONFLICT", `template ${parentName} is not ready`);
    const now = new Date().toISOString();
    this.store.putTemplate({
      ...parent,
      name,
      parent: parentName,
      extraLayers: [...parent.extraLayers, layer],
      status: "ready",
      statusMessage: undefined,
      createdAt: now,
      updatedAt: now,
    });
    return this.toTemplate(this.record(name));
  }

  statusOf(name: string): TemplateRecord["status"] | undefined {
    return this.store.getTemplate(name)?.status;
  }

  exists(name: string): boolean {
    return this.store.getTemplate(name) !== undefined;
  }
}
