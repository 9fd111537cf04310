/**
 * Reading a container image as it sits on disk: an OCI image layout
 * (`oci-layout`, `index.json`, `blobs/`) or what `docker save` writes
 * (`manifest.json` naming a config and layer tars), either as a directory or
 * as a tar of one. This file only finds the layers and the config; unpacking
 * is layer-unpack.ts.
 *
 * Nothing named inside an image is trusted: blob paths are built from digests
 * that must look like digests, paths in a docker manifest and in an archive
 * must be relative without `..`, and links inside an archive are followed
 * only on paper (an alias table), never on disk.
 */
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readdirSync, statSync } from "node:fs";
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { constants } from "node:fs";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import tar from "tar-stream";
import { AgentboxError } from "@agentbox/protocol";
import { readHead, safeEntryPath, sniffCompression } from "./layer-unpack.js";

export interface ImageConfig {
  env: Record<string, string>;
  workdir?: string;
  user?: string;
}

/** One layer of an image, as found on disk. */
export interface LayerRef {
  /** The blob (a tar, maybe compressed). */
  file: string;
  size: number;
  /** The digest the stored blob must have (OCI: the manifest's). */
  digest?: string;
  /** The digest the uncompressed tar must have (docker archives: the config's `rootfs.diff_ids`). */
  diffId?: string;
  /** OCI media type; docker archives have none. */
  mediaType?: string;
  /** For messages: `layer 2 of 3 (sha256:…)`. */
  label: string;
}

export interface ImageLayout {
  /** Lowest first. */
  layers: LayerRef[];
  config: ImageConfig;
}

/** An image's files: a directory, plus the links an archive held (relative path → relative path). */
export interface ImageFiles {
  root: string;
  aliases: Map<string, string>;
  /** How the image is named in messages (the path the caller gave). */
  source: string;
  /** Files of the archive not written out (their layer is already held), with their sizes. */
  skipped: Map<string, number>;
}

const DIGEST = /^sha256:([0-9a-f]{64})$/;
const MAX_JSON_BYTES = 8 * 1024 * 1024;

const MT = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
};

const TAR_LAYERS = new Set(["application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"]);
const GZIP_LAYERS = new Set(["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"]);

function invalid(message: string, details?: Record<string, unknown>): AgentboxError {
  return new AgentboxError("INVALID_REQUEST", message, details);
}

/** The hex part of a `sha256:<hex>` digest, or undefined. */
export function digestHex(digest: string): string | undefined {
  return DIGEST.exec(digest)?.[1];
}

/** Refuse layer media types we cannot unpack, in words that say what to do instead. */
export function checkLayerMediaType(mediaType: string | undefined, label: string): void {
  if (mediaType === undefined || mediaType === "" || TAR_LAYERS.has(mediaType) || GZIP_LAYERS.has(mediaType)) return;
  if (mediaType.includes("nondistributable") || mediaType.includes("foreign")) {
    throw invalid(`${label} is a foreign (non-distributable) layer (${mediaType}) whose content is not part of the image; export the image with its foreign layers included, as plain tar or tar+gzip layers`, { layer: label, mediaType });
  }
  if (mediaType.endsWith("+zstd") || mediaType.endsWith(".zstd")) {
    throw invalid(`${label} is compressed with zstd (${mediaType}), which is not supported; re-export the image with gzip-compressed or uncompressed layers`, { layer: label, mediaType });
  }
  throw invalid(`${label} has media type ${mediaType}, which is not a supported layer type (tar or tar+gzip)`, { layer: label, mediaType });
}

/** The same, for what the blob's first bytes say. */
export async function layerCompression(ref: LayerRef): Promise<"none" | "gzip"> {
  const kind = sniffCompression(await readHead(ref.file));
  if (kind === "none" || kind === "gzip") return kind;
  throw invalid(`${ref.label} is compressed with ${kind}, which is not supported; re-export the image with gzip-compressed or uncompressed layers`, { layer: ref.label });
}

/**
 * Resolve a relative path through the archive's links, textually. Link targets
 * were made relative and `..`-free when recorded, so the result stays inside.
 */
