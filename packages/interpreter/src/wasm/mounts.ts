/**
 * Mounts of the embedded interpreter, parent side: host directories copied into a session's
 * in-memory filesystem at checkout, and (read-write mounts) the changes the code made copied
 * back, confined to the host directory. The interpreter process never opens a host file: this
 * module does all host I/O (see docs/embedded.md, "Mounts"; the child side is
 * wasm-child/mount-fs.mjs).
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, readlink, realpath, rename, rmdir, symlink, unlink } from "node:fs/promises";
import type { Stats } from "node:fs";
import { isAbsolute, join, resolve as resolvePath } from "node:path";
import type { ChildMessage, InterpreterChild } from "./child.js";
import { InterpreterMountError, type MountRefusal } from "./errors.js";

export type MountMode = "read-only" | "read-write" | "overlay";

export interface Mount {
  /** Absolute POSIX path in the interpreter, e.g. `/data` (not `/`, no `..`, not in `/tmp`, `/home`, `/lib`, `/dev`, `/proc`, …). */
  path: string;
  /** The host directory (symlinks in it are not followed, see docs/embedded.md). */
  hostPath: string;
  mode: MountMode;
}

export interface MountLimits {
  /** Bytes of file contents copied in at checkout, over all mounts of a session; also the cap of one write-back (default 256 MiB). */
  maxBytes: number;
  /** Entries (files, directories, symlinks) copied in at checkout, over all mounts; also the cap of one write-back (default 10,000). */
  maxFiles: number;
}

export const DEFAULT_MOUNT_LIMITS: MountLimits = { maxBytes: 256 * 1024 * 1024, maxFiles: 10_000 };

/** A mount of a session, as set up. */
export interface MountInfo {
  path: string;
  /** The host directory, resolved (realpath) at checkout: write-back goes there. */
  hostPath: string;
  mode: MountMode;
  /** Entries copied in (files, directories, symlinks). */
  entries: number;
  bytes: number;
  /** Host entries not copied in: symlinks whose target leaves the mount (or is absolute), FIFOs, sockets, devices. */
  skipped: MountRefusal[];
}

const MODES: ReadonlySet<string> = new Set(["read-only", "read-write", "overlay"]);
/** Top-level directories of the interpreter's own filesystem (and usual system ones): no mount in or over them. */
const RESERVED: ReadonlySet<string> = new Set(["tmp", "home", "lib", "dev", "proc", "sys", "usr", "bin", "sbin", "etc"]);
/** Bytes per frame of file contents, each way. */
const CHUNK = 1024 * 1024;
const MAX_LINK_HOPS = 40;

/** The components of a relative entry name, or null when it is absolute, has `..`, `.`, empty components or NUL. */
export function entryParts(rel: unknown): string[] | null {
  if (typeof rel !== "string" || rel === "" || rel.startsWith("/") || rel.includes("\0")) return null;
  const parts = rel.split("/");
  for (const c of parts) if (c === "" || c === "." || c === "..") return null;
  return parts;
}

function checkVirtualPath(path: unknown): string {
  if (typeof path !== "string") throw new InterpreterMountError("a mount path must be a string");
  const bad = (why: string) => new InterpreterMountError(`mount path ${JSON.stringify(path)}: ${why}`);
  if (!path.startsWith("/")) throw bad("must be absolute");
  const trimmed = path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
  if (trimmed === "/") throw bad("cannot be / (mount at a directory such as /data)");
  const parts = entryParts(trimmed.slice(1));
  if (!parts) throw bad("must be a normalized absolute path, without `..`, `.`, `//` or NUL");
  if (RESERVED.has(parts[0]!)) throw bad(`is inside /${parts[0]}, which the interpreter uses itself (reserved: ${[...RESERVED].map((r) => `/${r}`).join(", ")})`);
  return `/${parts.join("/")}`;
}

function errorCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (e) {
    if (errorCode(e) === "ENOENT") return null;
    throw e;
  }
}

