/**
 * The files API inside one sandbox. Every operation runs the agentbox-fs
 * helper (native/agentbox-fs.c) in the sandbox, as the sandbox's user, in its
 * own cgroup: paths resolve exactly as the sandbox's processes see them and
 * permissions are the sandbox user's, never root's. Archives use the
 * sandbox's own `tar`, fed (on extraction) only with entries checked here.
 *
 * Transfers stream: a read or write is opened, then moved in chunks the
 * server asks for (each at most a few MiB), so neither the server nor the
 * runtime ever holds a whole file. A transfer left idle is aborted.
 */
import { posix } from "node:path";
import type { Socket } from "node:net";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { AgentboxError, type ErrorCode } from "@agentbox/protocol";
import { FS_HELPER, outputEnded, socketFd, stopReading, type CgroupGroup, type LocalSandbox, type SpawnedProcess } from "@agentbox/isolation";

/** Relative paths are relative to the workdir; the result is absolute and normalized (`..` cannot climb above /). */
export function sandboxPath(path: string, workdir: string): string {
  if (path.includes("\0")) throw new AgentboxError("INVALID_REQUEST", "path: must not contain NUL bytes", { field: "path" });
  if (path === "") throw new AgentboxError("INVALID_REQUEST", "path: must not be empty", { field: "path" });
  return posix.resolve(workdir, path);
}

const ERRNO_CODES: Record<string, ErrorCode> = {
  ENOENT: "NOT_FOUND",
  ENOTDIR: "NOT_FOUND",
  EACCES: "PERMISSION_DENIED",
  EPERM: "PERMISSION_DENIED",
  EROFS: "PERMISSION_DENIED",
  ENOSPC: "LIMIT_EXCEEDED",
  EDQUOT: "LIMIT_EXCEEDED",
  EEXIST: "CONFLICT",
  ENOTEMPTY: "CONFLICT",
  EBUSY: "CONFLICT",
};

function helperError(stderr: string, fallback: string): AgentboxError {
  const line = stderr.split("\n").find((l) => l.startsWith("{"));
  if (line) {
    try {
      const e = JSON.parse(line) as { error: string; message: string };
      return new AgentboxError(ERRNO_CODES[e.error] ?? "INVALID_REQUEST", e.message, { errno: e.error });
    } catch {
      /* not ours */
    }
  }
  return new AgentboxError("INTERNAL", `${fallback}: ${stderr.trim() || "the files helper failed"}`);
}

/** Resolves when `stdin` has written out what it holds, or its process has exited. */
function drainedOrExited(stdin: Socket, exited: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      stdin.off("drain", done);
      resolve();
    };
    stdin.on("drain", done);
    void exited.then(done);
  });
}

/** Pull-based reading of a stream with a bounded buffer: the stream is paused while the buffer is full. */
class PullReader {
  private chunks: Buffer[] = [];
  private size = 0;
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly stream: Readable,
    private readonly highWater = 8 * 1024 * 1024,
  ) {
    stream.on("data", (c: Buffer) => {
      this.chunks.push(c);
      this.size += c.length;
      if (this.size >= this.highWater) stream.pause();
      this.wake?.();
    });
    const end = () => {
      this.ended = true;
      this.wake?.();
    };
    stream.on("end", end);
    stream.on("close", end);
    stream.on("error", end);
  }

  /** Everything read so far, taken at once (the reader is done with after this). */
  takeAll(): { data: Buffer[]; bytes: number; done: boolean } {
    const data = this.chunks;
    const bytes = this.size;
    this.chunks = [];
    this.size = 0;
    return { data, bytes, done: this.ended };
  }

  /** Put bytes back in front (what was read past a header). */
  unshift(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.unshift(b);
    this.size += b.length;
  }

  /** Up to `max` bytes, waiting up to `waitMs` for some; `done` once the stream ended and all was read. */
  async read(max: number, waitMs: number): Promise<{ data: Buffer[]; bytes: number; done: boolean }> {
    if (this.size === 0 && !this.ended && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.wake = undefined;
          resolve();
        }, waitMs);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
      });
    }
    const data: Buffer[] = [];
    let bytes = 0;
    while (this.chunks.length > 0 && bytes < max) {
      const c = this.chunks[0]!;
      if (bytes + c.length <= max) {
        data.push(c);
        bytes += c.length;
        this.chunks.shift();
      } else {
        const take = max - bytes;
        data.push(c.subarray(0, take));
        this.chunks[0] = c.subarray(take);
        bytes += take;
      }
    }
    this.size -= bytes;
    if (this.size < this.highWater / 2 && !this.ended) this.stream.resume();
    return { data, bytes, done: this.ended && this.size === 0 };
  }

  /** The first line (a header), waiting for it; undefined if the stream ended first. */
  async line(): Promise<string | undefined> {
    let text = Buffer.alloc(0);
    for (;;) {
      const r = await this.read(64 * 1024, 30_000);
      text = Buffer.concat([text, ...r.data]);
      const nl = text.indexOf(10);
      if (nl >= 0) {
        this.unshift(text.subarray(nl + 1));
        return text.subarray(0, nl).toString("utf8");
      }
      if (r.done) return undefined;
    }
  }
}

