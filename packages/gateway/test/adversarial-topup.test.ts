/**
 * Adversarial review of the background top-up of budget allotments (metering/allotments.ts).
 *
 * The first four are regressions of bugs the review found (fixed in allotments.ts: a full flush
 * waits for grants on their way; nothing is scheduled after close(); a grant that lands after the
 * amount changed marks the allotment stale); the others are what held under attack.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Allotments, IDLE_MS, MAX_EXTRA_REQUESTS, type Allotment, type AllotmentHold, type Taken } from '../src/metering/allotments.ts';
import { createLedger, type GrantRequest, type GrantResult, type Adjustment } from '../src/metering/ledger.ts';
import { FakeLedger, GatedLedger } from './helpers/fake-ledger.ts';
import { rng } from './helpers/prng.ts';
import type { Store } from '../src/store/db.ts';
import { Metering, createBudget, listBudgets, type Budget } from '../src/metering/index.ts';
import { migratedSqliteStore } from './helpers/store-backends.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-adv-topup-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const unhandled: unknown[] = [];
process.on('unhandledRejection', (e) => unhandled.push(e));

const hold = (amount: number, reserve: number, budgetId = 'b1'): AllotmentHold => ({ budgetId, periodStart: 0, amount, reserve });
const turn = () => new Promise<void>((r) => setImmediate(r));
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

/** Grants and adjustments take a random number (0–maxTurns) of event-loop turns. */
class SlowLedger extends FakeLedger {
  constructor(
    readonly delay: () => number,
    readonly maxTurns = 4,
  ) {
    super();
  }
  override async grant(g: GrantRequest): Promise<GrantResult> {
    await turns(Math.floor(this.delay() * (this.maxTurns + 1)));
    return super.grant(g);
  }
  override async adjust(ops: readonly Adjustment[]): Promise<void> {
    await turns(Math.floor(this.delay() * (this.maxTurns + 1)));
    return super.adjust(ops);
  }
}

/** Top-up grants (need 0, an extra) seen by any ledger passed to countTopUps. */
let topUps = 0;
function countTopUps(db: FakeLedger): void {
  const grant = db.grant.bind(db);
  db.grant = (g) => {
    if (g.need === 0 && g.extra > 0) topUps++;
    return grant(g);
  };
}

/** Waits (bounded) until no allotment has a trip to the database queued or running. */
async function quiesce(allots: Iterable<Allotment>, max = 5000): Promise<void> {
  const list = [...allots];
  for (let i = 0; i < max; i++) {
    if (list.every((a) => a.pending === 0)) return;
    await turn();
  }
  assert.fail('allotments never became quiet');
}

/** Admits (and settles in full) requests of `R` until a background top-up is running; returns the allotment. */
async function untilTopUp(al: Allotments, h: AllotmentHold, count = { n: 0 }): Promise<Allotment> {
  for (let i = 0; i < 10 * MAX_EXTRA_REQUESTS; i++) {
    const r = await al.reserve([h]);
    assert.equal(r.misfit, -1);
    al.settle(r.taken, [h.reserve]);
    count.n++;
    const a = r.taken[0]!.allotment;
    if (a.pending > 0) return a;
  }
  return assert.fail('no top-up started');
}

const sqliteStore = (): Promise<Store> => migratedSqliteStore(tmpRoot);

async function row(store: Store, b: Budget): Promise<{ used: number; reserved: number }> {
  const st = (await listBudgets(store, { scopes: [b.scope] })).find((x) => x.id === b.id)!;
  return { used: st.used, reserved: st.reserved };
}

