/**
 * Mounts of the embedded Python interpreter: read-only, read-write (write-back after each run),
 * overlay; traversal attempts (`..`, symlinks in the host directory, symlinks made by the code),
 * mount path validation, caps.
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { InterpreterMountError, InterpreterPool, InterpreterRuntimeError, type InterpreterSession } from "../src/index.js";
import { entryParts } from "../src/wasm/mounts.js";

let pool: InterpreterPool;
let base: string;
let host: string;
let marker: string;
let markerMtime: number;
const MARKER = "host marker: must not change\n";
const open: InterpreterSession[] = [];

before(async () => {
  pool = await InterpreterPool.create({ min: 1, max: 2 });
});
after(async () => {
  await pool.close();
});

/** A fresh host tree per test: base/marker.txt (outside the mount) and base/host (mounted). */
function makeTree(): void {
  base = mkdtempSync(join(tmpdir(), "agentbox-mounts-"));
  host = join(base, "host");
  marker = join(base, "marker.txt");
  writeFileSync(marker, MARKER);
  utimesSync(marker, new Date("2020-01-02T03:04:05Z"), new Date("2020-01-02T03:04:05Z"));
  markerMtime = statSync(marker).mtimeMs;
  mkdirSync(join(host, "sub", "deeper"), { recursive: true });
  writeFileSync(join(host, "a.txt"), "alpha\n");
  writeFileSync(join(host, "sub", "b.txt"), "beta\n");
  writeFileSync(join(host, "sub", "deeper", "c.bin"), Buffer.from([0, 1, 2, 255]));
  writeFileSync(join(host, "private.txt"), "p");
  chmodSync(join(host, "private.txt"), 0o640);
  utimesSync(join(host, "a.txt"), new Date("2021-05-06T07:08:09Z"), new Date("2021-05-06T07:08:09Z"));
  symlinkSync("a.txt", join(host, "link-in"));
  symlinkSync("../marker.txt", join(host, "link-out"));
  symlinkSync(marker, join(host, "link-abs"));
}

function assertMarkerIntact(): void {
  assert.equal(readFileSync(marker, "utf8"), MARKER);
  assert.equal(statSync(marker).mtimeMs, markerMtime);
  assert.equal(existsSync(join(base, "pwned")), false);
}

async function checkout(mode: "read-only" | "read-write" | "overlay", extra: object = {}): Promise<InterpreterSession> {
  const s = await pool.checkout({ mounts: [{ path: "/data", hostPath: host, mode }], ...extra });
  open.push(s);
  return s;
}

afterEach(async () => {
  for (const s of open.splice(0)) await s.release().catch(() => {});
  if (base) {
    assertMarkerIntact();
    rmSync(base, { recursive: true, force: true });
    base = "";
  }
});

const LIST = `
import os
def tree(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            out.append(os.path.relpath(os.path.join(d, f), root))
    return out
`;

