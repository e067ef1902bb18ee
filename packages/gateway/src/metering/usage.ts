/**
 * Usage rollups from the `requests` table, the usage ledger (one row per data-plane request,
 * written by the audit journal), and their CSV export.
 */
import { sql } from 'kysely';
import { stringify } from 'csv-stringify/sync';
import type { Store } from '../store/db.ts';

/** An RFC 3339 date-time with its offset (`2025-06-01T13:00:00Z`, `…+08:00`); seconds and fractions optional. */
export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

/**
 * A usage bound (`from` / `to`) as the admin API and the CLI take it: ms since the epoch (digits),
 * or an RFC 3339 date-time with its offset; with `plainDate`, also a date (`2025-06-01`, UTC midnight).
 * @returns ms since the epoch, or NaN when `v` is none of these (callers raise their own error)
 */
export function parseUsageBound(v: string, opts: { plainDate?: boolean } = {}): number {
  if (/^[0-9]{1,15}$/.test(v)) return Number(v);
  if (RFC3339.test(v) || (opts.plainDate === true && /^\d{4}-\d{2}-\d{2}$/.test(v))) return Date.parse(v);
  return NaN;
}

/**
 * What to roll up. Times are ms since epoch: rows with `from <= ts < to`. `groupBy`: one row per
 * UTC hour or UTC day (`bucket` = its start) or none (`bucket` = null; default), always further
 * split by tenant, key and model.
 */
export interface UsageFilter {
  tenantId?: string;
  keyId?: string;
  model?: string;
  from?: number;
  to?: number;
  groupBy?: 'hour' | 'day' | 'none';
}

/**
 * One rollup row. Tokens in tokens (requests without reported usage count 0), `cost_micros` in
 * integer micro-USD (unknown cost counts 0), `errors` = requests whose outcome is not `ok`
 * (rejections, upstream errors, timeouts, client disconnects).
 */
export interface UsageRow {
  /** Start of the hour/day bucket (ms since epoch, UTC), or null without grouping. */
  bucket: number | null;
  tenant_id: string | null;
  key_id: string | null;
  /** The model alias the client asked for. */
  model: string | null;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_micros: number;
  errors: number;
}

const BUCKET_MS = { hour: 3_600_000, day: 86_400_000 } as const;

/**
 * Rolls up the request records matching `f`, ordered by bucket, tenant id, key id, model (nulls first).
 * @throws RangeError for a non-integer `from`/`to` or an unknown `groupBy`
 */
export async function queryUsage(store: Store, f: UsageFilter): Promise<UsageRow[]> {
  const groupBy = f.groupBy ?? 'none';
  if (groupBy !== 'none' && groupBy !== 'hour' && groupBy !== 'day') throw new RangeError('groupBy must be hour, day or none');
  for (const [k, v] of [['from', f.from], ['to', f.to]] as const) {
    if (v !== undefined && !Number.isSafeInteger(v)) throw new RangeError(`${k} must be an integer (ms since epoch)`);
  }
  // Bucket width as a literal (not a parameter), so the select and group-by expressions are identical on PostgreSQL.
  const bucket =
    groupBy === 'none'
      ? sql<number | null>`null`
      : sql<number>`(ts / ${sql.raw(String(BUCKET_MS[groupBy]))}) * ${sql.raw(String(BUCKET_MS[groupBy]))}`;
  let q = store.db
    .selectFrom('requests')
    .select([
      bucket.as('bucket'),
      'tenant_id',
      'key_id',
      'model',
      sql<number | string>`count(*)`.as('requests'),
      sql<number | string>`coalesce(sum(prompt_tokens), 0)`.as('prompt_tokens'),
      sql<number | string>`coalesce(sum(completion_tokens), 0)`.as('completion_tokens'),
      sql<number | string>`coalesce(sum(total_tokens), 0)`.as('total_tokens'),
      sql<number | string>`coalesce(sum(cost_micros), 0)`.as('cost_micros'),
      sql<number | string>`coalesce(sum(case when outcome <> 'ok' then 1 else 0 end), 0)`.as('errors'),
    ]);
  if (f.tenantId !== undefined) q = q.where('tenant_id', '=', f.tenantId);
  if (f.keyId !== undefined) q = q.where('key_id', '=', f.keyId);
  if (f.model !== undefined) q = q.where('model', '=', f.model);
  if (f.from !== undefined) q = q.where('ts', '>=', f.from);
  if (f.to !== undefined) q = q.where('ts', '<', f.to);
  q = groupBy === 'none' ? q.groupBy(['tenant_id', 'key_id', 'model']) : q.groupBy([bucket, 'tenant_id', 'key_id', 'model']);
  const rows = await q.execute();
  const out: UsageRow[] = rows.map((r) => ({
    bucket: r.bucket === null ? null : Number(r.bucket),
    tenant_id: r.tenant_id,
    key_id: r.key_id,
    model: r.model,
    requests: Number(r.requests),
    prompt_tokens: Number(r.prompt_tokens),
    completion_tokens: Number(r.completion_tokens),
    total_tokens: Number(r.total_tokens),
    cost_micros: Number(r.cost_micros),
    errors: Number(r.errors),
  }));
  return out.sort(
    (a, b) => cmp(a.bucket, b.bucket) || cmp(a.tenant_id, b.tenant_id) || cmp(a.key_id, b.key_id) || cmp(a.model, b.model),
  );
}

function cmp<T extends number | string>(a: T | null, b: T | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}

/** CSV columns, in order. */
export const USAGE_CSV_COLUMNS = [
  'bucket', 'tenant_id', 'key_id', 'model', 'requests', 'prompt_tokens', 'completion_tokens', 'total_tokens',
  'cost_micros', 'errors',
] as const;

/**
 * Usage rows as CSV (RFC 4180, `\n` line ends): a header line with {@link USAGE_CSV_COLUMNS}, then
 * one line per row. `bucket` is written as an ISO 8601 UTC time (`2025-06-01T13:00:00.000Z`),
 * empty when null; null ids are empty. Text cells starting with `=`, `+`, `-`, `@`, tab or CR get
 * a leading `'` so spreadsheets do not run them as formulas (model names come from clients).
 */
export function usageCsv(rows: UsageRow[]): string {
  const safe = (s: string | null): string => (s === null ? '' : /^[=+\-@\t\r]/.test(s) ? `'${s}` : s);
  return stringify(
    rows.map((r) => [
      r.bucket === null ? '' : new Date(r.bucket).toISOString(),
      safe(r.tenant_id), safe(r.key_id), safe(r.model),
      r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cost_micros, r.errors,
    ]),
    { header: true, columns: [...USAGE_CSV_COLUMNS], record_delimiter: 'unix' },
  );
}
