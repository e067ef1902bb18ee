/**
 * Adversarial tests: configuration that silently breaks a README guarantee ("The client's gateway key,
 * cookies, Proxy-* and hop-by-hop headers never reach it"). A failing test is a reproduced defect.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatCompletion, jsonResponse, startMockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway } from './helpers/gateway.ts';

test('forward_headers cannot forward the gateway key, cookies or Proxy-* upstream (config refused, or headers dropped)', async () => {
  // config/schema.ts:75 accepts any header name; provider.ts spreads c.forwarded into the upstream headers.
  const mock = await startMockUpstream({ handler: () => jsonResponse(200, chatCompletion()) });
  let g;
  try {
    g = await startGateway({ config: mockConfig(mock.url, { api_key_env: undefined, forward_headers: ['authorization', 'cookie', 'proxy-authorization'] }), env: {} });
  } catch (err) {
    await mock.close();
    assert.match((err as Error).message, /forward_headers/); // refusing the configuration is an acceptable fix
    return;
  }
  try {
    const r = await rawRequest(`${g.baseURL}/chat/completions`, {
      headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json', cookie: 'sess=1', 'proxy-authorization': 'Basic eDp5' },
      json: { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(r.status, 200);
    const up = mock.requests[0]!;
    assert.equal(up.text().length > 0, true);
    assert.equal(JSON.stringify(up.headers).includes(g.key), false, 'the client\'s gateway key reached the upstream');
    assert.deepEqual(up.headerValues('cookie'), []);
    assert.deepEqual(up.headerValues('proxy-authorization'), []);
  } finally {
    await g.close();
    await mock.close();
  }
});

test('forward_headers naming a framing header (content-length) does not break every request', async () => {
  const mock = await startMockUpstream({ handler: () => jsonResponse(200, chatCompletion()) });
  let g;
  try {
    g = await startGateway({ config: mockConfig(mock.url, { forward_headers: ['content-length'] }), env: MOCK_ENV });
  } catch (err) {
    await mock.close();
    assert.match((err as Error).message, /forward_headers/); // refusing the configuration is an acceptable fix
    return;
  }
  try {
    const r = await rawRequest(`${g.baseURL}/chat/completions`, {
      headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
      json: { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(r.status, 200, r.text());
  } finally {
    await g.close();
    await mock.close();
  }
});
