/**
 * The Anthropic provider (src/providers/anthropic/provider.ts) against a scripted `node:http`
 * upstream on 127.0.0.1: the exact request sent (path, headers, body), non-stream and stream
 * translation, error mapping, aborts and timeouts, and that the credential never comes back.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AnthropicProvider, type AnthropicProviderOptions } from '../src/providers/anthropic/provider.ts';
import { UpstreamError, type ProviderCall, type ProviderResult } from '../src/providers/types.ts';
import type { SseItem } from '../src/sse/types.ts';

const KEY = 'sk-ant-TEST-credential-0123456789';
const TIMEOUTS = { connectMs: 2000, firstByteMs: 3000, idleMs: 3000, totalMs: 5000, streamTotalMs: 0 };

interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Client port of the connection (same port = reused keep-alive connection). */
  port: number;
}
type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void | Promise<void>;

let server: http.Server;
let baseUrl: string;
let received: Received[] = [];
let handler: Handler = (_q, res) => {
  res.end();
};
const sockets = new Set<import('node:net').Socket>();

before(async () => {
  server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts).toString('utf8');
      received.push({ method: req.method!, url: req.url!, headers: req.headers, body, port: req.socket.remotePort! });
      void handler(req, res, body);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});
beforeEach(() => {
  received = [];
});

const providers: AnthropicProvider[] = [];
after(async () => {
  for (const p of providers) await p.close();
});
function provider(opts: Partial<AnthropicProviderOptions> = {}): AnthropicProvider {
  const p = new AnthropicProvider({ id: 'claude', baseUrl, apiKey: KEY, ...opts });
  providers.push(p);
  return p;
}

function mkCall(body: Record<string, unknown>, opts: { signal?: AbortSignal; timeouts?: Partial<typeof TIMEOUTS> } = {}): ProviderCall {
  return {
    operation: 'chat.completions',
    body,
    bodyText: JSON.stringify(body),
    stream: body['stream'] === true,
    requestId: 'req-abc',
    signal: opts.signal ?? new AbortController().signal,
    timeouts: { ...TIMEOUTS, ...opts.timeouts },
  };
}

const CHAT = { model: 'claude-test', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }], max_tokens: 64 };
const MESSAGE = {
  id: 'msg_01',
  type: 'message',
  role: 'assistant',
  model: 'claude-test',
  content: [{ type: 'text', text: 'Hi there.' }],
  stop_reason: 'end_turn',
  stop_sequence: null,
  usage: { input_tokens: 12, output_tokens: 4 },
};

