/** A tiny canned-response HTTP server for SDK tests (not the real agentbox server). */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  method: string;
  url: URL;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

export interface Reply {
  status?: number;
  /** JSON-encoded unless it is a string. */
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
}

export type Handler = (req: RecordedRequest) => Reply | Promise<Reply>;

export interface FakeServer {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function startFakeServer(handler: Handler): Promise<FakeServer> {
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const recorded: RecordedRequest = {
        method: req.method ?? "",
        url: new URL(req.url ?? "/", "http://fake"),
        headers: req.headers,
        body: text === "" ? undefined : JSON.parse(text),
      };
      requests.push(recorded);
      const reply = await handler(recorded);
      if (reply.delayMs) await new Promise((r) => setTimeout(r, reply.delayMs));
      const body = reply.body === undefined ? "" : typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
      const headers = {
        ...(typeof reply.body === "string" || reply.body === undefined ? {} : { "content-type": "application/json" }),
        ...reply.headers,
      };
      res.writeHead(reply.status ?? 200, headers);
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return { url: `http://127.0.0.1:${port}`, requests, close, [Symbol.asyncDispose]: close };
}

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export async function unusedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function sandboxInfo(id = "sb-1", overrides: Record<string, unknown> = {}) {
  return {
    id,
    template: "default",
    status: "ready" as const,
    createdAt: "2025-01-01T00:00:00.000Z",
    expiresAt: "2025-01-01T01:00:00.000Z",
    metadata: {},
    resources: { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 },
    network: { mode: "none" as const },
    ...overrides,
  };
}

export const execResult = {
  stdout: "hi\n",
  stderr: "",
  exitCode: 0,
  truncated: { stdout: false, stderr: false },
  durationMs: 3,
};