describe('adversarial: allotment top-up — regressions of bugs found in review', () => {
  test('a full flush() waits for a background top-up on its way and gives it back: nothing stays reserved in the row', async () => {
    const db = new GatedLedger();
    const errors: unknown[] = [];
    const al = new Allotments(db, { onError: (e) => errors.push(e) });
    try {
      const R = 100;
      await al.reserve([hold(1e9, R)]).then((r) => al.settle(r.taken, [R]));
      db.closed = true; // the database is slow: the top-up is still on its way
      await untilTopUp(al, hold(1e9, R));
      // Every request the caller made has resolved and settled. A final flush must leave the row
      // with reserved == in-flight (0 here).
      const f = al.flush();
      await turn();
      db.open();
      await f;
      await turns(5);
      assert.deepEqual(
        { reserved: db.reserved, errors: errors.length },
        { reserved: 0, errors: 0 },
        `after the final flush the row still holds ${db.reserved} (a top-up that landed after it)`,
      );
    } finally {
      al.close();
    }
  });

  test('on SQLite, Metering.close() right after a burst leaves nothing reserved (fixed budget), a top-up in flight included', async () => {
    const store = await sqliteStore();
    const m = new Metering(store, { prices: {}, defaultMaxTokens: 10 });
    try {
      const b = await createBudget(store, { scope: { kind: 'key', id: 'k' }, unit: 'tokens', amount: 1e9, period: 'fixed' });
      const req = { tenantId: 't', keyId: 'k', model: 'x', promptTokens: 10, maxTokens: 10 } as const;
      // Slice: 20 + 128·20 = 2580; the top-up starts once less than 1280 is free: at admission 66.
      const n = Math.ceil((MAX_EXTRA_REQUESTS * 20) / 2 / 20) + 2;
      for (let i = 0; i < n; i++) {
        const a = await m.admit(req);
        await m.settle(a, { prompt_tokens: 10, completion_tokens: 10 });
      }
      await m.close(); // "writes settled usage and gives back all free capacity"
      assert.deepEqual(await row(store, b), { used: n * 20, reserved: 0 }, 'nothing in flight after close: nothing reserved');
    } finally {
      await m.close();
      await store.close();
    }
  });

  test('after flush() + close(), a top-up that lands arms no timer: no background flush against a closed database', async () => {
    let now = 1_000_000;
    const db = new GatedLedger();
    const errors: unknown[] = [];
    const al = new Allotments(db, { now: () => now, onError: (e) => errors.push(e) });
    const R = 100;
    await al.reserve([hold(1e9, R)]).then((r) => al.settle(r.taken, [R]));
    db.closed = true;
    await untilTopUp(al, hold(1e9, R));
    setTimeout(() => db.open(), 20); // the top-up lands 20 ms from now
    await al.flush(); // the shutdown sequence of Metering.close: flush, close, then the store is closed
    al.close();
    db.adjust = async () => {
      throw new Error('the database handle is closed');
    };
    now += 10 * IDLE_MS;
    await new Promise((r) => setTimeout(r, 700));
    al.close(); // stop whatever timer is running (bounded test)
    assert.equal(errors.length, 0, `${errors.length} background flushes after close(): ${String(errors[0])}`);
  });

  test('a top-up in flight when the amount is lowered lands as stale: nothing is admitted under the new amount from capacity taken under the old one', async () => {
    const db = new GatedLedger();
    const al = new Allotments(db);
    try {
      const R = 100;
      await al.reserve([hold(1_000_000, R)]).then((r) => al.settle(r.taken, [R]));
      db.closed = true;
      await untilTopUp(al, hold(1_000_000, R));
      await al.flush(false); // usage written
      const usedBefore = db.used;
      assert.ok(usedBefore > 300);
      // An admin lowers the amount to 300 (already used up many times over).
      const p = al.reserve([hold(300, R)]); // marks the allotment stale; waits behind the top-up
      await al.flush(false); // the background flush gives the stale capacity back and clears `stale`
      db.open(); // the top-up (asked under the old amount 1 000 000) lands
      const r = await p;
      let admitted = r.misfit === -1 ? 1 : 0;
      for (let i = 0; i < 20; i++) if ((await al.reserve([hold(300, R)])).misfit === -1) admitted++;
      assert.equal(admitted, 0, `${admitted} × ${R} admitted under an amount of 300 with ${usedBefore} already used`);
    } finally {
      al.close();
    }
  });
});

