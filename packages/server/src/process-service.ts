/** Processes of a sandbox: the control plane checks the sandbox and forwards to the runtime. */
import { AgentboxError, type ProcessInfo, type ProcessLogs, type StartProcessRequest } from "@agentbox/protocol";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxService } from "./sandbox-service.js";

export class ProcessService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly runtime: RuntimeLink,
  ) {}

  async start(sandboxId: string, request: StartProcessRequest): Promise<{ info: ProcessInfo; created: boolean }> {
    const r = this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("process.start", { sandboxId, request, env: r.env, defaultCwd: r.workdir });
  }

  list(sandboxId: string): Promise<ProcessInfo[]> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("process.list", { sandboxId });
  }

  get(sandboxId: string, processId: string): Promise<ProcessInfo> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("process.get", { sandboxId, processId });
  }

  async input(sandboxId: string, processId: string, input: { data?: string | undefined; dataBase64?: string | undefined }): Promise<void> {
    this.sandboxes.requireReady(sandboxId);
    const params: { sandboxId: string; processId: string; data?: string; dataBase64?: string } = { sandboxId, processId };
    if (input.data !== undefined) params.data = input.data;
    if (input.dataBase64 !== undefined) params.dataBase64 = input.dataBase64;
    await this.runtime.request("process.input", params);
  }

  async closeStdin(sandboxId: string, processId: string): Promise<void> {
    this.sandboxes.requireReady(sandboxId);
    await this.runtime.request("process.closeStdin", { sandboxId, processId });
  }

  kill(sandboxId: string, processId: string, signal: NodeJS.Signals): Promise<ProcessInfo> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("process.kill", { sandboxId, processId, signal: signal as "SIGKILL" });
  }

  async logs(sandboxId: string, processId: string, stdoutOffset: number, stderrOffset: number): Promise<ProcessLogs> {
    this.sandboxes.requireReady(sandboxId);
    const r = await this.runtime.request("process.read", { sandboxId, processId, stdoutOffset, stderrOffset, maxBytes: 8 * 1024 * 1024, waitMs: 0 });
    const { stdoutStart: _a, stderrStart: _b, stdoutBytes: _c, stderrBytes: _d, ...logs } = r;
    return logs;
  }

  /** Output as ready-made stream messages (relayed without decoding). */
  readMessages(sandboxId: string, processId: string, stdoutOffset: number, stderrOffset: number, maxBytes: number, waitMs: number, binary: boolean) {
    return this.runtime.requestWithAttachment("process.readMessages", { sandboxId, processId, stdoutOffset, stderrOffset, maxBytes, waitMs, binary });
  }

  async wait(sandboxId: string, processId: string, timeoutMs: number): Promise<ProcessInfo> {
    this.sandboxes.requireReady(sandboxId);
    const { info } = await this.runtime.request("process.wait", { sandboxId, processId, timeoutMs });
    if (!info) throw new AgentboxError("TIMEOUT", `process ${processId} is still running after ${timeoutMs} ms`, { process: processId });
    return info;
  }
}
