/**
 * The requests table: its columns, row normalisation for both dialects, and reads. Rows are written
 * by the audit journal (src/audit/journal.ts): with the audit log on, queued with the request's log
 * entry and moved here when it is integrated (src/audit/queued-rows.ts); with it off, directly.
 */
import type { Store } from './db.ts';
import type { RequestsTable } from './schema.ts';

/** Columns of the requests table, in insert order. */
export const REQUEST_COLUMNS = [
  'id', 'ts', 'key_id', 'tenant_id', 'operation', 'model', 'backend_id', 'upstream_model', 'stream',
  'status', 'outcome', 'error_code', 'latency_ms', 'ttfb_ms', 'prompt_tokens', 'completion_tokens',
  'total_tokens', 'usage_source', 'cost_micros',
] as const satisfies ReadonlyArray<keyof RequestsTable>;
const COLUMNS = REQUEST_COLUMNS.length;
/** Rows per INSERT statement, keeping bound parameters under SQLite's (32766) and PostgreSQL's (65535) caps. */
export const ROWS_PER_STATEMENT = Math.floor(30_000 / COLUMNS);

const intOrNull = (v: number | null | undefined): number | null =>
  v === null || v === undefined || !Number.isFinite(v) ? null : Math.round(v);

/**
 * Normalises a row for both dialects: integer columns are rounded (PostgreSQL rejects `1.5` for
 * integer/bigint), booleans-as-numbers become 0/1, absent optionals become null.
 */
export function normalise(row: RequestsTable): RequestsTable {
  return {
    id: row.id,
    ts: Math.round(row.ts),
    key_id: row.key_id ?? null,
    tenant_id: row.tenant_id ?? null,
    operation: row.operation,
    model: row.model ?? null,
    backend_id: row.backend_id ?? null,
    upstream_model: row.upstream_model ?? null,
    stream: row.stream ? 1 : 0,
    status: Math.round(row.status),
    outcome: row.outcome,
    error_code: row.error_code ?? null,
    latency_ms: Math.max(0, Math.round(row.latency_ms)),
    ttfb_ms: intOrNull(row.ttfb_ms),
    prompt_tokens: intOrNull(row.prompt_tokens),
    completion_tokens: intOrNull(row.completion_tokens),
    total_tokens: intOrNull(row.total_tokens),
    usage_source: row.usage_source,
    cost_micros: intOrNull(row.cost_micros),
  };
}

/** Options of {@link listRequests}. */
export interface ListRequestsOptions {
  /** Maximum rows returned (clamped to 1…10,000). */
  limit: number;
  /** Only rows with `ts >= since` (ms since epoch). */
  since?: number;
}

/** Request rows, newest first (by `ts`, then `id`). For tests and the CLI. */
export async function listRequests(store: Store, opts: ListRequestsOptions): Promise<RequestsTable[]> {
  const limit = Math.min(10_000, Math.max(1, Math.floor(opts.limit)));
  let q = store.db.selectFrom('requests').selectAll();
  if (opts.since !== undefined) q = q.where('ts', '>=', opts.since);
  return q.orderBy('ts', 'desc').orderBy('id', 'desc').limit(limit).execute();
}
