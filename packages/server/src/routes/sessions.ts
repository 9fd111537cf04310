/** Routes of the Sessions and Terminals sections of the API (the terminal WebSocket is in terminal-stream.ts). */
import { AgentboxError, CreateSessionRequest, CreateTerminalRequest, ExecRequest, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { SessionService } from "../session-service.js";
import type { TerminalService } from "../terminal-service.js";

export function sessionRoutes(router: Router, sessions: SessionService): void {
  const base = "/v1/sandboxes/:id/sessions";

  router.post(base, async ({ req, params }) => {
    const body = parseOrThrow(CreateSessionRequest, await readJson(req));
    const { info, created } = await sessions.create(params.id!, body);
    return { status: created ? 201 : 200, body: info };
  });

  router.get(base, async ({ params }) => ({ body: { sessions: await sessions.list(params.id!) } }));

  router.get(`${base}/:sid`, async ({ params }) => ({ body: await sessions.get(params.id!, params.sid!) }));

  router.delete(`${base}/:sid`, async ({ params }) => {
    if (!(await sessions.delete(params.id!, params.sid!))) throw new AgentboxError("NOT_FOUND", `session ${params.sid} does not exist`, { session: params.sid });
    return { body: { deleted: true } };
  });

  router.post(`${base}/:sid/exec`, async ({ req, params }) => {
    const body = parseOrThrow(ExecRequest, await readJson(req));
    return { body: await sessions.exec(params.id!, params.sid!, body) };
  });
}

export function terminalRoutes(router: Router, terminals: TerminalService): void {
  const base = "/v1/sandboxes/:id/terminals";

  router.post(base, async ({ req, params }) => {
    const body = parseOrThrow(CreateTerminalRequest, await readJson(req));
    const { info, created } = await terminals.create(params.id!, body);
    return { status: created ? 201 : 200, body: info };
  });

  router.get(base, async ({ params }) => ({ body: { terminals: await terminals.list(params.id!) } }));

  router.get(`${base}/:tid`, async ({ params }) => ({ body: await terminals.get(params.id!, params.tid!) }));

  router.delete(`${base}/:tid`, async ({ params }) => {
    if (!(await terminals.delete(params.id!, params.tid!))) throw new AgentboxError("NOT_FOUND", `terminal ${params.tid} does not exist`, { terminal: params.tid });
    return { body: { deleted: true } };
  });
}
