/**
 * cgroup limits for sandboxes, on cgroup v1 (one hierarchy per controller)
 * and v2 (one unified hierarchy). Each sandbox gets a group; inside it the
 * namespace holder and every command get a child group of their own, so a
 * command's whole tree (even processes that left its session) can be found
 * and killed, while the limits hold for the sandbox as a whole.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SandboxLimits } from "@agentbox/protocol";

export type LimitName = "memory" | "cpu" | "pids";

export interface CgroupGroup {
  /** `cgroup.procs` files a new process writes its pid to before it runs anything. */
  readonly procsFiles: string[];
  /** Kill every process in this group and its children; resolves once it is empty. */
  kill(): Promise<void>;
  /** Remove the (empty) group. */
  remove(): void;
  pids(): number[];
  /** How many processes of this group the kernel's OOM killer has killed. */
  oomKills(): number;
}

export interface SandboxCgroup extends CgroupGroup {
  /** Limits the host could not apply (reported on the sandbox). */
  readonly limitsOff: LimitName[];
  child(name: string): CgroupGroup;
  memoryCurrent(): number;
}

export interface CgroupDriver {
  readonly kind: "v1" | "v2" | "none";
  create(path: string, limits: SandboxLimits): SandboxCgroup;
  /** An existing group (of an earlier runtime), without touching its limits: to kill and remove it. */
  open(path: string): CgroupGroup;
  /** Groups of an earlier runtime under this prefix, for clean-up after a crash. */
  list(prefix: string): string[];
}

const CPU_PERIOD_US = 100_000;

