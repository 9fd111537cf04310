/**
 * The control plane's store (SQLite in the data dir). It keeps what the
 * server decided about each sandbox; the runtime keeps what is alive.
 */
import Database from "better-sqlite3";
import { join } from "node:path";
import type { NetworkPolicy, PreparedImage, Resources, SandboxStatus, TemplateStatus, VolumeMount } from "@agentbox/protocol";

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
  /** The pool that made it; `claimed` false while it waits idle in that pool. */
  pool: string | undefined;
  claimed: boolean;
  volumeMounts: VolumeMount[];
  pausedAt: string | undefined;
}

/** A template as stored: the user's spec plus what importing its image gave. */
export interface TemplateRecord {
  name: string;
  image: string;
  resources: Resources;
  volumeMounts: VolumeMount[];
  env: Record<string, string>;
  network: NetworkPolicy;
  /** As given (undefined: the image's default, else "user"). */
  user: string | undefined;
  /** As given (undefined: the image's WorkingDir, else "/workspace"). */
  workdir: string | undefined;
  status: TemplateStatus;
  statusMessage: string | undefined;
  /** The imported image (undefined until ready). */
  prepared: PreparedImage | undefined;
  /** For snapshots: the template it was layered on, and its own layers on top of the parent's. */
  parent: string | undefined;
  extraLayers: string[];
  createdAt: string;
  updatedAt: string;
}

export interface VolumeRecord {
  name: string;
  size: string;
  createdAt: string;
}

export interface PoolRecord {
  name: string;
  template: string;
  replicas: number;
  createdAt: string;
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
  pool: string | null;
  claimed: number;
  volume_mounts: string;
  paused_at: string | null;
}

/** An exposed port: reachable through the server with the API key or its own token. */
export interface PortRecord {
  sandboxId: string;
  port: number;
  token: string;
  createdAt: string;
}

