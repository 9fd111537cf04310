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
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";
import type { HttpTransport } from "./http.js";
import { counter, directoryTar } from "./local-archive.js";

export type { Pool, Template, Volume, CreatePoolRequest, CreateTemplateRequest, CreateVolumeRequest, PatchPoolRequest, PatchTemplateRequest };

const enc = encodeURIComponent;

export interface WaitForTemplateOptions {
  /** Called with the template each time it is polled (its `progress` while an image imports). */
  onProgress?: (template: Template) => void;
  /** Poll interval (default 250 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
}

export interface UploadedImage {
  /** The reference to give a template (`oci:<path on the server>`). */
  image: string;
  /** sha256 of the archive: the same archive uploaded twice is stored once. */
  digest: string;
  sizeBytes: number;
}

export class Templates {
  /** @internal */
  constructor(private readonly http: HttpTransport) {}

  /**
   * Send an image to the server: a path to an OCI layout directory (packed as a tar on the
   * way), to a tar of one, or to a `docker save` archive; or the archive's bytes or a stream of
   * them. Answers the `image` to create a template with.
   *
   *   const { image } = await client.templates.uploadImage("./app-oci.tar");
   *   await client.templates.create({ name: "app", image });
   */
  async uploadImage(source: string | Uint8Array | Readable, options: { onProgress?: (bytes: number, total?: number) => void } = {}): Promise<UploadedImage> {
    let body: Readable;
    let total: number | undefined;
    let packing: Promise<void> = Promise.resolve();
    if (typeof source === "string") {
      const st = await stat(source);
      if (st.isDirectory()) ({ stream: body, packing } = directoryTar(source));
      else {
        body = createReadStream(source);
        total = st.size;
      }
    } else if (source instanceof Uint8Array) {
      body = Readable.from([Buffer.from(source)]);
      total = source.length;
    } else {
      body = source;
    }
    if (options.onProgress) body = body.pipe(counter(options.onProgress, total));
    const [uploaded] = await Promise.all([this.http.upload<UploadedImage>("POST", "/v1/images", {}, body, "application/x-tar"), packing]);
    return uploaded;
  }

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
