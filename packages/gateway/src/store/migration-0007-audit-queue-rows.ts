/**
 * Migration `0007_audit_queue_rows`: a queued entry carries its request row and commitment salt
 * until it is integrated (see `src/audit/queued-rows.ts` for why and how they move on).
 *
 * - `audit_queue.req_<column>` for every `requests` column but `id` (the entry id), with the same
 *   type; `req_operation` is set exactly when the row carries a request row;
 * - `audit_queue.salt`: the entry's 32-byte commitment salt (`blob` / `bytea`), or null.
 *
 * Existing queue rows get nulls (their rows and salts were written to their tables already).
 * `down` first moves every payload still queued into `requests` and `audit_secrets` (nothing is
 * lost), then drops the columns. Both directions run inside the migration's transaction.
 */
import { sql, type Kysely, type Migration } from 'kysely';
import { QUEUED_REQUEST_COLUMNS, REQUEST_COLUMN_TYPES, moveQueuedRowsSql, queuedColumn } from '../audit/queued-rows.ts';

/** Builds migration `0007_audit_queue_rows` for `dialect`. */
export function m0007_audit_queue_rows(dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>): Promise<void> {
      for (const c of QUEUED_REQUEST_COLUMNS) await sql.raw(`alter table audit_queue add column ${queuedColumn(c)} ${REQUEST_COLUMN_TYPES[c]}`).execute(db);
      await sql.raw(`alter table audit_queue add column salt ${dialect === 'sqlite' ? 'blob' : 'bytea'}`).execute(db);
    },
    async down(db: Kysely<any>): Promise<void> {
      for (const q of moveQueuedRowsSql(dialect, 'true')) await sql.raw(q).execute(db);
      await sql`alter table audit_queue drop column salt`.execute(db);
      for (const c of QUEUED_REQUEST_COLUMNS) await sql.raw(`alter table audit_queue drop column ${queuedColumn(c)}`).execute(db);
    },
  };
}
