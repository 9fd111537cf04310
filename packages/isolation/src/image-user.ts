/**
 * Who a sandbox's commands run as: a template's `user` (a name or a uid)
 * looked up in the image's own /etc/passwd. Never root: every sandbox user
 * maps to an unprivileged host uid and keeps no capabilities.
 */
import { lstatSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AgentboxError } from "@agentbox/protocol";
import { SANDBOX_GID, SANDBOX_HOME, SANDBOX_UID, SANDBOX_USER } from "./host-image.js";
import type { SandboxUser } from "./local-sandbox.js";

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The image's /etc/passwd: from the topmost layer that has an entry there. Only a regular
 * file counts; a symlink, whiteout or anything else ends the search (nothing is followed).
 */
function readPasswd(lowersTopFirst: string[]): string | undefined {
  for (const layer of lowersTopFirst) {
    const etc = lstatOrUndefined(join(layer, "etc"));
    if (!etc) continue;
    if (!etc.isDirectory()) return undefined;
    const passwd = lstatOrUndefined(join(layer, "etc", "passwd"));
    if (!passwd) continue;
    if (!passwd.isFile() || passwd.size > 4 * 2 ** 20) return undefined;
    return readFileSync(join(layer, "etc", "passwd"), "utf8");
  }
  return undefined;
}

export function resolveUser(lowersTopFirst: string[], spec: string): SandboxUser {
  const entries = (readPasswd(lowersTopFirst) ?? "")
    .split("\n")
    .map((line) => line.split(":"))
    .filter((f) => f.length >= 7 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!))
    .map((f) => ({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || "/" }));
  const numeric = /^\d+$/.test(spec);
  const found = numeric ? entries.find((e) => e.uid === Number(spec)) : entries.find((e) => e.name === spec);
  let user: SandboxUser;
  if (found) user = found;
  else if (numeric) user = { name: spec, uid: Number(spec), gid: Number(spec), home: "/" };
  // Images without our `user` still get it: it is the default of every template.
  else if (spec === SANDBOX_USER) user = { name: SANDBOX_USER, uid: SANDBOX_UID, gid: SANDBOX_GID, home: SANDBOX_HOME };
  else throw new AgentboxError("INVALID_REQUEST", `user ${spec} is not in the image's /etc/passwd (give a uid, or a user the image has)`, { field: "user" });
  if (user.uid === 0 || user.gid === 0) {
    throw new AgentboxError("INVALID_REQUEST", `user ${spec} is root (uid or gid 0); sandboxes run unprivileged`, { field: "user" });
  }
  if (!user.home.startsWith("/") || user.home.split("/").includes("..")) user.home = "/";
  return user;
}