function json(status: number, body: unknown, headers: Record<string, string> = {}): Handler {
  return (_q, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
}

const ev = (type: string, payload: Record<string, unknown> = {}) => `event: ${type}\ndata: ${JSON.stringify({ type, ...payload })}\n\n`;

/** Writes the SSE text in small pieces (splitting events and lines), optionally without ending. */
function sse(text: string, opts: { piece?: number; end?: boolean; status?: number } = {}): Handler {
  return async (_q, res) => {
    res.writeHead(opts.status ?? 200, { 'content-type': 'text/event-stream', 'anthropic-ratelimit-tokens-remaining': '999' });
    const n = opts.piece ?? 17;
    for (let i = 0; i < text.length; i += n) {
      res.write(text.slice(i, i + n));
      await sleep(0);
    }
    if (opts.end !== false) res.end();
  };
}

async function collect(r: ProviderResult): Promise<SseItem[]> {
  assert.equal(r.kind, 'stream');
  const out: SseItem[] = [];
  for await (const it of (r as Extract<ProviderResult, { kind: 'stream' }>).items) out.push(it);
  return out;
}
const bodyOf = (r: ProviderResult): any => {
  assert.equal(r.kind, 'json');
  return JSON.parse((r as Extract<ProviderResult, { kind: 'json' }>).body.toString('utf8'));
};
const datas = (items: SseItem[]) => items.map((i) => (i.type === 'event' ? i.data : `:${i.text}`));

describe('AnthropicProvider: the request sent upstream', () => {
  test('non-stream: path, headers and translated body; answer is a chat.completion', async () => {
    handler = json(200, MESSAGE, { 'anthropic-ratelimit-requests-remaining': '41', 'request-id': 'req_up', 'x-secret-internal': 'no' });
    const p = provider({ headers: { 'Anthropic-Beta': 'tools-2099', Authorization: 'Bearer nope', 'x-api-key': 'overridden?' } });
    assert.equal(p.kind, 'anthropic');
    assert.equal(p.supports('chat.completions'), true);
    for (const op of ['completions', 'embeddings', 'responses'] as const) assert.equal(p.supports(op), false);
    assert.deepEqual(p.state(), { ready: true });

    const r = await p.call(mkCall({ ...CHAT, temperature: 0.5, user: 'u-1' }));
    assert.equal(received.length, 1);
    const got = received[0]!;
    assert.equal(got.method, 'POST');
    assert.equal(got.url, '/v1/messages');
    assert.equal(got.headers['x-api-key'], KEY);
    assert.equal(got.headers['anthropic-version'], '2023-06-01');
    assert.equal(got.headers['anthropic-beta'], 'tools-2099');
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['accept'], 'application/json');
    assert.equal(got.headers['x-request-id'], 'req-abc');
    assert.equal(got.headers['authorization'], undefined, 'no bearer credential');
    assert.deepEqual(JSON.parse(got.body), {
      model: 'claude-test',
      max_tokens: 64,
      system: 'be brief',
      messages: [{ role: 'user', content: 'hello' }],
      temperature: 0.5,
      metadata: { user_id: 'u-1' },
    });

    assert.equal(r.kind, 'json');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['anthropic-ratelimit-requests-remaining'], '41');
    assert.equal(r.headers['x-secret-internal'], undefined);
    const b = bodyOf(r);
    assert.match(b.id, /^chatcmpl-[0-9a-f]{24}$/);
    assert.equal(b.object, 'chat.completion');
    assert.equal(b.model, 'claude-test');
    assert.equal(typeof b.created, 'number');
    assert.deepEqual(b.choices, [{ index: 0, message: { role: 'assistant', content: 'Hi there.', refusal: null }, logprobs: null, finish_reason: 'stop' }]);
    assert.deepEqual(b.usage, { prompt_tokens: 12, completion_tokens: 4, total_tokens: 16 });
  });

  test('base URL path prefix, anthropicVersion and defaultMaxTokens options; no key → no x-api-key', async () => {
    handler = json(200, MESSAGE);
    const p = provider({ baseUrl: `${baseUrl}/proxy/anthropic/`, apiKey: undefined, anthropicVersion: '2099-01-01', defaultMaxTokens: 777 });
    await p.call(mkCall({ model: 'claude-test', messages: [{ role: 'user', content: 'x' }] }));
    const got = received[0]!;
    assert.equal(got.url, '/proxy/anthropic/v1/messages');
    assert.equal(got.headers['anthropic-version'], '2099-01-01');
    assert.equal(got.headers['x-api-key'], undefined);
    assert.equal(JSON.parse(got.body).max_tokens, 777);
  });

  test('a request that cannot be translated → 400 OpenAI error, nothing sent upstream', async () => {
    handler = json(200, MESSAGE);
    const p = provider();
    const r = await p.call(mkCall({ ...CHAT, n: 3 }));
    assert.equal(r.status, 400);
    assert.deepEqual(bodyOf(r), {
      error: { message: bodyOf(r).error.message, type: 'invalid_request_error', param: 'n', code: 'unsupported_parameter' },
    });
    const r2 = await p.call(
      mkCall({ model: 'm', messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }] }] }),
    );
    assert.equal(r2.status, 400);
    assert.equal(bodyOf(r2).error.code, 'invalid_parameter');
    assert.equal(bodyOf(r2).error.param, 'messages[0].tool_calls[0].function.arguments');
    await sleep(20);
    assert.equal(received.length, 0);
  });
});