function resolveRel(files: ImageFiles, rel: string): string {
  let cur = rel;
  for (let hops = 0; hops < 40; hops++) {
    const parts = cur.split("/");
    let replaced = false;
    for (let i = parts.length; i >= 1 && !replaced; i--) {
      const target = files.aliases.get(parts.slice(0, i).join("/"));
      if (target === undefined) continue;
      cur = [target, ...parts.slice(i)].filter((p) => p !== "").join("/");
      replaced = true;
    }
    if (!replaced) return cur;
  }
  throw invalid(`${files.source}: too many levels of links resolving ${rel}`);
}

/** Absolute path of a file of the image. */
export function imagePath(files: ImageFiles, rel: string): string {
  const r = resolveRel(files, rel);
  return r === "" ? files.root : join(files.root, r);
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * Extract an image archive (a tar of an OCI layout or a `docker save`,
 * optionally gzip-compressed) into `dest`, which must not exist. Only regular
 * files and directories are written; links are recorded as aliases. `skip`
 * names files not worth writing (blobs whose layer is already unpacked).
 */
export async function extractImageArchive(file: string, dest: string, skip: (rel: string) => boolean): Promise<ImageFiles> {
  const kind = sniffCompression(await readHead(file));
  if (kind !== "none" && kind !== "gzip") throw invalid(`${file} is compressed with ${kind}; decompress it first (or give a plain tar or .tar.gz)`);
  await mkdir(dest, { mode: 0o700 });
  const files: ImageFiles = { root: dest, aliases: new Map(), source: file, skipped: new Map() };
  const extract = tar.extract();
  const feeding = pipeline([createReadStream(file), ...(kind === "gzip" ? [createGunzip()] : []), extract]);
  feeding.catch(() => undefined);
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const rel = safeEntryPath(h.name);
      if (rel === undefined) throw invalid(`${file}: the archive has an entry with an unsafe path ${JSON.stringify(h.name)} (absolute or with '..'); refusing it`, { entry: h.name });
      const abs = rel === "" ? dest : join(dest, rel);
      const isFileEntry = (h.type === "file" || h.type === "contiguous-file") && rel !== "";
      if (isFileEntry) files.aliases.delete(rel);
      if (isFileEntry && skip(rel)) files.skipped.set(rel, h.size ?? 0);
      else if (isFileEntry) {
        files.skipped.delete(rel);
        // Only directories and files exist under dest, so mkdir and open cannot be led elsewhere.
        await mkdir(dirname(abs), { recursive: true, mode: 0o700 });
        await rm(abs, { recursive: true, force: true });
        const fh = await open(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            let off = 0;
            while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
          }
        } finally {
          await fh.close();
        }
        continue;
      }
      for await (const _chunk of entry) {
        /* discarded */
      }
      if (h.type === "directory") {
        await mkdir(abs, { recursive: true, mode: 0o700 });
      } else if (h.type === "symlink" && rel !== "") {
        // Relative to the link's directory; absolute targets point outside the archive and are dropped.
        const target = (h.linkname ?? "").startsWith("/") ? undefined : safeEntryPath(posix.join(posix.dirname(rel), h.linkname ?? ""));
        if (target !== undefined && target !== rel) files.aliases.set(rel, target);
      } else if (h.type === "link" && rel !== "") {
        const target = safeEntryPath(h.linkname ?? "");
        if (target !== undefined && target !== "" && target !== rel) files.aliases.set(rel, target);
      }
    }
    await feeding;
  } catch (err) {
    extract.destroy();
    await feeding.catch(() => undefined);
    if (err instanceof AgentboxError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.syscall) throw new AgentboxError("INTERNAL", `extracting ${file}: ${e.message}`);
    throw invalid(`${file} is not a readable tar archive (an OCI layout or a docker save): ${e.message}`);
  }
  return findImageRoot(files);
}

/** A directory image; also accepts a layout one directory down (a tar made of the directory itself). */
export function openImageDir(dir: string): ImageFiles {
  return findImageRoot({ root: dir, aliases: new Map(), source: dir, skipped: new Map() });
}

