/**
 * Migration `0005_audit_leaf_hash`: leaf hashes as 32 raw bytes, and the queue carries them.
 *
 * - `audit_queue.leaf_hash` (new, nullable): `LH(entry)` (spec §3) as computed by the journal when
 *   it commits the entry, so the integrator does not hash every entry a second time. Rows without it
 *   (queued by an older version, or by a writer that does not compute it) are hashed by the
 *   integrator as before.
 * - `audit_index.leaf_hash`: 32-byte binary instead of 64 lowercase hex characters (existing rows are
 *   converted). Its index takes random inserts (one per integrated entry); half the key size means
 *   about half the pages to dirty and to keep in the page cache. The `leaf_hash=` lookup
 *   (`AuditStorage.indexOfLeafHash`) converts the hex it is given.
 *
 * SQLite cannot change a column's type, so `audit_index` is rebuilt: the old table is renamed, the
 * new one created with the same shape (`idx integer primary key` = the rowid, so appends in index
 * order stay at the right edge of the table's B-tree; `entry_id` unique), the rows copied with
 * `unhex()`, the old table dropped and the leaf-hash index built once over the copied rows.
 * PostgreSQL converts in place (`alter column … type bytea using decode(…, 'hex')`, which rewrites
 * the table and rebuilds its indexes). Both run inside the migration's transaction (see
 * `migrations.ts`), so a failure leaves the old schema.
 */
import { sql, type Kysely, type Migration } from 'kysely';

/** Builds migration `0005_audit_leaf_hash` for `dialect`. */
export function m0005_audit_leaf_hash(dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>): Promise<void> {
      if (dialect === 'sqlite') {
        await sql`alter table audit_queue add column leaf_hash blob`.execute(db);
        await sql`alter table audit_index rename to audit_index_0004`.execute(db);
        await sql`drop index audit_index_leaf_hash_idx`.execute(db);
        await sql`create table audit_index (idx integer primary key, entry_id text not null unique, leaf_hash blob not null)`.execute(db);
        // unhex() of anything but hex is NULL, which the NOT NULL constraint refuses: a malformed
        // stored hash fails the migration instead of being lost.
        await sql`insert into audit_index (idx, entry_id, leaf_hash) select idx, entry_id, unhex(leaf_hash) from audit_index_0004 order by idx`.execute(db);
        await sql`drop table audit_index_0004`.execute(db);
      } else {
        await sql`alter table audit_queue add column leaf_hash bytea`.execute(db);
        await sql`drop index audit_index_leaf_hash_idx`.execute(db);
        await sql`alter table audit_index alter column leaf_hash type bytea using decode(leaf_hash, 'hex')`.execute(db);
      }
      await db.schema.createIndex('audit_index_leaf_hash_idx').on('audit_index').column('leaf_hash').execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      if (dialect === 'sqlite') {
        await sql`alter table audit_index rename to audit_index_0005`.execute(db);
        await sql`drop index audit_index_leaf_hash_idx`.execute(db);
        await sql`create table audit_index (idx integer primary key, entry_id text not null unique, leaf_hash text not null)`.execute(db);
        await sql`insert into audit_index (idx, entry_id, leaf_hash) select idx, entry_id, lower(hex(leaf_hash)) from audit_index_0005 order by idx`.execute(db);
        await sql`drop table audit_index_0005`.execute(db);
        await sql`alter table audit_queue drop column leaf_hash`.execute(db);
      } else {
        await sql`drop index audit_index_leaf_hash_idx`.execute(db);
        await sql`alter table audit_index alter column leaf_hash type text using encode(leaf_hash, 'hex')`.execute(db);
        await sql`alter table audit_queue drop column leaf_hash`.execute(db);
      }
      await db.schema.createIndex('audit_index_leaf_hash_idx').on('audit_index').column('leaf_hash').execute();
    },
  };
}
