/**
 * A sandbox's root filesystem: the image as the read-only lower layer and a
 * private upper layer, joined with overlayfs. Mounted by the runtime (root)
 * on the host; the sandbox reaches it only through bubblewrap's bind of the
 * merged directory.
 *
 * The upper layer lives on the sandbox's own disk: a sparse file of the
 * sandbox's storage size, formatted ext4 and loop-mounted. That is what
 * enforces the storage limit (a write past it fails with ENOSPC inside the
 * sandbox) and what keeps a sandbox from filling the host's disk. The disk
 * costs no space until written and is made ahead of time with the layers.
 */
import { execFile } from "node:child_process";
import { chownSync, existsSync, mkdirSync, rmSync, rmdirSync } from "node:fs";
import { chown, mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { SANDBOX_HOME } from "./host-image.js";
import { findProgram } from "./system-tools.js";

const run = promisify(execFile);

export interface RootfsPaths {
  readonly dir: string;
  /** The sandbox's disk image and where it is mounted (the upper and work dirs live on it). */
  readonly disk: string;
  readonly layer: string;
  readonly upper: string;
  readonly work: string;
  readonly merged: string;
}

/**
 * Layers live in the data dir (which may sit under a private directory such as
 * /root); the merged mount point lives under `mountDir`, whose every ancestor the
 * unprivileged sandbox uid can traverse, because bubblewrap resolves it as that uid.
 */
export function rootfsPaths(sandboxDir: string, mountDir: string): RootfsPaths {
  return {
    dir: sandboxDir,
    disk: join(sandboxDir, "disk.img"),
    layer: join(sandboxDir, "layer"),
    upper: join(sandboxDir, "layer", "upper"),
    work: join(sandboxDir, "layer", "work"),
    merged: mountDir,
  };
}

/**
 * Create the (empty) layers ahead of time. Directories the sandbox user writes are
 * owned by its host uid. Filesystem metadata is slow on some disks (milliseconds a
 * call), so the runtime prepares layers for the next sandboxes in the background.
 */
export async function prepareLayers(paths: RootfsPaths, hostUid: number, ownedDirs: string[], storageBytes: number): Promise<void> {
  await mkdir(paths.layer, { recursive: true, mode: 0o700 });
  await makeDisk(paths, storageBytes);
  await mkdir(paths.upper, { recursive: true, mode: 0o755 });
  await mkdir(paths.work, { recursive: true, mode: 0o700 });
  await mkdir(paths.merged, { recursive: true, mode: 0o755 });
  // Mount points bubblewrap mounts over: they must exist, since it cannot create them in a
  // root directory the sandbox user does not own (an image's root).
  for (const point of ["proc", "dev", "tmp"]) await mkdir(join(paths.upper, point), { recursive: true, mode: 0o755 });
  for (const owned of new Set([SANDBOX_HOME, "/workspace", ...ownedDirs])) {
    const p = join(paths.upper, owned);
    await mkdir(p, { recursive: true, mode: 0o755 });
    await chown(p, hostUid, hostUid);
  }
}

/** Smallest disk ext4 is made on; a smaller storage limit still gets a disk this big. */
export const MIN_DISK_BYTES = 8 * 1024 * 1024;

/** A sparse ext4 image of `storageBytes`, loop-mounted on `paths.layer`. */
async function makeDisk(paths: RootfsPaths, storageBytes: number): Promise<void> {
  const fh = await open(paths.disk, "w", 0o600);
  try {
    await fh.truncate(Math.max(MIN_DISK_BYTES, storageBytes));
  } finally {
    await fh.close();
  }
  // No journal (the disk dies with the sandbox), no reserved blocks (the whole size is the sandbox's).
  await run(findProgram("mkfs.ext4") ?? "mkfs.ext4", ["-q", "-F", "-O", "^has_journal", "-m", "0", "-E", "nodiscard", paths.disk]);
  // noinit_itable: no background zeroing of inode tables (it would write the sparse file full);
  // discard: what the sandbox deletes is given back to the host's disk.
  await run("mount", ["-o", "loop,noinit_itable,discard,nosuid,nodev", paths.disk, paths.layer]);
}

/** Make sure `dir` (inside the sandbox) exists in the upper layer and belongs to the sandbox user. */
export function ensureOwnedDir(paths: RootfsPaths, hostUid: number, dir: string): void {
  // `dir` may come from an image's config: it must stay inside the upper layer.
  if (!dir.startsWith("/") || dir.split("/").includes("..")) throw new Error(`${JSON.stringify(dir)} is not an absolute path without ".." segments`);
  const p = join(paths.upper, dir);
  if (existsSync(p)) return;
  mkdirSync(p, { recursive: true, mode: 0o755 });
  chownSync(p, hostUid, hostUid);
}

/**
 * The overlay spec the enter helper mounts (`LOWER[:LOWER…]:UPPER:WORK:TARGET`, lower dirs
 * top first): one mount(2), no `mount` process.
 */
export function overlaySpec(paths: RootfsPaths, lowers: string[]): string {
  if (lowers.length === 0) throw new Error("an overlay needs at least one lower layer");
  for (const p of [...lowers, paths.upper, paths.work, paths.merged]) {
    if (p.includes(":") || p.includes(",")) throw new Error(`path ${p} cannot be used for an overlay layer (contains ':' or ',')`);
  }
  return `${lowers.join(":")}:${paths.upper}:${paths.work}:${paths.merged}`;
}

export async function unmountRootfs(paths: RootfsPaths): Promise<void> {
  try {
    await run("umount", [paths.merged]);
  } catch {
    // Busy or not mounted: detach lazily so removal below cannot reach the lower layer.
    await run("umount", ["-l", paths.merged]).catch(() => undefined);
  }
  // Then the disk under it (its loop device detaches with the last unmount).
  await run("umount", [paths.layer]).catch(() => run("umount", ["-l", paths.layer]).catch(() => undefined));
  rmSync(paths.dir, { recursive: true, force: true });
  try {
    rmdirSync(paths.merged);
  } catch {
    /* absent, or still mounted (lazily detached): left for the next clean-up */
  }
}
