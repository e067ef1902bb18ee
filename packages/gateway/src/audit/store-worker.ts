/**
 * The store worker: a worker thread with its own connection to the gateway's SQLite file that does
 * the synchronous database work of the request path off the event loop — the journal's group
 * commits and, when the audit log is on, the whole integrator (rounds, tiles, bundles, checkpoint
 * signing). The event loop keeps only what a request needs: building the record, hashing the
 * bodies, handing the item over and waiting for its commit.
 *
 * Used for SQLite files only (`:memory:` cannot be shared between connections; on PostgreSQL the
 * database work is already asynchronous). The thread runs `store-worker-main.ts` through
 * `worker-bootstrap.mjs`, which registers the TypeScript loader in the thread.
 *
 * Protocol (structured-clone messages, `t` = type):
 * - main → worker: `commit {b, items, now}`, `audit-open {id, opts}`, `audit-start`,
 *   `audit-drain {id}`, `audit-close {id}`, `ledger-grant {id, g}`, `ledger-adjust {id, ops}`, `exit`;
 * - worker → main: `committed {b, errors}`, `reply {id, ok, value | error}`,
 *   `checkpoint {size, rootHash, note}` after each new checkpoint, `log {level, obj, msg}`.
 *
 * If the thread dies, pending calls reject, the journal falls back to in-thread commits, and the
 * audit log stops advancing (logged as an error; `/readyz` does not change — restart the process).
 */
import { Worker } from 'node:worker_threads';
import type { Store } from '../store/db.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { BatchCommitter, JournalItem } from './journal.ts';
import type { Adjustment, GrantRequest, GrantResult, Ledger } from '../metering/ledger.ts';
import { AuditIntegrityError, type PublishedCheckpoint } from './integrator.ts';
import { AuditStorage } from './storage.ts';

/** What the gateway needs of a running audit log, in-process ({@link AuditLog}) or in the worker. */
export interface RunningAuditLog {
  /** The log origin (spec §7). */
  readonly origin: string;
  /** The verifier key line (spec §8.3). */
  readonly vkey: string;
  /** Read access to the stored log (tiles, bundles, proofs) on the caller's connection. */
  readonly storage: AuditStorage;
  /** The latest published checkpoint. */
  latest(): PublishedCheckpoint;
  /** Integrates until the queue is empty. @returns the latest checkpoint afterwards */
  drain(): Promise<PublishedCheckpoint>;
  /** Starts the periodic rounds. */
  start(): void;
  /** Stops the rounds after a final one. Idempotent. */
  close(): Promise<void>;
}

/** Serialisable options of the worker's {@link AuditLog.open}. */
export interface WorkerAuditOptions {
  origin?: string;
  keyFile: string;
  /** Only `SOVRA_AUDIT_SIGNING_KEY` is passed on. */
  env: { SOVRA_AUDIT_SIGNING_KEY?: string };
  intervalMs: number;
  batchMax: number;
}

type WireError = { name: string; message: string; code?: string };
type Reply = { t: 'reply'; id: number; ok: true; value: unknown } | { t: 'reply'; id: number; ok: false; error: WireError };
type FromWorker =
  | { t: 'committed'; b: number; errors: Array<[number, WireError]> | null; leaves: Array<string | null> }
  | Reply
  | { t: 'checkpoint'; size: string; rootHash: Uint8Array; note: string }
  | { t: 'log'; level: 'info' | 'warn' | 'error'; obj: Record<string, unknown>; msg: string };

/**
 * The rejection of a call that was in flight when the worker thread died: whether the worker did
 * what was asked (and only its answer was lost) is unknown.
 */
export class StoreWorkerGoneError extends Error {
  override readonly name = 'StoreWorkerGoneError';
}

const fromWire = (e: WireError): Error => {
  const err = e.name === 'AuditIntegrityError' ? new AuditIntegrityError(e.message) : new Error(e.message);
  if (e.code) Object.assign(err, { code: e.code });
  return err;
};

/**
 * A copy of `u` that owns exactly its bytes: structured clone copies a view's whole backing buffer,
 * and small Buffers are views into Node's 8 KiB pool (salts into a 4 KiB one).
 */
const own = (u: Uint8Array): Uint8Array => (u.byteOffset === 0 && u.byteLength === u.buffer.byteLength ? u : new Uint8Array(u));

