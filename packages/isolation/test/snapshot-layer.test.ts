/**
 * Snapshot layers: an upper directory captured with its whiteouts and opaque
 * markers, the user's files given to the neutral layer uid, and their
 * hand-over to a new sandbox's uid never following a symlink to a host file.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { LAYER_USER_UID, captureLayer, giveOwnedPaths } from "../src/snapshot-layer.js";

const SANDBOX_UID = 2_000_123;
const NEW_UID = 2_000_456;

test("captureLayer keeps whiteouts and opaque dirs and gives the user's files to the layer uid", async () => {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-snap-"));
  try {
    const upper = join(dir, "upper");
    mkdirSync(join(upper, "workspace/proj"), { recursive: true });
    writeFileSync(join(upper, "workspace/proj/a.txt"), "a");
    symlinkSync("a.txt", join(upper, "workspace/proj/link"));
    for (const p of ["workspace", "workspace/proj", "workspace/proj/a.txt"]) chownSync(join(upper, p), SANDBOX_UID, SANDBOX_UID);
    execFileSync("chown", ["-h", `${SANDBOX_UID}:${SANDBOX_UID}`, join(upper, "workspace/proj/link")]);
    execFileSync("mknod", [join(upper, "workspace/gone"), "c", "0", "0"]);
    mkdirSync(join(upper, "opaque"));
    execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(upper, "opaque")]);
    // overlayfs's other private attributes must not be carried into a layer.
    execFileSync("setfattr", ["-n", "trusted.overlay.origin", "-v", "0sAAAA", join(upper, "workspace/proj/a.txt")]);
    const layer = join(dir, "layer");
    const owned = await captureLayer(upper, layer, SANDBOX_UID);
    assert.deepEqual(owned.sort(), ["workspace", "workspace/proj", "workspace/proj/a.txt", "workspace/proj/link"]);
    assert.equal(statSync(join(layer, "workspace/proj/a.txt")).uid, LAYER_USER_UID);
    assert.equal(lstatSync(join(layer, "workspace/proj/link")).uid, LAYER_USER_UID);
    const gone = lstatSync(join(layer, "workspace/gone"));
    assert.ok(gone.isCharacterDevice() && gone.rdev === 0);
    assert.equal(execFileSync("getfattr", ["--absolute-names", "--only-values", "-n", "trusted.overlay.opaque", join(layer, "opaque")]).toString(), "y");
    assert.throws(() => execFileSync("getfattr", ["--absolute-names", "-n", "trusted.overlay.origin", join(layer, "workspace/proj/a.txt")], { stdio: "pipe" }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("giveOwnedPaths hands listed paths over and never follows a symlink out", async () => {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-give-"));
  try {
    const host = join(dir, "host");
    mkdirSync(join(host, "secret"), { recursive: true });
    writeFileSync(join(host, "secret/file"), "host");
    chownSync(join(host, "secret/file"), LAYER_USER_UID, LAYER_USER_UID); // even a host file with the layer uid stays untouched
    const merged = join(dir, "merged");
    mkdirSync(join(merged, "w"), { recursive: true });
    writeFileSync(join(merged, "w/mine"), "x");
    chownSync(join(merged, "w"), LAYER_USER_UID, LAYER_USER_UID);
    chownSync(join(merged, "w/mine"), LAYER_USER_UID, LAYER_USER_UID);
    // A later layer replaced directory `d` by a symlink to the host; the manifest still lists d/file.
    symlinkSync(join(host, "secret"), join(merged, "d"));
    symlinkSync("/", join(merged, "root"));
    await giveOwnedPaths(merged, ["w", "w/mine", "d/file", "root/etc/passwd", "../host/secret/file", "w/../d/file"], NEW_UID);
    assert.equal(statSync(join(merged, "w")).uid, NEW_UID);
    assert.equal(statSync(join(merged, "w/mine")).uid, NEW_UID);
    assert.equal(statSync(join(host, "secret/file")).uid, LAYER_USER_UID);
    assert.equal(statSync("/etc/passwd").uid, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
