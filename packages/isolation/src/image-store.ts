/**
 * Images for the local driver, kept as unpacked layers ready to be overlayfs
 * lower dirs: `<imagesDir>/layers/<hex>/`, one directory per layer, named by
 * the layer's content digest, so images that share a layer share its
 * directory. A layer counts only once its `<hex>.complete` marker exists;
 * layers are unpacked in `<imagesDir>/tmp/` (same filesystem) and renamed into
 * place, so a half-unpacked layer is never used.
 *
 * Ids: for OCI images, the sha256 of the layer blob as stored (checked
 * against the manifest while it is read); for docker archives, the sha256 of
 * the layer tar (checked against the config's diff_ids); for a directory, the
 * sha256 of the tar its copy is made from; for an adopted directory, a new
 * random id of the same form.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { lstat, mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import tar from "tar-stream";
import { AgentboxError } from "@agentbox/protocol";
import { packTree, scanTree } from "./dir-layer.js";
import { unpackLayer } from "./layer-unpack.js";
import { digestHex, extractImageArchive, layerCompression, openImageDir, readImage, type ImageConfig, type ImageFiles, type LayerRef } from "./oci-image.js";

export type { ImageConfig } from "./oci-image.js";

const run = promisify(execFile);

export interface PreparedImage {
  /** Unpacked layer directories (absolute), LOWEST first, ready to be overlayfs lower dirs. */
  layers: string[];
  /** Content ids of those layers ("sha256:<hex>"), same order. */
  digests: string[];
  config: ImageConfig;
}