interface Transfer {
  kind: "read" | "write" | "watch";
  child: SpawnedProcess;
  group: CgroupGroup;
  reader: PullReader | undefined;
  stderr: string[];
  exited: Promise<{ code: number | null }>;
  /** Set once the helper has exited. */
  ended?: boolean;
  lastUsed: number;
  /** Archive extraction: entries checked here, packed again for the sandbox's tar. */
  extract?: ArchiveExtract;
  /** A file read (not a tar): its bytes may go out by relay. */
  relayable?: boolean;
  /** The runtime stopped reading the helper (fs.detachRead): only a relay or an abort follows. */
  detached?: boolean;
  /** A relay is moving its bytes: not idle, whatever lastUsed says. */
  relaying?: boolean;
}

/**
 * Moves `count` bytes by splice between the helper's pipe (`localFd`, ours) and descriptor
 * `peerFd` of the process at the other end of our unix socket `via` (the server, and its client's
 * connection): toward the peer for a read, from it for a write. Resolves with the relay process.
 */
export type TransferRelay = (localFd: number, via: number, peerFd: number, count: number, toPeer: boolean) => Promise<SpawnedProcess>;

/** An idle transfer (its client gone without a word) is aborted after this long. */
export const TRANSFER_IDLE_MS = 60_000;

export type FsOp =
  | { op: "stat"; path: string }
  | { op: "list"; path: string; depth: number }
  | { op: "mkdir"; path: string; recursive: boolean }
  | { op: "move"; from: string; to: string }
  | { op: "remove"; path: string; recursive: boolean };

let transferCounter = 0;

