/**
 * One image layer (a tar, possibly gzip-compressed) unpacked into a directory
 * that overlayfs can use as a lower layer: OCI whiteouts become overlay
 * whiteouts (a 0:0 character device) and opaque directories get the
 * `trusted.overlay.opaque` attribute.
 *
 * Layers come from images anyone may have built, so every entry is checked
 * before anything is written: a path that is absolute, climbs with `..`, or
 * passes through a symbolic link (or a file) is refused, and so is a hard
 * link to anything outside the layer. Nothing is ever written outside the
 * layer's directory. Device nodes are skipped (a sandbox has no business with
 * the host's devices); extended attributes in the tar are not applied
 * (sandboxes run with no_new_privs, so file capabilities would be ignored).
 */
import { execFile } from "node:child_process";
import { createHash, type Hash } from "node:crypto";
import { constants } from "node:fs";
import { chmod, lchown, link, lstat, lutimes, mkdir, open, rm, symlink, utimes } from "node:fs/promises";
import { join, posix } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGunzip } from "node:zlib";
import tar from "tar-stream";
import { AgentboxError } from "@agentbox/protocol";
import { findProgram } from "./system-tools.js";

const run = promisify(execFile);

export type Compression = "none" | "gzip";
/** What a blob's first bytes say it is. */
export type SniffedCompression = Compression | "zstd" | "xz" | "bzip2";

/** Compression by magic bytes (media types are not always right, and docker archives have none). */
export function sniffCompression(head: Buffer): SniffedCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
  if (head.length >= 3 && head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  return "none";
}

/** Read the first bytes of a file (for `sniffCompression`). */
export async function readHead(file: string, bytes = 8): Promise<Buffer> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * An archive entry's path made relative to the layer root ("" is the root
 * itself), or undefined when it is unsafe: absolute, with a `..` component, or
 * with a NUL byte. `./` prefixes and repeated slashes are normal in layers.
 */
export function safeEntryPath(name: string): string | undefined {
  if (name.includes("\0") || name.startsWith("/")) return undefined;
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) return undefined;
  return parts.join("/");
}

export interface UnpackOptions {
  /** How the layer is named in errors, e.g. `layer 2 of 3 (sha256:…)`. */
  label: string;
  compression: Compression;
  /** Apply OCI whiteouts (`.wh.` entries). Off for trees that are not layers (an imported directory). */
  whiteouts: boolean;
  /** Stop as soon as more than this many (stored) bytes arrive. */
  maxBytes?: number;
  /** Called as stored (compressed) bytes are read. */
  onBytes?: (n: number) => void;
}

export interface UnpackResult {
  /** sha256 of the bytes as stored (compressed, if they are). */
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar (the image config's `diff_id`). */
  diffId: string;
}

/**
 * Unpack the layer read from `source` into `dest` (an existing, empty directory).
 * `dest` is left half-written on failure: the caller unpacks into a temporary
 * directory and moves it into place only once this resolves and the digest is right.
 */
export async function unpackLayer(source: Readable, dest: string, opts: UnpackOptions): Promise<UnpackResult> {
  const raw = createHash("sha256");
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (opts.maxBytes !== undefined && size > opts.maxBytes) {
        cb(new AgentboxError("INVALID_REQUEST", `${opts.label}: the blob is larger than the ${opts.maxBytes} bytes the manifest says`, { layer: opts.label }));
        return;
      }
      raw.update(chunk);
      opts.onBytes?.(chunk.length);
      cb(null, chunk);
    },
  });
  let diff: Hash | undefined;
  const stages: Array<NodeJS.ReadWriteStream> = [];
  if (opts.compression === "gzip") {
    const h = createHash("sha256");
    diff = h;
    stages.push(createGunzip(), new Transform({ transform: (chunk: Buffer, _enc, cb) => (h.update(chunk), cb(null, chunk)) }));
  }
  const extract = tar.extract();
  const writer = new LayerWriter(dest, opts);
  const feeding = pipeline([source, counter, ...stages, extract]);
  feeding.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
  try {
    for await (const entry of extract) await writer.apply(entry);
    await feeding;
    await writer.finish();
  } catch (err) {
    source.destroy();
    extract.destroy();
    await feeding.catch(() => undefined);
    throw layerError(opts.label, err);
  }
  const digest = `sha256:${raw.digest("hex")}`;
  return { digest, size, diffId: diff ? `sha256:${diff.digest("hex")}` : digest };
}

/** Bad content is the image's fault (INVALID_REQUEST); a failing filesystem call is ours (INTERNAL). */
function layerError(label: string, err: unknown): AgentboxError {
  if (err instanceof AgentboxError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.syscall) return new AgentboxError("INTERNAL", `${label}: ${e.message}`, { layer: label });
  return new AgentboxError("INVALID_REQUEST", `${label} is not a valid layer (a tar, optionally gzip-compressed): ${e.message}`, { layer: label });
}

