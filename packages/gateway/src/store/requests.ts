/**
 * The request record writer: buffers one row per data-plane request and writes them in batches, off
 * the request's hot path.
 */
import type { Store } from './db.ts';
import type { RequestsTable } from './schema.ts';

/** Options of {@link RequestRecorder}. */
export interface RequestRecorderOptions {
  /** Longest time (ms) a recorded row waits before its batch is written. Default 50. */
  flushIntervalMs?: number;
  /** A batch is written as soon as this many rows are waiting. Default 500. */
  maxBatch?: number;
  /**
   * Called when a batch could not be written after one retry (the batch's rows are then dropped),
   * or when `record()` is called after `close()`. Default: one line on stderr. Must not throw.
   */
  onError?: (err: Error) => void;
}

/** Columns of the requests table, in insert order. */
export const REQUEST_COLUMNS = [
  'id', 'ts', 'key_id', 'tenant_id', 'operation', 'model', 'backend_id', 'upstream_model', 'stream',
  'status', 'outcome', 'error_code', 'latency_ms', 'ttfb_ms', 'prompt_tokens', 'completion_tokens',
  'total_tokens', 'usage_source',
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
  };
}

/**
 * Batches request rows into the `requests` table.
 *
 * `record()` is synchronous and never throws; rows are written at most `flushIntervalMs` after they
 * were recorded, or immediately once `maxBatch` rows are waiting. Each batch is one transaction of
 * multi-row INSERTs; batches are written one at a time, in order. A failed batch is retried once,
 * then reported to `onError` and dropped (so one bad row, e.g. a duplicate id, loses its batch).
 * Call `close()` before closing the store.
 */
export class RequestRecorder {
  readonly #store: Store;
  readonly #flushIntervalMs: number;
  readonly #maxBatch: number;
  readonly #onError: (err: Error) => void;
  #buffer: RequestsTable[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** Tail of the chain of batch writes; resolves when every batch started so far is done. */
  #writing: Promise<void> = Promise.resolve();
  #closed = false;

  /** @throws RangeError for a non-positive `maxBatch` or negative `flushIntervalMs`. */
  constructor(store: Store, opts: RequestRecorderOptions = {}) {
    this.#store = store;
    this.#flushIntervalMs = opts.flushIntervalMs ?? 50;
    this.#maxBatch = opts.maxBatch ?? 500;
    if (!(this.#flushIntervalMs >= 0)) throw new RangeError('flushIntervalMs must be >= 0');
    if (!(this.#maxBatch >= 1)) throw new RangeError('maxBatch must be >= 1');
    this.#onError =
      opts.onError ?? ((err) => process.stderr.write(`sovra: request record write failed: ${err.message}\n`));
  }

  /** Number of rows recorded but not yet handed to a write. */
  get pending(): number {
    return this.#buffer.length;
  }

  /** Queues one row (copied; later mutation of `row` has no effect). Never throws. */
  record(row: RequestsTable): void {
    if (this.#closed) {
      this.#report(new Error(`request record ${String(row?.id)} dropped: recorder is closed`));
      return;
    }
    let copy: RequestsTable;
    try {
      copy = normalise(row);
    } catch (err) {
      this.#report(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.#buffer.push(copy);
    if (this.#buffer.length >= this.#maxBatch) {
      this.#startWrite();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#startWrite();
      }, this.#flushIntervalMs);
      this.#timer.unref();
    }
  }

  /**
   * Writes every row recorded so far and resolves when they (and earlier batches) are written or
   * reported to `onError`. Never rejects.
   */
  async flush(): Promise<void> {
    this.#startWrite();
    await this.#writing;
  }

  /** Stops accepting rows and flushes the rest. Idempotent; never rejects. Does not close the store. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  #startWrite(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    while (this.#buffer.length > 0) {
      const batch = this.#buffer.splice(0, this.#maxBatch);
      this.#writing = this.#writing.then(() => this.#writeWithRetry(batch));
    }
  }

  async #writeWithRetry(batch: RequestsTable[]): Promise<void> {
    try {
      await this.#write(batch);
    } catch {
      try {
        await this.#write(batch);
      } catch {
        // One bad row must not take its batch with it: write the rows one by one.
        let dropped = 0;
        let last: Error | undefined;
        for (const row of batch) {
          try {
            await this.#write([row]);
          } catch (err) {
            dropped++;
            last = err instanceof Error ? err : new Error(String(err));
          }
        }
        if (dropped > 0) this.#report(new Error(`${dropped} request record(s) dropped: ${last?.message}`, { cause: last }));
      }
    }
  }

  async #write(batch: RequestsTable[]): Promise<void> {
    const native = this.#store.sqlite;
    if (native) {
      // SQLite: one cached prepared statement in one transaction (~µs per row; the Kysely path
      // compiles a query per batch and costs several times more on the event loop).
      this.#insertMany ??= prepareInsertMany(native);
      this.#insertMany(batch);
      return;
    }
    await this.#store.db.transaction().execute(async (trx) => {
      for (let i = 0; i < batch.length; i += ROWS_PER_STATEMENT) {
        await trx.insertInto('requests').values(batch.slice(i, i + ROWS_PER_STATEMENT)).execute();
      }
    });
  }

  #insertMany: ((rows: RequestsTable[]) => void) | undefined;

  #report(err: Error): void {
    try {
      this.#onError(err);
    } catch {
      // onError must not throw; nothing sensible left to do.
    }
  }
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

/** A better-sqlite3 transaction inserting many request rows with one prepared statement. */
function prepareInsertMany(native: NonNullable<Store['sqlite']>): (rows: RequestsTable[]) => void {
  const cols = REQUEST_COLUMNS;
  const stmt = native.prepare(`INSERT INTO requests (${cols.join(', ')}) VALUES (${cols.map((c) => '@' + c).join(', ')})`);
  return native.transaction((rows: RequestsTable[]) => {
    for (const r of rows) stmt.run(r);
  });
}
