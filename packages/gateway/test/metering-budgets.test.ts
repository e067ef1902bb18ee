/**
 * Budgets: reserve-then-settle is never overspent — 200 concurrent admissions against a budget
 * that allows 50, two store connections to one SQLite file, several OS processes sharing the file,
 * and (when SOVRA_TEST_POSTGRES_URL is set) a PostgreSQL pool and two pools. Also settlement,
 * periods, micro-USD budgets, several budgets per request, and the cheap path without any.
 *
 * The file doubles as the child process of the multi-process race (METERING_RACE_CHILD=1).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { openStore, type Store } from '../src/store/db.ts';
import { Metering, MeteringError, createBudget, listBudgets, type Admission, type Budget } from '../src/metering/index.ts';
import { migratedSqliteStore } from './helpers/store-backends.ts';

const PG = process.env['SOVRA_TEST_POSTGRES_URL'];
/** Every request below reserves 10 prompt + 10 completion tokens. */
const REQ = { tenantId: 'ten_a', keyId: 'key_a', model: 'm', promptTokens: 10, maxTokens: 10 } as const;
const WORST = 20;

/**
 * Every Metering of this file, so that `usageRow` can flush their allotments first: the rows then
 * show exactly settled usage and reservations in flight (allotments.ts).
 */
const live = new Set<Metering>();
class TrackedMetering extends Metering {
  constructor(...args: ConstructorParameters<typeof Metering>) {
    super(...args);
    live.add(this);
  }
  override async close(): Promise<void> {
    live.delete(this);
    await super.close();
  }
}

if (process.env['METERING_RACE_CHILD'] === '1') {
  // Child of the multi-process race: N concurrent admissions, never settled; prints the counts.
  const store = await openStore(`sqlite:${process.env['METERING_DB']}`);
  const m = new TrackedMetering(store, { prices: {}, defaultMaxTokens: 10 });
  const n = Number(process.env['METERING_N']);
  const results = await Promise.allSettled(Array.from({ length: n }, () => m.admit(REQ)));
  const admitted = results.filter((r) => r.status === 'fulfilled').length;
  const refused = results.filter((r) => r.status === 'rejected' && r.reason instanceof MeteringError && r.reason.code === 'budget_exceeded').length;
  await m.close();
  await store.close();
  process.stdout.write(JSON.stringify({ admitted, refused }) + '\n');
} else {
  registerTests();
}

