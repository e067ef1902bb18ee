/**
 * Adversarial test (PostgreSQL, runs when SOVRA_TEST_POSTGRES_URL is set): one upstream answer with an
 * out-of-range usage value must not cost other requests their records.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatCompletion, jsonResponse, startMockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway } from './helpers/gateway.ts';

const pg = process.env['SOVRA_TEST_POSTGRES_URL'];

test('usage of 3e9 tokens from one upstream answer does not drop the batch of 20 records', { skip: !pg && 'SOVRA_TEST_POSTGRES_URL not set' }, async () => {
  // forward.ts:137-139 take any number; requests.prompt_tokens is `integer` (int4) on PostgreSQL, so the
  // INSERT used to fail and take the whole batch of records with it (now: bogus usage is ignored, and the journal retries rows one by one).
  let i = 0;
  const mock = await startMockUpstream({
    handler: () =>
      i++ === 5
        ? jsonResponse(200, '{"choices":[],"usage":{"prompt_tokens":3000000000,"completion_tokens":1,"total_tokens":3000000001}}')
        : jsonResponse(200, chatCompletion()),
  });
  const g = await startGateway({ config: mockConfig(mock.url), env: MOCK_ENV, postgres: true });
  try {
    const rs = await Promise.all(
      Array.from({ length: 20 }, () =>
        rawRequest(`${g.baseURL}/chat/completions`, {
          headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
          json: { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] },
        }),
      ),
    );
    assert.ok(rs.every((r) => r.status === 200));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await g.records()).length, 20, g.logs().filter((l) => l.includes('dropped')).join('\n'));
  } finally {
    await g.close();
    await mock.close();
  }
});
