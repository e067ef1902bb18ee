/**
 * The journal: the durable write path of request rows and transparency-log entries, with group commit.
 *
 * `write(item)` resolves only once the item is committed: its request row (`requests`), its entry
 * (`audit_queue`) and its commitment salt (`audit_secrets`) in one transaction. Items that arrive in
 * the same event-loop turn are committed together (the batch is cut at `setImmediate`, at most
 * `batchMax` items per transaction), so under load one commit serves many requests. Group commit
 * with a floor: a batch is cut at the first `setImmediate` after an idle period (no added latency when
 * idle), but at most once per `minIntervalMs` (default 1 ms) while commits follow each other, so that
 * under load batches grow instead of paying one transaction per turn (a WAL commit writes every
 * touched page, whatever the number of rows).
 *
 * - SQLite: only native better-sqlite3 prepared statements inside one synchronous
 *   `native.transaction()` — never a Kysely transaction, which spans several ticks on the shared
 *   connection and could otherwise interleave with (and put journal rows inside) another open
 *   transaction. If a transaction is open on the connection when a batch is due (someone else's
 *   multi-tick transaction), the batch waits for the next turn.
 *   Durability: the store runs WAL with `synchronous=NORMAL`, so a committed batch survives a
 *   process crash (SIGKILL) but the last commits before an OS crash or power loss may be lost.
 * - PostgreSQL: one Kysely transaction of multi-row INSERTs per batch, one batch in flight at a time
 *   (the next batch gathers meanwhile).
 *
 * Failure: when a batch's transaction fails, its items are retried one transaction each, so that one
 * bad item (e.g. a duplicate id) does not take the others with it; every item whose own transaction
 * fails is rejected with the database error. Nothing is dropped silently.
 */
import type { Store } from '../store/db.ts';
import type { RequestsTable } from '../store/schema.ts';
import { REQUEST_COLUMNS, ROWS_PER_STATEMENT, normalise } from '../store/requests.ts';

/** One unit of the journal; every part is optional, all parts commit together. */
export interface JournalItem {
  /** The request row (`requests` table). */
  request?: RequestsTable;
  /** A transparency-log entry: its id and exact bytes (≤ 65 535), queued for integration. */
  entry?: { id: string; bytes: Uint8Array };
  /** The commitment salt of an entry (`audit_secrets`). */
  salt?: { id: string; salt: Uint8Array };
}

/** Options of {@link Journal}. */
export interface JournalOptions {
  /** Most items per transaction (default 4096). */
  batchMax?: number;
  /** Clock for `created_at` columns, ms (default `Date.now`). */
  now?: () => number;
  /** Least time between the starts of two commits, ms (default 1; 0 = cut at every turn). */
  minIntervalMs?: number;
}

interface Pending {
  item: JournalItem;
  resolve: () => void;
  reject: (err: Error) => void;
}

const toBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

/** Rows per audit INSERT statement on PostgreSQL (3 parameters each). */
const AUDIT_ROWS_PER_STATEMENT = 10_000;

/** Group-committing writer of request rows and log entries; see the module documentation. */
export class Journal {
  readonly #store: Store;
  readonly #batchMax: number;
  readonly #now: () => number;
  #pending: Pending[] = [];
  #scheduled = false;
  /** PostgreSQL: the batch loop currently running, if any. */
  #running: Promise<void> | null = null;
  readonly #outstanding = new Set<Promise<void>>();
  #closed = false;
  #sqliteTx: ((items: JournalItem[], now: number) => void) | undefined;
  readonly #minIntervalMs: number;
  /** performance.now() of the last commit's start. */
  #lastCommit = -Infinity;