/**
 * Whether the relative symlink `target`, in directory `dirParts` of the tree at `root`, resolves
 * inside the tree: it is followed component by component on the host (symlinks in it too, with
 * `overlay` standing for symlinks about to be made), and refused as soon as `..` would climb
 * above the root, an absolute target appears, or there are more than 40 links. A missing
 * component resolves by name (the kernel would stop there).
 */
async function resolvesInside(root: string, dirParts: string[], target: string, overlay?: Map<string, string>): Promise<boolean> {
  if (target === "" || isAbsolute(target) || target.includes("\0")) return false;
  const parts = [...dirParts];
  const queue = target.split("/");
  let hops = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === "" || c === ".") continue;
    if (c === "..") {
      if (parts.length === 0) return false;
      parts.pop();
      continue;
    }
    parts.push(c);
    let link = overlay?.get(parts.join("/")) ?? null;
    if (link === null) {
      const st = await lstatOrNull(join(root, ...parts)).catch(() => null);
      if (st?.isSymbolicLink()) link = await readlink(join(root, ...parts));
    }
    if (link !== null) {
      if (++hops > MAX_LINK_HOPS || link === "" || isAbsolute(link)) return false;
      parts.pop();
      queue.unshift(...link.split("/"));
    }
  }
  return true;
}

interface HostEntry {
  rel: string;
  kind: "d" | "f" | "l";
  mode: number;
  mtimeMs: number;
  target?: string;
}

export interface PlannedMount {
  path: string;
  root: string;
  mode: MountMode;
  entries: HostEntry[];
  rootMode: number;
  info: MountInfo;
}

/**
 * Validates `mounts` and walks their host directories (lstat only, nothing followed), within
 * `limits`. Throws InterpreterMountError with what is wrong.
 */
export async function planMounts(mounts: unknown, limits: MountLimits): Promise<PlannedMount[]> {
  if (!Array.isArray(mounts)) throw new InterpreterMountError("mounts must be an array of {path, hostPath, mode}");
  const planned: PlannedMount[] = [];
  const budget = { entries: 0, bytes: 0 };
  for (const m of mounts as Array<Partial<Mount> | null>) {
    if (!m || typeof m !== "object") throw new InterpreterMountError("a mount must be {path, hostPath, mode}");
    const path = checkVirtualPath(m.path);
    if (typeof m.mode !== "string" || !MODES.has(m.mode)) {
      throw new InterpreterMountError(`mount ${path}: mode must be "read-only", "read-write" or "overlay", not ${JSON.stringify(m.mode)}`);
    }
    for (const other of planned) {
      if (other.path === path || other.path.startsWith(`${path}/`) || path.startsWith(`${other.path}/`)) {
        throw new InterpreterMountError(`mount ${path} overlaps mount ${other.path}`);
      }
    }
    if (typeof m.hostPath !== "string" || m.hostPath === "") throw new InterpreterMountError(`mount ${path}: hostPath must be a directory path`);
    let root: string;
    let rootStat: Stats;
    try {
      root = await realpath(resolvePath(m.hostPath));
      rootStat = await lstat(root);
    } catch (e) {
      throw new InterpreterMountError(`mount ${path}: host directory ${m.hostPath} is not readable (${errorCode(e) ?? (e as Error).message})`);
    }
    if (!rootStat.isDirectory()) throw new InterpreterMountError(`mount ${path}: host path ${m.hostPath} is not a directory`);
    const info: MountInfo = { path, hostPath: root, mode: m.mode as MountMode, entries: 0, bytes: 0, skipped: [] };
    const entries = await walkHost(root, path, limits, budget, info);
    planned.push({ path, root, mode: m.mode as MountMode, entries, rootMode: rootStat.mode & 0o7777, info });
  }
  return planned;
}

