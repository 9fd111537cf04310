/**
 * A sandbox's network: `sandbox.network` (its egress rules and egress log) and
 * `sandbox.ports` (ports of servers inside the sandbox, reachable through the agentbox server).
 *
 *   await sb.network.update({ allow: ["pypi.org", "*.pythonhosted.org"] });
 *   const entries = await sb.network.log({ limit: 20 });
 *   const { url } = await sb.ports.expose(8000);      // open it in a browser: the url carries a token
 *   const res = await sb.ports.fetch(8000, "/api/health");
 */
import { ERROR_CODES, isErrorCode, type EgressLogEntry, type ExposedPort, type NetworkPolicy, type Sandbox as SandboxInfo } from "@agentbox/protocol";
import { AgentboxApiError, CONNECTION_FAILED } from "./errors.js";
import type { HttpTransport } from "./http.js";

export type { EgressLogEntry, ExposedPort, NetworkPolicy };

/** The mode and rules to set; the mode may be left out (it cannot change while the sandbox runs). */
export interface NetworkUpdate {
  mode?: NetworkPolicy["mode"];
  /** Rules connections must match (replace the current ones; none given: none). */
  allow?: string[];
  /** Rules that refuse a connection even when an allow rule matches (replace the current ones). */
  deny?: string[];
}

export interface NetworkLogOptions {
  /** Only the most recent entries, this many at most (server default 1000, max 10000). */
  limit?: number;
}

const enc = encodeURIComponent;

/** `sandbox.network`: the sandbox's egress policy and the log of its connections. */
export class Network {
  /** @internal Use `sandbox.network`. */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandboxId: string,
    private readonly current: () => SandboxInfo,
    private readonly replace: (info: SandboxInfo) => void,
  ) {}

  /** The policy the server last reported for the sandbox (updated by `update` and `sandbox.refresh`). */
  get policy(): Readonly<NetworkPolicy> {
    return this.current().network;
  }

  /**
   * Replace the rules of a running sandbox: connections opened from now on follow them
   * (open ones are not cut). The mode cannot change (CONFLICT); left out, it is the
   * sandbox's current one. Returns, and keeps as `sandbox.info`, the updated sandbox.
   *
   *   await sb.network.update({ allow: ["api.github.com:443"], deny: ["gist.github.com"] });
   */
  async update(policy: NetworkUpdate): Promise<SandboxInfo> {
    const network: NetworkPolicy = { mode: policy.mode ?? this.current().network.mode };
    if (policy.allow !== undefined) network.allow = [...policy.allow];
    if (policy.deny !== undefined) network.deny = [...policy.deny];
    const info = await this.http.request<SandboxInfo>("PATCH", `/v1/sandboxes/${enc(this.sandboxId)}`, { body: { network } });
    this.replace(info);
    return info;
  }

  /**
   * The connections the sandbox asked its egress proxy for (allowlist mode), allowed and
   * refused, oldest first, with the reason of each refusal and the bytes each one moved
   * (for a proxied HTTP request: its body and the response's body). The proxy keeps the most
   * recent entries of each sandbox.
   */
  async log(options: NetworkLogOptions = {}): Promise<EgressLogEntry[]> {
    const result = await this.http.request<{ entries: EgressLogEntry[] }>("GET", `/v1/sandboxes/${enc(this.sandboxId)}/network/log`, {
      query: { limit: options.limit },
    });
    return result.entries;
  }
}

