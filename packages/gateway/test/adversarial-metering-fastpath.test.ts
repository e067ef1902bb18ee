/**
 * Adversarial review of the cheaper request path of metering (commits 85cc398, decd282, 676fdfd):
 * rate-limit checks resolved once per definitions load with whole counter keys (empty limiter
 * prefix), in-memory checks consumed one after the other, Redis ones all at once, TPM corrections
 * not awaited in memory, `Allotments.tryReserve` (all holds from memory or none) in front of
 * `reserve`, the `#current` allotment per budget, two budgets ordered by id without a sort.
 *
 * The first group are the bugs the review found, now fixed (each failed on the reviewed code): one
 * regression of 85cc398 (the in-memory window end was read after the await) and three older bugs
 * (they failed on 6627ac3 too). The other groups held under attack. Redis tests need SOVRA_TEST_REDIS_URL
 * (skipped when unset). Two tests replace `Date.now` for a few simulated milliseconds (restored).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { Allotments, type Allotment, type AllotmentHold, type Taken } from '../src/metering/allotments.ts';
import type { Adjustment, GrantRequest, GrantResult } from '../src/metering/ledger.ts';
import type { Store } from '../src/store/db.ts';
import { Metering, MeteringError, createBudget, listBudgets, setLimits, type Admission, type Budget } from '../src/metering/index.ts';
import { FakeLedger, GatedLedger } from './helpers/fake-ledger.ts';
import { rng } from './helpers/prng.ts';
import { migratedSqliteStore } from './helpers/store-backends.ts';

const REDIS = process.env['SOVRA_TEST_REDIS_URL'];
const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-adv-fastpath-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const unhandled: unknown[] = [];
process.on('unhandledRejection', (e) => unhandled.push(e));

const sqliteStore = (): Promise<Store> => migratedSqliteStore(tmpRoot);
const turn = () => new Promise<void>((r) => setImmediate(r));
const prefix = () => `advfp${randomBytes(5).toString('hex')}`;

type Req = Parameters<Metering['admit']>[0];
const REQ: Req = { tenantId: 'ten_a', keyId: 'key_a', model: 'm', promptTokens: 10, maxTokens: 10 };

/** The outcome of an admission: `ok` and its headers, or the refusal's code, message and headers. */
async function outcome(m: Metering, r: Req): Promise<{ code: string; headers: Record<string, string>; message?: string; a?: Admission }> {
  try {
    const a = await m.admit(r);
    return { code: 'ok', headers: a.headers, a };
  } catch (e) {
    if (!(e instanceof MeteringError)) throw e;
    return { code: e.code, headers: e.headers, message: e.message };
  }
}

/** Deletes this test's counters (every Redis key starting with `keyPrefix`). */
async function dropKeys(redis: Redis, keyPrefix: string): Promise<void> {
  const keys = await redis.keys(`${keyPrefix}*`);
  if (keys.length > 0) await redis.del(...keys);
}

/** The remaining requests/tokens headers (what must not depend on timing). */
const remaining = (h: Record<string, string>) => ({ req: h['x-ratelimit-remaining-requests'], tok: h['x-ratelimit-remaining-tokens'] });

async function row(store: Store, b: Budget, now = Date.now()): Promise<{ used: number; reserved: number }> {
  const st = (await listBudgets(store, { scopes: [b.scope] }, now)).find((x) => x.id === b.id)!;
  return { used: st.used, reserved: st.reserved };
}

/** Inserts a budget with a chosen id (the order of reservations is by id). */
async function budgetWithId(store: Store, id: string, b: Omit<Budget, 'id' | 'createdAt'>): Promise<Budget> {
  await store.db
    .insertInto('budgets')
    .values({ id, scope_kind: b.scope.kind, scope_id: b.scope.id, unit: b.unit, amount: b.amount, period: b.period, created_at: Date.now() })
    .execute();
  return { ...b, id, createdAt: Date.now() };
}

/** A ledger with one row per (budget, period) — FakeLedger keys rows by budget id only. */
class PeriodLedger extends FakeLedger {
  constructor(
    readonly delay: () => number = () => 0,
    readonly maxTurns = 0,
  ) {
    super();
  }
  override async grant(g: GrantRequest): Promise<GrantResult> {
    for (let i = Math.floor(this.delay() * (this.maxTurns + 1)); i > 0; i--) await turn();
    return super.grant({ ...g, budgetId: `${g.budgetId}@${g.periodStart}` });
  }
  override async adjust(ops: readonly Adjustment[]): Promise<void> {
    for (let i = Math.floor(this.delay() * (this.maxTurns + 1)); i > 0; i--) await turn();
    return super.adjust(ops.map((o) => ({ ...o, budgetId: `${o.budgetId}@${o.periodStart}` })));
  }
}

/**
 * Runs `fn` with a Metering on a fresh SQLite store whose clock — `Date.now` (the limiters') and the
 * metering clock alike — is `clock.t`, which `fn` moves; restores `Date.now` and closes everything.
 */
async function withFakeClock(fn: (m: Metering, store: Store, clock: { t: number }) => Promise<void>): Promise<void> {
  const realNow = Date.now;
  const clock = { t: realNow.call(Date) };
  Date.now = () => clock.t;
  const store = await sqliteStore();
  const m = new Metering(store, { prices: {}, defaultMaxTokens: 0, keyPrefix: prefix(), now: () => clock.t });
  try {
    await fn(m, store, clock);
  } finally {
    Date.now = realNow;
    await m.close();
    await store.close();
  }
}

