/**
 * Opens the gateway's store: Kysely over SQLite (better-sqlite3) or PostgreSQL (pg), chosen by URL.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { CompiledQuery, Kysely, PostgresDialect, SqliteDialect, SqliteDriver, sql, type DatabaseConnection, type Driver, type SqliteDialectConfig } from 'kysely';
import type { Database } from './schema.ts';
import { runMigrations } from './migrations.ts';

/** An open store. */
export interface Store {
  /** Typed query builder over the gateway tables. */
  db: Kysely<Database>;
  dialect: 'sqlite' | 'postgres';
  /**
   * SQLite only: the native better-sqlite3 handle, for hot paths that use cached prepared statements
   * (the audit journal). Undefined on PostgreSQL.
   */
  sqlite?: BetterSqlite3.Database;
  /**
   * Applies pending migrations (safe to call repeatedly and from several processes at once).
   * @throws Error naming the failed migration, with the driver error as `cause`.
   */
  migrate(): Promise<void>;
  /** Closes the connection / pool. Idempotent. The store is unusable afterwards. */
  close(): Promise<void>;
}

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Diagnostic lines (never containing credentials). */
  log?: (msg: string) => void;
  /**
   * PostgreSQL only: use this schema (sets `search_path` on every pooled connection; created by
   * `migrate()` if missing). Must match `/^[a-z_][a-z0-9_]{0,62}$/`. Default: the server's
   * `search_path` (normally `public`). Ignored for SQLite.
   */
  pgSchema?: string;
}

const PG_INT8_OID = 20;
const PG_SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Type parsers for our pools: BIGINT (int8) → JS number, because times are ms since the epoch and
 * counts fit easily. Values beyond 2^53 would lose precision (none of our columns get there).
 * Applied per pool rather than via the global `pg.types.setTypeParser`, so other pg users in the
 * process are unaffected.
 */
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === PG_INT8_OID && format !== 'binary') return (v: string) => Number(v);
    return format === undefined ? pg.types.getTypeParser(oid) : pg.types.getTypeParser(oid, format as 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * Opens a store.
 *
 * @param url `sqlite:<path>` (path relative to `process.cwd()`, parent directory created;
 *   `sqlite:///abs/path` also accepted), `sqlite::memory:`, or `postgres://…` / `postgresql://…`
 *   (pool of at most 10 connections; connectivity is checked before returning).
 * @throws Error for an unsupported or malformed URL (names only the scheme, never credentials), when
 *   the SQLite file cannot be opened, or when PostgreSQL is unreachable (message names host/port/db only).
 */
export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<Store> {
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'sqlite') return openSqlite(url.slice('sqlite:'.length), opts);
  if (scheme === 'postgres' || scheme === 'postgresql') return openPostgres(url, opts);
  throw new Error(
    scheme === undefined
      ? 'Unsupported database URL: no scheme (expected sqlite:<path>, sqlite::memory: or postgres://…)'
      : `Unsupported database URL scheme "${scheme}:" (expected sqlite:<path>, sqlite::memory: or postgres://…)`,
  );
}

/**
 * Kysely's SQLite dialect, with transactions that start with `BEGIN IMMEDIATE` (take the write lock
 * at once) instead of a deferred `BEGIN`. Other connections write to the same file (the store worker,
 * other replicas, the CLI); a deferred transaction that reads and then writes fails at once with
 * SQLITE_BUSY when another connection committed in between (the busy timeout does not apply to that
 * upgrade), whereas an immediate one waits for the lock (busy_timeout) and then sees the latest data.
 */
class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;
  constructor(config: SqliteDialectConfig) {
    super(config);
    this.#config = config;
  }
  override createDriver(): Driver {
    return new (class extends SqliteDriver {
      override async beginTransaction(connection: DatabaseConnection): Promise<void> {
        await connection.executeQuery(CompiledQuery.raw('begin immediate'));
      }
    })(this.#config);
  }
}