describe('AnthropicProvider: streaming', () => {
  test('a text stream with usage, split across arbitrary TCP writes', async () => {
    handler = sse(
      ev('message_start', { message: { id: 'msg_s', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 9, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
        ev('ping') +
        ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Bonjour ' } }) +
        ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'à tous ✓' } }) +
        ev('content_block_stop', { index: 0 }) +
        ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 6 } }) +
        ev('message_stop'),
      { piece: 7 },
    );
    const p = provider();
    const r = await p.call(mkCall({ ...CHAT, stream: true, stream_options: { include_usage: true } }));
    const got = received[0]!;
    assert.equal(got.headers['accept'], 'text/event-stream');
    const sent = JSON.parse(got.body);
    assert.equal(sent.stream, true);
    assert.equal(sent.stream_options, undefined, 'stream_options is not sent upstream');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/event-stream');
    assert.equal(r.headers['anthropic-ratelimit-tokens-remaining'], '999');
    const d = datas(await collect(r));
    assert.equal(d.at(-1), '[DONE]');
    const cs = d.slice(0, -1).map((x) => JSON.parse(x));
    const ids = new Set(cs.map((c) => c.id));
    assert.equal(ids.size, 1);
    assert.equal(cs[0].choices[0].delta.role, 'assistant');
    assert.equal(cs.map((c) => c.choices[0]?.delta.content ?? '').join(''), 'Bonjour à tous ✓');
    assert.equal(cs.at(-2).choices[0].finish_reason, 'stop');
    assert.deepEqual(cs.at(-1).choices, []);
    assert.deepEqual(cs.at(-1).usage, { prompt_tokens: 9, completion_tokens: 6, total_tokens: 15 });
  });

  test('after message_stop the connection is reused (keep-alive)', async () => {
    const text =
      ev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 1, output_tokens: 1 } } }) +
      ev('message_delta', { delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 1 } }) +
      ev('message_stop');
    handler = async (_q, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(text);
      await sleep(20); // the end of the body arrives after the last event
      res.end();
    };
    const p = provider({ maxConnections: 1 });
    for (let i = 0; i < 3; i++) assert.equal(datas(await collect(await p.call(mkCall({ ...CHAT, stream: true })))).at(-1), '[DONE]');
    assert.equal(received.length, 3);
    assert.equal(new Set(received.map((r) => r.port)).size, 1, 'one connection for the three streams');
  });

  test('a tool-use stream', async () => {
    const args = '{"q":"sovereign gateways"}';
    handler = sse(
      ev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 3, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 'toolu_1', name: 'search', input: {} } }) +
        [...args].map((ch) => ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: ch } })).join('') +
        ev('content_block_stop', { index: 0 }) +
        ev('message_delta', { delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 20 } }) +
        ev('message_stop'),
      { piece: 50 },
    );
    const r = await provider().call(mkCall({ ...CHAT, stream: true, tools: [{ type: 'function', function: { name: 'search', parameters: { type: 'object' } } }] }));
    assert.deepEqual(JSON.parse(received[0]!.body).tools, [{ name: 'search', input_schema: { type: 'object' } }]);
    const d = datas(await collect(r));
    assert.equal(d.at(-1), '[DONE]');
    assert.ok(!d.some((x) => x.includes('"usage"')), 'no usage chunk when the request did not ask for it');
    const cs = d.slice(0, -1).map((x) => JSON.parse(x));
    let argsOut = '';
    for (const c of cs) for (const tc of c.choices[0]?.delta.tool_calls ?? []) argsOut += tc.function.arguments;
    assert.equal(argsOut, args);
    assert.equal(cs.at(-1).choices[0].finish_reason, 'tool_calls');
  });

  test('an error event mid-stream → OpenAI error event, no [DONE]', async () => {
    handler = sse(
      ev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 3, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
        ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'so far' } }) +
        ev('error', { error: { type: 'overloaded_error', message: 'Overloaded' } }),
      { end: false }, // the upstream keeps the connection open: the provider stops reading by itself
    );
    const items = await collect(await provider().call(mkCall({ ...CHAT, stream: true })));
    const d = datas(items);
    assert.ok(!d.includes('[DONE]'));
    assert.deepEqual(JSON.parse(d.at(-1)!), { error: { message: 'Overloaded', type: 'api_error', code: 'overloaded', param: null } });
  });

  test('an upstream that closes before message_stop: the stream ends without [DONE]', async () => {
    handler = sse(
      ev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 3, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
        ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'trunc' } }),
    );
    const d = datas(await collect(await provider().call(mkCall({ ...CHAT, stream: true }))));
    assert.ok(d.length >= 2);
    assert.ok(!d.includes('[DONE]'));
  });

  test('a 2xx answer to a streaming request that is not an event stream → UpstreamError protocol', async () => {
    handler = json(200, MESSAGE);
    await assert.rejects(provider().call(mkCall({ ...CHAT, stream: true })), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
  });

  test('an oversized event → UpstreamError protocol while iterating', async () => {
    handler = sse(ev('message_start', { message: { id: 'm', type: 'message', content: [], usage: {} } }) + `data: ${'x'.repeat(5000)}\n\n`, { piece: 1000 });
    const r = await provider({ maxEventBytes: 1024 }).call(mkCall({ ...CHAT, stream: true }));
    await assert.rejects(collect(r), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
  });
});

