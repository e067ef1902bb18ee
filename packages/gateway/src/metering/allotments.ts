/**
 * Budget allotments: each gateway process takes slices of a budget from the database and serves
 * reservations from them in memory, so the request path touches the database only when a slice
 * runs out, not twice per request.
 *
 * The scheme is the quota-lease idea of Google's Doorman and Envoy's quota service, on top of the
 * database's conditional update (`ledger.ts`):
 *
 * - An **allotment** is what this process holds of one budget row (budget id + period start):
 *   `leased` — capacity counted in the row's `reserved` column on this process's behalf;
 *   `inFlight` — reservations of admitted requests not yet settled; `unflushed` — actual usage of
 *   settled requests not yet written to the row's `used` column. Its free capacity is
 *   `leased − inFlight − unflushed`.
 * - **Reserve:** a request that fits the free capacity is admitted in memory. Otherwise the process
 *   takes the shortfall from the row — plus an *extra* of up to {@link MAX_EXTRA_REQUESTS} such
 *   requests, at most 1/{@link EXTRA_DIVISOR} of what is free, and only while the extra leaves a
 *   *margin* of 1/{@link MARGIN_DIVISOR} of the amount untouched. Near the end of a budget (the
 *   margin) every grant is exact, and the allotment enters **end game**: it gives back what it does
 *   not use at the next turn, so the last requests are admitted exactly as if every reservation
 *   went to the database (no capacity stranded in an idle process).
 * - **Top-up:** once an allotment that was granted an extra has less than half that extra left
 *   free, the next admission starts a grant of a fresh extra in the background (not awaited), so
 *   a steadily busy process finds capacity in memory instead of making requests wait for the
 *   database each time a slice runs out. Off in end game.
 * - **Settle** is in memory (`inFlight −= reserved`, `unflushed += actual`); a timer writes usage
 *   to the row every {@link FLUSH_MS} ms (`used += u`, `reserved −= u`) and gives back the free
 *   capacity of an allotment unused for {@link IDLE_MS} ms, or taken more than {@link IDLE_MS} ms
 *   ago (so no process holds spare capacity for longer than about a second, even while busy or
 *   while a long stream is in flight).
 *
 * Never overspent: the database only ever hands out capacity with the conditional update, and a
 * process admits only within what it was handed. Across processes, capacity held by one process's
 * allotment is not available to another until given back (at most one and a half extras, for at most
 * about {@link IDLE_MS} ms, or at once in end game). What the row shows lags by at most
 * {@link FLUSH_MS} ms; {@link Allotments.flush} writes everything and gives back all free capacity now.
 * A process that crashes leaves its allotment counted as reserved (as a crash during a request
 * always did), until the period ends.
 */
import type { Adjustment, GrantRequest, Ledger } from './ledger.ts';

/** Most requests of the current size an extra covers. */
export const MAX_EXTRA_REQUESTS = 128;
/** An extra is at most 1/EXTRA_DIVISOR of the row's free capacity. */
export const EXTRA_DIVISOR = 16;
/** The last 1/MARGIN_DIVISOR of a budget is only ever granted exactly (end game). */
export const MARGIN_DIVISOR = 16;
/** Usage is written to the database at least this often while there is some (ms). */
export const FLUSH_MS = 250;
/** Free capacity of an allotment unused for this long is given back (ms). */
export const IDLE_MS = 1000;

/** A reservation to make on one budget row. */
export interface AllotmentHold {
  budgetId: string;
  /** Period start, ms since epoch (0 for fixed budgets). */
  periodStart: number;
  /** Budget amount per period, in its unit. */
  amount: number;
  /** What to reserve, in the budget's unit (integer ≥ 0). */
  reserve: number;
}

/** What this process holds of one budget row; see the module documentation. */
export class Allotment {
  readonly budgetId: string;
  readonly periodStart: number;
  /** The budget amount the capacity was taken under. */
  amount: number;
  leased = 0;
  inFlight = 0;
  unflushed = 0;
  /** `amount − used − reserved` of the row at our last statement (Infinity: not known yet). */
  knownFree = Infinity;
  /** Near the end of the budget: exact grants, free capacity given back at once. */
  endGame = false;
  /** The amount changed since capacity was taken: give it all back before taking more. */
  stale = false;
  /**
   * Changes of `amount` seen (starts at 0). A reservation remembers the generation it was taken in:
   * when one taken under an older amount settles, what it leaves over was taken under that amount
   * too, so the allotment turns stale again instead of counting it as free.
   */
  generation = 0;
  lastUse = 0;
  /** When capacity was last taken from the database (ms since epoch). */
  lastGrant = 0;
  /** Free capacity below which an admission starts a background top-up (0: none; see the module documentation). */
  topUpBelow = 0;
  /** Reservations taken and not yet settled or given back, zero-size ones included. */
  refs = 0;
  /** Trips to the database queued or running (an allotment is never dropped while > 0). */
  pending = 0;
  /** Serialises this allotment's trips to the database. */
  tail: Promise<unknown> = Promise.resolve();

