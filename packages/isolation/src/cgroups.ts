/**
 * cgroup limits for sandboxes, on cgroup v1 (one hierarchy per controller)
 * and v2 (one unified hierarchy). Each sandbox gets a group; inside it the
 * namespace holder and every command get a child group of their own, so a
 * command's whole tree (even processes that left its session) can be found
 * and killed, while the limits hold for the sandbox as a whole.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AgentboxError, type SandboxLimits } from "@agentbox/protocol";

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
  /** Freeze every process of the group (and its children); resolves once the kernel reports it frozen. */
  freeze(): Promise<void>;
  /** Thaw it; resolves once thawed. */
  thaw(): Promise<void>;
  /** Whether it is frozen now. */
  frozen(): boolean;
  /**
   * Live use: memory in bytes, CPU time in seconds (all of the group's processes, ever), and how
   * many processes are in it now. Processes are counted from cgroup.procs, not pids.current: that
   * counts threads too, and the dead until their parent (often init, late) reaps them.
   */
  usage(): CgroupUsage;
}

export interface CgroupUsage {
  memoryBytes: number;
  cpuSeconds: number;
  processes: number;
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

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    return "";
  }
}

/** How long a freeze may take before it is given up (a process stuck in uninterruptible sleep never freezes). */
const FREEZE_TIMEOUT_MS = 5000;

/**
 * Wait until `done()` holds. The kernel usually settles within a millisecond, so check a few
 * times at once, then between turns of the event loop, and only then with short sleeps.
 * `abandoned()` ends the wait early (e.g. the group was thawed meanwhile).
 */
