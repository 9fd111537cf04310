/**
 * The runtime's side of the runtime protocol: accepts connections on a unix
 * socket, checks the version handshake, validates each request against the
 * method's schema and dispatches it to the sandbox manager.
 */
import { chmodSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import {
  AgentboxError,
  Hello,
  RUNTIME_MAX_REQUEST_FRAME_BYTES,
  RUNTIME_PROTOCOL_VERSION,
  RequestFrame,
  RuntimeMethods,
  TunnelRequest,
  encodeFrame,
  isErrorCode,
  type RuntimeMethod,
  type CreateSessionParams,
  type DecodedFrame,
  type CreateTerminalParams,
  type ExecRequest,
  type StartProcessParams,
  type CreateCodeContextRequest,
  type InstallDependenciesBody,
  type RunCodeRequest,
} from "@agentbox/protocol";
import { socketFd } from "@agentbox/isolation";
import { FramedConnection } from "./connection.js";
import { CodeSessionHost } from "./code-session-host.js";
import type { SandboxManager } from "./sandbox-manager.js";
import type { FsOp } from "./files.js";

export const RUNTIME_VERSION = "0.1.0";

type Handler = (params: never, frame: DecodedFrame, conn: FramedConnection) => Promise<unknown> | unknown;

/** A handler result that travels with raw bytes (see framing.ts). */
export class WithAttachment {
  constructor(
    readonly result: unknown,
    readonly attachment: Buffer | Buffer[],
  ) {}
}
type Ref = { sandboxId: string; processId: string };
type SessionRef = { sandboxId: string; sessionId: string };
type TerminalRef = { sandboxId: string; terminalId: string };
type FsRef = { sandboxId: string; handle: string };
type CodeRef = { sandboxId: string; contextId: string };

export interface RuntimeServerOptions {
  socketPath: string;
  manager: SandboxManager;
  /** Called when a client asks the runtime to shut down; the answer is sent once it resolves. */
  onShutdown: () => Promise<void> | void;
}

export class RuntimeServer {
  private server: Server | undefined;
  private readonly sockets = new Set<import("node:net").Socket>();
  private readonly handlers: Record<RuntimeMethod, Handler>;
  /** Code sessions handed over by the server (code.attach). */
  readonly codeSessions = new CodeSessionHost();

  constructor(private readonly opts: RuntimeServerOptions) {
    const m = opts.manager;
    this.handlers = {
      "runtime.info": () => ({ pid: process.pid, version: RUNTIME_VERSION, cgroup: m.cgroupKind, sandboxes: m.size }),
      "sandbox.create": (p: Parameters<SandboxManager["create"]>[0]) => m.create(p),
      "sandbox.list": () => m.list(),
      "sandbox.delete": async (p: { id: string }) => ({ deleted: await m.delete(p.id) }),
      "sandbox.exec": (p: Parameters<SandboxManager["exec"]>[0]) => m.exec(p),
      "process.start": (p: StartProcessParams) => m.startProcess(p),
      "process.list": (p: { sandboxId: string }) => m.processes(p.sandboxId).list(),
      "process.get": (p: Ref) => m.processes(p.sandboxId).info(p.processId),
      "process.input": (p: Ref & { data?: string; dataBase64?: string }) => {
        m.processes(p.sandboxId).input(p.processId, p.dataBase64 !== undefined ? Buffer.from(p.dataBase64, "base64") : (p.data ?? ""));
        return { ok: true };
      },
      "process.closeStdin": (p: Ref) => {
        m.processes(p.sandboxId).closeStdin(p.processId);
        return { ok: true };
      },
      "process.kill": (p: Ref & { signal: NodeJS.Signals }) => m.processes(p.sandboxId).kill(p.processId, p.signal),
      "process.read": (p: Ref & { stdoutOffset: number; stderrOffset: number; maxBytes: number; waitMs: number }) =>
        m.processes(p.sandboxId).read(p.processId, p.stdoutOffset, p.stderrOffset, p.maxBytes, p.waitMs),
      "process.readMessages": async (p: Ref & { stdoutOffset: number; stderrOffset: number; maxBytes: number; waitMs: number; binary?: boolean }) => {
        const { result, attachment } = await m.processes(p.sandboxId).readMessages(p.processId, p.stdoutOffset, p.stderrOffset, p.maxBytes, p.waitMs, p.binary);
        return new WithAttachment(result, attachment);
      },
      "process.wait": async (p: Ref & { timeoutMs: number }) => {
        const info = await m.processes(p.sandboxId).wait(p.processId, p.timeoutMs);
        return info ? { info } : {};
      },
      "session.create": (p: CreateSessionParams) => m.sessions(p.sandboxId).create(p.request, { env: p.env, defaultCwd: p.defaultCwd }),
      "session.list": (p: { sandboxId: string }) => m.sessions(p.sandboxId).list(),
      "session.get": (p: SessionRef) => m.sessions(p.sandboxId).get(p.sessionId).info(),
      "session.delete": async (p: SessionRef) => ({ deleted: await m.sessions(p.sandboxId).delete(p.sessionId) }),
      "session.exec": (p: SessionRef & { request: ExecRequest }) => m.sessions(p.sandboxId).get(p.sessionId).exec(p.request),
      "terminal.create": (p: CreateTerminalParams) => m.terminals(p.sandboxId).create(p.request, { env: p.env, defaultCwd: p.defaultCwd }),
      "terminal.list": (p: { sandboxId: string }) => m.terminals(p.sandboxId).list(),
      "terminal.get": (p: TerminalRef) => m.terminals(p.sandboxId).info(p.terminalId),
      "terminal.delete": async (p: TerminalRef) => ({ deleted: await m.terminals(p.sandboxId).delete(p.terminalId) }),
      "terminal.input": (p: TerminalRef & { dataBase64: string }) => {
        m.terminals(p.sandboxId).input(p.terminalId, Buffer.from(p.dataBase64, "base64"));
        return { ok: true };
      },
      "terminal.resize": (p: TerminalRef & { cols: number; rows: number }) => m.terminals(p.sandboxId).resize(p.terminalId, p.cols, p.rows),
      "terminal.read": async (p: TerminalRef & { offset: number; maxBytes: number; waitMs: number }) => {
        const { result, data } = await m.terminals(p.sandboxId).read(p.terminalId, p.offset, p.maxBytes, p.waitMs);
        return new WithAttachment(result, data);
      },
      "fs.op": (p: { sandboxId: string; request: FsOp }) => m.files(p.sandboxId).op(p.request),
      "fs.openRead": (p: { sandboxId: string; path: string; archive?: boolean }) => m.files(p.sandboxId).openRead(p.path, p.archive),
      "fs.read": async (p: FsRef & { maxBytes: number; waitMs: number }) => {
        const r = await m.files(p.sandboxId).read(p.handle, p.maxBytes, p.waitMs);
        return new WithAttachment({ bytes: r.bytes, done: r.done }, r.data);
      },
      "fs.openWrite": (p: { sandboxId: string; path: string; mode: number; archive?: boolean }) => m.files(p.sandboxId).openWrite(p.path, p.mode, p.archive),
      "fs.write": async (p: FsRef, frame: DecodedFrame) => {
        await m.files(p.sandboxId).write(p.handle, frame.attachmentParts ?? []);
        return { ok: true };
      },
      "fs.finishWrite": (p: FsRef) => m.files(p.sandboxId).finishWrite(p.handle),
      "fs.detachRead": (p: FsRef) => {
        const r = m.files(p.sandboxId).detachRead(p.handle);
        return new WithAttachment({ bytes: r.bytes, done: r.done }, r.data);
      },
      // The peer is this connection's other end (the server): the kernel names it to the spawner.
      "fs.relay": (p: FsRef & { fd: number; count: number }, _frame: DecodedFrame, conn: FramedConnection) =>
        m.files(p.sandboxId).relay(p.handle, socketFd(conn.socket), p.fd, p.count),
      "fs.abort": async (p: FsRef) => {
        await m.files(p.sandboxId).abort(p.handle);
        return { ok: true };
      },
      "fs.openWatch": (p: { sandboxId: string; path: string; recursive: boolean }) => m.files(p.sandboxId).openWatch(p.path, p.recursive),
      "fs.watchEvents": (p: FsRef & { waitMs: number }) => m.files(p.sandboxId).watchEvents(p.handle, p.waitMs),
      "sandbox.pause": (p: { id: string }) => m.pause(p.id),
      "sandbox.resume": (p: { id: string }) => m.resume(p.id),
      "sandbox.usage": (p: { id: string }) => m.usage(p.id),
      "sandbox.network": (p: { id: string; network: Parameters<SandboxManager["setNetwork"]>[1] }) => m.setNetwork(p.id, p.network),
      "sandbox.networkLog": (p: { id: string; limit: number }) => m.networkLog(p.id, p.limit),
      "sandbox.snapshot": async (p: { id: string }) => ({ layer: await m.snapshot(p.id) }),
      "image.prepare": (p: { image: string }) => m.prepareImage(p.image),
      "image.progress": (p: { image: string }) => {
        const progress = m.importProgress(p.image);
        return progress ? { progress } : {};
      },
      "image.gc": (p: { keep: string[] }) => ({ removed: m.gcImages(p.keep) }),
      "volume.create": (p: { name: string; sizeBytes: number }) => m.createVolume(p.name, p.sizeBytes),
      "volume.get": (p: { name: string }) => m.getVolume(p.name),
      "volume.list": () => m.listVolumes(),
      "volume.delete": async (p: { name: string }) => ({ deleted: await m.deleteVolume(p.name) }),
      "code.create": (p: { sandboxId: string; request: CreateCodeContextRequest; env: Record<string, string>; defaultCwd: string }) =>
        m.code(p.sandboxId).create(p.request, p.env, p.defaultCwd),
      "code.list": (p: { sandboxId: string }) => m.code(p.sandboxId).list(),
      "code.get": (p: CodeRef) => m.code(p.sandboxId).get(p.contextId),
      "code.delete": async (p: CodeRef) => ({ deleted: await m.code(p.sandboxId).delete(p.contextId) }),
      "code.restart": (p: CodeRef) => m.code(p.sandboxId).restart(p.contextId),
      "code.run": (p: CodeRef & { request: RunCodeRequest }) => m.code(p.sandboxId).run(p.contextId, p.request),
      "code.start": (p: CodeRef & { request: RunCodeRequest; functions?: string[] }) => {
        m.code(p.sandboxId).start(p.contextId, p.request, p.functions);
        return { ok: true };
      },
      "code.events": (p: CodeRef & { waitMs: number }) => m.code(p.sandboxId).events(p.contextId, p.waitMs),
      "code.resume": (p: CodeRef & { callId: string; value?: unknown; error?: { name: string; message: string }; waitMs: number }) => {
        const code = m.code(p.sandboxId);
        code.resume(p.contextId, p.callId, p.error ? { error: p.error } : { value: p.value ?? null });
        return code.events(p.contextId, p.waitMs);
      },
      "code.install": (p: CodeRef & { request: InstallDependenciesBody }) => m.code(p.sandboxId).install(p.contextId, p.request),
      "code.attach": async (p: CodeRef & { fd: number; url: string; headers: Record<string, string | string[]>; headBase64: string }, _frame: DecodedFrame, conn: FramedConnection) => {
        m.code(p.sandboxId).get(p.contextId); // both exist, before the connection is taken
        const handle = await m.takePeerSocket(socketFd(conn.socket), p.fd);
        const { sandboxId, contextId } = p;
        this.codeSessions.accept(
          { handle, url: p.url, headers: p.headers, head: Buffer.from(p.headBase64, "base64") },
          {
            check: async () => m.code(sandboxId).get(contextId),
            start: async (request, functions) => {
              m.requireRunning(sandboxId);
              m.code(sandboxId).start(contextId, request, functions);
            },
            events: async (waitMs) => m.code(sandboxId).events(contextId, waitMs),
            resume: async (callId, answer, waitMs) => {
              const code = m.code(sandboxId);
              code.resume(contextId, callId, answer);
              return code.events(contextId, waitMs);
            },
          },
        );
        return { ok: true };
      },
      "runtime.shutdown": async () => {
        await opts.onShutdown();
        return { ok: true };
      },
    };
  }

  async listen(): Promise<void> {
    rmSync(this.opts.socketPath, { force: true });
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.socketPath, () => resolve());
    });
    // Only root (the server) may talk to the runtime.
    chmodSync(this.opts.socketPath, 0o600);
  }

  /** Stop listening and drop every connection (a connected server must not keep us alive). */
  async close(): Promise<void> {
    this.codeSessions.close();
    const closed = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private accept(socket: import("node:net").Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
    let greeted = false;
    const conn = new FramedConnection(
      socket,
      (message, frame) => {
        if (!greeted) {
          const tunnel = TunnelRequest.safeParse(message);
          if (tunnel.success && tunnel.data.protocolVersion === RUNTIME_PROTOCOL_VERSION) {
            greeted = true;
            void this.openTunnel(conn, tunnel.data);
            return;
          }
          const hello = Hello.safeParse(message);
          if (!hello.success || hello.data.protocolVersion !== RUNTIME_PROTOCOL_VERSION) {
            const theirs = hello.success ? hello.data.protocolVersion : "none";
            conn.send({
              type: "error",
              error: {
                code: "VERSION_MISMATCH",
                message: `runtime speaks protocol version ${RUNTIME_PROTOCOL_VERSION}, peer sent ${theirs}`,
                details: { runtimeVersion: RUNTIME_PROTOCOL_VERSION, peerVersion: theirs },
              },
            });
            conn.close();
            return;
          }
          greeted = true;
          conn.send({ type: "hello", protocolVersion: RUNTIME_PROTOCOL_VERSION, runtimeVersion: RUNTIME_VERSION, pid: process.pid });
          return;
        }
        void this.handle(conn, message, frame);
      },
      () => undefined,
      RUNTIME_MAX_REQUEST_FRAME_BYTES,
    );
  }

  /** Turn this connection into a raw stream to a port inside a sandbox (see TunnelRequest). */
  private async openTunnel(conn: FramedConnection, req: TunnelRequest): Promise<void> {
    const socket = conn.socket;
    let proc: Awaited<ReturnType<SandboxManager["openPort"]>>;
    try {
      proc = await this.opts.manager.openPort(req.sandboxId, req.port);
    } catch (err) {
      const e = err as Error & { code?: unknown; details?: Record<string, unknown> };
      conn.send({ type: "error", error: { code: isErrorCode(e.code) ? e.code : "INTERNAL", message: e.message, ...(e.details ? { details: e.details } : {}) } });
      conn.close();
      return;
    }
    const early = conn.release();
    socket.write(encodeFrame({ type: "tunnel-open" }));
    if (early.length) proc.stdin!.write(early);
    socket.on("error", () => undefined);
    proc.stdin!.on("error", () => undefined);
    socket.pipe(proc.stdin!);
    proc.stdout.pipe(socket);
    // Either side gone: end the connector (its whole group goes with it).
    socket.once("close", () => proc.kill("SIGKILL"));
    void proc.exited.then(() => setTimeout(() => socket.destroy(), 1000).unref());
  }

  private async handle(conn: FramedConnection, message: unknown, decoded: DecodedFrame): Promise<void> {
    const frame = RequestFrame.safeParse(message);
    if (!frame.success) {
      const id = typeof (message as { id?: unknown })?.id === "number" ? (message as { id: number }).id : -1;
      conn.send({ type: "response", id, error: { code: "INVALID_REQUEST", message: "malformed request frame" } });
      return;
    }
    const { id, method, params } = frame.data;
    try {
      if (!Object.hasOwn(RuntimeMethods, method)) {
        throw new AgentboxError("INVALID_REQUEST", `unknown runtime method ${method}`);
      }
      const spec = RuntimeMethods[method as RuntimeMethod];
      const parsed = spec.params.safeParse(params ?? {});
      if (!parsed.success) {
        throw new AgentboxError("INVALID_REQUEST", `invalid params for ${method}: ${parsed.error.issues[0]?.message ?? ""}`);
      }
      const result = await this.handlers[method as RuntimeMethod](parsed.data as never, decoded, conn);
      if (result instanceof WithAttachment) conn.send({ type: "response", id, result: result.result }, result.attachment);
      else conn.send({ type: "response", id, result });
    } catch (err) {
      const e = err as Error & { code?: unknown; details?: Record<string, unknown> };
      const code = isErrorCode(e.code) ? e.code : "INTERNAL";
      const error: Record<string, unknown> = { code, message: e.message };
      if (e.details) error.details = e.details;
      conn.send({ type: "response", id, error });
    }
  }
}