describe("read-only", () => {
  test("files, directories, symlinks inside, modes and times are there", async () => {
    makeTree();
    const s = await checkout("read-only");
    assert.deepEqual(
      s.mounts[0]!.skipped.map((x) => x.path).sort(),
      ["/data/link-abs", "/data/link-out"],
    );
    const r = (await s.run(`${LIST}
import os
(sorted(os.listdir('/data')), tree('/data'), open('/data/a.txt').read(), open('/data/sub/b.txt').read(),
 open('/data/sub/deeper/c.bin', 'rb').read(), open('/data/link-in').read(), os.readlink('/data/link-in'),
 oct(os.stat('/data/private.txt').st_mode & 0o777), int(os.stat('/data/a.txt').st_mtime))`)) as unknown[];
    assert.deepEqual(r[0], ["a.txt", "link-in", "private.txt", "sub"]);
    assert.deepEqual(r[1], ["a.txt", "link-in", "private.txt", "sub/b.txt", "sub/deeper/c.bin"]);
    assert.equal(r[2], "alpha\n");
    assert.equal(r[3], "beta\n");
    assert.deepEqual(r[4], new Uint8Array([0, 1, 2, 255]));
    assert.equal(r[5], "alpha\n");
    assert.equal(r[6], "a.txt");
    assert.equal(r[7], "0o440"); // 0o640 without write bits
    assert.equal(r[8], Date.parse("2021-05-06T07:08:09Z") / 1000);
  });

  test("every kind of write is refused with PermissionError or EROFS", async () => {
    makeTree();
    const s = await checkout("read-only");
    const r = (await s.run(`
import os, errno
attempts = {
  "write": lambda: open('/data/a.txt', 'w'),
  "append": lambda: open('/data/a.txt', 'a'),
  "create": lambda: open('/data/new.txt', 'w'),
  "create in sub": lambda: open('/data/sub/new.txt', 'x'),
  "remove": lambda: os.remove('/data/a.txt'),
  "rename": lambda: os.rename('/data/a.txt', '/data/b.txt'),
  "mkdir": lambda: os.mkdir('/data/d'),
  "rmdir": lambda: os.rmdir('/data/sub/deeper'),
  "chmod": lambda: os.chmod('/data/a.txt', 0o666),
  "chmod dir": lambda: os.chmod('/data/sub', 0o777),
  "utime": lambda: os.utime('/data/a.txt', (0, 0)),
  "truncate": lambda: os.truncate('/data/a.txt', 0),
  "symlink": lambda: os.symlink('a.txt', '/data/l'),
  "remove mount point": lambda: os.rmdir('/data'),
  "rename mount point": lambda: os.rename('/data', '/elsewhere'),
}
out = {}
for name, f in attempts.items():
    try:
        f()
        out[name] = "allowed"
    except OSError as e:
        out[name] = type(e).__name__ if isinstance(e, PermissionError) else errno.errorcode.get(e.errno, str(e.errno))
(out, open('/data/a.txt').read())`)) as [Record<string, string>, string];
    for (const [name, outcome] of Object.entries(r[0])) {
      assert.notEqual(outcome, "allowed", `${name} was allowed`);
      assert.ok(["PermissionError", "EROFS", "EBUSY"].includes(outcome), `${name}: ${outcome}`);
    }
    assert.equal(r[1], "alpha\n");
    await s.release();
    assert.equal(readFileSync(join(host, "a.txt"), "utf8"), "alpha\n");
    assert.equal(existsSync(join(host, "new.txt")), false);
  });
});

describe("read-write", () => {
  test("writes, creations, deletions and chmod reach the host after each run", async () => {
    makeTree();
    const s = await checkout("read-write");
    await s.run(`
import os, shutil
with open('/data/a.txt', 'a') as f:
    f.write('more\\n')
open('/data/new.txt', 'w').write('created')
os.makedirs('/data/n1/n2')
open('/data/n1/n2/deep.txt', 'w').write('deep')
os.remove('/data/sub/b.txt')
shutil.rmtree('/data/sub/deeper')
os.chmod('/data/private.txt', 0o600)
os.symlink('n1/n2/deep.txt', '/data/good-link')
os.remove('/data/link-in')
`);
    assert.equal(readFileSync(join(host, "a.txt"), "utf8"), "alpha\nmore\n");
    assert.equal(readFileSync(join(host, "new.txt"), "utf8"), "created");
    assert.equal(readFileSync(join(host, "n1", "n2", "deep.txt"), "utf8"), "deep");
    assert.equal(existsSync(join(host, "sub", "b.txt")), false);
    assert.equal(existsSync(join(host, "sub", "deeper")), false);
    assert.equal(existsSync(join(host, "sub")), true);
    assert.equal(statSync(join(host, "private.txt")).mode & 0o777, 0o600);
    assert.equal(readlinkSync(join(host, "good-link")), "n1/n2/deep.txt");
    assert.equal(existsSync(join(host, "link-in")), false);
    // symlinks the mount skipped are left alone on the host
    assert.equal(readlinkSync(join(host, "link-out")), "../marker.txt");

    // a second run: only its own changes; a rename, a replacement of a file by a directory
    await s.run(`
import os
os.rename('/data/new.txt', '/data/renamed.txt')
os.remove('/data/a.txt')
os.mkdir('/data/a.txt')
open('/data/a.txt/inner', 'w').write('x' * 3_000_000)
`);
    assert.equal(existsSync(join(host, "new.txt")), false);
    assert.equal(readFileSync(join(host, "renamed.txt"), "utf8"), "created");
    assert.equal(statSync(join(host, "a.txt")).isDirectory(), true);
    assert.equal(readFileSync(join(host, "a.txt", "inner"), "utf8"), "x".repeat(3_000_000));
    // no temporary files left behind
    assert.deepEqual(readdirSync(host).filter((n) => n.includes("agentbox")), []);
  });

  test("changes of a run that fails are written back too", async () => {
    makeTree();
    const s = await checkout("read-write");
    await assert.rejects(s.run("open('/data/partial.txt', 'w').write('before the error')\n1/0"), InterpreterRuntimeError);
    assert.equal(readFileSync(join(host, "partial.txt"), "utf8"), "before the error");
  });

  test("a write-back over the caps is refused as a whole", async () => {
    makeTree();
    const s = await checkout("read-write", { mountLimits: { maxBytes: 1000 } });
    const err = await s.run("open('/data/big.txt', 'w').write('y' * 5000)").then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof InterpreterMountError, String(err));
    assert.match(err.message, /over the caps/);
    assert.equal(err.value, 5000);
    assert.equal(existsSync(join(host, "big.txt")), false);
  });
});