  constructor(budgetId: string, periodStart: number, amount: number) {
    this.budgetId = budgetId;
    this.periodStart = periodStart;
    this.amount = amount;
  }

  /** Capacity held and not spoken for. */
  get free(): number {
    return this.leased - this.inFlight - this.unflushed;
  }
}

/** What {@link Allotments.reserve} returns: `misfit` −1 and the reservations, or the index of the hold that did not fit. */
export interface Reserved {
  misfit: number;
  taken: Taken[];
}

/**
 * Whether `h` can be reserved from what `a` holds, with no trip to the database. Zero-size holds
 * never can: they go to the database, which refuses them once the budget is exhausted.
 */
function fitsHeld(a: Allotment, h: AllotmentHold): boolean {
  return h.reserve > 0 && !a.stale && a.free >= h.reserve;
}

/**
 * Returns reservations that were taken and not used (a refusal): their capacity is free again,
 * unless it was taken under an older amount (see {@link Allotment.generation}).
 */
function untake(taken: readonly Taken[]): void {
  for (const t of taken) {
    t.allotment.inFlight -= t.reserved;
    t.allotment.refs--;
    if (t.generation !== t.allotment.generation) t.allotment.stale = true;
  }
}

/** The key of allotment (budget, period) in the map of all allotments. */
function allotmentKey(budgetId: string, periodStart: number): string {
  return `${periodStart}\u0000${budgetId}`;
}

/** One reservation taken by {@link Allotments.reserve}, to hand back to {@link Allotments.settle}. */
export interface Taken {
  readonly allotment: Allotment;
  readonly reserved: number;
  /** `allotment.generation` when taken. */
  readonly generation: number;
}

/** The allotments of one process (one per budget row); see the module documentation. */
export class Allotments {
  readonly #ledger: Ledger;
  readonly #now: () => number;
  readonly #map = new Map<string, Allotment>();
  /** The allotment of each budget's latest period seen (a lookup by id; `#map` holds them all). */
  readonly #current = new Map<string, Allotment>();
  #timer: NodeJS.Timeout | undefined;
  #soon = false;
  /** The adjustment write in progress, if any. */
  #writing: Promise<void> | null = null;
  #onError: (err: unknown) => void;
  /** After {@link close}: no top-ups, no timers. */
  #closed = false;

  /**
   * @param ledger the database side
   * @param opts `now`: clock (ms since epoch) for idle times; `onError`: called when a background
   *   write fails (it is retried at the next flush)
   */
  constructor(ledger: Ledger, opts: { now?: () => number; onError?: (err: unknown) => void } = {}) {
    this.#ledger = ledger;
    this.#now = opts.now ?? Date.now;
    this.#onError = opts.onError ?? (() => undefined);
  }

