/**
 * Metering units: prices and costs, prompt token counting, reset formatting, periods, the config
 * section, limit/budget storage, usage rollups and CSV (SQLite, and PostgreSQL when
 * SOVRA_TEST_POSTGRES_URL is set).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rng } from './helpers/prng.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { openStore, type Store } from '../src/store/db.ts';
import { normalise } from '../src/store/requests.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { configSchema } from '../src/config/schema.ts';
import {
  costMicros, countPromptTokens, createBudget, deleteBudget, formatReset, getLimits, listBudgets, listLimits,
  COUNT_CACHE_ENTRIES, COUNT_CACHE_MAX_CHARS, nextPeriodStart, periodStart, queryUsage, retryAfterSeconds, setLimits, usageCsv, type PriceTable,
} from '../src/metering/index.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-metering-units-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));
const PG = process.env['SOVRA_TEST_POSTGRES_URL'];

describe('prices', () => {
  const prices: PriceTable = {
    hosted: { input_per_1m_usd: 2.5, output_per_1m_usd: 10 },
    cheap: { input_per_1m_usd: 0.15, output_per_1m_usd: 0.6 },
    local: { gpu_hour_usd: 2, tokens_per_gpu_hour: 1_000_000 },
  };
  test('per-token price: X USD per 1M tokens is X micro-USD per token', () => {
    assert.equal(costMicros(prices, 'hosted', { prompt_tokens: 1000, completion_tokens: 500 }), 2500 + 5000);
    assert.equal(costMicros(prices, 'hosted', { prompt_tokens: 1_000_000, completion_tokens: 1_000_000 }), 12_500_000);
    assert.equal(costMicros(prices, 'cheap', { prompt_tokens: 1000, completion_tokens: 0 }), 150, 'no float noise');
    assert.equal(costMicros(prices, 'cheap', { prompt_tokens: 3, completion_tokens: 1 }), 1, 'rounded to the nearest micro-USD');
  });
  test('GPU-hour price: tokens × hour price / tokens per hour', () => {
    // 2 USD per 1M tokens → 2 micro-USD per token
    assert.equal(costMicros(prices, 'local', { prompt_tokens: 600, completion_tokens: 400 }), 2000);
    assert.equal(costMicros({ x: { gpu_hour_usd: 3.6, tokens_per_gpu_hour: 3600 } }, 'x', { prompt_tokens: 1, completion_tokens: 0 }), 1000);
  });
  test('unknown or null model, bogus counts cost 0', () => {
    assert.equal(costMicros(prices, 'nope', { prompt_tokens: 1000, completion_tokens: 1000 }), 0);
    assert.equal(costMicros(prices, null, { prompt_tokens: 1000, completion_tokens: 1000 }), 0);
    assert.equal(costMicros(prices, 'toString', { prompt_tokens: 1000, completion_tokens: 1000 }), 0, 'no prototype lookups');
    assert.equal(costMicros(prices, 'hosted', { prompt_tokens: -5, completion_tokens: Number.NaN }), 0);
  });
});

describe('countPromptTokens', () => {
  test('the count cache gives the same counts as counting, for repeated and for many distinct texts', () => {
    const texts = Array.from({ length: COUNT_CACHE_ENTRIES + 50 }, (_, i) => `message ${i}: ${'lorem ipsum '.repeat(i % 7)}${i % 3 === 0 ? '<|endoftext|>' : ''}`);
    const first = texts.map((t) => countPromptTokens({ messages: [{ role: 'user', content: t }] }, 'chat.completions'));
    // again, in another order: some hit the cache, the first 50 were evicted (least recently used)
    const again = [...texts].reverse().map((t) => countPromptTokens({ messages: [{ role: 'user', content: t }] }, 'chat.completions')).reverse();
    assert.deepEqual(again, first);
    // a text longer than the cache's limit is counted every time, and consistently
    const long = 'word '.repeat(COUNT_CACHE_MAX_CHARS / 5 + 10);
    const a = countPromptTokens({ prompt: long }, 'completions');
    assert.equal(countPromptTokens({ prompt: long }, 'completions'), a);
    assert.ok(a > COUNT_CACHE_MAX_CHARS / 5);
  });

  test('chat: message text, parts, names, tool calls, per-message overhead', () => {
    const one = countPromptTokens({ messages: [{ role: 'user', content: 'Hello world' }] }, 'chat.completions');
    assert.equal(one, 2 + 3 + 3, '"Hello world" is 2 tokens in o200k_base, +3 per message, +3 reply priming');
    const parts = countPromptTokens({ messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello world' }] }] }, 'chat.completions');
    assert.equal(parts, one);
    const withImage = countPromptTokens(
      { messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello world' }, { type: 'image_url', image_url: { url: 'data:…' } }] }] },
      'chat.completions',
    );
    assert.equal(withImage, one + 85);
    const tool = countPromptTokens(
      { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Kuala Lumpur"}' } }] }] },
      'chat.completions',
    );
    assert.ok(tool > 6 + 5, `tool call arguments counted (${tool})`);
    const tools = countPromptTokens(
      { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] },
      'chat.completions',
    );
    assert.ok(tools > countPromptTokens({ messages: [{ role: 'user', content: 'hi' }] }, 'chat.completions'));
  });
  test('special-token text is counted as text, never rejected', () => {
    assert.ok(countPromptTokens({ messages: [{ role: 'user', content: '<|endoftext|><|im_start|>' }] }, 'chat.completions') > 6);
  });
  test('completions, embeddings and responses shapes', () => {
    assert.equal(countPromptTokens({ prompt: 'Hello world' }, 'completions'), 2);
    assert.equal(countPromptTokens({ prompt: ['Hello world', 'Hello world'] }, 'completions'), 4);
    assert.equal(countPromptTokens({ prompt: [1, 2, 3] }, 'completions'), 3, 'token arrays count their length');
    assert.equal(countPromptTokens({ input: [[1, 2], [3]] }, 'embeddings'), 3);
    assert.equal(countPromptTokens({ input: 'Hello world' }, 'embeddings'), 2);
    assert.equal(countPromptTokens({ input: 'Hello world', instructions: 'Hello world' }, 'responses'), 4);
    assert.equal(countPromptTokens({ input: [{ role: 'user', content: [{ type: 'input_text', text: 'Hello world' }] }] }, 'responses'), 5);
  });
  test('malformed bodies count what they can and never throw', () => {
    assert.equal(countPromptTokens({}, 'chat.completions'), 3);
    assert.equal(countPromptTokens({ messages: 'x' }, 'chat.completions'), 3);
    assert.equal(countPromptTokens({ messages: [null, 5, { content: { a: 1 } }] }, 'chat.completions'), 6);
    assert.equal(countPromptTokens({ prompt: { a: 1 } }, 'completions'), 0);
  });
  test('fast for short prompts; huge prompts are bounded', () => {
    const body = { messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'What is the capital of Malaysia?' }] };
    countPromptTokens(body, 'chat.completions'); // warm-up (loads the encoding)
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) countPromptTokens(body, 'chat.completions');
    const perCall = (performance.now() - t0) / 1000;
    assert.ok(perCall < 0.5, `short prompt: ${perCall.toFixed(3)} ms per call`);
    const huge = 'The quick brown fox jumps over the lazy dog. '.repeat(100_000); // 4.5 M characters
    const t1 = performance.now();
    const n = countPromptTokens({ prompt: huge }, 'completions');
    const ms = performance.now() - t1;
    assert.ok(Math.abs(n - 1_000_000) < 20_000, `estimate close to the exact count (${n})`);
    assert.ok(ms < 2000, `bounded (${ms.toFixed(0)} ms)`);
  });
});

describe('reset format and periods', () => {
  test('OpenAI-style durations', () => {
    assert.equal(formatReset(1000), '1s');
    assert.equal(formatReset(59_500), '59.5s');
    assert.equal(formatReset(59_450), '59.5s', 'rounded up to 100 ms');
    assert.equal(formatReset(360_000), '6m0s');
    assert.equal(formatReset(3_723_000), '1h2m3s');
    assert.equal(formatReset(250), '250ms');
    assert.equal(formatReset(0), '0s');
    assert.equal(retryAfterSeconds(1), '1');
    assert.equal(retryAfterSeconds(0), '1');
    assert.equal(retryAfterSeconds(1500), '2');
  });
  test('reused texts (the last two) never differ from a fresh formatting, whatever the sequence', () => {
    // The documented format, written out independently of errors.ts.
    const reference = (ms: number): string => {
      if (!Number.isFinite(ms) || ms <= 0) return '0s';
      if (ms < 1000) return `${Math.ceil(ms)}ms`;
      const tenths = Math.ceil(ms / 100);
      const h = Math.floor(tenths / 36_000);
      const m = Math.floor((tenths % 36_000) / 600);
      const sec = (tenths % 600) / 10;
      const s = Number.isInteger(sec) ? String(sec) : sec.toFixed(1);
      return h > 0 ? `${h}h${m}m${s}s` : m > 0 ? `${m}m${s}s` : `${s}s`;
    };
    const rand = rng(7);
    const pool = [0, -5, NaN, Infinity, 0.4, 1, 999, 999.2, 1000, 1000.1, 59_901, 60_000, 3_599_999, 3_600_000, 86_400_000];
    let last: number[] = [];
    for (let i = 0; i < 5000; i++) {
      const pick = rand();
      // repeats of the last values, values in the same 100 ms, and fresh ones
      const ms = pick < 0.3 && last.length > 0 ? last[Math.floor(rand() * last.length)]! : pick < 0.5 ? (last[0] ?? 0) + rand() * 100 : pick < 0.6 ? pool[Math.floor(rand() * pool.length)]! : rand() * 4_000_000;
      last = [ms, ...last].slice(0, 3);
      assert.equal(formatReset(ms), reference(ms), `formatReset(${ms})`);
    }
  });
  test('UTC day and month boundaries', () => {
    const t = Date.UTC(2025, 0, 31, 23, 59, 59, 999);
    assert.equal(periodStart('day', t), Date.UTC(2025, 0, 31));
    assert.equal(nextPeriodStart('day', t), Date.UTC(2025, 1, 1));
    assert.equal(periodStart('month', t), Date.UTC(2025, 0, 1));
    assert.equal(nextPeriodStart('month', t), Date.UTC(2025, 1, 1));
    assert.equal(nextPeriodStart('month', Date.UTC(2024, 11, 15)), Date.UTC(2025, 0, 1), 'year rollover');
    assert.equal(periodStart('fixed', t), 0);
    assert.equal(nextPeriodStart('fixed', t), null);
  });
  test('the memo of the last period never answers for another one (back and forth across boundaries)', () => {
    const days = [Date.UTC(2025, 0, 31, 23, 59, 59, 999), Date.UTC(2025, 1, 1), Date.UTC(2025, 0, 31), Date.UTC(2024, 1, 29, 12), Date.UTC(2025, 1, 1) - 1, Date.UTC(2025, 1, 1)];
    for (const t of [...days, ...days.reverse()]) {
      const d = new Date(t);
      assert.equal(periodStart('day', t), Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()), new Date(t).toISOString());
      assert.equal(periodStart('month', t), Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), new Date(t).toISOString());
    }
  });
});

describe('config: metering section', () => {
  test('defaults, both price kinds, validation', () => {
    assert.deepEqual(configSchema.parse({}).metering, { default_max_tokens: 4096, prices: {} });
    const c = configSchema.parse({
      metering: {
        redis_url: 'rediss://cache:6380/0',
        default_max_tokens: 1024,
        prices: { a: { input_per_1m_usd: 1, output_per_1m_usd: 2 }, b: { gpu_hour_usd: 2.5, tokens_per_gpu_hour: 90000 } },
      },
    });
    assert.equal(c.metering.default_max_tokens, 1024);
    assert.equal(costMicros(c.metering.prices, 'b', { prompt_tokens: 90_000, completion_tokens: 0 }), 2_500_000);
    for (const bad of [
      { redis_url: 'http://x' },
      { default_max_tokens: 1.5 },
      { prices: { a: { input_per_1m_usd: -1, output_per_1m_usd: 0 } } },
      { prices: { a: { gpu_hour_usd: 1, tokens_per_gpu_hour: 0 } } },
      { prices: { a: { input_per_1m_usd: 1 } } },
      { unknown: 1 },
    ]) {
      assert.equal(configSchema.safeParse({ metering: bad }).success, false, JSON.stringify(bad));
    }
  });
});

function row(i: number, over: Partial<RequestsTable>): RequestsTable {
  return normalise({
    id: `req_${i}_${randomBytes(4).toString('hex')}`, ts: 0, key_id: 'key_a', tenant_id: 'ten_a', operation: 'chat.completions',
    model: 'm1', backend_id: 'b', upstream_model: 'u', stream: 0, status: 200, outcome: 'ok', error_code: null, latency_ms: 5,
    ttfb_ms: 1, prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, usage_source: 'upstream', cost_micros: 100, ...over,
  });
}

const backends: Array<{ name: string; skip: string | false; open(): Promise<{ store: Store; cleanup(): Promise<void> }> }> = [
  {
    name: 'SQLite',
    skip: false,
    async open() {
      const store = await openStore(`sqlite:${join(tmpRoot, `u-${randomBytes(4).toString('hex')}.db`)}`);
      await store.migrate();
      return { store, cleanup: () => store.close() };
    },
  },
  {
    name: 'PostgreSQL',
    skip: PG ? false : 'SOVRA_TEST_POSTGRES_URL not set',
    async open() {
      const schema = `metering_test_${randomBytes(6).toString('hex')}`;
      const store = await openStore(PG!, { pgSchema: schema });
      await store.migrate();
      return {
        store,
        async cleanup() {
          await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(store.db);
          await store.close();
        },
      };
    },
  },
];

for (const be of backends) {
  describe(`storage and usage on ${be.name}`, { skip: be.skip }, () => {
    test('limits: set returns before/after, get, list with filters, null/null removes', async () => {
      const { store, cleanup } = await be.open();
      try {
        const now = Date.now();
        await store.db.insertInto('tenants').values({ id: 'ten_a', name: 'a', created_at: now }).execute();
        await store.db.insertInto('api_keys').values({ id: 'key_a', tenant_id: 'ten_a', name: null, digest: 'd1', prefix: 'p', created_at: now, revoked_at: null }).execute();
        const t = { kind: 'tenant' as const, id: 'ten_a' };
        const k = { kind: 'key' as const, id: 'key_a' };
        assert.deepEqual(await getLimits(store, t), { rpm: null, tpm: null });
        assert.deepEqual(await setLimits(store, t, { rpm: 60, tpm: null }), { before: { rpm: null, tpm: null }, after: { rpm: 60, tpm: null } });
        assert.deepEqual(await setLimits(store, t, { rpm: 30, tpm: 10_000 }), { before: { rpm: 60, tpm: null }, after: { rpm: 30, tpm: 10_000 } });
        await setLimits(store, k, { rpm: 5, tpm: null });
        await setLimits(store, { kind: 'key', id: 'key_other' }, { rpm: 1, tpm: 1 });
        assert.deepEqual(await getLimits(store, t), { rpm: 30, tpm: 10_000 });
        assert.equal((await listLimits(store)).length, 3);
        assert.deepEqual(
          (await listLimits(store, { tenantId: 'ten_a' })).map((l) => `${l.scope.kind}:${l.scope.id}`),
          ['key:key_a', 'tenant:ten_a'],
          "the tenant's own limits and its keys'",
        );
        assert.deepEqual((await listLimits(store, { keyIds: ['key_other'] })).map((l) => l.scope.id), ['key_other']);
        assert.deepEqual(await listLimits(store, { keyIds: [] }), []);
        assert.deepEqual(await setLimits(store, k, { rpm: null, tpm: null }), { before: { rpm: 5, tpm: null }, after: { rpm: null, tpm: null } });
        assert.equal((await listLimits(store)).length, 2);
        await assert.rejects(setLimits(store, k, { rpm: -1, tpm: null }), RangeError);
        await assert.rejects(setLimits(store, k, { rpm: 1.5, tpm: null }), RangeError);
        await assert.rejects(setLimits(store, { kind: 'user' as never, id: 'x' }, { rpm: 1, tpm: null }), TypeError);
      } finally {
        await cleanup();
      }
    });

    test('budgets: create, list with state, delete', async () => {
      const { store, cleanup } = await be.open();
      try {
        const a = await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 1000, period: 'day' });
        const b = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_a' }, unit: 'usd_micros', amount: 5_000_000_000_000, period: 'month' });
        assert.match(a.id, /^bud_[0-9A-Za-z]{16}$/);
        const now = Date.UTC(2025, 5, 15, 12);
        await store.db.insertInto('budget_usage').values({ budget_id: a.id, period_start: Date.UTC(2025, 5, 15), used: 10, reserved: 20 }).execute();
        await store.db.insertInto('budget_usage').values({ budget_id: a.id, period_start: Date.UTC(2025, 5, 14), used: 999, reserved: 0 }).execute();
        const all = await listBudgets(store, {}, now);
        assert.equal(all.length, 2);
        const sa = all.find((x) => x.id === a.id)!;
        assert.deepEqual({ used: sa.used, reserved: sa.reserved, periodStart: sa.periodStart }, { used: 10, reserved: 20, periodStart: Date.UTC(2025, 5, 15) });
        const sb = all.find((x) => x.id === b.id)!;
        assert.deepEqual({ used: sb.used, reserved: sb.reserved, amount: sb.amount }, { used: 0, reserved: 0, amount: 5_000_000_000_000 }, 'amounts beyond 2^32 survive');
        assert.deepEqual((await listBudgets(store, { scopes: [{ kind: 'tenant', id: 'ten_a' }] }, now)).map((x) => x.id), [b.id]);
        assert.deepEqual(await listBudgets(store, { scopes: [] }, now), []);
        assert.deepEqual(await deleteBudget(store, a.id), a);
        assert.equal(await deleteBudget(store, a.id), null);
        assert.equal((await store.db.selectFrom('budget_usage').selectAll().where('budget_id', '=', a.id).execute()).length, 0);
        await assert.rejects(createBudget(store, { scope: { kind: 'key', id: 'k' }, unit: 'tokens', amount: -1, period: 'day' }), RangeError);
        await assert.rejects(createBudget(store, { scope: { kind: 'key', id: 'k' }, unit: 'eur' as never, amount: 1, period: 'day' }), TypeError);
        await assert.rejects(createBudget(store, { scope: { kind: 'key', id: 'k' }, unit: 'tokens', amount: 1, period: 'week' as never }), TypeError);
      } finally {
        await cleanup();
      }
    });

    test('usage rollups by hour/day/none with filters; cost_micros written by the journal columns; CSV', async () => {
      const { store, cleanup } = await be.open();
      try {
        const h = 3_600_000;
        const d0 = Date.UTC(2025, 5, 1);
        const rows = [
          row(1, { ts: d0 + 10 * h + 5 }),
          row(2, { ts: d0 + 10 * h + 59 * 60_000, prompt_tokens: 20, completion_tokens: 10, total_tokens: 30, cost_micros: 250 }),
          row(3, { ts: d0 + 11 * h, status: 502, outcome: 'upstream_unavailable', prompt_tokens: null, completion_tokens: null, total_tokens: null, cost_micros: null, usage_source: 'none' }),
          row(4, { ts: d0 + 24 * h + 1, model: 'm2' }),
          row(5, { ts: d0 + 10 * h, key_id: 'key_b', tenant_id: 'ten_b', model: '=HYPERLINK("x")' }),
        ];
        await store.db.insertInto('requests').values(rows).execute();

        const none = await queryUsage(store, { tenantId: 'ten_a' });
        assert.deepEqual(none, [
          { bucket: null, tenant_id: 'ten_a', key_id: 'key_a', model: 'm1', requests: 3, prompt_tokens: 30, completion_tokens: 15, total_tokens: 45, cost_micros: 350, errors: 1 },
          { bucket: null, tenant_id: 'ten_a', key_id: 'key_a', model: 'm2', requests: 1, prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, cost_micros: 100, errors: 0 },
        ]);
        const hourly = await queryUsage(store, { tenantId: 'ten_a', model: 'm1', groupBy: 'hour' });
        assert.deepEqual(hourly.map((r) => [r.bucket, r.requests, r.total_tokens, r.errors]), [[d0 + 10 * h, 2, 45, 0], [d0 + 11 * h, 1, 0, 1]]);
        const daily = await queryUsage(store, { keyId: 'key_a', groupBy: 'day' });
        assert.deepEqual(daily.map((r) => [r.bucket, r.model, r.requests]), [[d0, 'm1', 3], [d0 + 24 * h, 'm2', 1]]);
        const window = await queryUsage(store, { from: d0 + 10 * h + 1, to: d0 + 11 * h, groupBy: 'none' });
        assert.deepEqual(window.map((r) => r.requests), [2], 'from inclusive, to exclusive (row 5 at exactly 10:00 is out)');
        assert.deepEqual(await queryUsage(store, { tenantId: 'nobody' }), []);

        const csv = usageCsv(await queryUsage(store, { groupBy: 'day' }));
        const lines = csv.trimEnd().split('\n');
        assert.equal(lines[0], 'bucket,tenant_id,key_id,model,requests,prompt_tokens,completion_tokens,total_tokens,cost_micros,errors');
        assert.equal(lines[1], "2025-06-01T00:00:00.000Z,ten_a,key_a,m1,3,30,15,45,350,1");
        assert.ok(lines.includes(`2025-06-01T00:00:00.000Z,ten_b,key_b,"'=HYPERLINK(""x"")",1,10,5,15,100,0`), 'formula cells neutralised and quoted');
        assert.equal(lines.length, 4);
        assert.equal(usageCsv(none).split('\n')[1]!.startsWith(',ten_a,'), true, 'null bucket is an empty cell');
      } finally {
        await cleanup();
      }
    });
  });
}
