/**
 * Where images may come from. A template's `dir:`/`oci:` path is read by the
 * runtime as root, so a path must lie under an image root the operator
 * allowed (`--image-root`), or be an image uploaded through the API
 * (`POST /v1/images`, kept in the data dir). Anything else would let an API
 * caller read host files through a sandbox.
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readdirSync, realpathSync, renameSync, rmSync, statSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { isAbsolute, join, relative, resolve } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AgentboxError } from "@agentbox/protocol";

/** Largest image upload accepted. */
export const MAX_IMAGE_UPLOAD_BYTES = 64 * 2 ** 30;

function within(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

export class ImageSources {
  readonly uploadsDir: string;
  private readonly roots: string[];
  private readonly dataDir: string;

  constructor(dataDir: string, imageRoots: string[]) {
    this.uploadsDir = join(dataDir, "images", "uploads");
    mkdirSync(this.uploadsDir, { recursive: true, mode: 0o700 });
    this.dataDir = realpathSync(dataDir);
    this.roots = [this.uploadsDir, ...imageRoots];
  }

  /**
   * Check an image reference; answer it with its path resolved (symlinks too), which is what
   * the runtime is then given. PERMISSION_DENIED for a path outside every root.
   */
  resolve(ref: string): string {
    if (ref === "host") return ref;
    const kind = ref.slice(0, 4);
    const lexical = resolve(ref.slice(4));
    let real = lexical;
    if (existsSync(lexical)) real = realpathSync(lexical);
    if (!this.roots.some((root) => within(root, lexical) && within(existsSync(root) ? realpathSync(root) : root, real))) {
      const allowed = this.roots.length > 1 ? `under ${this.roots.slice(1).join(", ")} (the server's --image-root)` : "nowhere on this server (no --image-root is set)";
      throw new AgentboxError(
        "PERMISSION_DENIED",
        `image: ${lexical} is not under an image root; upload the image (POST /v1/images, \`agentbox template import\`), or import paths ${allowed}`,
        { field: "image" },
      );
    }
    // An image root may contain the data dir (its API key, its database): only uploads count there.
    if (within(this.dataDir, real) && !within(realpathSync(this.uploadsDir), real)) {
      throw new AgentboxError("PERMISSION_DENIED", `image: ${lexical} is inside the server's data directory`, { field: "image" });
    }
    return `${kind}${real}`;
  }

  /** Store an uploaded archive (an OCI layout as a tar, or a docker save), content-addressed. */
  async receive(req: IncomingMessage): Promise<{ image: string; digest: string; sizeBytes: number }> {
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > MAX_IMAGE_UPLOAD_BYTES) throw new AgentboxError("PAYLOAD_TOO_LARGE", `an image upload may be at most ${MAX_IMAGE_UPLOAD_BYTES} bytes`);
    const tmp = join(this.uploadsDir, `.upload-${process.pid}-${randomBytes(6).toString("hex")}`);
    const hash = createHash("sha256");
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > MAX_IMAGE_UPLOAD_BYTES) return done(new AgentboxError("PAYLOAD_TOO_LARGE", `an image upload may be at most ${MAX_IMAGE_UPLOAD_BYTES} bytes`));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(req, meter, createWriteStream(tmp, { mode: 0o600 }));
    } catch (err) {
      rmSync(tmp, { force: true });
      if (err instanceof AgentboxError) throw err;
      throw new AgentboxError("INVALID_REQUEST", `the upload ended early: ${(err as Error).message}`);
    }
    if (!req.complete) {
      rmSync(tmp, { force: true });
      throw new AgentboxError("INVALID_REQUEST", "the upload ended early");
    }
    if (size === 0) {
      rmSync(tmp, { force: true });
      throw new AgentboxError("INVALID_REQUEST", "the upload is empty: send an OCI layout as a tar, or a docker save archive");
    }
    const digest = hash.digest("hex");
    const path = join(this.uploadsDir, `${digest}.tar`);
    if (existsSync(path)) rmSync(tmp, { force: true });
    else renameSync(tmp, path);
    return { image: `oci:${path}`, digest: `sha256:${digest}`, sizeBytes: size };
  }

  /**
   * Remove uploads no template refers to and uploads cut off before they ended, once they are
   * an hour old (a client uploads first and creates its template next).
   */
  collect(referenced: Set<string>): void {
    for (const name of readdirSync(this.uploadsDir)) {
      const path = join(this.uploadsDir, name);
      if (Date.now() - statSync(path).mtimeMs < 3600_000) continue;
      if (name.startsWith(".upload-") || (name.endsWith(".tar") && !referenced.has(`oci:${path}`))) rmSync(path, { force: true });
    }
  }
}