const MARKERS = ["oci-layout", "index.json", "manifest.json"];

function findImageRoot(files: ImageFiles): ImageFiles {
  if (MARKERS.some((m) => existsSync(imagePath(files, m)))) return files;
  const entries = readdirSync(files.root, { withFileTypes: true });
  const only = entries.length === 1 && entries[0]!.isDirectory() ? entries[0]!.name : undefined;
  if (only !== undefined && MARKERS.some((m) => existsSync(join(files.root, only, m)))) {
    const inside = (p: string) => p.startsWith(`${only}/`);
    const strip = (p: string) => p.slice(only.length + 1);
    const aliases = new Map([...files.aliases].filter(([from, to]) => inside(from) && inside(to)).map(([from, to]) => [strip(from), strip(to)]));
    const skipped = new Map([...files.skipped].filter(([rel]) => inside(rel)).map(([rel, size]) => [strip(rel), size]));
    return { root: join(files.root, only), aliases, source: files.source, skipped };
  }
  throw invalid(`${files.source} is not an image: expected an OCI image layout (files oci-layout and index.json) or a docker save (manifest.json)`, { path: files.source });
}

async function readJson(files: ImageFiles, rel: string, what: string): Promise<unknown> {
  const p = imagePath(files, rel);
  if (!isFile(p)) throw invalid(`${files.source}: ${rel} (${what}) is missing`, { path: files.source, file: rel });
  if (statSync(p).size > MAX_JSON_BYTES) throw invalid(`${files.source}: ${rel} (${what}) is too large to be image metadata`, { file: rel });
  return parseJson(await readFile(p, "utf8"), `${files.source}: ${rel} (${what})`);
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw invalid(`${where} is not valid JSON: ${(err as Error).message}`);
  }
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  annotations?: Record<string, string>;
}

function asObject(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw invalid(`${where} is not a JSON object`);
  return v as Record<string, unknown>;
}

function asDescriptor(v: unknown, where: string): Descriptor {
  const o = asObject(v, where);
  if (typeof o.digest !== "string") throw invalid(`${where} has no digest`);
  if (!DIGEST.test(o.digest)) {
    const alg = o.digest.split(":")[0];
    throw invalid(alg !== "sha256" && o.digest.includes(":") ? `${where} uses digest algorithm ${alg}; only sha256 is supported` : `${where} has a malformed digest ${JSON.stringify(o.digest)}`);
  }
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) throw invalid(`${where} has no valid size`);
  const d: Descriptor = { digest: o.digest, size: o.size };
  if (typeof o.mediaType === "string") d.mediaType = o.mediaType;
  if (typeof o.platform === "object" && o.platform !== null) d.platform = o.platform as NonNullable<Descriptor["platform"]>;
  if (typeof o.annotations === "object" && o.annotations !== null) d.annotations = o.annotations as Record<string, string>;
  return d;
}

/** The file of a blob, which must exist. */
function blobPath(files: ImageFiles, desc: Descriptor, what: string): string {
  const rel = `blobs/sha256/${digestHex(desc.digest)}`;
  const p = imagePath(files, rel);
  if (!isFile(p)) throw invalid(`${files.source}: blob ${desc.digest} (${what}) is missing; expected the file ${rel}`, { path: files.source, digest: desc.digest });
  return p;
}

/** A small JSON blob (index, manifest, config), checked against its descriptor. */
async function readJsonBlob(files: ImageFiles, desc: Descriptor, what: string): Promise<unknown> {
  const p = blobPath(files, desc, what);
  if (desc.size > MAX_JSON_BYTES) throw invalid(`${files.source}: ${what} ${desc.digest} is too large to be image metadata`);
  const buf = await readFile(p);
  const actual = `sha256:${createHash("sha256").update(buf).digest("hex")}`;
  if (buf.length !== desc.size || actual !== desc.digest) {
    throw invalid(`${files.source}: ${what} blob ${desc.digest} does not match its digest (content is ${actual}, ${buf.length} bytes); the image is corrupt`, { digest: desc.digest });
  }
  return parseJson(buf.toString("utf8"), `${files.source}: ${what} ${desc.digest}`);
}