/**
 * How each field of a {@link JournalItem} is posted: byte fields copied by {@link own}. Typed over
 * every key of `JournalItem`, so a new field does not compile until it is listed here (a field left
 * out would silently not reach the worker).
 */
const POST: { [K in keyof Required<JournalItem>]: (v: NonNullable<JournalItem[K]>) => JournalItem[K] } = {
  request: (r) => r,
  entry: (e) => ({ id: e.id, bytes: own(e.bytes) }),
  requestEntry: (r) => r,
  salt: (x) => ({ id: x.id, salt: own(x.salt) }),
  content: (c) => ({ id: c.id, keyId: c.keyId, nonce: own(c.nonce), data: own(c.data) }),
};
const POST_KEYS = Object.keys(POST) as Array<keyof JournalItem>;

/** An item ready to post: its byte fields copied by {@link own}. */
function compact(it: JournalItem): JournalItem {
  const out: Record<string, unknown> = {};
  for (const k of POST_KEYS) {
    const v = it[k];
    if (v !== undefined) out[k] = (POST[k] as (x: unknown) => unknown)(v);
  }
  return out as JournalItem;
}

/** The main-thread handle of the store worker; see the module documentation. */
export class StoreWorker implements BatchCommitter {
  readonly #w: Worker;
  readonly #logger: Logger;
  #alive = true;
  /** Set by close(): the handle then stays ref'd until the thread exits (a late reply must not unref it). */
  #closing = false;
  #exited: Promise<void>;
  #next = 0;
  readonly #commits = new Map<number, { resolve: (r: Array<Error | string | null>) => void; reject: (e: Error) => void; n: number }>();
  readonly #calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #onCheckpoint: ((cp: PublishedCheckpoint) => void) | undefined;

