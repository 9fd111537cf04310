/** Routes of the Network and ports section of the API (the proxied traffic itself: streams/port-proxy.ts). */
import { ExposePortRequest, NetworkLogQuery, UpdateSandboxRequest, parseOrThrow, AgentboxError } from "@agentbox/protocol";
import type { IncomingMessage } from "node:http";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { PortService } from "../port-service.js";
import type { SandboxService } from "../sandbox-service.js";

function portParam(text: string | undefined): number {
  const port = Number(text);
  if (!/^[0-9]{1,5}$/.test(text ?? "") || port < 1 || port > 65535) throw new AgentboxError("INVALID_REQUEST", `port: "${text}" is not a port (1-65535)`, { field: "port" });
  return port;
}

/** The server's URL as the caller reached it (so a port url works from where the caller is). */
export function baseUrl(req: IncomingMessage, fallback: string): string {
  const host = req.headers.host;
  return host && /^[A-Za-z0-9.:[\]-]+$/.test(host) ? `http://${host}` : fallback;
}

export function networkRoutes(router: Router, sandboxes: SandboxService, ports: PortService, fallbackUrl: () => string): void {
  router.patch("/v1/sandboxes/:id", async ({ req, params }) => {
    const body = parseOrThrow(UpdateSandboxRequest, await readJson(req));
    return { body: await sandboxes.updateNetwork(params.id!, body.network) };
  });

  router.get("/v1/sandboxes/:id/network/log", async ({ url, params }) => {
    const q = parseOrThrow(NetworkLogQuery, Object.fromEntries(url.searchParams), "query");
    return { body: { entries: await sandboxes.networkLog(params.id!, q.limit) } };
  });

  router.post("/v1/sandboxes/:id/ports", async ({ req, params }) => {
    const body = parseOrThrow(ExposePortRequest, await readJson(req));
    return { status: 201, body: ports.expose(params.id!, body.port, baseUrl(req, fallbackUrl())) };
  });
  router.get("/v1/sandboxes/:id/ports", ({ req, params }) => ({ body: { ports: ports.list(params.id!, baseUrl(req, fallbackUrl())) } }));
  router.get("/v1/sandboxes/:id/ports/:port", ({ req, params }) => ({ body: ports.get(params.id!, portParam(params.port), baseUrl(req, fallbackUrl())) }));
  router.delete("/v1/sandboxes/:id/ports/:port", ({ params }) => ({ body: ports.close(params.id!, portParam(params.port)) }));
}