/** Find the layers and config of the image in `files`. */
export async function readImage(files: ImageFiles): Promise<ImageLayout> {
  if (existsSync(imagePath(files, "oci-layout")) || existsSync(imagePath(files, "index.json"))) return readOciLayout(files);
  return readDockerArchive(files);
}

const GO_ARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
export const HOST_PLATFORM = `linux/${GO_ARCH[process.arch] ?? process.arch}`;

async function readOciLayout(files: ImageFiles): Promise<ImageLayout> {
  const layout = asObject(await readJson(files, "oci-layout", "the OCI layout marker"), `${files.source}: oci-layout`);
  if (typeof layout.imageLayoutVersion !== "string") throw invalid(`${files.source}: oci-layout has no imageLayoutVersion`);
  const index = await readJson(files, "index.json", "the OCI image index");
  const manifest = await pickManifest(files, index, "index.json", 0);
  const m = asObject(manifest.json, `${files.source}: manifest ${manifest.digest}`);
  if (!Array.isArray(m.layers)) throw invalid(`${files.source}: manifest ${manifest.digest} has no layers list (is it an image?)`);
  const configDesc = asDescriptor(m.config, `${files.source}: manifest ${manifest.digest} config`);
  if (configDesc.mediaType !== undefined && configDesc.mediaType !== MT.ociConfig && configDesc.mediaType !== MT.dockerConfig) {
    throw invalid(`${files.source}: manifest ${manifest.digest} is not a container image (its config is ${configDesc.mediaType})`);
  }
  const config = parseImageConfig(await readJsonBlob(files, configDesc, "image config"));
  const total = m.layers.length;
  const layers = m.layers.map((l, i): LayerRef => {
    const d = asDescriptor(l, `${files.source}: manifest ${manifest.digest} layer ${i + 1}`);
    const label = `layer ${i + 1} of ${total} (${d.digest})`;
    checkLayerMediaType(d.mediaType, label);
    const ref: LayerRef = { file: imagePath(files, `blobs/sha256/${digestHex(d.digest)}`), size: d.size, digest: d.digest, label };
    if (d.mediaType !== undefined) ref.mediaType = d.mediaType;
    return ref;
  });
  return { layers, config };
}

/** Follow the index (and nested indexes) down to one image manifest. */
async function pickManifest(files: ImageFiles, index: unknown, where: string, depth: number): Promise<{ digest: string; json: unknown }> {
  if (depth > 4) throw invalid(`${files.source}: image indexes nested too deeply`);
  const o = asObject(index, `${files.source}: ${where}`);
  if (!Array.isArray(o.manifests) || o.manifests.length === 0) throw invalid(`${files.source}: ${where} lists no manifests`);
  const all = o.manifests.map((d, i) => asDescriptor(d, `${files.source}: ${where} manifest ${i + 1}`));
  // Build attestations (buildx) ride along as manifests of platform unknown/unknown.
  const images = all.filter((d) => d.annotations?.["vnd.docker.reference.type"] !== "attestation-manifest");
  const chosen = images.length === 1 ? images[0] : images.find((d) => d.platform && `${d.platform.os}/${d.platform.architecture}` === HOST_PLATFORM);
  if (chosen === undefined) {
    {
      const names = images.map((d) => (d.platform ? `${d.platform.os}/${d.platform.architecture}` : (d.annotations?.["org.opencontainers.image.ref.name"] ?? d.digest)));
      throw invalid(`${files.source}: ${where} lists ${images.length} manifests (${names.join(", ")}) and none is for ${HOST_PLATFORM}; keep only the image to import`, { manifests: names });
    }
  }
  const json = await readJsonBlob(files, chosen, "manifest");
  const mediaType = chosen.mediaType ?? (asObject(json, `${files.source}: manifest ${chosen.digest}`).mediaType as string | undefined);
  const isIndex = mediaType === MT.ociIndex || mediaType === MT.dockerList || (mediaType === undefined && Array.isArray((json as { manifests?: unknown }).manifests));
  if (isIndex) return pickManifest(files, json, `index ${chosen.digest}`, depth + 1);
  if (mediaType !== undefined && mediaType !== MT.ociManifest && mediaType !== MT.dockerManifest) {
    throw invalid(`${files.source}: ${chosen.digest} has media type ${mediaType}, which is not an image manifest`);
  }
  return { digest: chosen.digest, json };
}

