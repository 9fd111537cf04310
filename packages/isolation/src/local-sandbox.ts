/**
 * One sandbox of the local driver: a bubblewrap namespace holder, its
 * overlay root filesystem and its cgroup. Commands join it through the
 * agentbox-enter helper, which places them in a child cgroup and all of the
 * holder's namespaces before they run.
 */
import { readFileSync } from "node:fs";
import type { SandboxLimits } from "@agentbox/protocol";
import type { CgroupDriver, CgroupGroup, SandboxCgroup } from "./cgroups.js";
import { SANDBOX_GID, SANDBOX_HOME, SANDBOX_UID, SANDBOX_USER } from "./host-image.js";
import { ensureOwnedDir, overlaySpec, unmountRootfs, type RootfsPaths } from "./overlay-rootfs.js";
import type { ListenHandle, SpawnedProcess, Spawner } from "./spawner.js";
import { ENTER_HELPER, FS_HELPER, NET_HELPER } from "./system-tools.js";
import { startOpenNetwork, type OpenNetwork } from "./open-network.js";

const HOLD_PATH = "/dev/.agentbox-hold";
/** The loopback port inside the sandbox that leads to its egress proxy (HTTP and SOCKS5). */
export const PROXY_PORT = 3128;

/**
 * How a sandbox reaches out: not at all; through the egress proxy, which `serve`s the listener
 * made on the sandbox's loopback port PROXY_PORT; or through user-mode networking.
 */
export type SandboxNetwork =
  | { mode: "none" }
  | { mode: "allowlist"; serve: (listener: ListenHandle) => Promise<void> }
  | { mode: "open"; resolvConf: string };

export interface LocalSandboxOptions {
  id: string;
  /** Its layers (prepared by prepareLayers) and the mount point of its root filesystem. */
  rootfs: RootfsPaths;
  /** Read-only layers under the sandbox's own (top first), and host directories bound read-only over them. */
  root: { lowers: string[]; binds: Array<[string, string]> };
  /** Volumes: host directory → path inside. */
  mounts?: Array<{ source: string; path: string; readOnly: boolean }>;
  /** Who commands run as inside (default: `user`, uid 1000). */
  user?: SandboxUser;
  /** Runs once the root filesystem is mounted (on the host, at `rootfs.merged`), before any command. */
  prepareRoot?: (merged: string) => Promise<void>;
  limits: SandboxLimits;
  workdir: string;
  /** Unprivileged host uid (and gid) that the sandbox user maps to. */
  hostUid: number;
  /** cgroup path (relative to each hierarchy's root). */
  cgroupPath: string;
  cgroups: CgroupDriver;
  bwrap: string;
  spawner: Spawner;
  /** Default: none (only the sandbox's own loopback). */
  network?: SandboxNetwork;
}

export interface SandboxUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export const DEFAULT_USER: SandboxUser = { name: SANDBOX_USER, uid: SANDBOX_UID, gid: SANDBOX_GID, home: SANDBOX_HOME };

/** Base environment of every command; the template's and the call's env are layered on top. */
export const BASE_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: SANDBOX_HOME,
  USER: SANDBOX_USER,
  LOGNAME: SANDBOX_USER,
  LANG: "C.UTF-8",
  HOSTNAME: "sandbox",
};

const MAX_SPARE_GROUPS = 8;

export interface SpawnInSandbox {
  argv: string[];
  /** Working directory inside the sandbox. */
  cwd: string;
  /** The whole environment of the process (nothing of the runtime's is added). */
  env: Record<string, string>;
  /** Run this host file (a helper of ours) with `argv` instead of a program of the sandbox's. */
  exec?: string;
}

export class LocalSandbox {
  readonly id: string;
  readonly cgroup: SandboxCgroup;
  private holder: SpawnedProcess | undefined;
  private initPid = 0;
  private readonly rootfs: RootfsPaths;
  private exited: Promise<void> = Promise.resolve();
  /** Empty command groups kept for reuse: creating a cgroup costs more than the command itself. */
  private readonly spareGroups: CgroupGroup[] = [];
  private groupCounter = 0;

  /** Who commands run as inside. */
  readonly user: SandboxUser;
  /** BASE_ENV for this sandbox's user. */
  readonly baseEnv: Readonly<Record<string, string>>;

  private constructor(private readonly opts: LocalSandboxOptions) {
    this.id = opts.id;
    this.user = opts.user ?? DEFAULT_USER;
    this.baseEnv = { ...BASE_ENV, HOME: this.user.home, USER: this.user.name, LOGNAME: this.user.name, ...proxyEnv(opts.network) };
    this.rootfs = opts.rootfs;
    this.cgroup = opts.cgroups.create(opts.cgroupPath, opts.limits);
  }

