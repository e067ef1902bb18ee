/**
 * The budget ledger in the database: the `budget_usage` table (one row per budget and period), on
 * which gateway processes take and give back **allotments** (see `allotments.ts`).
 *
 * Never overspent, whatever the concurrency and however many gateway processes share the database:
 * capacity is only ever taken with ONE conditional statement per budget row,
 *
 *     UPDATE budget_usage SET reserved = reserved + :g
 *      WHERE budget_id = :id AND period_start = :p AND used + reserved + :g (+ :margin) <= :amount AND used < :amount
 *     RETURNING used, reserved
 *
 * whose returned row says whether it fitted (the period row is created first with insert-or-ignore
 * when missing). The database serialises these statements on the row, so the sum of everything
 * taken can never pass the amount. (`used < amount` makes an exhausted budget refuse zero-cost
 * requests too.) Giving back (`reserved -= r`) and charging (`used += u`) are unconditional.
 *
 * - SQLite: the native better-sqlite3 handle with cached prepared statements; the operations of one
 *   event-loop turn share one `BEGIN IMMEDIATE` transaction (group commit, see `#flush`).
 * - PostgreSQL: autocommitted statements through Kysely/pg.
 */
import { sql, type Kysely } from 'kysely';
import type BetterSqlite3 from 'better-sqlite3';
import type { Store } from '../store/db.ts';
import type { Database } from '../store/schema.ts';

/** One grant: take `need + extra` when that leaves `margin` free, else `need` alone, else nothing. */
export interface GrantRequest {
  budgetId: string;
  /** Period start, ms since epoch (0 for fixed budgets). */
  periodStart: number;
  /** Budget amount per period, in its unit. */
  amount: number;
  /** What must be taken for the caller to proceed (integer ≥ 0, in the budget's unit). */
  need: number;
  /** Taken on top of `need` only while `used + reserved + need + extra + margin <= amount` (integer ≥ 0). */
  extra: number;
  /** Capacity an extra must leave untouched (integer ≥ 0). */
  margin: number;
  /** Given back (`reserved -= release`) before taking (integer ≥ 0; default 0). */
  release?: number;
}

/** What a grant did. */
export interface GrantResult {
  /** Whether `need` fitted (false: nothing was taken). */
  fitted: boolean;
  /** Taken: `need + extra`, `need`, or 0 when not even `need` fitted. */
  granted: number;
  /** `amount - used - reserved` after the statement (may be negative after overage; Infinity when unknown). */
  free: number;
}

/** One adjustment of a row: `used += used`, `reserved -= release` (rows deleted meanwhile are skipped). */
export interface Adjustment {
  budgetId: string;
  periodStart: number;
  /** Charged (integer ≥ 0). */
  used: number;
  /** Given back (integer ≥ 0). */
  release: number;
}

/** Grants and adjustments on `budget_usage` rows (one implementation per dialect). */
export interface Ledger {
  /**
   * Takes capacity from one row (see {@link GrantRequest}).
   * @throws the database error (nothing was taken or given back then)
   */
  grant(g: GrantRequest): Promise<GrantResult>;
  /**
   * Applies adjustments (one transaction on SQLite).
   * @throws the database error (nothing was applied then)
   */
  adjust(ops: readonly Adjustment[]): Promise<void>;
}

/** The ledger for a store's dialect, on the store's own connection. */
export function createLedger(store: Store): Ledger {
  return store.sqlite ? new SqliteLedger(store.sqlite) : new PostgresLedger(store);
}

/**
 * The SQLite ledger on a given native connection (the store worker thread runs one on its own
 * connection, so that budget writes do not wait for the write lock on the event loop).
 */
