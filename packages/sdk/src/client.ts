/** The entry point of the SDK: `new Agentbox()` and its resource collections. */
import { DEFAULT_HOST, DEFAULT_PORT, type CreateSandboxRequest, type SandboxStatus } from "@agentbox/protocol";
import type { Sandbox as SandboxInfo } from "@agentbox/protocol";
import { AgentboxApiError } from "./errors.js";
import { HttpTransport, type RequestOptions } from "./http.js";
import { Sandbox } from "./sandbox.js";
import { Pools, Templates, Volumes } from "./templates.js";

export const DEFAULT_URL = `http://${DEFAULT_HOST}:${DEFAULT_PORT}`;

export interface AgentboxOptions {
  /** Server URL; default `$AGENTBOX_URL`, else `http://127.0.0.1:7878`. */
  url?: string | undefined;
  /** API key; default `$AGENTBOX_API_KEY`. Required. */
  apiKey?: string | undefined;
  /**
   * Client-side timeout of each request in milliseconds; default none. It never
   * applies to `sandbox.exec`, whose request lasts as long as the command may run.
   */
  timeoutMs?: number | undefined;
}

export interface ListSandboxesOptions {
  status?: SandboxStatus | undefined;
  template?: string | undefined;
  /** Only sandboxes whose metadata has all these key/value pairs. */
  metadata?: Record<string, string> | undefined;
  /** A pool's sandboxes, idle ones included (without it, idle pool sandboxes are not listed). */
  pool?: string | undefined;
}

export interface Health {
  status: "ok";
  version: string;
  [key: string]: unknown;
}

export class Agentbox {
  readonly url: string;
  readonly sandboxes: Sandboxes;
  readonly templates: Templates;
  readonly volumes: Volumes;
  readonly pools: Pools;
  private readonly http: HttpTransport;

  constructor(options: AgentboxOptions = {}) {
    const url = options.url ?? nonEmpty(process.env["AGENTBOX_URL"]) ?? DEFAULT_URL;
    const apiKey = options.apiKey ?? nonEmpty(process.env["AGENTBOX_API_KEY"]);
    if (apiKey === undefined || apiKey === "") {
      throw new AgentboxApiError(
        "UNAUTHORIZED",
        "no API key: set AGENTBOX_API_KEY (the key `agentbox serve` prints and stores in its data directory) or pass { apiKey }",
      );
    }
    this.http = new HttpTransport({ baseUrl: url, apiKey, timeoutMs: options.timeoutMs });
    this.url = this.http.baseUrl.href.replace(/\/+$/, "");
    this.sandboxes = new Sandboxes(this.http);
    this.templates = new Templates(this.http);
    this.volumes = new Volumes(this.http);
    this.pools = new Pools(this.http);
  }

  /** `GET /healthz`: resolves when the server is up. */
  health(options: Pick<RequestOptions, "signal" | "timeoutMs"> = {}): Promise<Health> {
    return this.http.request<Health>("GET", "/healthz", options);
  }
}

export class Sandboxes {
  /** @internal */
  constructor(private readonly http: HttpTransport) {}

  /**
   * Create a sandbox. By default the call waits until it is ready (or failed:
   * check `status` and `info.statusMessage`); with `wait: false` it returns while provisioning.
   * `network` replaces the template's network policy:
   *
   *   await client.sandboxes.create({ network: { mode: "allowlist", allow: ["pypi.org", "*.pythonhosted.org"] } });
   */
  async create(options: CreateSandboxRequest = {}): Promise<Sandbox> {
    const info = await this.http.request<SandboxInfo>("POST", "/v1/sandboxes", { body: options });
    return new Sandbox(this.http, info);
  }

  /** A handle on an existing sandbox; throws SANDBOX_NOT_FOUND if there is none with this id. */
  async get(id: string): Promise<Sandbox> {
    const info = await this.http.request<SandboxInfo>("GET", `/v1/sandboxes/${encodeURIComponent(id)}`);
    return new Sandbox(this.http, info);
  }

  /** Delete a sandbox by id without fetching it first; throws SANDBOX_NOT_FOUND if there is none. */
  async delete(id: string): Promise<void> {
    await this.http.request<unknown>("DELETE", `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  /** Make a sandbox expire `seconds` from now, by id; returns its updated state. */
  setTimeout(id: string, seconds: number): Promise<SandboxInfo> {
    return this.http.request<SandboxInfo>("POST", `/v1/sandboxes/${encodeURIComponent(id)}/timeout`, {
      body: { timeoutSeconds: seconds },
    });
  }

  async list(options: ListSandboxesOptions = {}): Promise<Sandbox[]> {
    const query = new URLSearchParams();
    if (options.status !== undefined) query.append("status", options.status);
    if (options.template !== undefined) query.append("template", options.template);
    if (options.pool !== undefined) query.append("pool", options.pool);
    for (const [key, value] of Object.entries(options.metadata ?? {})) query.append(`metadata.${key}`, value);
    const result = await this.http.request<{ sandboxes: SandboxInfo[] } | SandboxInfo[]>("GET", "/v1/sandboxes", { query });
    const infos = Array.isArray(result) ? result : (result?.sandboxes ?? []);
    return infos.map((info) => new Sandbox(this.http, info));
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
