/** Routes of the Code contexts section of the API (the session WebSocket is in streams/code-session.ts). */
import { AgentboxError, CreateCodeContextRequest, InstallDependenciesBody, RunCodeRequest, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { CodeService } from "../code-service.js";

export function codeRoutes(router: Router, code: CodeService): void {
  const base = "/v1/sandboxes/:id/code/contexts";
  router.post(base, async ({ req, params }) => {
    const body = parseOrThrow(CreateCodeContextRequest, await readJson(req));
    return { status: 201, body: await code.create(params.id!, body) };
  });
  router.get(base, async ({ params }) => ({ body: { contexts: await code.list(params.id!) } }));
  router.get(`${base}/:cid`, async ({ params }) => ({ body: await code.get(params.id!, params.cid!) }));
  router.delete(`${base}/:cid`, async ({ params }) => {
    if (!(await code.delete(params.id!, params.cid!))) throw new AgentboxError("NOT_FOUND", `code context ${params.cid} does not exist`);
    return { body: { deleted: true } };
  });
  router.post(`${base}/:cid/restart`, async ({ params }) => ({ body: await code.restart(params.id!, params.cid!) }));
  router.post(`${base}/:cid/run`, async ({ req, params }) => {
    const body = parseOrThrow(RunCodeRequest, await readJson(req));
    const execution = await code.run(params.id!, params.cid!, body);
    // A worker that died mid-run: the context works again (fresh state), the run failed.
    if (execution.error?.name === "WorkerCrashed") {
      throw new AgentboxError("WORKER_CRASHED", `the worker died during the run: ${execution.error.value}`, { execution });
    }
    return { body: execution };
  });
  router.post(`${base}/:cid/dependencies`, async ({ req, params }) => {
    const body = parseOrThrow(InstallDependenciesBody, await readJson(req));
    return { body: await code.install(params.id!, params.cid!, body) };
  });
}
