/**
 * Routing units: balancers (smooth weighted round-robin, least in-flight, P2C + EWMA), per-backend
 * health (breaker lifecycle on a fake clock, half-open trial slots, 429 cool-down, active-check
 * ejection, in-flight accounting, snapshot) and the active HealthChecker against a real HTTP server.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createBalancer, LeastInFlightBalancer, P2cEwmaBalancer, WeightedBalancer, type Balancer,
} from '../src/routing/balancer.ts';
import { BackendHealth, HealthChecker, probeHttp, type BackendHealthOptions } from '../src/routing/health.ts';
import type { BackendView, PoolMember } from '../src/routing/types.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { rng as seeded } from './helpers/prng.ts';

/** A BackendView whose load and latency the test sets directly. */
class FakeBackend implements BackendView {
  load = 0;
  ewma: number | null = null;
  constructor(readonly id: string, readonly maxInFlight = 0) {}
  inFlight(): number { return this.load; }
  ewmaMs(): number | null { return this.ewma; }
}

function member(id: string, weight = 1, maxInFlight = 0): PoolMember & { backend: FakeBackend } {
  return { backend: new FakeBackend(id, maxInFlight), weight };
}


function counts(b: Balancer, members: readonly PoolMember[], n: number, exclude?: ReadonlySet<string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const m = b.pick(members, exclude);
    const id = m === null ? 'null' : m.backend.id;
    out[id] = (out[id] ?? 0) + 1;
  }
  return out;
}

describe('WeightedBalancer (smooth weighted round-robin)', () => {
  test('1000 picks match the weights exactly', () => {
    const pool = [member('a', 5), member('b', 3), member('c', 2)];
    assert.deepEqual(counts(new WeightedBalancer(), pool, 1000), { a: 500, b: 300, c: 200 });
    const pool2 = [member('x', 7), member('y', 1)];
    assert.deepEqual(counts(new WeightedBalancer(), pool2, 1000), { x: 875, y: 125 });
  });

  test('the sequence is smooth: nginx order for 5,1,1 and no long runs', () => {
    const pool = [member('a', 5), member('b', 1), member('c', 1)];
    const b = new WeightedBalancer();
    const seq = Array.from({ length: 7 }, () => b.pick(pool)!.backend.id).join('');
    assert.equal(seq, 'aabacaa', 'the sequence documented by nginx');

    const pool2 = [member('a', 5), member('b', 3), member('c', 2)];
    const b2 = new WeightedBalancer();
    let run = 0;
    let longest = 0;
    let prev = '';
    for (let i = 0; i < 1000; i++) {
      const id = b2.pick(pool2)!.backend.id;
      run = id === prev ? run + 1 : 1;
      prev = id;
      longest = Math.max(longest, run);
    }
    assert.ok(longest <= 2, `longest run ${longest} (plain WRR would give 5)`);
  });

  test('every window of W = sum(weights) consecutive picks holds each member weight ±1 times', () => {
    const pool = [member('a', 4), member('b', 2), member('c', 1)];
    const b = new WeightedBalancer();
    const seq = Array.from({ length: 700 }, () => b.pick(pool)!.backend.id);
    for (let i = 0; i + 7 <= seq.length; i++) {
      const w = seq.slice(i, i + 7);
      const n = (id: string) => w.filter((x) => x === id).length;
      assert.ok(Math.abs(n('a') - 4) <= 1 && Math.abs(n('b') - 2) <= 1 && Math.abs(n('c') - 1) <= 1, w.join(''));
    }
  });

  test('exclusions and capacity: excluded or full backends are never picked, the rest keep their ratio', () => {
    const pool = [member('a', 3), member('b', 2, 4), member('c', 1)];
    const b = new WeightedBalancer();
    assert.deepEqual(counts(b, pool, 300, new Set(['a'])), { b: 200, c: 100 });
    pool[1]!.backend.load = 4; // at capacity
    assert.deepEqual(counts(b, pool, 400), { a: 300, c: 100 });
    pool[1]!.backend.load = 3;
    assert.equal(b.pick(pool, new Set(['a', 'b', 'c'])), null);
    assert.equal(b.pick([], new Set()), null);
    assert.equal(b.pick([member('only', 1, 1)].map((m) => { m.backend.load = 1; return m; })), null);
  });

  test('a changing candidate subset: proportions hold within each phase and overall', () => {
    const a = member('a', 3);
    const bm = member('b', 2);
    const c = member('c', 1);
    const bal = new WeightedBalancer();
    const phase1 = counts(bal, [a, bm, c], 600);
    assert.deepEqual(phase1, { a: 300, b: 200, c: 100 });
    const phase2 = counts(bal, [bm, c], 300); // a ejected
    assert.ok(Math.abs(phase2['b']! - 200) <= 1 && Math.abs(phase2['c']! - 100) <= 1, JSON.stringify(phase2));
    const phase3 = counts(bal, [c, a, bm], 600); // a back, different order
    for (const [id, want] of [['a', 300], ['b', 200], ['c', 100]] as const) {
      assert.ok(Math.abs(phase3[id]! - want) <= 3, `${id}: ${JSON.stringify(phase3)}`);
    }
    // a member added later starts fresh and gets its share at once
    const d = member('d', 4);
    const phase4 = counts(bal, [a, bm, c, d], 1000);
    for (const [id, want] of [['a', 300], ['b', 200], ['c', 100], ['d', 400]] as const) {
      assert.ok(Math.abs(phase4[id]! - want) <= 4, `${id}: ${JSON.stringify(phase4)}`);
    }
  });

  test('per-request retries: excluding the first pick yields a different backend', () => {
    const pool = [member('a', 1), member('b', 1), member('c', 1)];
    const b = new WeightedBalancer();
    for (let i = 0; i < 30; i++) {
      const first = b.pick(pool)!;
      const second = b.pick(pool, new Set([first.backend.id]))!;
      assert.notEqual(second.backend.id, first.backend.id);
    }
  });
});

