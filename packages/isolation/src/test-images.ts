/**
 * OCI images for tests and benchmarks (`@agentbox/isolation/test-images`),
 * made by real tools from Debian that only `scripts/setup.sh --test` installs: a busybox-static
 * root filesystem packed by `umoci` into an OCI layout with three layers
 * (the second one deletes a file and replaces a directory's contents, so it
 * carries a whiteout and an opaque directory), and the same image converted
 * by `skopeo` into a `docker save` archive.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });

/** A busybox root filesystem in `dir`: /bin/busybox and a symlink per applet. */
export function busyboxRootfs(dir: string): void {
  mkdirSync(join(dir, "bin"), { recursive: true });
  mkdirSync(join(dir, "etc"), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  for (const applet of run("/bin/busybox", ["--list"]).toString().split("\n").filter(Boolean)) {
    if (applet !== "busybox") symlinkSync("busybox", join(dir, "bin", applet));
  }
}

export interface TestImages {
  /** OCI image layout directory (tag `t`). */
  layout: string;
  /** The same image as a `docker save` archive. */
  dockerArchive: string;
}

/** Build the test images under `work` (which must exist and be empty). */
export function buildTestImages(work: string): TestImages {
  const layout = join(work, "layout");
  const bundle = join(work, "bundle");
  run("umoci", ["init", "--layout", layout]);
  run("umoci", ["new", "--image", `${layout}:t`]);
  const step = (change: (rootfs: string) => void) => {
    rmSync(bundle, { recursive: true, force: true });
    run("umoci", ["unpack", "--image", `${layout}:t`, bundle]);
    change(join(bundle, "rootfs"));
    run("umoci", ["repack", "--image", `${layout}:t`, bundle]);
  };
  // Layer 1: busybox, a file to delete later, a directory to replace later.
  step((rootfs) => {
    busyboxRootfs(rootfs);
    writeFileSync(join(rootfs, "etc", "motd"), "from layer one\n");
    mkdirSync(join(rootfs, "data"));
    writeFileSync(join(rootfs, "data", "old-1"), "old\n");
    writeFileSync(join(rootfs, "data", "old-2"), "old\n");
  });
  // Layer 2: delete /etc/motd (a whiteout), replace /data's contents (an opaque directory).
  step((rootfs) => {
    rmSync(join(rootfs, "etc", "motd"));
    rmSync(join(rootfs, "data"), { recursive: true });
    mkdirSync(join(rootfs, "data"));
    writeFileSync(join(rootfs, "data", "new"), "new\n");
  });
  // Layer 3: the application.
  step((rootfs) => {
    mkdirSync(join(rootfs, "app"));
    writeFileSync(join(rootfs, "app", "hello.sh"), 'echo "hello from $GREETING"\n');
  });
  run("umoci", ["config", "--image", `${layout}:t`, "--config.env", "GREETING=the-image", "--config.env", "PATH=/bin", "--config.workingdir", "/app"]);
  rmSync(bundle, { recursive: true, force: true });
  run("umoci", ["gc", "--layout", layout]);
  const dockerArchive = join(work, "image-docker.tar");
  run("skopeo", ["copy", "--quiet", `oci:${layout}:t`, `docker-archive:${dockerArchive}:test/busybox:latest`]);
  return { layout, dockerArchive };
}
