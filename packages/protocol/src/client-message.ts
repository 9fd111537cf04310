/** Parsing of a WebSocket client's JSON text frame against a schema, with the API's error wording. */
import type { z } from "zod";

/** The message, or an error message naming the offending field. */
export function parseClientMessage<S extends z.ZodType>(schema: S, text: string): { ok: true; message: z.output<S> } | { ok: false; error: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  const parsed = schema.safeParse(json);
  if (parsed.success) return { ok: true, message: parsed.data };
  const issue = parsed.error.issues[0];
  return { ok: false, error: `${issue?.path.join(".") || "message"}: ${issue?.message ?? "invalid"}` };
}
