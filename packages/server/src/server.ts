/**
 * The control plane: HTTP API with auth, the store, the link to the runtime,
 * and the TTL reaper. `startServer` returns once it is listening.
 */
import { mkdirSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { AgentboxError, ERROR_CODES, LogsQuery, WatchQuery, parseOrThrow } from "@agentbox/protocol";
import { keyMatches, loadOrCreateApiKey } from "./api-key.js";
import { resolveConfig, type ServerOptions } from "./config.js";
import { Router } from "./http/router.js";
import { WebSocketHub } from "./http/websockets.js";
import { ProcessService } from "./process-service.js";
import { processRoutes } from "./routes/processes.js";
import { serveProcessStream } from "./streams/process-stream.js";
import { serveTerminalStream } from "./streams/terminal-stream.js";
import { sessionRoutes, terminalRoutes } from "./routes/sessions.js";
import { SessionService } from "./session-service.js";
import { TerminalService } from "./terminal-service.js";
import { isPublicUiPath, uiRoutes } from "./ui/terminal-page.js";
import { FileService } from "./file-service.js";
import { fileRoutes } from "./routes/files.js";
import { serveWatchStream } from "./streams/fs-watch-stream.js";
import { Metrics } from "./metrics.js";
import { RuntimeLink } from "./runtime-link.js";
import { sandboxRoutes } from "./routes/sandboxes.js";
import { SandboxService } from "./sandbox-service.js";
import { Store } from "./store.js";
import { TemplateService } from "./template-service.js";
import { ImageSources } from "./images.js";
import { CodeService } from "./code-service.js";
import { codeRoutes } from "./routes/code.js";
import { handOffCodeSession, serveCodeSessionHere } from "./streams/code-session.js";
import { VolumeService } from "./volume-service.js";
import { PoolService } from "./pool-service.js";
import { templateRoutes } from "./routes/templates.js";
import { volumeRoutes } from "./routes/volumes.js";
import { poolRoutes } from "./routes/pools.js";
import { networkRoutes } from "./routes/network.js";
import { PortService } from "./port-service.js";
import { PortProxy } from "./streams/port-proxy.js";
import { runtimeSocketPath } from "@agentbox/runtime";

export const SERVER_VERSION = "0.1.0";

export interface RunningServer {
  url: string;
  apiKey: string;
  apiKeyFile: string;
  dataDir: string;
  /** Stop listening. The runtime keeps running unless the server was started with keepRuntime: false. */
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown, contentType = "application/json"): void {
  const text = contentType === "application/json" ? JSON.stringify(body) : String(body);
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function bearer(req: IncomingMessage, url: URL): string | undefined {
  const header = req.headers.authorization;
  if (header?.startsWith("Bearer ")) return header.slice("Bearer ".length).trim();
  // Browsers cannot set headers on WebSockets; they may pass the key as ?token=.
  if (req.headers.upgrade?.toLowerCase() === "websocket") return url.searchParams.get("token") ?? undefined;
  return undefined;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const config = resolveConfig(options);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const { key: apiKey, file: apiKeyFile } = loadOrCreateApiKey(config.dataDir, config.apiKey);
  const log = (message: string) => process.stderr.write(`${new Date().toISOString()} server ${message}\n`);

  const store = new Store(config.dataDir);
  let sandboxes!: SandboxService;
  const runtime = new RuntimeLink(config.dataDir, (client) => sandboxes.reconcile(client));
  const imageSources = new ImageSources(config.dataDir, config.imageRoots);
  const templates = new TemplateService(store, runtime, imageSources, log);
  templates.ensureDefault();
  const volumes = new VolumeService(store, runtime);
  sandboxes = new SandboxService(store, runtime, templates, (name) => volumes.exists(name), log);
  const pools = new PoolService(store, templates, sandboxes, log);
  const metrics = new Metrics();
  let runtimeUp = false;
  let ready = false;

  const router = new Router();
  router.get("/healthz", () => ({ body: { status: "ok", version: SERVER_VERSION } }));
  router.get("/metrics", ({ res }) => {
    send(res, 200, metrics.render(sandboxes.counts(), runtimeUp), "text/plain; version=0.0.4");
    return undefined;
  });
  sandboxRoutes(router, sandboxes, pools, metrics);
  templateRoutes(router, templates, pools, imageSources);
  volumeRoutes(router, volumes);
  poolRoutes(router, pools);
  const processes = new ProcessService(sandboxes, runtime);
  processRoutes(router, processes);
  sessionRoutes(router, new SessionService(sandboxes, runtime));
  const terminals = new TerminalService(sandboxes, runtime);
  terminalRoutes(router, terminals);
  fileRoutes(router, new FileService(sandboxes, runtime));
  const code = new CodeService(sandboxes, runtime);
  codeRoutes(router, code);
  uiRoutes(router);
  const ports = new PortService(store, sandboxes);
  let listenUrl = "";
  networkRoutes(router, sandboxes, ports, () => listenUrl);
  const portProxy = new PortProxy(ports, sandboxes, runtimeSocketPath(config.dataDir), (given) => keyMatches(apiKey, given));

  const sockets = new WebSocketHub(
    (req, url) => keyMatches(apiKey, bearer(req, url)),
    () => ready,
    config.pingIntervalMs,
  );
  sockets.route("/v1/sandboxes/:id/processes/:pid/stream", (ws, params, url) => {
    const query = Object.fromEntries(url.searchParams);
    const binary = query.format === "binary";
    delete query.token;
    delete query.format;
    try {
      const q = parseOrThrow(LogsQuery, query, "query");
      return serveProcessStream(ws, processes, { sandboxId: params.id!, processId: params.pid!, ...q, binary });
    } catch (err) {
      const e = err as AgentboxError;
      ws.send(JSON.stringify({ type: "error", code: e.code, message: e.message }));
      ws.close(1008, e.code);
      return undefined;
    }
  });

  sockets.route("/v1/sandboxes/:id/fs/watch", (ws, params, url) => {
    const query = Object.fromEntries(url.searchParams);
    delete query.token;
    try {
      const q = parseOrThrow(WatchQuery, query, "query");
      return serveWatchStream(ws, sandboxes, runtime, params.id!, q.path, q.recursive);
    } catch (err) {
      const e = err as AgentboxError;
      ws.send(JSON.stringify({ type: "error", code: e.code, message: e.message }));
      ws.close(1008, e.code);
      return undefined;
    }
  });
  sockets.route(
    "/v1/sandboxes/:id/code/contexts/:cid/session",
    (ws, params) => serveCodeSessionHere(ws, code, params.id!, params.cid!),
    config.handOffCodeSessions ? (req, socket, head, params) => handOffCodeSession(req, socket, head, code, params.id!, params.cid!) : undefined,
  );
  sockets.route("/v1/sandboxes/:id/terminals/:tid/connect", (ws, params) => serveTerminalStream(ws, terminals, params.id!, params.tid!));

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  server.on("upgrade", (req, socket, head) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (ready && portProxy.matches(url.pathname)) return void portProxy.upgrade(req, socket, head, url);
    sockets.handleUpgrade(req, socket, head);
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    let status = 500;
    try {
      if (!ready) throw new AgentboxError("RUNTIME_UNAVAILABLE", "the server is starting; retry in a moment");
      const url = new URL(req.url ?? "/", "http://localhost");
      // Exposed ports check their own credential (the API key or the port's token).
      if (portProxy.matches(url.pathname)) {
        await portProxy.http(req, res, url);
        status = res.statusCode;
        return;
      }
      if (url.pathname !== "/healthz" && !isPublicUiPath(url.pathname) && !keyMatches(apiKey, bearer(req, url))) {
        throw new AgentboxError("UNAUTHORIZED", "missing or wrong API key (send Authorization: Bearer <key>)");
      }
      const { handler, params } = router.match(method, url.pathname);
      const result = await handler({ req, res, url, params });
      status = result?.status ?? 200;
      if (result) send(res, status, result.body);
      else status = res.statusCode;
    } catch (err) {
      const e = err instanceof AgentboxError ? err : new AgentboxError("INTERNAL", (err as Error).message ?? String(err));
      if (e.code === "INTERNAL") log(`internal error on ${method} ${req.url}: ${(err as Error).stack ?? String(err)}`);
      status = ERROR_CODES[e.code];
      // A body we stopped reading (a refused upload) leaves the connection unusable: say so.
      if (!req.complete && !res.headersSent) res.setHeader("connection", "close");
      if (!res.headersSent) send(res, status, e.toBody());
      else res.destroy();
      // Drain what is left of a body we refused so the connection can be reused or closed cleanly.
      req.resume();
    } finally {
      metrics.countRequest(method, status);
    }
  }

  // Listen first, so a busy port fails before anything is started; requests wait
  // until the runtime is connected and the store reconciled with it.
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(config.port, config.host, () => resolve());
    });
  } catch (err) {
    store.close();
    if ((err as { code?: string }).code === "EADDRINUSE") {
      throw new AgentboxError("CONFLICT", `${config.host}:${config.port} is already in use (is another agentbox server running? try --port)`);
    }
    throw err;
  }
  try {
    await runtime.connect();
  } catch (err) {
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    store.close();
    throw err;
  }
  ready = true;
  runtimeUp = true;
  templates.resumeProvisioning();
  pools.start();

  const reaper = setInterval(() => {
    void sandboxes
      .reap()
      .then(() => (runtimeUp = true))
      .catch((err: Error) => {
        runtimeUp = false;
        log(`reaper: ${err.message}`);
      });
  }, config.reaperIntervalMs);
  reaper.unref();

  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  listenUrl = `http://${host}:${address.port}`;

  return {
    url: `http://${host}:${address.port}`,
    apiKey,
    apiKeyFile,
    dataDir: config.dataDir,
    close: async () => {
      clearInterval(reaper);
      pools.stop();
      sockets.close();
      portProxy.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await runtime.close(!config.keepRuntime);
      store.close();
    },
  };
}
