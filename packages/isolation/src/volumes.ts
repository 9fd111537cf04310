/**
 * Persistent volumes: named filesystems that outlive sandboxes. Each is a sparse
 * file formatted ext4 and loop-mounted on the host (like a sandbox's own disk, see
 * overlay-rootfs.ts), which is what enforces its size: a write past it fails with
 * ENOSPC. Unlike a sandbox's disk it keeps its journal, since it must survive a crash
 * of the host or the runtime. A sandbox gets the volume's `data` directory bound in
 * by bubblewrap, so the filesystem's own root (lost+found) is never visible.
 */
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmdirSync, statSync } from "node:fs";
import { chmod, mkdir, open, readFile, rename, rm, statfs, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { AgentboxError } from "@agentbox/protocol";
import { findProgram } from "./system-tools.js";

const run = promisify(execFile);

export interface VolumeUsage {
  sizeBytes: number;
  usedBytes: number;
}

/** What is kept next to each image (`<name>.json`); written last at create, so it marks a finished volume. */
interface VolumeMeta {
  sizeBytes: number;
  /** statfs "used" of the new filesystem (lost+found, `data`, ext4's own): not the volume's files. */
  emptyUsedBytes: number;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** Smallest volume made: below it ext4's own overhead (journal, inode tables) would take most of it. */
export const MIN_VOLUME_BYTES = 8 * 1024 * 1024;
// discard: what is deleted is given back to the host's disk; noinit_itable: no background zeroing of
// inode tables, which would write the sparse file full (they read as zeros already).
const MOUNT_OPTIONS = "loop,nosuid,nodev,discard,noinit_itable";

interface Mount {
  /** major:minor of the mounted device. */
  device: string;
  mountPoint: string;
}

/** Mount points are octal-escaped in mountinfo (space is \040). */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

function mounts(): Mount[] {
  const out: Mount[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const f = line.split(" ");
    if (f.length > 4) out.push({ device: f[2]!, mountPoint: unescape(f[4]!) });
  }
  return out;
}

/** The file behind a loop device, or "" for other devices. */
function backingFile(device: string): string {
  try {
    return readFileSync(`/sys/dev/block/${device}/loop/backing_file`, "utf8").trim();
  } catch {
    return "";
  }
}

/** The path with symlinks resolved, as the kernel reports it; the path itself if it does not exist. */
function real(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function failed(what: string, err: unknown): AgentboxError {
  if (err instanceof AgentboxError) return err;
  const e = err as { stderr?: string; message?: string };
  return new AgentboxError("INTERNAL", `${what}: ${(e.stderr || e.message || String(err)).trim()}`);
}

export class VolumeStore {
  /** Operations on one volume run one at a time (a create racing a mount or a remove of the same name). */
  private readonly queues = new Map<string, Promise<unknown>>();

  /** Images live in `dataDir` (e.g. <data>/volumes/<name>.img); they are mounted under `mountsDir` (e.g. /run/agentbox/<instance>/volumes/<name>). */
  private readonly dataDir: string;
  private readonly mountsDir: string;

  constructor(dataDir: string, mountsDir: string) {
    this.dataDir = resolve(dataDir);
    this.mountsDir = resolve(mountsDir);
  }

  /**
   * Make a volume: a sparse ext4 image of `sizeBytes`, mounted, with a `data` directory inside as
   * the volume's root. Refuses an existing name with CONFLICT and a bad name or size with INVALID_REQUEST.
   */
  async create(name: string, sizeBytes: number): Promise<VolumeUsage> {
    this.checkName(name);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_VOLUME_BYTES) {
      throw new AgentboxError("INVALID_REQUEST", `a volume's size must be a whole number of bytes, at least ${MIN_VOLUME_BYTES}`, { sizeBytes });
    }
    return this.serial(name, async () => {
      if (existsSync(this.metaPath(name))) throw new AgentboxError("CONFLICT", `volume ${name} already exists`);
      const image = this.imagePath(name);
      // An image without its json is what an interrupted create leaves: start over.
      if (existsSync(image)) await this.discard(name);
      await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
      try {
        const fh = await open(image, "wx", 0o600);
        try {
          await fh.truncate(sizeBytes);
        } finally {
          await fh.close();
        }
        // Journal kept (crash safety); no reserved blocks (the whole size is the volume's). The lazy
        // inits skip zeroing what a new sparse file already reads as zeros.
        await run(findProgram("mkfs.ext4") ?? "mkfs.ext4", ["-q", "-F", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", image]);
        const root = await this.mountImage(name);
        await mkdir(join(root, "data"), { mode: 0o755 });
        await chmod(join(root, "data"), 0o755);
        const meta: VolumeMeta = { sizeBytes, emptyUsedBytes: await usedBytes(root) };
        const tmp = `${this.metaPath(name)}.tmp`;
        await writeFile(tmp, JSON.stringify(meta), { mode: 0o600 });
        await rename(tmp, this.metaPath(name));
      } catch (err) {
        await this.discard(name).catch(() => undefined);
        throw failed(`creating volume ${name}`, err);
      }
      return { sizeBytes, usedBytes: 0 };
    });
  }

  exists(name: string): boolean {
    return NAME.test(name) && existsSync(this.metaPath(name));
  }

  /** Host directory to bind into a sandbox (mounting the image first if needed, e.g. after a restart). */
  async mount(name: string): Promise<string> {
    this.checkName(name);
    return this.serial(name, async () => {
      await this.meta(name);
      return join(await this.mountImage(name), "data");
    });
  }

  /**
   * Give the volume's files to `hostUid` (and its group of the same number), for a read-write mount
   * by a sandbox running as that host uid. Symlinks are changed themselves, never followed: a volume
   * a sandbox wrote may point anywhere on the host. (No hard link can: the volume is its own filesystem.)
   */
  async chownTo(name: string, hostUid: number): Promise<void> {
    this.checkName(name);
    if (!Number.isSafeInteger(hostUid) || hostUid < 0) throw new AgentboxError("INVALID_REQUEST", `bad uid ${hostUid}`);
    return this.serial(name, async () => {
      await this.meta(name);
      const data = join(await this.mountImage(name), "data");
      // chown(1) walks with descriptors (openat, no path re-resolution), so a sandbox swapping a
      // directory for a symlink mid-walk cannot send it outside the volume.
      await run(findProgram("chown") ?? "chown", ["-R", "-P", "--no-dereference", `+${hostUid}:+${hostUid}`, "--", data]).catch((err: unknown) => {
        throw failed(`chown of volume ${name}`, err);
      });
    });
  }

  /** usedBytes: bytes used by files (the filesystem's use minus what it used empty, right after create). Mounts it if needed. */
  async usage(name: string): Promise<VolumeUsage> {
    this.checkName(name);
    return this.serial(name, async () => {
      const meta = await this.meta(name);
      const used = await usedBytes(await this.mountImage(name));
      return { sizeBytes: meta.sizeBytes, usedBytes: Math.max(0, used - meta.emptyUsedBytes) };
    });
  }

  /** Unmount and delete the image. NOT_FOUND if absent. */
  async remove(name: string): Promise<void> {
    this.checkName(name);
    return this.serial(name, async () => {
      await this.meta(name);
      await this.discard(name);
    });
  }

  list(): string[] {
    let files: string[];
    try {
      files = readdirSync(this.dataDir);
    } catch {
      return [];
    }
    return files
      .filter((f) => f.endsWith(".json"))
      .map((f) => f.slice(0, -".json".length))
      .filter((n) => NAME.test(n) && existsSync(this.imagePath(n)))
      .sort();
  }

  /** Unmount every mounted volume (runtime shutdown). */
  async unmountAll(): Promise<void> {
    const dir = real(this.mountsDir);
    const points = mounts()
      .map((m) => m.mountPoint)
      .filter((p) => dirname(p) === dir);
    for (const p of new Set(points)) {
      await this.unmount(p);
    }
  }

  private imagePath(name: string): string {
    return join(this.dataDir, `${name}.img`);
  }

  private metaPath(name: string): string {
    return join(this.dataDir, `${name}.json`);
  }

  private mountPoint(name: string): string {
    return join(this.mountsDir, name);
  }

  private checkName(name: string): void {
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new AgentboxError("INVALID_REQUEST", `bad volume name ${JSON.stringify(name)}: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63`);
    }
  }

  private async meta(name: string): Promise<VolumeMeta> {
    try {
      return JSON.parse(await readFile(this.metaPath(name), "utf8")) as VolumeMeta;
    } catch {
      throw new AgentboxError("NOT_FOUND", `no volume ${name}`);
    }
  }

  private serial<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.queues.set(name, settled);
    void settled.then(() => {
      if (this.queues.get(name) === settled) this.queues.delete(name);
    });
    return next;
  }

  /** Mount the image (unless it is already) and return the mount point, the filesystem's root. */
  private async mountImage(name: string): Promise<string> {
    const point = this.mountPoint(name);
    this.makeTraversable(point);
    // mountinfo has real paths (a mounts dir under /var/run is listed under /run).
    const realPoint = real(point);
    if (mounts().some((m) => m.mountPoint === realPoint)) return point;
    // Mounted elsewhere too (say, by a runtime that crashed with another mounts dir), mount(8) reuses
    // that loop device, so both are the one filesystem: never two ext4 instances on one image.
    try {
      await run("mount", ["-o", MOUNT_OPTIONS, this.imagePath(name), point]);
    } catch (err) {
      throw failed(`mounting volume ${name}`, err);
    }
    return point;
  }

  /**
   * bubblewrap resolves the bind source as the sandbox's host uid, so every directory on the way
   * must be traversable by anyone (0711: searchable, not listable).
   */
  private makeTraversable(point: string): void {
    const missing: string[] = [];
    for (let d = point; !existsSync(d); d = dirname(d)) missing.unshift(d);
    for (const d of missing) {
      mkdirSync(d, { mode: 0o711 });
      chmodSync(d, 0o711); // the mode given to mkdir is cut by the umask
    }
    // A mounts dir that was there already keeps its mode, only made searchable if it was not.
    const mode = statSync(this.mountsDir).mode & 0o7777;
    if ((mode & 0o011) !== 0o011) chmodSync(this.mountsDir, mode | 0o011);
  }

  private async unmount(point: string): Promise<void> {
    try {
      await run("umount", [point]);
    } catch {
      // Busy (a process has a file open there): detach lazily, the filesystem goes with its last user.
      await run("umount", ["-l", point]).catch(() => undefined);
    }
  }

  /** Unmount (here and wherever else the same image is mounted, so its loop device goes) and delete. */
  private async discard(name: string): Promise<void> {
    const image = real(this.imagePath(name));
    const point = real(this.mountPoint(name));
    const points = mounts()
      .filter((m) => m.mountPoint === point || backingFile(m.device) === image)
      .map((m) => m.mountPoint);
    for (const p of new Set(points)) await this.unmount(p);
    await rm(this.metaPath(name), { force: true });
    await rm(`${this.metaPath(name)}.tmp`, { force: true });
    await rm(this.imagePath(name), { force: true });
    try {
      rmdirSync(this.mountPoint(name));
    } catch {
      /* absent, or still mounted (lazily detached) */
    }
  }
}

/** Bytes in use on the filesystem mounted at `dir` (ext4 counts its fixed metadata apart, so this starts small). */
async function usedBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return (s.blocks - s.bfree) * s.bsize;
}
