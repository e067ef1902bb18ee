/**
 * Budget allotments (metering/allotments.ts) against an in-memory ledger with the database's
 * semantics, and against a real SQLite ledger: the database is visited once per slice, not per
 * request; never overspent under random interleavings of several processes, sizes, settles and
 * overage; exact in the end game; idle and stale capacity given back; failed writes kept.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Allotments, IDLE_MS, MARGIN_DIVISOR, MAX_EXTRA_REQUESTS, type Taken } from '../src/metering/allotments.ts';
import { createLedger } from '../src/metering/ledger.ts';
import { FakeLedger, GatedLedger } from './helpers/fake-ledger.ts';
import { rng } from './helpers/prng.ts';
import { openStore } from '../src/store/db.ts';
import { createBudget, listBudgets } from '../src/metering/index.ts';


const hold = (amount: number, reserve: number) => ({ budgetId: 'b1', periodStart: 0, amount, reserve });


describe('budget allotments', () => {
  test('the database is visited once per slice, not once per request; flush leaves exact rows', async () => {
    const db = new FakeLedger();
    const al = new Allotments(db);
    try {
      for (let i = 0; i < 1000; i++) {
        const r = await al.reserve([hold(10_000_000, 100)]);
        assert.equal(r.misfit, -1);
        al.settle(r.taken, [60]);
      }
      assert.ok(db.grants <= 1000 / 20, `${db.grants} grants for 1000 requests`);
      await al.flush();
      assert.equal(db.used, 60_000, 'every settled request charged once');
      assert.equal(db.reserved, 0, 'nothing in flight: everything given back');
    } finally {
      al.close();
    }
  });

  test('top-up: a busy process takes the next slice in the background before this one runs out; requests never wait for it', async () => {
    const db = new GatedLedger();
    const al = new Allotments(db);
    const R = 100;
    const EXTRA = R * MAX_EXTRA_REQUESTS;
    try {
      const first = await al.reserve([hold(1e12, R)]);
      assert.deepEqual(db.seen.map((g) => [g.need, g.extra]), [[R, EXTRA]], 'the first admission waits for a slice with an extra');
      al.settle(first.taken, [R]);
      // The database stalls: the slice in memory still admits every request it holds.
      db.closed = true;
      const admitted: Array<Promise<unknown>> = [];
      for (let i = 0; i < MAX_EXTRA_REQUESTS; i++) {
        const r = await al.reserve([hold(1e12, R)]);
        assert.equal(r.misfit, -1);
        al.settle(r.taken, [R]);
        admitted.push(Promise.resolve(r));
      }
      assert.equal(db.grants, 1, 'no grant landed while the database stalled');
      assert.deepEqual(db.seen.slice(1).map((g) => [g.need, g.extra]), [[0, EXTRA]], 'exactly one background top-up, for an extra only, once half of it was used');
      // The slice is used up: the next request waits for the top-up, which covers it.
      const waiting = al.reserve([hold(1e12, R)]);
      let done = false;
      void waiting.then(() => (done = true));
      await new Promise((r) => setImmediate(r));
      assert.equal(done, false, 'with nothing left in memory the request waits for the database');
      db.open();
      assert.equal((await waiting).misfit, -1);
      assert.equal(db.seen.length, 2, 'the waiting request was served by the top-up, not a grant of its own');
      // Steady traffic from here: every later grant is a top-up, none makes a request wait.
      for (let i = 0; i < 2000; i++) {
        const r = await al.reserve([hold(1e12, R)]);
        al.settle(r.taken, [R]);
      }
      assert.ok(db.seen.slice(2).every((g) => g.need === 0 && g.extra === EXTRA), 'only top-ups');
      await al.flush();
      assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: (2 + MAX_EXTRA_REQUESTS + 2000) * R - R, reserved: R }, 'the one unsettled request stays reserved; the rest is charged exactly');
    } finally {
      al.close();
    }
  });

  test('top-up: none in the end game, and a failed one is reported and changes nothing', async () => {
    const db = new FakeLedger();
    const errors: unknown[] = [];
    const al = new Allotments(db, { onError: (e) => errors.push(e) });
    try {
      const R = 10;
      // Room for an extra: a top-up fails once; the error is reported and requests go on.
      const first = await al.reserve([hold(1e9, R)]);
      al.settle(first.taken, [R]);
      db.failNextGrant = true;
      for (let i = 0; i < MAX_EXTRA_REQUESTS * 2; i++) {
        const r = await al.reserve([hold(1e9, R)]);
        assert.equal(r.misfit, -1);
        al.settle(r.taken, [R]);
      }
      assert.equal(errors.length, 1, 'the failed top-up was reported once');
      await al.flush();
      assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: (1 + MAX_EXTRA_REQUESTS * 2) * R, reserved: 0 });
      // A budget for 50 such requests: exact grants only (end game), so no top-up ever asks for more.
      const small = new FakeLedger();
      const b = new Allotments(small);
      let ok = 0;
      for (let i = 0; i < 80; i++) if ((await b.reserve([{ budgetId: 's', periodStart: 0, amount: 50 * R, reserve: R }])).misfit === -1) ok++;
      assert.equal(ok, 50);
      b.close();
    } finally {
      al.close();
    }
  });

  test('in flight stays reserved in the row after a flush; usage beyond a reservation is charged, not clamped', async () => {
    const db = new FakeLedger();
    const al = new Allotments(db);
    try {
      const a = await al.reserve([hold(1_000_000, 500)]);
      const b = await al.reserve([hold(1_000_000, 500)]);
      al.settle(a.taken, [2000]); // overage
      await al.flush();
      assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: 2000, reserved: 500 });
      al.settle(b.taken, [100]);
      await al.flush();
      assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: 2100, reserved: 0 });
    } finally {
      al.close();
    }
  });

  test('random interleavings of three processes: never more than the amount (plus charged overage) taken, everything given back at the end', async () => {
    for (let seed = 1; seed <= 30; seed++) {
      const rand = rng(seed);
      const db = new FakeLedger();
      const amount = 2000 + Math.floor(rand() * 50_000);
      const procs = [new Allotments(db), new Allotments(db), new Allotments(db)];
      const open: Array<{ p: Allotments; taken: Taken[] }> = [];
      let admitted = 0;
      let overage = 0;
      const ops: Promise<void>[] = [];
      for (let i = 0; i < 400; i++) {
        const p = procs[Math.floor(rand() * procs.length)]!;
        const size = 1 + Math.floor(rand() * 300);
        ops.push(
          p.reserve([hold(amount, size)]).then((r) => {
            if (r.misfit >= 0) return;
            admitted++;
            open.push({ p, taken: r.taken });
          }),
        );
        if (rand() < 0.4 && open.length > 0) {
          const o = open.splice(Math.floor(rand() * open.length), 1)[0]!;
          const res = o.taken[0]!.reserved;
          const actual = rand() < 0.1 ? res + 50 : Math.floor(rand() * res);
          overage += Math.max(0, actual - res);
          o.p.settle(o.taken, [actual]);
        }
        if (rand() < 0.05) ops.push(procs[Math.floor(rand() * procs.length)]!.flush(rand() < 0.5));
        if (rand() < 0.3) await Promise.resolve();
      }
      await Promise.all(ops);
      assert.ok(admitted > 0, `seed ${seed}: some admitted`);
      // Only the conditional update hands out capacity: committed never passes the amount plus overage charged.
      const committed = db.maxCommitted.get('b1') ?? 0;
      assert.ok(committed <= amount + overage, `seed ${seed}: committed ${committed} > ${amount} + overage ${overage}`);
      for (const o of open) o.p.settle(o.taken, [o.taken[0]!.reserved]);
      for (const p of procs) await p.flush();
      assert.equal(db.reserved, 0, `seed ${seed}: every allotment given back`);
      for (const p of procs) p.close();
    }
  });

  test('end game: two processes with demand beyond a budget for 50 admit exactly 50, and give back what they hold', async () => {
    for (const amount of [50 * 20, 5000 * 20]) {
      const db = new FakeLedger();
      const a = new Allotments(db);
      const b = new Allotments(db);
      const n = amount / 20;
      const res = await Promise.all(Array.from({ length: n * 3 }, (_, i) => (i % 2 ? a : b).reserve([hold(amount, 20)])));
      assert.equal(res.filter((r) => r.misfit === -1).length, n, `amount ${amount}`);
      assert.equal(db.used + db.reserved, amount);
      a.close();
      b.close();
    }
  });

  test('end game is exact even after extras: a slice taken early is used up before the row refuses', async () => {
    const db = new FakeLedger();
    const a = new Allotments(db);
    const b = new Allotments(db);
    const amount = 16 * 20 * 40;
    let ok = 0;
    // Sequential, alternating: each process takes slices with extras, then exact grants in the last 1/16.
    for (let i = 0; i < 700; i++) {
      const p = i % 3 === 0 ? a : b;
      const r = await p.reserve([hold(amount, 20)]);
      if (r.misfit === -1) ok++;
    }
    assert.equal(ok, amount / 20);
    assert.ok(db.grants < 700, 'extras were used before the end game');
    a.close();
    b.close();
  });

  test('all or nothing over several budgets: a misfit on the second gives back the first in memory', async () => {
    const db = new FakeLedger();
    const al = new Allotments(db);
    const big = { budgetId: 'a', periodStart: 0, amount: 1_000_000, reserve: 10 };
    const small = { budgetId: 'b', periodStart: 0, amount: 25, reserve: 10 };
    const r1 = await al.reserve([big, small]);
    const r2 = await al.reserve([big, small]);
    const r3 = await al.reserve([big, small]);
    assert.deepEqual([r1.misfit, r2.misfit, r3.misfit], [-1, -1, 1]);
    assert.deepEqual(r3.taken, []);
    al.settle([...r1.taken, ...r2.taken], [10, 10, 10, 10]);
    await al.flush();
    assert.deepEqual(db.row('a'), { used: 20, reserved: 0 });
    assert.deepEqual(db.row('b'), { used: 20, reserved: 0 }, 'the third request took nothing');
    al.close();
  });

  test('tryReserve: all holds from memory or none; a miss leaves the allotments as they were and reserve() goes on', async () => {
    const db = new FakeLedger();
    const al = new Allotments(db);
    try {
      const a = { budgetId: 'a', periodStart: 0, amount: 1_000_000, reserve: 10 };
      const b = { budgetId: 'b', periodStart: 0, amount: 1_000_000, reserve: 10 };
      assert.equal(al.tryReserve([a]), null, 'nothing held yet: the database is needed');
      const first = await al.reserve([a]); // takes a slice with an extra for 'a' only
      const grants = db.grants;
      const fast = al.tryReserve([a]);
      assert.ok(fast !== null && fast.length === 1 && fast[0]!.reserved === 10, 'fits the slice held in memory');
      assert.equal(db.grants, grants, 'no trip to the database');
      // 'a' fits in memory, 'b' does not: nothing may stay taken from 'a'
      assert.equal(al.tryReserve([a, b]), null);
      al.settle([...first.taken, ...fast], [10, 10]);
      await al.flush();
      assert.deepEqual(db.row('a'), { used: 20, reserved: 0 }, 'the refused try left no reservation on the first row');
      // the way that waits still works after a miss
      const slow = await al.reserve([a, b]);
      assert.equal(slow.misfit, -1);
      al.settle(slow.taken, [7, 8]);
      await al.flush();
      assert.deepEqual([db.row('a'), db.row('b')], [{ used: 27, reserved: 0 }, { used: 8, reserved: 0 }]);
    } finally {
      al.close();
    }
  });

  test('a new period gets its own allotment; a late request of the old period still reaches the old one', async () => {
    const db = new FakeLedger();
    const al = new Allotments(db);
    try {
      const p1 = { budgetId: 'm', periodStart: 1000, amount: 1_000_000, reserve: 10 };
      const p2 = { ...p1, periodStart: 2000 };
      const r1 = await al.reserve([p1]);
      const r2 = await al.reserve([p2]);
      assert.notEqual(r1.taken[0]!.allotment, r2.taken[0]!.allotment);
      const late = al.tryReserve([p1]) ?? (await al.reserve([p1])).taken;
      assert.equal(late[0]!.allotment, r1.taken[0]!.allotment, 'the old period is still found');
      assert.equal((al.tryReserve([p2]) ?? [])[0]?.allotment, r2.taken[0]!.allotment, 'and the new one stays current');
    } finally {
      al.close();
    }
  });

  test('idle allotments are given back by the background flush; stale ones (amount changed) before taking more', async () => {
    let now = 1_000_000;
    const db = new FakeLedger();
    const al = new Allotments(db, { now: () => now });
    try {
      const r = await al.reserve([hold(1_000_000, 100)]);
      al.settle(r.taken, [100]);
      assert.ok(db.reserved > 100, 'a slice with extras was taken');
      await al.flush(false); // not idle yet: usage written, the slice kept
      assert.equal(db.used, 100);
      assert.ok(db.reserved > 0);
      now += IDLE_MS;
      await al.flush(false);
      assert.equal(db.reserved, 0, 'idle: given back');
      // the amount is lowered below what is held: the slice goes back before more is taken
      await al.reserve([hold(1_000_000, 100)]);
      const heldBefore = db.reserved;
      assert.ok(heldBefore > 100);
      const low = await al.reserve([hold(300, 100)]);
      assert.equal(low.misfit, -1, 'fits once the old slice is given back: 100 used + 100 + 100 in flight = 300');
      assert.equal(db.reserved, 200, 'the old slice went back first');
      assert.equal((await al.reserve([hold(300, 100)])).misfit, 0, 'and nothing more fits');
    } finally {
      al.close();
    }
  });

  test('a failed background write is kept and written by the next flush', async () => {
    const db = new FakeLedger();
    const errors: unknown[] = [];
    const al = new Allotments(db, { onError: (e) => errors.push(e) });
    const r = await al.reserve([hold(1_000_000, 50)]);
    al.settle(r.taken, [30]);
    db.failNextAdjust = true;
    await assert.rejects(al.flush(), /injected adjust failure/);
    assert.equal(db.used, 0);
    await al.flush();
    assert.deepEqual({ used: db.used, reserved: db.reserved }, { used: 30, reserved: 0 });
    al.close();
  });

  test('on SQLite: the margin stays untouched by extras, and rows are exact after a flush', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sovra-allot-'));
    const store = await openStore(`sqlite:${join(dir, 'a.db')}`);
    try {
      await store.migrate();
      const b = await createBudget(store, { scope: { kind: 'key', id: 'k' }, unit: 'tokens', amount: 16_000, period: 'fixed' });
      const al = new Allotments(createLedger(store));
      const h = { budgetId: b.id, periodStart: 0, amount: 16_000, reserve: 10 };
      const first = await al.reserve([h]);
      const [st] = await listBudgets(store);
      assert.ok(st!.reserved > 10 && st!.reserved <= 16_000 - 16_000 / MARGIN_DIVISOR, `slice ${st!.reserved}`);
      let ok = 1;
      for (let i = 0; i < 2000; i++) if ((await al.reserve([h])).misfit === -1) ok++;
      assert.equal(ok, 1600, 'exactly what the budget allows');
      al.settle(first.taken, [4]);
      await al.flush();
      const [after] = await listBudgets(store);
      assert.deepEqual({ used: after!.used, reserved: after!.reserved }, { used: 4, reserved: 1599 * 10 });
      al.close();
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
