/** Reading request bodies: bounded in size, JSON parsed with errors a client can act on. */
import type { IncomingMessage } from "node:http";
import { AgentboxError } from "@agentbox/protocol";

export const MAX_JSON_BODY_BYTES = 16 * 1024 * 1024;

export async function readJson(req: IncomingMessage, limit = MAX_JSON_BODY_BYTES): Promise<unknown> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) throw new AgentboxError("PAYLOAD_TOO_LARGE", `request body exceeds ${limit} bytes`, { limit });
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new AgentboxError("PAYLOAD_TOO_LARGE", `request body exceeds ${limit} bytes`, { limit });
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof AgentboxError) throw err;
    throw new AgentboxError("INVALID_REQUEST", "body: the client closed the connection before sending it all");
  }
  if (size === 0) return {};
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new AgentboxError("INVALID_REQUEST", `body: malformed JSON (${(err as Error).message})`);
  }
}
