/**
 * The files API of a sandbox: the control plane checks the sandbox and moves
 * bytes between HTTP and the runtime in chunks (never a whole file in memory).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { AgentboxError, type FileEntry } from "@agentbox/protocol";
import { socketFd, startReading, stopReading } from "@agentbox/runtime";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxService } from "./sandbox-service.js";

/** Bytes per runtime round trip: large enough that the trips cost little, small enough to bound memory. */
const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * A file body this large goes between the client's socket and the sandbox by relay (fs.relay:
 * splice in a helper, past both event loops) after the bytes already read.
 */
const RELAY_MIN_BYTES = 1024 * 1024;

/** The descriptor of a plain TCP or unix socket a relay can splice to, or -1 (TLS, or none). */
export function relayFd(socket: Socket | null | undefined): number {
  if (!socket || socket.destroyed || "encrypted" in socket) return -1;
  return socketFd(socket);
}

/**
 * After a relayed upload failed: read and drop the `bytes` of the body the client is still
 * sending, so that it gets to read the answer (closing on unread bytes would reset the
 * connection under it). Gives up after 30 s or when the client leaves.
 */
async function discardBody(req: IncomingMessage, socket: Socket, bytes: number): Promise<void> {
  if (bytes <= 0 || socket.destroyed) return;
  delete (req as unknown as { _read?: unknown })._read; // IncomingMessage's own again
  let left = bytes;
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      req.off("data", onData);
      socket.off("close", done);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      left -= chunk.length;
      if (left <= 0) done();
    };
    const timer = setTimeout(done, 30_000);
    req.on("data", onData);
    socket.once("close", done);
    startReading(socket);
  });
}

/** Resolves at the next "drain" or "close" of `stream`, whichever comes first. */
function drainedOrClosed(stream: Socket | ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

/** Resolves once everything written to `socket` has reached the kernel (or the socket is gone). */
async function flushed(socket: Socket): Promise<void> {
  while (!socket.destroyed && (socket.writableLength > 0 || socket.writableCorked > 0)) {
    if (socket.writableNeedDrain) await drainedOrClosed(socket);
    else await new Promise((resolve) => setImmediate(resolve));
  }
}

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
    const fd = relayFd(res.socket);
    if (!archive && size !== undefined && size >= RELAY_MIN_BYTES && fd >= 0) {
      await this.relayDownload(sandboxId, handle, size, res, res.socket!, fd);
      return;
    }
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
        if (!flowing && !gone && !res.destroyed) await drainedOrClosed(res);
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

  /**
   * A download by relay: what the runtime read ahead goes out through `res`, then the rest by
   * splice straight from the sandbox's helper into the client's socket. `res` is ended (or, if
   * fewer bytes than announced could be sent, destroyed) here.
   */
  private async relayDownload(sandboxId: string, handle: string, size: number, res: ServerResponse, socket: Socket, fd: number): Promise<void> {
    try {
      const { result, parts } = await this.runtime.requestWithParts("fs.detachRead", { sandboxId, handle });
      let sent = 0;
      for (const chunk of parts) {
        const part = chunk.subarray(0, Math.max(0, size - sent));
        sent += part.length;
        if (part.length > 0) res.write(part);
      }
      if (sent === 0) res.flushHeaders();
      // The relay writes after these bytes: they must have left this process first.
      await flushed(socket);
      if (socket.destroyed) throw new Error("client left");
      if (sent < size) {
        if (result.done) throw new Error("the file shrank while it was read");
        const { moved } = await this.runtime.request("fs.relay", { sandboxId, handle, fd, count: size - sent });
        if (moved < size - sent) throw new Error("the relay stopped early");
      }
      res.end();
    } catch {
      res.destroy();
    } finally {
      await this.runtime.request("fs.abort", { sandboxId, handle }).catch(() => undefined);
    }
  }

  /** Stream the request body into a file (or, with `archive`, extract a tar into a directory). */
  async upload(sandboxId: string, path: string, mode: number, req: IncomingMessage, archive: boolean, res?: ServerResponse): Promise<{ path: string; size?: number }> {
    this.sandboxes.requireReady(sandboxId);
    const { handle } = await this.runtime.request("fs.openWrite", { sandboxId, path, mode, archive });
    const length = Number(req.headers["content-length"]);
    const fd = relayFd(req.socket);
    if (!archive && res && req.headers["transfer-encoding"] === undefined && length >= RELAY_MIN_BYTES && fd >= 0) {
      return this.relayUpload(sandboxId, handle, path, length, req, res, fd);
    }
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

  /**
   * An upload by relay: the body bytes Node has already read go to the runtime as usual, the rest
   * by splice from the client's socket into the sandbox's helper. Node's HTTP parser never sees
   * those bytes, so this connection cannot carry another request: the answer closes it.
   */
  private async relayUpload(sandboxId: string, handle: string, path: string, length: number, req: IncomingMessage, res: ServerResponse, fd: number): Promise<{ path: string; size?: number }> {
    res.setHeader("connection", "close");
    const socket = req.socket;
    // Body bytes the client still has to send (or Node holds) should anything fail: they are
    // read and dropped before the answer, or the client could not read it.
    let unread = length;
    try {
      // Node must not read another byte of this socket: IncomingMessage's _read would start the
      // socket again (on the next tick), so it goes; a resume already scheduled runs before the
      // second stop; what was read until then is taken from the request.
      (req as unknown as { _read: () => void })._read = () => undefined;
      const head: Buffer[] = [];
      const take = () => {
        stopReading(socket);
        for (let chunk: Buffer | null; (chunk = req.read() as Buffer | null) !== null; ) {
          head.push(chunk);
          unread -= chunk.length;
        }
      };
      take();
      await new Promise((resolve) => setImmediate(resolve));
      take();
      if (head.length > 0) await this.runtime.requestWithBody("fs.write", { sandboxId, handle }, head);
      if (unread > 0) {
        try {
          unread -= (await this.runtime.request("fs.relay", { sandboxId, handle, fd, count: unread })).moved;
        } catch (err) {
          // The sandbox refused the bytes (LIMIT_EXCEEDED, …), after taking `moved` of them: an
          // internal figure, not part of the error the client gets.
          if (err instanceof AgentboxError && typeof err.details?.moved === "number") {
            const { moved, ...details } = err.details;
            unread -= moved as number;
            throw new AgentboxError(err.code, err.message, details);
          }
          throw err;
        }
        if (unread > 0) throw new AgentboxError("INVALID_REQUEST", "the upload was cut off before its body was complete");
      }
      const done = await this.runtime.request("fs.finishWrite", { sandboxId, handle });
      return done.size !== undefined ? { path, size: done.size } : { path };
    } catch (err) {
      await this.runtime.request("fs.abort", { sandboxId, handle }).catch(() => undefined);
      await discardBody(req, socket, unread);
      throw err;
    }
  }
}
