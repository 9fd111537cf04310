/**
 * The runtime's process spawner: one `agentbox-enter --serve` process that
 * forks every sandbox holder and every command on request.
 *
 * Why not child_process.spawn: Node forks its whole address space to spawn,
 * so the cost of starting a command grows with the runtime's memory (measured
 * here: 2 ms at 40 MiB, 19 ms at 350 MiB), and the runtime holds every
 * process's output. The spawner is a few hundred KiB and forks in
 * microseconds. The pipes it creates reach us through /proc/<spawner>/fd/N
 * (Node cannot receive file descriptors over a socket). Sockets cannot be opened
 * that way: the one kind we take from it, a listener made inside a sandbox's
 * network namespace, comes over Node's IPC channel, which carries descriptors.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { constants, openSync } from "node:fs";
import { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import { ENTER_HELPER } from "./system-tools.js";

export interface SpawnRequest {
  argv: string[];
  env: Record<string, string>;
  /** Host uid/gid to run as: the sandbox's host uid for a holder, the in-sandbox ids for commands. */
  uid: number;
  gid: number;
  /** Host pid of the sandbox's pid 1: join its namespaces (commands). Absent: a holder. */
  target?: number;
  cwd?: string;
  /** `LOWER:UPPER:WORK:TARGET` to mount and leave open on fd 3 (holders). */
  overlay?: string;
  cgroupProcs: string[];
  /** Give the process a pipe on fd 4 (bubblewrap's --info-fd). */
  infoPipe?: boolean;
  /** stdin from /dev/null instead of a pipe. */
  noStdin?: boolean;
  /** Run this host file (opened before entering) with `argv`, instead of argv[0] looked up inside. */
  exec?: string;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedProcess {
  /** Host pid (for commands: the helper that waits for the process inside the sandbox and forwards signals). */
  pid: number;
  /** For commands: the process's pid inside the sandbox (0 if it failed before it could run). */
  sandboxPid: number;
  stdin: Socket | null;
  stdout: Socket;
  stderr: Socket;
  info: Socket | null;
  exited: Promise<ExitStatus>;
  kill(signal?: NodeJS.Signals): void;
}

interface Pending {
  resolve: (p: SpawnedProcess) => void;
  reject: (e: Error) => void;
  exit?: (s: ExitStatus) => void;
  earlyExit?: ExitStatus;
}

/**
 * Resolves once `stream` (a helper's stdout) has given all its bytes: the exit of a process can
 * be reported before the last of its output is read. At most `capMs` after the call.
 */
export function outputEnded(stream: Socket, capMs = 1000): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stream.off("end", done);
      stream.off("close", done);
      resolve();
    };
    const timer = setTimeout(done, capMs);
    stream.once("end", done);
    stream.once("close", done);
  });
}

const SIGNALS = Object.fromEntries(Object.entries(osConstants.signals).map(([k, v]) => [v, k])) as Record<number, NodeJS.Signals>;

function decodeStatus(raw: number): ExitStatus {
  const sig = raw & 0x7f;
  if (sig === 0) return { code: (raw >> 8) & 0xff, signal: null };
  return { code: null, signal: SIGNALS[sig] ?? (`SIG${sig}` as NodeJS.Signals) };
}

/** A listening socket's handle as Node received it: give it to `net.Server.listen(handle)`. */
export type ListenHandle = object & { close?: () => void };

export class Spawner {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handles = new Map<number, { resolve: (h: ListenHandle) => void; reject: (e: Error) => void }>();
  private buffer: Buffer = Buffer.alloc(0);
  private dead: Error | undefined;