describe('AnthropicProvider: upstream errors', () => {
  const errBody = (type: string, message: string) => ({ type: 'error', error: { type, message }, request_id: 'req_x' });

  test('4xx keeps its status with an OpenAI error body', async () => {
    handler = json(400, errBody('invalid_request_error', 'max_tokens: 999999 > 8192, which is the maximum allowed'));
    const r = await provider().call(mkCall(CHAT));
    assert.equal(r.status, 400);
    assert.deepEqual(bodyOf(r), {
      error: { message: 'max_tokens: 999999 > 8192, which is the maximum allowed', type: 'invalid_request_error', param: null, code: 'invalid_request' },
    });
    handler = json(429, errBody('rate_limit_error', 'Number of requests has exceeded your rate limit'), { 'retry-after': '7' });
    const r2 = await provider().call(mkCall({ ...CHAT, stream: true }));
    assert.equal(r2.kind, 'json', 'a streaming request answered with an error gets a JSON error');
    assert.equal(r2.status, 429);
    assert.equal(r2.headers['retry-after'], '7');
    assert.equal(bodyOf(r2).error.code, 'rate_limit_exceeded');
  });

  test('529 overloaded → 503 code overloaded, retry-after passed back', async () => {
    handler = json(529, errBody('overloaded_error', 'Overloaded'), { 'retry-after': '3' });
    const r = await provider().call(mkCall(CHAT));
    assert.equal(r.status, 503);
    assert.equal(r.headers['retry-after'], '3');
    assert.deepEqual(bodyOf(r), { error: { message: 'Overloaded', type: 'api_error', param: null, code: 'overloaded' } });
  });

  test('a 200 that is not JSON → UpstreamError protocol', async () => {
    handler = json(200, '<html>proxy page</html>');
    await assert.rejects(provider().call(mkCall(CHAT)), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
  });

  test('a body beyond maxResponseBytes → UpstreamError protocol', async () => {
    handler = json(200, { ...MESSAGE, content: [{ type: 'text', text: 'y'.repeat(10_000) }] });
    await assert.rejects(provider({ maxResponseBytes: 2000 }).call(mkCall(CHAT)), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
  });

  test('connection refused → UpstreamError connect', async () => {
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const p = provider({ baseUrl: `http://127.0.0.1:${port}` });
    await assert.rejects(p.call(mkCall(CHAT)), (e: unknown) => e instanceof UpstreamError && e.kind === 'connect');
  });
});

describe('AnthropicProvider: credential never echoed', () => {
  test('an error body quoting the key is scrubbed', async () => {
    handler = json(401, { type: 'error', error: { type: 'authentication_error', message: `invalid x-api-key ${KEY}` } });
    const r = await provider().call(mkCall(CHAT));
    assert.equal(r.status, 401);
    const text = (r as Extract<ProviderResult, { kind: 'json' }>).body.toString('utf8');
    assert.ok(!text.includes(KEY));
    assert.ok(text.includes('[redacted]'));
  });

  test('a successful answer or a stream quoting the key is scrubbed', async () => {
    handler = json(200, { ...MESSAGE, content: [{ type: 'text', text: `your key is ${KEY}` }] });
    const r = await provider().call(mkCall(CHAT));
    assert.ok(!(r as Extract<ProviderResult, { kind: 'json' }>).body.toString('utf8').includes(KEY));

    handler = sse(
      ev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 3, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
        ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: `key=${KEY}` } }) +
        ev('error', { error: { type: 'api_error', message: `failed for ${KEY}` } }),
    );
    const d = datas(await collect(await provider().call(mkCall({ ...CHAT, stream: true }))));
    assert.ok(d.length >= 3);
    assert.ok(!d.some((x) => x.includes(KEY)));
    assert.ok(d.some((x) => x.includes('[redacted]')));
  });
});

