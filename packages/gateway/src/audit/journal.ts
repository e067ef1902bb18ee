/**
 * The journal: the durable write path of request rows and transparency-log entries, with group commit.
 *
 * `write(item)` resolves only once the item is committed: its request row (`requests`), its entry
 * (`audit_queue`, with the entry's leaf hash `LH(entry)` computed here from the exact bytes, so the
 * integrator does not hash it again) and its commitment salt (`audit_secrets`) in one transaction.
 * A data-plane item (`requestEntry`) is one queue row instead: the entry with its request row and
 * salt, which the integrator moves to their tables when it integrates the entry
 * (`./queued-rows.ts`), so the commit a response waits for touches one B-tree. Items that arrive in
 * the same event-loop turn are committed together (the batch is cut at `setImmediate`, at most
 * `batchMax` items per transaction), so under load one commit serves many requests. Group commit
 * with a floor: a batch is cut at the first `setImmediate` after an idle period (no added latency when
 * idle), but at most once per `minIntervalMs` (default 1 ms) while commits follow each other, so that
 * under load batches grow instead of paying one transaction per turn (a WAL commit writes every
 * touched page, whatever the number of rows).
 *
 * - With a `committer` (the gateway on a SQLite file): the **store worker thread** (`store-worker.ts`),
 *   with its own connection to the same file, commits the batches, so the synchronous commits never
 *   block the event loop. Each turn's items are handed over at `setImmediate`; the worker takes every
 *   batch already waiting when it becomes free into one transaction — group commit that grows with
 *   load, with no added latency when idle. If the worker dies, the items in flight are rejected and
 *   later writes fall back to the in-thread mode.
 * - SQLite without a committer (in memory, the CLI): in-thread, native better-sqlite3 prepared statements
 *   inside one synchronous `native.transaction()` — never a Kysely transaction, which spans several
 *   ticks on the shared connection and could otherwise interleave with (and put journal rows inside)
 *   another open transaction. If a transaction is open on the connection when a batch is due
 *   (someone else's multi-tick transaction), the batch waits for the next turn.
 *   Durability (both SQLite modes): the store runs WAL with `synchronous=NORMAL`, so a committed batch
 *   survives a process crash (SIGKILL) but the last commits before an OS crash or power loss may be lost.
 * - PostgreSQL: one Kysely transaction of multi-row INSERTs per batch, one batch in flight at a time
 *   (the next batch gathers meanwhile).
 *
 * Failure: when a batch's transaction fails, its items are retried one transaction each, so that one
 * bad item (e.g. a duplicate id) does not take the others with it; every item whose own transaction
 * fails is rejected with the database error. Nothing is dropped silently.
 */
import { encodeBase64 } from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import type { Store } from '../store/db.ts';
import type { RequestsTable } from '../store/schema.ts';
import { REQUEST_COLUMNS, ROWS_PER_STATEMENT, normalise } from '../store/requests.ts';
import { encodeRecord, requestRecord, type RecordCommitments, type RecordPolicy } from './record.ts';
import type { QueuedEntry } from './storage.ts';
import type { QueueTail } from './queue-tail.ts';
import { QUEUED_REQUEST_COLUMNS, queuedColumn } from './queued-rows.ts';
import type { SealedContent } from './content.ts';

/** One unit of the journal; every part is optional, all parts commit together. */
export interface JournalItem {
  /** The request row (`requests` table). */
  request?: RequestsTable;
  /** A transparency-log entry: its id and exact bytes (≤ 65 535), queued for integration. */
  entry?: { id: string; bytes: Uint8Array };
  /**
   * Instead of `entry`: build the `request` record of `request` (the row) as this item's entry (id =
   * the row's id), on the thread that commits — so that canonical JSON and hashing stay off the
   * event loop when a worker commits.
   */
  requestEntry?: { tenant: string | null; commitments: RecordCommitments; policy?: RecordPolicy };
  /** The commitment salt of an entry (`audit_secrets`). */
  salt?: { id: string; salt: Uint8Array };
  /** The sealed request and response bytes of an entry (`audit_content`; content retention on). */
  content?: SealedContent;
}

/** Options of {@link Journal}. */
export interface JournalOptions {
  /** Most items per transaction (default 4096). */
  batchMax?: number;
  /** Clock for `created_at` columns, ms (default `Date.now`). */
  now?: () => number;
  /** In-thread modes: least time between the starts of two commits, ms (default 1; 0 = cut at every turn). */
  minIntervalMs?: number;
  /**
   * Commit batches elsewhere — the store worker thread (`StoreWorker`), which has its own connection
   * to the same SQLite file. Without it, SQLite batches are committed in-thread.
   */
  committer?: BatchCommitter;
  /**
   * In-thread SQLite mode: the queue rows of every committed batch are appended here, for an
   * integrator on the same connection (`AuditLogOptions.tail`). The store worker does the same
   * with its own tail.
   */
  tail?: QueueTail;
}

