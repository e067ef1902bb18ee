/**
 * The checks that keep a bad usage report or request row out of the audit queue, where it would meet
 * its column types only at integration (`src/audit/queued-rows.ts`): `readUsage` ignores a report
 * whose counts or their sum exceed `MAX_REPORTED_TOKENS`, and `normalise` refuses a row that its
 * table would refuse.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_REPORTED_TOKENS, readUsage } from '../src/pipeline/forward.ts';
import { normalise } from '../src/store/requests.ts';
import type { RequestsTable } from '../src/store/schema.ts';

const row = (over: Partial<RequestsTable> = {}): RequestsTable => ({
  id: 'r1', ts: 1_750_000_000_000, key_id: 'k', tenant_id: 't', operation: 'chat.completions', model: 'm', backend_id: 'b',
  upstream_model: null, stream: 0, status: 200, outcome: 'ok', error_code: null, latency_ms: 3, ttfb_ms: null,
  prompt_tokens: 1, completion_tokens: 2, total_tokens: 3, usage_source: 'upstream', cost_micros: null, ...over,
});

describe('readUsage', () => {
  test('the sum of two valid counts beyond the limit is a bogus report (ignored), at the limit it is kept', () => {
    const half = MAX_REPORTED_TOKENS / 2;
    assert.equal(readUsage({ usage: { prompt_tokens: MAX_REPORTED_TOKENS, completion_tokens: MAX_REPORTED_TOKENS } }), null);
    assert.equal(readUsage({ usage: { prompt_tokens: half, completion_tokens: half + 1 } }), null);
    assert.deepEqual(readUsage({ usage: { prompt_tokens: half, completion_tokens: half } }), { prompt_tokens: half, completion_tokens: half, total_tokens: MAX_REPORTED_TOKENS });
    assert.deepEqual(readUsage({ usage: { prompt_tokens: 5, completion_tokens: 7 } }), { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 });
  });
});

describe('normalise (request rows)', () => {
  test('rounds and fills as before', () => {
    const n = normalise(row({ latency_ms: 2.6, stream: 1, ts: 1.4, key_id: undefined as unknown as null }));
    assert.equal(n.latency_ms, 3);
    assert.equal(n.ts, 1);
    assert.equal(n.key_id, null);
    assert.equal(n.stream, 1);
  });
  test('refuses integers that do not fit their column, and missing required values', () => {
    assert.throws(() => normalise(row({ total_tokens: 2 ** 31 })), /total_tokens = 2147483648 does not fit its integer column/);
    assert.equal(normalise(row({ total_tokens: 2 ** 31 - 1 })).total_tokens, 2 ** 31 - 1, 'int4 max fits');
    assert.throws(() => normalise(row({ status: -(2 ** 31) - 1 })), RangeError);
    assert.throws(() => normalise(row({ cost_micros: 2 ** 53 })), /cost_micros .* bigint/);
    assert.equal(normalise(row({ cost_micros: 2 ** 53 - 1 })).cost_micros, 2 ** 53 - 1);
    assert.throws(() => normalise(row({ latency_ms: Number.NaN })), RangeError);
    assert.throws(() => normalise(row({ operation: undefined as unknown as string })), /operation must be a string/);
    assert.throws(() => normalise(row({ usage_source: 5 as unknown as string })), TypeError);
    assert.equal(normalise(row({ ttfb_ms: Number.NaN })).ttfb_ms, null, 'an optional non-finite number is null, as before');
  });
});