describe('LeastInFlightBalancer', () => {
  test('picks the least in-flight per unit of weight', () => {
    const pool = [member('a', 1), member('b', 1), member('c', 2)];
    pool[0]!.backend.load = 3;
    pool[1]!.backend.load = 1;
    pool[2]!.backend.load = 4; // 2 per unit of weight
    const b = new LeastInFlightBalancer();
    assert.equal(b.pick(pool)!.backend.id, 'b');
    pool[2]!.backend.load = 1; // 0.5 per unit
    assert.equal(b.pick(pool)!.backend.id, 'c');
    assert.equal(b.pick(pool, new Set(['c']))!.backend.id, 'b');
  });

  test('ties are broken round-robin, not always the first', () => {
    const pool = [member('a'), member('b'), member('c')];
    const b = new LeastInFlightBalancer();
    assert.deepEqual(counts(b, pool, 300), { a: 100, b: 100, c: 100 });
    pool[2]!.backend.load = 5;
    const seq = Array.from({ length: 6 }, () => b.pick(pool)!.backend.id);
    assert.deepEqual(seq.filter((x) => x === 'a').length, 3, seq.join(''));
    assert.deepEqual(seq.filter((x) => x === 'b').length, 3, seq.join(''));
  });

  test('acquire-style load: spreads by in-flight and never picks a full backend', () => {
    const pool = [member('a', 1, 2), member('b', 1, 2)];
    const b = new LeastInFlightBalancer();
    for (let i = 0; i < 4; i++) b.pick(pool)!.backend.load++;
    assert.deepEqual([pool[0]!.backend.load, pool[1]!.backend.load], [2, 2]);
    assert.equal(b.pick(pool), null);
    assert.equal(b.pick([]), null);
  });
});