interface PortRow {
  sandbox_id: string;
  port: number;
  token: string;
  created_at: string;
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
CREATE TABLE IF NOT EXISTS templates (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (name TEXT PRIMARY KEY, size TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ports (
  sandbox_id TEXT NOT NULL,
  port INTEGER NOT NULL,
  token TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (sandbox_id, port)
);
CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, template TEXT NOT NULL, replicas INTEGER NOT NULL, created_at TEXT NOT NULL);
`;

/** Columns added to `sandboxes` after its first version: added to older databases on open. */
const SANDBOX_COLUMNS: Array<[string, string]> = [
  ["pool", "TEXT"],
  ["claimed", "INTEGER NOT NULL DEFAULT 1"],
  ["volume_mounts", "TEXT NOT NULL DEFAULT '[]'"],
  ["paused_at", "TEXT"],
];

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
    pool: r.pool ?? undefined,
    claimed: r.claimed !== 0,
    volumeMounts: JSON.parse(r.volume_mounts) as VolumeMount[],
    pausedAt: r.paused_at ?? undefined,
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
    const have = new Set((this.db.prepare("PRAGMA table_info(sandboxes)").all() as Array<{ name: string }>).map((c) => c.name));
    for (const [name, type] of SANDBOX_COLUMNS) if (!have.has(name)) this.db.exec(`ALTER TABLE sandboxes ADD COLUMN ${name} ${type}`);
    this.db.exec("CREATE INDEX IF NOT EXISTS sandboxes_pool ON sandboxes(pool, claimed)");
  }

  insertSandbox(s: SandboxRecord): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, template, status, status_message, created_at, expires_at, metadata, env, resources, network, limits_off, workdir,
           pool, claimed, volume_mounts, paused_at)
         VALUES (@id, @template, @status, @statusMessage, @createdAt, @expiresAt, @metadata, @env, @resources, @network, @limitsOff, @workdir,
           @pool, @claimed, @volumeMounts, @pausedAt)`,
      )
      .run({
        ...s,
        statusMessage: s.statusMessage ?? null,
        pool: s.pool ?? null,
        claimed: s.claimed ? 1 : 0,
        volumeMounts: JSON.stringify(s.volumeMounts),
        pausedAt: s.pausedAt ?? null,
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

  listSandboxes(filter: { status?: SandboxStatus; template?: string; metadata?: Record<string, string>; pool?: string; claimed?: boolean } = {}): SandboxRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.pool !== undefined) {
      where.push("pool = ?");
      args.push(filter.pool);
    }
    if (filter.claimed !== undefined) where.push(filter.claimed ? "claimed = 1" : "claimed = 0");
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

  setPaused(id: string, pausedAt: string | undefined): void {
    this.db.prepare("UPDATE sandboxes SET status = ?, paused_at = ? WHERE id = ?").run(pausedAt ? "paused" : "ready", pausedAt ?? null, id);
  }

  /**
   * Hand the oldest idle ready sandbox of `pool` to a caller: one statement, so two
   * claims can never get the same sandbox.
   */
  claimFromPool(pool: string, update: { expiresAt: string; metadata: Record<string, string>; env: Record<string, string> }): SandboxRecord | undefined {
    const row = this.db
      .prepare(
        `UPDATE sandboxes SET claimed = 1, expires_at = @expiresAt, metadata = @metadata, env = json_patch(env, @env)
         WHERE id = (SELECT id FROM sandboxes WHERE pool = @pool AND claimed = 0 AND status = 'ready' ORDER BY created_at, id LIMIT 1)
         RETURNING *`,
      )
      .get({ pool, expiresAt: update.expiresAt, metadata: JSON.stringify(update.metadata), env: JSON.stringify(update.env) }) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  setNetwork(id: string, network: NetworkPolicy): void {
    this.db.prepare("UPDATE sandboxes SET network = ? WHERE id = ?").run(JSON.stringify(network), id);
  }

  putPort(p: PortRecord): void {
    this.db
      .prepare("INSERT OR REPLACE INTO ports (sandbox_id, port, token, created_at) VALUES (?, ?, ?, ?)")
      .run(p.sandboxId, p.port, p.token, p.createdAt);
  }

  getPort(sandboxId: string, port: number): PortRecord | undefined {
    const r = this.db.prepare("SELECT * FROM ports WHERE sandbox_id = ? AND port = ?").get(sandboxId, port) as PortRow | undefined;
    return r ? { sandboxId: r.sandbox_id, port: r.port, token: r.token, createdAt: r.created_at } : undefined;
  }

  listPorts(sandboxId: string): PortRecord[] {
    const rows = this.db.prepare("SELECT * FROM ports WHERE sandbox_id = ? ORDER BY port").all(sandboxId) as PortRow[];
    return rows.map((r) => ({ sandboxId: r.sandbox_id, port: r.port, token: r.token, createdAt: r.created_at }));
  }

  /** Without `port`: every port of the sandbox. */
  deletePorts(sandboxId: string, port?: number): number {
    if (port === undefined) return this.db.prepare("DELETE FROM ports WHERE sandbox_id = ?").run(sandboxId).changes;
    return this.db.prepare("DELETE FROM ports WHERE sandbox_id = ? AND port = ?").run(sandboxId, port).changes;
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

  // ---------------------------------------------------------------- templates, volumes, pools

  putTemplate(t: TemplateRecord): void {
    this.db
      .prepare("INSERT INTO templates (name, spec, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec = excluded.spec")
      .run(t.name, JSON.stringify(t), t.createdAt);
  }

  getTemplate(name: string): TemplateRecord | undefined {
    const row = this.db.prepare("SELECT spec FROM templates WHERE name = ?").get(name) as { spec: string } | undefined;
    return row ? (JSON.parse(row.spec) as TemplateRecord) : undefined;
  }

  listTemplates(): TemplateRecord[] {
    return (this.db.prepare("SELECT spec FROM templates ORDER BY created_at, name").all() as Array<{ spec: string }>).map((r) => JSON.parse(r.spec) as TemplateRecord);
  }

  deleteTemplate(name: string): boolean {
    return this.db.prepare("DELETE FROM templates WHERE name = ?").run(name).changes > 0;
  }

  insertVolume(v: VolumeRecord): void {
    this.db.prepare("INSERT INTO volumes (name, size, created_at) VALUES (?, ?, ?)").run(v.name, v.size, v.createdAt);
  }

  getVolume(name: string): VolumeRecord | undefined {
    const row = this.db.prepare("SELECT name, size, created_at AS createdAt FROM volumes WHERE name = ?").get(name) as VolumeRecord | undefined;
    return row;
  }

  listVolumes(): VolumeRecord[] {
    return this.db.prepare("SELECT name, size, created_at AS createdAt FROM volumes ORDER BY created_at, name").all() as VolumeRecord[];
  }

  deleteVolume(name: string): boolean {
    return this.db.prepare("DELETE FROM volumes WHERE name = ?").run(name).changes > 0;
  }

  putPool(p: PoolRecord): void {
    this.db
      .prepare(
        "INSERT INTO pools (name, template, replicas, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET template = excluded.template, replicas = excluded.replicas",
      )
      .run(p.name, p.template, p.replicas, p.createdAt);
  }

  getPool(name: string): PoolRecord | undefined {
    return this.db.prepare("SELECT name, template, replicas, created_at AS createdAt FROM pools WHERE name = ?").get(name) as PoolRecord | undefined;
  }

  listPools(): PoolRecord[] {
    return this.db.prepare("SELECT name, template, replicas, created_at AS createdAt FROM pools ORDER BY created_at, name").all() as PoolRecord[];
  }

  deletePool(name: string): boolean {
    return this.db.prepare("DELETE FROM pools WHERE name = ?").run(name).changes > 0;
  }

  countByStatus(): Record<string, number> {
    const rows = this.db.prepare("SELECT status, COUNT(*) AS n FROM sandboxes GROUP BY status").all() as Array<{ status: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  close(): void {
    this.db.close();
  }
}
