/**
 * Templates from images: OCI layouts from umoci, docker archives from
 * skopeo, root filesystem directories, shared layers, and bad images.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agentbox } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";
import { buildTestImages, busyboxRootfs, type TestImages } from "@agentbox/isolation/test-images";

describe("images", () => {
  let h: Harness;
  let work: string;
  let images: TestImages;
  before(async () => {
    work = mkdtempSync(join(tmpdir(), "agentbox-images-"));
    images = buildTestImages(work);
    h = await startHarness();
  });
  after(async () => {
    await h.close();
    rmSync(work, { recursive: true, force: true });
  });

  const layerDirs = () => readdirSync(join(h.dataDir, "images", "layers")).filter((n) => /^[0-9a-f]{64}$/.test(n)).sort();

  test("an OCI layout made by umoci runs busybox with the image's Env and WorkingDir; whiteouts hold", async () => {
    const t = await h.api("POST", "/v1/templates", { name: "bb", image: `oci:${images.layout}` });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    assert.equal(t.body.status, "ready", t.body.statusMessage);
    assert.equal(t.body.layers, 3);
    assert.equal(t.body.workdir, "/app");
    assert.equal(t.body.user, "user");
    const sb = await h.createSandbox({ template: "bb" });
    const r = await h.exec(sb.id, { argv: ["busybox", "sh", "-c", 'sh hello.sh; pwd; echo "$PATH"; ls /data; cat /etc/motd 2>&1; id -u'] });
    assert.equal(r.stdout, "hello from the-image\n/app\n/bin\nnew\ncat: can't open '/etc/motd': No such file or directory\n1000\n", r.stderr);
    // The host's system directories are not there: only the image.
    const host = await h.exec(sb.id, { command: "ls /usr 2>&1; ls /bin | wc -l" });
    assert.match(host.stdout, /No such file or directory\n\d+\n/);
    const env = await h.exec(sb.id, { command: "echo $GREETING", env: { GREETING: "override" } });
    assert.equal(env.stdout, "override\n");
  });

  test("a docker save archive from skopeo gives the same image, sharing its layers on disk", async () => {
    const before = layerDirs();
    assert.equal(before.length, 3);
    const t = await h.api("POST", "/v1/templates", { name: "bb-docker", image: `oci:${images.dockerArchive}`, env: { EXTRA: "x" } });
    assert.equal(t.body.status, "ready", t.body.statusMessage);
    assert.equal(t.body.layers, 3);
    const sb = await h.createSandbox({ template: "bb-docker" });
    const r = await h.exec(sb.id, { argv: ["busybox", "sh", "-c", 'echo "$GREETING $EXTRA"; ls /data; test -e /etc/motd || echo no-motd'] });
    assert.equal(r.stdout, "the-image x\nnew\nno-motd\n", r.stderr);
    // skopeo stores the layers uncompressed (umoci gzips them): different digests, so new
    // layer dirs. Importing the OCI layout again reuses the first three.
    const t2 = await h.api("POST", "/v1/templates", { name: "bb-again", image: `oci:${images.layout}` });
    assert.equal(t2.body.status, "ready");
    const afterDirs = layerDirs();
    assert.ok(afterDirs.length <= 6, `layers on disk: ${afterDirs.length}`);
    assert.deepEqual(afterDirs.filter((d) => before.includes(d)), before);
    const again = layerDirs();
    assert.deepEqual(again, afterDirs);
  });

  test("a root filesystem directory (dir:) is imported as one layer", async () => {
    const rootfs = join(work, "rootfs");
    busyboxRootfs(rootfs);
    writeFileSync(join(rootfs, "etc", "passwd"), "root:x:0:0::/root:/bin/sh\nalice:x:1500:1500::/home/alice:/bin/sh\n");
    const t = await h.api("POST", "/v1/templates", { name: "plain", image: `dir:${rootfs}`, user: "alice" });
    assert.equal(t.body.status, "ready", t.body.statusMessage);
    assert.equal(t.body.layers, 1);
    // Later changes to the directory do not reach the template.
    writeFileSync(join(rootfs, "later"), "x");
    const sb = await h.createSandbox({ template: "plain" });
    const r = await h.exec(sb.id, { command: "id -u; id -un; echo $HOME; pwd; ls /later 2>&1 | grep -c 'No such'" });
    assert.equal(r.stdout, "1500\nalice\n/home/alice\n/workspace\n1\n", r.stderr);
  });

  test("bad images leave the template failed with a message a person can act on", async () => {
    const cases: Array<[string, RegExp]> = [
      [`oci:${join(work, "missing")}`, /missing/],
      [`oci:${join(work, "rootfs")}`, /(index\.json|oci-layout|manifest\.json)/],
      [`dir:${join(work, "nope")}`, /nope/],
    ];
    const notAnImage = join(work, "junk.tar");
    writeFileSync(notAnImage, "this is not a tar file at all");
    cases.push([`oci:${notAnImage}`, /junk\.tar/]);
    // A corrupt blob: a copy of the layout with a fourth layer (not stored yet: a stored digest
    // is never read again), one byte of which is then changed.
    const broken = join(work, "broken");
    execFileSync("cp", ["-a", images.layout, broken]);
    const bundle = join(work, "broken-bundle");
    execFileSync("umoci", ["unpack", "--image", `${broken}:t`, bundle]);
    writeFileSync(join(bundle, "rootfs", "unique"), `${Date.now()}\n`.repeat(100));
    execFileSync("umoci", ["repack", "--image", `${broken}:t`, bundle]);
    const blobs = join(broken, "blobs", "sha256");
    const index = JSON.parse(execFileSync("cat", [join(broken, "index.json")]).toString());
    const manifest = JSON.parse(execFileSync("cat", [join(blobs, index.manifests[0].digest.slice(7))]).toString());
    const layer = join(blobs, manifest.layers[manifest.layers.length - 1].digest.slice(7));
    // Invert one byte: writing a fixed one would change nothing when the byte already was that one.
    const blob = readFileSync(layer);
    blob[100] = blob[100]! ^ 0xff;
    writeFileSync(layer, blob);
    // Which check catches it depends on where the byte lands: the gzip stream, the tar inside, or only the digest.
    cases.push([`oci:${broken}`, /layer 4 of 4 \(sha256:[0-9a-f]{64}\)(: its content has digest sha256:[0-9a-f]{64}, but the manifest says| does not match its digest| is not a valid layer)/]);
    for (const [image, message] of cases) {
      const name = `bad-${cases.findIndex((c) => c[0] === image)}`;
      const t = await h.api("POST", "/v1/templates", { name, image });
      assert.equal(t.status, 201);
      assert.equal(t.body.status, "failed", image);
      assert.match(t.body.statusMessage, message, t.body.statusMessage);
      const sb = await h.api("POST", "/v1/sandboxes", { template: name });
      assert.equal(sb.status, 409);
      assert.match(sb.body.error.message, new RegExp(`template ${name} is failed`));
    }
  });

  test("image paths outside the server's image roots are refused; uploads need none", async () => {
    const link = join(work, "link-to-etc");
    symlinkSync("/etc", link);
    for (const image of ["dir:/etc", "oci:/root/image.tar", `dir:${work}/../../etc`, `dir:${link}`, `oci:${h.dataDir}/api-key`]) {
      const res = await h.api("POST", "/v1/templates", { name: "sneaky", image });
      assert.equal(res.status, 403, image);
      assert.equal(res.body.error.code, "PERMISSION_DENIED");
      assert.match(res.body.error.message, /^image: \S+ is (not under an image root|inside the server's data directory)/);
    }
    const patch = await h.api("PATCH", "/v1/templates/bb", { image: "dir:/" });
    assert.equal(patch.status, 403);
    assert.equal((await h.api("GET", "/v1/templates/sneaky")).status, 404);

    // An upload: the archive's bytes as the body; the answer's image goes in a template.
    const body = readFileSync(images.dockerArchive);
    const up = await fetch(`${h.server.url}/v1/images`, { method: "POST", headers: { authorization: `Bearer ${h.server.apiKey}` }, body });
    assert.equal(up.status, 201);
    const uploaded = (await up.json()) as { image: string; digest: string; sizeBytes: number };
    assert.equal(uploaded.sizeBytes, body.length);
    assert.match(uploaded.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(uploaded.image, `oci:${join(h.dataDir, "images", "uploads", `${uploaded.digest.slice(7)}.tar`)}`);
    const t = await h.api("POST", "/v1/templates", { name: "uploaded", image: uploaded.image });
    assert.equal(t.body.status, "ready", t.body.statusMessage);
    const sb = await h.createSandbox({ template: "uploaded" });
    assert.equal((await h.exec(sb.id, { argv: ["busybox", "sh", "-c", "echo $GREETING"] })).stdout, "the-image\n");
    const empty = await fetch(`${h.server.url}/v1/images`, { method: "POST", headers: { authorization: `Bearer ${h.server.apiKey}` }, body: "" });
    assert.equal(empty.status, 400);
    const noKey = await fetch(`${h.server.url}/v1/images`, { method: "POST", body });
    assert.equal(noKey.status, 401);
  });

  test("the SDK uploads an OCI layout directory (packed on the way) or an archive", async () => {
    const client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
    let seen = 0;
    const { image } = await client.templates.uploadImage(images.layout, { onProgress: (n) => (seen = n) });
    assert.ok(seen > 500_000, `progress reported ${seen} bytes`);
    const t = await client.templates.create({ name: "from-dir-upload", image });
    assert.equal(t.status, "ready", t.statusMessage);
    assert.equal(t.layers, 3);
    const again = await client.templates.uploadImage(readFileSync(images.dockerArchive));
    assert.match(again.image, /^oci:\//);
  });

  test("an import can run in the background and report its progress", async () => {
    const t = await h.api("POST", "/v1/templates", { name: "bg", image: `oci:${images.dockerArchive}`, wait: false });
    assert.equal(t.status, 201);
    assert.ok(["provisioning", "ready"].includes(t.body.status));
    for (let i = 0; i < 200; i++) {
      const got = await h.api("GET", "/v1/templates/bg");
      if (got.body.status !== "provisioning") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await h.api("GET", "/v1/templates/bg")).body.status, "ready");
  });
});
