/**
 * Request rows and commitment salts that travel in the audit queue (migration
 * `0007_audit_queue_rows`).
 *
 * A data-plane request's entry, its `requests` row and its commitment salt used to be three inserts
 * in the journal's commit, which the response waits for: five B-trees for the row (table, primary
 * key, three indexes), one for the salt, one for the queue — a WAL frame each per commit, whatever
 * the number of items. Now the journal queues the entry with its row (the normalised row's columns
 * as `audit_queue.req_<column>`, same types) and salt (`audit_queue.salt`) in the queue row itself:
 * one B-tree per commit. (Plain columns, not JSON: moving 19 columns out of JSON with
 * `json_extract` cost 8.2–8.8 µs per row against 4.9–5.0 µs from columns; and PostgreSQL checks the
 * types when the row is queued.) The integrator moves both into `requests` and `audit_secrets` in the same
 * transaction that integrates the entry and deletes its queue row (once per tile's worth of entries),
 * so the row, the salt and the entry still appear atomically, and a crash never loses one of them:
 * until integration they are in the queue, after it in their tables.
 *
 * Consequences:
 * - a request's row is visible to the usage API (`requests`) once its entry is integrated — within
 *   the integrator's round interval (`audit.checkpoint_interval_ms`), not at the response;
 * - `sovra audit erase` also clears a salt still in the queue (`audit_queue.salt = NULL`), and the
 *   move copies salts from the table inside the integration transaction, so an erasure made before
 *   integration is never undone;
 * - rows whose id is already in `requests` (impossible for gateway ids, UUIDv7) are skipped rather
 *   than fail the integration, which would stop the log.
 */
import { REQUEST_COLUMNS } from '../store/requests.ts';

type RequestColumn = (typeof REQUEST_COLUMNS)[number];

/**
 * The `requests` columns a queue row carries, as `audit_queue.req_<column>`: every column but `id`,
 * which is the entry id (`audit_queue.entry_id`). `req_operation` (never null in a request row) marks
 * a queue row that carries one.
 */
export const QUEUED_REQUEST_COLUMNS: readonly Exclude<RequestColumn, 'id'>[] = REQUEST_COLUMNS.filter((c): c is Exclude<RequestColumn, 'id'> => c !== 'id');

/** `audit_queue`'s column for request column `c`. */
export const queuedColumn = (c: Exclude<RequestColumn, 'id'>): `req_${Exclude<RequestColumn, 'id'>}` => `req_${c}`;

/** The types of the `requests` columns (migrations 0001 and 0004), which `audit_queue.req_*` repeat. */
export const REQUEST_COLUMN_TYPES: Readonly<Record<RequestColumn, 'text' | 'integer' | 'bigint'>> = {
  id: 'text',
  ts: 'bigint',
  key_id: 'text',
  tenant_id: 'text',
  operation: 'text',
  model: 'text',
  backend_id: 'text',
  upstream_model: 'text',
  stream: 'integer',
  status: 'integer',
  outcome: 'text',
  error_code: 'text',
  latency_ms: 'integer',
  ttfb_ms: 'integer',
  prompt_tokens: 'integer',
  completion_tokens: 'integer',
  total_tokens: 'integer',
  usage_source: 'text',
  cost_micros: 'bigint',
};

/** SQL condition: the queue row carries a request row. */
export const CARRIES_REQUEST = 'req_operation IS NOT NULL';

/**
 * The two statements that move the payloads of the queue rows selected by `where` (an SQL condition
 * on `audit_queue`, e.g. `seq BETWEEN ? AND ?`, with its own placeholders) into `audit_secrets` and
 * `requests`. Run them inside the transaction that deletes those queue rows.
 * @param dialect the store's dialect (SQLite: `INSERT OR IGNORE`; PostgreSQL: `ON CONFLICT DO NOTHING`)
 * @returns `[salts, requests]` SQL texts
 */
export function moveQueuedRowsSql(dialect: 'sqlite' | 'postgres', where: string): [string, string] {
  const into = `requests (id, ${QUEUED_REQUEST_COLUMNS.join(', ')})`;
  const select = `SELECT entry_id, ${QUEUED_REQUEST_COLUMNS.map(queuedColumn).join(', ')} FROM audit_queue WHERE (${where}) AND ${CARRIES_REQUEST} ORDER BY seq`;
  const salts = 'audit_secrets (entry_id, salt, created_at)';
  const saltSelect = `SELECT entry_id, salt, created_at FROM audit_queue WHERE (${where}) AND salt IS NOT NULL ORDER BY seq`;
  if (dialect === 'sqlite') return [`INSERT OR IGNORE INTO ${salts} ${saltSelect}`, `INSERT OR IGNORE INTO ${into} ${select}`];
  return [`INSERT INTO ${salts} ${saltSelect} ON CONFLICT DO NOTHING`, `INSERT INTO ${into} ${select} ON CONFLICT DO NOTHING`];
}

/** SQL that clears the payload (request columns and salt) of the queue rows selected by `where`. */
export function clearQueuedRowsSql(where: string): string {
  return `UPDATE audit_queue SET salt = NULL, ${QUEUED_REQUEST_COLUMNS.map((c) => `${queuedColumn(c)} = NULL`).join(', ')} WHERE ${where}`;
}