export function createSqliteLedger(native: BetterSqlite3.Database): Ledger {
  return new SqliteLedger(native);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Op = { kind: 'grant'; g: GrantRequest } | { kind: 'adjust'; ops: readonly Adjustment[] };
type OpResult = { ok: true; r: GrantResult | null } | { ok: false; err: unknown };

class SqliteLedger implements Ledger {
  readonly #native: BetterSqlite3.Database;
  readonly #run: (op: Op) => GrantResult | null;

  constructor(native: BetterSqlite3.Database) {
    this.#native = native;
    const takeMargin = native.prepare(
      'UPDATE budget_usage SET reserved = reserved + @g WHERE budget_id = @id AND period_start = @p AND used + reserved + @g + @margin <= @amount AND used < @amount RETURNING used, reserved',
    );
    const take = native.prepare(
      'UPDATE budget_usage SET reserved = reserved + @g WHERE budget_id = @id AND period_start = @p AND used + reserved + @g <= @amount AND used < @amount RETURNING used, reserved',
    );
    const read = native.prepare('SELECT used, reserved FROM budget_usage WHERE budget_id = ? AND period_start = ?');
    const create = native.prepare('INSERT INTO budget_usage (budget_id, period_start, used, reserved) VALUES (?, ?, 0, 0) ON CONFLICT DO NOTHING');
    const adjust = native.prepare('UPDATE budget_usage SET reserved = reserved - @r, used = used + @u WHERE budget_id = @id AND period_start = @p');
    type Row = { used: number; reserved: number };
    const free = (g: GrantRequest, row: Row | undefined) => (row ? g.amount - Number(row.used) - Number(row.reserved) : Infinity);
    const grantOnce = (g: GrantRequest): GrantResult | null => {
      const base = { id: g.budgetId, p: g.periodStart, amount: g.amount };
      if (g.extra > 0) {
        const row = takeMargin.get({ ...base, g: g.need + g.extra, margin: g.margin }) as Row | undefined;
        if (row) return { fitted: true, granted: g.need + g.extra, free: free(g, row) };
      }
      const row = take.get({ ...base, g: g.need }) as Row | undefined;
      if (row) return { fitted: true, granted: g.need, free: free(g, row) };
      return null;
    };
    this.#run = (op) => {
      if (op.kind === 'adjust') {
        for (const a of op.ops) adjust.run({ r: a.release, u: a.used, id: a.budgetId, p: a.periodStart });
        return null;
      }
      const g = op.g;
      if (g.release) adjust.run({ r: g.release, u: 0, id: g.budgetId, p: g.periodStart });
      const first = grantOnce(g);
      if (first) return first;
      if (create.run(g.budgetId, g.periodStart).changes === 1) {
        const second = grantOnce(g);
        if (second) return second;
      }
      return { fitted: false, granted: 0, free: free(g, read.get(g.budgetId, g.periodStart) as Row | undefined) };
    };
  }

  /**
   * Waits (briefly, asynchronously) while an async Kysely transaction is open on the shared
   * connection, so that our writes never become a savepoint inside someone else's transaction.
   */
  async #outsideTransactions(): Promise<void> {
    for (let waited = 0; this.#native.inTransaction && waited < 5000; waited += 1) await sleep(1);
  }

  /**
   * Group commit: every grant and adjustment asked for during one turn of the event loop runs in
   * ONE `BEGIN IMMEDIATE` transaction, each operation in its own savepoint, in arrival order, so
   * the write lock is taken once per batch.
   */
  #queue: Array<{ op: Op; resolve: (r: GrantResult | null) => void; reject: (e: unknown) => void }> = [];
  #scheduled = false;

  #enqueue(op: Op): Promise<GrantResult | null> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
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
    const results: OpResult[] = [];
    try {
      this.#batchTx.immediate(ops, results);
    } catch (err) {
      // The batch itself failed (e.g. SQLITE_BUSY past the timeout): every operation fails.
      for (const op of ops) op.reject(err);
      return;
    }
    ops.forEach((op, i) => {
      const r = results[i]!;
      if (r.ok) op.resolve(r.r);
      else op.reject(r.err);
    });
  }

  #batch: BetterSqlite3.Transaction<(ops: ReadonlyArray<{ op: Op }>, out: OpResult[]) => void> | undefined;
  get #batchTx(): BetterSqlite3.Transaction<(ops: ReadonlyArray<{ op: Op }>, out: OpResult[]) => void> {
    if (!this.#batch) {
      const one = this.#native.transaction((op: Op) => this.#run(op));
      this.#batch = this.#native.transaction((ops: ReadonlyArray<{ op: Op }>, out: OpResult[]) => {
        for (const { op } of ops) {
          try {
            out.push({ ok: true, r: one(op) });
          } catch (err) {
            out.push({ ok: false, err });
          }
        }
      });
    }
    return this.#batch;
  }

  async grant(g: GrantRequest): Promise<GrantResult> {
    return (await this.#enqueue({ kind: 'grant', g }))!;
  }

  async adjust(ops: readonly Adjustment[]): Promise<void> {
    if (ops.length === 0) return;
    await this.#enqueue({ kind: 'adjust', ops });
  }
}

