/**
 * The files API of a sandbox: the control plane checks the sandbox and moves
 * bytes between HTTP and the runtime in chunks (never a whole file in memory).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { AgentboxError, type FileEntry } from "@agentbox/protocol";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxService } from "./sandbox-service.js";

/** Bytes per runtime round trip: large enough that the trips cost little, small enough to bound memory. */
const CHUNK_BYTES = 4 * 1024 * 1024;

export class FileService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly runtime: RuntimeLink,
  ) {}

  stat(sandboxId: string, path: string): Promise<FileEntry> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("fs.op", { sandboxId, request: { op: "stat", path } }) as Promise<FileEntry>;
  }

  list(sandboxId: string, path: string, depth: number): Promise<FileEntry[]> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("fs.op", { sandboxId, request: { op: "list", path, depth } }) as Promise<FileEntry[]>;
  }

  async mkdir(sandboxId: string, path: string, recursive: boolean): Promise<void> {
    this.sandboxes.requireReady(sandboxId);
    await this.runtime.request("fs.op", { sandboxId, request: { op: "mkdir", path, recursive } });
  }

  async move(sandboxId: string, from: string, to: string): Promise<void> {
    this.sandboxes.requireReady(sandboxId);
    await this.runtime.request("fs.op", { sandboxId, request: { op: "move", from, to } });
  }

  async remove(sandboxId: string, path: string, recursive: boolean): Promise<void> {
    this.sandboxes.requireReady(sandboxId);
    await this.runtime.request("fs.op", { sandboxId, request: { op: "remove", path, recursive } });
  }

  /** Stream a file (or a tar of a directory) into `res`. */
  async download(sandboxId: string, path: string, res: ServerResponse, archive: boolean): Promise<void> {
    this.sandboxes.requireReady(sandboxId);
    const { handle, size } = await this.runtime.request("fs.openRead", { sandboxId, path, archive });
    let gone = false;
    res.once("close", () => (gone = true));
    const headers: Record<string, string | number> = { "content-type": archive ? "application/x-tar" : "application/octet-stream" };
    if (size !== undefined) headers["content-length"] = size;
    res.writeHead(200, headers);
    const read = () => {
      const r = this.runtime.requestWithParts("fs.read", { sandboxId, handle, maxBytes: CHUNK_BYTES, waitMs: 30_000 });
      r.catch(() => undefined);
      return r;
    };
    let sent = 0;
    let next = read();
    try {
      for (;;) {
        const { result, parts } = await next;
        if (!result.done) next = read(); // one read ahead while this chunk goes out
        // A file that grows while read is cut at the size announced.
        let flowing = true;
        for (const chunk of parts) {
          const part = size !== undefined ? chunk.subarray(0, Math.max(0, size - sent)) : chunk;
          sent += part.length;
          if (part.length > 0) flowing = res.write(part);
        }
        if (!flowing && !gone && !res.destroyed) {
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off("drain", done);
              res.off("close", done);
              resolve();
            };
            res.on("drain", done);
            res.on("close", done);
          });
        }
        if (gone) throw new Error("client left");
        if (result.done || (size !== undefined && sent >= size)) break;
      }
      if (size !== undefined && sent < size) {
        // The file shrank meanwhile: the client must not take a short body for the whole file.
        res.destroy();
      } else res.end();
    } catch {
      res.destroy();
    } finally {
      await this.runtime.request("fs.abort", { sandboxId, handle }).catch(() => undefined);
    }
  }

  /** Stream the request body into a file (or, with `archive`, extract a tar into a directory). */
  async upload(sandboxId: string, path: string, mode: number, req: IncomingMessage, archive: boolean): Promise<{ path: string; size?: number }> {
    this.sandboxes.requireReady(sandboxId);
    const { handle } = await this.runtime.request("fs.openWrite", { sandboxId, path, mode, archive });
    try {
      // Two chunks in flight: the runtime writes one into the sandbox while the next arrives.
      const inFlight: Promise<unknown>[] = [];
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const body = pending;
        pending = [];
        pendingBytes = 0;
        const sent = this.runtime.requestWithBody("fs.write", { sandboxId, handle }, body);
        sent.catch(() => undefined);
        inFlight.push(sent);
        if (inFlight.length >= 2) await inFlight.shift();
      };
      for await (const chunk of req) {
        pending.push(chunk as Buffer);
        pendingBytes += (chunk as Buffer).length;
        if (pendingBytes >= CHUNK_BYTES) await flush();
      }
      if (!req.complete) throw new AgentboxError("INVALID_REQUEST", "the upload ended before its body was complete");
      await flush();
      for (const p of inFlight.splice(0)) await p;
      const done = await this.runtime.request("fs.finishWrite", { sandboxId, handle });
      return done.size !== undefined ? { path, size: done.size } : { path };
    } catch (err) {
      await this.runtime.request("fs.abort", { sandboxId, handle }).catch(() => undefined);
      // The client went away mid-body: nobody to answer, and nothing went wrong here.
      if (!(err instanceof AgentboxError) && !req.complete) throw new AgentboxError("INVALID_REQUEST", "the upload was cut off before its body was complete");
      throw err;
    }
  }
}
