/**
 * Migration `0008_audit_content`: `audit_content (entry_id, key_id, nonce, data, created_at)`, the
 * erasable store of retained request and response bytes (content retention, `src/audit/content.ts`):
 * one row per retained entry, AES-256-GCM sealed, never part of the log. `created_at` is indexed for
 * the age-based purge (`audit.content_retention.max_age_days`). `down` drops the table (and with it
 * any retained content).
 */
import { sql, type Kysely, type Migration } from 'kysely';

/** Builds migration `0008_audit_content` for `dialect`. */
export function m0008_audit_content(dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>): Promise<void> {
      if (dialect === 'sqlite') {
        await sql`create table audit_content (entry_id text primary key, key_id text not null, nonce blob not null, data blob not null, created_at integer not null) without rowid`.execute(db);
      } else {
        await sql`create table audit_content (entry_id text primary key, key_id text not null, nonce bytea not null, data bytea not null, created_at bigint not null)`.execute(db);
      }
      await db.schema.createIndex('audit_content_created_at_idx').on('audit_content').column('created_at').execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      await db.schema.dropTable('audit_content').execute();
    },
  };
}