const NO_FOLLOW_CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Applies tar entries, one at a time, to a layer directory. */
class LayerWriter {
  /** Paths (relative) known to be real directories of this layer: parents are checked once. */
  private readonly dirs = new Set<string>([""]);
  /** Directory times are set last: writing into a directory changes its mtime. */
  private readonly dirTimes: Array<[string, Date]> = [];

  constructor(
    private readonly root: string,
    private readonly opts: UnpackOptions,
  ) {}

  async apply(entry: TarEntry): Promise<void> {
    const h = entry.header;
    // PAX and GNU long-name records are folded into the entry by tar-stream; unknown types come as null.
    const type = h.type as tar.Header["type"] | null;
    const isData = type === "file" || type === "contiguous-file";
    if (!isData) await drain(entry);
    const rel = safeEntryPath(h.name);
    if (rel === undefined) throw this.refuse(h.name, "its path is absolute or contains '..'");
    const base = posix.basename(rel);
    if (this.opts.whiteouts && base.startsWith(".wh.")) {
      if (isData) await drain(entry);
      return this.whiteout(rel, base);
    }
    const meta = metadata(h);
    switch (type) {
      case "file":
      case "contiguous-file":
        return this.file(rel, entry, meta);
      case "directory":
        return this.directory(rel, meta);
      case "symlink":
        return this.symlink(rel, h.linkname ?? "", meta);
      case "link":
        return this.hardlink(rel, h.linkname ?? "");
      case "fifo":
        return this.fifo(rel, meta);
      default:
        // Device nodes (and types tar-stream does not know) are skipped on purpose.
        return;
    }
  }

  /** Directory times, deepest first, once every entry is written. */
  async finish(): Promise<void> {
    const depth = (p: string) => p.split("/").length;
    const ordered = this.dirTimes.map((t, i) => ({ t, i })).sort((a, b) => depth(b.t[0]) - depth(a.t[0]) || a.i - b.i);
    for (const { t } of ordered) await utimes(t[0], t[1], t[1]);
  }

  private abs(rel: string): string {
    return rel === "" ? this.root : join(this.root, rel);
  }

  private refuse(name: string, why: string): AgentboxError {
    return new AgentboxError("INVALID_REQUEST", `${this.opts.label}: refusing entry ${JSON.stringify(name)}: ${why}`, { layer: this.opts.label, entry: name });
  }

  /**
   * Every ancestor of `rel` must be a real directory of this layer (never a
   * symlink, which could lead outside it). Missing ones are made when `create`.
   */
  private async checkParents(rel: string, name: string, create: boolean): Promise<void> {
    const parts = rel.split("/");
    let cur = "";
    for (let i = 0; i < parts.length - 1; i++) {
      cur = cur === "" ? parts[i]! : `${cur}/${parts[i]}`;
      if (this.dirs.has(cur)) continue;
      const st = await lstatOrUndefined(this.abs(cur));
      if (st === undefined) {
        if (!create) throw this.refuse(name, `${cur} does not exist in this layer`);
        await mkdir(this.abs(cur), { mode: 0o755 });
      } else if (st.isSymbolicLink()) {
        throw this.refuse(name, `its parent ${cur} is a symbolic link`);
      } else if (!st.isDirectory()) {
        throw this.refuse(name, `its parent ${cur} is not a directory`);
      }
      this.dirs.add(cur);
    }
  }

  /** Parents checked, and whatever an earlier entry put at `rel` removed (a later entry replaces an earlier one). */
  private async prepare(rel: string, name: string): Promise<string> {
    if (rel === "") throw this.refuse(name, "only a directory can be the layer's root");
    await this.checkParents(rel, name, true);
    const abs = this.abs(rel);
    if ((await lstatOrUndefined(abs)) !== undefined) await this.remove(rel);
    return abs;
  }