describe('AnthropicProvider: health check', () => {
  test('GET /v1/models with the credential; non-2xx and timeouts reject without secrets', async () => {
    handler = json(200, { data: [] });
    const p = provider({ baseUrl: `${baseUrl}/pfx` });
    await p.healthCheck(undefined, AbortSignal.timeout(2000));
    assert.equal(received[0]!.method, 'GET');
    assert.equal(received[0]!.url, '/pfx/v1/models');
    assert.equal(received[0]!.headers['x-api-key'], KEY);
    assert.equal(received[0]!.headers['anthropic-version'], '2023-06-01');
    await p.healthCheck('/status', AbortSignal.timeout(2000));
    assert.equal(received[1]!.url, '/status');

    handler = json(401, { type: 'error', error: { type: 'authentication_error', message: KEY } });
    await assert.rejects(p.healthCheck(undefined, AbortSignal.timeout(2000)), (e: Error) => e.message === 'health check answered HTTP 401');
    handler = () => undefined;
    await assert.rejects(p.healthCheck(undefined, AbortSignal.timeout(100)), /timed out/);
  });
});

describe('AnthropicProvider: aborts and timeouts', () => {
  test('an already aborted signal → UpstreamError aborted, nothing sent', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(provider().call(mkCall(CHAT, { signal: ac.signal })), (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
    await sleep(20);
    assert.equal(received.length, 0);
  });

  test('abort while waiting for the answer → UpstreamError aborted, upstream socket closed', async () => {
    let closed = false;
    handler = (req) => {
      req.socket.on('close', () => (closed = true));
    }; // never answers
    const ac = new AbortController();
    const pending = provider().call(mkCall(CHAT, { signal: ac.signal }));
    while (received.length === 0) await sleep(5);
    const t0 = performance.now();
    ac.abort();
    await assert.rejects(pending, (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
    assert.ok(performance.now() - t0 < 500);
    for (let i = 0; i < 100 && !closed; i++) await sleep(5);
    assert.ok(closed, 'the upstream connection was closed');
  });

  test('abort mid-stream → iteration throws UpstreamError aborted', async () => {
    handler = sse(
      ev('message_start', { message: { id: 'm', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 3, output_tokens: 1 } } }) +
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      { end: false },
    );
    const ac = new AbortController();
    const r = await provider().call(mkCall({ ...CHAT, stream: true }, { signal: ac.signal }));
    assert.equal(r.kind, 'stream');
    const it = (r as Extract<ProviderResult, { kind: 'stream' }>).items[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.done, false);
    setTimeout(() => ac.abort(), 30);
    await assert.rejects(
      (async () => {
        for (;;) if ((await it.next()).done) break;
      })(),
      (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted',
    );
  });

  test('first-byte and idle timeouts', async () => {
    handler = () => undefined; // never answers
    await assert.rejects(provider().call(mkCall(CHAT, { timeouts: { firstByteMs: 100 } })), (e: unknown) => e instanceof UpstreamError && e.kind === 'first_byte_timeout');

    handler = sse(ev('message_start', { message: { id: 'm', type: 'message', content: [], usage: {} } }), { end: false });
    const r = await provider().call(mkCall({ ...CHAT, stream: true }, { timeouts: { idleMs: 150 } }));
    await assert.rejects(collect(r), (e: unknown) => e instanceof UpstreamError && e.kind === 'idle_timeout');
  });
});
