/**
 * Rate limits: RPM and TPM per key and tenant with the in-memory limiter, OpenAI's x-ratelimit-*
 * headers, refusals that consume nothing, TPM correction on settle; the Redis limiter shared by two
 * Metering instances (SOVRA_TEST_REDIS_URL; skipped when unset) and the memory fallback when Redis
 * is unreachable.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Store } from '../src/store/db.ts';
import { Metering, MeteringError, createBudget, deleteBudget, setLimits } from '../src/metering/index.ts';
import { migratedSqliteStore } from './helpers/store-backends.ts';

const REDIS = process.env['SOVRA_TEST_REDIS_URL'];
const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-metering-rl-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const sqliteStore = (): Promise<Store> => migratedSqliteStore(tmpRoot);

const REQ = { tenantId: 'ten_a', keyId: 'key_a', model: 'm', promptTokens: 10, maxTokens: 10 } as const;
const refusal = (code: string) => (e: unknown) => e instanceof MeteringError && e.code === code;

async function withMetering(fn: (store: Store, m: Metering) => Promise<void>, opts: { redisUrl?: string; keyPrefix?: string } = {}): Promise<void> {
  const store = await sqliteStore();
  const m = new Metering(store, { prices: {}, defaultMaxTokens: 50, keyPrefix: `t${randomBytes(6).toString('hex')}`, ...opts });
  try {
    await fn(store, m);
  } finally {
    await m.close();
    await store.close();
  }
}

describe('rate limits in memory', () => {
  test('RPM per key: headers count down, the next request gets a 429 with retry-after', () =>
    withMetering(async (store, m) => {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 3, tpm: null });
      const got = [];
      for (let i = 0; i < 3; i++) got.push((await m.admit(REQ)).headers);
      assert.deepEqual(got.map((h) => h['x-ratelimit-remaining-requests']), ['2', '1', '0']);
      assert.equal(got[0]!['x-ratelimit-limit-requests'], '3');
      assert.match(got[0]!['x-ratelimit-reset-requests']!, /^(\d+(\.\d)?s|\d+ms|1m0s)$/);
      assert.equal(got[0]!['x-ratelimit-limit-tokens'], undefined, 'no TPM limit, no token headers');
      const err = await m.admit(REQ).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof MeteringError);
      assert.equal(err.status, 429);
      assert.equal(err.code, 'rate_limit_exceeded');
      assert.equal(err.message, `Rate limit reached for key: 3 requests per minute. Retry after ${err.headers['retry-after']}s.`);
      const ra = Number(err.headers['retry-after']);
      assert.ok(Number.isInteger(ra) && ra >= 1 && ra <= 60, `retry-after ${ra}`);
      assert.equal(err.headers['x-ratelimit-remaining-requests'], '0');
      // another key of the tenant is not limited by key_a's limit
      assert.deepEqual((await m.admit({ ...REQ, keyId: 'key_b' })).headers, {});
    }));

  test('the tightest scope sets the headers; a tenant limit holds all its keys', () =>
    withMetering(async (store, m) => {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 100, tpm: 10_000 });
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 2, tpm: 1_000_000 });
      const h = (await m.admit(REQ)).headers;
      assert.equal(h['x-ratelimit-limit-requests'], '2');
      assert.equal(h['x-ratelimit-remaining-requests'], '1');
      assert.equal(h['x-ratelimit-limit-tokens'], '10000');
      assert.equal(h['x-ratelimit-remaining-tokens'], String(10_000 - 20));
      await m.admit({ ...REQ, keyId: 'key_b' });
      await assert.rejects(m.admit({ ...REQ, keyId: 'key_c' }), (e: unknown) => e instanceof MeteringError && /tenant: 2 requests per minute/.test(e.message));
    }));

  test('TPM: the worst case is charged, a refused request consumes nothing, settle corrects by the difference', () =>
    withMetering(async (store, m) => {
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: null, tpm: 100 });
      const a = await m.admit({ ...REQ, promptTokens: 10, maxTokens: 50 }); // 60
      assert.equal(a.headers['x-ratelimit-remaining-tokens'], '40');
      assert.equal(a.reservedCompletionTokens, 50);
      const err = await m.admit({ ...REQ, promptTokens: 10, maxTokens: 50 }).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof MeteringError);
      assert.equal(err.code, 'tokens_rate_limit_exceeded');
      assert.equal(err.headers['x-ratelimit-remaining-tokens'], '40', 'the refused 60 were given back');
      assert.ok(Number(err.headers['retry-after']) >= 1);
      const b = await m.admit({ ...REQ, promptTokens: 10, maxTokens: 30 }); // 40: fits exactly
      assert.equal(b.headers['x-ratelimit-remaining-tokens'], '0');
      await m.settle(a, { prompt_tokens: 10, completion_tokens: 5 }); // 60 → 15: 45 back
      await m.settle(a, { prompt_tokens: 10, completion_tokens: 5 }); // idempotent
      const c = await m.admit({ ...REQ, promptTokens: 5, maxTokens: 40 });
      assert.equal(c.headers['x-ratelimit-remaining-tokens'], '0');
      // bigger than the limit itself
      await assert.rejects(m.admit({ ...REQ, promptTokens: 10, maxTokens: 1000 }), (e: unknown) =>
        e instanceof MeteringError && /key: 100 tokens per minute; this request needs up to 1010 tokens/.test(e.message));
    }));

  test('a budget refusal gives the RPM/TPM consumption back', () =>
    withMetering(async (store, m) => {
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 2, tpm: 1000 });
      const b = await createBudget(store, { scope: { kind: 'key', id: 'key_a' }, unit: 'tokens', amount: 0, period: 'fixed' });
      for (let i = 0; i < 5; i++) {
        const err = await m.admit(REQ).then(() => null, (e: unknown) => e);
        assert.ok(err instanceof MeteringError && err.code === 'budget_exceeded');
        assert.equal(err.headers['x-ratelimit-remaining-requests'], '2');
        assert.equal(err.headers['retry-after'], undefined);
      }
      await deleteBudget(store, b.id);
      m.invalidate();
      assert.equal((await m.admit(REQ)).headers['x-ratelimit-remaining-requests'], '1');
      assert.equal((await m.admit(REQ)).headers['x-ratelimit-remaining-requests'], '0');
      await assert.rejects(m.admit(REQ), refusal('rate_limit_exceeded'));
    }));

  test('RPM 0 blocks; concurrency: 100 concurrent requests against RPM 10 admit exactly 10', () =>
    withMetering(async (store, m) => {
      await setLimits(store, { kind: 'key', id: 'key_z' }, { rpm: 0, tpm: null });
      await assert.rejects(m.admit({ ...REQ, keyId: 'key_z' }), refusal('rate_limit_exceeded'));
      await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 10, tpm: null });
      const res = await Promise.allSettled(Array.from({ length: 100 }, () => m.admit(REQ)));
      assert.equal(res.filter((r) => r.status === 'fulfilled').length, 10);
    }));

  test('Redis unreachable: the per-process memory limiter stands in', { timeout: 20_000 }, () =>
    withMetering(
      async (store, m) => {
        await setLimits(store, { kind: 'key', id: 'key_a' }, { rpm: 2, tpm: null });
        await m.admit(REQ);
        await m.admit(REQ);
        await assert.rejects(m.admit(REQ), refusal('rate_limit_exceeded'));
      },
      { redisUrl: 'redis://127.0.0.1:1' },
    ));
});

describe('rate limits in Redis', { skip: REDIS ? false : 'SOVRA_TEST_REDIS_URL not set' }, () => {
  test('two Metering instances (two nodes) share RPM and TPM counters', async () => {
    const keyPrefix = `sovra-test-${randomBytes(6).toString('hex')}`;
    const store = await sqliteStore();
    const m1 = new Metering(store, { redisUrl: REDIS!, prices: {}, defaultMaxTokens: 50, keyPrefix });
    const m2 = new Metering(store, { redisUrl: REDIS!, prices: {}, defaultMaxTokens: 50, keyPrefix });
    const redis = new Redis(REDIS!);
    try {
      await setLimits(store, { kind: 'tenant', id: 'ten_a' }, { rpm: 5, tpm: null });
      const statuses: string[] = [];
      for (let i = 0; i < 10; i++) {
        statuses.push(await (i % 2 ? m2 : m1).admit({ ...REQ, keyId: `key_${i}` }).then((a) => a.headers['x-ratelimit-remaining-requests']!, (e: unknown) => (e as MeteringError).code));
      }
      assert.deepEqual(statuses, ['4', '3', '2', '1', '0', ...Array(5).fill('rate_limit_exceeded')]);
      // concurrently too: a fresh scope, 60 requests over both instances, RPM 20
      await setLimits(store, { kind: 'tenant', id: 'ten_b' }, { rpm: 20, tpm: null });
      const res = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => (i % 2 ? m2 : m1).admit({ ...REQ, tenantId: 'ten_b', keyId: 'key_b' })));
      assert.equal(res.filter((r) => r.status === 'fulfilled').length, 20);
      // TPM with a correction made by the other node's settle
      await setLimits(store, { kind: 'key', id: 'key_t' }, { rpm: null, tpm: 100 });
      const a = await m1.admit({ ...REQ, keyId: 'key_t', tenantId: 'ten_t', promptTokens: 10, maxTokens: 90 });
      await assert.rejects(m2.admit({ ...REQ, keyId: 'key_t', tenantId: 'ten_t', promptTokens: 1, maxTokens: 1 }), refusal('tokens_rate_limit_exceeded'));
      await m1.settle(a, { prompt_tokens: 10, completion_tokens: 10 });
      const b = await m2.admit({ ...REQ, keyId: 'key_t', tenantId: 'ten_t', promptTokens: 10, maxTokens: 70 });
      assert.equal(b.headers['x-ratelimit-remaining-tokens'], '0');
      const keys = await redis.keys(`${keyPrefix}:*`);
      assert.ok(keys.length >= 3, `counters live in Redis under the prefix (${keys.join(', ')})`);
    } finally {
      const keys = await redis.keys(`${keyPrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await m1.close();
      await m2.close();
      await store.close();
    }
  });
});
