/** A minimal stream client for tests: collects messages, resumes from offsets. */
import WebSocket from "ws";

export interface Collected {
  messages: any[];
  stdout: Buffer[];
  stderr: Buffer[];
  offsets: { stdout: number; stderr: number };
  close: { code: number; reason: string } | undefined;
}

export function streamUrl(serverUrl: string, sandboxId: string, processId: string, offsets = { stdout: 0, stderr: 0 }): string {
  return `${serverUrl.replace(/^http/, "ws")}/v1/sandboxes/${sandboxId}/processes/${processId}/stream?stdoutOffset=${offsets.stdout}&stderrOffset=${offsets.stderr}`;
}

/**
 * Attach and collect until the socket closes, or until `stopAfterBytes` stdout bytes
 * have arrived in this attachment (then terminate, like a dropped connection).
 */
export function attach(
  url: string,
  apiKey: string,
  into: Collected,
  opts: { stopAfterBytes?: number; onOpen?: (ws: WebSocket) => void } = {},
): Promise<Collected> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${apiKey}` } });
    let received = 0;
    ws.on("open", () => opts.onOpen?.(ws));
    ws.on("message", (raw) => {
      const m = JSON.parse(String(raw));
      into.messages.push(m);
      if (m.type === "stdout" || m.type === "stderr") {
        const stream = m.type as "stdout" | "stderr";
        if (m.offset !== into.offsets[stream]) reject(new Error(`${stream} gap: expected offset ${into.offsets[stream]}, got ${m.offset}`));
        into[stream].push(Buffer.from(m.data, "utf8"));
        into.offsets[stream] = m.offset + m.bytes;
        if (stream === "stdout") received += m.bytes;
        if (opts.stopAfterBytes !== undefined && received >= opts.stopAfterBytes) ws.terminate();
      }
    });
    ws.on("close", (code, reason) => {
      into.close = { code, reason: String(reason) };
      resolve(into);
    });
    ws.on("error", () => undefined);
  });
}

export function collector(): Collected {
  return { messages: [], stdout: [], stderr: [], offsets: { stdout: 0, stderr: 0 }, close: undefined };
}