  #get(h: AllotmentHold): Allotment {
    let a = this.#current.get(h.budgetId);
    if (a === undefined || a.periodStart !== h.periodStart) {
      const k = allotmentKey(h.budgetId, h.periodStart);
      a = this.#map.get(k);
      if (!a) {
        a = new Allotment(h.budgetId, h.periodStart, h.amount);
        this.#map.set(k, a);
      }
      const cur = this.#current.get(h.budgetId);
      if (cur === undefined || cur.periodStart <= h.periodStart) this.#current.set(h.budgetId, a);
    }
    if (a.amount !== h.amount) {
      // The budget was changed by an admin: capacity taken under the old amount is given back first.
      a.amount = h.amount;
      a.generation++;
      a.stale = true;
      a.endGame = false;
      a.knownFree = Infinity;
    }
    return a;
  }

  /**
   * {@link reserve} without waiting: reserves on every row when each hold fits the free capacity
   * held in memory (the usual case), else reserves nothing.
   * @returns the reservations, or null when some hold needs the database (call {@link reserve})
   */
  tryReserve(holds: readonly AllotmentHold[]): Taken[] | null {
    const taken: Taken[] = [];
    for (let i = 0; i < holds.length; i++) {
      const h = holds[i]!;
      const a = this.#get(h);
      if (!fitsHeld(a, h)) {
        untake(taken); // nothing was scheduled for them yet
        return null;
      }
      a.lastUse = this.#now();
      this.#take(a, h, taken);
    }
    return taken;
  }

  /** Takes `h.reserve` from `a`'s free capacity (which holds it) and starts a top-up when due. */
  #take(a: Allotment, h: AllotmentHold, taken: Taken[]): void {
    a.inFlight += h.reserve;
    a.refs++;
    taken.push({ allotment: a, reserved: h.reserve, generation: a.generation });
    if (a.free < a.topUpBelow && a.pending === 0 && !a.endGame && !this.#closed) {
      const below = a.topUpBelow;
      a.topUpBelow = 0; // one top-up per extra
      this.#grow(a, h, below).catch(this.#onError);
    }
  }

  /**
   * Reserves on every row in the given order, all or nothing (taking capacity from the database
   * where the allotment lacks it).
   * @returns `misfit` −1 and the reservations taken when all fitted, else the index of the first
   *   hold that did not fit (nothing stays reserved then)
   * @throws the database error (nothing stays reserved)
   */
  async reserve(holds: readonly AllotmentHold[]): Promise<Reserved> {
    const taken: Taken[] = [];
    try {
      for (let i = 0; i < holds.length; i++) {
        const h = holds[i]!;
        const a = this.#get(h);
        a.lastUse = this.#now();
        if (fitsHeld(a, h)) {
          this.#take(a, h, taken);
          continue;
        }
        if (!(await this.#grow(a, h))) {
          this.#giveBack(taken);
          return { misfit: i, taken: [] };
        }
        a.refs++; // #grow took `h.reserve` into inFlight
        taken.push({ allotment: a, reserved: h.reserve, generation: a.generation });
      }
    } catch (err) {
      this.#giveBack(taken);
      throw err;
    }
    return { misfit: -1, taken };
  }

  #giveBack(taken: readonly Taken[]): void {
    untake(taken);
    if (taken.length > 0) this.#schedule(taken);
  }

  /**
   * Takes what `h` lacks from the database (serialised per allotment); on success `h` is reserved.
   * With `topUpBelow` > 0, takes only a fresh extra sized for requests like `h` and reserves
   * nothing, unless the allotment has `topUpBelow` free again by then (a top-up no longer needed,
   * or with no room for an extra, asks for nothing).
   */
  #grow(a: Allotment, h: AllotmentHold, topUpBelow = 0): Promise<boolean> {
    const topUp = topUpBelow > 0;
    const run = async (): Promise<boolean> => {
      for (let attempt = 0; attempt < 3; attempt++) {
        if (topUp) {
          if (a.stale || a.endGame || a.free >= topUpBelow) return true;
        } else if (fitsHeld(a, h)) {
          a.inFlight += h.reserve;
          return true;
        }
        const release = a.stale ? Math.max(0, a.free) : 0;
        const have = a.stale ? 0 : a.free;
        const need = topUp ? 0 : Math.max(0, h.reserve - have);
        const margin = Math.floor(a.amount / MARGIN_DIVISOR);
        let extra = 0;
        if (!a.endGame && h.reserve > 0) {
          const room = Math.min(a.knownFree, a.amount) - need - margin;
          extra = h.reserve * Math.min(MAX_EXTRA_REQUESTS, Math.floor(Math.max(0, room) / (h.reserve * EXTRA_DIVISOR)));
        }
        if (topUp && extra === 0) return true; // near the end: the next admission that lacks capacity asks exactly
        const g: GrantRequest = { budgetId: a.budgetId, periodStart: a.periodStart, amount: a.amount, need, extra, margin, release };
        // Applied locally first, so a concurrent flush never gives it back twice.
        a.leased -= release;
        a.stale = false;
        let r;
        try {
          r = await this.#ledger.grant(g);
        } catch (err) {
          a.leased += release;
          a.stale = release > 0 || a.stale;
          throw err;
        }
        a.leased += r.granted;
        a.knownFree = r.free;
        // The amount changed while the grant was on its way (and a flush may have un-staled the
        // allotment meanwhile): what was just taken was taken under the old amount.
        if (a.amount !== g.amount) a.stale = true;
        if (r.granted > 0) a.lastGrant = this.#now();
        // Exact grants (no extra asked, or only `need` fitted) mean the budget is close to its end.
        if (h.reserve > 0 && r.fitted) a.endGame = extra === 0 || r.granted < need + extra;
        a.topUpBelow = r.fitted && !a.endGame && extra > 0 ? Math.floor(extra / 2) : 0;
        if (!r.fitted) {
          a.endGame = true;
          this.#schedule([{ allotment: a }]); // end game: what this allotment holds goes back at once
          return false;
        }
        if (topUp) return true;
        if (h.reserve === 0) return true; // the row accepted a zero-size request (not exhausted)
      }
      return false; // taken by concurrent requests three times over: refuse rather than loop
    };
    a.pending++;
    const p = a.tail.then(run, run).finally(() => {
      a.pending--;
      this.#schedule([{ allotment: a }]); // what was taken is given back when unused (see flush)
    });
    a.tail = p.catch(() => undefined);
    return p;
  }

  /**
   * Settles reservations (in memory): `taken[i]` becomes its actual usage `actual[i]` (in the
   * budget's unit; may exceed the reservation: recorded, not clamped). Written to the database by
   * the next flush.
   */
  settle(taken: readonly Taken[], actual: readonly number[]): void {
    const now = this.#now();
    for (let i = 0; i < taken.length; i++) {
      const t = taken[i]!;
      const a = t.allotment;
      a.inFlight -= t.reserved;
      a.refs--;
      const used = Math.max(0, actual[i] ?? 0);
      a.unflushed += used;
      a.lastUse = now;
      // Left over from capacity taken under an older amount: not free under the new one.
      if (t.generation !== a.generation && used < t.reserved) a.stale = true;
    }
    if (taken.length > 0) this.#schedule(taken);
  }

  /** Ensures a flush: at the next turn for end-game allotments, else within FLUSH_MS. */
  #schedule(touched: ReadonlyArray<{ readonly allotment: Allotment }> = []): void {
    if (this.#closed) return;
    // Only the allotments just used can have become urgent (the others are covered by the timer).
    let urgent = false;
    for (const { allotment: a } of touched) if (a.endGame && (a.unflushed > 0 || a.free > 0)) urgent = true;
    if (urgent && !this.#soon) {
      this.#soon = true;
      setImmediate(() => {
        this.#soon = false;
        void this.#flushSafe(false);
      });
    }
    if (!this.#timer && this.#map.size > 0) {
      // Runs while anything is held: usage to write, slices to give back when unused.
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#flushSafe(false).finally(() => {
          if (this.#map.size > 0) this.#schedule();
        });
      }, FLUSH_MS);
      this.#timer.unref();
    }
  }

  async #flushSafe(all: boolean): Promise<void> {
    try {
      await this.flush(all);
    } catch (err) {
      this.#onError(err);
    }
  }

  /**
   * Writes settled usage to the database and gives back free capacity: of every allotment when
   * `all` (default), else of end-game and idle ones only.
   * @throws the database error (the writes are kept and retried by the next flush)
   */
  async flush(all = true): Promise<void> {
    // A full flush first lets grants on their way land (a background top-up among them), so that
    // what they take is given back too instead of staying reserved in the row.
    if (all) {
      const busy = [...this.#map.values()].filter((a) => a.pending > 0);
      if (busy.length > 0) await Promise.all(busy.map((a) => a.tail));
    }
    while (this.#writing) await this.#writing.catch(() => undefined);
    const now = this.#now();
    const ops: Adjustment[] = [];
    const undo: Array<() => void> = [];
    for (const [k, a] of this.#map) {
      const u = a.unflushed;
      // Usage turns held capacity into used capacity; in-flight reservations stay covered.
      const fromLease = Math.min(u, Math.max(0, a.leased - a.inFlight));
      let release = fromLease;
      // Free capacity goes back when unused for IDLE_MS, and at the latest IDLE_MS after it was
      // taken (a steadily busy process takes a fresh slice each second instead of holding one).
      const idle = now - a.lastUse >= IDLE_MS || now - a.lastGrant >= IDLE_MS;
      if (all || a.endGame || a.stale || idle) release += Math.max(0, a.leased - fromLease - a.inFlight);
      if (u === 0 && release === 0) {
        if (a.leased === 0 && a.inFlight === 0 && a.refs === 0 && a.pending === 0) {
          this.#map.delete(k);
          if (this.#current.get(a.budgetId) === a) this.#current.delete(a.budgetId);
        }
        continue;
      }
      a.unflushed -= u;
      a.leased -= release;
      const cleared = release > 0 && a.stale && a.leased === a.inFlight;
      if (cleared) a.stale = false;
      undo.push(() => {
        a.unflushed += u;
        a.leased += release;
        if (cleared) a.stale = true;
      });
      ops.push({ budgetId: a.budgetId, periodStart: a.periodStart, used: u, release });
    }
    if (ops.length === 0) return;
    const w = this.#ledger.adjust(ops);
    this.#writing = w;
    try {
      await w;
    } catch (err) {
      for (const f of undo) f();
      throw err;
    } finally {
      this.#writing = null;
    }
  }

  /** Stops the timer and starts no more top-ups or timers (call {@link flush} first to write everything). */
  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
