/**
 * The server's connection to its runtime. Reconnects (starting the runtime
 * if none answers) on the next request after the connection was lost, and
 * tells the caller when that happened so it can reconcile its store.
 */
import { AgentboxError, type RuntimeMethod, type RuntimeParams, type RuntimeResult } from "@agentbox/protocol";
import { RuntimeClient, connectOrStartRuntime } from "@agentbox/runtime";

export class RuntimeLink {
  private client: RuntimeClient | undefined;
  private connecting: Promise<RuntimeClient> | undefined;
  private closed = false;

  constructor(
    private readonly dataDir: string,
    /** Called after every (re)connection, before any other request is sent. */
    private readonly onConnect: (client: RuntimeClient) => Promise<void>,
  ) {}

  async connect(): Promise<RuntimeClient> {
    if (this.closed) throw new AgentboxError("RUNTIME_UNAVAILABLE", "the server is shutting down");
    if (this.client?.connected) return this.client;
    this.connecting ??= (async () => {
      try {
        const client = await connectOrStartRuntime(this.dataDir);
        await this.onConnect(client);
        this.client = client;
        return client;
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  async request<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>): Promise<RuntimeResult<M>> {
    const client = await this.connect();
    return client.request(method, params);
  }

  async requestWithAttachment<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>) {
    const client = await this.connect();
    return client.requestWithAttachment(method, params);
  }

  /** Like requestWithAttachment, the bytes as received slices (no copy). */
  async requestWithParts<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>) {
    const client = await this.connect();
    return client.requestWithParts(method, params);
  }

  /** A request carrying raw bytes (fs.write). */
  async requestWithBody<M extends RuntimeMethod>(method: M, params: RuntimeParams<M>, body: Buffer | Buffer[]): Promise<RuntimeResult<M>> {
    const client = await this.connect();
    return client.requestWithBody(method, params, body);
  }

  get pid(): number | undefined {
    return this.client?.runtimePid;
  }

  /** Close the connection; with `stopRuntime`, ask the runtime to stop (and remove its sandboxes) first. */
  async close(stopRuntime: boolean): Promise<void> {
    this.closed = true;
    const client = this.client;
    if (!client?.connected) return;
    if (stopRuntime) {
      const lost = new Promise<void>((resolve) => {
        const previous = client.onClose;
        client.onClose = () => {
          previous?.();
          resolve();
        };
      });
      await client.request("runtime.shutdown", {}).catch(() => undefined);
      // The runtime answers, removes its sandboxes and then exits, dropping the connection:
      // wait for that, so a server started next on this data dir cannot reach the old runtime.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([lost, new Promise((r) => (timer = setTimeout(r, 30_000)))]);
      clearTimeout(timer);
    }
    client.close();
  }
}