  /**
   * Parents checked, then `make` creates the entry; if an earlier entry is in
   * the way, it is removed and `make` runs again (a later entry replaces an
   * earlier one). Trying first saves a stat per entry; `make` must fail with
   * EEXIST rather than follow or overwrite what is there.
   */
  private async create<T>(rel: string, name: string, make: (abs: string) => Promise<T>): Promise<T> {
    if (rel === "") throw this.refuse(name, "only a directory can be the layer's root");
    await this.checkParents(rel, name, true);
    const abs = this.abs(rel);
    try {
      return await make(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      await this.remove(rel);
      return make(abs);
    }
  }

  private async remove(rel: string): Promise<void> {
    await rm(this.abs(rel), { recursive: true, force: true });
    for (const d of this.dirs) if (d === rel || d.startsWith(`${rel}/`)) this.dirs.delete(d);
  }

  private async file(rel: string, entry: TarEntry, m: Meta): Promise<void> {
    const fh = await this.create(rel, entry.header.name, (abs) => open(abs, NO_FOLLOW_CREATE, 0o600));
    try {
      for await (const data of entry) {
        const chunk = data as Buffer;
        let off = 0;
        while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
      // Owner before mode: chown clears set-id bits.
      await fh.chown(m.uid, m.gid);
      await fh.chmod(m.mode);
      await fh.utimes(m.mtime, m.mtime);
    } finally {
      await fh.close();
    }
  }

  private async directory(rel: string, m: Meta): Promise<void> {
    const abs = this.abs(rel);
    if (rel !== "") {
      if (!this.dirs.has(rel)) {
        await this.create(rel, rel, async (p) => {
          try {
            await mkdir(p, { mode: 0o700 });
          } catch (err) {
            // Already a directory (made for an earlier entry's parent): kept. Anything else is replaced.
            if ((err as NodeJS.ErrnoException).code !== "EEXIST" || !(await lstat(p)).isDirectory()) throw err;
          }
        });
        this.dirs.add(rel);
      }
    }
    await lchown(abs, m.uid, m.gid);
    await chmod(abs, m.mode);
    this.dirTimes.push([abs, m.mtime]);
  }

  private async symlink(rel: string, target: string, m: Meta): Promise<void> {
    if (target === "" || target.includes("\0")) throw this.refuse(rel, "the symbolic link has no valid target");
    // The target is only stored, never followed here: parents are checked with lstat.
    const abs = this.abs(rel);
    await this.create(rel, rel, (p) => symlink(target, p));
    await lchown(abs, m.uid, m.gid);
    await lutimes(abs, m.mtime, m.mtime);
  }

  private async hardlink(rel: string, linkname: string): Promise<void> {
    const target = safeEntryPath(linkname);
    if (target === undefined || target === "") throw this.refuse(rel, `the hard link's target ${JSON.stringify(linkname)} is outside the layer`);
    if (target === rel) return;
    await this.checkParents(target, rel, false);
    const st = await lstatOrUndefined(this.abs(target));
    if (st === undefined) throw this.refuse(rel, `the hard link's target ${target} is not in this layer`);
    if (st.isDirectory()) throw this.refuse(rel, `the hard link's target ${target} is a directory`);
    await this.create(rel, rel, (p) => link(this.abs(target), p));
  }

  private async fifo(rel: string, m: Meta): Promise<void> {
    const abs = await this.prepare(rel, rel);
    await run(findProgram("mkfifo") ?? "mkfifo", ["-m", m.mode.toString(8), abs]);
    await lchown(abs, m.uid, m.gid);
    await lutimes(abs, m.mtime, m.mtime);
  }

  /** `.wh..wh..opq`: the directory hides lower layers' contents; `.wh.<name>`: `<name>` is deleted. */
  private async whiteout(rel: string, base: string): Promise<void> {
    const dir = posix.dirname(rel) === "." ? "" : posix.dirname(rel);
    if (base === ".wh..wh..opq") {
      if (dir !== "") await this.directoryExists(dir, rel);
      await run(findProgram("setfattr") ?? "setfattr", ["-h", "-n", "trusted.overlay.opaque", "-v", "y", this.abs(dir)]).catch((err: Error) => {
        throw new AgentboxError("INTERNAL", `${this.opts.label}: cannot mark ${dir || "/"} opaque (setfattr from the attr package is needed): ${err.message}`);
      });
      return;
    }
    const name = base.slice(".wh.".length);
    if (name.startsWith(".wh.")) return; // other AUFS metadata (.wh..wh.plnk…): meaningless here
    if (name === "" || name === "." || name === "..") throw this.refuse(rel, "a whiteout must name a file");
    const target = dir === "" ? name : `${dir}/${name}`;
    await this.checkParents(target, rel, true);
    const abs = this.abs(target);
    // Something this layer itself put there already hides the lower layers.
    if ((await lstatOrUndefined(abs)) !== undefined) return;
    await run(findProgram("mknod") ?? "mknod", ["-m", "0", abs, "c", "0", "0"]);
  }

  private async directoryExists(dir: string, name: string): Promise<void> {
    await this.checkParents(dir, name, true);
    const st = await lstatOrUndefined(this.abs(dir));
    if (st === undefined) await mkdir(this.abs(dir), { mode: 0o755 });
    else if (!st.isDirectory()) throw this.refuse(name, `${dir} is not a directory`);
    this.dirs.add(dir);
  }
}

/** An entry of tar-stream's extract: its header and, for files, its content. */
interface TarEntry extends AsyncIterable<unknown> {
  header: tar.Header;
}

interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

/** Mode, owner and time, with PAX values (large ids, sub-second times) taking precedence. */
function metadata(h: tar.Header): Meta {
  const pax = (h.pax ?? {}) as Record<string, string | undefined>;
  const num = (v: string | undefined, fallback: number) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : fallback);
  const paxTime = pax.mtime !== undefined && /^\d+(\.\d+)?$/.test(pax.mtime) ? new Date(Number(pax.mtime) * 1000) : undefined;
  return {
    mode: (h.mode ?? 0o644) & 0o7777,
    uid: num(pax.uid, h.uid ?? 0),
    gid: num(pax.gid, h.gid ?? 0),
    mtime: paxTime ?? h.mtime ?? new Date(0),
  };
}

async function drain(entry: AsyncIterable<unknown>): Promise<void> {
  for await (const _chunk of entry) {
    /* discarded */
  }
}

async function lstatOrUndefined(p: string) {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
