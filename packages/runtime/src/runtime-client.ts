/**
 * The control plane's side of the runtime protocol: connect, say hello with
 * our version, then make typed requests.
 */
import { connect, type Socket } from "node:net";
import {
  AgentboxError,
  type DecodedFrame,
  ErrorFrame,
  Hello,
  RUNTIME_MAX_RESPONSE_FRAME_BYTES,
  RUNTIME_PROTOCOL_VERSION,
  ResponseFrame,
  TunnelOpen,
  FrameDecoder,
  encodeFrame,
  isErrorCode,
  type RuntimeMethod,
  type RuntimeParams,
  type RuntimeResult,
} from "@agentbox/protocol";
import { FramedConnection } from "./connection.js";

export class RuntimeClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown, frame?: DecodedFrame) => void; reject: (e: Error) => void }>();
  private closed = false;
  /** Called once when the connection to the runtime is lost. */
  onClose: (() => void) | undefined;

  private constructor(private readonly conn: FramedConnection, readonly runtimePid: number) {}

  static async connect(socketPath: string, protocolVersion = RUNTIME_PROTOCOL_VERSION): Promise<RuntimeClient> {
    const socket = connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    return new Promise<RuntimeClient>((resolve, reject) => {
      let client: RuntimeClient | undefined;
      const conn = new FramedConnection(
        socket,
        (message, frame) => {
          if (client) return client.receive(message, frame);
          const refused = ErrorFrame.safeParse(message);
          if (refused.success) {
            const code = isErrorCode(refused.data.error.code) ? refused.data.error.code : "RUNTIME_UNAVAILABLE";
            reject(new AgentboxError(code, refused.data.error.message, refused.data.error.details));
            return;
          }
          const hello = Hello.safeParse(message);
          if (!hello.success || hello.data.protocolVersion !== protocolVersion) {
            conn.close();
            reject(new AgentboxError("VERSION_MISMATCH", "the runtime answered with another protocol version"));
            return;
          }
          client = new RuntimeClient(conn, hello.data.pid ?? 0);
          resolve(client);
        },
        (reason) => {
          if (!client) reject(new AgentboxError("RUNTIME_UNAVAILABLE", `runtime closed the connection${reason ? `: ${reason.message}` : ""}`));
          else client.lost();
        },
        RUNTIME_MAX_RESPONSE_FRAME_BYTES,
      );
      conn.send({ type: "hello", protocolVersion });
    });
  }

  /**
   * A raw byte stream to `port` inside a sandbox, on a connection of its own (see TunnelRequest).
   * Rejects with the runtime's error (NOT_FOUND when nothing listens there).
   */
  static async openTunnel(socketPath: string, sandboxId: string, port: number, protocolVersion = RUNTIME_PROTOCOL_VERSION): Promise<Socket> {
    const socket = connect(socketPath);
    socket.on("error", () => undefined);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.write(encodeFrame({ type: "tunnel", protocolVersion, sandboxId, port }));
    let buffered = Buffer.alloc(0);
    return new Promise<Socket>((resolve, reject) => {
      const fail = (err: Error) => {
        socket.destroy();
        reject(err);
      };
      // Decode exactly one frame: what follows it may already be the tunnel's raw bytes.
      const onData = (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length < 4) return;
        const length = buffered.readUInt32BE(0);
        if (length > 64 * 1024) return fail(new AgentboxError("INTERNAL", "the runtime answered a tunnel request with an oversized frame"));
        if (buffered.length < 4 + length) return;
        let first: { message: unknown } | undefined;
        try {
          first = new FrameDecoder(64 * 1024).pushFrames(buffered.subarray(0, 4 + length))[0];
        } catch (err) {
          return fail(err as Error);
        }
        socket.off("data", onData);
        socket.off("close", onClose);
        socket.pause();
        if (first && TunnelOpen.safeParse(first.message).success) {
          const rest = buffered.subarray(4 + length);
          if (rest.length) socket.unshift(rest);
          return resolve(socket);
        }
        const refused = ErrorFrame.safeParse(first?.message);
        const e = refused.success ? refused.data.error : { code: "INTERNAL", message: "the runtime answered a tunnel request with something else" };
        fail(new AgentboxError(isErrorCode(e.code) ? e.code : "INTERNAL", e.message, refused.success ? refused.data.error.details : undefined));
      };
      const onClose = () => fail(new AgentboxError("RUNTIME_UNAVAILABLE", "the runtime closed the tunnel before it opened"));
      socket.on("data", onData);
      socket.once("close", onClose);
    });
  }

  get connected(): boolean {
    return !this.closed;
  }

  request<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>): Promise<RuntimeResult<M>> {
    if (this.closed) return Promise.reject(new AgentboxError("RUNTIME_UNAVAILABLE", "not connected to the runtime"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.conn.send({ type: "request", id, method, params });
    });
  }

  /** A request whose response carries raw bytes (e.g. process.readMessages). */
  requestWithAttachment<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>): Promise<{ result: RuntimeResult<M>; attachment: Buffer }> {
    if (this.closed) return Promise.reject(new AgentboxError("RUNTIME_UNAVAILABLE", "not connected to the runtime"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {
        resolve: (result, frame) => resolve({ result: result as RuntimeResult<M>, attachment: frame?.attachment ?? Buffer.alloc(0) }),
        reject,
      });
      this.conn.send({ type: "request", id, method, params });
    });
  }

  /** Like requestWithAttachment, with the bytes as the slices they arrived in (no copy: for bulk data). */
  requestWithParts<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>): Promise<{ result: RuntimeResult<M>; parts: Buffer[] }> {
    if (this.closed) return Promise.reject(new AgentboxError("RUNTIME_UNAVAILABLE", "not connected to the runtime"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {
        resolve: (result, frame) => resolve({ result: result as RuntimeResult<M>, parts: frame?.attachmentParts ?? [] }),
        reject,
      });
      this.conn.send({ type: "request", id, method, params });
    });
  }

  /** A request that carries raw bytes (e.g. fs.write). */
  requestWithBody<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>, body: Buffer | Buffer[]): Promise<RuntimeResult<M>> {
    if (this.closed) return Promise.reject(new AgentboxError("RUNTIME_UNAVAILABLE", "not connected to the runtime"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.conn.send({ type: "request", id, method, params }, Array.isArray(body) ? body : [body]);
    });
  }

  close(): void {
    this.conn.close();
    this.lost();
  }

  private receive(message: unknown, decoded: DecodedFrame): void {
    const frame = ResponseFrame.safeParse(message);
    if (!frame.success) return;
    const waiter = this.pending.get(frame.data.id);
    if (!waiter) return;
    this.pending.delete(frame.data.id);
    const err = frame.data.error;
    if (err) {
      waiter.reject(new AgentboxError(isErrorCode(err.code) ? err.code : "INTERNAL", err.message, err.details));
    } else {
      waiter.resolve(frame.data.result, decoded);
    }
  }

  private lost(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.pending.values()) w.reject(new AgentboxError("RUNTIME_UNAVAILABLE", "lost the connection to the runtime"));
    this.pending.clear();
    this.onClose?.();
  }
}