describe('adversarial: metering fast path — bugs found and fixed', () => {
  test('in memory: a TPM surplus settled after the window ended is not given to the NEXT window (windowEnd is read before the call)', async () => {
    // #consumeInMemory computes `windowEnd = Date.now() + res.msBeforeNext` AFTER `await consume()`:
    // the continuation runs later than the limiter read its clock (other microtasks, a busy event
    // loop), so windowEnd lies after the real end of the window. A settle in between rewards the
    // surplus to the window that started meanwhile. (The Redis path, and the code before 85cc398,
    // read the clock before the consume: windowEnd is never late.) 5 ms of delay are simulated here.
    await withFakeClock(async (m, store, clock) => {
      const T0 = clock.t;
      await setLimits(store, { kind: 'key', id: 'key_w' }, { rpm: null, tpm: 100 });
      const req = (prompt: number, max: number): Req => ({ ...REQ, keyId: 'key_w', promptTokens: prompt, maxTokens: max });
      await m.admit(req(0, 0)); // the key's TPM window starts at T0 (0 tokens)
      clock.t = T0 + 59_000;
      await m.admit(req(0, 0)); // definitions reloaded (cached from here on)
      clock.t = T0 + 59_998;
      const pending = m.admit(req(10, 90)); // consumed synchronously: 100 tokens, 2 ms before the window ends
      clock.t = T0 + 60_003; // …the continuation runs 5 ms later
      const a = await pending;
      // The next window: B takes all of it.
      const b = await outcome(m, req(10, 90));
      assert.equal(b.code, 'ok');
      assert.equal(b.headers['x-ratelimit-remaining-tokens'], '0');
      // A ends (it used 10 of its 100) — in the NEXT window: nothing may be given back to it.
      clock.t = T0 + 60_004;
      await m.settle(a, { prompt_tokens: 10, completion_tokens: 0 });
      const c = await outcome(m, req(10, 80));
      assert.equal(c.code, 'tokens_rate_limit_exceeded', `a window of 100 TPM admitted ${100 + 90} tokens: A's surplus of the previous window was given to it`);
    });
  });

  test('in memory: a refused request with an absurd max_tokens leaves the TPM counters it touched exact (counts capped at 2^40)', async () => {
    // The pipeline accepts any JSON integer as max_tokens (Number.isInteger(2 ** 60) is true). The
    // refused consume added 2^60 + 15 to a counter of 90 and the give-back subtracted it again: in
    // doubles (90 + 2^60) − 2^60 = 0, so the key's — and the whole tenant's — window started over.
    // Token counts are now capped at 2^40, where the arithmetic stays exact.
    const store = await sqliteStore();
    const m = new Metering(store, { prices: {}, defaultMaxTokens: 0, keyPrefix: prefix() });
    try {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: null, tpm: 100 });
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: null, tpm: 100 });
      assert.equal((await outcome(m, { ...REQ, promptTokens: 10, maxTokens: 80 })).code, 'ok');
      const huge = await outcome(m, { ...REQ, promptTokens: 15, maxTokens: 2 ** 60 });
      assert.equal(huge.code, 'tokens_rate_limit_exceeded');
      const after = await outcome(m, { ...REQ, keyId: 'key_other', promptTokens: 10, maxTokens: 80 });
      assert.equal(after.code, 'tokens_rate_limit_exceeded', `the tenant's window of 100 TPM admitted 90 + 90 tokens (remaining after: ${after.headers['x-ratelimit-remaining-tokens']})`);
    } finally {
      await m.close();
      await store.close();
    }
  });

  test('in memory: a refusal is not given back after its window ended (the NEXT window gets no extra capacity)', async () => {
    // #giveBack rewarded every consumed point without the `now < windowEnd` check that settle's
    // correction has: a check consumed just before its window ends, refused by a later check and
    // given back just after, started the next window at −points. The sequential in-memory path
    // widens the gap (one await per check before the give-back). Simulated with a 5 ms delay.
    await withFakeClock(async (m, store, clock) => {
      const T0 = clock.t;
      await setLimits(store, { kind: 'key', id: 'key_g' }, { rpm: 2, tpm: null });
      await setLimits(store, { kind: 'tenant', id: 'ten_g' }, { rpm: 0, tpm: null }); // the tenant refuses everything…
      const req: Req = { ...REQ, keyId: 'key_g', tenantId: 'ten_g' };
      await outcome(m, req); // key window starts at T0 (its point given back)
      clock.t = T0 + 59_000;
      await outcome(m, req); // definitions reloaded (cached from here on)
      clock.t = T0 + 59_998;
      const pending = outcome(m, req); // key rpm consumed synchronously, 2 ms before its window ends
      clock.t = T0 + 60_003; // …the tenant's refusal and the give-back run 5 ms later
      assert.equal((await pending).code, 'rate_limit_exceeded');
      // …then the tenant's limit is lifted: the key's new window must allow exactly 2.
      await setLimits(store, { kind: 'tenant', id: 'ten_g' }, { rpm: null, tpm: null });
      m.invalidate();
      const got: string[] = [];
      for (let i = 0; i < 3; i++) got.push((await outcome(m, req)).code);
      assert.deepEqual(got, ['ok', 'ok', 'rate_limit_exceeded'], 'RPM 2 admitted 3 in one window');
    });
  });

  test('capacity in flight under an old amount is not admitted from memory under a lowered amount', async () => {
    // Amounts only change by a direct edit of `budgets.amount` today. The first request under the
    // lowered amount marks the allotment stale; its grow gives back the free capacity and clears
    // `stale` at once — but the capacity of the requests still in flight was taken under the old
    // amount too. When they settled below their reservation, that capacity became `free` of a
    // non-stale allotment, and tryReserve (like reserve before it) admitted from it. Now a
    // reservation remembers the amount's generation, and its leftover turns the allotment stale.
    const db = new FakeLedger();
    const al = new Allotments(db);
    const h = (amount: number, reserve: number): AllotmentHold => ({ budgetId: 'b1', periodStart: 0, amount, reserve });
    try {
      const inFlight: Taken[][] = [];
      for (let i = 0; i < 5; i++) inFlight.push((await al.reserve([h(1_000_000, 100)])).taken);
      // The amount is lowered to 300 while 500 are in flight: the row cannot take another 100.
      assert.equal((await al.reserve([h(300, 100)])).misfit, 0);
      for (const t of inFlight) al.settle(t, [0]); // they used nothing
      let admitted = 0;
      for (let i = 0; i < 10; i++) if (al.tryReserve([h(300, 100)]) !== null) admitted++;
      assert.ok(admitted * 100 <= 300, `${admitted} × 100 admitted from memory under an amount of 300`);
    } finally {
      al.close();
    }
  });
});

