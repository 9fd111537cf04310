/**
 * Image import. Test images are built with the real tools (umoci for the OCI
 * layout and its layers, GNU tar for a layer with an opaque directory, skopeo
 * for the docker archive) from a tiny busybox-static root filesystem, and the
 * imported layers are checked by mounting them with overlayfs as the runtime
 * will. Hostile layers are assembled by hand with tar-stream.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync, chownSync, copyFileSync, cpSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync,
  rmSync, statSync, symlinkSync, writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import { AgentboxError } from "@agentbox/protocol";
import { ImageStore, type ImportProgress } from "../src/image-store.js";
import { findProgram } from "../src/system-tools.js";

const isRoot = process.getuid?.() === 0;
const hasOverlay = existsSync("/proc/filesystems") && readFileSync("/proc/filesystems", "utf8").includes("overlay");
const tools = isRoot && hasOverlay && !!findProgram("umoci") && !!findProgram("skopeo") && existsSync("/bin/busybox") && !!findProgram("setfattr");
const skip = tools ? false : "needs root, overlayfs, umoci, skopeo, setfattr and /bin/busybox";

let work: string;
/** The OCI layout (tag t) and its copies as archives. */
let layout: string;
let ociArchive: string;
let dockerArchive: string;

function sh(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function sha256(buf: Buffer): string {
  return `sha256:${createHash("sha256").update(buf).digest("hex")}`;
}

/** The layer digests of tag t, read straight from the layout. */
function manifestLayers(dir: string): string[] {
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
  const blob = (d: string) => join(dir, "blobs/sha256", d.slice("sha256:".length));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0]!.digest), "utf8")) as { layers: Array<{ digest: string }> };
  return manifest.layers.map((l) => l.digest);
}

function newStore(): { dir: string; store: ImageStore } {
  const dir = mkdtempSync(join(work, "store-"));
  return { dir, store: new ImageStore(dir) };
}

function layerDirs(storeDir: string): string[] {
  return readdirSync(join(storeDir, "layers")).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort();
}

