/** Routes of the Files section of the API (the watch WebSocket is in fs-watch-stream.ts). */
import { DeleteQuery, ListQuery, MkdirRequest, MoveRequest, PathQuery, WriteFileQuery, parseOrThrow } from "@agentbox/protocol";
import { readJson } from "../http/body.js";
import type { Router } from "../http/router.js";
import type { FileService } from "../file-service.js";

const DEFAULT_FILE_MODE = 0o644;

export function fileRoutes(router: Router, files: FileService): void {
  const base = "/v1/sandboxes/:id";
  const query = (url: URL) => Object.fromEntries(url.searchParams);

  router.get(`${base}/files`, async ({ url, params, res }) => {
    const q = parseOrThrow(PathQuery, query(url), "query");
    await files.download(params.id!, q.path, res, false);
    return undefined;
  });

  router.put(`${base}/files`, async ({ url, params, req, res }) => {
    const q = parseOrThrow(WriteFileQuery, query(url), "query");
    return { body: await files.upload(params.id!, q.path, q.mode ?? DEFAULT_FILE_MODE, req, false, res) };
  });

  router.get(`${base}/fs/list`, async ({ url, params }) => {
    const q = parseOrThrow(ListQuery, query(url), "query");
    return { body: await files.list(params.id!, q.path, q.depth) };
  });

  router.get(`${base}/fs/stat`, async ({ url, params }) => {
    const q = parseOrThrow(PathQuery, query(url), "query");
    return { body: await files.stat(params.id!, q.path) };
  });

  router.post(`${base}/fs/mkdir`, async ({ req, params }) => {
    const body = parseOrThrow(MkdirRequest, await readJson(req));
    await files.mkdir(params.id!, body.path, body.recursive ?? false);
    return { status: 201, body: await files.stat(params.id!, body.path) };
  });

  router.post(`${base}/fs/move`, async ({ req, params }) => {
    const body = parseOrThrow(MoveRequest, await readJson(req));
    await files.move(params.id!, body.from, body.to);
    return { body: await files.stat(params.id!, body.to) };
  });

  router.delete(`${base}/fs`, async ({ url, params }) => {
    const q = parseOrThrow(DeleteQuery, query(url), "query");
    await files.remove(params.id!, q.path, q.recursive);
    return { body: { deleted: true, path: q.path } };
  });

  router.get(`${base}/fs/archive`, async ({ url, params, res }) => {
    const q = parseOrThrow(PathQuery, query(url), "query");
    await files.download(params.id!, q.path, res, true);
    return undefined;
  });

  router.put(`${base}/fs/archive`, async ({ url, params, req }) => {
    const q = parseOrThrow(PathQuery, query(url), "query");
    return { body: await files.upload(params.id!, q.path, 0, req, true) };
  });
}
