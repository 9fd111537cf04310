/** Locations of the host programs the local driver needs, checked once. */
import { accessSync, constants } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The compiled helper (packages/isolation/bin), built by scripts/build-native.sh. */
export const ENTER_HELPER = process.env.AGENTBOX_ENTER_HELPER ?? join(here, "..", "..", "bin", "agentbox-enter");
/** The files helper, run inside sandboxes from a descriptor (see native/agentbox-fs.c). */
export const FS_HELPER = process.env.AGENTBOX_FS_HELPER ?? join(here, "..", "..", "bin", "agentbox-fs");

/** The network helper (socket relays for the runtime; the exposed-port connector, run inside sandboxes from a descriptor). */
export const NET_HELPER = process.env.AGENTBOX_NET_HELPER ?? join(here, "..", "..", "bin", "agentbox-net");

export function findProgram(name: string): string | undefined {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export interface HostCheck {
  ok: boolean;
  problems: string[];
  bwrap?: string;
}

/** What is missing for the local driver, in words a person can act on. */
export function checkHost(): HostCheck {
  const problems: string[] = [];
  const bwrap = findProgram("bwrap");
  if (!bwrap) problems.push("bubblewrap is not installed (run `bash scripts/setup.sh` as root, or `apt-get install bubblewrap`)");
  if (!findProgram("mkfs.ext4")) problems.push("mkfs.ext4 is not installed (sandbox disks; run `bash scripts/setup.sh` as root, or `apt-get install e2fsprogs`)");
  try {
    accessSync(ENTER_HELPER, constants.X_OK);
  } catch {
    problems.push(`the helper ${ENTER_HELPER} is missing (run \`npm run build\`)`);
  }
  for (const helper of [FS_HELPER, NET_HELPER]) {
    try {
      accessSync(helper, constants.R_OK);
    } catch {
      problems.push(`the helper ${helper} is missing (run \`npm run build\`)`);
    }
  }
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    problems.push("the local runtime must run as root to mount sandbox filesystems and join namespaces");
  }
  const result: HostCheck = { ok: problems.length === 0, problems };
  if (bwrap) result.bwrap = bwrap;
  return result;
}