  /**
   * Starts the thread on `file` (an absolute SQLite path whose schema is already migrated).
   * @param logger receives the worker's log lines
   */
  constructor(file: string, logger: Logger) {
    this.#logger = logger;
    this.#w = new Worker(new URL('./worker-bootstrap.mjs', import.meta.url), {
      workerData: { entry: new URL('./store-worker-main.ts', import.meta.url).href, file },
      execArgv: [],
    });
    this.#w.unref();
    this.#w.on('message', (m: FromWorker) => this.#onMessage(m));
    this.#w.on('error', (err) => this.#die(new StoreWorkerGoneError(`the store worker failed: ${err.message}`, { cause: err })));
    this.#exited = new Promise((resolve) =>
      this.#w.once('exit', (code) => {
        this.#die(new StoreWorkerGoneError(`the store worker exited (code ${code})`));
        resolve();
      }),
    );
  }

  /** A worker for `store` when it is a SQLite file, else undefined. */
  static for(store: Store, logger: Logger): StoreWorker | undefined {
    const native = store.sqlite;
    return native && !native.memory ? new StoreWorker(native.name, logger) : undefined;
  }

  get alive(): boolean {
    return this.#alive;
  }

  #refresh(): void {
    if (this.#closing || this.#commits.size + this.#calls.size > 0) this.#w.ref();
    else this.#w.unref();
  }

  #onMessage(m: FromWorker): void {
    switch (m.t) {
      case 'committed': {
        const c = this.#commits.get(m.b);
        if (!c) return;
        this.#commits.delete(m.b);
        this.#refresh();
        const out: Array<Error | string | null> = m.leaves.slice(0, c.n);
        for (const [i, e] of m.errors ?? []) out[i] = fromWire(e);
        c.resolve(out);
        return;
      }
      case 'reply': {
        const c = this.#calls.get(m.id);
        if (!c) return;
        this.#calls.delete(m.id);
        this.#refresh();
        if (m.ok) c.resolve(m.value);
        else c.reject(fromWire(m.error));
        return;
      }
      case 'checkpoint':
        this.#onCheckpoint?.({ size: BigInt(m.size), rootHash: m.rootHash, note: m.note });
        return;
      case 'log':
        this.#logger[m.level](m.obj, m.msg);
        return;
    }
  }

  #die(err: Error): void {
    if (!this.#alive) return;
    this.#alive = false;
    if (this.#commits.size + this.#calls.size > 0) this.#logger.error({ err }, 'the store worker died; journal commits continue in-thread');
    for (const c of this.#commits.values()) c.reject(err);
    for (const c of this.#calls.values()) c.reject(err);
    this.#commits.clear();
    this.#calls.clear();
  }

  /** {@link BatchCommitter.commit}: one batch, committed by the worker. */
  commit(items: JournalItem[], now: number): Promise<Array<Error | string | null>> {
    if (!this.#alive) return Promise.reject(new Error('the store worker is not running'));
    const b = this.#next++;
    return new Promise((resolve, reject) => {
      this.#commits.set(b, { resolve, reject, n: items.length });
      this.#refresh();
      try {
        this.#w.postMessage({ t: 'commit', b, items: items.map(compact), now });
      } catch (err) {
        this.#commits.delete(b);
        this.#refresh();
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  #call<T>(msg: Record<string, unknown>): Promise<T> {
    if (!this.#alive) return Promise.reject(new Error('the store worker is not running'));
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#refresh();
      this.#w.postMessage({ ...msg, id });
    });
  }

  /**
   * Opens the audit log in the worker (see {@link AuditLog.open}) and returns its handle; reads
   * (`storage`) use `store`, the caller's own connection.
   * @throws AuditIntegrityError as `AuditLog.open` does
   */
  async openAudit(store: Store, opts: WorkerAuditOptions): Promise<RunningAuditLog> {
    const v = await this.#call<{ origin: string; vkey: string; size: string; rootHash: Uint8Array; note: string }>({ t: 'audit-open', opts });
    let latest: PublishedCheckpoint = { size: BigInt(v.size), rootHash: v.rootHash, note: v.note };
    this.#onCheckpoint = (cp) => {
      if (cp.size >= latest.size) latest = cp;
    };
    const storage = new AuditStorage(store);
    let closed = false;
    return {
      origin: v.origin,
      vkey: v.vkey,
      storage,
      latest: () => latest,
      start: () => void this.#w.postMessage({ t: 'audit-start' }),
      drain: async () => {
        await this.#call({ t: 'audit-drain' });
        return latest;
      },
      close: async () => {
        if (closed || !this.#alive) return;
        closed = true;
        await this.#call({ t: 'audit-close' });
      },
    };
  }

  /**
   * The budget ledger (`metering/ledger.ts`) run by the worker on its own connection: grants and
   * write-backs of allotments then take the database's write lock on the worker thread, between
   * journal commits, instead of waiting for it on the event loop. Once the worker is gone, calls go
   * to `fallback` (the ledger on the caller's connection).
   *
   * A call in flight when the worker dies has an unknown outcome (the worker may have committed it
   * and died before answering). Each is resolved in the direction that can never overspend:
   * - a **grant** rejects (the admission fails): if the worker did take the capacity, it stays
   *   counted as `reserved` without being used — stranded until the period ends, as when a process
   *   crashes, never handed out twice;
   * - an **adjustment** (write-back) counts as applied: applying it again through the fallback
   *   would, if the worker had committed it, release its reservation twice and free capacity that
   *   was spent. If the worker had not, the row keeps the reservation instead of the usage it
   *   covers (`used + reserved` still covers what was spent; usage beyond a reservation is lost).
   *   Logged as an error.
   * A database error reported by the worker (nothing applied) rejects as it does in-thread.
   */
  ledger(fallback: Ledger): Ledger {
    return {
      grant: (g: GrantRequest) => (this.#alive ? this.#call<GrantResult>({ t: 'ledger-grant', g }) : fallback.grant(g)),
      adjust: async (ops: readonly Adjustment[]) => {
        if (ops.length === 0) return;
        if (!this.#alive) return fallback.adjust(ops);
        try {
          await this.#call({ t: 'ledger-adjust', ops });
        } catch (err) {
          if (!(err instanceof StoreWorkerGoneError)) throw err;
          this.#logger.error(
            { err, rows: ops.length },
            'the store worker died during a budget write-back; it is counted as written (budgets may show capacity as reserved until the period ends)',
          );
        }
      },
    };
  }

  /** Stops the thread (after everything in flight was answered). Idempotent; never rejects. */
  async close(): Promise<void> {
    if (this.#alive) {
      this.#closing = true;
      this.#w.ref();
      this.#w.postMessage({ t: 'exit' });
    }
    await this.#exited;
  }
}