  /** Mount the filesystem, start the holder and wait until its namespaces exist. */
  static async start(opts: LocalSandboxOptions): Promise<LocalSandbox> {
    const sandbox = new LocalSandbox(opts);
    try {
      await sandbox.boot();
      return sandbox;
    } catch (err) {
      await sandbox.destroy();
      throw err;
    }
  }

  get limitsOff(): string[] {
    return [...this.cgroup.limitsOff];
  }

  /** True from a successful boot until the holder exits. */
  alive = false;

  private async boot(): Promise<void> {
    const { opts } = this;
    ensureOwnedDir(this.rootfs, opts.hostUid, opts.workdir);
    ensureOwnedDir(this.rootfs, opts.hostUid, this.user.home);
    // bubblewrap cannot create mount points in directories the sandbox user does not own.
    for (const m of opts.mounts ?? []) ensureOwnedDir(this.rootfs, opts.hostUid, m.path);
    const overlay = overlaySpec(this.rootfs, opts.root.lowers);
    const holderGroup = this.cgroup.child("holder");
    const holder = await opts.spawner.spawn({
      uid: opts.hostUid,
      gid: opts.hostUid,
      overlay,
      cgroupProcs: holderGroup.procsFiles,
      infoPipe: true,
      noStdin: true,
      env: {},
      argv: [
        opts.bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
        "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--uid", String(this.user.uid), "--gid", String(this.user.gid), "--hostname", "sandbox",
        "--info-fd", "4",
        "--bind-fd", "3", "/",
        ...opts.root.binds.flatMap(([src, dest]) => ["--ro-bind", src, dest]),
        "--proc", "/proc", "--dev", "/dev",
        "--size", String(opts.limits.storageBytes), "--perms", "1777", "--tmpfs", "/tmp",
        ...(opts.mounts ?? []).flatMap((m) => [m.readOnly ? "--ro-bind" : "--bind", m.source, m.path]),
        ...networkBinds(opts.network),
        // The holder: the host's `sleep` under the host image; in other images (which may have no
        // `sleep`) our static files helper, bound read-only into /dev (bubblewrap's own tmpfs).
        ...(opts.root.binds.length > 0 ? [] : ["--ro-bind", FS_HELPER, HOLD_PATH]),
        "--chdir", opts.workdir,
        "--", ...(opts.root.binds.length > 0 ? ["sleep", "infinity"] : [HOLD_PATH, "hold"]),
      ],
    });
    this.holder = holder;
    let running = true;
    holder.exited.then(() => (running = false));
    this.exited = holder.exited.then(() => undefined);
    let stderr = "";
    holder.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    holder.stdout.resume();
    const info = holder.info!;
    this.initPid = await new Promise<number>((resolve, reject) => {
      let text = "";
      info.on("data", (d: Buffer) => {
        text += d.toString();
        const m = /"child-pid":\s*(\d+)/.exec(text);
        if (m) resolve(Number(m[1]));
      });
      holder.exited.then((st) =>
        reject(new Error(`sandbox holder exited (${st.signal ?? st.code}) before it was ready: ${stderr.trim() || "no message"}`)),
      );
    });
    // bubblewrap goes on writing (namespace ids) after the pid and then closes the
    // pipe: closing our end early would kill it with SIGPIPE.
    info.resume();
    // info-fd reports pid 1 as soon as it exists; joining is safe only once its setup
    // (mounts, pivot_root) is done, which is when it has forked the holder command.
    // That last stretch overlaps with answering the create: every command waits for it.
    // The overlay was mounted before bubblewrap ran: finish our setup of it before any command.
    if (opts.prepareRoot) await opts.prepareRoot(this.rootfs.merged);
    // Open networking attaches to the namespace as soon as it exists, in parallel with the rest.
    const openNet = opts.network?.mode === "open" ? startOpenNetwork(this.initPid) : undefined;
    this.ready = (async () => {
      for (let i = 0; !hasChildren(this.initPid); i++) {
        if (!running) throw new Error(`sandbox holder exited: ${stderr.trim()}`);
        if (i > 5000) throw new Error("sandbox holder did not become ready within 5 s");
        await new Promise((r) => setTimeout(r, 1));
      }
      if (openNet) this.openNet = await openNet;
      // The proxy's port on the sandbox's own loopback: a client reaches the proxy in one hop,
      // and neither a process of the sandbox nor a host file mounted in carries the way out.
      if (opts.network?.mode === "allowlist") await opts.network.serve(await opts.spawner.listenIn(this.initPid, PROXY_PORT));
    })();
    this.ready.catch(() => undefined);
    // The first command's cgroup, made while bubblewrap works.
    this.spareGroups.push(this.cgroup.child(`cmd-${++this.groupCounter}`));
    this.alive = true;
    holder.exited.then(() => (this.alive = false));
  }

  /** Settles once the namespaces are fully set up (rejects if the holder died first). */
  private ready: Promise<void> = Promise.resolve();
  private openNet: OpenNetwork | undefined;

