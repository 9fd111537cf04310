/** Routes of the Processes section of the API (the stream WebSocket is in process-stream.ts). */
import { KillRequest, LogsQuery, ProcessInputRequest, StartProcessRequest, WaitQuery, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { ProcessService } from "../process-service.js";

export function processRoutes(router: Router, processes: ProcessService): void {
  const base = "/v1/sandboxes/:id/processes";

  router.post(base, async ({ req, params }) => {
    const body = parseOrThrow(StartProcessRequest, await readJson(req));
    const { info, created } = await processes.start(params.id!, body);
    return { status: created ? 201 : 200, body: info };
  });

  router.get(base, async ({ params }) => ({ body: { processes: await processes.list(params.id!) } }));

  router.get(`${base}/:pid`, async ({ params }) => ({ body: await processes.get(params.id!, params.pid!) }));

  router.post(`${base}/:pid/input`, async ({ req, params }) => {
    const body = parseOrThrow(ProcessInputRequest, await readJson(req));
    await processes.input(params.id!, params.pid!, body);
    return { body: { ok: true } };
  });

  router.post(`${base}/:pid/close-stdin`, async ({ params }) => {
    await processes.closeStdin(params.id!, params.pid!);
    return { body: { ok: true } };
  });

  router.post(`${base}/:pid/kill`, async ({ req, params }) => {
    const body = parseOrThrow(KillRequest, await readJson(req));
    return { body: await processes.kill(params.id!, params.pid!, body.signal) };
  });

  router.get(`${base}/:pid/logs`, async ({ url, params }) => {
    const q = parseOrThrow(LogsQuery, Object.fromEntries(url.searchParams), "query");
    return { body: await processes.logs(params.id!, params.pid!, q.stdoutOffset, q.stderrOffset) };
  });

  router.get(`${base}/:pid/wait`, async ({ url, params }) => {
    const q = parseOrThrow(WaitQuery, Object.fromEntries(url.searchParams), "query");
    return { body: await processes.wait(params.id!, params.pid!, q.timeoutMs) };
  });
}
