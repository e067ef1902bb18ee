/**
 * Schema migrations, defined in code (no migration files on disk) and run with Kysely's `Migrator`.
 *
 * One schema works on both dialects: text ids, `bigint` for millisecond times (INTEGER affinity on
 * SQLite), `integer` for counts and 0/1 flags.
 *
 * Concurrency:
 * - PostgreSQL: Kysely's migrator takes a session-level advisory lock (`pg_advisory_lock`, one fixed
 *   id per database) around the whole run and runs pending migrations inside one transaction, so two
 *   processes starting at once serialise; the second one finds nothing pending. Creation of the
 *   bookkeeping tables (`kysely_migration`, `kysely_migration_lock`) happens before the lock, but
 *   Kysely re-checks for existence when a concurrent `create ... if not exists` fails.
 * - SQLite: Kysely takes no lock there, so the whole run is wrapped in `BEGIN IMMEDIATE` … `COMMIT`
 *   on the store's single connection: a second process waits for the write lock (`busy_timeout`),
 *   then sees the migrations already applied. A failed migration is rolled back as a whole.
 */
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import { m0003_tenancy } from './migration-0003-tenancy.ts';
import { m0004_metering } from './migration-0004-metering.ts';
import { m0005_audit_leaf_hash } from './migration-0005-audit-leaf-hash.ts';
import { m0006_audit_leaf_lookup } from './migration-0006-audit-leaf-lookup.ts';
import { m0007_audit_queue_rows } from './migration-0007-audit-queue-rows.ts';
import { m0008_audit_content } from './migration-0008-audit-content.ts';

