/**
 * The SDK's HTTP transport: base URL, bearer auth, JSON in and out, and the
 * API's error body mapped to `AgentboxApiError`.
 *
 * It is built on node:http rather than the global `fetch`: Node's fetch
 * (undici) gives up on a response whose headers take more than 300 s, and an
 * exec or a sandbox creation may legitimately take longer than that. Here the
 * only timeouts are the ones the caller asks for.
 */
import http from "node:http";
import type { Readable } from "node:stream";
import https from "node:https";
import { isErrorCode } from "@agentbox/protocol";
import { AgentboxApiError, CONNECTION_FAILED, codeForStatus } from "./errors.js";

export type Query = Record<string, string | number | boolean | undefined> | URLSearchParams;

export interface TransportOptions {
  /** Base URL of the server, e.g. `http://127.0.0.1:7878` (a path prefix is kept). */
  baseUrl: string;
  apiKey: string;
  /** Default client-side timeout for each request; undefined = none. */
  timeoutMs?: number | undefined;
  userAgent?: string | undefined;
}

export interface RequestOptions {
  query?: Query | undefined;
  /** Sent as JSON when defined. */
  body?: unknown;
  /** Client-side timeout for this request: a number, `null` for none, undefined for the transport's default. */
  timeoutMs?: number | null | undefined;
  signal?: AbortSignal | undefined;
}

interface RawResponse {
  status: number;
  statusText: string;
  body: Buffer;
}

const DEFAULT_USER_AGENT = "agentbox-sdk/0.1.0";

export class HttpTransport {
  readonly baseUrl: URL;
  private readonly apiKey: string;
  private readonly timeoutMs: number | undefined;
  private readonly userAgent: string;

  constructor(options: TransportOptions) {
    let base: URL;
    try {
      base = new URL(options.baseUrl);
    } catch {
      throw new AgentboxApiError("INVALID_REQUEST", `invalid agentbox URL "${options.baseUrl}"`);
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new AgentboxApiError("INVALID_REQUEST", `agentbox URL must be http:// or https://, got "${options.baseUrl}"`);
    }
    base.search = "";
    base.hash = "";
    this.baseUrl = base;
    this.apiKey = options.apiKey;
    this.timeoutMs = options.timeoutMs;
    this.userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
  }

  /** The absolute URL of an API path (`/v1/...`) with its query string. */
  url(path: string, query?: Query): URL {
    const url = new URL(this.baseUrl.href);
    url.pathname = url.pathname.replace(/\/+$/, "") + (path.startsWith("/") ? path : `/${path}`);
    if (query !== undefined) {
      const entries = query instanceof URLSearchParams ? [...query.entries()] : Object.entries(query);
      for (const [key, value] of entries) {
        if (value !== undefined) url.searchParams.append(key, String(value));
      }
    }
    return url;
  }

  /** The `ws://` / `wss://` URL of an API path, for a WebSocket. */
  websocketUrl(path: string, query?: Query): URL {
    const url = this.url(path, query);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url;
  }

  /** @internal The headers every request carries (auth, user agent), for WebSocket upgrades. */
  baseHeaders(): Record<string, string> {
    return { authorization: `Bearer ${this.apiKey}`, "user-agent": this.userAgent };
  }

  /** Send a request and return the decoded JSON body (undefined for an empty body). */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const url = this.url(path, options.query);
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body), "utf8");
    const headers: http.OutgoingHttpHeaders = { accept: "application/json", ...this.baseHeaders() };
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = payload.length;
    }
    const timeoutMs = options.timeoutMs === undefined ? this.timeoutMs : (options.timeoutMs ?? undefined);
    const idempotent = method === "GET" || method === "HEAD";

    let response: RawResponse;
    try {
      response = await send(url, method, headers, payload, timeoutMs, options.signal);
    } catch (error) {
      // A kept-alive socket the server closed while idle: nothing was processed, try once more.
      if (idempotent && error instanceof StaleSocketError) {
        response = await send(url, method, headers, payload, timeoutMs, options.signal);
      } else {
        throw error;
      }
    }
    return decode<T>(method, path, response);
  }

  /**
   * Send `body` as the raw request body (streamed, with backpressure) and decode the
   * JSON answer. A server error mid-upload ends the upload and rejects with it.
   */
  upload<T>(method: string, path: string, query: Query, body: Readable | Uint8Array, contentType = "application/octet-stream", contentLength?: number): Promise<T> {
    const url = this.url(path, query);
    const headers: http.OutgoingHttpHeaders = { accept: "application/json", "content-type": contentType, ...this.baseHeaders() };
    if (body instanceof Uint8Array) headers["content-length"] = body.length;
    else if (contentLength !== undefined) headers["content-length"] = contentLength;
    const lib = url.protocol === "https:" ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = lib.request(url, { method, headers });
      let answered = false;
      req.on("error", (error: NodeJS.ErrnoException) => {
        if (!answered) reject(connectionFailed(url, error));
      });
      req.on("response", (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          try {
            resolve(decode<T>(method, path, { status: res.statusCode ?? 0, statusText: res.statusMessage ?? "", body: Buffer.concat(chunks) }));
          } catch (error) {
            reject(error);
          }
          // The server answered before taking the whole body (an error): stop sending it.
          if (!(body instanceof Uint8Array)) body.unpipe?.(req);
          req.destroy();
        });
      });
      if (body instanceof Uint8Array) req.end(body);
      else {
        body.on("error", (error) => {
          req.destroy();
          if (!answered) reject(error);
        });
        body.pipe(req);
      }
    });
  }

  /** GET a raw body as a stream; a non-2xx answer rejects with its typed error. */
  download(path: string, query: Query): Promise<http.IncomingMessage> {
    const url = this.url(path, query);
    const lib = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(url, { method: "GET", headers: this.baseHeaders() });
      req.on("error", (error) => reject(connectionFailed(url, error)));
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(res);
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => reject(errorFromResponse(status, res.statusMessage ?? "", Buffer.concat(chunks).toString("utf8"))));
      });
      req.end();
    });
  }
}