/** Mount the layers (lowest first) as an overlay, run `fn` on the merged view, unmount. */
function withOverlay(layers: string[], fn: (merged: string) => void): void {
  const base = mkdtempSync(join(work, "mnt-"));
  const [upper, wdir, merged] = ["upper", "work", "merged"].map((d) => join(base, d)) as [string, string, string];
  for (const d of [upper, wdir, merged]) mkdirSync(d);
  sh("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${[...layers].reverse().join(":")},upperdir=${upper},workdir=${wdir}`, merged]);
  try {
    fn(merged);
  } finally {
    sh("umount", [merged]);
    rmSync(base, { recursive: true, force: true });
  }
}

/** What every import of the test image must show. */
function checkImageView(merged: string): void {
  assert.ok(statSync(join(merged, "bin/busybox")).mode & 0o111, "busybox is executable");
  assert.equal(sh("chroot", [merged, "/bin/sh", "-c", "echo hello from busybox"]).trim(), "hello from busybox");
  assert.equal(existsSync(join(merged, "etc/gone")), false, "the file whited out in layer 2 is gone");
  assert.deepEqual(readdirSync(join(merged, "etc/conf.d")), ["b"], "the opaque directory shows only layer 2's contents");
  assert.equal(readFileSync(join(merged, "etc/conf.d/b"), "utf8"), "new\n");
  assert.equal(existsSync(join(merged, "bin/ls")), false, "the symlink deleted in layer 3 is gone");
  assert.equal(readFileSync(join(merged, "w/hello"), "utf8"), "layer three\n");
  assert.equal(readFileSync(join(merged, "etc/kept"), "utf8"), "kept\n");
  const owned = statSync(join(merged, "opt/owned"));
  assert.equal(owned.uid, 1234);
  assert.equal(owned.gid, 4321);
  assert.equal(owned.mode & 0o7777, 0o4750);
  assert.equal(statSync(join(merged, "bin/cat")).ino, statSync(join(merged, "bin/busybox")).ino, "hard link kept");
  assert.equal(lstatSync(join(merged, "bin/sh")).isSymbolicLink(), true);
  assert.ok(lstatSync(join(merged, "run/fifo")).isFIFO());
}

before(() => {
  work = mkdtempSync(join(tmpdir(), "image-store-test-"));
  if (!tools) return;
  layout = join(work, "layout");
  const bundle = join(work, "bundle");
  sh("umoci", ["init", "--layout", layout]);
  sh("umoci", ["new", "--image", `${layout}:t`]);

  // Layer 1: the busybox root filesystem.
  sh("umoci", ["unpack", "--image", `${layout}:t`, bundle]);
  const rootfs = join(bundle, "rootfs");
  for (const d of ["bin", "etc/conf.d", "opt", "run", "w"]) mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync("/bin/busybox", join(rootfs, "bin/busybox"));
  chmodSync(join(rootfs, "bin/busybox"), 0o755);
  symlinkSync("busybox", join(rootfs, "bin/sh"));
  symlinkSync("busybox", join(rootfs, "bin/ls"));
  linkSync(join(rootfs, "bin/busybox"), join(rootfs, "bin/cat"));
  writeFileSync(join(rootfs, "etc/gone"), "gone\n");
  writeFileSync(join(rootfs, "etc/kept"), "kept\n");
  writeFileSync(join(rootfs, "etc/conf.d/a"), "old\n");
  writeFileSync(join(rootfs, "etc/conf.d/a2"), "old\n");
  writeFileSync(join(rootfs, "opt/owned"), "x");
  chownSync(join(rootfs, "opt/owned"), 1234, 4321);
  chmodSync(join(rootfs, "opt/owned"), 0o4750);
  sh("mkfifo", [join(rootfs, "run/fifo")]);
  sh("umoci", ["repack", "--image", `${layout}:t`, bundle]);
  rmSync(bundle, { recursive: true });

  // Layer 2, by GNU tar: delete etc/gone, replace etc/conf.d's contents (opaque directory).
  const l2 = join(work, "l2");
  mkdirSync(join(l2, "etc/conf.d"), { recursive: true });
  writeFileSync(join(l2, "etc/.wh.gone"), "");
  writeFileSync(join(l2, "etc/conf.d/.wh..wh..opq"), "");
  writeFileSync(join(l2, "etc/conf.d/b"), "new\n");
  sh("tar", ["--numeric-owner", "-cf", join(work, "l2.tar"), "-C", l2, "etc"]);
  sh("umoci", ["raw", "add-layer", "--image", `${layout}:t`, join(work, "l2.tar")]);

  // Layer 3, by umoci again: delete bin/ls (umoci writes the whiteout), add w/hello.
  sh("umoci", ["unpack", "--image", `${layout}:t`, bundle]);
  rmSync(join(bundle, "rootfs/bin/ls"));
  writeFileSync(join(bundle, "rootfs/w/hello"), "layer three\n");
  sh("umoci", ["repack", "--image", `${layout}:t`, bundle]);
  rmSync(bundle, { recursive: true });

  sh("umoci", ["config", "--image", `${layout}:t`, "--config.env", "FOO=bar", "--config.env", "EQ=a=b", "--config.workingdir", "/w", "--config.user", "1234:4321"]);
  sh("umoci", ["gc", "--layout", layout]);

  ociArchive = join(work, "oci-archive.tar");
  sh("tar", ["-cf", ociArchive, "-C", layout, "."]);
  dockerArchive = join(work, "docker-archive.tar");
  sh("skopeo", ["--insecure-policy", "copy", "-q", `oci:${layout}:t`, `docker-archive:${dockerArchive}:t:latest`]);
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test("OCI layout: layers lowest first, config, and an overlay of them shows the image with its whiteouts applied", { skip }, async () => {
  const { dir, store } = newStore();
  const progress: ImportProgress[] = [];
  const image = await store.importOci(layout, (p) => progress.push(p));
  assert.equal(image.layers.length, 3);
  assert.deepEqual(image.digests, manifestLayers(layout));
  assert.deepEqual(image.layers, image.digests.map((d) => join(dir, "layers", d.slice(7))));
  for (const d of image.digests) assert.equal(store.layerPath(d), join(dir, "layers", d.slice(7)));
  assert.equal(image.config.env.FOO, "bar");
  assert.equal(image.config.env.EQ, "a=b");
  assert.equal(image.config.workdir, "/w");
  assert.equal(image.config.user, "1234:4321");
  // Layer 2 holds an overlay whiteout and an opaque directory.
  const l2 = image.layers[1]!;
  const wh = lstatSync(join(l2, "etc/gone"));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0);
  assert.equal(sh("getfattr", ["--only-values", "-n", "trusted.overlay.opaque", join(l2, "etc/conf.d")]), "y");
  withOverlay(image.layers, checkImageView);
  const last = progress.at(-1)!;
  assert.equal(last.layersDone, 3);
  assert.equal(last.layersTotal, 3);
  assert.equal(last.bytesDone, last.bytesTotal);
  assert.ok(last.bytesTotal > 500_000);
  assert.deepEqual(readdirSync(join(dir, "tmp")), [], "no temporary directories left");
});

test("importing again, as an oci-archive, or an image sharing layers reuses the layer directories", { skip }, async () => {
  const { dir, store } = newStore();
  const first = await store.importOci(layout);
  const inodes = first.layers.map((l) => statSync(l).ino);
  const busybox = join(first.layers[0]!, "bin/busybox");
  const mtimes = [...first.layers.map((l) => statSync(l).mtimeMs), statSync(busybox).mtimeMs, statSync(busybox).ino];
  assert.equal(layerDirs(dir).length, 3);

  const again = await store.importOci(layout);
  assert.deepEqual(again, first);
  const fromArchive = await store.importOci(ociArchive);
  assert.deepEqual(fromArchive.digests, first.digests);
  assert.deepEqual(first.layers.map((l) => statSync(l).ino), inodes);
  assert.deepEqual([...first.layers.map((l) => statSync(l).mtimeMs), statSync(busybox).mtimeMs, statSync(busybox).ino], mtimes);
  assert.equal(layerDirs(dir).length, 3);

  // A second image: the same three layers and one more.
  const layout2 = join(work, "layout2");
  cpSync(layout, layout2, { recursive: true });
  const bundle = join(work, "bundle2");
  sh("umoci", ["unpack", "--image", `${layout2}:t`, bundle]);
  writeFileSync(join(bundle, "rootfs/extra"), "extra\n");
  sh("umoci", ["repack", "--image", `${layout2}:t`, bundle]);
  rmSync(bundle, { recursive: true });
  const second = await store.importOci(layout2);
  assert.equal(second.layers.length, 4);
  assert.deepEqual(second.layers.slice(0, 3), first.layers);
  assert.equal(layerDirs(dir).length, 4);
  assert.deepEqual(first.layers.map((l) => statSync(l).ino), inodes);
});

test("docker-archive (skopeo): layers are the sha256 of each layer tar, and the overlay shows the same image", { skip }, async () => {
  const { dir, store } = newStore();
  const image = await store.importOci(dockerArchive);
  assert.equal(image.layers.length, 3);
  const ociDigests = manifestLayers(layout);
  // Docker archives hold uncompressed layers: the ids are the gunzipped OCI blobs' digests.
  const expected = ociDigests.map((d) => sha256(execFileSync("gzip", ["-dc", join(layout, "blobs/sha256", d.slice(7))], { maxBuffer: 64 * 2 ** 20 })));
  assert.deepEqual(image.digests, expected);
  assert.equal(image.config.env.FOO, "bar");
  assert.equal(image.config.workdir, "/w");
  withOverlay(image.layers, checkImageView);
  await store.importOci(dockerArchive);
  assert.equal(layerDirs(dir).length, 3);

  // Newer docker saves keep config and layers as blobs/sha256/<hex>, named in manifest.json.
  const unpacked = mkdtempSync(join(work, "docker-new-"));
  sh("tar", ["-xf", dockerArchive, "-C", unpacked]);
  const old = JSON.parse(readFileSync(join(unpacked, "manifest.json"), "utf8")) as Array<{ Config: string; Layers: string[] }>;
  const newer = join(work, "docker-new");
  mkdirSync(join(newer, "blobs/sha256"), { recursive: true });
  const asBlob = (name: string) => {
    const buf = readFileSync(join(unpacked, name));
    const rel = `blobs/sha256/${sha256(buf).slice(7)}`;
    writeFileSync(join(newer, rel), buf);
    return rel;
  };
  writeFileSync(join(newer, "manifest.json"), JSON.stringify([{ Config: asBlob(old[0]!.Config), RepoTags: ["t:latest"], Layers: old[0]!.Layers.map(asBlob) }]));
  const newerTar = join(work, "docker-new.tar");
  sh("tar", ["-cf", newerTar, "-C", newer, "."]);
  const fresh = newStore();
  for (const source of [newerTar, newerTar, newer]) {
    const again = await fresh.store.importOci(source);
    assert.deepEqual(again.digests, image.digests);
    assert.equal(again.config.env.FOO, "bar");
  }
  assert.equal(layerDirs(fresh.dir).length, 3);
});

test("concurrent imports of the same image share one unpack of each layer", { skip }, async () => {
  // Several rounds: two imports that unpacked the same layer used to race moving it into place.
  for (let round = 0; round < 5; round++) {
    const { dir, store } = newStore();
    const [a, b, c] = await Promise.all([store.importOci(layout), store.importOci(ociArchive), store.importOci(layout)]);
    assert.deepEqual(a, b);
    assert.deepEqual(a, c);
    assert.equal(layerDirs(dir).length, 3);
    assert.deepEqual(readdirSync(join(dir, "tmp")), []);
    if (round === 0) withOverlay(a.layers, checkImageView);
  }
});

/** A gzip tar of the given entries, as a layer blob. */
async function layerTar(entries: Array<{ header: tar.Header | (Partial<tar.Header> & { name: string }); body?: string }>, gzip = true): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on("data", (c) => chunks.push(c as Buffer));
    pack.on("end", () => resolve());
    pack.on("error", reject);
  });
  for (const e of entries) {
    if (e.body !== undefined) pack.entry(e.header, e.body);
    else pack.entry(e.header);
  }
  pack.finalize();
  await done;
  const tarball = Buffer.concat(chunks);
  return gzip ? gzipSync(tarball) : tarball;
}