/** Migration `0001_init`: tenants, api_keys, requests and their indexes. */
const m0001_init: Migration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema
      .createTable('tenants')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('tenants_name_uq').unique().on('tenants').column('name').execute();

    await db.schema
      .createTable('api_keys')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('tenant_id', 'text', (c) => c.notNull().references('tenants.id'))
      .addColumn('name', 'text')
      .addColumn('digest', 'text', (c) => c.notNull())
      .addColumn('prefix', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('revoked_at', 'bigint')
      .execute();
    await db.schema.createIndex('api_keys_digest_uq').unique().on('api_keys').column('digest').execute();
    await db.schema.createIndex('api_keys_tenant_id_idx').on('api_keys').column('tenant_id').execute();

    // No foreign keys on requests: the request record must outlive keys/tenants and inserts stay cheap.
    await db.schema
      .createTable('requests')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('ts', 'bigint', (c) => c.notNull())
      .addColumn('key_id', 'text')
      .addColumn('tenant_id', 'text')
      .addColumn('operation', 'text', (c) => c.notNull())
      .addColumn('model', 'text')
      .addColumn('backend_id', 'text')
      .addColumn('upstream_model', 'text')
      .addColumn('stream', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('status', 'integer', (c) => c.notNull())
      .addColumn('outcome', 'text', (c) => c.notNull())
      .addColumn('error_code', 'text')
      .addColumn('latency_ms', 'integer', (c) => c.notNull())
      .addColumn('ttfb_ms', 'integer')
      .addColumn('prompt_tokens', 'integer')
      .addColumn('completion_tokens', 'integer')
      .addColumn('total_tokens', 'integer')
      .addColumn('usage_source', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('requests_ts_idx').on('requests').column('ts').execute();
    await db.schema.createIndex('requests_tenant_ts_idx').on('requests').columns(['tenant_id', 'ts']).execute();
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropTable('requests').execute();
    await db.schema.dropTable('api_keys').execute();
    await db.schema.dropTable('tenants').execute();
  },
};

/**
 * Migration `0002_audit`: the transparency log's tables (see `src/audit/`, spec
 * `shared/spec/transparency-log.md`). Binary columns are `blob` on SQLite and `bytea` on PostgreSQL;
 * the queue's `seq` is the rowid `integer primary key` (SQLite) or `bigserial` (PostgreSQL).
 */
function m0002_audit(dialect: 'sqlite' | 'postgres'): Migration {
  const blob = dialect === 'sqlite' ? 'blob' : 'bytea';
  return {
    async up(db: Kysely<any>): Promise<void> {
      if (dialect === 'sqlite') {
        // `seq` is the rowid (max + 1 on insert, so increasing while rows exist). No AUTOINCREMENT:
        // it would rewrite `sqlite_sequence` in every journal transaction, and seq values are never
        // referenced once their rows are deleted (integration reads and deletes synchronously).
        await sql`create table audit_queue (seq integer primary key, entry_id text not null, entry blob not null, created_at bigint not null)`.execute(db);
      } else {
        await sql`create table audit_queue (seq bigserial primary key, entry_id text not null, entry bytea not null, created_at bigint not null)`.execute(db);
      }
      if (dialect === 'sqlite') {
        // Same constraints (entry_id and idx both unique), but idx is the rowid: appends in index
        // order are cheap and one B-tree fewer is maintained per integrated entry.
        await sql`create table audit_index (idx integer primary key, entry_id text not null unique, leaf_hash text not null)`.execute(db);
      } else {
        await db.schema
          .createTable('audit_index')
          .addColumn('entry_id', 'text', (c) => c.primaryKey())
          .addColumn('idx', 'bigint', (c) => c.notNull().unique())
          .addColumn('leaf_hash', 'text', (c) => c.notNull())
          .execute();
      }
      await db.schema.createIndex('audit_index_leaf_hash_idx').on('audit_index').column('leaf_hash').execute();
      await db.schema
        .createTable('audit_tiles')
        .addColumn('level', 'integer', (c) => c.notNull())
        .addColumn('idx', 'bigint', (c) => c.notNull())
        .addColumn('width', 'integer', (c) => c.notNull())
        .addColumn('data', sql.raw(blob), (c) => c.notNull())
        .addPrimaryKeyConstraint('audit_tiles_pk', ['level', 'idx', 'width'])
        .execute();
      await db.schema
        .createTable('audit_bundles')
        .addColumn('idx', 'bigint', (c) => c.notNull())
        .addColumn('width', 'integer', (c) => c.notNull())
        .addColumn('data', sql.raw(blob), (c) => c.notNull())
        .addPrimaryKeyConstraint('audit_bundles_pk', ['idx', 'width'])
        .execute();
      await db.schema
        .createTable('audit_checkpoints')
        .addColumn('size', 'bigint', (c) => c.primaryKey())
        .addColumn('note', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('audit_meta')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      if (dialect === 'sqlite') {
        // WITHOUT ROWID: one B-tree keyed by entry_id instead of a table plus its key index, so a
        // journal transaction touches one page fewer.
        await sql`create table audit_secrets (entry_id text primary key, salt blob not null, created_at bigint not null) without rowid`.execute(db);
      } else {
        await db.schema
          .createTable('audit_secrets')
          .addColumn('entry_id', 'text', (c) => c.primaryKey())
          .addColumn('salt', sql.raw(blob), (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();
      }
    },
    async down(db: Kysely<any>): Promise<void> {
      for (const t of ['audit_secrets', 'audit_meta', 'audit_checkpoints', 'audit_bundles', 'audit_tiles', 'audit_index', 'audit_queue']) {
        await db.schema.dropTable(t).execute();
      }
    },
  };
}

/** All migrations, by name; names sort in application order. Never edit one that has shipped: add a new one. */
export function migrationsFor(dialect: 'sqlite' | 'postgres'): Readonly<Record<string, Migration>> {
  return Object.freeze({
    '0001_init': m0001_init,
    '0002_audit': m0002_audit(dialect),
    '0003_tenancy': m0003_tenancy(dialect),
    '0004_metering': m0004_metering(dialect),
    '0005_audit_leaf_hash': m0005_audit_leaf_hash(dialect),
    '0006_audit_leaf_lookup': m0006_audit_leaf_lookup(dialect),
    '0007_audit_queue_rows': m0007_audit_queue_rows(dialect),
    '0008_audit_content': m0008_audit_content(dialect),
  });
}

/** The SQLite migrations (kept for callers that list migration names; the names are dialect-independent). */
export const migrations: Readonly<Record<string, Migration>> = migrationsFor('sqlite');

/** In-code migration provider over {@link migrationsFor} for one dialect. */
export function migrationProvider(dialect: 'sqlite' | 'postgres'): MigrationProvider {
  return {
    async getMigrations() {
      return { ...migrationsFor(dialect) };
    },
  };
}

/** Options of {@link runMigrations}. */
export interface RunMigrationsOptions {
  dialect: 'sqlite' | 'postgres';
  /**
   * PostgreSQL only: schema holding Kysely's bookkeeping tables (created if missing). Should be the
   * schema the application tables are created in (first entry of `search_path`).
   */
  migrationTableSchema?: string;
  /** Receives one line per applied migration. */
  log?: (msg: string) => void;
}

/**
 * Applies every pending migration. Resolves with the names of the migrations applied by this call
 * (empty when the database was already up to date).
 *
 * @throws Error `Database migration "<name>" failed: <cause>` (with `cause` set) when a migration
 *   fails, or `Database migration failed: <cause>` when the migrator itself fails (e.g. lost connection).
 */
export async function runMigrations(db: Kysely<any>, opts: RunMigrationsOptions): Promise<string[]> {
  if (opts.dialect === 'sqlite') {
    return db.connection().execute(async (conn) => {
      await sql`begin immediate`.execute(conn);
      let applied: string[];
      try {
        applied = await migrateToLatest(conn, opts);
      } catch (err) {
        await sql`rollback`.execute(conn).catch(() => undefined);
        throw err;
      }
      await sql`commit`.execute(conn);
      for (const name of applied) opts.log?.(`applied migration ${name}`);
      return applied;
    });
  }
  const applied = await migrateToLatest(db, opts);
  for (const name of applied) opts.log?.(`applied migration ${name}`);
  return applied;
}

async function migrateToLatest(db: Kysely<any>, opts: RunMigrationsOptions): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: migrationProvider(opts.dialect),
    ...(opts.migrationTableSchema ? { migrationTableSchema: opts.migrationTableSchema } : {}),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error');
    const cause = error instanceof Error ? error.message : String(error);
    throw new Error(
      failed
        ? `Database migration "${failed.migrationName}" failed: ${cause}`
        : `Database migration failed: ${cause}`,
      { cause: error },
    );
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