export class FileService {
  private readonly transfers = new Map<string, Transfer>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly sandbox: LocalSandbox,
    private readonly workdir: string,
    private readonly relayBytes?: TransferRelay,
  ) {
    this.sweeper = setInterval(() => this.sweep(), 10_000);
    this.sweeper.unref();
  }

  resolve(path: string): string {
    return sandboxPath(path, this.workdir);
  }

  private async spawn(argv: string[], useHelper: boolean, cwd = "/"): Promise<Omit<Transfer, "kind" | "reader" | "lastUsed">> {
    const group = this.sandbox.acquireGroup();
    let child: SpawnedProcess;
    try {
      child = await this.sandbox.spawn({ argv, cwd, env: { ...this.sandbox.baseEnv }, ...(useHelper ? { exec: FS_HELPER } : {}) }, group);
    } catch (err) {
      await this.sandbox.releaseGroup(group);
      throw err;
    }
    const stderr: string[] = [];
    child.stderr.on("data", (d: Buffer) => {
      if (stderr.join("").length < 64 * 1024) stderr.push(d.toString("utf8"));
    });
    child.stdin?.on("error", () => undefined);
    const exited = child.exited.then(async ({ code }) => {
      await this.sandbox.releaseGroup(group).catch(() => undefined);
      await new Promise((r) => (child.stderr.closed ? r(undefined) : child.stderr.once("close", r)));
      return { code };
    });
    return { child, group, stderr, exited };
  }

  /** stat, list, mkdir, move, remove: one helper run, its answer parsed. */
  async op(req: FsOp): Promise<unknown> {
    const argv =
      req.op === "stat"
        ? ["agentbox-fs", "stat", this.resolve(req.path)]
        : req.op === "list"
          ? ["agentbox-fs", "list", this.resolve(req.path), String(req.depth)]
          : req.op === "mkdir"
            ? ["agentbox-fs", "mkdir", this.resolve(req.path), req.recursive ? "1" : "0"]
            : req.op === "move"
              ? ["agentbox-fs", "move", this.resolve(req.from), this.resolve(req.to)]
              : ["agentbox-fs", "remove", this.resolve(req.path), req.recursive ? "1" : "0"];
    const p = await this.spawn(argv, true);
    p.child.stdin?.end();
    const out: Buffer[] = [];
    let outBytes = 0;
    p.child.stdout.on("data", (d: Buffer) => {
      outBytes += d.length;
      if (outBytes <= 256 * 1024 * 1024) out.push(d);
    });
    const { code } = await p.exited;
    await new Promise((r) => (p.child.stdout.closed ? r(undefined) : p.child.stdout.once("close", r)));
    if (code !== 0) throw helperError(p.stderr.join(""), req.op);
    const text = Buffer.concat(out).toString("utf8");
    if (req.op === "stat") return JSON.parse(text);
    if (req.op === "list") return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
    return { ok: true };
  }

  /** Open a file (or, with `archive`, a tar of a directory) for reading. */
  async openRead(path: string, archive = false): Promise<{ handle: string; size?: number }> {
    const abs = this.resolve(path);
    let size: number | undefined;
    let p;
    if (archive) {
      const st = (await this.op({ op: "stat", path: abs })) as { type: string };
      if (st.type !== "dir") throw new AgentboxError("INVALID_REQUEST", `${abs} is not a directory`, { field: "path" });
      p = await this.spawn(["tar", "--numeric-owner", "-cf", "-", "."], false, abs);
      p.child.stdin?.end();
    } else {
      p = await this.spawn(["agentbox-fs", "read", abs], true);
      p.child.stdin?.end();
    }
    const reader = new PullReader(p.child.stdout);
    if (!archive) {
      const header = await reader.line();
      if (header === undefined) {
        await p.exited;
        throw helperError(p.stderr.join(""), "read");
      }
      size = (JSON.parse(header) as { size: number }).size;
    }
    const handle = this.register({ kind: "read", reader, relayable: !archive, ...p });
    return size === undefined ? { handle } : { handle, size };
  }

  /** The next bytes of a read (or watch events); `done` with the last ones. */
  async read(handle: string, maxBytes: number, waitMs: number): Promise<{ data: Buffer[]; bytes: number; done: boolean }> {
    const t = this.get(handle, "read");
    if (t.detached) throw new AgentboxError("CONFLICT", `read ${handle} was detached for a relay`);
    const r = await t.reader!.read(maxBytes, waitMs);
    // The last bytes: the transfer is over (a tar that skipped unreadable files still made a whole archive).
    if (r.done) this.transfers.delete(handle);
    return r;
  }

  /** Open a file for writing (created with its parents; replaced only once complete) or, with `archive`, a directory to extract into. */
  async openWrite(path: string, mode: number, archive = false): Promise<{ handle: string }> {
    const abs = this.resolve(path);
    if (archive) {
      await this.op({ op: "mkdir", path: abs, recursive: true });
      const p = await this.spawn(["tar", "-x", "--no-same-owner", "--no-overwrite-dir", "-f", "-"], false, abs);
      const extract = new ArchiveExtract(p.child.stdin!);
      return { handle: this.register({ kind: "write", reader: undefined, extract, ...p }) };
    }
    const p = await this.spawn(["agentbox-fs", "write", abs, mode.toString(8)], true);
    return { handle: this.register({ kind: "write", reader: undefined, ...p }) };
  }

  /** Append bytes to a write; resolves when the sandbox side has taken them (backpressure). */
  async write(handle: string, parts: Buffer[]): Promise<void> {
    const t = this.get(handle, "write");
    if (t.extract) {
      for (const part of parts) await t.extract.push(part);
      return;
    }
    const stdin = t.child.stdin as Socket;
    // Our stdin end can also read (see spawner.ts), so a helper that died does not make
    // writes fail: watch its exit instead. Written at once, so that writes in flight
    // together keep their order.
    if (t.ended || stdin.destroyed) {
      await t.exited; // its error message is complete once it has exited
      throw helperError(t.stderr.join(""), "write");
    }
    let flowing = true;
    for (const part of parts) flowing = stdin.write(part);
    if (!flowing) await drainedOrExited(stdin, t.exited);
    if (t.ended) {
      await t.exited;
      throw helperError(t.stderr.join(""), "write");
    }
  }

  /** Finish a write: the file appears (renamed into place) only now. */
  async finishWrite(handle: string): Promise<{ size?: number }> {
    const t = this.get(handle, "write");
    this.transfers.delete(handle);
    if (t.extract) {
      try {
        await t.extract.finish();
      } catch (err) {
        await t.exited;
        throw err;
      }
    } else {
      t.child.stdin!.end();
    }
    const out: Buffer[] = [];
    t.child.stdout.on("data", (d: Buffer) => out.push(d));
    const { code } = await t.exited;
    if (code !== 0) throw helperError(t.stderr.join(""), t.extract ? "extract" : "write");
    if (t.extract) return {};
    const line = Buffer.concat(out).toString("utf8").trim();
    return line ? (JSON.parse(line) as { size: number }) : {};
  }

  /**
   * Stop reading a file read's helper and hand over what was read ahead, so that the rest can go
   * out by relay (fs.relay) after these bytes.
   */
  detachRead(handle: string): { data: Buffer[]; bytes: number; done: boolean } {
    const t = this.get(handle, "read");
    if (!t.relayable) throw new AgentboxError("INVALID_REQUEST", `read ${handle} is an archive: it cannot be relayed`);
    if (!t.detached) {
      const stream = t.child.stdout as Socket;
      stopReading(stream);
      // What the stream buffered reaches the reader's "data" listener through read().
      while (stream.read() !== null) {
        /* taken by the listener */
      }
      stopReading(stream);
      t.detached = true;
    }
    return t.reader!.takeAll();
  }

  /**
   * Move the next `count` bytes of a transfer by relay (see TransferRelay): a detached read's to
   * the peer's descriptor `peerFd`, or a write's from it. Bytes already queued for a write reach
   * the sandbox first. Resolves with how many moved; a write the helper refused fails with the
   * helper's error (LIMIT_EXCEEDED, …). A read is over after its relay.
   */
  async relay(handle: string, via: number, peerFd: number, count: number): Promise<{ moved: number }> {
    const t = this.transfers.get(handle);
    if (!t || t.kind === "watch") throw new AgentboxError("NOT_FOUND", `no open read or write ${handle}`);
    if (!this.relayBytes) throw new AgentboxError("CONFLICT", "this runtime cannot relay file bytes");
    if (t.kind === "read" && !t.detached) throw new AgentboxError("CONFLICT", `read ${handle} must be detached first`);
    if (t.kind === "write" && t.extract) throw new AgentboxError("INVALID_REQUEST", `write ${handle} is an archive: it cannot be relayed`);
    if (t.relaying) throw new AgentboxError("CONFLICT", `a relay of ${handle} is under way`);
    t.relaying = true;
    try {
      let local: Socket;
      if (t.kind === "write") {
        local = t.child.stdin as Socket;
        if (!t.ended && !local.destroyed && local.writableLength > 0) await drainedOrExited(local, t.exited);
        if (t.ended || local.destroyed) {
          await t.exited;
          throw helperError(t.stderr.join(""), "write");
        }
      } else local = t.child.stdout as Socket;
      const fd = socketFd(local);
      if (fd < 0) throw new AgentboxError("INTERNAL", `transfer ${handle} has no descriptor to relay`);
      const proc = await this.relayBytes(fd, via, peerFd, count, t.kind === "read");
      // A write's helper that gives up (storage limit) leaves its pipe open (we hold both
      // ends): stop the relay then, and it reports how much it took from the client.
      let relayed = false;
      if (t.kind === "write") void t.exited.then(() => relayed || proc.kill("SIGTERM"));
      const out: Buffer[] = [];
      proc.stdout.on("data", (d: Buffer) => out.push(d));
      proc.stderr.resume();
      await proc.exited;
      relayed = true;
      await outputEnded(proc.stdout);
      const moved = Number.parseInt(Buffer.concat(out).toString("utf8"), 10) || 0;
      if (t.kind === "read") {
        t.relaying = false;
        local.destroy();
        await this.abort(handle);
      } else if (moved < count) {
        // The helper stopped taking bytes (its error says why, with how many it took), or the
        // client left.
        await Promise.race([t.exited, new Promise((r) => setTimeout(r, 200))]);
        if (t.ended) {
          this.transfers.delete(handle);
          await t.exited;
          const e = helperError(t.stderr.join(""), "write");
          throw new AgentboxError(e.code, e.message, { ...e.details, moved });
        }
      }
      return { moved };
    } finally {
      t.relaying = false;
      t.lastUsed = Date.now();
    }
  }

  /** Abandon a transfer: a write leaves nothing behind (the helper removes its temporary file). */
  async abort(handle: string): Promise<void> {
    const t = this.transfers.get(handle);
    if (!t) return;
    this.transfers.delete(handle);
    t.child.kill("SIGTERM");
    const timer = setTimeout(() => void t.group.kill(), 2000);
    await t.exited;
    clearTimeout(timer);
  }

  /** Watch a directory: events as JSON lines, read like a file. */
  async openWatch(path: string, recursive: boolean): Promise<{ handle: string }> {
    const abs = this.resolve(path);
    const p = await this.spawn(["agentbox-fs", "watch", abs, recursive ? "1" : "0"], true);
    const reader = new PullReader(p.child.stdout, 1024 * 1024);
    const ready = await reader.line();
    if (ready === undefined) {
      await p.exited;
      throw helperError(p.stderr.join(""), "watch");
    }
    return { handle: this.register({ kind: "watch", reader, ...p }) };
  }

  /** Events since the last call (waiting up to `waitMs` for one). */
  async watchEvents(handle: string, waitMs: number): Promise<{ events: unknown[]; done: boolean }> {
    const t = this.get(handle, "watch");
    const r = await t.reader!.read(1024 * 1024, waitMs);
    const lines = Buffer.concat(r.data).toString("utf8").split("\n");
    // An event cut at the end of this read waits for the rest of its line.
    const partial = lines.pop() ?? "";
    if (partial) t.reader!.unshift(Buffer.from(partial, "utf8"));
    const events = lines.filter((l) => l !== "").map((l) => JSON.parse(l) as unknown);
    if (r.done) this.transfers.delete(handle);
    return { events, done: r.done };
  }

  /** The sandbox is going away (and its processes with it): forget every transfer. */
  closeAll(): void {
    clearInterval(this.sweeper);
    for (const t of this.transfers.values()) t.child.kill("SIGTERM");
    this.transfers.clear();
  }

  private register(t: Omit<Transfer, "lastUsed">): string {
    const handle = `fs-${++transferCounter}`;
    const transfer: Transfer = { ...t, lastUsed: Date.now() };
    void t.child.exited.then(() => (transfer.ended = true));
    this.transfers.set(handle, transfer);
    return handle;
  }

  private get(handle: string, kind: Transfer["kind"]): Transfer {
    const t = this.transfers.get(handle);
    if (!t || t.kind !== kind) throw new AgentboxError("NOT_FOUND", `no open ${kind} ${handle}`);
    t.lastUsed = Date.now();
    return t;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [handle, t] of this.transfers) {
      if (!t.relaying && now - t.lastUsed > TRANSFER_IDLE_MS) void this.abort(handle);
    }
  }
}