describe('adversarial: metering fast path — rate limits in memory (held)', () => {
  test('a refusal in the middle of the sequential checks gives back every point, its own and the later checks\'', async () => {
    const store = await sqliteStore();
    const m = new Metering(store, { prices: {}, defaultMaxTokens: 50, keyPrefix: prefix() });
    try {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 100, tpm: 1000 });
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 2, tpm: 1000 });
      await m.admit(REQ);
      await m.admit({ ...REQ, keyId: 'key_b' });
      // key rpm ok, key tpm ok, tenant rpm refused, tenant tpm consumed: all four given back.
      for (let i = 0; i < 5; i++) {
        const r = await outcome(m, REQ);
        assert.equal(r.code, 'rate_limit_exceeded');
        assert.match(r.message!, /^Rate limit reached for tenant: 2 requests per minute\. Retry after \d+s\.$/);
        // tokens: key 1000 − 20, tenant 1000 − 40 (its own 20 given back): the tenant is the tightest
        assert.deepEqual(remaining(r.headers), { req: '0', tok: String(1000 - 40) }, 'counted as if the refused request had consumed nothing');
        assert.equal(r.headers['x-ratelimit-limit-requests'], '2');
      }
      // Nothing stayed consumed: a tenant without RPM pressure shows the exact counters.
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 1000, tpm: 1000 });
      m.invalidate();
      const ok = await outcome(m, REQ);
      assert.equal(ok.code, 'ok');
      // requests: key_a 1 + this one of 100 (the tenant's rpm 1000 is a fresh limiter: 1 of 1000);
      // tokens: the tenant's tpm limiter (same value 1000: same limiter) 20 + 20 + this 20.
      assert.deepEqual(remaining(ok.headers), { req: String(100 - 2), tok: String(1000 - 60) });
    } finally {
      await m.close();
      await store.close();
    }
  });

  test('code precedence: RPM before TPM, key before tenant; retry-after spans every refusing window; the too-big message names the request size', async () => {
    const store = await sqliteStore();
    const m = new Metering(store, { prices: {}, defaultMaxTokens: 50, keyPrefix: prefix() });
    try {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 1, tpm: 30 });
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 1, tpm: 25 });
      assert.equal((await outcome(m, { ...REQ, promptTokens: 5, maxTokens: 5 })).code, 'ok');
      const both = await outcome(m, { ...REQ, promptTokens: 10, maxTokens: 10 }); // every check refuses
      assert.equal(both.code, 'rate_limit_exceeded');
      assert.match(both.message!, /for key: 1 requests per minute/);
      assert.ok(Number(both.headers['retry-after']) >= 1 && Number(both.headers['retry-after']) <= 60);
      // tokens only: a fresh key and tenant
      await setLimits(store, { kind: 'key', id: 'key_t' }, { rpm: null, tpm: 30 });
      await setLimits(store, { kind: 'tenant', id: 'ten_t' }, { rpm: null, tpm: 25 });
      const big = await outcome(m, { ...REQ, keyId: 'key_t', tenantId: 'ten_t', promptTokens: 20, maxTokens: 20 });
      assert.equal(big.code, 'tokens_rate_limit_exceeded');
      assert.match(big.message!, /^Rate limit reached for key: 30 tokens per minute; this request needs up to 40 tokens/);
      assert.equal(big.headers['x-ratelimit-remaining-tokens'], '25', 'both given back: the tightest is the tenant at 25');
      const tenantOnly = await outcome(m, { ...REQ, keyId: 'key_t', tenantId: 'ten_t', promptTokens: 13, maxTokens: 13 });
      assert.equal(tenantOnly.code, 'tokens_rate_limit_exceeded');
      assert.match(tenantOnly.message!, /^Rate limit reached for tenant: 25 tokens per minute; this request needs up to 26 tokens/);
    } finally {
      await m.close();
      await store.close();
    }
  });

  test('settle applies the TPM correction synchronously in memory (not awaited), exactly once, and never for another instance\'s admission', async () => {
    const store = await sqliteStore();
    const m = new Metering(store, { prices: {}, defaultMaxTokens: 50, keyPrefix: prefix() });
    const other = new Metering(store, { prices: {}, defaultMaxTokens: 50, keyPrefix: prefix() });
    try {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: null, tpm: 100 });
      const a = await m.admit({ ...REQ, promptTokens: 10, maxTokens: 70 }); // 80
      assert.equal(a.headers['x-ratelimit-remaining-tokens'], '20');
      assert.deepEqual(await other.settle(a, { prompt_tokens: 1, completion_tokens: 1 }), { costMicros: 0 });
      const p1 = m.settle(a, { prompt_tokens: 10, completion_tokens: 10 }); // 80 → 20: 60 back, not awaited yet
      const p2 = m.settle(a, { prompt_tokens: 0, completion_tokens: 0 });
      assert.equal(p1, p2, 'one settlement');
      const probe = await m.admit({ ...REQ, promptTokens: 0, maxTokens: 0 });
      assert.equal(probe.headers['x-ratelimit-remaining-tokens'], '80', 'the correction was applied before settle resolved');
      await Promise.all([p1, p2, m.settle(a, null)]);
      const again = await m.admit({ ...REQ, promptTokens: 0, maxTokens: 0 });
      assert.equal(again.headers['x-ratelimit-remaining-tokens'], '80', 'given back once only');
      // an excess is charged: 40 reserved, 70 used → 20 + 70
      const b = await m.admit({ ...REQ, promptTokens: 20, maxTokens: 20 });
      void m.settle(b, { prompt_tokens: 20, completion_tokens: 50 });
      assert.equal((await m.admit({ ...REQ, promptTokens: 0, maxTokens: 0 })).headers['x-ratelimit-remaining-tokens'], '10');
    } finally {
      await m.close();
      await other.close();
      await store.close();
    }
  });

  test('concurrent bursts: admitted never above the limits; afterwards the counters hold exactly the admitted requests and their settled tokens', async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const rand = rng(seed);
      const store = await sqliteStore();
      const m = new Metering(store, { prices: {}, defaultMaxTokens: 20, keyPrefix: prefix() });
      try {
        const RPM = 5 + Math.floor(rand() * 20);
        const TPM = 300 + Math.floor(rand() * 1500);
        await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: RPM, tpm: TPM });
        for (const k of ['k0', 'k1', 'k2']) await setLimits(store, { kind: 'key', id: k }, { rpm: 3 + Math.floor(rand() * 10), tpm: 200 + Math.floor(rand() * 600) });
        const reqs: Req[] = Array.from({ length: 60 }, () => ({ ...REQ, keyId: `k${Math.floor(rand() * 4)}`, promptTokens: 1 + Math.floor(rand() * 60), maxTokens: Math.floor(rand() * 60) }));
        const res = await Promise.allSettled(reqs.map((r) => m.admit(r)));
        const ok: Array<{ r: Req; a: Admission }> = [];
        res.forEach((x, i) => {
          if (x.status === 'fulfilled') ok.push({ r: reqs[i]!, a: x.value });
          else assert.ok(x.reason instanceof MeteringError && /rate_limit_exceeded/.test(x.reason.code), String(x.reason));
        });
        assert.ok(ok.length > 0 && ok.length <= RPM, `seed ${seed}: ${ok.length} admitted, RPM ${RPM}`);
        const worst = ok.reduce((s, o) => s + (o.r.promptTokens as number) + (o.r.maxTokens as number), 0);
        assert.ok(worst <= TPM, `seed ${seed}: ${worst} tokens admitted, TPM ${TPM}`);
        // settle all concurrently with actual ≤ reserved: the tenant's TPM counter is their sum
        let used = 0;
        await Promise.all(
          ok.map((o) => {
            const u = Math.floor(rand() * ((o.r.promptTokens as number) + (o.r.maxTokens as number) + 1));
            used += u;
            return m.settle(o.a, { prompt_tokens: u, completion_tokens: 0 });
          }),
        );
        // probe with a key without limits: the tenant's counters alone (a refused probe reports the
        // counters without its own point, an admitted one with it)
        const probe = await outcome(m, { ...REQ, keyId: 'k_free', promptTokens: 0, maxTokens: 0 });
        const self = probe.code === 'ok' ? 1 : 0;
        assert.ok(probe.code === 'ok' || (probe.code === 'rate_limit_exceeded' && ok.length === RPM), `seed ${seed}: ${probe.code}`);
        assert.deepEqual(remaining(probe.headers), { req: String(RPM - ok.length - self), tok: String(TPM - used) }, `seed ${seed}: every refused point and every surplus given back`);
      } finally {
        await m.close();
        await store.close();
      }
    }
  });
});

