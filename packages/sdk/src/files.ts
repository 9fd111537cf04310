/**
 * `sandbox.files`: read, write, list and watch files in a sandbox, and move
 * whole directories in and out as tar archives. Paths are the sandbox's own;
 * relative ones are relative to its workdir (`/workspace`). Transfers stream.
 *
 *   await sb.files.write("src/app.py", "print('hi')\n");
 *   const text = await sb.files.read("src/app.py");                     // a string
 *   const bytes = await sb.files.read("model.bin", { format: "bytes" }); // a Uint8Array
 *   await sb.files.uploadDir("./project", "/workspace/project");
 *   const watcher = await sb.files.watch("src", (e) => console.log(e.type, e.path));
 */
import { ReadStream, createReadStream, createWriteStream, statSync } from "node:fs";
import { mkdir, symlink } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import WebSocket from "ws";
import type { FileEntry, WatchEvent, WatchMessage } from "@agentbox/protocol";
import { AgentboxApiError, CONNECTION_FAILED, isAgentboxError, isSdkErrorCode } from "./errors.js";
import type { HttpTransport } from "./http.js";
import { counter, directoryTar } from "./local-archive.js";

export type { FileEntry, WatchEvent };

export interface WriteOptions {
  /** Permission bits of the file (default 0o644). */
  mode?: number;
}

/** A read that ended before the file's announced size is an error, not a short file. */
function requireWhole(file: string, res: IncomingMessage, bytes: number): void {
  const expected = Number(res.headers["content-length"]);
  if (!res.complete || (Number.isFinite(expected) && bytes !== expected)) {
    throw new AgentboxApiError(CONNECTION_FAILED, `reading ${file}: the connection ended after ${bytes} of ${expected} bytes`);
  }
}

/** Slices of a file transfer: large ones make fewer trips through each event loop on the way. */
const TRANSFER_SLICE_BYTES = 4 * 1024 * 1024;