/**
 * Tar extraction with every entry checked before the sandbox's tar sees it:
 * absolute names, `..`, and links that point outside the target directory are
 * refused (PATH_OUTSIDE_SANDBOX); nothing of a refused entry is written.
 * Entries before it are extracted.
 */
class ArchiveExtract {
  private readonly parser = tar.extract();
  private readonly pack = tar.pack();
  private failure: AgentboxError | undefined;
  private readonly done: Promise<void>;
  /** Symlinks this archive made: a later link may not climb out through one (`s -> .`, then `t -> s/..`). */
  private readonly symlinks = new Set<string>();

  constructor(sink: Socket) {
    this.pack.pipe(sink);
    sink.on("error", () => undefined);
    this.done = new Promise((resolve) => {
      this.parser.on("entry", (header, stream, next) => {
        const problem = this.check(header);
        if (problem) {
          this.failure ??= problem;
          stream.resume();
          // Stop here: what came before is extracted, this entry and the rest are not.
          this.parser.destroy();
          this.pack.finalize();
          resolve();
          return;
        }
        const entry = this.pack.entry({ ...header, uid: 0, gid: 0, uname: "", gname: "" }, (err) => {
          if (err) this.failure ??= new AgentboxError("INVALID_REQUEST", `archive entry ${header.name}: ${err.message}`);
          next();
        });
        stream.pipe(entry);
      });
      this.parser.on("finish", () => {
        this.pack.finalize();
        resolve();
      });
      this.parser.on("error", (err: Error) => {
        this.failure ??= new AgentboxError("INVALID_REQUEST", `not a valid tar archive: ${err.message}`);
        this.pack.finalize();
        resolve();
      });
    });
  }

