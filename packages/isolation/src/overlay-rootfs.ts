/**
 * A sandbox's root filesystem: the image as the read-only lower layer and a
 * private upper layer, joined with overlayfs. Mounted by the runtime (root)
 * on the host; the sandbox reaches it only through bubblewrap's bind of the
 * merged directory.
 */
import { execFile } from "node:child_process";
import { chownSync, existsSync, mkdirSync, rmSync, rmdirSync } from "node:fs";
import { chown, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { SANDBOX_HOME } from "./host-image.js";

const run = promisify(execFile);

export interface RootfsPaths {
  readonly dir: string;
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
    upper: join(sandboxDir, "upper"),
    work: join(sandboxDir, "work"),
    merged: mountDir,
  };
}

/**
 * Create the (empty) layers ahead of time. Directories the sandbox user writes are
 * owned by its host uid. Filesystem metadata is slow on some disks (milliseconds a
 * call), so the runtime prepares layers for the next sandboxes in the background.
 */
export async function prepareLayers(paths: RootfsPaths, hostUid: number, ownedDirs: string[]): Promise<void> {
  await mkdir(paths.upper, { recursive: true, mode: 0o755 });
  await mkdir(paths.work, { recursive: true, mode: 0o700 });
  await mkdir(paths.merged, { recursive: true, mode: 0o755 });
  for (const owned of new Set([SANDBOX_HOME, "/workspace", ...ownedDirs])) {
    const p = join(paths.upper, owned);
    await mkdir(p, { recursive: true, mode: 0o755 });
    await chown(p, hostUid, hostUid);
  }
}

/** Make sure `dir` (inside the sandbox) exists in the upper layer and belongs to the sandbox user. */
export function ensureOwnedDir(paths: RootfsPaths, hostUid: number, dir: string): void {
  const p = join(paths.upper, dir);
  if (existsSync(p)) return;
  mkdirSync(p, { recursive: true, mode: 0o755 });
  chownSync(p, hostUid, hostUid);
}

/** The overlay spec the enter helper mounts (`LOWER:UPPER:WORK:TARGET`): one mount(2), no `mount` process. */
export function overlaySpec(paths: RootfsPaths, lower: string): string {
  for (const p of [lower, paths.upper, paths.work, paths.merged]) {
    if (p.includes(":") || p.includes(",")) throw new Error(`path ${p} cannot be used for an overlay layer (contains ':' or ',')`);
  }
  return `${lower}:${paths.upper}:${paths.work}:${paths.merged}`;
}

export async function unmountRootfs(paths: RootfsPaths): Promise<void> {
  try {
    await run("umount", [paths.merged]);
  } catch {
    // Busy or not mounted: detach lazily so removal below cannot reach the lower layer.
    await run("umount", ["-l", paths.merged]).catch(() => undefined);
  }
  rmSync(paths.dir, { recursive: true, force: true });
  try {
    rmdirSync(paths.merged);
  } catch {
    /* absent, or still mounted (lazily detached): left for the next clean-up */
  }
}
