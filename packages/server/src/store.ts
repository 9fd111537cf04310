/**
 * The control plane's store (SQLite in the data dir). It keeps what the
 * server decided about each sandbox; the runtime keeps what is alive.
 */
import Database from "better-sqlite3";
import { join } from "node:path";
import type { NetworkPolicy, Resources, SandboxStatus } from "@agentbox/protocol";

export interface SandboxRecord {
  id: string;
  template: string;
  status: SandboxStatus;
  statusMessage: string | undefined;
  createdAt: string;
  expiresAt: string;
  metadata: Record<string, string>;
  env: Record<string, string>;
  resources: Resources;
  network: NetworkPolicy;
  limitsOff: string[];
  workdir: string;
}

interface Row {
  id: string;
  template: string;
  status: SandboxStatus;
  status_message: string | null;
  created_at: string;
  expires_at: string;
  metadata: string;
  env: string;
  resources: string;
  network: string;
  limits_off: string;
  workdir: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sandboxes (
  id TEXT PRIMARY KEY,
  template TEXT NOT NULL,
  status TEXT NOT NULL,
  status_message TEXT,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  metadata TEXT NOT NULL,
  env TEXT NOT NULL,
  resources TEXT NOT NULL,
  network TEXT NOT NULL,
  limits_off TEXT NOT NULL,
  workdir TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sandboxes_status ON sandboxes(status);
CREATE INDEX IF NOT EXISTS sandboxes_expires ON sandboxes(expires_at);
`;

function fromRow(r: Row): SandboxRecord {
  return {
    id: r.id,
    template: r.template,
    status: r.status,
    statusMessage: r.status_message ?? undefined,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    metadata: JSON.parse(r.metadata) as Record<string, string>,
    env: JSON.parse(r.env) as Record<string, string>,
    resources: JSON.parse(r.resources) as Resources,
    network: JSON.parse(r.network) as NetworkPolicy,
    limitsOff: JSON.parse(r.limits_off) as string[],
    workdir: r.workdir,
  };
}

export class Store {
  private readonly db: Database.Database;

  constructor(dataDir: string) {
    // The database holds sandbox env (maybe secrets): only root may read it. SQLite
    // gives its -wal and -shm files the database file's mode.
    const previous = process.umask(0o077);
    try {
      this.db = new Database(join(dataDir, "agentbox.db"));
    } finally {
      process.umask(previous);
    }
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.exec(SCHEMA);
  }

  insertSandbox(s: SandboxRecord): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, template, status, status_message, created_at, expires_at, metadata, env, resources, network, limits_off, workdir)
         VALUES (@id, @template, @status, @statusMessage, @createdAt, @expiresAt, @metadata, @env, @resources, @network, @limitsOff, @workdir)`,
      )
      .run({
        ...s,
        statusMessage: s.statusMessage ?? null,
        metadata: JSON.stringify(s.metadata),
        env: JSON.stringify(s.env),
        resources: JSON.stringify(s.resources),
        network: JSON.stringify(s.network),
        limitsOff: JSON.stringify(s.limitsOff),
      });
  }

  getSandbox(id: string): SandboxRecord | undefined {
    const row = this.db.prepare("SELECT * FROM sandboxes WHERE id = ?").get(id) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  listSandboxes(filter: { status?: SandboxStatus; template?: string; metadata?: Record<string, string> } = {}): SandboxRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.status) {
      where.push("status = ?");
      args.push(filter.status);
    } else {
      where.push("status != 'deleted'");
    }
    if (filter.template) {
      where.push("template = ?");
      args.push(filter.template);
    }
    for (const [k, v] of Object.entries(filter.metadata ?? {})) {
      where.push("json_extract(metadata, ?) = ?");
      args.push(`$."${k.replaceAll('"', '""')}"`, v);
    }
    const rows = this.db.prepare(`SELECT * FROM sandboxes WHERE ${where.join(" AND ")} ORDER BY created_at, id`).all(...args) as Row[];
    return rows.map(fromRow);
  }

  setStatus(id: string, status: SandboxStatus, statusMessage?: string, limitsOff?: string[]): void {
    if (limitsOff) {
      this.db
        .prepare("UPDATE sandboxes SET status = ?, status_message = ?, limits_off = ? WHERE id = ?")
        .run(status, statusMessage ?? null, JSON.stringify(limitsOff), id);
    } else {
      this.db.prepare("UPDATE sandboxes SET status = ?, status_message = ? WHERE id = ?").run(status, statusMessage ?? null, id);
    }
  }

  setExpiry(id: string, expiresAt: string): void {
    this.db.prepare("UPDATE sandboxes SET expires_at = ? WHERE id = ?").run(expiresAt, id);
  }

  /** Live sandboxes whose TTL has passed. */
  expired(now: string): SandboxRecord[] {
    const rows = this.db.prepare("SELECT * FROM sandboxes WHERE status != 'deleted' AND expires_at <= ?").all(now) as Row[];
    return rows.map(fromRow);
  }

  /** Forget deleted sandboxes older than `before`. */
  purgeDeleted(before: string): number {
    return this.db.prepare("DELETE FROM sandboxes WHERE status = 'deleted' AND expires_at <= ?").run(before).changes;
  }

  countByStatus(): Record<string, number> {
    const rows = this.db.prepare("SELECT status, COUNT(*) AS n FROM sandboxes GROUP BY status").all() as Array<{ status: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  close(): void {
    this.db.close();
  }
}
