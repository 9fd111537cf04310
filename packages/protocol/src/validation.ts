import type { z } from "zod";
import { AgentboxError } from "./errors.js";

/** Parse with a schema; on failure throw INVALID_REQUEST whose message names the field. */
export function parseOrThrow<T extends z.ZodType>(schema: T, value: unknown, what = "body"): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => {
    const keys = issue.code === "unrecognized_keys" ? issue.keys : [];
    const path = [...issue.path, ...keys].map(String).join(".");
    const message = issue.code === "unrecognized_keys" ? "unknown field" : issue.message;
    return { field: path || what, message };
  });
  const first = issues[0]!;
  throw new AgentboxError("INVALID_REQUEST", `${first.field}: ${first.message}`, { issues });
}

/** For `.refine`: text that becomes a path, an argument or an environment entry cannot hold NUL. */
export const noNul = (s: string): boolean => !s.includes("\0");
