/**
 * Every case of shared/cases/gateway-conformance.md (copied to test/fixtures/gateway-conformance.md)
 * against the real gateway and a scripted mock upstream (M). Streaming cases run in all three delivery
 * modes: as scripted, the whole body in one write, one byte per write.
 *
 * Timings of CASE-04/12/13 are scaled down (ratios kept) so that the suite stays fast; each test says so.
 * The "Ledger" of the cases is the request record for now (budgets come with tenancy).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  CH,
  EV,
  DONE,
  DELIVERY_MODES,
  deliver,
  jsonResponse,
  chatCompletion,
  ollamaEmulationHandler,
  startMockUpstream,
  type MockUpstream,
  type Script,
  type Write,
} from './helpers/mock-upstream.ts';
import { rawRequest, type RawResponse } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';

const SSE = { 'content-type': 'text/event-stream; charset=utf-8' };

let mock: MockUpstream;
let g: TestGateway;
before(async () => {
  mock = await startMockUpstream();
  g = await startGateway({ config: mockConfig(mock.url, {}, { server: { sse_heartbeat_ms: 400 } }), env: MOCK_ENV });
});
after(async () => {
  await g?.close();
  await mock?.close();
});

function auth(gw: TestGateway = g): Record<string, string> {
  return { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json' };
}

async function send(body: unknown, opts: { path?: string; gw?: TestGateway; abortAfterMs?: number; abortAfterEvents?: number } = {}): Promise<RawResponse> {
  const gw = opts.gw ?? g;
  return rawRequest(`${gw.baseURL}${opts.path ?? '/chat/completions'}`, {
    headers: auth(gw),
    json: body,
    ...(opts.abortAfterMs !== undefined ? { abortAfterMs: opts.abortAfterMs } : {}),
    ...(opts.abortAfterEvents !== undefined ? { abortAfterEvents: opts.abortAfterEvents } : {}),
  });
}

const reqId = (r: RawResponse) => String(r.headers['x-request-id']);
const dataOf = (r: RawResponse) => r.events.map((e) => e.data);
const jsonEvents = (r: RawResponse) => r.events.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data) as Record<string, unknown>);
const usageOf = (rec: { prompt_tokens: number | null; completion_tokens: number | null; total_tokens: number | null }) => [rec.prompt_tokens, rec.completion_tokens, rec.total_tokens];
const noErrorLogs = (gw: TestGateway) => gw.logs().filter((l) => /"level":(50|60)/.test(l));

describe('CASE-01: usage event split across network chunks', () => {
  const E1 = EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}],"usage":null'));
  const E2 = EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null'));
  const E3 = EV(CH('"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}'));
  const cut = E3.indexOf('"comp') + '"comp'.length;
  const script: Script = {
    status: 200,
    headers: SSE,
    writes: [
      { text: E1 },
      { after: 20, text: E2 + E3.slice(0, cut) },
      { after: 20, text: E3.slice(cut, -1) },
      { after: 20, text: '\n' + DONE },
    ],
  };
  const body = { model: 'test-model', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'Say hi' }] };
  for (const mode of DELIVERY_MODES) {
    test(`four events, payloads deep-equal, usage 9/2/11 recorded (${mode})`, async () => {
      mock.enqueue(deliver(script, mode));
      const r = await send(body);
      assert.equal(r.status, 200);
      assert.deepEqual(dataOf(r), [E1, E2, E3].map((e) => e.slice('data: '.length, -2)).concat('[DONE]'));
      const rec = await g.record(reqId(r));
      assert.deepEqual(usageOf(rec), [9, 2, 11]);
      assert.equal(rec.usage_source, 'upstream');
      assert.ok(!g.logs().some((l) => /JSON|parse/i.test(l) && /"level":(40|50)/.test(l)), 'no JSON-parse warnings');
    });
  }
  test('the openai SDK consumes the same stream', async () => {
    mock.enqueue(deliver(script, 'byte-per-write'));
    const client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
    const chunks = [];
    for await (const c of await client.chat.completions.create({ ...body, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming)) chunks.push(c);
    assert.equal(chunks.length, 3);
    assert.equal(chunks[0]!.choices[0]!.delta.content, 'Hi');
    assert.deepEqual(chunks[2]!.usage, { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 });
  });
  for (const mode of DELIVERY_MODES) {
    test(`Responses API variant: response.completed cut mid-JSON, usage 9/2/11 (${mode})`, async () => {
      const created = 'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_T","status":"in_progress"}}\n\n';
      const completed =
        'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_T","status":"completed","usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11}}}\n\n';
      const half = completed.indexOf('"output_tokens"');
      mock.enqueue(deliver({ status: 200, headers: SSE, writes: [{ text: created }, { after: 20, text: completed.slice(0, half) }, { after: 20, text: completed.slice(half) }] }, mode));
      const r = await send({ model: 'test-model', stream: true, input: 'Say hi' }, { path: '/responses' });
      assert.equal(r.status, 200);
      assert.deepEqual(r.events.map((e) => e.event), ['response.created', 'response.completed']);
      assert.equal(mock.requests.at(-1)!.path, '/v1/responses');
      const rec = await g.record(reqId(r));
      assert.deepEqual(usageOf(rec), [9, 2, 11]);
    });
  }
});

describe('CASE-03: SSE comment / keep-alive lines', () => {
  const hello = CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]');
  const world = CH('"choices":[{"index":0,"delta":{"content":" world"},"finish_reason":null}]');
  const stop = CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]');
  const script: Script = {
    status: 200,
    headers: SSE,
    writes: [
      { text: ': ping - 2026-11-29 00:00:00.000000+00:00\n\n' },
      { text: EV(hello) },
      { after: 1500, text: ': ping - 2026-11-29 00:00:01.500000+00:00\n\n' },
      { text: ':\n\n' },
      { text: ': keep-alive\ndata: ' + world + '\n\n' },
      { text: 'retry: 3000\nid: 42\n\n' },
      { text: EV(stop) },
      { text: DONE },
    ],
  };
  for (const mode of DELIVERY_MODES) {
    test(`comments never become data; heartbeat fills the 1.5 s gap; no crash (${mode})`, async () => {
      mock.enqueue(deliver(script, mode));
      const r = await send({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Two words please' }] });
      assert.equal(r.status, 200);
      assert.deepEqual(dataOf(r), [hello, world, stop, '[DONE]']);
      assert.ok(!r.text().includes('data: : ping') && !/data: ?\n\n/.test(r.text()), 'no comment turned into data, no empty data event');
      // CASE-03 item 4, with sse_heartbeat_ms 400: comment bytes reach the client during the gap.
      const tHello = r.chunks.find((c) => c.bytes.includes('Hello'))!.at;
      const gapComments = r.chunks.filter((c) => c.at > tHello + 200 && c.at < tHello + 1400 && c.bytes.toString().startsWith(':'));
      if (mode !== 'one-write') assert.ok(gapComments.length >= 1, 'a keep-alive comment arrives during the upstream gap');
      assert.deepEqual(noErrorLogs(g), []);
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'next' })));
      assert.equal((await send({ model: 'test-model', messages: [{ role: 'user', content: 'again' }] })).status, 200);
    });
  }
});

describe('CASE-04: CRLF-framed events and data: without a space', () => {
  const A = CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"A"},"finish_reason":null}]');
  const B = CH('"choices":[{"index":0,"delta":{"content":"B"},"finish_reason":null}]');
  const U = CH('"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}');
  // Writes 150 ms apart (the case says 500 ms; scaled down).
  const gap = 150;
  const writes: Write[] = [
    { text: 'data:' + A + '\r\n\r\n' },
    { after: gap, text: 'data: ' + B + '\r\r' },
    { after: gap, text: 'data:{"id":"chatcmpl-T","object":"chat.completion.chunk","created":1700000000,"model":"mock-llm","choices":[{"index":0,"delta":{},\r' },
    { after: gap, text: '\ndata:"finish_reason":"stop"}]}\r\n\r\n' },
    { after: gap, text: 'data:' + U + '\r\n\r\n' },
    { after: gap, text: 'data:[DONE]\r\n\r\n' },
  ];
  for (const mode of DELIVERY_MODES) {
    test(`AB, stop (two data lines joined), usage 5/2/7, A forwarded before B arrives (${mode})`, async () => {
      mock.enqueue(deliver({ status: 200, headers: SSE, writes }, mode));
      const r = await send({ model: 'test-model', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'Say hi' }] });
      const ev = jsonEvents(r);
      const content = ev.map((e) => ((e['choices'] as Array<{ delta?: { content?: string } }>)[0]?.delta?.content ?? '')).join('');
      assert.equal(content, 'AB');
      assert.equal(r.events.length, 5);
      assert.equal((ev[2]!['choices'] as Array<{ finish_reason: string }>)[0]!.finish_reason, 'stop');
      assert.deepEqual(ev[3]!['usage'], { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 });
      assert.equal(r.events.at(-1)!.data, '[DONE]');
      assert.deepEqual(usageOf(await g.record(reqId(r))), [5, 2, 7]);
      if (mode !== 'one-write') {
        const tA = r.chunks.find((c) => c.bytes.includes('"content":"A"'))!.at;
        const tB = r.chunks.find((c) => c.bytes.includes('"content":"B"'))!.at;
        assert.ok(tB - tA > gap * 0.6, `A was not held back until B (A at ${tA.toFixed(0)}, B at ${tB.toFixed(0)})`);
      }
    });
  }
});

describe('CASE-05: usage-only chunk with empty or missing choices', () => {
  const ok = EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"ok"},"finish_reason":null}],"usage":null'));
  const stop = EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null'));
  const usage = '"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}';
  const variants: Array<[string, string]> = [
    ['A', EV(CH('"choices":[],' + usage))],
    ['A2 (no choices key)', EV(CH(usage))],
    ['A3 (choices null)', EV(CH('"choices":null,' + usage))],
  ];
  const withUsage = { model: 'test-model', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'ok?' }] };
  for (const [name, third] of variants) {
    for (const mode of DELIVERY_MODES) {
      test(`${name}: four events, usage chunk with choices [], ledger +13 once (${mode})`, async () => {
        mock.enqueue(deliver({ status: 200, headers: SSE, writes: [{ text: ok }, { text: stop }, { text: third }, { text: DONE }] }, mode));
        const r = await send(withUsage);
        assert.equal(r.status, 200);
        assert.equal(r.events.length, 4);
        const u = JSON.parse(r.events[2]!.data) as Record<string, unknown>;
        assert.deepEqual(u['choices'], []);
        assert.deepEqual(u['usage'], { prompt_tokens: 12, completion_tokens: 1, total_tokens: 13 });
        assert.equal(r.events[3]!.data, '[DONE]');
        assert.equal((await g.record(reqId(r))).total_tokens, 13);
      });
    }
  }
  test('A through the openai SDK: no TypeError, usage chunk has choices []', async () => {
    mock.enqueue({ status: 200, headers: SSE, writes: [{ text: ok }, { text: stop }, { text: variants[1]![1] }, { text: DONE }] });
    const client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
    const chunks = [];
    for await (const c of await client.chat.completions.create(withUsage as OpenAI.ChatCompletionCreateParamsStreaming)) chunks.push(c);
    assert.deepEqual(chunks.at(-1)!.choices, []);
    assert.equal(chunks.at(-1)!.usage!.total_tokens, 13);
  });
  for (const mode of DELIVERY_MODES) {
    test(`B: client did not opt in → usage chunk removed, ledger still 13 (${mode})`, async () => {
      mock.enqueue(deliver({ status: 200, headers: SSE, writes: [{ text: ok }, { text: stop }, { text: variants[0]![1] }, { text: DONE }] }, mode));
      const r = await send({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'ok?' }] });
      assert.equal(r.events.length, 3);
      for (const e of jsonEvents(r)) assert.equal((e['choices'] as unknown[]).length, 1);
      assert.equal(r.events[2]!.data, '[DONE]');
      assert.equal((await g.record(reqId(r))).total_tokens, 13);
    });
    test(`C: running usage on every chunk → last total 12/1/13, not summed (${mode})`, async () => {
      const run = '"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}';
      const c1 = EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"ok"},"finish_reason":null}],' + run));
      const c2 = EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],' + run));
      mock.enqueue(deliver({ status: 200, headers: SSE, writes: [{ text: c1 }, { text: c2 }, { text: DONE }] }, mode));
      const r = await send(withUsage);
      assert.equal(r.events.length, 3);
      assert.deepEqual(usageOf(await g.record(reqId(r))), [12, 1, 13]);
    });
  }
});

describe('CASE-08: max_tokens vs max_completion_tokens', () => {
  let g8: TestGateway;
  let ollama: MockUpstream;
  let vllm: MockUpstream;
  let ollamaBackstop: MockUpstream;
  before(async () => {
    ollama = await startMockUpstream({ handler: ollamaEmulationHandler() });
    vllm = await startMockUpstream({ handler: ollamaEmulationHandler() });
    ollamaBackstop = await startMockUpstream({ handler: ollamaEmulationHandler({ ignoreMaxTokens: true }) });
    g8 = await startGateway({
      config: {
        backends: [
          { id: 'ollama-local', provider: 'openai-compatible', base_url: ollama.url, capabilities: { token_field: 'max_tokens' } },
          { id: 'vllm-local', provider: 'openai-compatible', base_url: vllm.url },
          { id: 'ollama-backstop', provider: 'openai-compatible', base_url: ollamaBackstop.url, capabilities: { token_field: 'max_tokens' } },
        ],
        models: [
          { name: 'test-ollama', backend: 'ollama-local' },
          { name: 'test-vllm', backend: 'vllm-local' },
          { name: 'test-backstop', backend: 'ollama-backstop' },
        ],
      },
    });
  });
  after(async () => {
    await g8?.close();
    await Promise.all([ollama?.close(), vllm?.close(), ollamaBackstop?.close()]);
  });
  const msgs = [{ role: 'user', content: 'Count from 1 to 400' }];

  test('max_completion_tokens is sent as max_tokens to a max_tokens-only engine', async () => {
    const r = await send({ model: 'test-ollama', stream: false, max_completion_tokens: 10, messages: msgs }, { gw: g8 });
    const sent = ollama.requests.at(-1)!.json() as Record<string, unknown>;
    assert.equal(sent['max_tokens'], 10);
    assert.equal(sent['max_completion_tokens'], undefined);
    const out = r.json() as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
    assert.equal(out.choices[0]!.finish_reason, 'length');
    assert.ok(out.usage.completion_tokens <= 10);
  });
  test('both fields and different: the newer field wins, the engine never sees 50', async () => {
    await send({ model: 'test-ollama', max_tokens: 50, max_completion_tokens: 10, messages: msgs }, { gw: g8 });
    const sent = ollama.requests.at(-1)!.json() as Record<string, unknown>;
    assert.equal(sent['max_tokens'], 10);
    assert.equal(sent['max_completion_tokens'], undefined);
    await send({ model: 'test-vllm', max_tokens: 50, max_completion_tokens: 10, messages: msgs }, { gw: g8 });
    const sentV = vllm.requests.at(-1)!.json() as Record<string, unknown>;
    assert.equal(sentV['max_completion_tokens'], 10);
    assert.equal(sentV['max_tokens'], undefined);
  });
  test('a passthrough engine gets max_completion_tokens unchanged', async () => {
    await send({ model: 'test-vllm', max_completion_tokens: 10, messages: msgs }, { gw: g8 });
    const sent = vllm.requests.at(-1)!.json() as Record<string, unknown>;
    assert.equal(sent['max_completion_tokens'], 10);
    assert.equal(sent['max_tokens'], undefined);
  });
  test('backstop: an engine that ignores both caps is recorded at its actual 400 tokens', async () => {
    const r = await send({ model: 'test-backstop', max_completion_tokens: 10, messages: msgs }, { gw: g8 });
    const rec = await g8.record(reqId(r));
    assert.equal(rec.completion_tokens, 400);
  });
});

describe('CASE-09: unknown and vendor parameters pass through', () => {
  const body = {
    model: 'test-model',
    stream: false,
    messages: [{ role: 'user', content: 'Summarise: woke early, went running, wrote report.' }],
    response_format: {
      type: 'json_schema',
      json_schema: {
        name: 'note',
        strict: true,
        schema: {
          type: 'object',
          properties: { title: { type: 'string' }, email: { type: 'string', format: 'email' }, phone_number: { type: 'string' } },
          required: ['title', 'email', 'phone_number'],
          additionalProperties: false,
        },
      },
    },
    seed: 7,
    logprobs: true,
    top_logprobs: 2,
    parallel_tool_calls: false,
    top_k: 20,
    repetition_penalty: 1.05,
    chat_template_kwargs: { enable_thinking: false },
  };
  test('M receives the client body unchanged apart from model; the response reaches the client unchanged', async () => {
    const content = '{"title":"Morning","email":"x@example.invalid","phone_number":"000"}';
    const upstream = { choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop', logprobs: { content: [] } }], usage: { prompt_tokens: 30, completion_tokens: 20, total_tokens: 50 } };
    mock.enqueue(jsonResponse(200, upstream));
    const r = await send(body);
    assert.equal(r.status, 200);
    assert.deepEqual(mock.requests.at(-1)!.json(), { ...body, model: 'mock-llm' });
    assert.ok(mock.requests.at(-1)!.text().includes('"email":{"type":"string","format":"email"}'));
    assert.deepEqual(r.json(), upstream);
  });
  test('a route that forbids a parameter answers 400 naming it (never strips it silently)', async () => {
    const m2 = await startMockUpstream();
    const g2 = await startGateway({ config: { backends: [{ id: 'm', provider: 'openai-compatible', base_url: m2.url }], models: [{ name: 'strict', backend: 'm', forbid_params: ['logprobs'] }] } });
    try {
      const r = await send({ ...body, model: 'strict' }, { gw: g2 });
      assert.equal(r.status, 400);
      const e = (r.json() as { error: { param: string; code: string; message: string } }).error;
      assert.equal(e.param, 'logprobs');
      assert.equal(e.code, 'forbidden_parameter');
      assert.match(e.message, /logprobs/);
      assert.equal(m2.requests.length, 0);
    } finally {
      await g2.close();
      await m2.close();
    }
  });
});

describe('CASE-10: upstream errors, streaming and not', () => {
  const He = EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"He"},"finish_reason":null}]'));
  const quota = '{"error":{"message":"Synthetic quota exhausted for project p-test","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}';
  const body = { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Hi' }] };
  for (const mode of DELIVERY_MODES) {
    test(`A: error inside the stream reaches the client intact, nothing invented after it (${mode})`, async () => {
      mock.enqueue(deliver({ status: 200, headers: SSE, writes: [{ text: He }, { text: `data: ${quota}\n\n` }], close: 'fin', framing: 'close' }, mode));
      const r = await send(body);
      assert.deepEqual(r.events.map((e) => e.data), [He.slice(6, -2), quota]);
      assert.ok(!r.text().includes('[DONE]') && !r.text().includes('"finish_reason":"stop"'));
      const rec = await g.record(reqId(r));
      assert.equal(rec.outcome, 'upstream_error');
      assert.equal(rec.error_code, 'insufficient_quota');
    });
    test(`B: Responses-style event: error passes through with message and code (${mode})`, async () => {
      const err = 'event: error\ndata: {"type":"error","code":"insufficient_quota","message":"Synthetic quota exhausted for project p-test"}\n\n';
      const failed = 'event: response.failed\ndata: {"type":"response.failed","response":{"id":"resp_T","status":"failed"}}\n\n';
      mock.enqueue(deliver({ status: 200, headers: SSE, writes: [{ text: err }, { text: failed }], close: 'fin', framing: 'close' }, mode));
      const r = await send({ model: 'test-model', stream: true, input: 'Hi' }, { path: '/responses' });
      assert.equal(r.events[0]!.event, 'error');
      const e = JSON.parse(r.events[0]!.data) as Record<string, string>;
      assert.equal(e['code'], 'insufficient_quota');
      assert.equal(e['message'], 'Synthetic quota exhausted for project p-test');
      assert.ok(!r.text().includes('[DONE]'));
      const rec = await g.record(reqId(r));
      assert.equal(rec.outcome, 'upstream_error');
      assert.equal(rec.error_code, 'insufficient_quota');
    });
  }
  test('A through the openai SDK: APIError with the upstream message', async () => {
    mock.enqueue({ status: 200, headers: SSE, writes: [{ text: He }, { text: `data: ${quota}\n\n` }], close: 'fin', framing: 'close' });
    const client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
    await assert.rejects(
      (async () => {
        for await (const _ of await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsStreaming)) void _;
      })(),
      (e: unknown) => e instanceof OpenAI.APIError && /Synthetic quota exhausted/.test(e.message),
    );
  });
  test('C: error before the stream starts → 429 JSON with the same error object and retry-after', async () => {
    mock.enqueue(jsonResponse(429, JSON.parse(quota), [['retry-after', '7']]));
    const r = await send(body);
    assert.equal(r.status, 429);
    assert.match(String(r.headers['content-type']), /application\/json/);
    assert.deepEqual(r.json(), JSON.parse(quota));
    assert.equal(r.headers['retry-after'], '7');
    const client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
    mock.enqueue(jsonResponse(429, JSON.parse(quota)));
    await assert.rejects(client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsStreaming), (e: unknown) => e instanceof OpenAI.RateLimitError && /Synthetic quota/.test(e.message));
  });
  test('D: non-2xx without a stream → same status, body deep-equal, param kept', async () => {
    const bad = { error: { message: 'messages[0].content is invalid', type: 'invalid_request_error', param: 'messages', code: null } };
    mock.enqueue(jsonResponse(400, bad));
    const r = await send({ ...body, stream: false });
    assert.equal(r.status, 400);
    assert.deepEqual(r.json(), bad);
    const rec = await g.record(reqId(r));
    assert.equal(rec.outcome, 'upstream_error');
  });
});

describe('CASE-12: client disconnect cancels the upstream request', () => {
  test('A: non-streaming, upstream silent; client leaves at 1 s → upstream closed within 2 s, 499 recorded, no retry', async () => {
    mock.enqueue({ status: 200, headersAfter: Infinity });
    const before = mock.requests.length;
    const r = await send({ model: 'test-model', stream: false, messages: [{ role: 'user', content: 'Write a long essay' }] }, { abortAfterMs: 1000 });
    assert.ok(r.aborted);
    const up = mock.requests[before]!;
    await mock.waitFor(() => up.closedAt, 3000);
    assert.ok(up.closedAt! - r.abortedAt! <= 2000, `closed ${up.closedAt! - r.abortedAt!} ms after the client`);
    const rec = (await g.records()).find((x) => x.ts >= Date.now() - 5000 && x.status === 499);
    assert.ok(rec, 'a 499 record');
    assert.equal(rec.outcome, 'client_disconnected');
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(mock.requests.length, before + 1, 'no second request to M');
  });
  test('B: streaming, headers then silence; client leaves at 1 s → upstream closed, 499', async () => {
    mock.enqueue({ status: 200, headers: SSE, writes: [], close: 'hang' });
    const before = mock.requests.length;
    const r = await send({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Write a long essay' }] }, { abortAfterMs: 1000 });
    const up = mock.requests[before]!;
    await mock.waitFor(() => up.closedAt, 3000);
    assert.ok(up.closedAt! - r.abortedAt! <= 2000);
    const rec = await g.record(reqId(r));
    assert.equal(rec.status, 499);
    assert.equal(rec.outcome, 'client_disconnected');
    assert.equal(mock.requests.length, before + 1);
  });
  test('C: mid-generation; client leaves after five events → upstream closed, at least 5 completion tokens charged', async () => {
    const writes: Write[] = [];
    for (let i = 0; i < 600; i++) writes.push({ after: i === 0 ? 0 : 100, text: EV(CH(`"choices":[{"index":0,"delta":{"content":"w${i} "},"finish_reason":null}]`)) });
    mock.enqueue({ status: 200, headers: SSE, writes });
    const before = mock.requests.length;
    const r = await send({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'Write a long essay' }] }, { abortAfterEvents: 5 });
    const up = mock.requests[before]!;
    await mock.waitFor(() => up.closedAt, 3000);
    assert.ok(up.closedAt! - r.abortedAt! <= 2000);
    const rec = await g.record(reqId(r));
    assert.equal(rec.status, 499);
    assert.equal(rec.outcome, 'client_disconnected');
    assert.ok((rec.completion_tokens ?? 0) >= 5, `charged ${rec.completion_tokens}`);
    assert.equal(rec.usage_source, 'estimate');
    assert.equal(mock.requests.length, before + 1);
  });
});

describe('CASE-13: idle vs total timeouts on every streaming route', () => {
  // The case's 5 s / 3 s / 1 s figures scaled by 1/5: non-stream total 1 s, idle 600 ms, deltas every 200 ms.
  let g13: TestGateway;
  let m13: MockUpstream;
  before(async () => {
    m13 = await startMockUpstream();
    g13 = await startGateway({ config: mockConfig(m13.url, { timeouts: { total_ms: 1000, idle_ms: 600 } }, { server: { sse_heartbeat_ms: 0 } }), env: MOCK_ENV });
  });
  after(async () => {
    await g13?.close();
    await m13?.close();
  });
  const delta = (i: number) => EV(CH(`"choices":[{"index":0,"delta":{"content":"d${i}"},"finish_reason":null}]`));
  const routes: Array<[string, Record<string, unknown>]> = [
    ['/chat/completions', { messages: [{ role: 'user', content: 'Long answer' }] }],
    ['/completions', { prompt: 'Long answer' }],
    ['/responses', { input: 'Long answer' }],
  ];
  for (const [path, extra] of routes) {
    test(`${path} A: a 2.4 s stream outlives the 1 s request timeout`, async () => {
      const writes: Write[] = [];
      for (let i = 0; i < 12; i++) writes.push({ after: 200, text: delta(i) });
      writes.push({ text: EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]')) }, { text: DONE });
      m13.enqueue({ status: 200, headers: SSE, writes });
      const r = await send({ model: 'test-model', stream: true, ...extra }, { path, gw: g13 });
      assert.equal(r.events.length, 14);
      assert.equal(r.events.at(-1)!.data, '[DONE]');
      assert.equal((await g13.record(reqId(r))).outcome, 'ok');
    });
    test(`${path} B: 1 s of silence → timeout error event after ~600 ms, no [DONE], upstream aborted`, async () => {
      m13.enqueue({ status: 200, headers: SSE, writes: [{ text: delta(1) }, { text: delta(2) }, { after: 1000, text: delta(3) }, { text: DONE }] });
      const before = m13.requests.length;
      const r = await send({ model: 'test-model', stream: true, ...extra }, { path, gw: g13 });
      const last = r.events.at(-1)!;
      const err = (JSON.parse(last.data) as { error: { type: string; code: string; message: string } }).error;
      assert.equal(err.type, 'timeout');
      assert.equal(err.code, 'upstream_idle_timeout');
      assert.ok(!r.text().includes('[DONE]') && !r.text().includes('"finish_reason":"stop"'));
      const t2 = r.chunks.find((c) => c.bytes.includes('"d2"'))!.at;
      const tErr = r.chunks.find((c) => c.bytes.includes('upstream_idle_timeout'))!.at;
      assert.ok(tErr - t2 > 450 && tErr - t2 < 900, `error after ${(tErr - t2).toFixed(0)} ms of silence`);
      const up = m13.requests[before]!;
      await m13.waitFor(() => up.closedAt, 2000);
      assert.ok(up.aborted, 'G aborted its connection to M');
      const rec = await g13.record(reqId(r));
      assert.equal(rec.outcome, 'upstream_idle_timeout');
    });
    test(`${path} C: comments during the gap count as liveness; the stream completes`, async () => {
      const writes: Write[] = [{ text: delta(1) }, { text: delta(2) }];
      for (let i = 0; i < 5; i++) writes.push({ after: 200, text: ': keep-alive\n\n' });
      writes.push({ after: 200, text: delta(3) }, { text: DONE });
      m13.enqueue({ status: 200, headers: SSE, writes });
      const r = await send({ model: 'test-model', stream: true, ...extra }, { path, gw: g13 });
      assert.deepEqual(r.events.map((e) => e.data).slice(-2), [delta(3).slice(6, -2), '[DONE]']);
      assert.equal((await g13.record(reqId(r))).outcome, 'ok');
    });
  }
  test('non-streaming requests do honour the total timeout: 504 upstream_timeout', async () => {
    m13.enqueue({ status: 200, headersAfter: Infinity });
    const r = await send({ model: 'test-model', messages: [{ role: 'user', content: 'x' }] }, { gw: g13 });
    assert.equal(r.status, 504);
    assert.equal((r.json() as { error: { code: string } }).error.code, 'upstream_timeout');
  });
  test('x-sovra-timeout-ms shortens the deadline, bounded by the operator maximum', async () => {
    m13.enqueue({ status: 200, headersAfter: Infinity });
    const t0 = performance.now();
    const r = await rawRequest(`${g13.baseURL}/chat/completions`, { headers: { ...auth(g13), 'x-sovra-timeout-ms': '200' }, json: { model: 'test-model', messages: [{ role: 'user', content: 'x' }] } });
    assert.equal(r.status, 504);
    assert.ok(performance.now() - t0 < 800);
    const bad = await rawRequest(`${g13.baseURL}/chat/completions`, { headers: { ...auth(g13), 'x-sovra-timeout-ms': 'soon' }, json: { model: 'test-model', messages: [{ role: 'user', content: 'x' }] } });
    assert.equal(bad.status, 400);
  });
});

describe('CASE-15: credentials and hop-by-hop headers never reach the upstream', () => {
  const headers: Array<[string, string]> = [
    ['Authorization', 'Bearer PLACEHOLDER'],
    ['x-api-key', 'client-other-secret-AAA'],
    ['api-key', 'client-azure-secret-BBB'],
    ['x-goog-api-key', 'client-google-secret-CCC'],
    ['Proxy-Authorization', 'Basic c3ludGg6dGVzdA=='],
    ['Cookie', 'sid=synthetic-session'],
    ['Connection', 'keep-alive, X-Hop'],
    ['X-Hop', 'drop-me'],
    ['x-request-id', 'req-123'],
    ['content-type', 'application/json'],
  ];
  const body = { model: 'test-model', messages: [{ role: 'user', content: 'Hi' }] };
  const withKey = () => headers.map(([k, v]) => [k, k === 'Authorization' ? `Bearer ${g.key}` : v] as [string, string]);
  test('M sees exactly one Authorization (the backend credential) and none of the client secrets', async () => {
    mock.enqueue(jsonResponse(200, chatCompletion()));
    const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: withKey(), json: body });
    assert.equal(r.status, 200);
    const up = mock.requests.at(-1)!;
    assert.deepEqual(up.headerValues('authorization'), ['Bearer up-cred-TEST-9999']);
    const raw = up.rawRequest.toString('latin1');
    for (const s of [g.key, 'client-other-secret-AAA', 'client-azure-secret-BBB', 'client-google-secret-CCC', 'c3ludGg6dGVzdA==', 'synthetic-session'])
      assert.ok(!raw.includes(s), `${s.slice(0, 12)}… must not reach M`);
    const names = up.rawHeaders.map(([k]) => k.toLowerCase());
    for (const h of ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'x-hop', 'cookie'])
      if (h !== 'connection') assert.ok(!names.includes(h), `${h} not forwarded`);
    assert.ok(!up.headerValues('connection').some((v) => /x-hop/i.test(v)));
    assert.equal(up.headers['host'], new URL(mock.url).host);
    assert.equal(Number(up.headers['content-length']), up.body.length);
    // Pinned: x-request-id is replaced by Sovra's own request id (also returned to the client).
    assert.deepEqual(up.headerValues('x-request-id'), [reqId(r)]);
    assert.notEqual(reqId(r), 'req-123');
    assert.equal((up.json() as Record<string, unknown>)['user'], undefined, 'Sovra does not fill the user field');
  });
  test('variant U: upstream 401 quoting its credential → 502 that leaks no part of it', async () => {
    mock.enqueue(jsonResponse(401, { error: { message: 'Incorrect API key provided: up-cred-TEST-9999', type: 'invalid_request_error', code: 'invalid_api_key' } }));
    const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: withKey(), json: body });
    assert.equal(r.status, 502);
    const text = r.text();
    const secret = 'up-cred-TEST-9999';
    for (let i = 0; i + 5 <= secret.length; i++) assert.ok(!text.includes(secret.slice(i, i + 5)), 'no 5-character piece of the credential');
    assert.equal((r.json() as { error: { code: string } }).error.code, 'upstream_auth_failed');
    assert.ok(!g.logs().join('\n').includes(secret));
  });
  test('a route configured to pass a named header through (bring-your-own-key) forwards only that one', async () => {
    const m2 = await startMockUpstream();
    const g2 = await startGateway({ config: { backends: [{ id: 'byok', provider: 'openai-compatible', base_url: m2.url, forward_headers: ['x-api-key'] }], models: [{ name: 'test-model', backend: 'byok' }] } });
    try {
      m2.enqueue(jsonResponse(200, chatCompletion()));
      const r = await rawRequest(`${g2.baseURL}/chat/completions`, { headers: headers.map(([k, v]) => [k, k === 'Authorization' ? `Bearer ${g2.key}` : v] as [string, string]), json: body });
      assert.equal(r.status, 200);
      const up = m2.requests.at(-1)!;
      assert.deepEqual(up.headerValues('x-api-key'), ['client-other-secret-AAA']);
      assert.deepEqual(up.headerValues('authorization'), []);
      assert.ok(!up.rawRequest.toString('latin1').includes(g2.key));
      assert.ok(!up.rawRequest.toString('latin1').includes('client-azure-secret-BBB'));
    } finally {
      await g2.close();
      await m2.close();
    }
  });
});
