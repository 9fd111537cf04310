/**
 * Templates, volumes and pools: `client.templates`, `client.volumes`, `client.pools`.
 *
 *   await client.volumes.create({ name: "cache", size: "2Gi" });
 *   await client.templates.create({ name: "py", image: "oci:/images/python.tar",
 *     resources: { cpu: "500m", memory: "1Gi" }, volumeMounts: [{ volume: "cache", path: "/cache" }] });
 *   await client.pools.create({ name: "py-warm", template: "py", replicas: 3 });
 *   const sb = await client.sandboxes.create({ pool: "py-warm" });   // ready at once
 */
import type {
  CreatePoolRequest,
  CreateTemplateRequest,
  CreateVolumeRequest,
  PatchPoolRequest,
  PatchTemplateRequest,
  Pool,
  Template,
  Volume,
} from "@agentbox/protocol";
import type { HttpTransport } from "./http.js";

export type { Pool, Template, Volume, CreatePoolRequest, CreateTemplateRequest, CreateVolumeRequest, PatchPoolRequest, PatchTemplateRequest };

const enc = encodeURIComponent;

export interface WaitForTemplateOptions {
  /** Called with the template each time it is polled (its `progress` while an image imports). */
  onProgress?: (template: Template) => void;
  /** Poll interval (default 250 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
}

export class Templates {
  /** @internal */
  constructor(private readonly http: HttpTransport) {}

  /**
   * Create a template. With the default `wait: true` the call returns once its image is
   * imported (`status` ready or failed, with `statusMessage`); with `wait: false` at once.
   */
  create(request: CreateTemplateRequest): Promise<Template> {
    return this.http.request<Template>("POST", "/v1/templates", { body: request });
  }

  get(name: string): Promise<Template> {
    return this.http.request<Template>("GET", `/v1/templates/${enc(name)}`);
  }

  async list(): Promise<Template[]> {
    return (await this.http.request<{ templates: Template[] }>("GET", "/v1/templates")).templates;
  }

  /** Change a template; sandboxes made afterwards get the change. A new image is imported again. */
  update(name: string, patch: PatchTemplateRequest): Promise<Template> {
    return this.http.request<Template>("PATCH", `/v1/templates/${enc(name)}`, { body: patch });
  }

  async delete(name: string): Promise<void> {
    await this.http.request<unknown>("DELETE", `/v1/templates/${enc(name)}`);
  }

  /** Poll until the template is no longer provisioning. */
  async waitUntilSettled(name: string, options: WaitForTemplateOptions = {}): Promise<Template> {
    for (;;) {
      const t = await this.get(name);
      options.onProgress?.(t);
      if (t.status !== "provisioning") return t;
      options.signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, options.intervalMs ?? 250));
    }
  }
}

export class Volumes {
  /** @internal */
  constructor(private readonly http: HttpTransport) {}

  create(request: CreateVolumeRequest): Promise<Volume> {
    return this.http.request<Volume>("POST", "/v1/volumes", { body: request });
  }

  get(name: string): Promise<Volume> {
    return this.http.request<Volume>("GET", `/v1/volumes/${enc(name)}`);
  }

  async list(): Promise<Volume[]> {
    return (await this.http.request<{ volumes: Volume[] }>("GET", "/v1/volumes")).volumes;
  }

  /** Throws CONFLICT while a sandbox mounts it. */
  async delete(name: string): Promise<void> {
    await this.http.request<unknown>("DELETE", `/v1/volumes/${enc(name)}`);
  }
}

export class Pools {
  /** @internal */
  constructor(private readonly http: HttpTransport) {}

  create(request: CreatePoolRequest): Promise<Pool> {
    return this.http.request<Pool>("POST", "/v1/pools", { body: request });
  }

  get(name: string): Promise<Pool> {
    return this.http.request<Pool>("GET", `/v1/pools/${enc(name)}`);
  }

  async list(): Promise<Pool[]> {
    return (await this.http.request<{ pools: Pool[] }>("GET", "/v1/pools")).pools;
  }

  /** Scale (`replicas`) or switch template; idle sandboxes follow in the background. */
  update(name: string, patch: PatchPoolRequest): Promise<Pool> {
    return this.http.request<Pool>("PATCH", `/v1/pools/${enc(name)}`, { body: patch });
  }

  /** Delete the pool and its idle sandboxes (claimed ones stay). */
  async delete(name: string): Promise<void> {
    await this.http.request<unknown>("DELETE", `/v1/pools/${enc(name)}`);
  }
}