async function walkHost(root: string, path: string, limits: MountLimits, budget: { entries: number; bytes: number }, info: MountInfo): Promise<HostEntry[]> {
  const entries: HostEntry[] = [];
  const dirs: string[][] = [[]];
  while (dirs.length > 0) {
    const dirParts = dirs.pop()!;
    const names = (await readdir(join(root, ...dirParts))).sort();
    for (const name of names) {
      const parts = [...dirParts, name];
      const rel = parts.join("/");
      const abs = join(root, ...parts);
      const st = await lstatOrNull(abs);
      if (!st) continue; // gone meanwhile
      let entry: HostEntry;
      if (st.isDirectory()) {
        entry = { rel, kind: "d", mode: st.mode & 0o7777, mtimeMs: st.mtimeMs };
        dirs.push(parts);
      } else if (st.isFile()) {
        entry = { rel, kind: "f", mode: st.mode & 0o7777, mtimeMs: st.mtimeMs };
        budget.bytes += st.size;
        info.bytes += st.size;
      } else if (st.isSymbolicLink()) {
        const target = await readlink(abs);
        if (!(await resolvesInside(root, dirParts, target))) {
          info.skipped.push({ path: `${path}/${rel}`, reason: `symlink to ${JSON.stringify(target)} leaves the mount` });
          continue;
        }
        entry = { rel, kind: "l", mode: 0o777, mtimeMs: st.mtimeMs, target };
      } else {
        info.skipped.push({ path: `${path}/${rel}`, reason: "not a regular file, directory or symlink" });
        continue;
      }
      budget.entries++;
      info.entries++;
      if (budget.entries > limits.maxFiles) {
        throw new InterpreterMountError(`mount ${path}: more than ${limits.maxFiles} entries to copy in (mountLimits.maxFiles)`);
      }
      if (budget.bytes > limits.maxBytes) {
        throw new InterpreterMountError(`mount ${path}: more than ${limits.maxBytes} bytes to copy in (mountLimits.maxBytes)`);
      }
      entries.push(entry);
    }
  }
  return entries;
}

class Refused extends Error {}

/** A session's mounts in its interpreter: copy in, write back, unmount. */
export class SessionMounts {
  readonly infos: MountInfo[];
  readonly writable: boolean;

  constructor(
    private readonly child: InterpreterChild,
    private readonly plan: PlannedMount[],
    private readonly limits: MountLimits,
  ) {
    this.infos = plan.map((p) => p.info);
    this.writable = plan.some((p) => p.mode === "read-write");
  }

  private async call(type: string, fields: Record<string, unknown>): Promise<ChildMessage> {
    const reply = await this.child.fsRequest({ type: `fs-${type}`, ...fields });
    if (reply.ok !== true) throw new Error(`interpreter filesystem: ${String(reply.error)}`);
    return reply;
  }

  /** Copies every mount in (its files read here, with O_NOFOLLOW, and sent in frames of ≤ 1 MiB). */
  async attach(): Promise<void> {
    let bytes = 0;
    for (const m of this.plan) {
      await this.call("mount", { path: m.path, mode: m.mode, rootMode: m.rootMode });
      let batch: Array<Record<string, unknown>> = [];
      let batchBytes = 0;
      const flush = async () => {
        if (batch.length === 0) return;
        await this.call("put", { path: m.path, entries: batch });
        batch = [];
        batchBytes = 0;
      };
      for (const e of m.entries) {
        if (e.kind !== "f") {
          batch.push({ p: e.rel, k: e.kind, m: e.mode, t: e.mtimeMs, ...(e.target !== undefined ? { l: e.target } : {}) });
          if (batch.length >= 1000) await flush();
          continue;
        }
        const abs = join(m.root, ...e.rel.split("/"));
        let fh;
        try {
          fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
        } catch (err) {
          m.info.skipped.push({ path: `${m.path}/${e.rel}`, reason: `cannot be read (${errorCode(err) ?? (err as Error).message})` });
          continue;
        }
        try {
          if (!(await fh.stat()).isFile()) {
            m.info.skipped.push({ path: `${m.path}/${e.rel}`, reason: "changed on the host during the mount" });
            continue;
          }
          let first = true;
          for (;;) {
            const buf = Buffer.allocUnsafe(CHUNK);
            const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
            if (bytesRead === 0 && !first) break;
            bytes += bytesRead;
            if (bytes > this.limits.maxBytes) {
              throw new InterpreterMountError(`mount ${m.path}: more than ${this.limits.maxBytes} bytes to copy in (mountLimits.maxBytes)`);
            }
            batch.push({ p: e.rel, k: "f", m: e.mode, t: e.mtimeMs, d: buf.toString("base64", 0, bytesRead), a: !first });
            batchBytes += bytesRead;
            first = false;
            if (batchBytes >= CHUNK) await flush();
            if (bytesRead === 0) break;
          }
        } finally {
          await fh.close();
        }
      }
      await flush();
      await this.call("seal", { path: m.path });
    }
  }