export interface ImportProgress {
  layersDone: number;
  layersTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** Progress is reported at most once per this many bytes (and at every layer's end). */
const REPORT_EVERY = 1024 * 1024;

class Progress {
  layersDone = 0;
  bytesDone = 0;
  private reported = 0;

  constructor(
    private readonly cb: ((p: ImportProgress) => void) | undefined,
    private readonly layersTotal: number,
    private readonly bytesTotal: number,
  ) {}

  bytes(n: number): void {
    this.bytesDone += n;
    if (this.bytesDone - this.reported >= REPORT_EVERY) this.report();
  }

  layer(): void {
    this.layersDone++;
    this.report();
  }

  report(): void {
    this.reported = this.bytesDone;
    this.cb?.({ layersDone: this.layersDone, layersTotal: this.layersTotal, bytesDone: this.bytesDone, bytesTotal: this.bytesTotal });
  }
}

export class ImageStore {
  private readonly layersDir: string;
  private readonly tmpDir: string;
  /** Layers being unpacked, by hex: a second import of the same layer waits for the first. */
  private readonly inflight = new Map<string, Promise<void>>();
  /** Layers an import in progress has settled on; gc leaves them alone until the import returns. */
  private readonly pins = new Map<string, number>();
  /** Layers being moved into place, by hex: a second install of one waits for the first. */
  private readonly installing = new Map<string, Promise<void>>();

  constructor(imagesDir: string) {
    this.layersDir = join(imagesDir, "layers");
    this.tmpDir = join(imagesDir, "tmp");
    mkdirSync(this.layersDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 });
  }

  /** Directory of a layer by digest, if it is complete on disk. */
  layerPath(digest: string): string | undefined {
    const hex = digestHex(digest);
    if (hex === undefined || !existsSync(this.marker(hex))) return undefined;
    return join(this.layersDir, hex);
  }

  /** "oci:<path>": an OCI image layout directory, an OCI layout as a tar (oci-archive), or a `docker save` archive (docker-archive). */
  async importOci(path: string, onProgress?: (p: ImportProgress) => void): Promise<PreparedImage> {
    const source = resolve(path);
    const st = await statOrFail(source, "image");
    let extracted: string | undefined;
    const pinned: string[] = [];
    try {
      let files: ImageFiles;
      if (st.isDirectory()) files = openImageDir(source);
      else if (st.isFile()) {
        extracted = this.tempPath("archive");
        // Blobs named by a digest we already hold as a layer are not worth writing out.
        const held = (rel: string) => /^blobs\/sha256\/[0-9a-f]{64}$/.test(rel) && this.layerPath(`sha256:${rel.slice(13)}`) !== undefined;
        files = await extractImageArchive(source, extracted, held);
      } else throw new AgentboxError("INVALID_REQUEST", `${source} is neither a directory nor an archive file`, { path: source });

      const image = await readImage(files);
      const progress = new Progress(onProgress, image.layers.length, image.layers.reduce((n, l) => n + l.size, 0));
      progress.report();
      const hexes: string[] = [];
      for (const ref of image.layers) {
        const hex = await this.layerFrom(ref, progress, pinned);
        hexes.push(hex);
        progress.layer();
      }
      return { layers: hexes.map((h) => join(this.layersDir, h)), digests: hexes.map((h) => `sha256:${h}`), config: image.config };
    } finally {
      for (const hex of pinned) this.unpin(hex);
      if (extracted !== undefined) await rm(extracted, { recursive: true, force: true });
    }
  }

  /** "dir:<path>": a root filesystem directory, copied into one layer (so later changes to the directory do not affect sandboxes). */
  async importDir(path: string, onProgress?: (p: ImportProgress) => void): Promise<PreparedImage> {
    const source = resolve(path);
    const st = await statOrFail(source, "root filesystem directory");
    if (!st.isDirectory()) throw new AgentboxError("INVALID_REQUEST", `${source} is not a directory (a dir: image is a root filesystem directory)`, { path: source });
    const tree = await scanTree(source);
    const progress = new Progress(onProgress, 1, tree.bytes);
    progress.report();
    const tmp = this.tempPath("layer");
    let hex: string | undefined;
    try {
      await mkdir(tmp, { mode: 0o755 });
      const pack = tar.pack();
      // Whichever side fails first is the cause; the other then fails because its stream was torn down.
      let cause: unknown;
      const producing = packTree(source, tree, pack, (n) => progress.bytes(n)).catch((err: unknown) => {
        cause ??= copyError(source, err);
        throw cause;
      });
      // tar-stream's streams are streamx ones, which Node's pipeline takes like its own.
      const unpacking = unpackLayer(pack as unknown as Readable, tmp, { label: `directory ${source}`, compression: "none", whiteouts: false }).catch((err: unknown) => {
        cause ??= err;
        pack.destroy();
        throw err;
      });
      const [, unpacked] = await Promise.allSettled([producing, unpacking]);
      if (cause !== undefined || unpacked.status === "rejected") throw cause;
      hex = digestHex(unpacked.value.digest)!;
      this.pin(hex);
      await this.install(tmp, hex);
      progress.layer();
      return { layers: [join(this.layersDir, hex)], digests: [`sha256:${hex}`], config: { env: {} } };
    } finally {
      if (hex !== undefined) this.unpin(hex);
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** Register a layer directory made elsewhere (e.g. a snapshot): moves `dir` into the store under a new id and returns {digest, path}. */
  async adoptLayer(dir: string): Promise<{ digest: string; path: string }> {
    const source = resolve(dir);
    const st = await lstat(source).catch(() => undefined);
    if (st === undefined) throw new AgentboxError("NOT_FOUND", `${source} does not exist`, { path: source });
    if (!st.isDirectory()) throw new AgentboxError("INVALID_REQUEST", `${source} is not a directory`, { path: source });
    const hex = randomBytes(32).toString("hex");
    const path = join(this.layersDir, hex);
    this.pin(hex);
    try {
      try {
        await rename(source, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
        // Another filesystem: copy with everything a layer carries (whiteout devices, opaque xattrs, owners), then drop the original.
        const tmp = this.tempPath("adopt");
        try {
          await run("cp", ["-a", "--", source, tmp]);
          await rename(tmp, path);
        } finally {
          await rm(tmp, { recursive: true, force: true });
        }
        await rm(source, { recursive: true, force: true });
      }
      await writeFile(this.marker(hex), "");
    } finally {
      this.unpin(hex);
    }
    return { digest: `sha256:${hex}`, path };
  }

  /** Remove layers not in `keep` (digests); returns how many were removed. */
  gc(keep: Set<string>): number {
    const kept = new Set<string>();
    for (const d of keep) {
      const hex = digestHex(d);
      if (hex !== undefined) kept.add(hex);
    }
    let removed = 0;
    for (const name of readdirSync(this.layersDir)) {
      const m = /^([0-9a-f]{64})(\.complete)?$/.exec(name);
      if (!m) continue;
      const hex = m[1]!;
      if (kept.has(hex) || this.pins.has(hex) || this.inflight.has(hex)) continue;
      const dir = join(this.layersDir, hex);
      if (m[2] !== undefined) {
        if (!existsSync(dir)) rmSync(this.marker(hex), { force: true });
        continue;
      }
      const complete = existsSync(this.marker(hex));
      // Marker first: from here on the layer is not offered, even if the removal is cut short.
      rmSync(this.marker(hex), { force: true });
      rmSync(dir, { recursive: true, force: true });
      if (complete) removed++;
    }
    // Leftovers of imports whose process is gone.
    for (const name of readdirSync(this.tmpDir)) {
      const pid = Number(/^[a-z]+-(\d+)-/.exec(name)?.[1]);
      if (pid && !processAlive(pid)) rmSync(join(this.tmpDir, name), { recursive: true, force: true });
    }
    return removed;
  }

  /** The layer's hex once it is on disk: unpacked now, or already there. */
  private async layerFrom(ref: LayerRef, progress: Progress, pinned: string[]): Promise<string> {
    // OCI blobs are known by the manifest's digest: a layer we hold is not read again (its blob may not even have been extracted).
    let held = ref.digest !== undefined ? await this.held(ref.digest, pinned) : undefined;
    if (held === undefined) {
      if (!existsSync(ref.file)) throw new AgentboxError("INVALID_REQUEST", `${ref.label}: the blob is missing from the image (expected the file ${ref.file})`, { layer: ref.label });
      const compression = await layerCompression(ref);
      // An uncompressed docker layer is known by its diff_id.
      const expected = ref.digest ?? (compression === "none" ? ref.diffId : undefined);
      if (ref.digest === undefined && expected !== undefined) held = await this.held(expected, pinned);
      if (held === undefined) return this.unpackOnce(ref, compression, expected, progress, pinned);
    }
    progress.bytes(ref.size);
    return held;
  }

  /** Pin the layer `digest` and return its hex if it is complete on disk (waiting for an unpack of it in progress). */
  private async held(digest: string, pinned: string[]): Promise<string | undefined> {
    const hex = digestHex(digest);
    if (hex === undefined) return undefined;
    this.pin(hex);
    pinned.push(hex);
    await this.inflight.get(hex);
    return this.layerPath(digest) !== undefined ? hex : undefined;
  }

  /** Unpack, with concurrent imports of the same (known) layer sharing one unpack. */
  private async unpackOnce(ref: LayerRef, compression: "none" | "gzip", expected: string | undefined, progress: Progress, pinned: string[]): Promise<string> {
    const known = expected !== undefined ? digestHex(expected) : undefined;
    const work = this.unpackRef(ref, compression, expected, progress, pinned);
    if (known === undefined) return work;
    // Waiters only need to know it is over: they look for the layer on disk again.
    const done = work.then(
      () => undefined,
      () => undefined,
    );
    this.inflight.set(known, done);
    try {
      return await work;
    } finally {
      if (this.inflight.get(known) === done) this.inflight.delete(known);
    }
  }

  private async unpackRef(ref: LayerRef, compression: "none" | "gzip", expected: string | undefined, progress: Progress, pinned: string[]): Promise<string> {
    const tmp = this.tempPath("layer");
    try {
      await mkdir(tmp, { mode: 0o755 });
      const result = await unpackLayer(createReadStream(ref.file), tmp, {
        label: ref.label,
        compression,
        whiteouts: true,
        maxBytes: ref.size,
        onBytes: (n) => progress.bytes(n),
      });
      const where = ref.digest !== undefined ? "the manifest" : "the image config's diff_ids";
      if (expected !== undefined && result.digest !== expected) {
        throw new AgentboxError("INVALID_REQUEST", `${ref.label}: its content has digest ${result.digest}, but ${where} says ${expected}; the image is corrupt or was modified`, { layer: ref.label, expected, actual: result.digest });
      }
      if (result.size !== ref.size) {
        throw new AgentboxError("INVALID_REQUEST", `${ref.label}: the blob has ${result.size} bytes, but the manifest says ${ref.size}; the image is corrupt or was modified`, { layer: ref.label });
      }
      if (ref.digest === undefined && ref.diffId !== undefined && result.diffId !== ref.diffId) {
        throw new AgentboxError("INVALID_REQUEST", `${ref.label}: its uncompressed content has digest ${result.diffId}, but the image config's diff_ids say ${ref.diffId}; the image is corrupt or was modified`, { layer: ref.label });
      }
      const hex = digestHex(result.digest)!;
      if (hex !== (expected && digestHex(expected))) {
        this.pin(hex);
        pinned.push(hex);
      }
      await this.install(tmp, hex);
      return hex;
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /**
   * Move an unpacked layer into place (unless it is already there) and mark it complete. Two
   * imports that unpacked the same layer install it one after the other: else the second would
   * take the first's directory, renamed but not yet marked, for one cut short and remove it.
   */
  private async install(tmp: string, hex: string): Promise<void> {
    for (let earlier = this.installing.get(hex); earlier; earlier = this.installing.get(hex)) await earlier.catch(() => undefined);
    if (existsSync(this.marker(hex))) return;
    const done = this.moveIntoPlace(tmp, hex).finally(() => {
      if (this.installing.get(hex) === done) this.installing.delete(hex);
    });
    this.installing.set(hex, done);
    return done;
  }

  private async moveIntoPlace(tmp: string, hex: string): Promise<void> {
    const final = join(this.layersDir, hex);
    // A directory without its marker was cut short between rename and marker: redo it.
    await rm(final, { recursive: true, force: true });
    try {
      await rename(tmp, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process renamed the same layer in first; what it renamed is complete.
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
    }
    await writeFile(this.marker(hex), "");
  }

  private marker(hex: string): string {
    return join(this.layersDir, `${hex}.complete`);
  }

  /** `<kind>-<pid>-<random>` under tmp/: gc removes those of processes that are gone. */
  private tempPath(kind: string): string {
    return join(this.tmpDir, `${kind}-${process.pid}-${randomBytes(6).toString("hex")}`);
  }

  private pin(hex: string): void {
    this.pins.set(hex, (this.pins.get(hex) ?? 0) + 1);
  }

  private unpin(hex: string): void {
    const n = (this.pins.get(hex) ?? 1) - 1;
    if (n <= 0) this.pins.delete(hex);
    else this.pins.set(hex, n);
  }
}

async function statOrFail(path: string, what: string) {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new AgentboxError("NOT_FOUND", `${what} ${path} does not exist`, { path });
    throw new AgentboxError("INVALID_REQUEST", `${what} ${path} cannot be read: ${(err as Error).message}`, { path });
  }
}

/** A file that vanished or changed size while being read: the directory changed under the copy. */
function copyError(source: string, err: unknown): AgentboxError {
  if (err instanceof AgentboxError) return err;
  const e = err as NodeJS.ErrnoException;
  const changed = e.code === "ENOENT" || /size mismatch/i.test(e.message);
  return new AgentboxError(changed ? "CONFLICT" : "INTERNAL", changed ? `copying ${source}: ${e.message} (the directory changed during the copy; try again)` : `copying ${source}: ${e.message}`, { path: source });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
