/**
 * Snapshots: a sandbox's writable (upper) layer turned into a read-only image
 * layer that new sandboxes stack on top of their template's layers.
 *
 * Ownership is the subtle part. A sandbox's user maps to a host uid of its
 * own, so files it wrote belong to that uid; in another sandbox they would
 * show as `nobody` and could not be changed. The layer therefore stores them
 * under one neutral uid (LAYER_USER_UID) and lists them in a manifest, and
 * each new sandbox hands exactly those paths to its own uid before it runs
 * anything (`giveOwnedPaths`).
 */
import { execFile } from "node:child_process";
import { lstat, lchown, readdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { findProgram } from "./system-tools.js";

const run = promisify(execFile);

/** Host uid that owns, inside stored layers, what a sandbox user created. Never a live sandbox's uid. */
export const LAYER_USER_UID = 1_999_999;

/** getfattr escapes unusual bytes of names as \ooo (octal). */
function unescapeOctal(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const m = text[i] === "\\" ? /^[0-7]{3}/.exec(text.slice(i + 1)) : null;
    if (m) {
      bytes.push(Number.parseInt(m[0], 8));
      i += 3;
    } else {
      bytes.push(...Buffer.from(text[i]!, "utf8"));
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

/** Directories under `root` marked opaque by overlayfs (their lower contents are hidden). */
async function opaqueDirs(root: string): Promise<string[]> {
  const getfattr = findProgram("getfattr") ?? "getfattr";
  const { stdout } = await run(getfattr, ["-R", "-P", "--absolute-names", "-d", "-m", "^trusted\\.overlay\\.opaque$", root], {
    maxBuffer: 256 * 2 ** 20,
  }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? "" }));
  const out: string[] = [];
  let file: string | undefined;
  for (const line of stdout.split("\n")) {
    if (line.startsWith("# file: ")) file = unescapeOctal(line.slice("# file: ".length));
    else if (file && /^trusted\.overlay\.opaque="?y"?$/.test(line.trim())) out.push(file);
  }
  return out;
}

/**
 * Copy the upper layer `upper` into `dest` (which must not exist) as an image layer:
 * whiteouts and opaque directories kept, overlayfs's other private attributes dropped,
 * files of `ownerUid` given to LAYER_USER_UID. Returns the paths (relative) it gave.
 * The caller freezes the sandbox while this runs.
 */
export async function captureLayer(upper: string, dest: string, ownerUid: number): Promise<string[]> {
  await run("cp", ["-a", "--no-preserve=xattr", "--", upper, dest]);
  const setfattr = findProgram("setfattr") ?? "setfattr";
  for (const dir of await opaqueDirs(upper)) {
    const rel = dir === upper ? "" : dir.slice(upper.length + 1);
    await run(setfattr, ["-h", "-n", "trusted.overlay.opaque", "-v", "y", "--", join(dest, rel)]);
  }
  const owned: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = join(dest, rel);
    const st = await lstat(abs);
    if (st.uid === ownerUid) {
      await lchown(abs, LAYER_USER_UID, st.gid === ownerUid ? LAYER_USER_UID : st.gid);
      owned.push(rel);
    }
    if (!st.isDirectory()) return;
    for (const name of await readdir(abs)) await walk(rel ? `${rel}/${name}` : name);
  };
  await walk("");
  return owned.filter((p) => p !== "");
}

/**
 * In a freshly mounted root (nothing of the sandbox has run yet), give `paths` to
 * `hostUid`. Every component is checked with lstat and a path through a symlink is
 * skipped, so a layer can never redirect this to a host file.
 */
export async function giveOwnedPaths(merged: string, paths: string[], hostUid: number): Promise<void> {
  for (const rel of paths) {
    const parts = rel.split("/");
    if (parts.some((p) => p === "" || p === "." || p === "..")) continue;
    let ok = true;
    for (let i = 1; i < parts.length && ok; i++) {
      const st = await lstat(join(merged, ...parts.slice(0, i))).catch(() => undefined);
      ok = st?.isDirectory() ?? false;
    }
    if (!ok) continue;
    const target = join(merged, ...parts);
    const st = await lstat(target).catch(() => undefined);
    if (!st || st.uid !== LAYER_USER_UID) continue;
    await lchown(target, hostUid, st.gid === LAYER_USER_UID ? hostUid : st.gid);
  }
}