  private check(h: tar.Header): AgentboxError | undefined {
    const name = h.name;
    const outside = (what: string) => new AgentboxError("PATH_OUTSIDE_SANDBOX", `archive entry ${JSON.stringify(name)}: ${what}`, { entry: name });
    if (name.includes("\0")) return outside("NUL byte in the name");
    if (name.startsWith("/")) return outside("absolute path");
    const norm = posix.normalize(name);
    if (norm === ".." || norm.startsWith("../")) return outside("it would land outside the target directory");
    if (h.type === "symlink" || h.type === "link") {
      const target = h.linkname ?? "";
      if (target.startsWith("/")) return outside(`${h.type} to an absolute path`);
      const base = h.type === "symlink" ? posix.dirname(norm) : ".";
      const resolved = posix.normalize(posix.join(base, target));
      if (resolved === ".." || resolved.startsWith("../")) return outside(`${h.type} pointing outside the target directory`);
      const walked: string[] = [];
      // Walked as written (not normalized): `s/..` must be seen to pass through `s`.
      for (const part of `${base}/${target}`.split("/")) {
        if (part === "..") {
          if (this.symlinks.has(walked.join("/"))) return outside(`${h.type} climbing out through the archive's symlink ${walked.join("/")}`);
          walked.pop();
        } else if (part !== "." && part !== "") walked.push(part);
      }
      if (h.type === "symlink") this.symlinks.add(norm);
    } else if (h.type !== "file" && h.type !== "directory" && h.type !== "contiguous-file") {
      // Devices and FIFOs: the sandbox user could not make them anyway.
      return new AgentboxError("INVALID_REQUEST", `archive entry ${JSON.stringify(name)}: ${h.type} entries are not extracted`, { entry: name });
    }
    return undefined;
  }

  /** Feed archive bytes (waits while the sandbox side is behind). */
  async push(data: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (!this.parser.write(data)) await new Promise<void>((r) => this.parser.once("drain", () => r()));
    if (this.failure) throw this.failure;
  }

  async finish(): Promise<void> {
    (this.parser as unknown as { end(): void }).end();
    await this.done;
    if (this.failure) throw this.failure;
  }
}
