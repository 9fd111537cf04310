/**
 * The `host` image: a read-only view of the host's system directories with a
 * curated /etc that carries no secrets. It is a small skeleton directory
 * (used as the overlay's lower layer) plus read-only binds of /usr and of
 * /bin, /lib… where those are real directories rather than symlinks.
 */
import { cpSync, existsSync, lstatSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const SANDBOX_UID = 1000;
export const SANDBOX_GID = 1000;
export const SANDBOX_USER = "user";
export const SANDBOX_HOME = "/home/user";

const SYSTEM_DIRS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/** /etc entries copied from the host: what programs need to run, nothing that holds a secret. */
const ETC_ALLOWLIST = [
  "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "os-release",
  "debian_version", "profile", "profile.d", "bash.bashrc", "inputrc", "ssl", "ca-certificates",
  "ca-certificates.conf", "mime.types", "protocols", "services", "shells", "nsswitch.conf",
  "login.defs", "terminfo", "magic", "magic.mime", "gai.conf", "host.conf", "environment.d",
];

export interface HostImage {
  /** Directory used as the overlay's lower layer. */
  readonly skeleton: string;
  /** Read-only bind mounts: [host path, path in sandbox]. */
  readonly binds: Array<[string, string]>;
}

const PASSWD = `root:x:0:0:root:/root:/usr/sbin/nologin
${SANDBOX_USER}:x:${SANDBOX_UID}:${SANDBOX_GID}:sandbox user:${SANDBOX_HOME}:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`;
const GROUP = `root:x:0:
${SANDBOX_USER}:x:${SANDBOX_GID}:
nogroup:x:65534:
`;
const HOSTS = `127.0.0.1\tlocalhost sandbox
::1\tlocalhost ip6-localhost ip6-loopback
`;

/** Build (once, atomically) the skeleton of the host image under `imagesDir`. */
export function ensureHostImage(imagesDir: string, hostRoot = "/"): HostImage {
  const skeleton = join(imagesDir, "host");
  const binds: Array<[string, string]> = [[join(hostRoot, "usr"), "/usr"]];
  for (const d of SYSTEM_DIRS) {
    const p = join(hostRoot, d);
    if (existsSync(p) && !lstatSync(p).isSymbolicLink() && lstatSync(p).isDirectory()) binds.push([p, `/${d}`]);
  }
  const marker = `${skeleton}.complete`;
  if (existsSync(marker)) return { skeleton, binds };

  const tmp = `${skeleton}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  for (const d of ["usr", "etc", "tmp", "proc", "dev", "sys", "workspace", "home", "root", "var/tmp", "run", "mnt", "opt"]) {
    mkdirSync(join(tmp, d), { recursive: true, mode: 0o755 });
  }
  for (const d of SYSTEM_DIRS) {
    const p = join(hostRoot, d);
    if (!existsSync(p)) continue;
    if (lstatSync(p).isSymbolicLink()) symlinkSync(readlinkSync(p), join(tmp, d));
    else mkdirSync(join(tmp, d));
  }
  for (const name of ETC_ALLOWLIST) {
    const src = join(hostRoot, "etc", name);
    if (!existsSync(src) && !isSymlink(src)) continue;
    cpSync(src, join(tmp, "etc", name), { recursive: true, verbatimSymlinks: true, dereference: false });
  }
  writeFileSync(join(tmp, "etc/passwd"), PASSWD);
  writeFileSync(join(tmp, "etc/group"), GROUP);
  writeFileSync(join(tmp, "etc/hosts"), HOSTS);
  writeFileSync(join(tmp, "etc/hostname"), "sandbox\n");
  writeFileSync(join(tmp, "etc/resolv.conf"), "");
  rmSync(skeleton, { recursive: true, force: true });
  renameSync(tmp, skeleton);
  writeFileSync(marker, "");
  return { skeleton, binds };
}

function isSymlink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