  /**
   * Writes back what the code changed under read-write mounts since the last write-back.
   * Returns what was refused (empty when everything was applied).
   */
  async sync(): Promise<MountRefusal[]> {
    const refused: MountRefusal[] = [];
    for (const m of this.plan) {
      if (m.mode !== "read-write") continue;
      const reply = await this.call("changes", { path: m.path });
      await this.apply(m, reply, refused);
    }
    return refused;
  }

  private async apply(m: PlannedMount, reply: ChildMessage, refused: MountRefusal[]): Promise<void> {
    const changed = Array.isArray(reply.changed) ? (reply.changed as Array<Record<string, unknown>>) : [];
    const deleted = Array.isArray(reply.deleted) ? (reply.deleted as unknown[]) : [];
    const refuse = (rel: unknown, reason: string) => refused.push({ path: `${m.path}/${String(rel)}`, reason });
    let bytes = 0;
    for (const c of changed) if (c.k === "f" && typeof c.s === "number" && c.s > 0) bytes += c.s;
    if (changed.length + deleted.length > this.limits.maxFiles || bytes > this.limits.maxBytes) {
      refused.push({
        path: m.path,
        reason: `write-back of ${changed.length + deleted.length} changes (${bytes} bytes) is over the caps (mountLimits: ${this.limits.maxFiles} entries, ${this.limits.maxBytes} bytes); nothing was written`,
      });
      return;
    }
    const rootStat = await lstatOrNull(m.root).catch(() => null);
    if (!rootStat?.isDirectory()) {
      refused.push({ path: m.path, reason: `the host directory ${m.root} is gone or no longer a directory; nothing was written` });
      return;
    }
    const entry = (rel: unknown): string[] | null => {
      const parts = entryParts(rel);
      if (!parts) refuse(rel, "not a plain relative name (absolute, `..`, `.` or empty components)");
      return parts;
    };
    const attempt = async (rel: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (e) {
        refuse(rel, e instanceof Refused ? e.message : `${errorCode(e) ?? (e as Error).message}`);
      }
    };

    // 1. deletions, deepest first
    const dels = deleted.map((rel) => ({ rel, parts: entry(rel) })).filter((d): d is { rel: string; parts: string[] } => d.parts !== null);
    dels.sort((a, b) => b.parts.length - a.parts.length);
    for (const d of dels) {
      await attempt(d.rel, async () => {
        const dest = await confined(m.root, d.parts, false);
        if (dest === null) return;
        const st = await lstatOrNull(dest);
        if (!st) return;
        if (st.isDirectory()) {
          try {
            await rmdir(dest);
          } catch (e) {
            if (errorCode(e) === "ENOTEMPTY" || errorCode(e) === "EEXIST") throw new Refused("the directory is not empty on the host");
            throw e;
          }
        } else await unlink(dest);
      });
    }

    const items = changed
      .map((c) => ({ c, parts: entry(c.p) }))
      .filter((x): x is { c: Record<string, unknown>; parts: string[] } => x.parts !== null);
    const modeOf = (c: Record<string, unknown>) => (typeof c.m === "number" ? c.m & 0o777 : 0o644);

    // 2. directories, shallowest first
    const dirs = items.filter((x) => x.c.k === "d").sort((a, b) => a.parts.length - b.parts.length);
    for (const { c, parts } of dirs) {
      await attempt(c.p as string, async () => {
        const dest = (await confined(m.root, parts, true))!;
        const st = await lstatOrNull(dest);
        if (st && !st.isDirectory()) throw new Refused("exists on the host and is not a directory");
        if (!st) await mkdir(dest);
        await chmod(dest, modeOf(c));
      });
    }

    // 3. files: a temporary file beside the destination, then rename over it
    for (const { c, parts } of items) {
      if (c.k === "d" || c.k === "l") continue;
      if (c.k !== "f") {
        refuse(c.p, "not a regular file, directory or symlink");
        continue;
      }
      const size = typeof c.s === "number" && c.s >= 0 ? c.s : 0;
      await attempt(c.p as string, async () => {
        const dest = (await confined(m.root, parts, true))!;
        const st = await lstatOrNull(dest);
        if (st?.isDirectory()) throw new Refused("is a directory on the host");
        if (st?.isSymbolicLink()) throw new Refused("is a symlink on the host (neither written through nor replaced)");
        const tmp = join(m.root, ...parts.slice(0, -1), `.${parts.at(-1)!.slice(0, 100)}.agentbox-${randomBytes(6).toString("hex")}.tmp`);
        const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        let done = false;
        try {
          let offset = 0;
          while (offset < size) {
            const r = await this.call("read", { path: m.path, rel: c.p, offset, length: Math.min(CHUNK, size - offset) });
            const data = Buffer.from(typeof r.data === "string" ? r.data : "", "base64");
            if (data.length === 0) break;
            const take = data.subarray(0, size - offset);
            await fh.write(take, 0, take.length, offset);
            offset += take.length;
          }
          await fh.chmod(modeOf(c));
          await fh.close();
          await rename(tmp, dest);
          done = true;
        } finally {
          if (!done) {
            await fh.close().catch(() => {});
            await unlink(tmp).catch(() => {});
          }
        }
      });
    }

    // 4. symlinks, when their target resolves inside the mount on the host (the links being made included)
    const links = new Map<string, { target: string; parts: string[] }>();
    for (const { c, parts } of items) {
      if (c.k !== "l") continue;
      const target = typeof c.l === "string" ? c.l : "";
      if (target === "" || isAbsolute(target)) refuse(c.p, `symlink to ${JSON.stringify(target)}: absolute targets are not written back`);
      else links.set(c.p as string, { target, parts });
    }
    for (let again = true; again; ) {
      again = false;
      const overlay = new Map([...links].map(([rel, l]) => [rel, l.target]));
      for (const [rel, l] of links) {
        if (!(await resolvesInside(m.root, l.parts.slice(0, -1), l.target, overlay))) {
          links.delete(rel);
          refuse(rel, `symlink to ${JSON.stringify(l.target)} leaves the mount`);
          again = true;
        }
      }
    }
    for (const [rel, l] of links) {
      await attempt(rel, async () => {
        const dest = (await confined(m.root, l.parts, true))!;
        const st = await lstatOrNull(dest);
        if (st?.isDirectory()) throw new Refused("is a directory on the host");
        const tmp = join(m.root, ...l.parts.slice(0, -1), `.${l.parts.at(-1)!.slice(0, 100)}.agentbox-${randomBytes(6).toString("hex")}.tmp`);
        await symlink(l.target, tmp);
        try {
          await rename(tmp, dest);
        } catch (e) {
          await unlink(tmp).catch(() => {});
          throw e;
        }
      });
    }
  }

  /** Removes the mounts from the interpreter (release). */
  async detach(): Promise<void> {
    await this.call("unmount", {});
  }
}

/**
 * The host path of entry `parts` under `root`, checked component by component with lstat: every
 * parent must be a real directory (a symlink there is refused, never followed). Missing parents
 * are made when `create`, else null is returned.
 */
async function confined(root: string, parts: string[], create: boolean): Promise<string | null> {
  let cur = root;
  for (const c of parts.slice(0, -1)) {
    cur = join(cur, c);
    const st = await lstatOrNull(cur);
    if (!st) {
      if (!create) return null;
      await mkdir(cur);
      continue;
    }
    if (st.isSymbolicLink()) throw new Refused(`${c} is a symlink on the host (not followed)`);
    if (!st.isDirectory()) throw new Refused(`${c} is not a directory on the host`);
  }
  return join(cur, parts.at(-1)!);
}
