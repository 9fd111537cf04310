/**
 * @agentbox/sdk — a client for the agentbox HTTP API.
 *
 *   import { Agentbox } from "@agentbox/sdk";
 *   const client = new Agentbox(); // AGENTBOX_URL, AGENTBOX_API_KEY
 *   await using sb = await client.sandboxes.create();
 *   const { stdout } = await sb.exec("echo hello");
 *
 * The `Symbol.asyncDispose` fallback for runtimes that lack it lives in
 * sandbox.ts: ESM evaluates imported modules first, so a statement here would
 * run after the Sandbox class had already been defined.
 */
export { Agentbox, Sandboxes, DEFAULT_URL, type AgentboxOptions, type ListSandboxesOptions, type Health } from "./client.js";
export { Sandbox, type SandboxInfo, type ExecOptions } from "./sandbox.js";
export {
  AgentboxApiError,
  CONNECTION_FAILED,
  isAgentboxError,
  isSdkErrorCode,
  type SdkErrorCode,
  type AgentboxApiErrorOptions,
} from "./errors.js";
export { HttpTransport, type TransportOptions, type RequestOptions, type Query } from "./http.js";
export type {
  CreateSandboxRequest,
  ExecRequest,
  ExecResult,
  ErrorCode,
  SandboxStatus,
  ExitReason,
} from "@agentbox/protocol";
