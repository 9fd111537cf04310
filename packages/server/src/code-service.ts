/** Code contexts of a sandbox: the control plane checks the sandbox and forwards to the runtime. */
import type { CodeContextInfo, CreateCodeContextRequest, Execution, InstallDependenciesBody, RunCodeRequest } from "@agentbox/protocol";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxService } from "./sandbox-service.js";

export class CodeService {
  constructor(
    private readonly sandboxes: SandboxService,
    readonly runtime: RuntimeLink,
  ) {}

  create(sandboxId: string, request: CreateCodeContextRequest): Promise<CodeContextInfo> {
    const r = this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("code.create", { sandboxId, request, env: r.env, defaultCwd: r.workdir });
  }

  list(sandboxId: string): Promise<CodeContextInfo[]> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("code.list", { sandboxId });
  }

  get(sandboxId: string, contextId: string): Promise<CodeContextInfo> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("code.get", { sandboxId, contextId });
  }

  async delete(sandboxId: string, contextId: string): Promise<boolean> {
    this.sandboxes.requireReady(sandboxId);
    return (await this.runtime.request("code.delete", { sandboxId, contextId })).deleted;
  }

  restart(sandboxId: string, contextId: string): Promise<CodeContextInfo> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("code.restart", { sandboxId, contextId });
  }

  run(sandboxId: string, contextId: string, request: RunCodeRequest): Promise<Execution> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("code.run", { sandboxId, contextId, request });
  }

  install(sandboxId: string, contextId: string, request: InstallDependenciesBody): Promise<{ output: string }> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("code.install", { sandboxId, contextId, request });
  }

  requireReady(sandboxId: string): void {
    this.sandboxes.requireReady(sandboxId);
  }
}
