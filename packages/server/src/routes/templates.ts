/** Routes of templates and image uploads (the Templates, volumes, pools section of the API). */
import { CreateTemplateRequest, PatchTemplateRequest, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { ImageSources } from "../images.js";
import type { PoolService } from "../pool-service.js";
import type { TemplateService } from "../template-service.js";

export function templateRoutes(router: Router, templates: TemplateService, pools: PoolService, sources: ImageSources): void {
  /** The body is an image archive (an OCI layout as a tar, or a docker save); the answer's `image` goes in a template. */
  router.post("/v1/images", async ({ req }) => ({ status: 201, body: await sources.receive(req) }));
  router.post("/v1/templates", async ({ req }) => {
    const body = parseOrThrow(CreateTemplateRequest, await readJson(req));
    return { status: 201, body: await templates.create(body) };
  });
  router.get("/v1/templates", () => ({ body: { templates: templates.list() } }));
  router.get("/v1/templates/:name", async ({ params }) => ({ body: await templates.get(params.name!) }));
  router.patch("/v1/templates/:name", async ({ req, params }) => {
    const body = parseOrThrow(PatchTemplateRequest, await readJson(req));
    return { body: await templates.patch(params.name!, body) };
  });
  router.delete("/v1/templates/:name", async ({ params }) => {
    await templates.delete(params.name!, pools.usingTemplate(params.name!));
    return { body: { deleted: true } };
  });
}