  /** @throws RangeError for a `batchMax` below 1 */
  constructor(store: Store, opts: JournalOptions = {}) {
    this.#store = store;
    this.#batchMax = opts.batchMax ?? 4096;
    if (!(this.#batchMax >= 1)) throw new RangeError('batchMax must be >= 1');
    this.#now = opts.now ?? Date.now;
    this.#minIntervalMs = opts.minIntervalMs ?? 1;
  }

  /** Items accepted but not yet committed or rejected. */
  get pending(): number {
    return this.#outstanding.size;
  }

  /**
   * Queues `item` for the next group commit.
   * @returns a promise resolved once the item is durably committed
   * @throws (rejects) the database error if its transaction failed, or an Error after {@link close}
   */
  write(item: JournalItem): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('journal is closed'));
    let copy: JournalItem;
    try {
      copy = {
        ...(item.request ? { request: normalise(item.request) } : {}),
        ...(item.entry ? { entry: { id: item.entry.id, bytes: item.entry.bytes } } : {}),
        ...(item.salt ? { salt: { id: item.salt.id, salt: item.salt.salt } } : {}),
      };
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const p = new Promise<void>((resolve, reject) => {
      this.#pending.push({ item: copy, resolve, reject });
    });
    const tracked = p.then(
      () => undefined,
      () => undefined,
    );
    this.#outstanding.add(tracked);
    void tracked.then(() => this.#outstanding.delete(tracked));
    this.#schedule();
    return p;
  }

  /** Resolves when every item written so far has been committed or rejected. Never rejects. */
  async flush(): Promise<void> {
    while (this.#outstanding.size > 0) await Promise.all([...this.#outstanding]);
  }

  /** Stops accepting items and waits for the outstanding ones. Idempotent; never rejects. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    const wait = this.#lastCommit + this.#minIntervalMs - performance.now();
    const run = () => {
      this.#scheduled = false;
      this.#lastCommit = performance.now();
      if (this.#store.sqlite) this.#drainSqlite();
      else this.#running ??= this.#drainPg().finally(() => {
        this.#running = null;
        if (this.#pending.length > 0) this.#schedule();
      });
    };
    if (wait > 0 && this.#pending.length < this.#batchMax) setTimeout(run, Math.ceil(wait));
    else setImmediate(run);
  }

  #drainSqlite(): void {
    const native = this.#store.sqlite!;
    if (native.inTransaction) {
      // Someone else's transaction is open on the shared connection: wait (never join it).
      setTimeout(() => this.#schedule(), 1).unref();
      return;
    }
    let tx: (items: JournalItem[], now: number) => void;
    try {
      tx = this.#sqliteTx ??= prepareSqlite(native);
    } catch (err) {
      // Cannot even prepare the statements (schema broken): fail everything waiting, retry preparing next time.
      for (const b of this.#pending.splice(0)) b.reject(asError(err));
      return;
    }
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#batchMax);
      const now = this.#now();
      try {
        tx(batch.map((b) => b.item), now);
        for (const b of batch) b.resolve();
      } catch (err) {
        if (batch.length === 1) {
          batch[0]!.reject(asError(err));
          continue;
        }
        for (const b of batch) {
          try {
            tx([b.item], now);
            b.resolve();
          } catch (e) {
            b.reject(asError(e));
          }
        }
      }
    }
  }

  async #drainPg(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#batchMax);
      const now = this.#now();
      try {
        await this.#commitPg(batch.map((b) => b.item), now);
        for (const b of batch) b.resolve();
      } catch (err) {
        if (batch.length === 1) {
          batch[0]!.reject(asError(err));
          continue;
        }
        for (const b of batch) {
          try {
            await this.#commitPg([b.item], now);
            b.resolve();
          } catch (e) {
            b.reject(asError(e));
          }
        }
      }
    }
  }

  async #commitPg(items: JournalItem[], now: number): Promise<void> {
    const requests: RequestsTable[] = [];
    const entries: { entry_id: string; entry: Buffer; created_at: number }[] = [];
    const salts: { entry_id: string; salt: Buffer; created_at: number }[] = [];
    for (const it of items) {
      if (it.request) requests.push(it.request);
      if (it.entry) entries.push({ entry_id: it.entry.id, entry: toBuffer(it.entry.bytes), created_at: now });
      if (it.salt) salts.push({ entry_id: it.salt.id, salt: toBuffer(it.salt.salt), created_at: now });
    }
    await this.#store.db.transaction().execute(async (trx) => {
      for (let i = 0; i < requests.length; i += ROWS_PER_STATEMENT) {
        await trx.insertInto('requests').values(requests.slice(i, i + ROWS_PER_STATEMENT)).execute();
      }
      for (let i = 0; i < entries.length; i += AUDIT_ROWS_PER_STATEMENT) {
        await trx.insertInto('audit_queue').values(entries.slice(i, i + AUDIT_ROWS_PER_STATEMENT)).execute();
      }
      for (let i = 0; i < salts.length; i += AUDIT_ROWS_PER_STATEMENT) {
        await trx.insertInto('audit_secrets').values(salts.slice(i, i + AUDIT_ROWS_PER_STATEMENT)).execute();
      }
    });
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** One synchronous better-sqlite3 transaction writing a batch with cached prepared statements. */
function prepareSqlite(native: NonNullable<Store['sqlite']>): (items: JournalItem[], now: number) => void {
  const cols = REQUEST_COLUMNS;
  const insReq = native.prepare(`INSERT INTO requests (${cols.join(', ')}) VALUES (${cols.map((c) => '@' + c).join(', ')})`);
  const insEntry = native.prepare('INSERT INTO audit_queue (entry_id, entry, created_at) VALUES (?, ?, ?)');
  const insSalt = native.prepare('INSERT INTO audit_secrets (entry_id, salt, created_at) VALUES (?, ?, ?)');
  return native.transaction((items: JournalItem[], now: number) => {
    for (const it of items) {
      if (it.request) insReq.run(it.request);
      if (it.entry) insEntry.run(it.entry.id, toBuffer(it.entry.bytes), now);
      if (it.salt) insSalt.run(it.salt.id, toBuffer(it.salt.salt), now);
    }
  });
}
