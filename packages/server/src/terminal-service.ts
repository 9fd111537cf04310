/** Terminals (PTYs) of a sandbox: the control plane checks the sandbox and forwards to the runtime. */
import type { CreateTerminalRequest, TerminalInfo } from "@agentbox/protocol";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxService } from "./sandbox-service.js";

export class TerminalService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly runtime: RuntimeLink,
  ) {}

  create(sandboxId: string, request: CreateTerminalRequest): Promise<{ info: TerminalInfo; created: boolean }> {
    const r = this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("terminal.create", { sandboxId, request, env: r.env, defaultCwd: r.workdir });
  }

  list(sandboxId: string): Promise<TerminalInfo[]> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("terminal.list", { sandboxId });
  }

  get(sandboxId: string, terminalId: string): Promise<TerminalInfo> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("terminal.get", { sandboxId, terminalId });
  }

  async delete(sandboxId: string, terminalId: string): Promise<boolean> {
    this.sandboxes.requireReady(sandboxId);
    return (await this.runtime.request("terminal.delete", { sandboxId, terminalId })).deleted;
  }

  /** Keystrokes are not awaited one by one: the runtime applies requests in the order they arrive. */
  input(sandboxId: string, terminalId: string, data: Buffer): Promise<unknown> {
    return this.runtime.request("terminal.input", { sandboxId, terminalId, dataBase64: data.toString("base64") });
  }

  resize(sandboxId: string, terminalId: string, cols: number, rows: number): Promise<TerminalInfo> {
    return this.runtime.request("terminal.resize", { sandboxId, terminalId, cols, rows });
  }

  read(sandboxId: string, terminalId: string, offset: number, maxBytes: number, waitMs: number) {
    return this.runtime.requestWithAttachment("terminal.read", { sandboxId, terminalId, offset, maxBytes, waitMs });
  }
}
