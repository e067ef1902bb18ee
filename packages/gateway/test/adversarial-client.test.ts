/**
 * Adversarial tests: hostile or unusual clients (raw sockets, slow readers, odd bodies and URLs).
 * A failing test is a reproduced defect.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { CH, EV, DONE, jsonResponse, chatCompletion, startMockUpstream, type MockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest, type RawResponse } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';

const SSE = { 'content-type': 'text/event-stream' };

let mock: MockUpstream;
let g: TestGateway;
before(async () => {
  mock = await startMockUpstream();
  g = await startGateway({ config: mockConfig(mock.url, {}, { server: { sse_heartbeat_ms: 0 } }), env: MOCK_ENV });
});
after(async () => {
  await g?.close();
  await mock?.close();
});
beforeEach(() => mock.reset());

const auth = (gw: TestGateway = g) => ({ authorization: `Bearer ${gw.key}`, 'content-type': 'application/json' });
const chat = (extra: Record<string, unknown> = {}) => ({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }], ...extra });
const recordOf = (gw: TestGateway, r: RawResponse) => gw.record(String(r.headers['x-request-id']));
const portOf = (gw: TestGateway) => Number(new URL(gw.origin).port);
const errorLogs = (gw: TestGateway) => gw.logs().filter((l) => /"level":(50|60)/.test(l));

describe('slow clients', () => {
  test('a client that pauses reading for 1.5 s does not turn into an upstream idle timeout', async () => {
    // The upstream sends the whole stream at once; the gateway stops reading it while it waits for the
    // client to drain (forward.ts:161-166), so the idle timer (provider.ts:162, refreshed only when a
    // chunk is consumed) fires and the stream is cut with `upstream_idle_timeout`.
    const m = await startMockUpstream();
    const gw = await startGateway({ config: mockConfig(m.url, { timeouts: { idle_ms: 500 } }, { server: { sse_heartbeat_ms: 0 } }), env: MOCK_ENV });
    try {
      const big = 'x'.repeat(2000);
      const events = Array.from({ length: 3000 }, (_, i) => EV(CH(`"choices":[{"index":0,"delta":{"content":"${big}${i}"},"finish_reason":null}]`))).join('');
      m.enqueue({ status: 200, headers: SSE, writes: [{ text: events + EV(CH('"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":3000,"total_tokens":3001}')) + DONE }] });
      const s = net.connect(portOf(gw), '127.0.0.1');
      const payload = JSON.stringify(chat({ stream: true }));
      s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.key}\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n\r\n${payload}`);
      const bufs: Buffer[] = [];
      s.on('data', (d: Buffer) => bufs.push(d));
      s.pause();
      setTimeout(() => s.resume(), 1500);
      await new Promise((r) => s.on('close', r));
      const text = Buffer.concat(bufs).toString('utf8');
      assert.equal(text.includes('upstream_idle_timeout'), false, 'the stream was cut with upstream_idle_timeout although the upstream had sent everything');
      assert.ok(text.includes('data: [DONE]'));
      const recs = await gw.records();
      assert.equal(recs[0]?.outcome, 'ok');
    } finally {
      await gw.close();
      await m.close();
    }
  });
});

describe('pool exhaustion', () => {
  test('a streaming request queued behind a busy pool still gets first_byte_ms (504), not an endless wait', async () => {
    const m = await startMockUpstream();
    const gw = await startGateway({
      config: mockConfig(m.url, { max_connections: 1, timeouts: { first_byte_ms: 500, idle_ms: 1000 } }, { server: { sse_heartbeat_ms: 0 } }),
      env: MOCK_ENV,
    });
    try {
      // the only connection is held by a live stream (a comment every 100 ms keeps it under idle_ms)
      m.enqueue({ status: 200, headers: SSE, writes: Array.from({ length: 40 }, () => ({ after: 100, text: ': ping\n\n' })) });
      m.setHandler(() => ({ status: 200, headers: SSE, writes: [{ text: DONE }] }));
      const first = rawRequest(`${gw.baseURL}/chat/completions`, { headers: auth(gw), json: chat({ stream: true }), abortAfterMs: 3500 });
      await m.waitForRequests(1);
      const t0 = performance.now();
      const r = await rawRequest(`${gw.baseURL}/chat/completions`, { headers: auth(gw), json: chat({ stream: true }), timeoutMs: 2500 });
      const waited = Math.round(performance.now() - t0);
      assert.ok(!r.error?.message.includes('no end after'), `the queued stream request got no answer at all in ${waited} ms`);
      assert.equal(r.status, 504);
      await first;
    } finally {
      await gw.close();
      await m.close();
    }
  });
});

describe('unauthenticated slow bodies', () => {
  test('a request without a key is refused without waiting for (up to 20 MiB of) body', async () => {
    // The key is checked only after Fastify has read the whole body, and Fastify's requestTimeout is 0
    // (server.ts:28, default kept), so an unauthenticated client can hold a socket and a growing buffer
    // forever by trickling its body.
    const s = net.connect(portOf(g), '127.0.0.1');
    s.on('error', () => undefined);
    await new Promise((r) => s.on('connect', r));
    const bufs: Buffer[] = [];
    s.on('data', (d: Buffer) => bufs.push(d));
    s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{"model":"test-model",');
    await new Promise((r) => setTimeout(r, 1500));
    s.destroy();
    const head = Buffer.concat(bufs).toString('latin1').split('\r\n')[0] ?? '';
    assert.match(head, /^HTTP\/1\.1 (401|408)/, 'no answer: the gateway is still waiting for the body of an unauthenticated request');
  });
  test('the HTTP server has a request timeout', () => {
    assert.ok((g.gw.app.server as unknown as { requestTimeout: number }).requestTimeout > 0, 'requestTimeout is 0: slow bodies are never timed out');
  });
});

describe('odd bodies and URLs', () => {
  test('deeply nested JSON in a pass-through field → 400, not 500 internal_error', async () => {
    // provider.ts:95 JSON.stringify overflows the stack; the RangeError becomes a 500 and an error log.
    const depth = 200_000;
    const body = '{"model":"test-model","messages":[{"role":"user","content":"x"}],"x":' + '['.repeat(depth) + ']'.repeat(depth) + '}';
    const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: auth(), body });
    assert.equal(r.status, 400, r.text().slice(0, 200));
  });
  test('GET /v1/models/%25ZZ → 404 model_not_found, not 500 (double URL decoding)', async () => {
    // pipeline/index.ts:104 decodes a parameter find-my-way already decoded; "%ZZ" throws URIError.
    const before = errorLogs(g).length;
    const r = await rawRequest(`${g.baseURL}/models/%25ZZ`, { headers: { authorization: `Bearer ${g.key}` } });
    assert.equal(r.status, 404, r.text());
    assert.equal(errorLogs(g).length, before);
  });
  test('GET /v1/models/%ZZ answers in OpenAI error shape', async () => {
    const r = await rawRequest(`${g.baseURL}/models/%ZZ`, { headers: { authorization: `Bearer ${g.key}` } });
    const b = r.json() as { error?: { message?: unknown } };
    assert.equal(typeof b.error, 'object', `Fastify-shaped body: ${r.text()}`);
    assert.equal(typeof b.error?.message, 'string');
  });
  test('a 20 MB-capable "model" string is not copied into the request record and the log line', async () => {
    const big = 'M'.repeat(2_000_000);
    const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: auth(), json: chat({ model: big }) });
    const rec = await recordOf(g, r);
    assert.ok(rec.model === null || rec.model.length <= 1024, `record.model is ${rec.model?.length} characters`);
    const longest = Math.max(...g.logs().map((l) => l.length));
    assert.ok(longest < 100_000, `a ${longest}-byte log line was written`);
  });
});

describe('client disconnects during the upload', () => {
  test('is recorded as client_disconnected (499), not 400 rejected/ECONNRESET', async () => {
    const s = net.connect(portOf(g), '127.0.0.1');
    s.on('error', () => undefined);
    await new Promise((r) => s.on('connect', r));
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${g.key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":"test`);
    await new Promise((r) => setTimeout(r, 100));
    s.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const recs = await g.records();
    const last = recs.at(-1)!;
    assert.deepEqual([last.status, last.outcome], [499, 'client_disconnected'], `recorded ${last.status}/${last.outcome}/${last.error_code}`);
  });
});

describe('sanity: things that held', () => {
  // Pinned policy: a request without a valid key is refused before its body is read, and the
  // connection is closed (so an unread body is never consumed); pipelined requests after it are dropped.
  test('pipelined requests on one socket are answered in order and recorded once each, up to a 401 that closes the connection', async () => {
    mock.setHandler(() => jsonResponse(200, chatCompletion()));
    const p = JSON.stringify(chat());
    const one = (k: string, close = false) =>
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${k}\r\nContent-Type: application/json\r\n${close ? 'Connection: close\r\n' : ''}Content-Length: ${p.length}\r\n\r\n${p}`;
    const before = (await g.records()).length;
    const s = net.connect(portOf(g), '127.0.0.1');
    const bufs: Buffer[] = [];
    s.on('data', (d: Buffer) => bufs.push(d));
    s.write(one(g.key) + one('nope') + one(g.key) + one(g.key, true));
    await new Promise((r) => s.on('close', r));
    const text = Buffer.concat(bufs).toString('latin1');
    assert.deepEqual(text.match(/HTTP\/1\.1 \d+/g), ['HTTP/1.1 200', 'HTTP/1.1 401']);
    assert.match(text, /connection: close/i);
    // Every request that reached the server has exactly one record (the two after the 401 were
    // already parsed from the socket buffer when it closed).
    const recs = (await g.records()).slice(before);
    assert.equal(recs.length, 4);
    assert.deepEqual(recs.map((r) => r.status).sort(), [200, 200, 200, 401]);
  });
});
