/**
 * Volumes on this host: real ext4 images, really loop-mounted (needs root), in temp dirs.
 * Every test unmounts what it mounted, also when it fails.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { VolumeStore } from "../src/volumes.js";

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

const mounted = (dir: string) => readFileSync("/proc/self/mountinfo", "utf8").includes(` ${dir} `);

/** A store in fresh temp dirs; `fn` gets it; everything is unmounted and deleted afterwards. */
async function withStore(fn: (store: VolumeStore, dirs: { data: string; mounts: string; root: string }) => Promise<void>) {
  const root = mkdtempSync(join(tmpdir(), "volumes-"));
  const dirs = { root, data: join(root, "data", "volumes"), mounts: join(root, "run", "volumes") };
  const store = new VolumeStore(dirs.data, dirs.mounts);
  try {
    await fn(store, dirs);
  } finally {
    await store.unmountAll();
    await new VolumeStore(dirs.data, dirs.mounts).unmountAll();
    rmSync(root, { recursive: true, force: true });
  }
}

test("a volume holds files, reports their size and refuses writes past its size", { skip: !isRoot }, async () => {
  await withStore(async (store, dirs) => {
    assert.deepEqual(await store.create("work", 16 * MiB), { sizeBytes: 16 * MiB, usedBytes: 0 });
    assert.equal(store.exists("work"), true);
    assert.deepEqual(store.list(), ["work"]);
    const data = await store.mount("work");
    assert.equal(data, join(dirs.mounts, "work", "data"));
    assert.equal(await store.mount("work"), data, "mount is idempotent");
    assert.equal(readFileSync("/proc/self/mountinfo", "utf8").split(` ${join(dirs.mounts, "work")} `).length - 1, 1, "mounted once");
    // The volume's root is `data`: lost+found stays outside it.
    assert.equal(existsSync(join(data, "lost+found")), false);
    assert.equal(statSync(data).mode & 0o777, 0o755);
    // Mount points' ancestors are searchable by anyone (bubblewrap resolves the bind as the sandbox's uid).
    assert.equal(statSync(dirs.mounts).mode & 0o011, 0o011);
    assert.equal(statSync(join(dirs.root, "run")).mode & 0o011, 0o011);
    // The image is sparse: a 16 MiB volume costs far less before it is written.
    const image = join(dirs.data, "work.img");
    assert.equal(statSync(image).size, 16 * MiB);
    assert.ok(statSync(image).blocks * 512 < 4 * MiB, `image uses ${statSync(image).blocks * 512} bytes`);

    const size = 5 * MiB + 1234;
    writeFileSync(join(data, "blob"), Buffer.alloc(size, 7));
    const { usedBytes } = await store.usage("work");
    assert.ok(Math.abs(usedBytes - size) <= 4 * 4096, `used ${usedBytes} for a file of ${size}`);

    assert.throws(() => writeFileSync(join(data, "big"), Buffer.alloc(20 * MiB, 1)), { code: "ENOSPC" });
    unlinkSync(join(data, "big"));
    const after = await store.usage("work");
    assert.ok(Math.abs(after.usedBytes - size) <= 4 * 4096, `used ${after.usedBytes} after the failed write was deleted`);
  });
});

test("a volume's data survives a runtime restart (unmount all, new store, mount again)", { skip: !isRoot }, async () => {
  await withStore(async (store, dirs) => {
    await store.create("keep", 16 * MiB);
    const data = await store.mount("keep");
    mkdirSync(join(data, "dir"));
    writeFileSync(join(data, "dir", "f.txt"), "still here");
    await store.unmountAll();
    assert.equal(mounted(join(dirs.mounts, "keep")), false);

    const again = new VolumeStore(dirs.data, dirs.mounts);
    assert.deepEqual(again.list(), ["keep"]);
    const data2 = await again.mount("keep");
    assert.equal(readFileSync(join(data2, "dir", "f.txt"), "utf8"), "still here");
    // usage() works across the restart (the empty filesystem's use is kept next to the image).
    const { usedBytes } = await again.usage("keep");
    assert.ok(usedBytes > 0 && usedBytes < 64 * 1024, `used ${usedBytes}`);
  });
});