/** An OCI layout assembled by hand around the given layer blobs. */
function handLayout(name: string, layers: Array<{ blob: Buffer; mediaType?: string }>, config: object = { config: { Env: ["A=1"] } }): string {
  const dir = join(work, name);
  mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
  const put = (buf: Buffer) => {
    const digest = sha256(buf);
    writeFileSync(join(dir, "blobs/sha256", digest.slice(7)), buf);
    return { digest, size: buf.length };
  };
  const cfg = put(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, ...config })));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...cfg },
    layers: layers.map((l) => ({ mediaType: l.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip", ...put(l.blob) })),
  }));
  const m = put(manifest);
  writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...m }] }));
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  return dir;
}

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<AgentboxError> {
  let caught: unknown;
  await p.catch((err: unknown) => (caught = err));
  assert.ok(caught instanceof AgentboxError, `expected an AgentboxError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, message);
  return caught;
}

test("a corrupted layer blob is refused (digest mismatch names the layer) and leaves nothing behind", { skip }, async () => {
  const digests = manifestLayers(layout);
  const bad = join(work, "layout-corrupt");
  cpSync(layout, bad, { recursive: true });
  // Layer 1's blob replaced by another well-formed layer: only the digest can tell.
  const blob1 = join(bad, "blobs/sha256", digests[0]!.slice(7));
  writeFileSync(blob1, await layerTar([{ header: { name: "x", type: "file" }, body: "not busybox" }]));
  const { dir, store } = newStore();
  const err = await rejectsWith(store.importOci(bad), "INVALID_REQUEST", /digest/);
  assert.ok(err.message.includes(digests[0]!), err.message);
  assert.deepEqual(layerDirs(dir), []);
  assert.deepEqual(readdirSync(join(dir, "tmp")), []);

  // A flipped byte in the middle of layer 3's blob.
  const bad2 = join(work, "layout-flipped");
  cpSync(layout, bad2, { recursive: true });
  const blob3 = join(bad2, "blobs/sha256", digests[2]!.slice(7));
  const buf = readFileSync(blob3);
  buf[buf.length >> 1]! ^= 0xff;
  writeFileSync(blob3, buf);
  await rejectsWith(store.importOci(bad2), "INVALID_REQUEST", new RegExp(`layer 3 of 3 \\(${digests[2]}\\)`));
  assert.equal(store.layerPath(digests[2]!), undefined);
  assert.deepEqual(readdirSync(join(dir, "tmp")), []);
});

test("hostile layers (../, absolute paths, writes through a symlink, hard links out) are refused; nothing outside is touched", { skip }, async () => {
  const marker = mkdtempSync(join(tmpdir(), "image-store-marker-"));
  try {
    const cases: Array<[string, Parameters<typeof layerTar>[0]]> = [
      ["dotdot", [{ header: { name: "ok", type: "file" }, body: "ok" }, { header: { name: "../evil", type: "file" }, body: "evil" }]],
      ["dotdot-inner", [{ header: { name: "a/../../evil", type: "file" }, body: "evil" }]],
      ["absolute", [{ header: { name: `${marker}/abs`, type: "file" }, body: "evil" }]],
      ["symlink-parent", [{ header: { name: "link", type: "symlink", linkname: marker } }, { header: { name: "link/file", type: "file" }, body: "evil" }]],
      ["symlink-dir-parent", [{ header: { name: "link", type: "symlink", linkname: marker } }, { header: { name: "link/sub/", type: "directory" } }]],
      ["symlink-whiteout", [{ header: { name: "link", type: "symlink", linkname: marker } }, { header: { name: "link/.wh.x", type: "file" }, body: "" }]],
      ["hardlink-out", [{ header: { name: "pw", type: "link", linkname: "../../../../etc/passwd" } }]],
      ["hardlink-abs", [{ header: { name: "pw", type: "link", linkname: "/etc/passwd" } }]],
      ["hardlink-through-symlink", [{ header: { name: "link", type: "symlink", linkname: "/etc" } }, { header: { name: "pw", type: "link", linkname: "link/passwd" } }]],
    ];
    for (const [name, entries] of cases) {
      const { dir, store } = newStore();
      const img = handLayout(`hostile-${name}`, [{ blob: await layerTar(entries) }]);
      await rejectsWith(store.importOci(img), "INVALID_REQUEST", /refusing entry/);
      assert.deepEqual(readdirSync(marker), [], `${name}: the marker directory is untouched`);
      assert.equal(existsSync(join(work, "evil")), false, name);
      assert.equal(existsSync(join(dir, "evil")), false, name);
      assert.deepEqual(layerDirs(dir), [], name);
      assert.deepEqual(readdirSync(join(dir, "tmp")), [], name);
    }
    // Device nodes are skipped, not refused; a symlink pointing outside is only stored.
    const { store } = newStore();
    const img = handLayout("devices", [{
      blob: await layerTar([
        { header: { name: "dev/", type: "directory" } },
        { header: { name: "dev/sda", type: "block-device", devmajor: 8, devminor: 0 } },
        { header: { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3 } },
        { header: { name: "escape", type: "symlink", linkname: marker } },
      ]),
    }]);
    const image = await store.importOci(img);
    assert.deepEqual(readdirSync(join(image.layers[0]!, "dev")), []);
    assert.equal(lstatSync(join(image.layers[0]!, "escape")).isSymbolicLink(), true);
    assert.deepEqual(readdirSync(marker), []);
  } finally {
    rmSync(marker, { recursive: true, force: true });
  }
});

test("hostile archives: an oci-archive entry with '..' or an absolute path is refused", { skip }, async () => {
  const { dir, store } = newStore();
  for (const name of ["../evil.json", "/evil.json"]) {
    const archive = join(work, `hostile-archive-${name.length}.tar`);
    writeFileSync(archive, await layerTar([{ header: { name: "oci-layout", type: "file" }, body: "{}" }, { header: { name, type: "file" }, body: "x" }], false));
    await rejectsWith(store.importOci(archive), "INVALID_REQUEST", /unsafe path/);
  }
  assert.deepEqual(readdirSync(join(dir, "tmp")), []);
  assert.equal(existsSync(join(dir, "evil.json")), false);
});

test("unsupported layer types are refused with a message that says what to do", { skip }, async () => {
  const { store } = newStore();
  const plain = await layerTar([{ header: { name: "f", type: "file" }, body: "x" }]);
  const zstdMagic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
  await rejectsWith(store.importOci(handLayout("zstd", [{ blob: zstdMagic, mediaType: "application/vnd.oci.image.layer.v1.tar+zstd" }])), "INVALID_REQUEST", /zstd.*re-export the image with gzip-compressed or uncompressed layers/);
  await rejectsWith(store.importOci(handLayout("zstd-magic", [{ blob: zstdMagic, mediaType: "application/vnd.oci.image.layer.v1.tar" }])), "INVALID_REQUEST", /compressed with zstd/);
  await rejectsWith(store.importOci(handLayout("foreign", [{ blob: plain, mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" }])), "INVALID_REQUEST", /foreign/);
  await rejectsWith(store.importOci(handLayout("odd", [{ blob: plain, mediaType: "application/vnd.example.thing" }])), "INVALID_REQUEST", /application\/vnd\.example\.thing.*not a supported layer type/);
  // Gzip is recognised by its magic bytes, whatever the media type says; plain tar works too.
  const uncompressed = await layerTar([{ header: { name: "plain", type: "file" }, body: "p" }], false);
  const image = await store.importOci(handLayout("mislabelled", [{ blob: plain, mediaType: "application/vnd.oci.image.layer.v1.tar" }, { blob: uncompressed, mediaType: "application/vnd.oci.image.layer.v1.tar" }]));
  assert.equal(readFileSync(join(image.layers[0]!, "f"), "utf8"), "x");
  assert.equal(readFileSync(join(image.layers[1]!, "plain"), "utf8"), "p");
  assert.deepEqual(image.config.env, { A: "1" });
});

test("errors a person can act on: missing path, not an image, bad JSON, missing blob", { skip }, async () => {
  const { store } = newStore();
  await rejectsWith(store.importOci(join(work, "nope")), "NOT_FOUND", /does not exist/);
  const empty = mkdtempSync(join(work, "empty-"));
  await rejectsWith(store.importOci(empty), "INVALID_REQUEST", /not an image: expected .*oci-layout and index\.json.*manifest\.json/);
  const badJson = join(work, "layout-badjson");
  cpSync(layout, badJson, { recursive: true });
  writeFileSync(join(badJson, "index.json"), "{not json");
  await rejectsWith(store.importOci(badJson), "INVALID_REQUEST", /index\.json.*not valid JSON/);
  const noBlob = join(work, "layout-noblob");
  cpSync(layout, noBlob, { recursive: true });
  const digests = manifestLayers(layout);
  rmSync(join(noBlob, "blobs/sha256", digests[1]!.slice(7)));
  await rejectsWith(store.importOci(noBlob), "INVALID_REQUEST", new RegExp(`layer 2 of 3 \\(${digests[1]}\\).*missing`));
  const notTar = join(work, "not-a-tar.tar");
  writeFileSync(notTar, "hello, this is not a tar archive at all".repeat(20));
  await rejectsWith(store.importOci(notTar), "INVALID_REQUEST", /not a readable tar archive/);
});

test("dir: a root filesystem directory is copied into one layer; later changes to it do not show", { skip }, async () => {
  const src = mkdtempSync(join(work, "rootfs-"));
  mkdirSync(join(src, "bin"));
  copyFileSync("/bin/busybox", join(src, "bin/busybox"));
  chmodSync(join(src, "bin/busybox"), 0o755);
  symlinkSync("busybox", join(src, "bin/sh"));
  linkSync(join(src, "bin/busybox"), join(src, "bin/cat"));
  writeFileSync(join(src, ".wh.literal"), "not a whiteout here");
  writeFileSync(join(src, "secret"), "s");
  chmodSync(join(src, "secret"), 0o000);
  writeFileSync(join(src, "owned"), "o");
  chownSync(join(src, "owned"), 300000, 300001);
  sh("mkfifo", [join(src, "fifo")]);
  const { dir, store } = newStore();
  const progress: ImportProgress[] = [];
  const image = await store.importDir(src, (p) => progress.push(p));
  assert.equal(image.layers.length, 1);
  assert.match(image.digests[0]!, /^sha256:[0-9a-f]{64}$/);
  assert.deepEqual(image.config, { env: {} });
  const layer = image.layers[0]!;
  assert.equal(statSync(join(layer, "bin/cat")).ino, statSync(join(layer, "bin/busybox")).ino);
  assert.equal(readFileSync(join(layer, ".wh.literal"), "utf8"), "not a whiteout here");
  assert.equal(statSync(join(layer, "secret")).mode & 0o7777, 0);
  assert.equal(statSync(join(layer, "owned")).uid, 300000);
  assert.equal(statSync(join(layer, "owned")).gid, 300001);
  assert.ok(lstatSync(join(layer, "fifo")).isFIFO());
  const last = progress.at(-1)!;
  assert.deepEqual([last.layersDone, last.layersTotal], [1, 1]);
  assert.equal(last.bytesDone, last.bytesTotal);
  assert.equal(last.bytesTotal, statSync("/bin/busybox").size + 19 + 2);
  withOverlay(image.layers, (merged) => assert.equal(sh("chroot", [merged, "/bin/sh", "-c", "echo ok"]).trim(), "ok"));

  const again = await store.importDir(src);
  assert.deepEqual(again.digests, image.digests, "the same tree gives the same id");
  assert.equal(layerDirs(dir).length, 1);
  writeFileSync(join(src, "later"), "later");
  assert.equal(existsSync(join(layer, "later")), false);
  const changed = await store.importDir(src);
  assert.notEqual(changed.digests[0], image.digests[0]);
  await rejectsWith(store.importDir(join(work, "nope")), "NOT_FOUND", /does not exist/);
});

test("adoptLayer moves a directory into the store; gc removes what is not kept", { skip }, async () => {
  const { dir, store } = newStore();
  const image = await store.importOci(layout);
  const snap = mkdtempSync(join(work, "snapshot-"));
  writeFileSync(join(snap, "file"), "snap");
  const adopted = await store.adoptLayer(snap);
  assert.match(adopted.digest, /^sha256:[0-9a-f]{64}$/);
  assert.equal(existsSync(snap), false, "moved, not copied");
  assert.equal(store.layerPath(adopted.digest), adopted.path);
  assert.equal(readFileSync(join(adopted.path, "file"), "utf8"), "snap");

  assert.equal(store.gc(new Set([...image.digests, adopted.digest])), 0);
  assert.equal(store.gc(new Set(image.digests)), 1);
  assert.equal(store.layerPath(adopted.digest), undefined);
  assert.equal(existsSync(adopted.path), false);
  assert.equal(store.gc(new Set(image.digests.slice(0, 1))), 2);
  assert.deepEqual(layerDirs(dir), [image.digests[0]!.slice(7)]);
  assert.equal(store.layerPath(image.digests[1]!), undefined);
  // What gc removed comes back on the next import.
  const again = await store.importOci(layout);
  assert.deepEqual(again.layers, image.layers);
  withOverlay(again.layers, checkImageView);
});