async function settle(done: () => boolean, what: string, abandoned: () => boolean = () => false): Promise<void> {
  for (let i = 0; i < 20; i++) if (done()) return;
  const start = Date.now();
  for (let i = 0; ; i++) {
    if (done()) return;
    if (abandoned()) throw new AgentboxError("CONFLICT", `the group was thawed while ${what}`);
    if (Date.now() - start > FREEZE_TIMEOUT_MS) throw new AgentboxError("TIMEOUT", `${what} took over ${FREEZE_TIMEOUT_MS} ms`);
    await (i < 50 ? new Promise((r) => setImmediate(r)) : sleep(i < 150 ? 1 : 10));
  }
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

/**
 * A group's kill, with one loop at a time: a second call joins the loop in flight. So once any
 * call has resolved, no loop of an earlier call is left to wake up and kill what a command
 * given the (reused) group meanwhile has started.
 */
function oneKillAtATime(kill: () => Promise<void>): () => Promise<void> {
  let inFlight: Promise<void> | undefined;
  return () => (inFlight ??= kill().finally(() => (inFlight = undefined)));
}

/**
 * Kill until empty. The freeze (when available) stops a fork bomb from racing the loop; the
 * thaw after it lets the killed die (a frozen process dies only once thawed) and also leaves a
 * paused group thawed, so killing a paused sandbox works.
 */
async function killGroup(pidsOf: () => number[], freeze?: (on: boolean) => void): Promise<void> {
  try {
    for (let round = 0; round < 200; round++) {
      const pids = pidsOf();
      if (pids.length === 0) return;
      freeze?.(true);
      killPids(pids);
      freeze?.(false);
      await sleep(round < 10 ? 2 : 20);
    }
  } finally {
    freeze?.(false);
  }
}

/**
 * Freeze and wait until the kernel reports it. A process throttled by the CPU limit stops only
 * once it runs again (up to a CPU period, 100 ms, later), so unless the group froze at once its
 * CPU limit is lifted until it has: a frozen group uses no CPU anyway. A freeze that fails is undone.
 */
async function freezeGroup(g: {
  request(on: boolean): void;
  isFrozen(): boolean;
  thawedMeanwhile(): boolean;
  cpuLimitFile: string;
  unlimited: string;
}): Promise<void> {
  g.request(true);
  for (let i = 0; i < 20; i++) if (g.isFrozen()) return;
  const limit = readText(g.cpuLimitFile);
  const lift = limit !== "" && !limit.startsWith(g.unlimited);
  try {
    if (lift) writeFileSync(g.cpuLimitFile, g.unlimited);
    await settle(() => g.isFrozen(), "freezing", () => g.thawedMeanwhile());
  } catch (err) {
    try {
      g.request(false);
    } catch {
      /* gone */
    }
    throw err;
  } finally {
    if (lift) {
      try {
        writeFileSync(g.cpuLimitFile, limit);
      } catch {
        /* group gone */
      }
    }
  }
}

const nopause = (): never => {
  throw new AgentboxError("RUNTIME_UNAVAILABLE", "pausing a sandbox needs cgroups (a freezer), which this host does not offer to the runtime");
};

type V1Controller = "memory" | "pids" | "cpu" | "freezer";
/** Mount points per controller; `cpuacct` only where it is a hierarchy of its own (not joined with `cpu`). */
type V1Mounts = Record<V1Controller, string> & { cpuacct?: string };

class V1Driver implements CgroupDriver {
  readonly kind = "v1" as const;
  constructor(private readonly mounts: V1Mounts) {}

  private dirsOf(path: string): V1Mounts {
    const dirs: V1Mounts = {
      memory: join(this.mounts.memory, path),
      pids: join(this.mounts.pids, path),
      cpu: join(this.mounts.cpu, path),
      freezer: join(this.mounts.freezer, path),
    };
    if (this.mounts.cpuacct !== undefined) dirs.cpuacct = join(this.mounts.cpuacct, path);
    return dirs;
  }

  create(path: string, limits: SandboxLimits): SandboxCgroup {
    const dirs = this.dirsOf(path);
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
    return this.group(this.dirsOf(path), false);
  }

  private group(dirs: V1Mounts, top: boolean): CgroupGroup | SandboxCgroup {
    const stateFile = join(dirs.freezer, "freezer.state");
    const freeze = (on: boolean): void => {
      try {
        writeFileSync(stateFile, on ? "FROZEN" : "THAWED");
      } catch {
        /* group gone */
      }
    };
    const base: CgroupGroup = {
      procsFiles: Object.values(dirs).map((d) => join(d, "cgroup.procs")),
      pids: () => readPids(dirs.freezer),
      kill: oneKillAtATime(async () => {
        // Inside a paused sandbox the thaw of this group does not reach its processes (the
        // ancestor's freeze holds them): they are killed now and die when the sandbox resumes.
        if (readInt(join(dirs.freezer, "freezer.parent_freezing")) === 1) return killPids(readPids(dirs.freezer));
        await killGroup(() => readPids(dirs.freezer), freeze);
      }),
      remove: () => Object.values(dirs).forEach(removeTree),
      oomKills: () => readInt(join(dirs.memory, "memory.oom_control"), "oom_kill"),
    };
    if (!top) return base;
    const cpuacct = dirs.cpuacct ?? dirs.cpu;
    return {
      ...base,
      limitsOff: [],
      child: (name: string) => {
        const sub = Object.fromEntries(Object.entries(dirs).map(([k, d]) => [k, join(d, name)])) as V1Mounts;
        for (const d of Object.values(sub)) mkdirSync(d, { recursive: true });
        return this.group(sub, false);
      },
      memoryCurrent: () => readInt(join(dirs.memory, "memory.usage_in_bytes")),
      // Children follow the group's state hierarchically; it reads FREEZING until the last one stopped.
      freeze: () =>
        freezeGroup({
          request: (on) => writeFileSync(stateFile, on ? "FROZEN" : "THAWED"),
          isFrozen: () => readText(stateFile) === "FROZEN",
          thawedMeanwhile: () => readText(stateFile) === "THAWED",
          cpuLimitFile: join(dirs.cpu, "cpu.cfs_quota_us"),
          unlimited: "-1",
        }),
      thaw: async () => {
        writeFileSync(stateFile, "THAWED");
        await settle(() => readText(stateFile) === "THAWED", "thawing");
      },
      frozen: () => readText(stateFile) === "FROZEN",
      usage: () => ({
        memoryBytes: readInt(join(dirs.memory, "memory.usage_in_bytes")),
        cpuSeconds: readInt(join(cpuacct, "cpuacct.usage")) / 1e9,
        processes: readPids(dirs.freezer).length,
      }),
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
    const events = join(dir, "cgroup.events");
    const isFrozen = () => readInt(events, "frozen") === 1;
    const request = (on: boolean) => writeFileSync(join(dir, "cgroup.freeze"), on ? "1" : "0");
    return {
      ...top,
      limitsOff: [...new Set(limitsOff)],
      child: (name: string) => {
        mkdirSync(join(dir, name), { recursive: true });
        return this.group(join(dir, name));
      },
      memoryCurrent: () => readInt(join(dir, "memory.current")),
      // The kernel sets `frozen 1` in cgroup.events once every process (descendants too) stopped.
      freeze: () =>
        freezeGroup({
          request,
          isFrozen,
          thawedMeanwhile: () => readText(join(dir, "cgroup.freeze")) === "0",
          cpuLimitFile: join(dir, "cpu.max"),
          unlimited: "max",
        }),
      thaw: async () => {
        request(false);
        await settle(() => !isFrozen(), "thawing");
      },
      frozen: isFrozen,
      usage: () => ({
        memoryBytes: readInt(join(dir, "memory.current")),
        cpuSeconds: readInt(join(dir, "cpu.stat"), "usage_usec") / 1e6,
        processes: readPids(dir).length,
      }),
    };
  }

  open(path: string): CgroupGroup {
    return this.group(join(this.root, path));
  }

  private group(dir: string): CgroupGroup {
    return {
      procsFiles: [join(dir, "cgroup.procs")],
      pids: () => readPids(dir),
      kill: oneKillAtATime(async () => {
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
      }),
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
    return {
      ...group,
      limitsOff: ["memory", "cpu", "pids"],
      child: () => group,
      memoryCurrent: () => 0,
      freeze: async () => nopause(),
      thaw: async () => nopause(),
      frozen: () => false,
      usage: () => ({ memoryBytes: 0, cpuSeconds: 0, processes: 0 }),
    };
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
  const v1: V1Mounts = {
    memory: join(root, "memory"),
    pids: join(root, "pids"),
    cpu: join(root, "cpu"),
    freezer: join(root, "freezer"),
  };
  const v1Usable =
    existsSync(join(v1.memory, "memory.limit_in_bytes")) &&
    Object.values(v1).every((d) => existsSync(join(d, "cgroup.procs")) && canWrite(d));
  if (v1Usable) {
    // CPU time is counted by cpuacct: mounted with cpu on most distributions (`cpu,cpuacct`), on its own on some.
    const cpuacct = join(root, "cpuacct");
    if (!existsSync(join(v1.cpu, "cpuacct.usage")) && existsSync(join(cpuacct, "cpuacct.usage")) && canWrite(cpuacct)) v1.cpuacct = cpuacct;
    return new V1Driver(v1);
  }
  if (existsSync(join(root, "cgroup.controllers"))) {
    const controllers = readFileSync(join(root, "cgroup.controllers"), "utf8");
    if (controllers.includes("memory") && canWrite(root)) return new V2Driver(root);
  }
  return new NoCgroups();
}

export { V2Driver as CgroupV2Driver };