/** The size of the file a not yet started fs.ReadStream reads whole, else undefined. */
function wholeFileLength(stream: Readable): number | undefined {
  if (!(stream instanceof ReadStream) || typeof stream.path !== "string" || stream.bytesRead > 0) return undefined;
  const range = stream as unknown as { start?: number; end?: number };
  if (range.start !== undefined || (range.end !== undefined && range.end !== Infinity)) return undefined;
  try {
    const st = statSync(stream.path);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

export interface TransferOptions {
  /** Called as bytes go out or come in (`total` when known). */
  onProgress?: (bytes: number, total?: number) => void;
}

export interface WatchHandle {
  /** Stop watching (frees the watcher in the sandbox). */
  close(): void;
  /**
   * Resolves when the watch has ended, for whatever reason, with the WebSocket's close code:
   * 1000 when it was closed or its directory or sandbox went away, 1001 when the server stopped.
   */
  readonly closed: Promise<{ code: number; reason: string }>;
}

export class Files {
  /** @internal Use `sandbox.files`. */
  constructor(
    private readonly http: HttpTransport,
    private readonly sandboxId: string,
  ) {}

  private get base(): string {
    return `/v1/sandboxes/${encodeURIComponent(this.sandboxId)}`;
  }

  /** A file's content: text (UTF-8, the default), bytes, or a stream. */
  read(file: string, options?: { format?: "text" }): Promise<string>;
  read(file: string, options: { format: "bytes" }): Promise<Uint8Array>;
  read(file: string, options: { format: "stream" }): Promise<Readable>;
  async read(file: string, options: { format?: "text" | "bytes" | "stream" } = {}): Promise<string | Uint8Array | Readable> {
    const res = await this.http.download(`${this.base}/files`, { path: file });
    if (options.format === "stream") return res;
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const all = Buffer.concat(chunks);
    requireWhole(file, res, all.length);
    return options.format === "bytes" ? new Uint8Array(all.buffer, all.byteOffset, all.length) : all.toString("utf8");
  }

  /** Write a file (parents are created; it appears only once complete). `data` may be a stream. */
  write(file: string, data: string | Uint8Array | Readable, options: WriteOptions & TransferOptions = {}): Promise<{ path: string; size: number }> {
    const query: Record<string, string> = { path: file };
    if (options.mode !== undefined) query.mode = options.mode.toString(8).padStart(3, "0");
    let body: Uint8Array | Readable = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    // A whole local file has a known length: sent with it (not chunked), the server can move
    // the body by splice instead of through its event loop.
    const length = body instanceof Uint8Array ? body.length : wholeFileLength(body);
    if (options.onProgress) body = (body instanceof Uint8Array ? Readable.from([Buffer.from(body)]) : body).pipe(counter(options.onProgress, length));
    return this.http.upload("PUT", `${this.base}/files`, query, body, "application/octet-stream", length);
  }

  /**
   * Copy a local file into the sandbox. Read in large slices and sent with its length, it goes
   * through the server by splice: the fastest way to move a big file in.
   */
  uploadFile(localPath: string, remotePath: string, options: WriteOptions & TransferOptions = {}): Promise<{ path: string; size: number }> {
    return this.write(remotePath, createReadStream(localPath, { highWaterMark: TRANSFER_SLICE_BYTES }), options);
  }

  /**
   * Copy a file of the sandbox to a local path (written in large slices). Rejects with
   * CONNECTION_FAILED if the connection ends before the whole file arrived.
   */
  async downloadFile(remotePath: string, localPath: string, options: TransferOptions & { mode?: number } = {}): Promise<{ path: string; size: number }> {
    const res = (await this.read(remotePath, { format: "stream" })) as IncomingMessage;
    const total = Number(res.headers["content-length"]);
    let bytes = 0;
    const count = counter((n) => {
      bytes = n;
      options.onProgress?.(n, Number.isFinite(total) ? total : undefined);
    });
    const sink = createWriteStream(localPath, { highWaterMark: TRANSFER_SLICE_BYTES, ...(options.mode !== undefined ? { mode: options.mode } : {}) });
    await pipeline(res, count, sink);
    requireWhole(remotePath, res, bytes);
    return { path: localPath, size: bytes };
  }

  /** The entries of a directory; `depth` > 1 descends (depth 2: children and grandchildren). */
  list(dir: string, options: { depth?: number } = {}): Promise<FileEntry[]> {
    return this.http.request<FileEntry[]>("GET", `${this.base}/fs/list`, { query: { path: dir, depth: options.depth } });
  }

  /** One entry (a symlink is described, not followed). Throws NOT_FOUND when absent. */
  stat(file: string): Promise<FileEntry> {
    return this.http.request<FileEntry>("GET", `${this.base}/fs/stat`, { query: { path: file } });
  }

  async exists(file: string): Promise<boolean> {
    try {
      await this.stat(file);
      return true;
    } catch (error) {
      if (isAgentboxError(error, "NOT_FOUND")) return false;
      throw error;
    }
  }

  mkdir(dir: string, options: { recursive?: boolean } = {}): Promise<FileEntry> {
    return this.http.request<FileEntry>("POST", `${this.base}/fs/mkdir`, { body: { path: dir, recursive: options.recursive ?? false } });
  }

  move(from: string, to: string): Promise<FileEntry> {
    return this.http.request<FileEntry>("POST", `${this.base}/fs/move`, { body: { from, to } });
  }

  async remove(file: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.http.request("DELETE", `${this.base}/fs`, { query: { path: file, recursive: options.recursive ?? false } });
  }

  /** Copy a local directory into the sandbox (as one tar stream); `remoteDir` is created. */
  async uploadDir(localDir: string, remoteDir: string, options: TransferOptions = {}): Promise<void> {
    const { stream, packing } = directoryTar(localDir);
    const body = options.onProgress ? stream.pipe(counter(options.onProgress)) : stream;
    await Promise.all([this.http.upload("PUT", `${this.base}/fs/archive`, { path: remoteDir }, body, "application/x-tar"), packing]);
  }

  /**
   * Copy a directory of the sandbox here. Entries that would land outside `localDir`
   * (absolute names, `..`, links pointing out) are refused: the archive comes from the
   * sandbox and is treated as untrusted.
   */
  async downloadDir(remoteDir: string, localDir: string, options: TransferOptions = {}): Promise<void> {
    const res = await this.http.download(`${this.base}/fs/archive`, { path: remoteDir });
    const root = path.resolve(localDir);
    await mkdir(root, { recursive: true });
    const extract = tar.extract();
    const links = new Set<string>();
    extract.on("entry", (header, stream, next) => {
      void (async () => {
        const name = path.posix.normalize(header.name);
        const target = path.resolve(root, name);
        const inside = (p: string) => p === root || p.startsWith(root + path.sep);
        if (header.name.startsWith("/") || !inside(target) || [...links].some((l) => target.startsWith(l + path.sep))) {
          throw new AgentboxApiError("PATH_OUTSIDE_SANDBOX", `archive entry ${JSON.stringify(header.name)} would land outside ${root}`);
        }
        if (header.type === "directory") {
          await mkdir(target, { recursive: true });
          stream.resume();
        } else if (header.type === "file" || header.type === "contiguous-file") {
          await mkdir(path.dirname(target), { recursive: true });
          await pipeline(stream, createWriteStream(target, { mode: (header.mode ?? 0o644) & 0o777, flags: "w" }));
        } else if (header.type === "symlink") {
          const linkTarget = header.linkname ?? "";
          if (path.isAbsolute(linkTarget) || !inside(path.resolve(path.dirname(target), linkTarget))) {
            throw new AgentboxApiError("PATH_OUTSIDE_SANDBOX", `archive symlink ${header.name} points outside ${root}`);
          }
          await mkdir(path.dirname(target), { recursive: true });
          await symlink(linkTarget, target);
          links.add(target);
          stream.resume();
        } else {
          stream.resume(); // hard links, devices: skipped
        }
      })().then(() => next(), (error: Error) => extract.destroy(error));
    });
    await pipeline(res, counter(options.onProgress), extract);
  }

  /** Watch a directory (recursively unless told otherwise); `onEvent` gets each change. */
  watch(dir: string, onEvent: (event: WatchEvent) => void, options: { recursive?: boolean } = {}): Promise<WatchHandle> {
    const url = this.http.websocketUrl(`${this.base}/fs/watch`, { path: dir, recursive: options.recursive ?? true });
    const socket = new WebSocket(url, { headers: this.http.baseHeaders() });
    const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    return new Promise((resolve, reject) => {
      let ready = false;
      let failure: AgentboxApiError | undefined;
      socket.on("message", (data) => {
        const event = JSON.parse(String(data)) as WatchMessage;
        if (event.type === "ready") {
          ready = true;
          resolve({ close: () => socket.close(1000), closed });
        } else if (event.type === "error") {
          failure = new AgentboxApiError(isSdkErrorCode(event.code) ? event.code : "INTERNAL", event.message);
        } else onEvent(event);
      });
      socket.once("close", () => {
        if (!ready) reject(failure ?? new AgentboxApiError(CONNECTION_FAILED, "the watch connection closed before the watcher started"));
      });
      socket.once("error", (error) => {
        if (!ready) reject(new AgentboxApiError(CONNECTION_FAILED, `cannot open the watch: ${error.message}`, { cause: error }));
      });
    });
  }
}
