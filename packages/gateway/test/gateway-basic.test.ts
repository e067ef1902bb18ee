/**
 * The gateway's data plane end to end with the official openai SDK as the client, in front of a
 * scripted mock upstream: chat (non-stream and stream), completions, embeddings, models, health,
 * request records, and bad input (each answered in OpenAI's error shape while the server keeps serving).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { CH, EV, DONE, jsonResponse, startMockUpstream, type MockUpstream, chatCompletion } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';

let mock: MockUpstream;
let g: TestGateway;
let client: OpenAI;

before(async () => {
  mock = await startMockUpstream();
  g = await startGateway({ config: mockConfig(mock.url), env: MOCK_ENV });
  client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
});
after(async () => {
  await g?.close();
  await mock?.close();
});

const sseHeaders = { 'content-type': 'text/event-stream; charset=utf-8' };

describe('data plane through the openai SDK', () => {
  test('non-streaming chat completion is relayed byte-exact and recorded with usage', async () => {
    const body = chatCompletion({ content: 'Hello there', usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 } });
    mock.enqueue(jsonResponse(200, body));
    const { data, response } = await client.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: 'Hi' }] }).withResponse();
    assert.equal(data.choices[0]!.message.content, 'Hello there');
    assert.deepEqual(data.usage, { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 });
    const reqId = response.headers.get('x-request-id')!;
    assert.match(reqId, /^[0-9a-f-]{36}$/);
    const sent = mock.requests.at(-1)!.json() as Record<string, unknown>;
    assert.equal(sent['model'], 'mock-llm');
    const rec = await g.record(reqId);
    assert.equal(rec.status, 200);
    assert.equal(rec.outcome, 'ok');
    assert.equal(rec.model, 'test-model');
    assert.equal(rec.backend_id, 'mock');
    assert.equal(rec.upstream_model, 'mock-llm');
    assert.equal(rec.key_id, g.keyId);
    assert.equal(rec.total_tokens, 9);
    assert.equal(rec.usage_source, 'upstream');
  });

  test('streaming chat completion arrives chunk by chunk with usage stripped for a client that did not ask', async () => {
    mock.enqueue({
      status: 200,
      headers: sseHeaders,
      writes: [
        { text: EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}],"usage":null')) },
        { text: EV(CH('"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null')) },
        { text: EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null')) },
        { text: EV(CH('"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}')) },
        { text: DONE },
      ],
    });
    const stream = await client.chat.completions.create({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Hi' }] });
    let text = '';
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      assert.ok(Array.isArray(c.choices) && c.choices.length === 1, 'no usage-only chunk reaches this client');
      text += c.choices[0]!.delta.content ?? '';
    }
    assert.equal(text, 'Hello');
    assert.equal(chunks, 3);
    const sent = mock.requests.at(-1)!.json() as Record<string, unknown>;
    assert.deepEqual(sent['stream_options'], { include_usage: true }, 'Sovra asks the upstream for usage');
    const recs = await g.records();
    const rec = recs.at(-1)!;
    assert.equal(rec.total_tokens, 5);
    assert.equal(rec.stream, 1);
  });

  test('completions and embeddings pass through', async () => {
    mock.enqueue(jsonResponse(200, { id: 'cmpl-1', object: 'text_completion', created: 1, model: 'mock-llm', choices: [{ index: 0, text: ' world', finish_reason: 'stop', logprobs: null }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
    const c = await client.completions.create({ model: 'test-model', prompt: 'hello' });
    assert.equal(c.choices[0]!.text, ' world');
    assert.equal(mock.requests.at(-1)!.path, '/v1/completions');
    mock.enqueue(jsonResponse(200, { object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.5, -0.25] }], model: 'mock-llm', usage: { prompt_tokens: 2, total_tokens: 2 } }));
    const e = await client.embeddings.create({ model: 'test-model', input: 'hello', encoding_format: 'float' });
    assert.deepEqual(e.data[0]!.embedding, [0.5, -0.25]);
    assert.equal(mock.requests.at(-1)!.path, '/v1/embeddings');
  });

  test('models lists the configured aliases', async () => {
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id), ['test-model']);
    const one = await client.models.retrieve('test-model');
    assert.equal(one.id, 'test-model');
    await assert.rejects(client.models.retrieve('nope'), (e: unknown) => e instanceof OpenAI.NotFoundError);
  });

  test('healthz and readyz', async () => {
    assert.equal((await rawRequest(`${g.origin}/healthz`)).status, 200);
    const r = await rawRequest(`${g.origin}/readyz`);
    assert.equal(r.status, 200);
    assert.equal((r.json() as { status: string }).status, 'ready');
  });
});

function assertOpenAiError(r: { status: number; json(): unknown; headers: Record<string, unknown> }, status: number, code: string | null, param?: string | null) {
  assert.equal(r.status, status);
  assert.match(String(r.headers['content-type']), /application\/json/);
  const body = r.json() as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof body.error['message'], 'string');
  assert.ok((body.error['message'] as string).length > 0);
  assert.equal(body.error['code'], code);
  if (param !== undefined) assert.equal(body.error['param'], param);
}

describe('bad input gets an OpenAI-shaped error and the server keeps serving', () => {
  const url = () => `${g.baseURL}/chat/completions`;
  const auth = () => ({ authorization: `Bearer ${g.key}`, 'content-type': 'application/json' });

  test('malformed JSON → 400 invalid_json', async () => {
    const r = await rawRequest(url(), { headers: auth(), body: '{"model":"test-model","messages":[' });
    assertOpenAiError(r, 400, 'invalid_json', null);
  });
  test('wrong types → 400 naming the field', async () => {
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: { model: 'test-model', messages: 'hi' } }), 400, 'invalid_type', 'messages');
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: { model: 'test-model', messages: [{ role: 'user', content: 'x' }], stream: 'yes' } }), 400, 'invalid_type', 'stream');
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: { model: 42, messages: [] } }), 400, 'invalid_type', 'model');
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: { model: 'test-model', messages: [{ content: 'x' }] } }), 400, 'invalid_type', 'messages[0].role');
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: [1, 2] }), 400, 'invalid_json');
  });
  test('missing model → 400; unknown model → 404 model_not_found', async () => {
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: { messages: [{ role: 'user', content: 'x' }] } }), 400, 'missing_required_parameter', 'model');
    assertOpenAiError(await rawRequest(url(), { headers: auth(), json: { model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] } }), 404, 'model_not_found', 'model');
  });
  test('25 MB body → 413', async () => {
    const big = JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'x'.repeat(25 * 1024 * 1024) }] });
    const r = await rawRequest(url(), { headers: auth(), body: big });
    assertOpenAiError(r, 413, 'request_too_large');
  });
  test('a 19 MB body (base64 image size) is accepted', async () => {
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'seen' })));
    const img = 'data:image/png;base64,' + 'A'.repeat(19 * 1024 * 1024);
    const r = await rawRequest(url(), { headers: auth(), json: { model: 'test-model', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: img } }] }] } });
    assert.equal(r.status, 200);
  });
  test('invalid UTF-8 → 400 invalid_utf8', async () => {
    const bad = Buffer.concat([Buffer.from('{"model":"test-model","messages":[{"role":"user","content":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}]}')]);
    assertOpenAiError(await rawRequest(url(), { headers: auth(), body: bad }), 400, 'invalid_utf8');
  });
  test('missing or unknown key → 401, and the key is not echoed', async () => {
    assertOpenAiError(await rawRequest(url(), { headers: { 'content-type': 'application/json' }, json: { model: 'test-model' } }), 401, 'missing_api_key');
    const r = await rawRequest(url(), { headers: { authorization: 'Bearer sk-sovra-NOTAREALKEY000000000000000000000', 'content-type': 'application/json' }, json: { model: 'test-model' } });
    assertOpenAiError(r, 401, 'invalid_api_key');
    assert.ok(!r.text().includes('NOTAREALKEY'));
    await assert.rejects(new OpenAI({ apiKey: 'sk-sovra-wrong', baseURL: g.baseURL, maxRetries: 0 }).models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
  });
  test('unknown route → 404 in OpenAI shape', async () => {
    assertOpenAiError(await rawRequest(`${g.baseURL}/nope`, { headers: auth() }), 404, 'unknown_url');
  });
  test('after all of that the server still serves', async () => {
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'still here' })));
    const c = await client.chat.completions.create({ model: 'test-model', messages: [{ role: 'user', content: 'ok?' }] });
    assert.equal(c.choices[0]!.message.content, 'still here');
    const logs = g.logs().join('\n');
    assert.ok(!logs.includes(g.key), 'the key never appears in logs');
    assert.ok(!logs.includes('up-cred-TEST-9999'), 'the upstream credential never appears in logs');
  });
});