/** Something that commits journal batches off the event loop (the store worker thread). */
export interface BatchCommitter {
  /** False once the committer died (the journal then commits in-thread). */
  readonly alive: boolean;
  /**
   * Commits `items` (one transaction, per-item retry on failure; see {@link commitBatch}).
   * @param now ms since the epoch, for `created_at`
   * @returns per item: its error, or once committed its leaf hash (base64) / null without an entry
   * @throws (rejects) when the committer died before answering
   */
  commit(items: JournalItem[], now: number): Promise<Array<Error | string | null>>;
}

interface Pending {
  item: JournalItem;
  resolve: (leaf: string | null) => void;
  reject: (err: Error) => void;
}

const toBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

/** Rows per audit INSERT statement on PostgreSQL (at most 23 parameters each; PostgreSQL allows 65 535). */
const AUDIT_ROWS_PER_STATEMENT = 2_500;

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
  #sqliteTx: JournalTx | undefined;
  readonly #minIntervalMs: number;
  /** Worker mode: where batches are committed (null once it died: in-thread from then on). */
  #worker: BatchCommitter | null = null;
  /** performance.now() of the last commit's start. */
  #lastCommit = -Infinity;
  readonly #tail: QueueTail | undefined;

  /** @throws RangeError for a `batchMax` below 1 */
  constructor(store: Store, opts: JournalOptions = {}) {
    this.#store = store;
    this.#batchMax = opts.batchMax ?? 4096;
    if (!(this.#batchMax >= 1)) throw new RangeError('batchMax must be >= 1');
    this.#now = opts.now ?? Date.now;
    this.#minIntervalMs = opts.minIntervalMs ?? 1;
    this.#worker = opts.committer ?? null;
    this.#tail = opts.tail;
  }

  /** Items accepted but not yet committed or rejected. */
  get pending(): number {
    return this.#outstanding.size;
  }

  /**
   * Queues `item` for the next group commit.
   * @returns a promise resolved once the item is durably committed, with the entry's leaf hash
   *   (base64 `LH(entry)`, spec §3) when the item has an entry, else null
   * @throws (rejects) the database error if its transaction failed, the record error if its entry
   *   cannot be built, or an Error after {@link close}
   */
  write(item: JournalItem): Promise<string | null> {
    if (this.#closed) return Promise.reject(new Error('journal is closed'));
    let copy: JournalItem;
    try {
      copy = {
        ...(item.request ? { request: normalise(item.request) } : {}),
        ...(item.entry ? { entry: { id: item.entry.id, bytes: item.entry.bytes } } : {}),
        ...(item.requestEntry ? { requestEntry: item.requestEntry } : {}),
        ...(item.salt ? { salt: { id: item.salt.id, salt: item.salt.salt } } : {}),
        ...(item.content ? { content: item.content } : {}),
      };
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const p = new Promise<string | null>((resolve, reject) => {
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
    if (this.#worker) {
      setImmediate(() => {
        this.#scheduled = false;
        this.#post();
      });
      return;
    }
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

  /** Worker mode: hand everything pending over as one batch (the worker groups batches further). */
  #post(): void {
    const w = this.#worker;
    if (!w || !w.alive) {
      this.#worker = null; // the worker died: in-thread from now on
      if (this.#pending.length > 0) this.#schedule();
      return;
    }
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#batchMax);
      w.commit(
        batch.map((p) => p.item),
        this.#now(),
      ).then(
        (results) =>
          batch.forEach((p, i) => {
            const r = results[i] ?? null;
            if (r instanceof Error) p.reject(r);
            else p.resolve(r);
          }),
        (err: unknown) => {
          for (const p of batch) p.reject(asError(err));
        },
      );
    }
  }

  #drainSqlite(): void {
    const native = this.#store.sqlite!;
    if (native.inTransaction) {
      // Someone else's transaction is open on the shared connection: wait (never join it).
      setTimeout(() => this.#schedule(), 1).unref();
      return;
    }
    let tx: JournalTx;
    try {
      tx = this.#sqliteTx ??= prepareJournalTx(native);
    } catch (err) {
      // Cannot even prepare the statements (schema broken): fail everything waiting, retry preparing next time.
      for (const b of this.#pending.splice(0)) b.reject(asError(err));
      return;
    }
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#batchMax);
      const results = commitBatch(tx, batch.map((b) => b.item), this.#now(), this.#tail);
      batch.forEach((b, i) => {
        const r = results[i] ?? null;
        if (r instanceof Error) b.reject(r);
        else b.resolve(r);
      });
    }
  }

  async #drainPg(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#batchMax);
      const now = this.#now();
      const ready: Array<{ p: Pending; item: JournalItem; leaf: string | null; leafHash: Uint8Array | null }> = [];
      for (const p of batch) {
        try {
          ready.push({ p, ...materialise(p.item) });
        } catch (err) {
          p.reject(asError(err));
        }
      }
      if (ready.length === 0) continue;
      try {
        await this.#commitPg(ready, now);
        for (const r of ready) r.p.resolve(r.leaf);
      } catch (err) {
        if (ready.length === 1) {
          ready[0]!.p.reject(asError(err));
          continue;
        }
        for (const r of ready) {
          try {
            await this.#commitPg([r], now);
            r.p.resolve(r.leaf);
          } catch (e) {
            r.p.reject(asError(e));
          }
        }
      }
    }
  }

  async #commitPg(items: readonly Materialised[], now: number): Promise<void> {
    const requests: RequestsTable[] = [];
    const entries: Array<{ entry_id: string; entry: Buffer; created_at: number; leaf_hash: Buffer | null; salt?: Buffer } & Record<string, unknown>> = [];
    const salts: { entry_id: string; salt: Buffer; created_at: number }[] = [];
    const contents: { entry_id: string; key_id: string; nonce: Buffer; data: Buffer; created_at: number }[] = [];
    for (const { item: it, leafHash, queued: carry } of items) {
      if (it.content) contents.push({ entry_id: it.content.id, key_id: it.content.keyId, nonce: toBuffer(it.content.nonce), data: toBuffer(it.content.data), created_at: now });
      const entry: (typeof entries)[number] | null = it.entry ? { entry_id: it.entry.id, entry: toBuffer(it.entry.bytes), created_at: now, leaf_hash: leafHash && toBuffer(leafHash) } : null;
      if (carry && entry && it.request) {
        // The request row and salt ride with the entry until integration (./queued-rows.ts).
        const req = it.request as unknown as Record<string, unknown>;
        for (const c of QUEUED_REQUEST_COLUMNS) entry[queuedColumn(c)] = req[c] ?? null;
        if (it.salt && it.salt.id === entry.entry_id) entry.salt = toBuffer(it.salt.salt);
        else if (it.salt) salts.push({ entry_id: it.salt.id, salt: toBuffer(it.salt.salt), created_at: now });
        entries.push(entry);
        continue;
      }
      if (it.request) requests.push(it.request);
      if (entry) entries.push(entry);
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
      // Few rows per statement: each holds up to two retained bodies.
      for (let i = 0; i < contents.length; i += 64) {
        await trx.insertInto('audit_content').values(contents.slice(i, i + 64)).execute();
      }
    });
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * A journal item as written (see {@link materialise}): `entry` set instead of `requestEntry`, and the
 * entry's leaf hash `LH(entry)` (32 bytes, spec §3), computed from `item.entry.bytes` by the journal
 * itself — never taken from a caller — or null when the item has no entry.
 */
export interface Materialised {
  readonly item: JournalItem;
  readonly leafHash: Uint8Array | null;
  /**
   * True when the item's request row and salt travel in its queue row (`audit_queue.req_*`,
   * `.salt`) until the integrator moves them (`./queued-rows.ts`): items built from `requestEntry`.
   */
  readonly queued?: boolean;
}

/**
 * A prepared batch writer: throws the database error (the whole batch is rolled back).
 * @returns the `audit_queue` rows it inserted (seq = the row's rowid), in insertion order
 */
export type JournalTx = (items: readonly Materialised[], now: number) => QueuedEntry[];

/**
 * Prepares one synchronous better-sqlite3 transaction that writes journal items (request rows,
 * `audit_queue` entries with their leaf hashes, `audit_secrets` salts, `audit_content` sealed
 * bodies) with cached prepared statements.
 * @param native an open connection whose schema is migrated
 * @throws the database error when a statement cannot be prepared (schema not migrated)
 */
export function prepareJournalTx(native: NonNullable<Store['sqlite']>): JournalTx {
  const cols = REQUEST_COLUMNS;
  const insReq = native.prepare(`INSERT INTO requests (${cols.join(', ')}) VALUES (${cols.map((c) => '@' + c).join(', ')})`);
  const insEntry = native.prepare('INSERT INTO audit_queue (entry_id, entry, created_at, leaf_hash) VALUES (?, ?, ?, ?)');
  const insSalt = native.prepare('INSERT INTO audit_secrets (entry_id, salt, created_at) VALUES (?, ?, ?)');
  // Prepared on first use: a store migrated only up to 0006 (tests of older schemas) has no such columns.
  let insQueued: ReturnType<typeof native.prepare<unknown[]>> | undefined;
  let insContent: ReturnType<typeof native.prepare<unknown[]>> | undefined;
  return native.transaction((items: readonly Materialised[], now: number) => {
    const queued: QueuedEntry[] = [];
    for (const { item: it, leafHash, queued: carry } of items) {
      if (it.content) {
        insContent ??= native.prepare('INSERT INTO audit_content (entry_id, key_id, nonce, data, created_at) VALUES (?, ?, ?, ?, ?)');
        insContent.run(it.content.id, it.content.keyId, toBuffer(it.content.nonce), toBuffer(it.content.data), now);
      }
      if (carry && it.entry && it.request) {
        // One row, one B-tree: the request row and salt ride with the entry until integration.
        const bytes = toBuffer(it.entry.bytes);
        const salt = it.salt && it.salt.id === it.entry.id ? toBuffer(it.salt.salt) : null;
        insQueued ??= native.prepare(
          `INSERT INTO audit_queue (entry_id, entry, created_at, leaf_hash, salt, ${QUEUED_REQUEST_COLUMNS.map(queuedColumn).join(', ')}) VALUES (${new Array(5 + QUEUED_REQUEST_COLUMNS.length).fill('?').join(', ')})`,
        );
        const req = it.request as unknown as Record<string, unknown>;
        const info = insQueued.run(it.entry.id, bytes, now, leafHash && toBuffer(leafHash), salt, ...QUEUED_REQUEST_COLUMNS.map((c) => req[c] ?? null));
        queued.push({ seq: Number(info.lastInsertRowid), entryId: it.entry.id, entry: bytes, leafHash });
        if (it.salt && !salt) insSalt.run(it.salt.id, toBuffer(it.salt.salt), now);
        continue;
      }
      if (it.request) insReq.run(it.request);
      if (it.entry) {
        const bytes = toBuffer(it.entry.bytes);
        const info = insEntry.run(it.entry.id, bytes, now, leafHash && toBuffer(leafHash));
        queued.push({ seq: Number(info.lastInsertRowid), entryId: it.entry.id, entry: bytes, leafHash });
      }
      if (it.salt) insSalt.run(it.salt.id, toBuffer(it.salt.salt), now);
    }
    return queued;
  });
}

/**
 * An item as written: `requestEntry` turned into `entry` (the canonical `request` record of the
 * row), the entry's leaf hash `LH(entry)` (spec §3) as 32 bytes (`leafHash`, stored in the queue
 * row) and base64 (`leaf`, returned to the writer), both null without an entry. An item built from
 * `requestEntry` is `queued`: its request row and salt go into the queue row with the entry
 * (`./queued-rows.ts`), not into their tables.
 * @throws the record error (TypeError / RangeError of `encodeRecord`)
 */
export function materialise(item: JournalItem): Materialised & { leaf: string | null } {
  let it = item;
  let queued = false;
  if (item.requestEntry && item.request) {
    const bytes = encodeRecord(requestRecord(item.request, item.requestEntry));
    it = { request: item.request, entry: { id: item.request.id, bytes }, ...(item.salt ? { salt: item.salt } : {}), ...(item.content ? { content: item.content } : {}) };
    queued = true;
  } else if (item.requestEntry) {
    throw new TypeError('a journal item with requestEntry needs its request row');
  }
  const leafHash = it.entry ? nodeTreeHasher.hashLeaf(it.entry.bytes) : null;
  return { item: it, leafHash, leaf: leafHash && encodeBase64(leafHash), queued };
}

/**
 * Materialises and commits `items` in one transaction; when that fails, retries each item in its
 * own transaction so one bad item (a duplicate id…) does not take the others with it.
 * @param now ms since the epoch (`created_at`)
 * @param tail receives the `audit_queue` rows of every transaction that committed, in seq order
 *   (the integrator's in-memory {@link QueueTail}), when given
 * @returns per item: its error, or its leaf hash (base64) / null when it has no entry
 */
export function commitBatch(tx: JournalTx, items: readonly JournalItem[], now: number, tail?: QueueTail): Array<Error | string | null> {
  const out: Array<Error | string | null> = new Array(items.length).fill(null);
  const ready: Materialised[] = [];
  const at: number[] = [];
  items.forEach((item, i) => {
    try {
      const m = materialise(item);
      ready.push(m);
      at.push(i);
      out[i] = m.leaf;
    } catch (err) {
      out[i] = asError(err);
    }
  });
  if (ready.length === 0) return out;
  try {
    const queued = tx(ready, now);
    tail?.push(queued);
  } catch (err) {
    if (ready.length === 1) {
      out[at[0]!] = asError(err);
      return out;
    }
    ready.forEach((it, k) => {
      try {
        const queued = tx([it], now);
        tail?.push(queued);
      } catch (e) {
        out[at[k]!] = asError(e);
      }
    });
  }
  return out;
}
