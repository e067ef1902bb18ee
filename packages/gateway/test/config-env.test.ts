/**
 * A backend whose api_key_env names an unset variable does not stop the gateway: it is reported by
 * /readyz, its models answer 503 backend_not_ready (without server details), the others serve.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatCompletion, jsonResponse, startMockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { startGateway } from './helpers/gateway.ts';

test('an unset api_key_env makes only that backend unavailable', async () => {
  const mock = await startMockUpstream({ handler: () => jsonResponse(200, chatCompletion({ content: 'fine' })) });
  const g = await startGateway({
    config: {
      backends: [
        { id: 'keyed', provider: 'openai-compatible', base_url: mock.url, api_key_env: 'SOVRA_TEST_SURELY_UNSET_VAR' },
        { id: 'open', provider: 'openai-compatible', base_url: mock.url },
      ],
      models: [
        { name: 'needs-key', backend: 'keyed' },
        { name: 'free', backend: 'open' },
      ],
    },
    env: {},
  });
  try {
    const auth = { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' };
    const bad = await rawRequest(`${g.baseURL}/chat/completions`, { headers: auth, json: { model: 'needs-key', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(bad.status, 503);
    const e = (bad.json() as { error: { code: string; message: string } }).error;
    assert.equal(e.code, 'backend_not_ready');
    assert.ok(!e.message.includes('SOVRA_TEST_SURELY_UNSET_VAR'), 'operator details stay in /readyz and the log');
    const ready = await rawRequest(`${g.origin}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(ready.text(), /SOVRA_TEST_SURELY_UNSET_VAR/);
    const ok = await rawRequest(`${g.baseURL}/chat/completions`, { headers: auth, json: { model: 'free', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(ok.status, 200);
    assert.equal(mock.requests.length, 1);
  } finally {
    await g.close();
    await mock.close();
  }
});