function openSqlite(rest: string, opts: OpenStoreOptions): Store {
  let file: string;
  if (rest === ':memory:') {
    file = ':memory:';
  } else {
    const p = rest.startsWith('//') ? rest.slice(2) : rest;
    if (p === '') throw new Error('Invalid sqlite URL: empty path (expected sqlite:<path> or sqlite::memory:)');
    file = resolve(process.cwd(), p);
    mkdirSync(dirname(file), { recursive: true });
  }
  let native: BetterSqlite3.Database;
  try {
    native = new BetterSqlite3(file, { timeout: 5000 });
    native.pragma('journal_mode = WAL');
    native.pragma('synchronous = NORMAL');
    // Checkpoint the WAL every ~40 MB (10,000 pages) instead of every ~4 MB: a checkpoint (and its
    // fsync) then happens ten times less often behind a commit, which is what holds up the audit
    // integrator and the journal under load; the WAL file is truncated back to 64 MiB afterwards.
    native.pragma('wal_autocheckpoint = 10000');
    native.pragma('journal_size_limit = 67108864');
    native.pragma('busy_timeout = 5000');
    native.pragma('foreign_keys = ON');
  } catch (err) {
    throw new Error(`Cannot open SQLite database ${file}: ${(err as Error).message}`, { cause: err });
  }
  const db = new Kysely<Database>({ dialect: new ImmediateSqliteDialect({ database: native }) });
  opts.log?.(`store: sqlite ${file}`);
  let closed = false;
  return {
    db,
    dialect: 'sqlite',
    sqlite: native,
    async migrate() {
      await runMigrations(db, { dialect: 'sqlite', ...(opts.log ? { log: opts.log } : {}) });
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}

/** `host:port/database` of a PostgreSQL URL, for messages; never user or password. */
function describePg(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || 'localhost'}${u.port ? `:${u.port}` : ''}${u.pathname || ''}`;
  } catch {
    return '(unparseable URL)';
  }
}

/** Removes any occurrence of the URL's password from a message (belt and braces). */
function scrub(msg: string, url: string): string {
  try {
    const u = new URL(url);
    const secrets = [u.password, decodeURIComponent(u.password)].filter((s) => s.length > 0);
    let out = msg;
    for (const s of secrets) out = out.split(s).join('***');
    return out.split(url).join(describePg(url));
  } catch {
    return msg;
  }
}

async function openPostgres(url: string, opts: OpenStoreOptions): Promise<Store> {
  const where = describePg(url);
  const schema = opts.pgSchema;
  if (schema !== undefined && !PG_SCHEMA_RE.test(schema)) {
    throw new Error(`Invalid pgSchema "${schema}": must match ${PG_SCHEMA_RE}`);
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    types: pgTypes,
    ...(schema !== undefined ? { options: `-c search_path=${schema}` } : {}),
  });
  // An idle client's error (e.g. server restart) is emitted on the pool; unhandled it would crash the process.
  pool.on('error', (err) => opts.log?.(`store: postgres pool error (${where}): ${scrub(err.message, url)}`));
  try {
    const client = await pool.connect();
    client.release();
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(`Cannot connect to PostgreSQL at ${where}: ${scrub((err as Error).message, url)}`);
  }
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  opts.log?.(`store: postgres ${where}${schema !== undefined ? ` schema ${schema}` : ''}`);
  let closed = false;
  return {
    db,
    dialect: 'postgres',
    async migrate() {
      // Pin Kysely's bookkeeping tables to the schema our tables go to: without it, the migrator's
      // existence check would also see `kysely_migration` tables in other schemas of the database.
      let target = schema;
      if (target === undefined) {
        const r = await sql<{ s: string | null }>`select current_schema() as s`.execute(db);
        target = r.rows[0]?.s ?? undefined;
        if (target === undefined) {
          throw new Error('Database migration failed: no existing schema in the PostgreSQL search_path');
        }
      }
      await runMigrations(db, {
        dialect: 'postgres',
        migrationTableSchema: target,
        ...(opts.log ? { log: opts.log } : {}),
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}