/** A file named in a docker manifest: a safe relative path, resolved through the archive's links. */
function archiveFile(files: ImageFiles, name: unknown, what: string): { rel: string; path: string; size: number } {
  const named = typeof name === "string" ? safeEntryPath(name) : undefined;
  if (named === undefined || named === "") throw invalid(`${files.source}: manifest.json names ${what} as ${JSON.stringify(name)}, which is not a safe relative path`);
  const rel = resolveRel(files, named);
  const path = rel === "" ? files.root : join(files.root, rel);
  const skipped = files.skipped.get(rel);
  if (skipped !== undefined) return { rel, path, size: skipped };
  if (!isFile(path)) throw invalid(`${files.source}: ${what} ${named} named in manifest.json is missing`, { file: named });
  return { rel, path, size: statSync(path).size };
}

async function readDockerArchive(files: ImageFiles): Promise<ImageLayout> {
  const manifest = await readJson(files, "manifest.json", "the docker save manifest");
  if (!Array.isArray(manifest) || manifest.length === 0) throw invalid(`${files.source}: manifest.json lists no images`);
  if (manifest.length > 1) {
    const tags = manifest.map((m: { RepoTags?: unknown }) => (Array.isArray(m.RepoTags) ? m.RepoTags.join(" ") : "untagged"));
    throw invalid(`${files.source}: the archive holds ${manifest.length} images (${tags.join(", ")}); save one image per archive`);
  }
  const m = asObject(manifest[0], `${files.source}: manifest.json`);
  if (!Array.isArray(m.Layers)) throw invalid(`${files.source}: manifest.json has no Layers list`);
  const configFile = archiveFile(files, m.Config, "the image config");
  if (configFile.size > MAX_JSON_BYTES) throw invalid(`${files.source}: ${String(m.Config)} is too large to be an image config`);
  const configRaw = await readFile(configFile.path, "utf8");
  const configJson = parseJson(configRaw, `${files.source}: ${String(m.Config)}`);
  const config = parseImageConfig(configJson);
  const rootfs = (configJson as { rootfs?: { diff_ids?: unknown } }).rootfs;
  const diffIds = Array.isArray(rootfs?.diff_ids) && rootfs.diff_ids.length === m.Layers.length ? (rootfs.diff_ids as unknown[]) : [];
  const total = m.Layers.length;
  const layers = m.Layers.map((name, i): LayerRef => {
    const file = archiveFile(files, name, `layer ${i + 1}`);
    const ref: LayerRef = { file: file.path, size: file.size, label: `layer ${i + 1} of ${total} (${String(name)})` };
    // Newer docker saves store layers as OCI blobs, named by their content digest.
    const blob = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(file.rel);
    if (blob) ref.digest = `sha256:${blob[1]}`;
    const diffId = diffIds[i];
    if (typeof diffId === "string" && DIGEST.test(diffId)) ref.diffId = diffId;
    return ref;
  });
  return { layers, config };
}

/** The parts of an image config a sandbox uses: `Env` ("K=V" list), `WorkingDir`, `User`. */
export function parseImageConfig(json: unknown): ImageConfig {
  const c = (asObject(json, "the image config").config ?? {}) as { Env?: unknown; WorkingDir?: unknown; User?: unknown };
  const env: Record<string, string> = {};
  if (Array.isArray(c.Env)) {
    for (const kv of c.Env) {
      if (typeof kv !== "string") continue;
      const eq = kv.indexOf("=");
      // "K" alone means "take it from the host" to docker; a sandbox has no host environment to take from.
      if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
  }
  const config: ImageConfig = { env };
  if (typeof c.WorkingDir === "string" && c.WorkingDir !== "") config.workdir = c.WorkingDir;
  if (typeof c.User === "string" && c.User !== "") config.user = c.User;
  return config;
}
