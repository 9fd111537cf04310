/** Routes of warm pools (the Templates, volumes, pools section of the API). */
import { CreatePoolRequest, PatchPoolRequest, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { PoolService } from "../pool-service.js";

export function poolRoutes(router: Router, pools: PoolService): void {
  router.post("/v1/pools", async ({ req }) => {
    const body = parseOrThrow(CreatePoolRequest, await readJson(req));
    return { status: 201, body: pools.create(body) };
  });
  router.get("/v1/pools", () => ({ body: { pools: pools.list() } }));
  router.get("/v1/pools/:name", ({ params }) => ({ body: pools.get(params.name!) }));
  router.patch("/v1/pools/:name", async ({ req, params }) => {
    const body = parseOrThrow(PatchPoolRequest, await readJson(req));
    return { body: pools.patch(params.name!, body) };
  });
  router.delete("/v1/pools/:name", async ({ params }) => {
    await pools.delete(params.name!);
    return { body: { deleted: true } };
  });
}
