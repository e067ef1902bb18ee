/**
 * The budget ledger of the request path: reserve worst cases, settle actual usage, on the
 * `budget_usage` table (one row per budget and period).
 *
 * Never overspent, whatever the concurrency and however many gateway processes share the database:
 * a reservation is ONE conditional statement per budget row,
 *
 *     UPDATE budget_usage SET reserved = reserved + :x
 *      WHERE budget_id = :id AND period_start = :p AND used + reserved + :x <= :amount AND used < :amount
 *
 * whose changed-row count says whether it fitted (the period row is created first with
 * insert-or-ignore when missing). The database serialises these statements on the row, so the sum
 * of successful reservations can never pass the amount. (`used < amount` makes an exhausted budget
 * refuse zero-cost requests too.) A request with several budgets reserves them in a fixed order
 * (by budget id) and gives back those already taken when a later one does not fit.
 *
 * - SQLite: the native better-sqlite3 handle with cached prepared statements, all budgets of a
 *   request in one savepoint (the rollback gives back what was taken); the operations of one
 *   event-loop turn share one `BEGIN IMMEDIATE` transaction (group commit, see `#flush`).
 * - PostgreSQL: autocommitted statements through Kysely/pg; compensating updates give back what
 *   was taken.
 */
import { sql } from 'kysely';
import type BetterSqlite3 from 'better-sqlite3';
import type { Store } from '../store/db.ts';

/** One budget row to reserve on. */
export interface HoldRequest {
  budgetId: string;
  /** Period start, ms since epoch (0 for fixed budgets). */
  periodStart: number;
  /** Budget amount per period, in its unit. */
  amount: number;
  /** What to reserve, in the budget's unit (integer ≥ 0). */
  reserve: number;
}

/** One reservation to settle. */
export interface HoldSettle {
  budgetId: string;
  periodStart: number;
  /** What was reserved. */
  reserved: number;
  /** What was actually consumed (may exceed `reserved`). */
  actual: number;
}

/** Reserve / settle on `budget_usage` rows (one implementation per dialect). */
export interface Ledger {
  /**
   * Reserves on every row in the given order, all or nothing.
   * @returns -1 when all fitted, else the index of the first hold that did not fit (nothing stays reserved)
   */
  reserve(holds: readonly HoldRequest[]): Promise<number>;
  /** `reserved -= reserved, used += actual` on every row (rows deleted meanwhile are skipped). */
  settle(holds: readonly HoldSettle[]): Promise<void>;
}

