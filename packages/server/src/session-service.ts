/** Shell sessions of a sandbox: the control plane checks the sandbox and forwards to the runtime. */
import type { CreateSessionRequest, ExecRequest, ExecResult, SessionInfo } from "@agentbox/protocol";
import type { RuntimeLink } from "./runtime-link.js";
import type { SandboxService } from "./sandbox-service.js";

export class SessionService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly runtime: RuntimeLink,
  ) {}

  create(sandboxId: string, request: CreateSessionRequest): Promise<{ info: SessionInfo; created: boolean }> {
    const r = this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("session.create", { sandboxId, request, env: r.env, defaultCwd: r.workdir });
  }

  list(sandboxId: string): Promise<SessionInfo[]> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("session.list", { sandboxId });
  }

  get(sandboxId: string, sessionId: string): Promise<SessionInfo> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("session.get", { sandboxId, sessionId });
  }

  async delete(sandboxId: string, sessionId: string): Promise<boolean> {
    this.sandboxes.requireReady(sandboxId);
    return (await this.runtime.request("session.delete", { sandboxId, sessionId })).deleted;
  }

  exec(sandboxId: string, sessionId: string, request: ExecRequest): Promise<ExecResult> {
    this.sandboxes.requireReady(sandboxId);
    return this.runtime.request("session.exec", { sandboxId, sessionId, request });
  }
}