function registerTests(): void {
  const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-metering-budgets-'));
  after(() => rmSync(tmpRoot, { recursive: true, force: true }));

  const sqliteStore = (file?: string): Promise<Store> => migratedSqliteStore(tmpRoot, file);

  async function usageRow(store: Store, b: Budget, now = Date.now()): Promise<{ used: number; reserved: number }> {
    for (const m of live) await m.flush();
    const [s] = await listBudgets(store, { scopes: [b.scope] }, now);
    const st = (await listBudgets(store, { scopes: [b.scope] }, now)).find((x) => x.id === b.id) ?? s!;
    return { used: st.used, reserved: st.reserved };
  }

  /** Fires `n` admissions at once over the given instances (round robin); returns the admissions and asserts refusals are budget_exceeded. */
  async function race(ms: Metering[], n: number): Promise<Admission[]> {
    const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => ms[i % ms.length]!.admit(REQ)));
    const ok: Admission[] = [];
    for (const r of results) {
      if (r.status === 'fulfilled') ok.push(r.value);
      else {
        assert.ok(r.reason instanceof MeteringError, String(r.reason));
        assert.equal(r.reason.code, 'budget_exceeded');
        assert.equal(r.reason.status, 429);
      }
    }
    return ok;
  }

  describe('budgets on SQLite', () => {
    test('200 concurrent admissions against a budget for 50: exactly 50 admitted; settle releases', async () => {
      const store = await sqliteStore();
      const m = new TrackedMetering(store, { prices: {}, defaultMaxTokens: 4096 });
      try {
        const b = await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 50 * WORST, period: 'fixed' });
        const admitted = await race([m], 200);
        assert.equal(admitted.length, 50);
        assert.deepEqual(await usageRow(store, b), { used: 0, reserved: 50 * WORST });
        for (const a of admitted) assert.equal(a.reservedCompletionTokens, 10);

        // settle: the reservation becomes the actual usage (7 tokens each)
        const costs = await Promise.all(admitted.map((a) => m.settle(a, { prompt_tokens: 5, completion_tokens: 2 })));
        assert.ok(costs.every((c) => c.costMicros === 0));
        assert.deepEqual(await usageRow(store, b), { used: 50 * 7, reserved: 0 });
        // idempotent
        await Promise.all(admitted.map((a) => m.settle(a, { prompt_tokens: 1000, completion_tokens: 1000 })));
        assert.deepEqual(await usageRow(store, b), { used: 350, reserved: 0 });
        // what was freed is admissible again: (1000 - 350) / 20 = 32
        const more = await race([m], 100);
        assert.equal(more.length, 32);
        const st = await usageRow(store, b);
        assert.ok(st.used + st.reserved <= 1000);

        // the refusal: names the scope kind and limit, no retry-after for a fixed budget
        const err = await m.admit(REQ).then(() => null, (e: unknown) => e);
        assert.ok(err instanceof MeteringError);
        assert.match(err.message, /key: 1000 tokens/);
        assert.doesNotMatch(err.message, /key_a/);
        assert.equal(err.headers['retry-after'], undefined);
        // null usage = 0 tokens; usage beyond the reservation is recorded, not clamped
        await m.settle(more[0]!, null);
        await m.settle(more[1]!, { prompt_tokens: 10, completion_tokens: 500 });
        assert.deepEqual(await usageRow(store, b), { used: 350 + 510, reserved: 30 * WORST });
      } finally {
        await m.close();
        await store.close();
      }
    });

    test('two store connections to one SQLite file (two nodes) never overspend', async () => {
      const file = join(tmpRoot, `two-${randomBytes(4).toString('hex')}.db`);
      const s1 = await sqliteStore(file);
      const s2 = await sqliteStore(file);
      const m1 = new TrackedMetering(s1, { prices: {}, defaultMaxTokens: 10 });
      const m2 = new TrackedMetering(s2, { prices: {}, defaultMaxTokens: 10 });
      try {
        const b = await createBudget(s1, { scope: { kind: 'tenant', id: 'ten_a' }, unit: 'tokens', amount: 50 * WORST, period: 'month' });
        const admitted = await race([m1, m2], 200);
        assert.equal(admitted.length, 50);
        assert.deepEqual(await usageRow(s2, b), { used: 0, reserved: 1000 });
        // an admission settles on the instance that made it; another instance ignores it (cost 0, nothing touched)
        assert.deepEqual(await new TrackedMetering(s1, { prices: {}, defaultMaxTokens: 1 }).settle(admitted[0]!, { prompt_tokens: 10, completion_tokens: 10 }), { costMicros: 0 });
        assert.deepEqual(await usageRow(s1, b), { used: 0, reserved: 1000 });
        await Promise.all(admitted.map((a) => Promise.all([m1.settle(a, { prompt_tokens: 10, completion_tokens: 10 }), m2.settle(a, { prompt_tokens: 10, completion_tokens: 10 })])));
        assert.deepEqual(await usageRow(s1, b), { used: 1000, reserved: 0 });
      } finally {
        await m1.close();
        await m2.close();
        await s1.close();
        await s2.close();
      }
    });

    test('four OS processes racing on one SQLite file never overspend', { timeout: 60_000 }, async () => {
      const file = join(tmpRoot, `procs-${randomBytes(4).toString('hex')}.db`);
      const s = await sqliteStore(file);
      const b = await createBudget(s, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 50 * WORST, period: 'day' });
      const self = fileURLToPath(import.meta.url);
      const tsx = import.meta.resolve('tsx');
      const runs = await Promise.all(
        [0, 1, 2, 3].map(
          () =>
            new Promise<{ admitted: number; refused: number }>((resolve, reject) => {
              const p = spawn(process.execPath, ['--import', tsx, self], {
                env: { ...process.env, METERING_RACE_CHILD: '1', METERING_DB: file, METERING_N: '50' },
                stdio: ['ignore', 'pipe', 'pipe'],
              });
              let out = '';
              let errOut = '';
              p.stdout.on('data', (d: Buffer) => (out += d.toString()));
              p.stderr.on('data', (d: Buffer) => (errOut += d.toString()));
              p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim()) as { admitted: number; refused: number }) : reject(new Error(`child exited ${code}: ${errOut}`))));
            }),
        ),
      );
      const admitted = runs.reduce((n, r) => n + r.admitted, 0);
      const refused = runs.reduce((n, r) => n + r.refused, 0);
      assert.equal(admitted, 50, JSON.stringify(runs));
      assert.equal(refused, 150);
      assert.deepEqual(await usageRow(s, b), { used: 0, reserved: 1000 });
      await s.close();
    });

    test('key and tenant budgets: all or nothing, a later misfit gives back the earlier reservation', async () => {
      const store = await sqliteStore();
      const m = new TrackedMetering(store, { prices: {}, defaultMaxTokens: 10 });
      try {
        const kb = await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 1000, period: 'day' });
        const tb = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_a' }, unit: 'tokens', amount: 3 * WORST, period: 'day' });
        const admitted = await race([m], 10);
        assert.equal(admitted.length, 3);
        assert.deepEqual(await usageRow(store, kb), { used: 0, reserved: 60 });
        assert.deepEqual(await usageRow(store, tb), { used: 0, reserved: 60 });
        // another key of the same tenant is held by the tenant budget too
        await assert.rejects(m.admit({ ...REQ, keyId: 'key_b' }), (e: unknown) => e instanceof MeteringError && /tenant/.test(e.message));
        // a request bigger than a whole budget is refused, a smaller one fits
        const cb = await createBudget(store, { scope: { kind: 'key', id: 'key_c' }, unit: 'tokens', amount: 100, period: 'day' });
        await assert.rejects(m.admit({ ...REQ, keyId: 'key_c', tenantId: 'ten_c', maxTokens: 200 }), (e: unknown) => e instanceof MeteringError && e.code === 'budget_exceeded');
        const small = await m.admit({ ...REQ, keyId: 'key_c', tenantId: 'ten_c', maxTokens: null });
        assert.deepEqual(await usageRow(store, cb), { used: 0, reserved: 10 + 10 }, 'defaultMaxTokens reserved');
        await m.settle(small, null);
        assert.deepEqual(await usageRow(store, cb), { used: 0, reserved: 0 });
      } finally {
        await m.close();
        await store.close();
      }
    });

    test('micro-USD budgets reserve the worst-case cost and settle the actual cost', async () => {
      const store = await sqliteStore();
      // 1 USD per 1M input tokens = 1 micro-USD per token; 4 micro-USD per output token
      const m = new TrackedMetering(store, { prices: { m: { input_per_1m_usd: 1, output_per_1m_usd: 4 } }, defaultMaxTokens: 100 });
      try {
        const b = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_a' }, unit: 'usd_micros', amount: 1000, period: 'month' });
        const a1 = await m.admit({ ...REQ, promptTokens: 100, maxTokens: null }); // 100 + 4 × 100 = 500
        assert.deepEqual(await usageRow(store, b), { used: 0, reserved: 500 });
        const a2 = await m.admit({ ...REQ, promptTokens: 100, maxTokens: null });
        await assert.rejects(m.admit({ ...REQ, promptTokens: 1, maxTokens: 0 }), (e: unknown) => e instanceof MeteringError && /tenant: 1000 micro-USD per month/.test(e.message));
        assert.deepEqual(await m.settle(a1, { prompt_tokens: 100, completion_tokens: 25 }), { costMicros: 200 });
        assert.deepEqual(await usageRow(store, b), { used: 200, reserved: 500 });
        assert.deepEqual(await m.settle(a2, { prompt_tokens: 100, completion_tokens: 200 }), { costMicros: 900 }, 'beyond the reservation: recorded');
        assert.deepEqual(await usageRow(store, b), { used: 1100, reserved: 0 });
        // exhausted: even a free request is refused
        await assert.rejects(m.admit({ ...REQ, model: 'unpriced', promptTokens: 1, maxTokens: 0 }), (e: unknown) => e instanceof MeteringError && e.code === 'budget_exceeded');
      } finally {
        await m.close();
        await store.close();
      }
    });

    test('periods: a new UTC day starts from zero; retry-after counts to the next period', async () => {
      const store = await sqliteStore();
      let now = Date.UTC(2025, 2, 31, 23, 59, 30);
      const m = new TrackedMetering(store, { prices: {}, defaultMaxTokens: 10, now: () => now });
      try {
        const b = await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: WORST, period: 'day' });
        const a = await m.admit(REQ);
        const err = await m.admit(REQ).then(() => null, (e: unknown) => e);
        assert.ok(err instanceof MeteringError);
        assert.equal(err.headers['retry-after'], '30');
        assert.match(err.message, /key: 20 tokens per day/);
        now = Date.UTC(2025, 3, 1, 0, 0, 1);
        const next = await m.admit(REQ);
        assert.deepEqual(await usageRow(store, b, now), { used: 0, reserved: WORST });
        // the first admission settles into the period it reserved in
        await m.settle(a, { prompt_tokens: 3, completion_tokens: 3 });
        assert.deepEqual(await usageRow(store, b, Date.UTC(2025, 2, 31, 12)), { used: 6, reserved: 0 });
        assert.deepEqual(await usageRow(store, b, now), { used: 0, reserved: WORST });
        await m.settle(next, null);
        // month budget
        const mb = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_m' }, unit: 'tokens', amount: 0, period: 'month' });
        now = Date.UTC(2025, 3, 30, 0, 0, 0);
        const e2 = await m.admit({ ...REQ, tenantId: 'ten_m' }).then(() => null, (e: unknown) => e);
        assert.ok(e2 instanceof MeteringError);
        assert.equal(e2.headers['retry-after'], String(24 * 3600), 'to 1 May 00:00 UTC');
        void mb;
      } finally {
        await m.close();
        await store.close();
      }
    });

    test('without limits and budgets: empty headers, no database write, prompt not counted', async () => {
      const store = await sqliteStore();
      const m = new TrackedMetering(store, { prices: { m: { input_per_1m_usd: 1, output_per_1m_usd: 1 } }, defaultMaxTokens: 10 });
      try {
        const changes = () => (store.sqlite!.prepare('select total_changes() as n').get() as { n: number }).n;
        await m.admit(REQ); // warm the definitions cache
        const before = changes();
        let counted = 0;
        const t0 = performance.now();
        for (let i = 0; i < 1000; i++) {
          const a = await m.admit({ ...REQ, promptTokens: () => ++counted });
          assert.deepEqual(a.headers, {});
          assert.equal(a.reservedCompletionTokens, null);
          assert.deepEqual(await m.settle(a, { prompt_tokens: 10, completion_tokens: 5 }), { costMicros: 15 });
        }
        const perAdmit = (performance.now() - t0) / 1000;
        assert.equal(changes(), before, 'no writes');
        assert.equal(counted, 0, 'the prompt-token function is not called');
        assert.ok(perAdmit < 1, `${perAdmit.toFixed(3)} ms per admit + settle`);
        assert.equal((await store.db.selectFrom('budget_usage').selectAll().execute()).length, 0);
      } finally {
        await m.close();
        await store.close();
      }
    });

    test('definitions are cached at most 2 s; invalidate() applies a change at once', async () => {
      const store = await sqliteStore();
      let now = Date.now();
      const m = new TrackedMetering(store, { prices: {}, defaultMaxTokens: 10, now: () => now });
      try {
        await m.admit(REQ);
        await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 0, period: 'fixed' });
        await m.admit(REQ); // still cached: no budget known
        now += 2001;
        await assert.rejects(m.admit(REQ), MeteringError, 'expired after 2 s');
        const b2 = await createBudget(store, { scope: { kind: 'key', id: 'key_z' }, unit: 'tokens', amount: 0, period: 'fixed' });
        await m.admit({ ...REQ, keyId: 'key_y' });
        await createBudget(store, { scope: { kind: 'key', id: 'key_y' }, unit: 'tokens', amount: 0, period: 'fixed' });
        m.invalidate();
        await assert.rejects(m.admit({ ...REQ, keyId: 'key_y' }), MeteringError, 'invalidate() drops the cache');
        void b2;
      } finally {
        await m.close();
        await store.close();
      }
    });
  });

  describe('budgets on PostgreSQL', { skip: PG ? false : 'SOVRA_TEST_POSTGRES_URL not set' }, () => {
    test('200 concurrent admissions over one pool and over two pools: exactly 50 each time, used+reserved never above the amount', { timeout: 60_000 }, async () => {
      const schema = `metering_test_${randomBytes(6).toString('hex')}`;
      const s1 = await openStore(PG!, { pgSchema: schema });
      await s1.migrate();
      const s2 = await openStore(PG!, { pgSchema: schema });
      const m1 = new TrackedMetering(s1, { prices: {}, defaultMaxTokens: 10 });
      const m2 = new TrackedMetering(s2, { prices: {}, defaultMaxTokens: 10 });
      try {
        for (const [label, ms, scope] of [
          ['one pool', [m1], { kind: 'key', id: 'key_a' }],
          ['two pools', [m1, m2], { kind: 'tenant', id: 'ten_a' }],
        ] as const) {
          m1.invalidate();
          m2.invalidate();
          const b = await createBudget(s1, { scope, unit: 'tokens', amount: 50 * WORST, period: 'day' });
          let sampling = true;
          let maxSeen = 0;
          const sampler = (async () => {
            while (sampling) {
              const r = await s2.db.selectFrom('budget_usage').select(['used', 'reserved']).where('budget_id', '=', b.id).executeTakeFirst();
              if (r) maxSeen = Math.max(maxSeen, Number(r.used) + Number(r.reserved));
              await new Promise((res) => setImmediate(res));
            }
          })();
          const admitted = await race([...ms], 200);
          sampling = false;
          await sampler;
          assert.equal(admitted.length, 50, label);
          assert.ok(maxSeen <= 1000, `${label}: max used+reserved seen ${maxSeen}`);
          assert.deepEqual(await usageRow(s1, b), { used: 0, reserved: 1000 }, label);
          await Promise.all(admitted.map((a) => m1.settle(a, { prompt_tokens: 4, completion_tokens: 4 })));
          await Promise.all(admitted.map((a) => m2.settle(a, { prompt_tokens: 4, completion_tokens: 4 })));
          assert.deepEqual(await usageRow(s1, b), { used: 400, reserved: 0 }, label);
          // the key budget of the first round also covers ten_a/key_a: delete it before round two
          await s1.db.deleteFrom('budgets').where('id', '=', b.id).execute();
        }
        // key + tenant budgets with a misfit on the second: the first is given back
        m1.invalidate();
        const kb = await createBudget(s1, { scope: { kind: 'key', id: 'key_p' }, unit: 'tokens', amount: 1000, period: 'day' });
        const tb = await createBudget(s1, { scope: { kind: 'tenant', id: 'ten_p' }, unit: 'tokens', amount: 2 * WORST, period: 'day' });
        const res = await Promise.allSettled(Array.from({ length: 20 }, () => m1.admit({ ...REQ, keyId: 'key_p', tenantId: 'ten_p' })));
        assert.equal(res.filter((r) => r.status === 'fulfilled').length, 2);
        assert.deepEqual(await usageRow(s1, kb), { used: 0, reserved: 40 });
        assert.deepEqual(await usageRow(s1, tb), { used: 0, reserved: 40 });
      } finally {
        await m1.close();
        await m2.close();
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(s1.db);
        await s1.close();
        await s2.close();
      }
    });
  });
}