/** The ledger for a store's dialect. */
export function createLedger(store: Store): Ledger {
  return store.sqlite ? new SqliteLedger(store.sqlite) : new PostgresLedger(store);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Misfit {
  constructor(readonly index: number) {}
}

class SqliteLedger implements Ledger {
  readonly #native: BetterSqlite3.Database;
  readonly #reserveTx: BetterSqlite3.Transaction<(holds: readonly HoldRequest[]) => void>;
  readonly #settleTx: BetterSqlite3.Transaction<(holds: readonly HoldSettle[]) => void>;

  constructor(native: BetterSqlite3.Database) {
    this.#native = native;
    const take = native.prepare(
      'UPDATE budget_usage SET reserved = reserved + @x WHERE budget_id = @id AND period_start = @p AND used + reserved + @x <= @amount AND used < @amount',
    );
    const create = native.prepare('INSERT INTO budget_usage (budget_id, period_start, used, reserved) VALUES (?, ?, 0, 0) ON CONFLICT DO NOTHING');
    const settle = native.prepare('UPDATE budget_usage SET reserved = reserved - @r, used = used + @a WHERE budget_id = @id AND period_start = @p');
    this.#reserveTx = native.transaction((holds: readonly HoldRequest[]) => {
      holds.forEach((h, i) => {
        const args = { x: h.reserve, id: h.budgetId, p: h.periodStart, amount: h.amount };
        if (take.run(args).changes === 1) return;
        if (create.run(h.budgetId, h.periodStart).changes === 1 && take.run(args).changes === 1) return;
        throw new Misfit(i); // rolls back the reservations already taken
      });
    });
    this.#settleTx = native.transaction((holds: readonly HoldSettle[]) => {
      for (const h of holds) settle.run({ r: h.reserved, a: h.actual, id: h.budgetId, p: h.periodStart });
    });
  }

  /**
   * Waits (briefly, asynchronously) while an async Kysely transaction is open on the shared
   * connection, so that our writes never become a savepoint inside someone else's transaction.
   */
  async #outsideTransactions(): Promise<void> {
    for (let waited = 0; this.#native.inTransaction && waited < 5000; waited += 1) await sleep(1);
  }

  /**
   * Group commit of ledger operations: every reserve / settle asked for during one turn of the
   * event loop runs in ONE `BEGIN IMMEDIATE` transaction, each operation in its own savepoint
   * (better-sqlite3 nests transaction functions as savepoints), in arrival order. Semantics are
   * those of one transaction per operation — a reservation that does not fit rolls back only its
   * own savepoint — but the write lock is taken once per batch instead of once per request, so the
   * event loop waits far less often for the store worker's commits.
   */
  #queue: Array<{ kind: 'reserve' | 'settle'; holds: readonly (HoldRequest | HoldSettle)[]; resolve: (n: number) => void; reject: (e: unknown) => void }> = [];
  #scheduled = false;

  #enqueue(kind: 'reserve' | 'settle', holds: readonly (HoldRequest | HoldSettle)[]): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#queue.push({ kind, holds, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => void this.#flush());
      }
    });
  }

  async #flush(): Promise<void> {
    if (this.#native.inTransaction) await this.#outsideTransactions();
    const ops = this.#queue;
    this.#queue = [];
    this.#scheduled = false;
    const results: Array<{ ok: true; n: number } | { ok: false; err: unknown }> = [];
    try {
      this.#batchTx.immediate(ops, results);
    } catch (err) {
      // The batch itself failed (e.g. SQLITE_BUSY past the timeout): every operation fails.
      for (const op of ops) op.reject(err);
      return;
    }
    ops.forEach((op, i) => {
      const r = results[i]!;
      if (r.ok) op.resolve(r.n);
      else op.reject(r.err);
    });
  }

  #batch: ReturnType<SqliteLedger['makeBatch']> | undefined;
  get #batchTx(): ReturnType<SqliteLedger['makeBatch']> {
    return (this.#batch ??= this.makeBatch());
  }

  /** @internal the batch transaction function (built on first use, after the constructor). */
  makeBatch() {
    return this.#native.transaction((ops: ReadonlyArray<{ kind: 'reserve' | 'settle'; holds: readonly (HoldRequest | HoldSettle)[] }>, out: Array<{ ok: true; n: number } | { ok: false; err: unknown }>) => {
      for (const op of ops) {
        try {
          if (op.kind === 'reserve') this.#reserveTx(op.holds as readonly HoldRequest[]);
          else this.#settleTx(op.holds as readonly HoldSettle[]);
          out.push({ ok: true, n: -1 });
        } catch (err) {
          if (err instanceof Misfit) out.push({ ok: true, n: err.index });
          else out.push({ ok: false, err });
        }
      }
    });
  }

  async reserve(holds: readonly HoldRequest[]): Promise<number> {
    if (holds.length === 0) return -1;
    return this.#enqueue('reserve', holds);
  }

  async settle(holds: readonly HoldSettle[]): Promise<void> {
    if (holds.length === 0) return;
    await this.#enqueue('settle', holds);
  }
}

class PostgresLedger implements Ledger {
  readonly #store: Store;
  constructor(store: Store) {
    this.#store = store;
  }

  async #take(h: HoldRequest): Promise<boolean> {
    const r = await sql`UPDATE budget_usage SET reserved = reserved + cast(${h.reserve} as bigint)
      WHERE budget_id = ${h.budgetId} AND period_start = cast(${h.periodStart} as bigint)
        AND used + reserved + cast(${h.reserve} as bigint) <= cast(${h.amount} as bigint) AND used < cast(${h.amount} as bigint)`.execute(this.#store.db);
    return Number(r.numAffectedRows ?? 0n) === 1;
  }

  async reserve(holds: readonly HoldRequest[]): Promise<number> {
    const db = this.#store.db;
    for (let i = 0; i < holds.length; i++) {
      const h = holds[i]!;
      let ok: boolean;
      try {
        ok = await this.#take(h);
        if (!ok) {
          await sql`INSERT INTO budget_usage (budget_id, period_start, used, reserved)
            VALUES (${h.budgetId}, cast(${h.periodStart} as bigint), 0, 0) ON CONFLICT DO NOTHING`.execute(db);
          // Retry even when another request created the row between our two statements.
          ok = await this.#take(h);
        }
      } catch (err) {
        await this.#giveBack(holds.slice(0, i)).catch(() => undefined);
        throw err;
      }
      if (!ok) {
        await this.#giveBack(holds.slice(0, i));
        return i;
      }
    }
    return -1;
  }

  /** Gives back reservations this request already took (in the same order). */
  async #giveBack(taken: readonly HoldRequest[]): Promise<void> {
    for (const t of taken) {
      await sql`UPDATE budget_usage SET reserved = reserved - cast(${t.reserve} as bigint)
        WHERE budget_id = ${t.budgetId} AND period_start = cast(${t.periodStart} as bigint)`.execute(this.#store.db);
    }
  }

  async settle(holds: readonly HoldSettle[]): Promise<void> {
    await Promise.all(
      holds.map((h) =>
        sql`UPDATE budget_usage SET reserved = reserved - cast(${h.reserved} as bigint), used = used + cast(${h.actual} as bigint)
          WHERE budget_id = ${h.budgetId} AND period_start = cast(${h.periodStart} as bigint)`.execute(this.#store.db),
      ),
    );
  }
}