class PostgresLedger implements Ledger {
  readonly #store: Store;
  constructor(store: Store) {
    this.#store = store;
  }

  async #take(db: Kysely<Database>, g: GrantRequest, amount: number, margin: number): Promise<{ used: unknown; reserved: unknown } | undefined> {
    const r = await sql<{ used: unknown; reserved: unknown }>`UPDATE budget_usage SET reserved = reserved + cast(${amount} as bigint)
      WHERE budget_id = ${g.budgetId} AND period_start = cast(${g.periodStart} as bigint)
        AND used + reserved + cast(${amount} as bigint) + cast(${margin} as bigint) <= cast(${g.amount} as bigint) AND used < cast(${g.amount} as bigint)
      RETURNING used, reserved`.execute(db);
    return r.rows[0];
  }

  async #grantOnce(db: Kysely<Database>, g: GrantRequest): Promise<GrantResult | null> {
    const free = (row: { used: unknown; reserved: unknown }) => g.amount - Number(row.used) - Number(row.reserved);
    if (g.extra > 0) {
      const row = await this.#take(db, g, g.need + g.extra, g.margin);
      if (row) return { fitted: true, granted: g.need + g.extra, free: free(row) };
    }
    const row = await this.#take(db, g, g.need, 0);
    return row ? { fitted: true, granted: g.need, free: free(row) } : null;
  }

  /** One transaction when something is given back first (all or nothing), else autocommitted statements. */
  async grant(g: GrantRequest): Promise<GrantResult> {
    if (g.release) return this.#store.db.transaction().execute((trx) => this.#grant(trx, g));
    return this.#grant(this.#store.db, g);
  }

  async #grant(db: Kysely<Database>, g: GrantRequest): Promise<GrantResult> {
    if (g.release) {
      await sql`UPDATE budget_usage SET reserved = reserved - cast(${g.release} as bigint)
        WHERE budget_id = ${g.budgetId} AND period_start = cast(${g.periodStart} as bigint)`.execute(db);
    }
    const first = await this.#grantOnce(db, g);
    if (first) return first;
    await sql`INSERT INTO budget_usage (budget_id, period_start, used, reserved)
      VALUES (${g.budgetId}, cast(${g.periodStart} as bigint), 0, 0) ON CONFLICT DO NOTHING`.execute(db);
    // Retry even when another process created the row between our two statements.
    const second = await this.#grantOnce(db, g);
    if (second) return second;
    const r = await db.selectFrom('budget_usage').select(['used', 'reserved']).where('budget_id', '=', g.budgetId).where('period_start', '=', g.periodStart).executeTakeFirst();
    return { fitted: false, granted: 0, free: r ? g.amount - Number(r.used) - Number(r.reserved) : Infinity };
  }

  async adjust(ops: readonly Adjustment[]): Promise<void> {
    if (ops.length === 0) return;
    await this.#store.db.transaction().execute(async (trx) => {
      for (const a of ops) {
        await sql`UPDATE budget_usage SET reserved = reserved - cast(${a.release} as bigint), used = used + cast(${a.used} as bigint)
          WHERE budget_id = ${a.budgetId} AND period_start = cast(${a.periodStart} as bigint)`.execute(trx);
      }
    });
  }
}