function decode<T>(method: string, path: string, response: RawResponse): T {
  const text = response.body.toString("utf8");
  if (response.status >= 200 && response.status < 300) {
    if (text.trim() === "") return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new AgentboxApiError("INTERNAL", `${method} ${path}: the server answered ${response.status} with a body that is not JSON`, {
        status: response.status,
      });
    }
  }
  throw errorFromResponse(response.status, response.statusText, text);
}

/** Build the typed error for a non-2xx response, whatever its body looks like. */
export function errorFromResponse(status: number, statusText: string, text: string): AgentboxApiError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const error = isRecord(parsed) && isRecord(parsed["error"]) ? parsed["error"] : undefined;
  if (error !== undefined && typeof error["code"] === "string") {
    const rawCode = error["code"];
    const message = typeof error["message"] === "string" ? error["message"] : `HTTP ${status} ${statusText}`.trim();
    const details = isRecord(error["details"]) ? error["details"] : undefined;
    if (isErrorCode(rawCode)) return new AgentboxApiError(rawCode, message, { status, details });
    return new AgentboxApiError(codeForStatus(status), `${rawCode}: ${message}`, { status, details, serverCode: rawCode });
  }
  const snippet = text.trim().replace(/\s+/g, " ").slice(0, 200);
  const message = `HTTP ${status}${statusText ? ` ${statusText}` : ""}${snippet ? `: ${snippet}` : ""}`;
  return new AgentboxApiError(codeForStatus(status), message, { status });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

class StaleSocketError extends Error {}

function send(
  url: URL,
  method: string,
  headers: http.OutgoingHttpHeaders,
  payload: Buffer | undefined,
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
): Promise<RawResponse> {
  return new Promise<RawResponse>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const lib = url.protocol === "https:" ? https : http;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (error: unknown, response?: RawResponse): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (response !== undefined) resolve(response);
      else reject(error);
    };
    const req = lib.request(url, { method, headers });
    const onAbort = (): void => {
      finish(signal?.reason);
      req.destroy();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs !== undefined && timeoutMs > 0) {
      timer = setTimeout(() => {
        finish(
          new AgentboxApiError("TIMEOUT", `${method} ${url.pathname}: no response within ${timeoutMs} ms (client timeout)`, {
            details: { timeoutMs },
          }),
        );
        req.destroy();
      }, timeoutMs);
    }
    req.on("error", (error: NodeJS.ErrnoException) => {
      if (req.reusedSocket && error.code === "ECONNRESET") {
        finish(new StaleSocketError(error.message));
        return;
      }
      finish(connectionFailed(url, error));
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () =>
        finish(undefined, { status: res.statusCode ?? 0, statusText: res.statusMessage ?? "", body: Buffer.concat(chunks) }),
      );
      res.on("error", (error) => finish(connectionFailed(url, error)));
      res.on("close", () => {
        if (!res.complete) finish(connectionFailed(url, new Error("connection closed before the response was complete")));
      });
    });
    req.end(payload);
  });
}

function connectionFailed(url: URL, error: Error & { code?: string }): AgentboxApiError {
  const reason = error.code !== undefined && !error.message.includes(error.code) ? `${error.message} (${error.code})` : error.message;
  return new AgentboxApiError(CONNECTION_FAILED, `cannot reach agentbox at ${url.origin}: ${reason}`, {
    details: { url: url.origin, ...(error.code !== undefined ? { cause: error.code } : {}) },
    cause: error,
  });
}