describe('adversarial: metering fast path — rate limits in Redis (held)', { skip: REDIS ? false : 'SOVRA_TEST_REDIS_URL not set' }, () => {
  test('Redis keys are exactly <prefix>:<metric>:<kind>:<id>, shared with a node of the previous version (limiter keyPrefix <prefix>:<metric>)', async () => {
    const keyPrefix = prefix();
    const store = await sqliteStore();
    const m = new Metering(store, { redisUrl: REDIS!, prices: {}, defaultMaxTokens: 50, keyPrefix });
    const redis = new Redis(REDIS!);
    try {
      await setLimits(store, { kind: 'key', id: 'key:odd' }, { rpm: 5, tpm: 1000 });
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 7, tpm: 900 });
      const a = await m.admit({ ...REQ, keyId: 'key:odd', promptTokens: 12, maxTokens: 8 });
      const keys = (await redis.keys(`${keyPrefix}*`)).sort();
      assert.deepEqual(keys, [`${keyPrefix}:rpm:key:key:odd`, `${keyPrefix}:rpm:tenant:ten_a`, `${keyPrefix}:tpm:key:key:odd`, `${keyPrefix}:tpm:tenant:ten_a`]);
      assert.deepEqual(await Promise.all(keys.map((k) => redis.get(k))), ['1', '1', '20', '20']);
      const ttl = await redis.pttl(keys[0]!);
      assert.ok(ttl > 50_000 && ttl <= 60_000, `60 s windows (${ttl})`);
      // A node still running the previous version counts on the same keys (rolling upgrade).
      const old = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${keyPrefix}:rpm`, points: 5, duration: 60 });
      await old.consume('key:key:odd', 2);
      const b = await m.admit({ ...REQ, keyId: 'key:odd', promptTokens: 0, maxTokens: 0 });
      assert.equal(b.headers['x-ratelimit-limit-requests'], '5');
      assert.equal(b.headers['x-ratelimit-remaining-requests'], '1', '1 + 2 (old node) + 1 of 5');
      await m.settle(a, { prompt_tokens: 5, completion_tokens: 0 }); // 20 → 5
      assert.equal(await redis.get(`${keyPrefix}:tpm:key:key:odd`), '5', 'the correction is in Redis when settle resolves');
      assert.equal((await old.get('key:key:odd'))!.consumedPoints, 4);
    } finally {
      await dropKeys(redis, keyPrefix);
      redis.disconnect();
      await m.close();
      await store.close();
    }
  });

  test('refusals in Redis give back every point (refused and accepted checks alike), with the same codes and remaining counts as in memory', async () => {
    const keyPrefix = prefix();
    const run = async (redisUrl: string | undefined): Promise<string[]> => {
      const store = await sqliteStore();
      const m = new Metering(store, { ...(redisUrl ? { redisUrl } : {}), prices: {}, defaultMaxTokens: 50, keyPrefix: `${keyPrefix}${redisUrl ? 'r' : 'm'}` });
      const log: string[] = [];
      try {
        await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 5, tpm: 200 });
        await setLimits(store, { kind: 'key', id: 'key_b' }, { rpm: null, tpm: 45 });
        await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 12, tpm: 300 });
        const b = await createBudget(store, { scope: { kind: 'key', id: 'key_b' }, unit: 'tokens', amount: 30, period: 'fixed' });
        const rand = rng(42);
        const open: Admission[] = [];
        for (let i = 0; i < 40; i++) {
          const r: Req = { ...REQ, keyId: rand() < 0.6 ? 'key_a' : 'key_b', promptTokens: Math.floor(rand() * 30), maxTokens: Math.floor(rand() * 30) };
          const o = await outcome(m, r);
          if (o.a) open.push(o.a);
          log.push(`${r.keyId} ${o.code} ${JSON.stringify(remaining(o.headers))} ${o.message?.replace(/Retry after \d+s/, '') ?? ''}`);
          if (rand() < 0.4 && open.length > 0) {
            const a = open.splice(Math.floor(rand() * open.length), 1)[0]!;
            await m.settle(a, { prompt_tokens: Math.floor(rand() * 20), completion_tokens: 0 });
          }
        }
        for (const a of open) await m.settle(a, { prompt_tokens: 1, completion_tokens: 0 });
        await m.flush();
        log.push(JSON.stringify(await row(store, b)));
        return log;
      } finally {
        await m.close();
        await store.close();
      }
    };
    const redis = new Redis(REDIS!);
    try {
      const mem = await run(undefined);
      const red = await run(REDIS!);
      assert.deepEqual(red, mem);
      assert.ok(mem.some((l) => l.includes(' rate_limit_exceeded')) && mem.some((l) => l.includes('tokens_rate_limit_exceeded')) && mem.some((l) => l.includes('budget_exceeded')), mem.join('\n'));
    } finally {
      await dropKeys(redis, keyPrefix);
      redis.disconnect();
    }
  });

  test('a refused request with an absurd max_tokens leaves the Redis counters exact (integers in Redis)', async () => {
    const keyPrefix = prefix();
    const store = await sqliteStore();
    const m = new Metering(store, { redisUrl: REDIS!, prices: {}, defaultMaxTokens: 0, keyPrefix });
    const redis = new Redis(REDIS!);
    try {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: null, tpm: 100 });
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: null, tpm: 100 });
      assert.equal((await outcome(m, { ...REQ, promptTokens: 10, maxTokens: 80 })).code, 'ok');
      assert.equal((await outcome(m, { ...REQ, promptTokens: 15, maxTokens: 2 ** 60 })).code, 'tokens_rate_limit_exceeded');
      assert.deepEqual(await redis.mget(`${keyPrefix}:tpm:key:key_a`, `${keyPrefix}:tpm:tenant:ten_a`), ['90', '90']);
      assert.equal((await outcome(m, { ...REQ, keyId: 'key_other', promptTokens: 10, maxTokens: 80 })).code, 'tokens_rate_limit_exceeded');
    } finally {
      await dropKeys(redis, keyPrefix);
      redis.disconnect();
      await m.close();
      await store.close();
    }
  });

  test('concurrent bursts over two instances sharing Redis: never above the limits, counters exact afterwards', async () => {
    const keyPrefix = prefix();
    const store = await sqliteStore();
    const ms = [0, 1].map(() => new Metering(store, { redisUrl: REDIS!, prices: {}, defaultMaxTokens: 20, keyPrefix }));
    const redis = new Redis(REDIS!);
    try {
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 12, tpm: 700 });
      await setLimits(store, { kind: 'key', id: 'k0' }, { rpm: 6, tpm: 300 });
      const rand = rng(9);
      const reqs: Req[] = Array.from({ length: 50 }, () => ({ ...REQ, keyId: `k${Math.floor(rand() * 2)}`, promptTokens: 1 + Math.floor(rand() * 50), maxTokens: Math.floor(rand() * 50) }));
      const res = await Promise.allSettled(reqs.map((r, i) => ms[i % 2]!.admit(r)));
      const ok = res.flatMap((x, i) => (x.status === 'fulfilled' ? [{ r: reqs[i]!, a: x.value, m: ms[i % 2]! }] : []));
      for (const x of res) if (x.status === 'rejected') assert.ok(x.reason instanceof MeteringError, String(x.reason));
      assert.ok(ok.length > 0 && ok.length <= 12);
      let used = 0;
      await Promise.all(
        ok.map((o) => {
          const u = Math.floor(rand() * ((o.r.promptTokens as number) + (o.r.maxTokens as number) + 1));
          used += u;
          return o.m.settle(o.a, { prompt_tokens: u, completion_tokens: 0 });
        }),
      );
      assert.equal(await redis.get(`${keyPrefix}:rpm:tenant:ten_a`), String(ok.length));
      assert.equal(await redis.get(`${keyPrefix}:tpm:tenant:ten_a`), String(used));
      const k0 = ok.filter((o) => o.r.keyId === 'k0').length;
      assert.equal(await redis.get(`${keyPrefix}:rpm:key:k0`), String(k0));
    } finally {
      await dropKeys(redis, keyPrefix);
      redis.disconnect();
      for (const m of ms) await m.close();
      await store.close();
    }
  });
});

describe('adversarial: metering fast path — budgets and allotments (held)', () => {
  test('two budgets are reserved in id order whichever scope holds the smaller id: all or none, the refusal names the first misfit', async () => {
    for (const keyFirst of [true, false]) {
      const store = await sqliteStore();
      const m = new Metering(store, { prices: {}, defaultMaxTokens: 10, keyPrefix: prefix() });
      try {
        const [kid, tid] = keyFirst ? ['bud_a', 'bud_z'] : ['bud_z', 'bud_a'];
        // the tenant budget allows 3 requests of 20, the key budget 5
        const kb = await budgetWithId(store, kid, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 100, period: 'fixed' });
        const tb = await budgetWithId(store, tid, { scope: { kind: 'tenant', id: 'ten_a' }, unit: 'tokens', amount: 60, period: 'fixed' });
        const got: string[] = [];
        const open: Admission[] = [];
        for (let i = 0; i < 6; i++) {
          const o = await outcome(m, REQ);
          got.push(o.code);
          if (o.a) open.push(o.a);
          else assert.match(o.message!, /^Budget exceeded for tenant: 60 tokens\. This budget does not reset\.$/);
        }
        assert.deepEqual(got, ['ok', 'ok', 'ok', 'budget_exceeded', 'budget_exceeded', 'budget_exceeded']);
        await m.flush();
        assert.deepEqual(await row(store, kb), { used: 0, reserved: 60 }, 'the refused requests left nothing on the key budget');
        assert.deepEqual(await row(store, tb), { used: 0, reserved: 60 });
        for (const a of open) await m.settle(a, { prompt_tokens: 7, completion_tokens: 0 });
        await m.flush();
        assert.deepEqual([await row(store, kb), await row(store, tb)], [{ used: 21, reserved: 0 }, { used: 21, reserved: 0 }]);
      } finally {
        await m.close();
        await store.close();
      }
    }
  });

  test('tryReserve: a partial take undone while the top-up it started is on its way; everything exact after the top-up lands', async () => {
    const db = new GatedLedger();
    const al = new Allotments(db);
    try {
      const a = (reserve: number): AllotmentHold => ({ budgetId: 'a', periodStart: 0, amount: 1e9, reserve });
      const b: AllotmentHold = { budgetId: 'b', periodStart: 0, amount: 1e9, reserve: 10 };
      const first = await al.reserve([a(100)]);
      const allot = first.taken[0]!.allotment;
      al.settle(first.taken, [100]);
      db.closed = true;
      // use the slice until the next take crosses the top-up threshold
      const open: Taken[][] = [];
      for (let i = 0; i < 1000 && allot.free - 100 >= allot.topUpBelow; i++) open.push(al.tryReserve([a(100)])!);
      const before = { inFlight: allot.inFlight, refs: allot.refs, leased: allot.leased };
      assert.equal(allot.pending, 0);
      assert.equal(al.tryReserve([a(100), b]), null, 'b has nothing in memory');
      assert.deepEqual({ inFlight: allot.inFlight, refs: allot.refs, leased: allot.leased }, before, 'the take on a was undone');
      assert.equal(allot.pending, 1, 'the top-up started by the undone take is on its way');
      db.open();
      for (let i = 0; i < 100 && allot.pending > 0; i++) await turn();
      assert.ok(allot.leased >= allot.inFlight && allot.free >= 0);
      for (const t of open) al.settle(t, [50]);
      await al.flush();
      assert.deepEqual(db.row('a'), { used: 100 + open.length * 50, reserved: 0 });
      assert.deepEqual(db.row('b'), { used: 0, reserved: 0 });
    } finally {
      al.close();
    }
  });

  test('tryReserve during a full flush waiting for a top-up: the reservation stays covered, rows exact', async () => {
    const db = new GatedLedger();
    const al = new Allotments(db);
    try {
      const h: AllotmentHold = { budgetId: 'b1', periodStart: 0, amount: 1e9, reserve: 100 };
      const first = await al.reserve([h]);
      al.settle(first.taken, [100]);
      db.closed = true;
      const open: Taken[][] = [];
      let allot: Allotment | undefined;
      for (let i = 0; i < 1000 && !(allot && allot.pending > 0); i++) {
        const t = al.tryReserve([h])!;
        allot = t[0]!.allotment;
        open.push(t);
      }
      assert.ok(allot && allot.pending > 0, 'a top-up is on its way');
      const flushing = al.flush(); // waits for the top-up
      const during = al.tryReserve([h]);
      assert.ok(during !== null, 'memory still serves while the flush waits');
      open.push(during);
      db.open();
      await flushing;
      assert.deepEqual(db.row('b1'), { used: 100, reserved: open.length * 100 }, 'all free capacity given back; in-flight reservations covered');
      for (const t of open) al.settle(t, [30]);
      await al.flush();
      assert.deepEqual(db.row('b1'), { used: 100 + open.length * 30, reserved: 0 });
    } finally {
      al.close();
    }
  });

  test('#current across periods: an old period flushed away and met again, a new one, alternating — each reservation lands on its own period row', async () => {
    let now = 1_000_000;
    const db = new PeriodLedger();
    const al = new Allotments(db, { now: () => now });
    try {
      const hp = (p: number, reserve = 10): AllotmentHold => ({ budgetId: 'm', periodStart: p, amount: 1_000_000, reserve });
      const take = async (h: AllotmentHold) => al.tryReserve([h]) ?? (await al.reserve([h])).taken;
      const t1 = await take(hp(1000));
      const t2 = await take(hp(2000));
      al.settle(t1, [10]);
      now += 10_000;
      await al.flush(false); // period 1000 idle: usage written, capacity given back…
      await al.flush(false); // …and the empty allotment dropped
      const late = await take(hp(1000)); // a late request of the old period: a fresh allotment
      assert.notEqual(late[0]!.allotment, t1[0]!.allotment);
      assert.equal(late[0]!.allotment.periodStart, 1000);
      const cur = await take(hp(2000));
      assert.equal(cur[0]!.allotment, t2[0]!.allotment, 'the newer period is found again (not replaced by the late old one)');
      // alternate a while
      const open: Array<[Taken[], number]> = [];
      for (let i = 0; i < 40; i++) {
        const p = [1000, 2000, 3000][i % 3]!;
        const t = await take(hp(p, 1 + (i % 7)));
        assert.equal(t[0]!.allotment.periodStart, p);
        open.push([t, p]);
        if (i % 5 === 0) await al.flush(i % 2 === 0);
      }
      const used = new Map<number, number>([[1000, 10], [2000, 0], [3000, 0]]);
      for (const [t, p] of [[late, 1000], [cur, 2000], [t2, 2000], ...open] as Array<[Taken[], number]>) {
        al.settle(t, [t[0]!.reserved]);
        used.set(p, used.get(p)! + t[0]!.reserved);
      }
      await al.flush();
      for (const p of [1000, 2000, 3000]) assert.deepEqual(db.row(`m@${p}`), { used: used.get(p), reserved: 0 }, `period ${p}`);
      assert.equal(al.tryReserve([hp(3000)]), null, 'nothing held after the full flush');
    } finally {
      al.close();
    }
  });

  test('#current never serves an allotment the flush dropped (its usage would never be written); many budgets leave nothing held', async () => {
    let now = 1_000_000;
    const db = new PeriodLedger();
    const al = new Allotments(db, { now: () => now });
    try {
      const h = (id: string, reserve = 10): AllotmentHold => ({ budgetId: id, periodStart: 0, amount: 1_000_000, reserve });
      const take = async (x: AllotmentHold) => al.tryReserve([x]) ?? (await al.reserve([x])).taken;
      const first = await take(h('x'));
      al.settle(first, [10]);
      now += 5_000;
      await al.flush(false);
      await al.flush(false); // dropped
      assert.equal(al.tryReserve([h('x')]), null, 'nothing held in memory any more');
      const second = await take(h('x'));
      assert.notEqual(second[0]!.allotment, first[0]!.allotment, 'a fresh allotment, not the dropped one');
      al.settle(second, [7]);
      // many budgets, each used once and left idle
      for (let i = 0; i < 200; i++) al.settle(await take(h(`b${i}`, 3)), [3]);
      now += 5_000;
      await al.flush(false);
      await al.flush(false);
      for (let i = 0; i < 200; i += 37) assert.equal(al.tryReserve([h(`b${i}`, 3)]), null, `b${i}: nothing held after the idle flushes`);
      await al.flush();
      assert.deepEqual(db.row('x@0'), { used: 17, reserved: 0 });
      for (let i = 0; i < 200; i++) assert.deepEqual(db.row(`b${i}@0`), { used: 3, reserved: 0 });
    } finally {
      al.close();
    }
  });

  test('seeded random interleavings: tryReserve and reserve, one or two budgets, period changes and late old-period requests, slow and failing ledger, flushes — never overspent, exact at the end', async () => {
    for (let seed = 1; seed <= 30; seed++) {
      const rand = rng(seed);
      const db = new PeriodLedger(rng(seed + 500), Math.floor(rand() * 4));
      db.rand = rng(seed + 900);
      db.failRate = seed % 3 === 0 ? 0.08 : 0;
      let now = 1_000_000;
      const procs = Array.from({ length: 1 + (seed % 3) }, () => new Allotments(db, { now: () => now, onError: () => undefined }));
      const amounts: Record<string, number> = { a: 500 + Math.floor(rand() * 50_000), b: 200 + Math.floor(rand() * 5_000) };
      let period = 0;
      const charged = new Map<string, number>();
      const overage = new Map<string, number>();
      const open: Array<{ p: Allotments; taken: Taken[]; holds: AllotmentHold[] }> = [];
      const allots = new Set<Allotment>();
      const ops: Promise<unknown>[] = [];
      const rk = (h: AllotmentHold) => `${h.budgetId}@${h.periodStart}`;
      const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
      const check = (where: string) => {
        for (const [k, r] of db.rows) {
          assert.ok(r.reserved >= 0, `seed ${seed} ${where}: ${k} reserved ${r.reserved}`);
          const amount = amounts[k.split('@')[0]!]!;
          assert.ok((db.maxCommitted.get(k) ?? 0) <= amount + (overage.get(k) ?? 0), `seed ${seed} ${where}: ${k} overspent`);
        }
        for (const a of allots) assert.ok(a.leased >= 0 && a.inFlight >= 0 && a.unflushed >= 0 && a.refs >= 0 && a.pending >= 0, `seed ${seed} ${where}: negative state`);
      };
      for (let i = 0; i < 300; i++) {
        if (rand() < 0.03) period++;
        const p = procs[Math.floor(rand() * procs.length)]!;
        const ps = rand() < 0.1 && period > 0 ? (period - 1) * 86_400_000 : period * 86_400_000;
        const size = rand() < 0.04 ? 0 : 1 + Math.floor(rand() * 60);
        const x = rand();
        const ha: AllotmentHold = { budgetId: 'a', periodStart: ps, amount: amounts['a']!, reserve: size * 3 };
        const hb: AllotmentHold = { budgetId: 'b', periodStart: ps, amount: amounts['b']!, reserve: size };
        const holds = x < 0.4 ? [ha, hb] : x < 0.7 ? [ha] : [hb];
        const onOk = (taken: Taken[]) => {
          taken.forEach((t, j) => {
            allots.add(t.allotment);
            assert.equal(rk({ ...holds[j]!, budgetId: t.allotment.budgetId, periodStart: t.allotment.periodStart }), rk(holds[j]!), `seed ${seed}: wrong allotment`);
          });
          open.push({ p, taken, holds });
        };
        const fast = rand() < 0.8 ? p.tryReserve(holds) : null;
        if (fast) onOk(fast);
        else
          ops.push(
            p.reserve(holds).then(
              (r) => (r.misfit === -1 ? onOk(r.taken) : assert.deepEqual(r.taken, [])),
              (e: unknown) => assert.match(String(e), /injected/),
            ),
          );
        if (rand() < 0.5 && open.length > 0) {
          const o = open.splice(Math.floor(rand() * open.length), 1)[0]!;
          const actual = o.taken.map((t) => (rand() < 0.05 ? t.reserved + 1 + Math.floor(rand() * 10) : Math.floor(rand() * (t.reserved + 1))));
          o.taken.forEach((t, j) => {
            add(charged, rk(o.holds[j]!), actual[j]!);
            add(overage, rk(o.holds[j]!), Math.max(0, actual[j]! - t.reserved));
          });
          o.p.settle(o.taken, actual);
        }
        if (rand() < 0.05) ops.push(procs[Math.floor(rand() * procs.length)]!.flush(rand() < 0.5).catch(() => undefined));
        if (rand() < 0.1) now += Math.floor(rand() * 1500);
        if (rand() < 0.4) await turn();
        check(`step ${i}`);
      }
      await Promise.all(ops);
      for (const o of open) {
        o.taken.forEach((t, j) => add(charged, rk(o.holds[j]!), t.reserved));
        o.p.settle(o.taken, o.taken.map((t) => t.reserved));
      }
      for (let i = 0; i < 5000 && [...allots].some((a) => a.pending > 0); i++) await turn();
      db.failRate = 0;
      for (const p of procs) await p.flush();
      check('end');
      for (const [k, r] of db.rows) assert.deepEqual(r, { used: charged.get(k) ?? 0, reserved: 0 }, `seed ${seed} row ${k}`);
      for (const p of procs) p.close();
    }
  });

  test('Metering over a period rollover with the fast path: in-flight requests settle into the old day, the new day is exact; no unhandled rejections anywhere in this file', async () => {
    const store = await sqliteStore();
    let now = Date.UTC(2026, 5, 30, 23, 59, 59, 0);
    const m = new Metering(store, { prices: {}, defaultMaxTokens: 10, now: () => now, keyPrefix: prefix() });
    try {
      const kb = await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 1_000_000, period: 'day' });
      const tb = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_a' }, unit: 'tokens', amount: 1_000_000, period: 'month' });
      const old: Admission[] = [];
      for (let i = 0; i < 30; i++) old.push(await m.admit(REQ)); // fast path after the first slice
      const dayOld = now;
      now = Date.UTC(2026, 6, 1, 0, 0, 0, 500); // a new day and a new month
      const fresh: Admission[] = [];
      for (let i = 0; i < 30; i++) fresh.push(await m.admit(REQ));
      for (const a of old) await m.settle(a, { prompt_tokens: 3, completion_tokens: 0 });
      for (const a of fresh) await m.settle(a, { prompt_tokens: 5, completion_tokens: 0 });
      await m.flush();
      assert.deepEqual(await row(store, kb, dayOld), { used: 90, reserved: 0 });
      assert.deepEqual(await row(store, tb, dayOld), { used: 90, reserved: 0 });
      assert.deepEqual(await row(store, kb, now), { used: 150, reserved: 0 });
      assert.deepEqual(await row(store, tb, now), { used: 150, reserved: 0 });
    } finally {
      await m.close();
      await store.close();
    }
    // Redis unreachable: the insurance limiter answers; nothing rejects unhandled on the way.
    const s2 = await sqliteStore();
    const m2 = new Metering(s2, { redisUrl: 'redis://127.0.0.1:1', prices: {}, defaultMaxTokens: 10, keyPrefix: prefix() });
    try {
      await setLimits(s2, { kind: 'key', id: 'key_a' }, { rpm: 3, tpm: 100 });
      const a = await m2.admit(REQ);
      await m2.admit(REQ);
      await m2.admit(REQ);
      assert.equal((await outcome(m2, REQ)).code, 'rate_limit_exceeded');
      await m2.settle(a, { prompt_tokens: 1, completion_tokens: 1 });
    } finally {
      await m2.close();
      await s2.close();
    }
    for (let i = 0; i < 5; i++) await turn();
    assert.deepEqual(unhandled, []);
  });
});
