/**
 * @agentbox/sdk — a client for the agentbox HTTP API.
 *
 *   import { Agentbox } from "@agentbox/sdk";
 *   const client = new Agentbox(); // AGENTBOX_URL, AGENTBOX_API_KEY
 *   await using sb = await client.sandboxes.create();
 *   const { stdout } = await sb.exec("echo hello");
 *   const proc = await sb.startProcess("npm run dev");    // a background process
 *   for await (const chunk of proc) process.stdout.write(chunk.data);
 *   const sh = await sb.createSession();                  // a persistent shell
 *   await sh.exec("cd /tmp && export A=1");
 *   const term = await sb.terminals.create();              // a PTY
 *   const { url } = await sb.ports.expose(8000);           // a server in the sandbox, reachable
 *
 * The `Symbol.asyncDispose` fallback for runtimes that lack it lives in
 * sandbox.ts: ESM evaluates imported modules first, so a statement here would
 * run after the Sandbox class had already been defined.
 */
export { Agentbox, Sandboxes, DEFAULT_URL, type AgentboxOptions, type ListSandboxesOptions, type Health } from "./client.js";
export { Sandbox, type SandboxInfo, type ExecOptions, type StartProcessOptions } from "./sandbox.js";
export {
  Templates,
  Volumes,
  Pools,
  type Template,
  type Volume,
  type Pool,
  type CreateTemplateRequest,
  type PatchTemplateRequest,
  type CreateVolumeRequest,
  type CreatePoolRequest,
  type PatchPoolRequest,
  type WaitForTemplateOptions,
  type UploadedImage,
} from "./templates.js";
export { Code, CodeContext, Tuple, type CodeFunction, type RunOptions, type CodeContextInfo, type CreateCodeContextRequest, type Execution } from "./code.js";
export { Network, Ports, type NetworkUpdate, type NetworkLogOptions, type NetworkPolicy, type EgressLogEntry, type ExposedPort } from "./network.js";
export { Files, type FileEntry, type WatchEvent, type WatchHandle, type WriteOptions, type TransferOptions } from "./files.js";
export { Session, type SessionInfo, type SessionExecOptions, type CreateSessionRequest } from "./session.js";
export { Terminals, Terminal, TerminalConnection, type TerminalInfo, type TerminalExit, type CreateTerminalRequest } from "./terminal.js";
export {
  ProcessHandle,
  DEFAULT_RECONNECT_POLICY,
  type AttachOptions,
  type ProcessChunk,
  type ProcessHandleEvents,
  type ProcessOffsets,
  type ProcessResult,
  type ReconnectPolicy,
} from "./process-handle.js";
export {
  PROCESS_SIGNALS,
  STREAM_CLOSE,
  type ProcessInfo,
  type ProcessLogs,
  type ProcessSignal,
  type ProcessStatus,
  type ProcessStream,
  type StartProcessRequest,
  type StreamClientMessage,
  type StreamServerMessage,
  type Truncation,
} from "./process-types.js";
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
  SandboxUsage,
  VolumeMount,
  ImportProgress,
  ExitReason,
} from "@agentbox/protocol";