describe('P2cEwmaBalancer', () => {
  test('prefers the faster backend, statistically', () => {
    const pool = [member('fast'), member('slow'), member('mid')];
    pool[0]!.backend.ewma = 50;
    pool[1]!.backend.ewma = 500;
    pool[2]!.backend.ewma = 150;
    const c = counts(new P2cEwmaBalancer({ random: seeded(42) }), pool, 3000);
    // Idle backends: the faster of the two sampled always wins, so fast wins 2/3 of picks,
    // mid 1/3 (when paired with slow) and slow never.
    assert.equal(c['slow'], undefined);
    assert.ok(c['fast']! > 1800 && c['fast']! < 2200, JSON.stringify(c));
    assert.ok(c['mid']! > 800 && c['mid']! < 1200, JSON.stringify(c));
  });

  test('load raises the cost: a loaded fast backend loses to an idle slower one', () => {
    const fast = member('fast');
    const slow = member('slow');
    fast.backend.ewma = 50;
    slow.backend.ewma = 120;
    fast.backend.load = 3; // 50 × 4 = 200 > 120 × 1
    const b = new P2cEwmaBalancer({ random: seeded(1) });
    assert.equal(b.pick([fast, slow])!.backend.id, 'slow');
    fast.backend.load = 1; // 100 < 120
    assert.equal(b.pick([fast, slow])!.backend.id, 'fast');
  });

  test('simulated load: most traffic goes to the faster backend, the slow one still gets some', () => {
    const pool = [member('fast'), member('slow')];
    pool[0]!.backend.ewma = 20;
    pool[1]!.backend.ewma = 100;
    const b = new P2cEwmaBalancer({ random: seeded(7) });
    const seen: Record<string, number> = { fast: 0, slow: 0 };
    // 1 ms ticks: a request arrives with probability 0.2; each in-flight request completes with
    // probability 1/latency per tick (fast: 20 ms, slow: 100 ms).
    const rnd = seeded(99);
    for (let tick = 0; tick < 20_000; tick++) {
      for (const m of pool) {
        const be = m.backend;
        let done = 0;
        for (let k = 0; k < be.load; k++) if (rnd() < 1 / be.ewma!) done++;
        be.load -= done;
      }
      if (rnd() < 0.2) {
        const m = b.pick(pool)!;
        m.backend.load++;
        seen[m.backend.id]!++;
      }
    }
    assert.ok(seen['fast']! > seen['slow']! * 2, JSON.stringify(seen));
    assert.ok(seen['slow']! > 0, JSON.stringify(seen));
  });

  test('never picks an at-capacity or excluded backend; single member returned directly', () => {
    const pool = [member('a', 1, 1), member('b', 1, 0), member('c', 1, 3)];
    pool[0]!.backend.ewma = 1;
    pool[1]!.backend.ewma = 1000;
    pool[2]!.backend.ewma = 2000;
    pool[0]!.backend.load = 1; // full, and the cheapest
    pool[2]!.backend.load = 3; // full
    let draws = 0;
    const b = new P2cEwmaBalancer({ random: () => { draws++; return 0.5; } });
    for (let i = 0; i < 50; i++) assert.equal(b.pick(pool)!.backend.id, 'b');
    assert.equal(draws, 0, 'a single pickable member is returned without sampling');
    const r = new P2cEwmaBalancer({ random: seeded(3) });
    pool[2]!.backend.load = 0;
    for (let i = 0; i < 200; i++) assert.notEqual(r.pick(pool)!.backend.id, 'a');
    assert.deepEqual(counts(r, pool, 100, new Set(['b'])), { c: 100 });
    assert.equal(r.pick(pool, new Set(['b', 'c'])), null);
    assert.equal(r.pick([]), null);
  });

  test('the two samples are distinct, even with an extreme random source', () => {
    const pool = [member('a'), member('b')];
    pool[0]!.backend.ewma = 100;
    pool[1]!.backend.ewma = 10;
    for (const v of [0, 0.999999, 1]) {
      const b = new P2cEwmaBalancer({ random: () => v });
      assert.equal(b.pick(pool)!.backend.id, 'b', `random() = ${v}`);
    }
  });

  test('a backend without an EWMA is costed at the median of the others', () => {
    const fresh = member('fresh');
    const pool = [member('x'), member('y'), member('z'), fresh];
    pool[0]!.backend.ewma = 10;
    pool[1]!.backend.ewma = 100;
    pool[2]!.backend.ewma = 1000; // median of known = 100
    // sample ranks: first = floor(r*4), second = floor(r*3) shifted past first
    const seq = (vals: number[]) => { let i = 0; return () => vals[i++ % vals.length]!; };
    // fresh (rank 3) vs x (rank 0): 100 vs 10 → x
    assert.equal(new P2cEwmaBalancer({ random: seq([0.9, 0]) }).pick(pool)!.backend.id, 'x');
    // fresh vs z: 100 vs 1000 → fresh
    assert.equal(new P2cEwmaBalancer({ random: seq([0.9, 0.7]) }).pick(pool)!.backend.id, 'fresh');
    // fresh vs y with y loaded: 100 vs 200 → fresh
    pool[1]!.backend.load = 1;
    assert.equal(new P2cEwmaBalancer({ random: seq([0.9, 0.4]) }).pick(pool)!.backend.id, 'fresh');
    // nobody known: lower in-flight wins
    const u = [member('u'), member('v')];
    u[0]!.backend.load = 2;
    assert.equal(new P2cEwmaBalancer({ random: seq([0, 0]) }).pick(u)!.backend.id, 'v');
  });
});

