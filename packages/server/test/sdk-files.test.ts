/** The SDK's files client against a real server. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { Agentbox, isAgentboxError, type Sandbox, type WatchEvent } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";

describe("SDK files", () => {
  let h: Harness;
  let sb: Sandbox;
  let local: string;

  before(async () => {
    h = await startHarness();
    sb = await new Agentbox({ url: h.server.url, apiKey: h.server.apiKey }).sandboxes.create();
    local = mkdtempSync(join(tmpdir(), "agentbox-sdk-files-"));
  });
  after(async () => {
    rmSync(local, { recursive: true, force: true });
    await h.close();
  });

  test("read and write text, bytes and streams", async () => {
    assert.deepEqual(await sb.files.write("t/a.txt", "héllo\n"), { path: "t/a.txt", size: 7 });
    assert.equal(await sb.files.read("t/a.txt"), "héllo\n");
    const bytes = randomBytes(3 * 1024 * 1024);
    let progress = 0;
    await sb.files.write("t/b.bin", bytes, { mode: 0o600, onProgress: (n) => (progress = n) });
    assert.equal(progress, bytes.length);
    assert.deepEqual(Buffer.from(await sb.files.read("t/b.bin", { format: "bytes" })), bytes);
    assert.equal((await sb.files.stat("t/b.bin")).mode, 0o600);
    await sb.files.write("t/c.txt", Readable.from(["one ", "two ", "three"]));
    const stream = await sb.files.read("t/c.txt", { format: "stream" });
    let text = "";
    for await (const c of stream) text += c;
    assert.equal(text, "one two three");
  });

  test("uploadFile and downloadFile copy local files byte-exact, with mode and progress", async () => {
    for (const size of [0, 1, 5 * 1024 * 1024 + 7]) {
      const data = randomBytes(size);
      const src = join(local, `up-${size}.bin`);
      writeFileSync(src, data);
      const seen: Array<[number, number | undefined]> = [];
      const up = await sb.files.uploadFile(src, `u/${size}.bin`, { mode: 0o640, onProgress: (n, total) => seen.push([n, total]) });
      assert.deepEqual(up, { path: `u/${size}.bin`, size });
      assert.equal((await sb.files.stat(`u/${size}.bin`)).mode, 0o640);
      if (size > 0) assert.deepEqual(seen.at(-1), [size, size]);
      const back = join(local, `down-${size}.bin`);
      const down = await sb.files.downloadFile(`u/${size}.bin`, back, { mode: 0o600 });
      assert.deepEqual(down, { path: back, size });
      assert.deepEqual(readFileSync(back), data);
      assert.equal(lstatSync(back).mode & 0o777, 0o600);
    }
    await assert.rejects(sb.files.downloadFile("u/missing.bin", join(local, "x")), (e) => isAgentboxError(e, "NOT_FOUND"));
    await assert.rejects(sb.files.uploadFile(join(local, "no-such-file"), "u/x"), /ENOENT/);
  });

  test("list, stat, mkdir, move, remove, exists, typed errors", async () => {
    await sb.files.mkdir("m/x/y", { recursive: true });
    await sb.files.write("m/x/f", "f");
    assert.deepEqual((await sb.files.list("m", { depth: 3 })).map((e) => e.path).sort(), ["/workspace/m/x", "/workspace/m/x/f", "/workspace/m/x/y"]);
    assert.equal((await sb.files.move("m/x/f", "m/g")).path, "/workspace/m/g");
    assert.equal(await sb.files.exists("m/g"), true);
    assert.equal(await sb.files.exists("m/x/f"), false);
    await sb.files.remove("m", { recursive: true });
    assert.equal(await sb.files.exists("m"), false);
    await assert.rejects(sb.files.read("nope.txt"), (e) => isAgentboxError(e, "NOT_FOUND"));
    await assert.rejects(sb.files.write("/etc/x", "x"), (e) => isAgentboxError(e, "PERMISSION_DENIED"));
  });

  test("uploadDir and downloadDir round-trip a tree (files, empty dirs, symlinks, modes)", async () => {
    const src = join(local, "src");
    mkdirSync(join(src, "a/b"), { recursive: true });
    mkdirSync(join(src, "empty"));
    const blob = randomBytes(200_000);
    writeFileSync(join(src, "a/b/blob.bin"), blob);
    writeFileSync(join(src, "run.sh"), "#!/bin/sh\necho ran\n", { mode: 0o755 });
    symlinkSync("a/b/blob.bin", join(src, "link"));
    await sb.files.uploadDir(src, "/workspace/up");
    const check = await sb.exec("cd /workspace/up && ./run.sh && readlink link && sha256sum a/b/blob.bin | cut -c1-16 && test -d empty && echo ok");
    assert.equal(check.stdout.split("\n")[0], "ran");
    assert.equal(check.stdout.split("\n")[1], "a/b/blob.bin");
    assert.equal(check.stdout.split("\n")[3], "ok");
    const dst = join(local, "dst");
    await sb.files.downloadDir("/workspace/up", dst);
    assert.deepEqual(readFileSync(join(dst, "a/b/blob.bin")), blob);
    assert.equal(readlinkSync(join(dst, "link")), "a/b/blob.bin");
    assert.equal(lstatSync(join(dst, "run.sh")).mode & 0o777, 0o755);
  });

  test("downloadDir treats the sandbox's archive as untrusted: a link pointing out is refused", async () => {
    await sb.exec("mkdir -p /workspace/hostile && ln -s /etc/passwd /workspace/hostile/evil && echo x > /workspace/hostile/z");
    const dst = join(local, "hostile");
    await assert.rejects(sb.files.downloadDir("/workspace/hostile", dst), (e) => isAgentboxError(e, "PATH_OUTSIDE_SANDBOX"));
    assert.equal(existsSync(join(dst, "evil")), false);
  });

  test("watch delivers events and close stops it; a missing directory rejects with NOT_FOUND", async () => {
    await sb.files.mkdir("wd", { recursive: true });
    const events: WatchEvent[] = [];
    const handle = await sb.files.watch("wd", (e) => events.push(e));
    // No pause: watch() resolves once the watcher runs, so the very next change is seen.
    await sb.exec("echo 1 > /workspace/wd/new.txt");
    for (let i = 0; i < 1000 && !events.some((e) => e.type === "create"); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(events.some((e) => e.type === "create" && "path" in e && e.path === "/workspace/wd/new.txt"), JSON.stringify(events));
    handle.close();
    assert.equal((await handle.closed).code, 1000);
    await assert.rejects(sb.files.watch("no/such", () => undefined), (e) => isAgentboxError(e, "NOT_FOUND"));
    // The directory going away ends the watch by itself.
    const gone: WatchEvent[] = [];
    const ending = await sb.files.watch("wd", (e) => gone.push(e));
    await sb.exec("rm -r /workspace/wd");
    assert.deepEqual(await ending.closed, { code: 1000, reason: "watch ended" });
    assert.deepEqual(gone.at(-1), { type: "delete", path: "/workspace/wd" });
  });
});
