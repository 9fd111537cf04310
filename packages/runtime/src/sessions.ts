/**
 * The shell sessions of one sandbox: created once per id, looked up for each
 * call, ended on delete or with the sandbox. A terminated session stays listed
 * (so its callers learn why) until it is deleted.
 */
import { AgentboxError, type CreateSessionRequest, type SessionInfo } from "@agentbox/protocol";
import type { LocalSandbox } from "@agentbox/isolation";
import { ShellSession, type SessionContext } from "./shell-session.js";

export class SessionRegistry {
  private readonly sessions = new Map<string, ShellSession>();
  private readonly creating = new Map<string, Promise<ShellSession>>();
  private counter = 0;

  constructor(private readonly sandbox: LocalSandbox) {}

  async create(req: CreateSessionRequest, ctx: SessionContext): Promise<{ info: SessionInfo; created: boolean }> {
    const id = req.id ?? `session-${Date.now().toString(36)}-${(++this.counter).toString(36)}`;
    const existing = this.sessions.get(id);
    if (existing) return { info: existing.info(), created: false };
    const pending = this.creating.get(id);
    if (pending) return { info: (await pending).info(), created: false };
    const promise = ShellSession.start(id, this.sandbox, req, ctx)
      .then((s) => {
        this.sessions.set(id, s);
        return s;
      })
      .finally(() => this.creating.delete(id));
    this.creating.set(id, promise);
    return { info: (await promise).info(), created: true };
  }

  get(id: string): ShellSession {
    const s = this.sessions.get(id);
    if (!s) throw new AgentboxError("NOT_FOUND", `session ${id} does not exist`, { session: id });
    return s;
  }

  list(): SessionInfo[] {
    return [...this.sessions.values()].map((s) => s.info());
  }

  async delete(id: string): Promise<boolean> {
    const s = this.sessions.get(id);
    if (!s) return false;
    this.sessions.delete(id);
    await s.terminate("deleted");
    return true;
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.sessions.keys()].map((id) => this.delete(id)));
  }
}
