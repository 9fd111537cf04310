/** Local files as upload bodies: a directory packed as a tar stream, and a byte counter for progress. */
import { createReadStream } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import tar from "tar-stream";

/** A pass-through stream that reports the bytes it has seen. */
export function counter(onProgress: ((bytes: number, total?: number) => void) | undefined, total?: number): Transform {
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      onProgress?.(bytes, total);
      cb(null, chunk);
    },
  });
}

/** `dir`'s content (names relative to it) as a tar stream; `packing` settles when it is all packed. */
export function directoryTar(dir: string): { stream: Readable; packing: Promise<void> } {
  const pack = tar.pack();
  const packing = packDirectory(pack, dir).then(
    () => void pack.finalize(),
    (error: Error) => void pack.destroy(error),
  );
  return { stream: Readable.from(pack as unknown as AsyncIterable<Buffer>, { objectMode: false }), packing };
}

/** Add a local directory's content to `pack` (names relative to it). */
async function packDirectory(pack: tar.Pack, dir: string, prefix = ""): Promise<void> {
  for (const name of (await readdir(dir)).sort()) {
    const full = path.join(dir, name);
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = await lstat(full);
    const common = { name: rel, mode: st.mode & 0o7777, mtime: st.mtime };
    if (st.isDirectory()) {
      await new Promise<void>((resolve, reject) => pack.entry({ ...common, type: "directory" }, (e) => (e ? reject(e) : resolve())));
      await packDirectory(pack, full, rel);
    } else if (st.isSymbolicLink()) {
      const linkname = await readlink(full);
      await new Promise<void>((resolve, reject) => pack.entry({ ...common, type: "symlink", linkname }, (e) => (e ? reject(e) : resolve())));
    } else if (st.isFile()) {
      await new Promise<void>((resolve, reject) => {
        const entry = pack.entry({ ...common, type: "file", size: st.size }, (e) => (e ? reject(e) : resolve()));
        createReadStream(full).on("error", reject).pipe(entry);
      });
    }
  }
}
