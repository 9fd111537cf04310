/**
 * A root filesystem directory as a layer tar. The tar is never stored: it is
 * unpacked as it is made (by the same code that unpacks image layers, so the
 * same checks apply) and hashed, which gives the copy a content id. The walk
 * is sorted, so the same tree always gives the same tar and the same id.
 */
import { createReadStream, type Stats } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";

export interface TreeEntry {
  /** Relative to the root; "" is the root itself. */
  rel: string;
  st: Stats;
  /** Symlink target. */
  target?: string;
  /** A regular file already in the tree under another name (a hard link). */
  linkTo?: string;
}

export interface Tree {
  entries: TreeEntry[];
  /** Bytes of file content to copy. */
  bytes: number;
}

/** Walk `root` (which must be a directory), parents before children. Sockets and device nodes are left out. */
export async function scanTree(root: string): Promise<Tree> {
  const entries: TreeEntry[] = [];
  const inodes = new Map<string, string>();
  let bytes = 0;
  const visit = async (rel: string, st: Stats): Promise<void> => {
    const abs = rel === "" ? root : join(root, rel);
    if (st.isDirectory()) {
      entries.push({ rel, st });
      const names = (await readdir(abs)).sort();
      for (const name of names) {
        const child = rel === "" ? name : `${rel}/${name}`;
        await visit(child, await lstat(join(root, child)));
      }
    } else if (st.isSymbolicLink()) {
      entries.push({ rel, st, target: await readlink(abs) });
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? inodes.get(key) : undefined;
      if (first !== undefined) {
        entries.push({ rel, st, linkTo: first });
      } else {
        if (st.nlink > 1) inodes.set(key, rel);
        entries.push({ rel, st });
        bytes += st.size;
      }
    } else if (st.isFIFO()) {
      entries.push({ rel, st });
    }
  };
  await visit("", await lstat(root));
  return { entries, bytes };
}

/** Largest id the ustar header holds; beyond it the id goes in a PAX record. */
const USTAR_MAX_ID = 0o777777;

/**
 * Write the tree's tar into `pack`, reading file contents as it goes
 * (`onBytes` counts them). Finalizes the pack; on failure destroys it.
 */
export async function packTree(root: string, tree: Tree, pack: tar.Pack, onBytes: (n: number) => void): Promise<void> {
  try {
    for (const e of tree.entries) await packEntry(root, e, pack, onBytes);
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    throw err;
  }
}

function packEntry(root: string, e: TreeEntry, pack: tar.Pack, onBytes: (n: number) => void): Promise<void> {
  const { st } = e;
  const header: Partial<tar.Header> & { name: string; pax?: Record<string, string> } = {
    name: e.rel === "" ? "." : e.rel,
    // With the file type bits: tar-stream replaces a mode of 0 (a file nobody may read) with 0644.
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime,
  };
  if (st.uid > USTAR_MAX_ID || st.gid > USTAR_MAX_ID) {
    header.pax = { uid: String(st.uid), gid: String(st.gid) };
    header.uid = 0;
    header.gid = 0;
  }
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error | null) => (err ? reject(err) : resolve());
    if (st.isDirectory()) pack.entry({ ...header, type: "directory" }, done);
    else if (e.target !== undefined) pack.entry({ ...header, type: "symlink", linkname: e.target }, done);
    else if (e.linkTo !== undefined) pack.entry({ ...header, type: "link", linkname: e.linkTo }, done);
    else if (st.isFIFO()) pack.entry({ ...header, type: "fifo" }, done);
    else if (st.size === 0) pack.entry({ ...header, type: "file" }, Buffer.alloc(0), done);
    else {
      const sink = pack.entry({ ...header, type: "file", size: st.size }, done);
      // Exactly the size announced in the header; a file that shrinks meanwhile fails the entry.
      const source = createReadStream(join(root, e.rel), { start: 0, end: st.size - 1 });
      source.on("data", (c) => onBytes(c.length));
      pipeline(source, sink).catch(reject);
    }
  });
}
