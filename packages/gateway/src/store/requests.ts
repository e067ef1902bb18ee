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

/** Range of PostgreSQL `integer` (int4), the type of the requests table's integer columns but `ts` and `cost_micros`. */
const INT4_MIN = -(2 ** 31);
const INT4_MAX = 2 ** 31 - 1;

/** `v` rounded, checked to fit `integer` (int4) or, with `big`, to be a safe integer (bigint). */
function int(name: string, v: number, big = false): number {
  const r = Math.round(v);
  if (!Number.isFinite(r) || (big ? !Number.isSafeInteger(r) : r < INT4_MIN || r > INT4_MAX)) {
    throw new RangeError(`request row: ${name} = ${v} does not fit its ${big ? 'bigint' : 'integer'} column`);
  }
  return r;
}
const intOrNull = (name: string, v: number | null | undefined, big = false): number | null =>
  v === null || v === undefined || !Number.isFinite(v) ? null : int(name, v, big);
const text = (name: string, v: unknown): string => {
  if (typeof v !== 'string') throw new TypeError(`request row: ${name} must be a string`);
  return v;
};

/**
 * Normalises a row for both dialects: integer columns are rounded (PostgreSQL rejects `1.5` for
 * integer/bigint), booleans-as-numbers become 0/1, absent optionals become null.
 *
 * It also checks what the table's constraints would: the row is written as-is with the audit log
 * off, but with it on it waits in the audit queue and meets the `requests` table's constraints only when its
 * entry is integrated (`src/audit/queued-rows.ts`) — where a bad value must never get: it would
 * fail every integration round. So a bad row is refused here, at write time (the request gets its
 * 503 `audit_unavailable`, as when the table refused it).
 * @throws RangeError when an integer does not fit its column (`integer`: int4; `ts`, `cost_micros`:
 *   a safe integer) or a required number is missing; TypeError when a required text is not a string
 */
export function normalise(row: RequestsTable): RequestsTable {
  return {
    id: text('id', row.id),
    ts: int('ts', row.ts, true),
    key_id: row.key_id ?? null,
    tenant_id: row.tenant_id ?? null,
    operation: text('operation', row.operation),
    model: row.model ?? null,
    backend_id: row.backend_id ?? null,
    upstream_model: row.upstream_model ?? null,
    stream: row.stream ? 1 : 0,
    status: int('status', row.status),
    outcome: text('outcome', row.outcome),
    error_code: row.error_code ?? null,
    latency_ms: Math.max(0, int('latency_ms', row.latency_ms)),
    ttfb_ms: intOrNull('ttfb_ms', row.ttfb_ms),
    prompt_tokens: intOrNull('prompt_tokens', row.prompt_tokens),
    completion_tokens: intOrNull('completion_tokens', row.completion_tokens),
    total_tokens: intOrNull('total_tokens', row.total_tokens),
    usage_source: text('usage_source', row.usage_source),
    cost_micros: intOrNull('cost_micros', row.cost_micros, true),
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
