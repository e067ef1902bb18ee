/**
 * The same data-plane path on PostgreSQL (runs when SOVRA_TEST_POSTGRES_URL is set; `.ci/run` sets it
 * when the local server answers): migrations on start, key authentication, request records.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { CH, EV, DONE, chatCompletion, jsonResponse, startMockUpstream, type MockUpstream } from './helpers/mock-upstream.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';

const pg = process.env['SOVRA_TEST_POSTGRES_URL'];
let mock: MockUpstream;
let g: TestGateway;

before(async () => {
  if (!pg) return;
  mock = await startMockUpstream();
  g = await startGateway({ config: mockConfig(mock.url), env: MOCK_ENV, postgres: true });
});
after(async () => {
  await g?.close();
  await mock?.close();
});

test('on PostgreSQL: keys authenticate, requests are served and recorded with usage', { skip: !pg && 'SOVRA_TEST_POSTGRES_URL not set' }, async () => {
  assert.equal(g.gw.store().dialect, 'postgres');
  const client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
  mock.enqueue(jsonResponse(200, chatCompletion({ content: 'pg ok', usage: { prompt_tokens: 4, completion_tokens: 2 } })));
  const c = await client.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(c.choices[0]!.message.content, 'pg ok');
  mock.enqueue({
    status: 200,
    headers: { 'content-type': 'text/event-stream' },
    writes: [
      { text: EV(CH('"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]')) },
      { text: EV(CH('"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}')) },
      { text: DONE },
    ],
  });
  for await (const _ of await client.chat.completions.create({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] })) void _;
  await assert.rejects(new OpenAI({ apiKey: 'sk-sovra-nope', baseURL: g.baseURL, maxRetries: 0 }).models.list());
  const recs = await g.records();
  const served = recs.filter((r) => r.status === 200);
  assert.equal(served.length, 2);
  assert.deepEqual(served.map((r) => r.total_tokens), [6, 4]);
  assert.ok(served.every((r) => r.key_id === g.keyId && typeof r.ts === 'number'));
});