  /** Wait until the sandbox can run commands (its network included); rejects if it failed to start. */
  whenReady(): Promise<void> {
    return this.ready;
  }

  /**
   * Start a helper of ours (`exec`, a host file) inside the sandbox in a fresh group, for the
   * runtime's own plumbing (exposed ports). The group is removed when the process exits.
   */
  async spawnHelper(exec: string, argv: string[]): Promise<SpawnedProcess> {
    await this.ready;
    const group = this.acquireGroup();
    try {
      const proc = await this.spawn({ argv, cwd: "/", env: {}, exec }, group);
      void proc.exited.then(() => this.releaseGroup(group));
      return proc;
    } catch (err) {
      await this.releaseGroup(group);
      throw err;
    }
  }

  /** Start `spec.argv` inside the sandbox, with its whole tree in `group`. */
  async spawn(spec: SpawnInSandbox, group: CgroupGroup): Promise<SpawnedProcess> {
    await this.ready;
    return this.opts.spawner.spawn({
      argv: spec.argv,
      env: spec.env,
      cwd: spec.cwd,
      uid: this.user.uid,
      gid: this.user.gid,
      target: this.initPid,
      cgroupProcs: group.procsFiles,
      ...(spec.exec !== undefined ? { exec: spec.exec } : {}),
    });
  }

  /**
   * The helper command line that enters the sandbox and runs `spec.argv`, for callers
   * that must start the process themselves (a PTY library). With `tty`, the caller's
   * controlling terminal (stdin) becomes the program's, in its own session.
   */
  async enterCommand(spec: SpawnInSandbox, group: CgroupGroup, opts: { tty?: boolean } = {}): Promise<{ file: string; args: string[]; env: Record<string, string> }> {
    await this.ready;
    const args = [
      ...group.procsFiles.flatMap((f) => ["--cgroup", f]),
      "--uid", String(this.user.uid), "--gid", String(this.user.gid),
      "--target", String(this.initPid), "--cwd", spec.cwd,
      ...(opts.tty ? ["--tty"] : []),
      "--", ...spec.argv,
    ];
    return { file: ENTER_HELPER, args, env: spec.env };
  }

  /**
   * A fresh (empty) child cgroup for one command and everything it starts. It is a lease: once
   * released, its `kill` and `pids` reach nothing, because the group may serve another command
   * by then (a late timeout or kill of the first must not touch the second).
   */
  acquireGroup(): CgroupGroup {
    return new GroupLease(this.spareGroups.pop() ?? this.cgroup.child(`cmd-${++this.groupCounter}`));
  }

  /** Kill whatever is left in a command's group, then keep the empty group for the next command. Once per lease. */
  async releaseGroup(group: CgroupGroup): Promise<void> {
    if (!(group instanceof GroupLease)) throw new Error("releaseGroup takes a group from acquireGroup");
    if (group.released) return;
    group.released = true;
    await group.group.kill();
    if (this.spareGroups.length < MAX_SPARE_GROUPS && this.alive) this.spareGroups.push(group.group);
    else group.group.remove();
  }

  /** Kill every process of the sandbox and remove its cgroup and layers. */
  async destroy(): Promise<void> {
    this.alive = false;
    await this.cgroup.kill();
    this.holder?.kill("SIGKILL");
    this.openNet?.stop();
    await this.exited;
    this.cgroup.remove();
    await unmountRootfs(this.rootfs);
  }
}

/** Proxy variables for an allowlist sandbox: most tools (curl, pip, git, npm) follow them. */
function proxyEnv(network: SandboxNetwork | undefined): Record<string, string> {
  if (network?.mode !== "allowlist") return {};
  const http = `http://127.0.0.1:${PROXY_PORT}`;
  const socks = `socks5h://127.0.0.1:${PROXY_PORT}`;
  const noProxy = "localhost,127.0.0.1,::1";
  return {
    HTTP_PROXY: http, HTTPS_PROXY: http, ALL_PROXY: socks, NO_PROXY: noProxy,
    http_proxy: http, https_proxy: http, all_proxy: socks, no_proxy: noProxy,
  };
}

function networkBinds(network: SandboxNetwork | undefined): string[] {
  if (network?.mode === "open") return ["--ro-bind", network.resolvConf, "/etc/resolv.conf"];
  return [];
}

function hasChildren(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().length > 0;
  } catch {
    return false;
  }
}

/** One command's use of a sandbox's child cgroup (see acquireGroup). */
export class GroupLease implements CgroupGroup {
  released = false;

  constructor(readonly group: CgroupGroup) {}

  get procsFiles(): string[] {
    return this.group.procsFiles;
  }

  kill(): Promise<void> {
    return this.released ? Promise.resolve() : this.group.kill();
  }

  remove(): void {
    if (!this.released) this.group.remove();
  }

  pids(): number[] {
    return this.released ? [] : this.group.pids();
  }

  oomKills(): number {
    return this.group.oomKills();
  }
}