  start(): void {
    const child = spawn(ENTER_HELPER, ["--serve", "--ipc", "3"], { stdio: ["pipe", "pipe", "inherit", "ipc"], env: {} });
    this.child = child;
    child.stdout!.on("data", (chunk: Buffer) => this.receive(chunk));
    child.on("message", (msg: { listenId?: number }, handle?: ListenHandle) => {
      const waiting = this.handles.get(Number(msg?.listenId));
      if (!waiting || !handle) return handle?.close?.();
      this.handles.delete(Number(msg.listenId));
      waiting.resolve(handle);
    });
    // The channel must not keep a process alive that is otherwise done.
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
    child.on("exit", (code, signal) => {
      this.dead = new Error(`the process spawner exited (${signal ?? code})`);
      for (const p of this.pending.values()) p.reject(this.dead);
      for (const l of this.handles.values()) l.reject(this.dead);
      this.pending.clear();
      this.handles.clear();
    });
    child.on("error", (err) => {
      this.dead = err;
    });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  spawn(req: SpawnRequest): Promise<SpawnedProcess> {
    if (!this.child || this.dead) return Promise.reject(this.dead ?? new Error("spawner not started"));
    const id = this.nextId++;
    const fields = ["spawn", `id=${id}`, `uid=${req.uid}`, `gid=${req.gid}`];
    if (req.target !== undefined) fields.push(`target=${req.target}`);
    if (req.cwd !== undefined) fields.push(`cwd=${req.cwd}`);
    if (req.overlay !== undefined) fields.push(`overlay=${req.overlay}`, "root_fd=3");
    if (req.infoPipe) fields.push("info=1");
    if (req.noStdin) fields.push("stdin=null");
    if (req.exec !== undefined) fields.push(`exec=${req.exec}`);
    for (const f of req.cgroupProcs) fields.push(`cgroup=${f}`);
    for (const a of req.argv) fields.push(`argv=${a}`);
    for (const [k, v] of Object.entries(req.env)) fields.push(`env=${k}=${v}`);
    for (const f of fields) if (f.includes("\0")) return Promise.reject(new Error("spawn fields must not contain NUL"));
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send(fields);
    });
  }

  /**
   * Splice two sockets (or pipes) of process `owner` (ours) together in a helper (`exec`:
   * agentbox-net), which the spawner takes with pidfd_getfd. With `peer`, side `peer.side` is a
   * descriptor of the process at the other end of our unix socket `peer.via` (the kernel names
   * that process). Its stdout carries the byte counts at the end.
   */
  relay(owner: number, fdA: number, fdB: number, exec: string, count?: number, peer?: { via: number; side: "a" | "b" }): Promise<SpawnedProcess> {
    if (!this.child || this.dead) return Promise.reject(this.dead ?? new Error("spawner not started"));
    const id = this.nextId++;
    const fields = ["relay", `id=${id}`, `pid=${owner}`, `a=${fdA}`, `b=${fdB}`, `exec=${exec}`];
    if (peer) fields.push(`peer=${peer.via}`, `peerside=${peer.side}`);
    // With a count: only `count` bytes from B to A, then both sockets are ours again.
    if (count !== undefined) fields.push(`count=${Math.floor(count)}`);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send(fields);
    });
  }

  /**
   * A TCP listener on 127.0.0.1:`port` inside the network namespace of process `target` (a
   * sandbox's pid 1), made by the spawner as root and handed to us: serve it with
   * `net.Server.listen(handle)`. Connections made before that wait in its backlog.
   */
  listenIn(target: number, port: number): Promise<ListenHandle> {
    return this.askForHandle("listen", [`target=${target}`, `port=${port}`]);
  }

  /**
   * Descriptor `fd` of the process at the other end of our unix socket `via` (the kernel names
   * that process), which must be a stream socket, handed to us: wrap it with
   * `new net.Socket({ handle })`. Our copy shares the connection with the other process's.
   */
  take(via: number, fd: number): Promise<ListenHandle> {
    return this.askForHandle("take", [`pid=${process.pid}`, `via=${via}`, `fd=${fd}`]);
  }

  /** An op answered on the IPC channel with a descriptor (or "failed" on stdout). */
  private askForHandle(op: string, fields: string[]): Promise<ListenHandle> {
    if (!this.child || this.dead) return Promise.reject(this.dead ?? new Error("spawner not started"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.handles.set(id, { resolve, reject });
      this.send([op, `id=${id}`, ...fields]);
    });
  }

  stop(): void {
    this.child?.stdin?.end();
    this.child?.kill("SIGKILL");
  }

  private send(fields: string[]): void {
    const body = Buffer.from(fields.map((f) => `${f}\0`).join(""), "utf8");
    const head = Buffer.alloc(4);
    head.writeUInt32LE(body.length, 0);
    this.child!.stdin!.write(Buffer.concat([head, body]));
  }

  private receive(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    while (this.buffer.length >= 4) {
      const len = this.buffer.readUInt32LE(0);
      if (this.buffer.length < 4 + len) return;
      const fields = this.buffer.toString("utf8", 4, 4 + len).split("\0").slice(0, -1);
      this.buffer = this.buffer.subarray(4 + len);
      this.handle(fields);
    }
  }

  private handle(fields: string[]): void {
    const [op, ...rest] = fields;
    const kv = Object.fromEntries(rest.map((f) => [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)]));
    const id = Number(kv.id);
    const l = this.handles.get(id);
    if (l && op === "failed") {
      this.handles.delete(id);
      return l.reject(new Error(kv.error ?? "the spawner could not hand over a descriptor"));
    }
    const p = this.pending.get(id);
    if (!p) return;
    if (op === "failed") {
      this.pending.delete(id);
      p.reject(new Error(kv.error ?? "spawn failed"));
    } else if (op === "started") {
      const proc = this.adopt(id, p, kv);
      p.resolve(proc);
    } else if (op === "exit") {
      this.pending.delete(id);
      const status = decodeStatus(Number(kv.status));
      if (p.exit) p.exit(status);
      else p.earlyExit = status;
    }
  }

  private adopt(id: number, p: Pending, kv: Record<string, string>): SpawnedProcess {
    const base = `/proc/${this.child!.pid}/fd/`;
    // O_RDWR for the stdin pipe and O_NONBLOCK for the others: opening a FIFO end
    // must not wait for a peer that may already have exited.
    const open = (fd: string | undefined, flags: number): Socket | null => {
      if (fd === undefined || fd === "-1") return null;
      const mine = openSync(base + fd, flags);
      return new Socket({ fd: mine, readable: flags !== constants.O_RDWR, writable: flags === constants.O_RDWR });
    };
    const stdin = open(kv.stdin, constants.O_RDWR);
    // end() on a pipe cannot shut down its write side (that is a socket call): close
    // the descriptor once everything is written, so the process sees end of input.
    stdin?.once("finish", () => stdin.destroy());
    const stdout = open(kv.stdout, constants.O_RDONLY | constants.O_NONBLOCK)!;
    const stderr = open(kv.stderr, constants.O_RDONLY | constants.O_NONBLOCK)!;
    const info = open(kv.info, constants.O_RDONLY | constants.O_NONBLOCK);
    this.send(["release", `id=${id}`]);
    const pid = Number(kv.pid);
    const exited = new Promise<ExitStatus>((resolve) => {
      if (p.earlyExit) resolve(p.earlyExit);
      else p.exit = resolve;
    });
    return {
      pid,
      sandboxPid: Number(kv.nspid ?? 0),
      stdin,
      stdout,
      stderr,
      info,
      exited,
      kill: (signal: NodeJS.Signals = "SIGKILL") => {
        try {
          process.kill(pid, signal);
        } catch {
          /* already gone */
        }
      },
    };
  }
}
