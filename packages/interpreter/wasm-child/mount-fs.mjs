// agentbox python-wasm child: the Pyodide-thread side of mounts (see docs/embedded.md, "Mounts").
// The child process has no access to host files: the parent walks the host directory and sends
// its entries here, and for read-write mounts pulls back what changed. This module only touches
// Pyodide's in-memory filesystem. Each mount is its own MEMFS instance mounted at the virtual
// path (so code cannot remove or rename the mount point: EBUSY); its tree is walked through the
// MEMFS nodes from that instance's root, so renaming a parent directory does not lose it.
// Relies on MEMFS internals of the pinned Pyodide (dir `contents` object, file `contents` +
// `usedBytes`, link `link`).
import { Buffer } from "node:buffer";

const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000;

export function createMountFs(FS, errnoCodes) {
  const MEMFS = FS.filesystems.MEMFS;
  const EROFS = errnoCodes.EROFS;
  /** virtual path → { mode, root (MEMFS root node), point (mount point node), created (dirs made for it), pending, baseline } */
  const mounts = new Map();

  function privileged(fn) {
    const prev = FS.ignorePermissions;
    FS.ignorePermissions = true;
    try {
      return fn();
    } finally {
      FS.ignorePermissions = prev;
    }
  }

  function kindOf(mode) {
    const t = mode & S_IFMT;
    return t === S_IFDIR ? "d" : t === S_IFREG ? "f" : t === S_IFLNK ? "l" : "o";
  }

  function checkRel(rel) {
    if (typeof rel !== "string" || rel === "" || rel.startsWith("/") || rel.includes("\0")) throw new Error(`bad entry name ${rel}`);
    for (const c of rel.split("/")) if (c === "" || c === "." || c === "..") throw new Error(`bad entry name ${rel}`);
  }

  function nodeAt(m, rel) {
    let node = m.root;
    for (const c of rel.split("/")) {
      if (kindOf(node.mode) !== "d" || !Object.hasOwn(node.contents, c)) return null;
      node = node.contents[c];
    }
    return node;
  }

  function mount({ path, mode, rootMode }) {
    if (mounts.has(path)) throw new Error(`${path} is already mounted`);
    const created = [];
    let d = "";
    for (const part of path.split("/").filter(Boolean)) {
      d += `/${part}`;
      let st = null;
      try {
        st = FS.lstat(d);
      } catch {
        st = null;
      }
      if (st === null) {
        created.push(FS.mkdir(d, 0o755));
      } else if (kindOf(st.mode) !== "d") {
        throw new Error(`${d} exists in the interpreter and is not a directory`);
      }
    }
    const root = FS.mount(MEMFS, {}, path);
    root.mode = (root.mode & ~0o7777) | (rootMode & 0o7777);
    const point = FS.lookupPath(path, { follow_mount: false }).node;
    mounts.set(path, { mode, root, point, created, pending: [], baseline: null });
  }

  function put({ path, entries }) {
    const m = mounts.get(path);
    if (!m) throw new Error(`${path} is not mounted`);
    for (const e of entries) {
      checkRel(e.p);
      const full = `${path}/${e.p}`;
      if (e.k === "d") {
        FS.mkdir(full, 0o700);
        m.pending.push([full, e.m, e.t]);
      } else if (e.k === "f") {
        const data = Buffer.from(e.d ?? "", "base64");
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        if (e.a) {
          const s = FS.open(full, 1 | 1024); // O_WRONLY | O_APPEND
          try {
            FS.write(s, bytes, 0, bytes.byteLength);
          } finally {
            FS.close(s);
          }
        } else {
          FS.writeFile(full, bytes, { mode: 0o600 });
          m.pending.push([full, e.m, e.t]);
        }
      } else if (e.k === "l") {
        FS.symlink(e.l, full);
      } else {
        throw new Error(`bad entry kind ${e.k}`);
      }
    }
  }

  function walk(node, prefix, visit) {
    for (const name of Object.keys(node.contents)) {
      const child = node.contents[name];
      const rel = prefix ? `${prefix}/${name}` : name;
      visit(rel, child);
      if (kindOf(child.mode) === "d") walk(child, rel, visit);
    }
  }

  const roCache = new Map();
  function refuse() {
    throw new FS.ErrnoError(EROFS);
  }
  function readOnlyOps(ops) {
    let r = roCache.get(ops);
    if (!r) {
      r = { ...ops };
      for (const k of ["setattr", "mknod", "rename", "unlink", "rmdir", "symlink"]) if (k in ops) r[k] = refuse;
      roCache.set(ops, r);
    }
    return r;
  }

  function snapshot(m) {
    const snap = new Map();
    walk(m.root, "", (rel, node) => {
      const k = kindOf(node.mode);
      snap.set(rel, { k, m: node.mode & 0o7777, t: node.mtime, s: k === "f" ? node.usedBytes : 0, l: k === "l" ? node.link : undefined, node });
    });
    return snap;
  }

  function seal({ path }) {
    const m = mounts.get(path);
    if (!m) throw new Error(`${path} is not mounted`);
    // Modes and times last (a directory's mtime moves as entries are added to it).
    for (const [full, mode, mtime] of m.pending.reverse()) {
      FS.chmod(full, mode & 0o7777);
      if (typeof mtime === "number") FS.utime(full, mtime, mtime);
    }
    m.pending = [];
    if (m.mode === "read-only") {
      const lock = (node) => {
        if (kindOf(node.mode) !== "l") node.mode &= ~0o222;
        node.node_ops = readOnlyOps(node.node_ops);
      };
      lock(m.root);
      walk(m.root, "", (_rel, node) => lock(node));
    } else if (m.mode === "read-write") {
      m.baseline = snapshot(m);
    }
  }

  /** What changed under a read-write mount since the last call (or the mount), by node identity, kind, size, mtime and mode. */
  function changes({ path }) {
    const m = mounts.get(path);
    if (!m || m.mode !== "read-write") throw new Error(`${path} is not a read-write mount`);
    const now = snapshot(m);
    const changed = [];
    const deleted = [];
    for (const [rel, b] of m.baseline) {
      const c = now.get(rel);
      if (!c || c.k !== b.k) deleted.push(rel);
    }
    for (const [rel, c] of now) {
      const b = m.baseline.get(rel);
      const same = b && b.k === c.k && b.m === c.m &&
        (c.k === "d" || (b.node === c.node && b.t === c.t && b.s === c.s && b.l === c.l));
      if (!same) changed.push({ p: rel, k: c.k, m: c.m, s: c.s, ...(c.k === "l" ? { l: c.l } : {}) });
    }
    m.baseline = now;
    return { changed, deleted };
  }

  function read({ path, rel, offset, length }) {
    const m = mounts.get(path);
    if (!m) throw new Error(`${path} is not mounted`);
    checkRel(rel);
    const node = nodeAt(m, rel);
    if (!node || kindOf(node.mode) !== "f") throw new Error(`${rel} is not a file`);
    const end = Math.min(node.usedBytes, offset + length);
    const data = offset < end ? node.contents.subarray(offset, end) : new Uint8Array(0);
    return { data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64") };
  }

  function unmountAll() {
    // By node: code may have renamed a parent of the mount point.
    for (const m of mounts.values()) {
      FS.unmount(FS.getPath(m.point));
      for (const node of m.created.reverse()) {
        try {
          FS.rmdir(FS.getPath(node));
        } catch {
          // not empty: left in place (empty of host data)
        }
      }
    }
    mounts.clear();
  }

  const ops = { "fs-mount": mount, "fs-put": put, "fs-seal": seal, "fs-changes": changes, "fs-read": read, "fs-unmount": unmountAll };

  return {
    handles: (type) => Object.hasOwn(ops, type),
    /** One request of the parent → the reply to post. */
    handle(m) {
      try {
        const result = privileged(() => ops[m.type](m)) ?? {};
        return { type: "fs-result", id: m.id, ok: true, ...result };
      } catch (e) {
        const message = e && typeof e.errno === "number" ? `errno ${e.errno}` : String((e && e.message) || e);
        return { type: "fs-result", id: m.id, ok: false, error: message };
      }
    },
  };
}
