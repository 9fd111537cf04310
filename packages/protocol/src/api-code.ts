/** Schemas of the Code contexts section of the public API. */
import { z } from "zod";
import { noNul } from "./validation.js";
import { CodeResult } from "./worker-protocol.js";

/** `python-wasm`: the embedded interpreter (CPython on WebAssembly), which needs no Linux sandbox. */
export const CodeLanguage = z.enum(["python", "javascript", "python-wasm"]);

export const CreateCodeContextRequest = z.strictObject({
  language: CodeLanguage,
  cwd: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"), z.string().refine(noNul, "must not contain NUL bytes")).optional(),
});
export type CreateCodeContextRequest = z.input<typeof CreateCodeContextRequest>;

export const CodeContextInfo = z.object({
  id: z.string(),
  language: CodeLanguage,
  cwd: z.string(),
  executionCount: z.number().int(),
  createdAt: z.string(),
});
export type CodeContextInfo = z.infer<typeof CodeContextInfo>;

export const MAX_CODE_TIMEOUT_MS = 24 * 3600 * 1000;

export const RunCodeRequest = z.strictObject({
  code: z.string().max(16 * 1024 * 1024),
  timeoutMs: z.number().int().min(1).max(MAX_CODE_TIMEOUT_MS).optional(),
});
export type RunCodeRequest = z.input<typeof RunCodeRequest>;

export const CodeError = z.object({ name: z.string(), value: z.string(), traceback: z.string() });

export const Execution = z.object({
  results: z.array(CodeResult),
  stdout: z.string(),
  stderr: z.string(),
  error: CodeError.optional(),
  executionCount: z.number().int(),
});
export type Execution = z.infer<typeof Execution>;

const requirement = z
  .string()
  .refine((r) => r.trim() !== "", "must not be empty")
  .refine((r) => !r.trim().startsWith("-"), "must be a requirement, not an option (it starts with -)")
  .refine(noNul, "must not contain NUL bytes");

export const InstallDependenciesBody = z.strictObject({
  requirements: z.array(requirement).min(1).max(256),
  indexUrl: z.string().url().optional(),
  findLinks: z.string().min(1).refine(noNul, "must not contain NUL bytes").optional(),
});
export type InstallDependenciesBody = z.input<typeof InstallDependenciesBody>;

/** Client messages of the code session WebSocket. */
export const CodeSessionClientMessage = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("run"),
    code: z.string(),
    timeoutMs: z.number().int().min(1).max(MAX_CODE_TIMEOUT_MS).optional(),
    functions: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/)).max(256).optional(),
  }),
  z.strictObject({ type: z.literal("return"), callId: z.string(), value: z.unknown().optional() }),
  z.strictObject({ type: z.literal("raise"), callId: z.string(), error: z.strictObject({ name: z.string(), message: z.string() }) }),
]);
export type CodeSessionClientMessage = z.infer<typeof CodeSessionClientMessage>;

/** Server messages of the code session WebSocket. */
export type CodeSessionServerMessage =
  | { type: "stdout" | "stderr"; text: string }
  | { type: "call"; callId: string; name: string; args: unknown[]; kwargs: Record<string, unknown> }
  | ({ type: "result" } & z.infer<typeof CodeResult>)
  | { type: "error"; name: string; value: string; traceback: string }
  | { type: "done"; executionCount: number }
  | { type: "failed"; code: string; message: string };