/** `sandbox.ports`: servers listening inside the sandbox, reachable through the agentbox server. */
export class Ports {
  /** @internal Use `sandbox.ports`. */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandboxId: string,
  ) {}

  private path(port?: number): string {
    const base = `/v1/sandboxes/${enc(this.sandboxId)}/ports`;
    return port === undefined ? base : `${base}/${port}`;
  }

  /**
   * Make `port` reachable (HTTP and WebSocket) at the returned `url`, which embeds the
   * port's own token: whoever has the url needs no other credential. Exposing a port that
   * is already exposed returns the same url. Nothing has to listen yet.
   */
  expose(port: number): Promise<ExposedPort> {
    return this.http.request<ExposedPort>("POST", this.path(), { body: { port } });
  }

  /** The sandbox's exposed ports. */
  async list(): Promise<ExposedPort[]> {
    return (await this.http.request<{ ports: ExposedPort[] }>("GET", this.path())).ports;
  }

  /** One exposed port; throws NOT_FOUND if it is not exposed. */
  get(port: number): Promise<ExposedPort> {
    return this.http.request<ExposedPort>("GET", this.path(port));
  }

  /** Stop exposing `port`: its url (and token) stop working. `closed` is false if it was not exposed. */
  close(port: number): Promise<{ port: number; closed: boolean }> {
    return this.http.request<{ port: number; closed: boolean }>("DELETE", this.path(port));
  }

  /**
   * Send an HTTP request to the server listening on `port` inside the sandbox (the port must
   * be exposed), authenticated with this client's API key, which is removed before the request
   * reaches the sandbox. Whatever the sandbox's server answers is returned as is, any status
   * included; when the agentbox server itself could not deliver the request (nothing listens:
   * PORT_UNREACHABLE; port not exposed: NOT_FOUND; sandbox gone or not ready) it throws an
   * `AgentboxApiError`.
   *
   *   const res = await sb.ports.fetch(8000, "/items?page=2", { headers: { accept: "application/json" } });
   */
  async fetch(port: number, path = "/", init: RequestInit = {}): Promise<Response> {
    const target = this.http.url(this.path(port));
    const hash = path.indexOf("#");
    const rest = hash < 0 ? path : path.slice(0, hash);
    const q = rest.indexOf("?");
    const pathname = q < 0 ? rest : rest.slice(0, q);
    target.pathname += pathname.startsWith("/") ? pathname : `/${pathname}`;
    if (q >= 0) target.search = rest.slice(q);
    const headers = new Headers(init.headers);
    const base = this.http.baseHeaders();
    if (!headers.has("user-agent") && base["user-agent"] !== undefined) headers.set("user-agent", base["user-agent"]);
    // The API key goes in the Authorization header, unless the caller sends one of its own
    // for the sandbox's server: then in `?token=`. Either way it is removed before forwarding.
    if (headers.has("authorization")) target.searchParams.set("token", (base["authorization"] ?? "").replace(/^Bearer /, ""));
    else if (base["authorization"] !== undefined) headers.set("authorization", base["authorization"]);
    let response: Response;
    try {
      response = await fetch(target, { ...init, headers });
    } catch (error) {
      if ((error as Error).name === "AbortError" || init.signal?.aborted) throw error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new AgentboxApiError(CONNECTION_FAILED, `cannot reach agentbox at ${target.origin}: ${cause?.message ?? (error as Error).message}`, {
        details: { url: target.origin, ...(cause?.code !== undefined ? { cause: cause.code } : {}) },
        cause: error,
      });
    }
    const serverError = await this.serverError(response);
    if (serverError) throw serverError;
    return response;
  }

  /**
   * The agentbox server's own error, if the response is one: its error body, with a registry
   * code whose status it has, naming this sandbox (a server inside the sandbox answering an
   * error of its own is returned to the caller, not thrown).
   */
  private async serverError(response: Response): Promise<AgentboxApiError | undefined> {
    if (response.ok || !(response.headers.get("content-type") ?? "").startsWith("application/json")) return undefined;
    let body: unknown;
    try {
      body = await response.clone().json();
    } catch {
      return undefined;
    }
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
    if (typeof error !== "object" || error === null || !isErrorCode(error.code) || ERROR_CODES[error.code] !== response.status) return undefined;
    const message = typeof error.message === "string" ? error.message : "";
    const details = typeof error.details === "object" && error.details !== null && !Array.isArray(error.details) ? (error.details as Record<string, unknown>) : undefined;
    const namesSandbox = message.includes(this.sandboxId) || details?.["sandboxId"] === this.sandboxId || details?.["id"] === this.sandboxId;
    if (!namesSandbox) return undefined;
    await response.body?.cancel().catch(() => undefined);
    return new AgentboxApiError(error.code, message, { status: response.status, details });
  }
}