describe('createBalancer', () => {
  test('maps strategies to balancers and rejects unknown ones', () => {
    assert.ok(createBalancer('weighted') instanceof WeightedBalancer);
    assert.ok(createBalancer('least_in_flight') instanceof LeastInFlightBalancer);
    assert.ok(createBalancer('p2c_ewma', { random: seeded(1) }) instanceof P2cEwmaBalancer);
    assert.throws(() => createBalancer('random' as never), RangeError);
  });
});

/** A BackendHealth on a fake monotonic clock (ms) with a fixed wall clock origin. */
function fakeHealth(opts: Partial<BackendHealthOptions> = {}) {
  const clock = { t: 1_000 };
  const WALL0 = 1_700_000_000_000;
  const h = new BackendHealth({
    id: 'b1',
    maxInFlight: 0,
    now: () => clock.t,
    wallClock: () => WALL0 + clock.t,
    ...opts,
  });
  return { h, clock, WALL0 };
}

describe('BackendHealth breaker', () => {
  test('full lifecycle: closed → open → half_open → closed', () => {
    const { h, clock } = fakeHealth({ failureThreshold: 3, openMs: 1_000, successesToClose: 2 });
    assert.equal(h.state(), 'closed');
    h.onFailure('connect');
    h.onFailure('timeout');
    assert.equal(h.state(), 'closed');
    assert.equal(h.admit(), true);
    h.onFailure('status_5xx');
    assert.equal(h.state(), 'open');
    assert.equal(h.admit(), false);
    assert.equal(h.ejectedReason(), 'breaker_open');
    assert.equal(h.snapshot().reason, '3 consecutive failures (last: status_5xx)');

    clock.t += 999;
    assert.equal(h.state(), 'open');
    clock.t += 1;
    assert.equal(h.state(), 'half_open', 'lazily, once the open time elapsed');
    assert.equal(h.admit(), true);

    const r1 = h.acquire();
    h.onSuccess(30);
    r1();
    assert.equal(h.state(), 'half_open', 'one success is not enough');
    const r2 = h.acquire();
    h.onSuccess(30);
    r2();
    assert.equal(h.state(), 'closed');
    assert.equal(h.ejectedReason(), null);
    assert.equal(h.snapshot().reason, null);
    assert.equal(h.snapshot().opened_at, null);
  });

  test('a success resets the consecutive count', () => {
    const { h } = fakeHealth({ failureThreshold: 3 });
    h.onFailure('connect');
    h.onFailure('connect');
    h.onSuccess(10);
    h.onFailure('connect');
    h.onFailure('connect');
    assert.equal(h.state(), 'closed');
    assert.equal(h.snapshot().consecutive_failures, 2);
    h.onFailure('protocol');
    assert.equal(h.state(), 'open');
  });

  test('open time doubles on each reopen from half-open, is capped, and resets after closing', () => {
    const { h, clock } = fakeHealth({ failureThreshold: 1, openMs: 1_000, maxOpenMs: 5_000, successesToClose: 1 });
    /** Length of the current open period, ms (retry_at − opened_at of the snapshot). */
    const openFor = (): number => {
      const snap = h.snapshot();
      assert.equal(snap.state, 'open');
      return snap.retry_at! - snap.opened_at!;
    };
    h.onFailure('connect');
    assert.equal(openFor(), 1_000);
    clock.t += 1_000;
    assert.equal(h.state(), 'half_open');
    h.onFailure('stream');
    assert.equal(h.snapshot().reason, 'trial request failed while half-open (stream)');
    assert.equal(openFor(), 2_000);
    clock.t += 1_999;
    assert.equal(h.admit(), false);
    clock.t += 1;
    assert.equal(h.admit(), true);
    h.onFailure('timeout');
    assert.equal(openFor(), 4_000);
    clock.t += 4_000;
    h.onFailure('timeout'); // half_open (lazily) → reopen
    assert.equal(openFor(), 5_000, 'capped at maxOpenMs');
    clock.t += 5_000;
    h.onFailure('timeout');
    assert.equal(openFor(), 5_000);
    clock.t += 5_000;
    h.onSuccess(10);
    assert.equal(h.state(), 'closed');
    h.onFailure('connect');
    assert.equal(openFor(), 1_000, 'back to the base open time after closing');
  });

  test('half-open admits only halfOpenProbes concurrent trials; stale releases do not free slots', () => {
    const { h, clock } = fakeHealth({ failureThreshold: 1, openMs: 100, halfOpenProbes: 2, successesToClose: 3 });
    const old = h.acquire(); // in flight before the breaker opens
    h.onFailure('connect');
    assert.equal(h.admit(), false);
    clock.t += 100;
    assert.equal(h.admit(), true);
    const p1 = h.acquire();
    assert.equal(h.admit(), true);
    const p2 = h.acquire();
    assert.equal(h.admit(), false);
    assert.equal(h.ejectedReason(), 'half_open_busy');
    old(); // a request from before the opening: frees no trial slot
    assert.equal(h.ejectedReason(), 'half_open_busy');
    assert.equal(h.inFlight(), 2);
    h.onSuccess(5);
    p1();
    assert.equal(h.admit(), true);
    p1(); // idempotent
    assert.equal(h.inFlight(), 1);
    const p3 = h.acquire();
    assert.equal(h.admit(), false);
    h.onSuccess(5);
    h.onSuccess(5);
    assert.equal(h.state(), 'closed');
    assert.equal(h.admit(), true, 'closed: no trial limit');
    p2();
    p3();
    assert.equal(h.inFlight(), 0);
  });

  test('a trial from an earlier half-open period does not free a slot in the next one', () => {
    const { h, clock } = fakeHealth({ failureThreshold: 1, openMs: 100, halfOpenProbes: 1 });
    h.onFailure('connect');
    clock.t += 100;
    const stale = h.acquire(); // trial of the first half-open period
    h.onFailure('timeout'); // another request fails: reopen (200 ms)
    clock.t += 200;
    assert.equal(h.state(), 'half_open');
    const trial = h.acquire();
    assert.equal(h.ejectedReason(), 'half_open_busy');
    stale();
    assert.equal(h.ejectedReason(), 'half_open_busy', 'still one trial of this period in flight');
    trial();
    assert.equal(h.admit(), true);
  });

  test('429 with retry-after cools the backend down without opening the breaker', () => {
    const { h, clock, WALL0 } = fakeHealth({ failureThreshold: 2 });
    h.onFailure('status_429', { retryAfterMs: 3_000 });
    assert.equal(h.state(), 'closed');
    assert.equal(h.admit(), false);
    assert.equal(h.ejectedReason(), 'cooling_down');
    const snap = h.snapshot();
    assert.equal(snap.retry_at, WALL0 + clock.t + 3_000);
    assert.match(snap.reason!, /429/);
    h.onFailure('status_429', { retryAfterMs: 1_000 }); // shorter: does not shorten the cool-down
    assert.equal(h.state(), 'closed', 'a 429 with retry-after never opens the breaker by itself');
    clock.t += 2_999;
    assert.equal(h.admit(), false);
    clock.t += 1;
    assert.equal(h.admit(), true);
    assert.equal(h.snapshot().retry_at, null);
    // failures continue: the next counted failure opens it (consecutive count already ≥ 2)
    h.onFailure('status_5xx');
    assert.equal(h.state(), 'open');
    assert.equal(h.snapshot().reason, '3 consecutive failures (last: status_5xx)');
  });

  test('429 without retry-after counts as an ordinary failure; retry-after is capped', () => {
    const { h, clock } = fakeHealth({ failureThreshold: 2, maxOpenMs: 60_000 });
    h.onFailure('status_429');
    assert.equal(h.admit(), true);
    h.onFailure('status_429', { retryAfterMs: 0 });
    assert.equal(h.state(), 'open');
    const h2 = fakeHealth({ maxOpenMs: 60_000 });
    h2.h.onFailure('status_429', { retryAfterMs: 86_400_000 });
    assert.equal(h2.h.snapshot().retry_at! - h2.WALL0 - h2.clock.t, 60_000);
    void clock;
  });

  test('failure-rate window opens the breaker without consecutive failures', () => {
    const { h, clock } = fakeHealth({
      failureThreshold: 100,
      failureRateWindow: { windowMs: 10_000, minRequests: 10, threshold: 0.5 },
    });
    for (let i = 0; i < 4; i++) { h.onFailure('status_5xx'); h.onSuccess(10); }
    assert.equal(h.state(), 'closed', 'below minRequests');
    h.onSuccess(10);
    h.onFailure('status_5xx'); // 5 / 10
    assert.equal(h.state(), 'open');
    assert.match(h.snapshot().reason!, /^failure rate 50% \(5\/10\) over the last 10000 ms/);
    // old outcomes leave the window
    const w = fakeHealth({ failureThreshold: 100, failureRateWindow: { windowMs: 1_000, minRequests: 4, threshold: 0.5 } });
    w.h.onFailure('connect');
    w.h.onFailure('connect');
    w.clock.t += 5_000;
    w.h.onSuccess(1);
    w.h.onSuccess(1);
    w.h.onSuccess(1);
    w.h.onFailure('connect'); // 1 / 4 in the window
    assert.equal(w.h.state(), 'closed');
    void clock;
  });

  test('active checks: K failures eject (unhealthy), a passing check readmits via half-open', () => {
    const { h, clock } = fakeHealth({ checkFailureThreshold: 2, openMs: 1_000 });
    h.onActiveCheck(false, 'HTTP 500');
    assert.equal(h.admit(), true, 'one failed check is not enough');
    h.onActiveCheck(false, 'HTTP 503');
    assert.equal(h.admit(), false);
    assert.equal(h.ejectedReason(), 'unhealthy');
    assert.equal(h.state(), 'open');
    assert.equal(h.snapshot().reason, '2 consecutive failed health checks (last: HTTP 503)');
    clock.t += 60_000;
    assert.equal(h.admit(), false, 'the open timer does not readmit while checks fail');
    h.onActiveCheck(false, 'timeout after 100 ms');
    assert.equal(h.snapshot().reason, '3 consecutive failed health checks (last: timeout after 100 ms)');
    h.onActiveCheck(true);
    assert.equal(h.state(), 'half_open');
    assert.equal(h.admit(), true);
    h.onSuccess(10);
    h.onSuccess(10);
    assert.equal(h.state(), 'closed');
    assert.deepEqual(h.snapshot().last_check, { ok: true, at: 1_700_000_000_000 + clock.t, reason: null });
  });

  test('a breaker opened by traffic keeps its timer when checks pass', () => {
    const { h, clock } = fakeHealth({ failureThreshold: 1, openMs: 1_000 });
    h.onFailure('connect');
    h.onActiveCheck(true);
    assert.equal(h.state(), 'open');
    clock.t += 1_000;
    assert.equal(h.state(), 'half_open');
  });

  test('capacity: admit() is false at maxInFlight; release is idempotent', () => {
    const { h } = fakeHealth({ maxInFlight: 2 });
    const r1 = h.acquire();
    const r2 = h.acquire();
    assert.equal(h.inFlight(), 2);
    assert.equal(h.admit(), false);
    assert.equal(h.ejectedReason(), 'at_capacity');
    assert.equal(h.snapshot().reason, 'at capacity (2/2 in flight)');
    r1();
    r1();
    r1();
    assert.equal(h.inFlight(), 1);
    assert.equal(h.admit(), true);
    r2();
    r2();
    assert.equal(h.inFlight(), 0);
  });

  test('EWMA of latency', () => {
    const { h } = fakeHealth({ ewmaAlpha: 0.5 });
    assert.equal(h.ewmaMs(), null);
    h.onSuccess(100);
    assert.equal(h.ewmaMs(), 100);
    h.onSuccess(200);
    assert.equal(h.ewmaMs(), 150);
    h.onSuccess(Number.NaN);
    h.onSuccess(-5);
    assert.equal(h.ewmaMs(), 150, 'invalid samples are ignored');
    assert.equal(h.snapshot().totals.successes, 4);
  });

  test('snapshot shape', () => {
    const { h, clock, WALL0 } = fakeHealth({ id: 'vllm-a', maxInFlight: 8, failureThreshold: 2, openMs: 5_000 });
    const fresh = h.snapshot();
    assert.deepEqual(fresh, {
      id: 'vllm-a',
      state: 'closed',
      ejected: null,
      reason: null,
      in_flight: 0,
      max_in_flight: 8,
      ewma_ms: null,
      consecutive_failures: 0,
      opened_at: null,
      retry_at: null,
      last_check: null,
      totals: { successes: 0, failures: 0 },
    });
    const release = h.acquire();
    h.onSuccess(123.456);
    h.onActiveCheck(false, 'HTTP 502');
    h.onFailure('connect');
    h.onFailure('connect');
    const openedAt = WALL0 + clock.t;
    clock.t += 250;
    const s = h.snapshot();
    assert.deepEqual(s, {
      id: 'vllm-a',
      state: 'open',
      ejected: 'breaker_open',
      reason: '2 consecutive failures (last: connect)',
      in_flight: 1,
      max_in_flight: 8,
      ewma_ms: 123.5,
      consecutive_failures: 2,
      opened_at: openedAt,
      retry_at: openedAt + 5_000,
      last_check: { ok: false, at: openedAt, reason: 'HTTP 502' },
      totals: { successes: 1, failures: 2 },
    });
    assert.deepEqual(JSON.parse(JSON.stringify(s)), s, 'plain JSON');
    clock.t += 5_000;
    const half = h.snapshot();
    assert.equal(half.state, 'half_open');
    assert.equal(half.reason, 'half-open, trial requests only; opened after: 2 consecutive failures (last: connect)');
    assert.equal(half.opened_at, openedAt);
    assert.equal(half.retry_at, null);
    release();
  });

  test('invalid options throw RangeError', () => {
    assert.throws(() => new BackendHealth({ id: '', maxInFlight: 0 }), RangeError);
    assert.throws(() => new BackendHealth({ id: 'a', maxInFlight: -1 }), RangeError);
    assert.throws(() => new BackendHealth({ id: 'a', maxInFlight: 0, failureThreshold: 0 }), RangeError);
    assert.throws(() => new BackendHealth({ id: 'a', maxInFlight: 0, openMs: 10, maxOpenMs: 5 }), RangeError);
    assert.throws(() => new BackendHealth({ id: 'a', maxInFlight: 0, ewmaAlpha: 0 }), RangeError);
    assert.throws(() => new BackendHealth({ id: 'a', maxInFlight: 0, failureRateWindow: { windowMs: 1, minRequests: 1, threshold: 2 } }), RangeError);
  });

  test('BackendHealth works as the balancers\' BackendView', () => {
    const a = new BackendHealth({ id: 'a', maxInFlight: 1 });
    const b = new BackendHealth({ id: 'b', maxInFlight: 1 });
    const pool: PoolMember[] = [{ backend: a, weight: 1 }, { backend: b, weight: 1 }];
    const bal = createBalancer('least_in_flight');
    const ra = bal.pick(pool)!.backend === a ? a.acquire() : b.acquire();
    const rb = (bal.pick(pool)!.backend as BackendHealth).acquire();
    assert.equal(a.inFlight() + b.inFlight(), 2);
    assert.equal(bal.pick(pool), null);
    ra();
    rb();
  });
});

