/** Server settings: explicit options win over environment variables, which win over defaults. */
import { resolve } from "node:path";
import { DEFAULT_HOST, DEFAULT_PORT } from "@agentbox/protocol";

export interface ServerOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  /** Fixed API key; otherwise AGENTBOX_API_KEY, otherwise the key stored in the data dir. */
  apiKey?: string;
  /** Leave the runtime (and its sandboxes) running when the server closes. Default true. */
  keepRuntime?: boolean;
  /** How often the reaper looks for expired sandboxes. */
  reaperIntervalMs?: number;
  /** Keep-alive ping interval of WebSockets (default 30 s). */
  pingIntervalMs?: number;
  /**
   * Hand code session connections to the runtime, which then serves them (default true). The
   * server serves a session itself when this is false or the hand-off fails.
   */
  handOffCodeSessions?: boolean;
  /**
   * Host directories from which templates may import `dir:` and `oci:` images by path
   * (env AGENTBOX_IMAGE_ROOTS, colon-separated). Default none: images come as uploads
   * (`POST /v1/images`), so an API caller cannot read host files through an image.
   */
  imageRoots?: string[];
}

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  apiKey: string | undefined;
  keepRuntime: boolean;
  reaperIntervalMs: number;
  pingIntervalMs: number;
  handOffCodeSessions: boolean;
  imageRoots: string[];
}

export function resolveConfig(opts: ServerOptions = {}, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const port = opts.port ?? (env.AGENTBOX_PORT ? Number(env.AGENTBOX_PORT) : DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port ${String(env.AGENTBOX_PORT ?? port)}`);
  return {
    host: opts.host ?? env.AGENTBOX_HOST ?? DEFAULT_HOST,
    port,
    dataDir: resolve(opts.dataDir ?? env.AGENTBOX_DATA_DIR ?? ".agentbox"),
    apiKey: opts.apiKey ?? (env.AGENTBOX_API_KEY || undefined),
    keepRuntime: opts.keepRuntime ?? true,
    reaperIntervalMs: opts.reaperIntervalMs ?? 1000,
    pingIntervalMs: opts.pingIntervalMs ?? 30_000,
    handOffCodeSessions: opts.handOffCodeSessions ?? true,
    imageRoots: (opts.imageRoots ?? (env.AGENTBOX_IMAGE_ROOTS ? env.AGENTBOX_IMAGE_ROOTS.split(":") : [])).filter((r) => r !== "").map((r) => resolve(r)),
  };
}