describe('adversarial: allotment top-up — what held', () => {
  test('seeded random interleavings (3–4 processes, slow grants, failures, overage, zero sizes, flush(all) mid-run): never more told than the amount, state never negative, exact after quiescence', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rand = rng(seed);
      const db = new SlowLedger(rng(seed + 1000), 1 + Math.floor(rand() * 5));
      db.rand = rng(seed + 2000);
      db.failRate = seed % 3 === 0 ? 0 : 0.1;
      const errors: unknown[] = [];
      const onError = (e: unknown) => errors.push(e);
      countTopUps(db);
      const nProcs = 3 + (seed % 2);
      const procs = Array.from({ length: nProcs }, () => new Allotments(db, { onError }));
      const amount = 2000 + Math.floor(rand() * (seed % 4 === 0 ? 5_000_000 : 60_000));
      const fixed = seed % 5 === 0 ? 1 + Math.floor(rand() * 200) : 0;
      const open: Array<{ p: Allotments; taken: Taken[] }> = [];
      const allots = new Set<Allotment>();
      let charged = 0;
      let overage = 0;
      let openReserved = 0;
      const ops: Promise<unknown>[] = [];
      const check = (where: string) => {
        const row = db.row('b1');
        assert.ok(row.reserved >= 0, `seed ${seed} ${where}: row reserved ${row.reserved} < 0`);
        for (const a of allots) {
          assert.ok(a.leased >= 0 && a.inFlight >= 0 && a.unflushed >= 0 && a.refs >= 0 && a.pending >= 0, `seed ${seed} ${where}: negative ${JSON.stringify(a)}`);
          assert.ok(a.topUpBelow >= 0);
        }
        // What callers were told they have (open reservations + usage charged) never passes the amount
        // except by overage actually reported.
        assert.ok(openReserved + charged <= amount + overage, `seed ${seed} ${where}: told ${openReserved} + ${charged} > ${amount} + ${overage}`);
        assert.ok((db.maxCommitted.get('b1') ?? 0) <= amount + overage, `seed ${seed} ${where}: committed > amount + overage`);
      };
      for (let i = 0; i < 500; i++) {
        const p = procs[Math.floor(rand() * procs.length)]!;
        const burst = rand() < 0.2 ? 1 + Math.floor(rand() * 8) : 1;
        for (let k = 0; k < burst; k++) {
          const size = fixed || (rand() < 0.05 ? 0 : 1 + Math.floor(rand() * 300));
          ops.push(
            p.reserve([hold(amount, size)]).then(
              (r) => {
                if (r.misfit !== -1) return;
                for (const t of r.taken) allots.add(t.allotment);
                openReserved += size;
                open.push({ p, taken: r.taken });
              },
              (e: unknown) => assert.match(String(e), /injected/),
            ),
          );
        }
        if (rand() < 0.45 && open.length > 0) {
          const o = open.splice(Math.floor(rand() * open.length), 1)[0]!;
          const res = o.taken[0]!.reserved;
          const actual = rand() < 0.08 ? res + 1 + Math.floor(rand() * 40) : Math.floor(rand() * (res + 1));
          openReserved -= res;
          charged += actual;
          overage += Math.max(0, actual - res);
          o.p.settle(o.taken, [actual]);
        }
        if (rand() < 0.04) ops.push(procs[Math.floor(rand() * procs.length)]!.flush(rand() < 0.5).catch((e: unknown) => assert.match(String(e), /injected/)));
        if (rand() < 0.4) await (rand() < 0.5 ? Promise.resolve() : turn());
        check(`step ${i}`);
      }
      await Promise.all(ops);
      check('after ops');
      for (const o of open) {
        const res = o.taken[0]!.reserved;
        charged += res;
        o.p.settle(o.taken, [res]);
      }
      openReserved = 0;
      await quiesce(allots);
      db.failRate = 0;
      for (const p of procs) await p.flush();
      check('end');
      assert.deepEqual(db.row('b1'), { used: charged, reserved: 0 }, `seed ${seed}: exact after the final flush`);
      for (const e of errors) assert.match(String(e), /injected/);
      // No self-sustaining top-ups: nothing happens any more without requests.
      const grants = db.grants;
      await turns(30);
      assert.equal(db.grants, grants, `seed ${seed}: grants without requests`);
      for (const p of procs) p.close();
    }
    await turns(5);
    assert.deepEqual(unhandled, []);
    assert.ok(topUps > 100, `top-ups exercised: ${topUps}`);
  });

  test('random amount changes (admin edits) with top-ups in flight: state never negative, row exact after quiescence', async () => {
    for (let seed = 1; seed <= 25; seed++) {
      const rand = rng(seed * 7);
      const db = new SlowLedger(rng(seed + 77), 3);
      db.rand = rng(seed + 99);
      db.failRate = 0.05;
      const procs = [new Allotments(db, { onError: () => undefined }), new Allotments(db, { onError: () => undefined })];
      const amounts = [100_000, 20_000, 400_000, 3_000];
      let amount = amounts[0]!;
      const open: Array<{ p: Allotments; taken: Taken[] }> = [];
      const allots = new Set<Allotment>();
      let charged = 0;
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 400; i++) {
        if (rand() < 0.02) amount = amounts[Math.floor(rand() * amounts.length)]!;
        const p = procs[Math.floor(rand() * procs.length)]!;
        const size = 1 + Math.floor(rand() * 100);
        ops.push(
          p.reserve([hold(amount, size)]).then(
            (r) => {
              if (r.misfit !== -1) return;
              for (const t of r.taken) allots.add(t.allotment);
              open.push({ p, taken: r.taken });
            },
            () => undefined,
          ),
        );
        if (rand() < 0.45 && open.length > 0) {
          const o = open.splice(Math.floor(rand() * open.length), 1)[0]!;
          const actual = Math.floor(rand() * (o.taken[0]!.reserved + 1));
          charged += actual;
          o.p.settle(o.taken, [actual]);
        }
        if (rand() < 0.05) ops.push(procs[Math.floor(rand() * procs.length)]!.flush(rand() < 0.3).catch(() => undefined));
        if (rand() < 0.4) await turn();
        assert.ok(db.row('b1').reserved >= 0, `seed ${seed}: reserved < 0`);
        for (const a of allots) assert.ok(a.leased >= 0 && a.inFlight >= 0 && a.unflushed >= 0, `seed ${seed}: negative state`);
      }
      await Promise.all(ops);
      for (const o of open) {
        charged += o.taken[0]!.reserved;
        o.p.settle(o.taken, [o.taken[0]!.reserved]);
      }
      await quiesce(allots);
      db.failRate = 0;
      for (const p of procs) await p.flush();
      assert.deepEqual(db.row('b1'), { used: charged, reserved: 0 }, `seed ${seed}`);
      for (const p of procs) p.close();
    }
  });

  test('end game — 2–4 processes, a budget for 50 requests, random order and bursts, top-ups live: exactly 50 admitted', async () => {
    const before = topUps;
    for (let seed = 1; seed <= 40; seed++) {
      const rand = rng(seed * 13);
      const R = 1 + Math.floor(rand() * 40);
      const amount = 50 * R;
      const db = seed % 2 ? new SlowLedger(rng(seed), 3) : new FakeLedger();
      countTopUps(db);
      const procs = Array.from({ length: 2 + (seed % 3) }, () => new Allotments(db));
      const allots = new Set<Allotment>();
      const owner = new Map<object, Allotments>();
      let admitted = 0;
      let refusedRounds = 0;
      for (let round = 0; round < 400 && refusedRounds < 3; round++) {
        // Each round every process gets one or more requests (demand everywhere), some concurrent.
        const ps: Array<Promise<{ misfit: number; taken: Taken[] }>> = [];
        for (const p of procs) {
          const k = rand() < 0.3 ? 1 + Math.floor(rand() * 4) : 1;
          for (let j = 0; j < k; j++) {
            const pr = p.reserve([hold(amount, R)]);
            void pr.then((r) => owner.set(r, p));
            if (rand() < 0.5) await pr;
            ps.push(pr);
          }
        }
        const rs = await Promise.all(ps);
        const ok = rs.filter((r) => r.misfit === -1);
        for (const r of ok) {
          for (const t of r.taken) allots.add(t.allotment);
          // half settle at their full reservation (usage = reservation: capacity stays spent)
          if (rand() < 0.5) owner.get(r)!.settle(r.taken, [R]);
        }
        admitted += ok.length;
        refusedRounds = ok.length === 0 ? refusedRounds + 1 : 0;
        if (ok.length === 0) await quiesce(allots);
      }
      assert.equal(admitted, 50, `seed ${seed}: R ${R}, ${procs.length} processes`);
      assert.ok(db.used + db.reserved <= amount);
      for (const p of procs) p.close();
    }
    assert.ok(topUps > before, `top-ups happened in the end-game runs (${topUps - before})`);
  });

  test('a failed top-up is reported once through onError, changes nothing, and a later top-up works', async () => {
    const db = new GatedLedger();
    const errors: unknown[] = [];
    const al = new Allotments(db, { onError: (e) => errors.push(e) });
    try {
      const R = 50;
      const settled = { n: 1 };
      await al.reserve([hold(1e9, R)]).then((r) => al.settle(r.taken, [R]));
      db.failNextGrant = true;
      const a = await untilTopUp(al, hold(1e9, R), settled);
      const leased = a.leased;
      await quiesce([a]);
      assert.equal(errors.length, 1);
      assert.equal(a.leased, leased, 'nothing changed');
      assert.equal(a.topUpBelow, 0, 'no retry storm');
      // Requests go on; the next slice comes from a blocking grant, then top-ups resume.
      for (let i = 0; i < 4 * MAX_EXTRA_REQUESTS; i++) {
        const r = await al.reserve([hold(1e9, R)]);
        assert.equal(r.misfit, -1);
        al.settle(r.taken, [R]);
        settled.n++;
      }
      await quiesce([a]);
      assert.ok(db.seen.filter((g) => g.need === 0).length >= 2, 'top-ups resumed');
      await al.flush();
      assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: settled.n * R, reserved: 0 });
    } finally {
      al.close();
    }
  });

  test('concurrent reserve() calls without awaiting, with a gated top-up: one top-up at a time, requests beyond the slice wait and are then served', async () => {
    const db = new GatedLedger();
    const al = new Allotments(db);
    try {
      const R = 10;
      await al.reserve([hold(1e9, R)]).then((r) => al.settle(r.taken, [R]));
      db.closed = true;
      // 3 slices' worth of requests at once, none awaited.
      const ps = Array.from({ length: 3 * MAX_EXTRA_REQUESTS }, () => al.reserve([hold(1e9, R)]));
      await turns(3);
      assert.equal(db.seen.length, 2, 'the first grant and exactly one top-up');
      db.open();
      const rs = await Promise.all(ps);
      assert.ok(rs.every((r) => r.misfit === -1));
      const a = rs[0]!.taken[0]!.allotment;
      for (const r of rs) al.settle(r.taken, [R]);
      await quiesce([a]);
      await al.flush();
      assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: (1 + 3 * MAX_EXTRA_REQUESTS) * R, reserved: 0 });
      // idle: dropped from the map (a new Allotment next time)
      await al.flush();
      const again = await al.reserve([hold(1e9, R)]);
      assert.notEqual(again.taken[0]!.allotment, a, 'the idle allotment was dropped');
      al.settle(again.taken, [0]);
    } finally {
      al.close();
    }
  });

  test('a top-up needed by nobody any more asks for nothing; idle capacity from a top-up goes back after IDLE_MS', async () => {
    let now = 1_000_000;
    const db = new GatedLedger();
    const al = new Allotments(db, { now: () => now });
    try {
      const R = 100;
      await al.reserve([hold(1e9, R)]).then((r) => al.settle(r.taken, [R]));
      db.closed = true;
      const open: Taken[][] = [];
      let a: Allotment | undefined;
      for (let i = 0; i < 10 * MAX_EXTRA_REQUESTS && !(a && a.pending > 0); i++) {
        const r = await al.reserve([hold(1e9, R)]);
        open.push(r.taken);
        a = r.taken[0]!.allotment;
      }
      // The in-flight requests end using nothing: the slice is free again before the top-up runs.
      for (const t of open) al.settle(t, [0]);
      db.open();
      await quiesce([a!]);
      // Whether or not the top-up still asked for an extra, everything goes back once idle.
      await al.flush(false);
      now += IDLE_MS;
      await al.flush(false);
      assert.equal(db.reserved, 0, 'idle: given back');
      assert.equal(db.used, R);
    } finally {
      al.close();
    }
  });

  test('real SQLite ledger — two Allotments on one store, random sizes/settles/overage with top-ups: rows exact after quiescence', async () => {
    const store = await sqliteStore();
    try {
      const amount = 400_000;
      const b = await createBudget(store, { scope: { kind: 'key', id: 'k' }, unit: 'tokens', amount, period: 'fixed' });
      const procs = [new Allotments(createLedger(store)), new Allotments(createLedger(store))];
      const rand = rng(4242);
      const open: Array<{ p: Allotments; taken: Taken[] }> = [];
      const allots = new Set<Allotment>();
      let charged = 0;
      let overage = 0;
      let admitted = 0;
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 1500; i++) {
        const p = procs[Math.floor(rand() * 2)]!;
        const size = 1 + Math.floor(rand() * 300);
        ops.push(
          p.reserve([{ budgetId: b.id, periodStart: 0, amount, reserve: size }]).then((r) => {
            if (r.misfit !== -1) return;
            admitted++;
            for (const t of r.taken) allots.add(t.allotment);
            open.push({ p, taken: r.taken });
          }),
        );
        if (rand() < 0.5 && open.length > 0) {
          const o = open.splice(Math.floor(rand() * open.length), 1)[0]!;
          const res = o.taken[0]!.reserved;
          const actual = rand() < 0.05 ? res + 7 : Math.floor(rand() * (res + 1));
          charged += actual;
          overage += Math.max(0, actual - res);
          o.p.settle(o.taken, [actual]);
        }
        if (rand() < 0.02) ops.push(procs[Math.floor(rand() * 2)]!.flush(rand() < 0.5));
        if (rand() < 0.3) await turn();
        const r = await row(store, b).catch(() => null);
        if (r) assert.ok(r.used + r.reserved <= amount + overage, `step ${i}: ${r.used} + ${r.reserved} > ${amount} + ${overage}`);
      }
      await Promise.all(ops);
      for (const o of open) {
        charged += o.taken[0]!.reserved;
        o.p.settle(o.taken, [o.taken[0]!.reserved]);
      }
      await quiesce(allots);
      for (const p of procs) await p.flush();
      assert.ok(admitted > 500, `${admitted} admitted`);
      assert.deepEqual(await row(store, b), { used: charged, reserved: 0 });
      for (const p of procs) p.close();
    } finally {
      await store.close();
    }
  });
});
