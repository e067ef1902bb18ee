/**
 * An in-memory {@link Ledger} with the database's semantics (ledger.ts): `budget_usage` rows by
 * budget id, the conditional grant (`need + extra` only when a margin stays free, else `need`, else
 * nothing), unconditional adjustments; asynchronous like a database, with injectable failures.
 * Shared by the allotment tests.
 */
import type { Adjustment, GrantRequest, GrantResult, Ledger } from '../../src/metering/ledger.ts';

export class FakeLedger implements Ledger {
  readonly rows = new Map<string, { used: number; reserved: number }>();
  /** The next grant / adjust throws (once). */
  failNextGrant = false;
  failNextAdjust = false;
  /** Probability of a thrown error on any call (random failure mode), with `rand` as the source. */
  failRate = 0;
  rand: () => number = Math.random;
  /** Grants and adjustments that reached the rows. */
  grants = 0;
  adjusts = 0;
  /** Largest `used + reserved` seen right after any grant, per row. */
  readonly maxCommitted = new Map<string, number>();

  /** The row of budget `id` (created empty on first use). */
  row(id = 'b1'): { used: number; reserved: number } {
    let r = this.rows.get(id);
    if (!r) this.rows.set(id, (r = { used: 0, reserved: 0 }));
    return r;
  }
  /** `used` of row `b1`. */
  get used(): number {
    return this.row().used;
  }
  /** `reserved` of row `b1`. */
  get reserved(): number {
    return this.row().reserved;
  }

  async grant(g: GrantRequest): Promise<GrantResult> {
    await Promise.resolve();
    if (this.failNextGrant || (this.failRate > 0 && this.rand() < this.failRate)) {
      this.failNextGrant = false;
      throw new Error('injected grant failure');
    }
    this.grants++;
    const row = this.row(g.budgetId);
    if (g.release) row.reserved -= g.release;
    const fits = (x: number, margin: number) => row.used + row.reserved + x + margin <= g.amount && row.used < g.amount;
    let granted = -1;
    if (g.extra > 0 && fits(g.need + g.extra, g.margin)) granted = g.need + g.extra;
    else if (fits(g.need, 0)) granted = g.need;
    if (granted < 0) return { fitted: false, granted: 0, free: g.amount - row.used - row.reserved };
    row.reserved += granted;
    this.maxCommitted.set(g.budgetId, Math.max(this.maxCommitted.get(g.budgetId) ?? 0, row.used + row.reserved));
    return { fitted: true, granted, free: g.amount - row.used - row.reserved };
  }

  async adjust(ops: readonly Adjustment[]): Promise<void> {
    await Promise.resolve();
    if (this.failNextAdjust || (this.failRate > 0 && this.rand() < this.failRate)) {
      this.failNextAdjust = false;
      throw new Error('injected adjust failure');
    }
    this.adjusts++;
    for (const a of ops) {
      const row = this.row(a.budgetId);
      row.used += a.used;
      row.reserved -= a.release;
    }
  }
}


/** A {@link FakeLedger} whose grants wait for `open()` while `closed` (adjustments are never gated); records every grant request in `seen`. */
export class GatedLedger extends FakeLedger {
  closed = false;
  readonly seen: GrantRequest[] = [];
  #waiters: Array<() => void> = [];
  /** Lets every waiting grant (and later ones) through. */
  open(): void {
    this.closed = false;
    for (const w of this.#waiters.splice(0)) w();
  }
  override async grant(g: GrantRequest): Promise<GrantResult> {
    this.seen.push(g);
    if (this.closed) await new Promise<void>((r) => this.#waiters.push(r));
    return super.grant(g);
  }
}
