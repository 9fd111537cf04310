/** Routes of volumes (the Templates, volumes, pools section of the API). */
import { CreateVolumeRequest, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { VolumeService } from "../volume-service.js";

export function volumeRoutes(router: Router, volumes: VolumeService): void {
  router.post("/v1/volumes", async ({ req }) => {
    const body = parseOrThrow(CreateVolumeRequest, await readJson(req));
    return { status: 201, body: await volumes.create(body) };
  });
  router.get("/v1/volumes", async () => ({ body: { volumes: await volumes.list() } }));
  router.get("/v1/volumes/:name", async ({ params }) => ({ body: await volumes.get(params.name!) }));
  router.delete("/v1/volumes/:name", async ({ params }) => {
    await volumes.delete(params.name!);
    return { body: { deleted: true } };
  });
}
