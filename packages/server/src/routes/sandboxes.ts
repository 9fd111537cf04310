/** Routes of the Sandboxes and Stateless exec sections of the API. */
import { CreateSandboxRequest, ExecRequest, ListSandboxesQuery, SetTimeoutRequest, SnapshotRequest, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { Metrics } from "../metrics.js";
import type { PoolService } from "../pool-service.js";
import type { SandboxService } from "../sandbox-service.js";

export function sandboxRoutes(router: Router, sandboxes: SandboxService, pools: PoolService, metrics: Metrics): void {
  router.post("/v1/sandboxes", async ({ req }) => {
    const body = parseOrThrow(CreateSandboxRequest, await readJson(req));
    const { pool } = body;
    return { status: 201, body: pool !== undefined ? await pools.claim({ ...body, pool }) : await sandboxes.create(body) };
  });

  router.get("/v1/sandboxes", ({ url }) => {
    const metadata: Record<string, string> = {};
    const query: Record<string, unknown> = { metadata };
    for (const [key, value] of url.searchParams) {
      if (key.startsWith("metadata.")) metadata[key.slice("metadata.".length)] = value;
      else if (key === "status" || key === "template") query[key] = value;
    }
    const pool = url.searchParams.get("pool") ?? undefined;
    return { body: { sandboxes: sandboxes.list({ ...parseOrThrow(ListSandboxesQuery, query, "query"), ...(pool !== undefined ? { pool } : {}) }) } };
  });

  router.get("/v1/sandboxes/:id", async ({ params }) => ({ body: await sandboxes.describe(params.id!) }));

  router.post("/v1/sandboxes/:id/pause", async ({ params }) => ({ body: await sandboxes.pause(params.id!) }));
  router.post("/v1/sandboxes/:id/resume", async ({ params }) => ({ body: await sandboxes.resume(params.id!) }));
  router.post("/v1/sandboxes/:id/snapshot", async ({ req, params }) => {
    const body = parseOrThrow(SnapshotRequest, await readJson(req));
    return { status: 201, body: await sandboxes.snapshot(params.id!, body.template) };
  });

  router.delete("/v1/sandboxes/:id", async ({ params }) => ({ body: await sandboxes.delete(params.id!) }));

  router.post("/v1/sandboxes/:id/timeout", async ({ req, params }) => {
    const body = parseOrThrow(SetTimeoutRequest, await readJson(req));
    return { body: sandboxes.setTimeout(params.id!, body.timeoutSeconds) };
  });

  router.post("/v1/sandboxes/:id/exec", async ({ req, params }) => {
    const body = parseOrThrow(ExecRequest, await readJson(req));
    const result = await sandboxes.exec(params.id!, body);
    metrics.observeExec(result.durationMs);
    return { body: result };
  });
}