function readInt(file: string, key?: string): number {
  try {
    const text = readFileSync(file, "utf8");
    if (key === undefined) return Number.parseInt(text, 10) || 0;
    const m = new RegExp(`^${key} (\\d+)$`, "m").exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function readPids(dir: string): number[] {
  const out: number[] = [];
  const walk = (d: string): void => {
    try {
      for (const line of readFileSync(join(d, "cgroup.procs"), "utf8").split("\n")) if (line) out.push(Number(line));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      /* group vanished */
    }
  };
  walk(dir);
  return out;
}

function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  try {
    rmdirSync(dir);
  } catch {
    /* still busy: the next clean-up retries */
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

/** Kill until empty. The freeze (when available) stops a fork bomb from racing the loop. */
async function killGroup(pidsOf: () => number[], freeze?: (on: boolean) => void): Promise<void> {
  for (let round = 0; round < 200; round++) {
    const pids = pidsOf();
    if (pids.length === 0) return;
    freeze?.(true);
    killPids(pids);
    freeze?.(false);
    await sleep(round < 10 ? 2 : 20);
  }
}

class V1Driver implements CgroupDriver {
  readonly kind = "v1" as const;
  constructor(private readonly mounts: Record<"memory" | "pids" | "cpu" | "freezer", string>) {}

  create(path: string, limits: SandboxLimits): SandboxCgroup {
    const m = this.mounts;
    const dirs = {
      memory: join(m.memory, path),
      pids: join(m.pids, path),
      cpu: join(m.cpu, path),
      freezer: join(m.freezer, path),
    };
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
    writeFileSync(join(dirs.memory, "memory.limit_in_bytes"), String(limits.memoryBytes));
    // Without swap accounting this file is absent; the memory limit still holds.
    try {
      writeFileSync(join(dirs.memory, "memory.memsw.limit_in_bytes"), String(limits.memoryBytes));
    } catch {
      /* no swap accounting */
    }
    writeFileSync(join(dirs.pids, "pids.max"), String(limits.pids));
    writeFileSync(join(dirs.cpu, "cpu.cfs_period_us"), String(CPU_PERIOD_US));
    writeFileSync(join(dirs.cpu, "cpu.cfs_quota_us"), String(Math.max(1000, Math.round(limits.cpu * CPU_PERIOD_US))));
    return this.group(dirs, true) as SandboxCgroup;
  }

  open(path: string): CgroupGroup {
    const m = this.mounts;
    return this.group({ memory: join(m.memory, path), pids: join(m.pids, path), cpu: join(m.cpu, path), freezer: join(m.freezer, path) }, false);
  }

  private group(dirs: Record<"memory" | "pids" | "cpu" | "freezer", string>, top: boolean): CgroupGroup | SandboxCgroup {
    const freeze = (on: boolean): void => {
      try {
        writeFileSync(join(dirs.freezer, "freezer.state"), on ? "FROZEN" : "THAWED");
      } catch {
        /* group gone */
      }
    };
    const base: CgroupGroup = {
      procsFiles: Object.values(dirs).map((d) => join(d, "cgroup.procs")),
      pids: () => readPids(dirs.freezer),
      kill: () => killGroup(() => readPids(dirs.freezer), freeze),
      remove: () => Object.values(dirs).forEach(removeTree),
      oomKills: () => readInt(join(dirs.memory, "memory.oom_control"), "oom_kill"),
    };
    if (!top) return base;
    return {
      ...base,
      limitsOff: [],
      child: (name: string) => {
        const sub = {
          memory: join(dirs.memory, name),
          pids: join(dirs.pids, name),
          cpu: join(dirs.cpu, name),
          freezer: join(dirs.freezer, name),
        };
        for (const d of Object.values(sub)) mkdirSync(d, { recursive: true });
        return this.group(sub, false);
      },
      memoryCurrent: () => readInt(join(dirs.memory, "memory.usage_in_bytes")),
    };
  }

  list(prefix: string): string[] {
    const dir = join(this.mounts.freezer, prefix);
    if (!existsSync(dir)) return [];
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(prefix, e.name));
  }
}

class V2Driver implements CgroupDriver {
  readonly kind = "v2" as const;
  constructor(private readonly root: string) {}

  create(path: string, limits: SandboxLimits): SandboxCgroup {
    const dir = join(this.root, path);
    // Controllers must be enabled in every ancestor's subtree_control.
    let cur = this.root;
    for (const part of path.split("/")) {
      try {
        writeFileSync(join(cur, "cgroup.subtree_control"), "+memory +pids +cpu");
      } catch {
        /* some controller unavailable; reported through limitsOff below */
      }
      cur = join(cur, part);
      mkdirSync(cur, { recursive: true });
    }
    const limitsOff: LimitName[] = [];
    const set = (file: string, value: string, limit: LimitName) => {
      try {
        writeFileSync(join(dir, file), value);
      } catch {
        limitsOff.push(limit);
      }
    };
    set("memory.max", String(limits.memoryBytes), "memory");
    set("memory.swap.max", "0", "memory");
    set("pids.max", String(limits.pids), "pids");
    set("cpu.max", `${Math.max(1000, Math.round(limits.cpu * CPU_PERIOD_US))} ${CPU_PERIOD_US}`, "cpu");
    try {
      writeFileSync(join(dir, "cgroup.subtree_control"), "+memory +pids +cpu");
    } catch {
      /* as above */
    }
    const top = this.group(dir);
    return {
      ...top,
      limitsOff: [...new Set(limitsOff)],
      child: (name: string) => {
        mkdirSync(join(dir, name), { recursive: true });
        return this.group(join(dir, name));
      },
      memoryCurrent: () => readInt(join(dir, "memory.current")),
    };
  }

  open(path: string): CgroupGroup {
    return this.group(join(this.root, path));
  }

  private group(dir: string): CgroupGroup {
    return {
      procsFiles: [join(dir, "cgroup.procs")],
      pids: () => readPids(dir),
      kill: async () => {
        try {
          writeFileSync(join(dir, "cgroup.kill"), "1");
        } catch {
          /* kernel < 5.14: fall back to the loop */
        }
        await killGroup(() => readPids(dir), (on) => {
          try {
            writeFileSync(join(dir, "cgroup.freeze"), on ? "1" : "0");
          } catch {
            /* gone */
          }
        });
      },
      remove: () => removeTree(dir),
      oomKills: () => readInt(join(dir, "memory.events"), "oom_kill"),
    };
  }

  list(prefix: string): string[] {
    const dir = join(this.root, prefix);
    if (!existsSync(dir)) return [];
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(prefix, e.name));
  }
}

/** No usable cgroups (not root, no delegation): commands still run, limits are reported off. */
class NoCgroups implements CgroupDriver {
  readonly kind = "none" as const;
  create(): SandboxCgroup {
    const group: CgroupGroup = { procsFiles: [], pids: () => [], kill: async () => {}, remove: () => {}, oomKills: () => 0 };
    return { ...group, limitsOff: ["memory", "cpu", "pids"], child: () => group, memoryCurrent: () => 0 };
  }
  open(): CgroupGroup {
    return this.create().child("");
  }
  list(): string[] {
    return [];
  }
}

function canWrite(dir: string): boolean {
  const probe = join(dir, `agentbox-probe-${process.pid}`);
  try {
    mkdirSync(probe);
    rmdirSync(probe);
    return true;
  } catch {
    return false;
  }
}

/** Pick the driver this host supports. `root` is overridable for tests. */
export function detectCgroups(root = "/sys/fs/cgroup"): CgroupDriver {
  const v1 = {
    memory: join(root, "memory"),
    pids: join(root, "pids"),
    cpu: join(root, "cpu"),
    freezer: join(root, "freezer"),
  };
  const v1Usable =
    existsSync(join(v1.memory, "memory.limit_in_bytes")) &&
    Object.values(v1).every((d) => existsSync(join(d, "cgroup.procs")) && canWrite(d));
  if (v1Usable) return new V1Driver(v1);
  if (existsSync(join(root, "cgroup.controllers"))) {
    const controllers = readFileSync(join(root, "cgroup.controllers"), "utf8");
    if (controllers.includes("memory") && canWrite(root)) return new V2Driver(root);
  }
  return new NoCgroups();
}

export { V2Driver as CgroupV2Driver };