test("chownTo gives the files to a uid and does not follow symlinks out of the volume", { skip: !isRoot }, async () => {
  await withStore(async (store, dirs) => {
    const marker = join(dirs.root, "host-file");
    writeFileSync(marker, "host");
    await store.create("owned", 16 * MiB);
    const data = await store.mount("owned");
    mkdirSync(join(data, "a", "b"), { recursive: true });
    writeFileSync(join(data, "a", "b", "deep.txt"), "x");
    symlinkSync(marker, join(data, "a", "to-host"));
    symlinkSync(dirs.root, join(data, "to-host-dir"));
    await store.chownTo("owned", 12345);
    for (const p of [data, join(data, "a"), join(data, "a", "b"), join(data, "a", "b", "deep.txt")]) {
      assert.equal(statSync(p).uid, 12345, p);
      assert.equal(statSync(p).gid, 12345, p);
    }
    assert.equal(lstatSync(join(data, "a", "to-host")).uid, 12345, "the link itself changes owner");
    assert.equal(statSync(marker).uid, 0, "the host file behind the link is untouched");
    assert.equal(statSync(dirs.root).uid, 0, "the host dir behind the link is untouched");
    assert.equal(statSync(join(dirs.mounts, "owned")).uid, 0, "the filesystem's root (outside `data`) stays root's");
  });
});

test("remove unmounts and deletes the image; names and sizes are checked; an existing name conflicts", { skip: !isRoot }, async () => {
  await withStore(async (store, dirs) => {
    await store.create("gone", 8 * MiB);
    await assert.rejects(store.create("gone", 8 * MiB), { code: "CONFLICT" });
    const point = join(dirs.mounts, "gone");
    assert.equal(mounted(point), true);
    await store.remove("gone");
    assert.equal(mounted(point), false);
    assert.equal(existsSync(join(dirs.data, "gone.img")), false);
    assert.equal(existsSync(join(dirs.data, "gone.json")), false);
    assert.equal(store.exists("gone"), false);
    assert.deepEqual(store.list(), []);
    await assert.rejects(store.remove("gone"), { code: "NOT_FOUND" });
    await assert.rejects(store.mount("gone"), { code: "NOT_FOUND" });
    await assert.rejects(store.usage("gone"), { code: "NOT_FOUND" });

    for (const bad of ["", "Upper", "-x", ".hidden", "a/b", "..", "a b", "x".repeat(64), "é"]) {
      await assert.rejects(store.create(bad, 16 * MiB), { code: "INVALID_REQUEST" }, bad);
      assert.equal(store.exists(bad), false);
    }
    assert.equal(existsSync(join(dirs.data, "x".repeat(64) + ".img")), false);
    for (const size of [0, 1024, 16 * MiB + 0.5, -1, Number.NaN]) {
      await assert.rejects(store.create("sized", size), { code: "INVALID_REQUEST" }, String(size));
    }
    // 63 characters is the longest name.
    await store.create("a".repeat(63), 8 * MiB);
    assert.deepEqual(store.list(), ["a".repeat(63)]);
  });
});

test("an image left by an interrupted create is replaced, and one mounted elsewhere is removed everywhere", { skip: !isRoot }, async () => {
  await withStore(async (store, dirs) => {
    // Interrupted create: an image but no json. The name is free and a create starts over.
    mkdirSync(dirs.data, { recursive: true });
    writeFileSync(join(dirs.data, "half.img"), "");
    assert.equal(store.exists("half"), false);
    await store.create("half", 8 * MiB);
    assert.equal(store.exists("half"), true);

    // A second mount of the same image (a runtime that crashed with another mounts dir): mount(8)
    // shares the loop device, so it is the same filesystem; remove takes both down.
    const other = join(dirs.root, "other-mount");
    mkdirSync(other);
    execFileSync("mount", ["-o", "loop", join(dirs.data, "half.img"), other]);
    try {
      writeFileSync(join(other, "data", "seen"), "1");
      assert.equal(readFileSync(join(await store.mount("half"), "seen"), "utf8"), "1");
      await store.remove("half");
      assert.equal(mounted(other), false);
    } finally {
      if (mounted(other)) execFileSync("umount", [other]);
    }
  });
});
