/**
 * Request rows and commitment salts that travel in the audit queue (migration
 * `0007_audit_queue_rows`).
 *
 * A data-plane request's entry, its `requests` row and its commitment salt used to be three inserts
 * in the journal's commit, which the response waits for: five B-trees for the row (table, primary
 * key, three indexes), one for the salt, one for the queue — a WAL frame each per commit, whatever
 * the number of items. Now the journal queues the entry with its row (canonical JSON of the
 * normalised row, `audit_queue.request`) and salt (`audit_queue.salt`) in the queue row itself: one
 * B-tree per commit. The integrator moves both into `requests` and `audit_secrets` in the same
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

/** PostgreSQL types of the `requests` columns that are not `text` (migrations 0001 and 0004). */
const PG_CASTS: Partial<Record<(typeof REQUEST_COLUMNS)[number], string>> = {
  ts: 'bigint',
  stream: 'integer',
  status: 'integer',
  latency_ms: 'integer',
  ttfb_ms: 'integer',
  prompt_tokens: 'integer',
  completion_tokens: 'integer',
  total_tokens: 'integer',
  cost_micros: 'bigint',
};

/**
 * The two statements that move the payloads of the queue rows selected by `where` (an SQL condition
 * on `audit_queue`, e.g. `seq BETWEEN ? AND ?`, with its own placeholders) into `audit_secrets` and
 * `requests`. Run them inside the transaction that deletes those queue rows.
 * @param dialect the store's dialect (SQLite: `json_extract`, `INSERT OR IGNORE`; PostgreSQL: `->>`
 *   with casts, `ON CONFLICT DO NOTHING`)
 * @returns `[salts, requests]` SQL texts
 */
export function moveQueuedRowsSql(dialect: 'sqlite' | 'postgres', where: string): [string, string] {
  const cols = REQUEST_COLUMNS.join(', ');
  if (dialect === 'sqlite') {
    return [
      `INSERT OR IGNORE INTO audit_secrets (entry_id, salt, created_at) SELECT entry_id, salt, created_at FROM audit_queue WHERE (${where}) AND salt IS NOT NULL ORDER BY seq`,
      `INSERT OR IGNORE INTO requests (${cols}) SELECT ${REQUEST_COLUMNS.map((c) => `json_extract(request, '$.${c}')`).join(', ')} FROM audit_queue WHERE (${where}) AND request IS NOT NULL ORDER BY seq`,
    ];
  }
  const pick = (c: (typeof REQUEST_COLUMNS)[number]) => (PG_CASTS[c] ? `(request ->> '${c}')::${PG_CASTS[c]}` : `(request ->> '${c}')`);
  return [
    `INSERT INTO audit_secrets (entry_id, salt, created_at) SELECT entry_id, salt, created_at FROM audit_queue WHERE (${where}) AND salt IS NOT NULL ORDER BY seq ON CONFLICT DO NOTHING`,
    `INSERT INTO requests (${cols}) SELECT ${REQUEST_COLUMNS.map(pick).join(', ')} FROM audit_queue WHERE (${where}) AND request IS NOT NULL ORDER BY seq ON CONFLICT DO NOTHING`,
  ];
}
