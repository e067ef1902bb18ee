/**
 * Adversarial tests: hostile or broken upstreams. Each test states what should happen; a failing test
 * is a reproduced defect (see the report that accompanies these files).
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CH, EV, DONE, jsonResponse, chatCompletion, startMockUpstream, type MockUpstream, type Script } from './helpers/mock-upstream.ts';
import { rawRequest, type RawResponse } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';

const SSE = { 'content-type': 'text/event-stream' };
const UPSTREAM_CRED = 'up-cred-TEST-9999';

let mock: MockUpstream;
let g: TestGateway;
before(async () => {
  mock = await startMockUpstream();
  g = await startGateway({
    config: mockConfig(mock.url, { timeouts: { idle_ms: 400, total_ms: 1500, first_byte_ms: 1500 } }, { server: { sse_heartbeat_ms: 0 } }),
    env: MOCK_ENV,
  });
});
after(async () => {
  await g?.close();
  await mock?.close();
});
beforeEach(() => mock.reset());

const auth = () => ({ authorization: `Bearer ${g.key}`, 'content-type': 'application/json' });
const chat = (extra: Record<string, unknown> = {}) => ({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }], ...extra });
const send = (body: unknown, path = '/chat/completions', timeoutMs = 6000): Promise<RawResponse> =>
  rawRequest(`${g.baseURL}${path}`, { headers: auth(), json: body, timeoutMs });
const recordOf = (r: RawResponse) => g.record(String(r.headers['x-request-id']));

describe('hostile upstream: timeouts on a streaming request whose upstream does not stream', () => {
  // provider.ts:113 (no total timer for streams), :136 (bodyTimeout 0 for streams) and the idle timer
  // armed only in the isStream branch (:162): a stream request answered with a non-SSE or non-2xx body
  // is buffered with no timeout at all.
  for (const [name, script] of [
    ['500 JSON body that stalls', { status: 500, headers: { 'content-type': 'application/json' }, writes: [{ text: '{"error":' }], close: 'hang' }],
    ['200 JSON body that stalls', { status: 200, headers: { 'content-type': 'application/json' }, writes: [{ text: '{"id":' }], close: 'hang' }],
    ['429 SSE body that stalls', { status: 429, headers: SSE, writes: [{ text: 'data: x\n\n' }], close: 'hang' }],
  ] as Array<[string, Script]>) {
    test(`stream:true, ${name} → ends with a timeout error (idle_ms 400), not a hang`, async () => {
      mock.enqueue(script);
      const t0 = performance.now();
      const r = await send(chat({ stream: true }), '/chat/completions', 4000);
      assert.ok(!r.error?.message.includes('no end after'), `gateway never answered (hung ${Math.round(performance.now() - t0)} ms)`);
      assert.equal(r.status, 504);
    });
  }
});

describe('hostile upstream: unbounded buffering', () => {
  test('a 100 MB SSE line without a newline is cut off (bounded event size), not buffered', async () => {
    // sse/parser.ts:158 (pending line) and :205 (data buffer) grow without limit; with ~8 such streams at
    // once the process dies with "JavaScript heap out of memory" (reproduced: /tmp/adv/e9.ts 520 8).
    const mb = 'a'.repeat(1 << 20);
    mock.enqueue({ status: 200, headers: SSE, writes: [{ text: 'data: {"x":"' }, ...Array.from({ length: 100 }, () => ({ text: mb }))] });
    const r = await send(chat({ stream: true }), '/chat/completions', 30000);
    const rec = await recordOf(r);
    assert.notEqual(rec.outcome, 'ok', 'the gateway swallowed a 100 MB unterminated event and recorded success');
    assert.equal(mock.requests[0]?.aborted, true, 'the gateway read the whole 100 MB instead of giving up on the upstream');
  });
});

describe('secrets: the upstream credential never reaches the client', () => {
  // forward.ts:92 only hides 401/403 bodies; every other status (and every stream error event) is relayed
  // verbatim, so an upstream that echoes request headers leaks the backend credential to the tenant.
  for (const status of [400, 422, 500, 503]) {
    test(`upstream ${status} body echoing request headers`, async () => {
      mock.setHandler((req) => jsonResponse(status, { error: { message: `bad request; headers were ${JSON.stringify(req.headers)}`, type: 'invalid_request_error', param: null, code: null } }));
      const r = await send(chat());
      assert.equal(r.text().includes(UPSTREAM_CRED), false, `upstream credential leaked in a ${r.status} response body`);
    });
  }
  test('stream error event echoing the upstream Authorization header', async () => {
    mock.setHandler((req) => ({ status: 200, headers: SSE, writes: [{ text: EV(JSON.stringify({ error: { message: `auth ${String(req.headers['authorization'])}`, type: 'server_error' } })) }] }));
    const r = await send(chat({ stream: true }));
    assert.equal(r.text().includes(UPSTREAM_CRED), false, 'upstream credential leaked in a stream error event');
  });
});

describe('accounting: hostile usage values', () => {
  test('negative usage from the upstream is not recorded as negative tokens', async () => {
    mock.enqueue(jsonResponse(200, { choices: [], usage: { prompt_tokens: -1000000, completion_tokens: -5, total_tokens: -1000005 } }));
    const rec = await recordOf(await send(chat()));
    for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens'] as const) assert.ok(rec[k] === null || rec[k]! >= 0, `${k} recorded as ${rec[k]}`);
  });
  test('absurd usage (1e300) is not stored as a token count', async () => {
    // forward.ts:137-139 accept any JS number; SQLite then stores a REAL in an integer column, PostgreSQL
    // rejects the whole batch (see adversarial-postgres.test.ts).
    mock.enqueue(jsonResponse(200, '{"choices":[],"usage":{"prompt_tokens":1e300,"completion_tokens":1,"total_tokens":1e300}}'));
    const rec = await recordOf(await send(chat()));
    assert.ok(rec.prompt_tokens === null || Number.isSafeInteger(rec.prompt_tokens), `prompt_tokens recorded as ${rec.prompt_tokens}`);
  });
  test('a later empty "usage":{} does not wipe the usage already reported', async () => {
    mock.enqueue({
      status: 200,
      headers: SSE,
      writes: [{ text: EV(CH('"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}')) + EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{}')) + DONE }],
    });
    const rec = await recordOf(await send(chat({ stream: true })));
    assert.deepEqual([rec.prompt_tokens, rec.completion_tokens, rec.total_tokens], [10, 20, 30]);
  });
});

describe('accounting: stream outcome classification', () => {
  test('a successful chunk carrying "error":null is not recorded as an upstream error', async () => {
    // forward.ts:255: `obj['error'] !== undefined` is true for null
    mock.enqueue({
      status: 200,
      headers: SSE,
      writes: [{ text: EV(CH('"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"error":null')) + EV(CH('"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}')) + DONE }],
    });
    const rec = await recordOf(await send(chat({ stream: true })));
    assert.equal(rec.outcome, 'ok');
    assert.equal(rec.error_code, null);
  });
  test('an `event: error` whose data is not JSON is recorded as an upstream error', async () => {
    // forward.ts:254 returns before the error check when data is not JSON
    mock.enqueue({ status: 200, headers: SSE, writes: [{ text: 'event: error\ndata: upstream exploded\n\n' }] });
    const rec = await recordOf(await send(chat({ stream: true })));
    assert.equal(rec.outcome, 'upstream_error');
  });
  test('a Responses stream ending in response.failed is recorded as an upstream error', async () => {
    mock.enqueue({
      status: 200,
      headers: SSE,
      writes: [{ text: 'event: response.failed\ndata: {"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"boom"},"usage":null}}\n\n' }],
    });
    const rec = await recordOf(await send({ model: 'test-model', input: 'hi', stream: true }, '/responses'));
    assert.equal(rec.outcome, 'upstream_error');
  });
  test('a 200 text/event-stream body that is not SSE at all is not recorded as a success', async () => {
    mock.enqueue({ status: 200, headers: SSE, writes: [{ text: '<html>oops</html>\n\nnot sse at all\n\n' }] });
    const r = await send(chat({ stream: true }));
    const rec = await recordOf(r);
    assert.notEqual(rec.outcome, 'ok', `client got ${r.status} with ${r.body.length} bytes and the record says ok`);
  });
});

describe('protocol: upstream statuses the client cannot use', () => {
  test('an upstream 302 redirect becomes a 502, not a bare 302 without Location', async () => {
    mock.enqueue({ status: 302, headers: { location: 'http://127.0.0.1:1/elsewhere', 'content-length': '0' }, writes: [] });
    const r = await send(chat());
    assert.equal(r.status, 502);
  });
});

describe('pass-through: fields reach the engine untouched', () => {
  test('an int64 seed keeps its digits', async () => {
    mock.enqueue(jsonResponse(200, chatCompletion()));
    const raw = '{"model":"test-model","messages":[{"role":"user","content":"hi"}],"seed":9223372036854775807}';
    await rawRequest(`${g.baseURL}/chat/completions`, { headers: auth(), body: raw });
    const up = mock.requests[0]!.text();
    assert.ok(up.includes('9223372036854775807'), `upstream received ${up}`);
  });
});