describe("overlay", () => {
  test("writes stay in the interpreter; the host is untouched; the next checkout starts fresh", async () => {
    makeTree();
    const before = readFileSync(join(host, "a.txt"), "utf8");
    const s = await checkout("overlay");
    await s.run(`
import os
open('/data/a.txt', 'w').write('changed')
open('/data/new.txt', 'w').write('new')
os.remove('/data/sub/b.txt')
os.symlink('../marker.txt', '/data/out')
`);
    const seen = [...((await s.run("import os\n(open('/data/a.txt').read(), open('/data/new.txt').read(), os.path.exists('/data/sub/b.txt'))")) as unknown[])];
    assert.deepEqual(seen, ["changed", "new", false]);
    await s.release();
    assert.equal(readFileSync(join(host, "a.txt"), "utf8"), before);
    assert.equal(existsSync(join(host, "new.txt")), false);
    assert.equal(readFileSync(join(host, "sub", "b.txt"), "utf8"), "beta\n");
    assert.equal(existsSync(join(host, "out")), false);

    const again = await checkout("overlay");
    assert.deepEqual(await again.run("import os\n[open('/data/a.txt').read(), os.path.exists('/data/new.txt')]"), [before, false]);
    await again.release();
    const plain = await pool.checkout();
    open.push(plain);
    assert.equal(await plain.run("import os\nos.path.exists('/data')"), false);
  });
});

describe("traversal attempts", () => {
  test("`..` out of the mount reaches no host file", async () => {
    makeTree();
    const s = await checkout("read-write");
    const r = await s.run(`
import os
out = []
for p in ['/data/../../etc/passwd', '/data/../marker.txt', '/data/../../marker.txt', '/data/sub/../../marker.txt']:
    try:
        open(p).read()
        out.append('read')
    except OSError as e:
        out.append(type(e).__name__)
try:
    open('/data/../marker.txt', 'w').write('pwned')
    out.append('wrote outside the mount')
except OSError as e:
    out.append(type(e).__name__)
out`);
    // The virtual filesystem holds no host file outside the mount; writes there stay virtual.
    assert.deepEqual((r as string[]).slice(0, 4), ["FileNotFoundError", "FileNotFoundError", "FileNotFoundError", "FileNotFoundError"]);
  });

  test("symlinks in the host directory that leave it are not followed (read or write)", async () => {
    makeTree();
    const s = await checkout("read-write");
    const r = await s.run(`
import os
out = []
for p in ['/data/link-out', '/data/link-abs']:
    out.append(os.path.lexists(p))
    try:
        out.append(open(p).read())
    except OSError as e:
        out.append(type(e).__name__)
out`);
    assert.deepEqual(r, [false, "FileNotFoundError", false, "FileNotFoundError"]);
    // A file the code writes at the name of a skipped host symlink is not written through it (nor replaces it).
    const err = await s.run("open('/data/link-out', 'w').write('pwned')\nopen('/data/link-abs', 'w').write('pwned')").then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof InterpreterMountError, String(err));
    assert.deepEqual(err.refused.map((x) => x.path).sort(), ["/data/link-abs", "/data/link-out"]);
    assert.equal(readlinkSync(join(host, "link-out")), "../marker.txt");
    assert.equal(readlinkSync(join(host, "link-abs")), marker);
    assertMarkerIntact();
  });

  test("symlinks the code makes that leave the mount are refused at write-back; writes through them stay virtual", async () => {
    makeTree();
    const s = await checkout("read-write");
    const err = await s.run(`
import os
os.symlink('../marker.txt', '/data/out')
os.symlink(${JSON.stringify(marker)}, '/data/abs')
os.symlink('.', '/data/dot')
os.symlink('dot/../marker.txt', '/data/chain')
os.symlink('sub/../../marker.txt', '/data/updown')
os.symlink('sub/b.txt', '/data/fine')
for p in ['/data/out', '/data/abs', '/data/chain']:
    try:
        with open(p, 'w') as f:
            f.write('pwned')
    except OSError:
        pass
os.makedirs('/data/d', exist_ok=True)
os.symlink('..', '/data/d/up')
try:
    open('/data/d/up/../pwned', 'w').write('pwned')
except OSError:
    pass
"done"`).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof InterpreterMountError, String(err));
    assert.equal(err.value, "done");
    assert.deepEqual(err.refused.map((x) => x.path).sort(), ["/data/abs", "/data/chain", "/data/out", "/data/updown"]);
    for (const name of ["out", "abs", "chain", "updown"]) assert.equal(lstatExists(join(host, name)), false, name);
    // `d/up -> ..` resolves to the mount's root: inside, kept (the write through `d/up/..` went to the virtual root)
    assert.equal(readlinkSync(join(host, "d", "up")), "..");
    assert.equal(readlinkSync(join(host, "fine")), "sub/b.txt");
    assert.equal(readlinkSync(join(host, "dot")), ".");
    assertMarkerIntact();
  });

  test("entry names from the interpreter: `..`, absolute and empty components are refused", () => {
    for (const bad of ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "", "a\0b"]) assert.equal(entryParts(bad), null, bad);
    assert.deepEqual(entryParts("a/b.txt"), ["a", "b.txt"]);
  });
});

function lstatExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

describe("checkout validation and caps", () => {
  test("bad mount paths, modes and host paths are refused with a clear error", async () => {
    makeTree();
    const cases: Array<[unknown, RegExp]> = [
      [{ path: "data", hostPath: host, mode: "overlay" }, /must be absolute/],
      [{ path: "/data/../etc", hostPath: host, mode: "overlay" }, /without `\.\.`/],
      [{ path: "/../data", hostPath: host, mode: "overlay" }, /without `\.\.`/],
      [{ path: "/data//x", hostPath: host, mode: "overlay" }, /normalized/],
      [{ path: "/", hostPath: host, mode: "overlay" }, /cannot be \//],
      [{ path: "/lib/python3.14", hostPath: host, mode: "overlay" }, /reserved/],
      [{ path: "/tmp/data", hostPath: host, mode: "overlay" }, /reserved/],
      [{ path: "/home/pyodide/data", hostPath: host, mode: "overlay" }, /reserved/],
      [{ path: "/proc", hostPath: host, mode: "overlay" }, /reserved/],
      [{ path: "/data", hostPath: host, mode: "write" }, /mode must be/],
      [{ path: "/data", hostPath: join(base, "missing"), mode: "overlay" }, /not readable/],
      [{ path: "/data", hostPath: marker, mode: "overlay" }, /not a directory/],
    ];
    for (const [mount, message] of cases) {
      await assert.rejects(pool.checkout({ mounts: [mount as never] }), (e: unknown) => e instanceof InterpreterMountError && message.test(e.message), JSON.stringify(mount));
    }
    await assert.rejects(
      pool.checkout({ mounts: [{ path: "/data", hostPath: host, mode: "overlay" }, { path: "/data/sub", hostPath: host, mode: "overlay" }] }),
      /overlaps/,
    );
    assertMarkerIntact();
  });

  test("caps on entries and bytes copied in: a clear error, and the pool goes on", async () => {
    makeTree();
    await assert.rejects(
      pool.checkout({ mounts: [{ path: "/data", hostPath: host, mode: "read-only" }], mountLimits: { maxFiles: 3 } }),
      (e: unknown) => e instanceof InterpreterMountError && /more than 3 entries.*maxFiles/.test(e.message),
    );
    await assert.rejects(
      pool.checkout({ mounts: [{ path: "/data", hostPath: host, mode: "read-only" }], mountLimits: { maxBytes: 8 } }),
      (e: unknown) => e instanceof InterpreterMountError && /more than 8 bytes.*maxBytes/.test(e.message),
    );
    const s = await checkout("read-only", { mountLimits: { maxFiles: 20, maxBytes: 1000 } });
    assert.equal(await s.run("open('/data/a.txt').read()"), "alpha\n");
  });

  test("a larger tree: several MiB in many files round-trips through a read-write mount", async () => {
    makeTree();
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    writeFileSync(join(host, "big.bin"), big);
    for (let i = 0; i < 200; i++) writeFileSync(join(host, "sub", `f${i}.txt`), `file ${i}`);
    const s = await checkout("read-write");
    assert.deepEqual(
      await s.run("import os\n[len(open('/data/big.bin', 'rb').read()), len(os.listdir('/data/sub')), open('/data/sub/f123.txt').read()]"),
      [big.length, 202, "file 123"],
    );
    await s.run("open('/data/big.bin', 'r+b').write(b'\\x01\\x02')");
    const after = readFileSync(join(host, "big.bin"));
    assert.equal(after.length, big.length);
    assert.deepEqual([...after.subarray(0, 3)], [1, 2, 7]);
  });
});
