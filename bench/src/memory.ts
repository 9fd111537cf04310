/** Memory readings from /proc and cgroupfs. */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Proportional set size of a process in bytes (shared pages split among sharers). */
export function pss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function rss(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** All descendants of `pid`. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    let children: string;
    try {
      children = readFileSync(`/proc/${p}/task/${p}/children`, "utf8").trim();
    } catch {
      return;
    }
    for (const c of children.split(/\s+/).filter(Boolean).map(Number)) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** Pid of the runtime process serving `dataDir`. */
export function findRuntimePid(dataDir: string): number | undefined {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (cmd.some((a) => a.endsWith("runtime/dist/src/main.js")) && cmd.includes(dataDir)) return Number(name);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/** Memory charged to each sandbox cgroup (v1 memory.usage_in_bytes or v2 memory.current). */
export function sandboxCgroupMemory(ids: string[]): number {
  let total = 0;
  for (const id of ids) {
    for (const dir of findCgroupDirs(id)) {
      for (const file of ["memory.usage_in_bytes", "memory.current"]) {
        try {
          total += Number(readFileSync(join(dir, file), "utf8"));
          break;
        } catch {
          /* other version */
        }
      }
    }
  }
  return total;
}

const cgroupCache = new Map<string, string[]>();
function findCgroupDirs(id: string): string[] {
  if (cgroupCache.size === 0) {
    for (const root of ["/sys/fs/cgroup/memory/agentbox", "/sys/fs/cgroup/agentbox"]) {
      let instances: string[] = [];
      try {
        instances = readdirSync(root);
      } catch {
        continue;
      }
      for (const inst of instances) {
        let entries: string[] = [];
        try {
          entries = readdirSync(join(root, inst));
        } catch {
          continue;
        }
        for (const e of entries) cgroupCache.set(e, [...(cgroupCache.get(e) ?? []), join(root, inst, e)]);
      }
    }
  }
  return cgroupCache.get(id) ?? [];
}