// ---- HealthChecker against a real HTTP server ----

interface TestServer { url: string; hits: number; close: () => Promise<void> }

async function startServer(handler: (req: IncomingMessage, res: ServerResponse, hit: number) => void): Promise<TestServer> {
  const state = { hits: 0 };
  const server = createServer((req, res) => {
    state.hits++;
    handler(req, res, state.hits);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/health`,
    get hits() { return state.hits; },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('HealthChecker', () => {
  const servers: TestServer[] = [];
  after(async () => { await Promise.all(servers.map((s) => s.close())); });

  test('checkNow: 200 → admitted, 500 → ejected, 200 → readmitted', async () => {
    const statuses = [200, 500, 200];
    const seenAuth: string[] = [];
    const srv = await startServer((req, res, hit) => {
      seenAuth.push(String(req.headers['authorization']));
      res.statusCode = statuses[hit - 1] ?? 200;
      res.end('{"ok":true}');
    });
    servers.push(srv);
    const health = new BackendHealth({ id: 'engine', maxInFlight: 0, checkFailureThreshold: 1 });
    const logs: string[] = [];
    const checker = new HealthChecker({
      intervalMs: 60_000,
      timeoutMs: 2_000,
      targets: [{ health, probe: (signal) => probeHttp(srv.url, { authorization: 'Bearer sk-secret-token-123' }, signal) }],
      log: { info: (_o, m) => logs.push(`info ${m}`), warn: (_o, m) => logs.push(`warn ${m}`) },
    });
    await checker.checkNow();
    assert.equal(health.admit(), true);
    assert.equal(health.snapshot().last_check?.ok, true);
    await checker.checkNow();
    assert.equal(health.admit(), false);
    assert.equal(health.ejectedReason(), 'unhealthy');
    assert.equal(health.snapshot().last_check?.reason, 'HTTP 500');
    await checker.checkNow();
    assert.equal(health.admit(), true);
    assert.equal(health.state(), 'half_open');
    assert.deepEqual(seenAuth, Array(3).fill('Bearer sk-secret-token-123'));
    assert.deepEqual(logs, ['warn backend health check failed', 'info backend health check passes again']);
    checker.stop();
  });

  test('start(): the schedule ejects and readmits on its own; stop() halts it', async () => {
    let status = 200;
    const srv = await startServer((_req, res) => { res.statusCode = status; res.end(); });
    servers.push(srv);
    const health = new BackendHealth({ id: 'engine', maxInFlight: 0, checkFailureThreshold: 2 });
    const checker = new HealthChecker({
      intervalMs: 20,
      timeoutMs: 1_000,
      targets: [{ health, probe: (signal) => probeHttp(srv.url, {}, signal) }],
    });
    checker.start();
    checker.start(); // idempotent
    await until(() => health.snapshot().last_check?.ok === true, 'first passing check');
    status = 500;
    await until(() => health.ejectedReason() === 'unhealthy', 'ejection');
    status = 200;
    await until(() => health.admit(), 'readmission');
    assert.equal(health.state(), 'half_open');
    checker.stop();
    const hits = srv.hits;
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(srv.hits <= hits + 1, 'no more checks after stop()');
  });

  test('a probe that exceeds timeoutMs fails the check and is aborted', async () => {
    const sockets: { closed: boolean }[] = [];
    const srv = await startServer((req) => {
      const s = { closed: false };
      sockets.push(s);
      req.socket.on('close', () => { s.closed = true; }); // never answers
    });
    servers.push(srv);
    const health = new BackendHealth({ id: 'slow', maxInFlight: 0, checkFailureThreshold: 1 });
    let ignoredSignal: AbortSignal | undefined;
    const stubborn = new BackendHealth({ id: 'stubborn', maxInFlight: 0, checkFailureThreshold: 1 });
    const checker = new HealthChecker({
      intervalMs: 60_000,
      timeoutMs: 100,
      targets: [
        { health, probe: (signal) => probeHttp(srv.url, {}, signal) },
        // a probe that ignores its signal still times out
        { health: stubborn, probe: (signal) => { ignoredSignal = signal; return new Promise<void>(() => {}); } },
      ],
    });
    const t0 = Date.now();
    await checker.checkNow();
    assert.ok(Date.now() - t0 < 3_000);
    assert.equal(health.ejectedReason(), 'unhealthy');
    assert.equal(health.snapshot().last_check?.reason, 'timeout after 100 ms');
    assert.equal(stubborn.snapshot().last_check?.reason, 'timeout after 100 ms');
    assert.equal(ignoredSignal?.aborted, true);
    await until(() => sockets.length === 1 && sockets[0]!.closed, 'the timed-out request is aborted');
  });

  test('stop() aborts probes in flight and drops their results', async () => {
    const health = new BackendHealth({ id: 'x', maxInFlight: 0, checkFailureThreshold: 1 });
    let signal: AbortSignal | undefined;
    const checker = new HealthChecker({
      intervalMs: 60_000,
      timeoutMs: 10_000,
      targets: [{ health, probe: (s) => { signal = s; return new Promise<void>((_, rej) => s.addEventListener('abort', () => rej(s.reason))); } }],
    });
    const done = checker.checkNow();
    checker.stop();
    await done;
    assert.equal(signal?.aborted, true);
    assert.equal(health.snapshot().last_check, null);
    assert.equal(health.admit(), true);
  });

  test('accepts the process (pino) logger', () => {
    const checker = new HealthChecker({ intervalMs: 1_000, timeoutMs: 100, targets: [], log: createLogger('silent') });
    checker.start();
    checker.stop();
    assert.throws(() => new HealthChecker({ intervalMs: 0, timeoutMs: 100, targets: [] }), RangeError);
  });

  test('probeHttp: 2xx resolves, other statuses and network errors reject without header values', async () => {
    const srv = await startServer((req, res) => {
      res.statusCode = req.url === '/ok' ? 204 : req.url === '/redirect' ? 302 : 503;
      res.end(req.url === '/ok' ? undefined : 'x'.repeat(1000));
    });
    servers.push(srv);
    const base = srv.url.replace('/health', '');
    const headers = { authorization: 'Bearer sk-very-secret-value', 'x-api-key': 'another-secret' };
    const signal = new AbortController().signal;
    await probeHttp(`${base}/ok`, headers, signal);
    await assert.rejects(probeHttp(`${base}/down`, headers, signal), { message: 'HTTP 503' });
    await assert.rejects(probeHttp(`${base}/redirect`, headers, signal), { message: 'HTTP 302' });
    // a closed port
    const tmp = await startServer(() => {});
    const closedUrl = tmp.url;
    await tmp.close();
    await assert.rejects(probeHttp(closedUrl, headers, signal), (err: Error) => {
      assert.match(err.message, /^request failed: /);
      assert.ok(!err.message.includes('secret'), err.message);
      return true;
    });
    // an invalid header value: the error must not echo it
    await assert.rejects(probeHttp(`${base}/ok`, { authorization: 'Bearer sk-secret\r\nx: y' }, signal), (err: Error) => {
      assert.ok(!err.message.includes('sk-secret'), err.message);
      return true;
    });
  });
});
