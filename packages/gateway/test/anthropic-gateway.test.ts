/**
 * The Anthropic adapter end to end, through the real gateway (HTTP on 127.0.0.1) in front of a
 * scripted Anthropic Messages API upstream (`POST /v1/messages`, non-stream and stream in Anthropic's
 * event format, checking `x-api-key` and `anthropic-version`):
 * - a non-stream chat completion: the client gets an OpenAI `chat.completion`; the record carries
 *   Anthropic's input/output tokens and the backend; the upstream got a correct Messages request;
 * - a streamed answer with two tool calls whose arguments arrive as partial JSON over many deltas,
 *   read with the official `openai` SDK (raw chunks and the `.stream()` helper), with and without
 *   `stream_options.include_usage`: usage charged once, shown only to the client that asked; then the
 *   tool results sent back (tool_use / tool_result blocks upstream);
 * - a weighted pool mixing an openai-compatible upstream and the Anthropic one (both serve);
 * - Anthropic 529 `overloaded_error`: retried on the other pool member, or a 503 in OpenAI's shape
 *   when the Anthropic backend is alone;
 * - the Anthropic API key never appears in a response, a log line or a request record (also when
 *   the upstream quotes it back).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { scriptedUpstream, type ScriptedUpstream } from './helpers/upstreams.ts';
import { createKey } from '../src/keys/keys.ts';
import { createBudget, listBudgets } from '../src/metering/index.ts';
import { createAdmin } from '../src/tenancy/index.ts';

/** The Anthropic credential (test-only, random per run): must never come back from the gateway. */
const ANTHROPIC_KEY = `sk-ant-api03-TESTONLY-${randomBytes(16).toString('hex')}`;
const ANTHROPIC_VERSION = '2023-06-01';
const ANTHROPIC_BETA = 'fine-grained-tool-streaming-2025-05-14';

// ---------------------------------------------------------------------------------------------------
// Scripted Anthropic Messages API upstream
// ---------------------------------------------------------------------------------------------------

interface SeenMessage {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Parsed body (POST only). */
  json: Record<string, any>;
  /** Whether `x-api-key` and `anthropic-version` were right. */
  authorized: boolean;
}

/** How the upstream answers `POST /v1/messages`. */
type AnthropicMode =
  | 'ok'
  /** 529 `overloaded_error`, as api.anthropic.com sends when overloaded. */
  | 'overloaded'
  /** Quotes the `x-api-key` it received back, in a 400 error (non-stream) or in one text delta (stream). */
  | 'echo_key'
  /** Streams a text that quotes the `x-api-key` it received, cut over several text deltas. */
  | 'echo_key_split';

interface AnthropicUpstream {
  /** `http://127.0.0.1:PORT` (the adapter appends `/v1/messages`). */
  readonly url: string;
  readonly seen: SeenMessage[];
  /** `POST /v1/messages` requests only. */
  messages(): SeenMessage[];
  mode: AnthropicMode;
  close(): Promise<void>;
}

/** Tool-call arguments of the scripted tool-use answer, exactly as the model "types" them. */
const WEATHER_ARGS = '{"location": "Kuala Lumpur, MY", "unit": "celsius"}';
const TIME_ARGS = '{"timezone": "Asia/Kuala_Lumpur", "format": "24h"}';
/**
 * Usage of the tool-use answer: message_start input_tokens (+ cache reads), then message_delta's
 * final (cumulative) output_tokens.
 */
const TOOL_USAGE = { input: 100, cacheRead: 20, output: 57 };
/** Usage of the plain text answer. */
const TEXT_USAGE = { input: 21, output: 9 };
/** The OpenAI usage the adapter must report: prompt = input + cache creation + cache read. */
const TEXT_OPENAI_USAGE = { prompt_tokens: 21, completion_tokens: 9, total_tokens: 30, prompt_tokens_details: { cached_tokens: 0 } };
const TOOL_OPENAI_USAGE = { prompt_tokens: 120, completion_tokens: 57, total_tokens: 177, prompt_tokens_details: { cached_tokens: 20 } };

const sse = (type: string, data: Record<string, unknown>) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/** Split a string into pieces of at most `n` characters. */
const pieces = (s: string, n: number): string[] => Array.from({ length: Math.ceil(s.length / n) }, (_, i) => s.slice(i * n, (i + 1) * n));

/** True when the request's last turn carries tool results (the client is answering tool calls). */
function answersTools(body: Record<string, any>): boolean {
  const last = body['messages']?.at(-1);
  return Array.isArray(last?.content) && last.content.some((b: { type?: string }) => b.type === 'tool_result');
}

function textMessage(model: string, text: string): Record<string, unknown> {
  return {
    id: `msg_01${randomBytes(8).toString('hex')}`,
    type: 'message',
    role: 'assistant',
    model,
    content: [{ type: 'text', text }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: TEXT_USAGE.input, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: TEXT_USAGE.output },
  };
}

/** The Anthropic event stream of a text answer, `chunk` characters per text delta. */
function textStream(model: string, text: string, chunk = 6): string[] {
  const out = [
    sse('message_start', {
      message: { id: 'msg_01TEXT', type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: TEXT_USAGE.input, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 } },
    }),
    sse('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    sse('ping', {}),
  ];
  for (const p of pieces(text, chunk)) out.push(sse('content_block_delta', { index: 0, delta: { type: 'text_delta', text: p } }));
  out.push(
    sse('content_block_stop', { index: 0 }),
    sse('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: TEXT_USAGE.output } }),
    sse('message_stop', {}),
  );
  return out;
}

/** The Anthropic event stream of a text block then two tool_use blocks, arguments 3 characters per delta. */
function toolStream(model: string): string[] {
  const out = [
    sse('message_start', {
      message: { id: 'msg_01TOOLS', type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: TOOL_USAGE.input, cache_creation_input_tokens: 0, cache_read_input_tokens: TOOL_USAGE.cacheRead, output_tokens: 2 } },
    }),
    sse('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    sse('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Let me check ' } }),
    sse('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'both.' } }),
    sse('content_block_stop', { index: 0 }),
    sse('ping', {}),
  ];
  const tool = (index: number, id: string, name: string, args: string) => {
    out.push(sse('content_block_start', { index, content_block: { type: 'tool_use', id, name, input: {} } }));
    // api.anthropic.com starts every tool input with an empty partial_json.
    out.push(sse('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: '' } }));
    for (const p of pieces(args, 3)) out.push(sse('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: p } }));
    out.push(sse('content_block_stop', { index }));
  };
  tool(1, 'toolu_01WeatherAAAA', 'get_weather', WEATHER_ARGS);
  tool(2, 'toolu_01TimeBBBBBBB', 'get_time', TIME_ARGS);
  out.push(
    sse('message_delta', { delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: TOOL_USAGE.output } }),
    sse('message_stop', {}),
  );
  return out;
}

async function anthropicUpstream(): Promise<AnthropicUpstream> {
  const sockets = new Set<import('node:net').Socket>();
  const u: AnthropicUpstream = {
    url: '',
    seen: [],
    mode: 'ok',
    messages: () => u.seen.filter((s) => s.method === 'POST' && s.path === '/v1/messages'),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${randomBytes(6).toString('hex')}`, ...headers });
    res.end(JSON.stringify(body));
  };
  const anthropicError = (res: http.ServerResponse, status: number, type: string, message: string) => json(res, status, { type: 'error', error: { type, message } });

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let parsed: Record<string, any> = {};
        try {
          parsed = body ? (JSON.parse(body) as Record<string, any>) : {};
        } catch {
          /* answered below */
        }
        const authorized = req.headers['x-api-key'] === ANTHROPIC_KEY && req.headers['anthropic-version'] === ANTHROPIC_VERSION;
        u.seen.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, json: parsed, authorized });
        if (req.headers['x-api-key'] !== ANTHROPIC_KEY) return anthropicError(res, 401, 'authentication_error', 'invalid x-api-key');
        if (req.headers['anthropic-version'] !== ANTHROPIC_VERSION) return anthropicError(res, 400, 'invalid_request_error', 'anthropic-version: unsupported or missing');
        if (req.method === 'GET' && req.url === '/v1/models') return json(res, 200, { data: [], has_more: false, first_id: null, last_id: null });
        if (req.method !== 'POST' || req.url !== '/v1/messages') return anthropicError(res, 404, 'not_found_error', 'Not found');
        if (typeof parsed['model'] !== 'string' || !Array.isArray(parsed['messages']) || typeof parsed['max_tokens'] !== 'number')
          return anthropicError(res, 400, 'invalid_request_error', 'model, messages and max_tokens are required');
        if (u.mode === 'overloaded') return anthropicError(res, 529, 'overloaded_error', 'Overloaded');
        const model = parsed['model'] as string;
        if (u.mode === 'echo_key' && parsed['stream'] !== true)
          return anthropicError(res, 400, 'invalid_request_error', `request with x-api-key ${String(req.headers['x-api-key'])} is malformed`);

        if (parsed['stream'] !== true) {
          if (answersTools(parsed)) return json(res, 200, textMessage(model, 'It is 31°C in Kuala Lumpur; the time there is 14:05.'));
          if (Array.isArray(parsed['tools'])) {
            return json(res, 200, {
              ...textMessage(model, 'Let me check both.'),
              content: [
                { type: 'text', text: 'Let me check both.' },
                { type: 'tool_use', id: 'toolu_01WeatherAAAA', name: 'get_weather', input: JSON.parse(WEATHER_ARGS) },
                { type: 'tool_use', id: 'toolu_01TimeBBBBBBB', name: 'get_time', input: JSON.parse(TIME_ARGS) },
              ],
              stop_reason: 'tool_use',
            });
          }
          return json(res, 200, textMessage(model, 'Kuala Lumpur.'));
        }

        const events =
          u.mode === 'echo_key'
            ? textStream(model, `your key is ${String(req.headers['x-api-key'])} ok`, 1_000)
            : u.mode === 'echo_key_split'
              ? textStream(model, `your key is ${String(req.headers['x-api-key'])} ok`, 6)
              : Array.isArray(parsed['tools']) && !answersTools(parsed)
              ? toolStream(model)
              : textStream(model, 'Kuala Lumpur.');
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': 'req_stream' });
        // Each event in two writes, a pause between them: events are cut across TCP reads.
        for (const ev of events) {
          const mid = Math.ceil(ev.length / 2);
          res.write(ev.slice(0, mid));
          await sleep(1);
          res.write(ev.slice(mid));
          await sleep(1);
        }
        res.end();
      })();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (u as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return u;
}

// ---------------------------------------------------------------------------------------------------
// Gateway, clients, and a transcript of everything the gateway answered
// ---------------------------------------------------------------------------------------------------

const TOOLS: OpenAI.Chat.Completions.ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } }, required: ['location'] },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_time',
      description: 'Local time in a time zone',
      parameters: { type: 'object', properties: { timezone: { type: 'string' }, format: { type: 'string' } }, required: ['timezone'] },
    },
  },
];
const TOOL_PROMPT: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You are a travel assistant. Use tools.' },
  { role: 'user', content: 'Weather and local time in Kuala Lumpur?' },
];

let anth: AnthropicUpstream;
let oa: ScriptedUpstream;
let g: TestGateway;
/** Status line, headers and body of every response the gateway sent in this file. */
const transcripts: string[] = [];
const pendingTranscripts: Promise<unknown>[] = [];

/** A fetch that keeps a copy of every response (headers and full body, streams included). */
const recordingFetch: typeof fetch = async (input, init) => {
  const r = await fetch(input, init);
  const head = `${r.status} ${JSON.stringify([...r.headers.entries()])}\n`;
  pendingTranscripts.push(
    r
      .clone()
      .text()
      .then(
        (t) => transcripts.push(head + t),
        () => transcripts.push(head),
      ),
  );
  return r;
};

function sdk(key: string): OpenAI {
  return new OpenAI({ apiKey: key, baseURL: g.baseURL, maxRetries: 0, fetch: recordingFetch });
}

async function chat(model: string, body: Record<string, unknown> = {}, key = g.key) {
  const r = await recordingFetch(`${g.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'What is the capital of Malaysia?' }], ...body }),
  });
  const text = await r.text();
  return { status: r.status, text, headers: r.headers, json: (text.startsWith('{') ? JSON.parse(text) : null) as Record<string, any> | null, id: r.headers.get('x-request-id')! };
}

/** A fresh key with a large token budget (to see what metering charged). */
async function meteredKey(name: string) {
  const k = await createKey(g.gw.store(), { tenant: 'test', name });
  await createBudget(g.gw.store(), { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 10_000_000, period: 'month' });
  return k;
}
async function budgetOf(keyId: string) {
  await g.gw.metering()?.flush(); // this process's allotments: write usage, give back the rest
  const [state] = await listBudgets(g.gw.store(), { scopes: [{ kind: 'key', id: keyId }] });
  return state!;
}
/** Records of one key, waiting up to 2 s for `n` of them. */
async function recordsOf(keyId: string, n: number) {
  const until = Date.now() + 2000;
  for (;;) {
    const rows = (await g.records()).filter((r) => r.key_id === keyId);
    if (rows.length >= n || Date.now() > until) return rows;
    await sleep(20);
  }
}

/** The OpenAI error shape, exactly: `{error:{message,type,param,code}}`. */
function assertOpenAiError(json: Record<string, any> | null, code: string) {
  assert.ok(json, 'a JSON body');
  assert.deepEqual(Object.keys(json), ['error']);
  assert.deepEqual(Object.keys(json['error']).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(json['error'].code, code);
  assert.equal(typeof json['error'].message, 'string');
  assert.ok(json['error'].message.length > 0);
}

before(async () => {
  anth = await anthropicUpstream();
  oa = await scriptedUpstream('oa');
  // A high breaker threshold: the 529 tests must not eject the Anthropic backend for the tests after them.
  const breaker = { failures: 100, open_ms: 1000, max_open_ms: 1000 };
  const retry = { attempts: 3, base_ms: 0, max_ms: 0 };
  g = await startGateway({
    logLevel: 'debug',
    env: { ...process.env, ANTHROPIC_TEST_KEY: ANTHROPIC_KEY },
    config: {
      backends: [
        {
          id: 'claude',
          provider: 'anthropic',
          base_url: anth.url,
          api_key_env: 'ANTHROPIC_TEST_KEY',
          anthropic_version: ANTHROPIC_VERSION,
          headers: { 'anthropic-beta': ANTHROPIC_BETA },
          jurisdiction: 'US',
          hosting: 'foreign_hosted',
          breaker,
        },
        { id: 'oa', provider: 'openai-compatible', base_url: oa.url, jurisdiction: 'MY', breaker },
      ],
      models: [
        { name: 'claude', backend: 'claude', upstream_model: 'claude-sonnet-4-5', retry },
        { name: 'mixed', strategy: 'weighted', retry, pool: [{ backend: 'oa', upstream_model: 'oa-llm' }, { backend: 'claude', upstream_model: 'claude-haiku-4-5' }] },
        // Claude first (weight 1000 : 1), oa behind it: for deterministic retry tests.
        { name: 'claude-first', strategy: 'weighted', retry, pool: [{ backend: 'claude', weight: 1000, upstream_model: 'claude-haiku-4-5' }, { backend: 'oa', weight: 1, upstream_model: 'oa-llm' }] },
      ],
    },
  });
});
after(async () => {
  await g?.close();
  await anth?.close();
  await oa?.stop();
});

// ---------------------------------------------------------------------------------------------------

describe('Anthropic backend through the gateway', () => {
  test('non-stream: OpenAI chat.completion to the client, Anthropic usage in the record, a correct Messages request upstream', async () => {
    const n0 = anth.messages().length;
    const client = sdk(g.key);
    const { data, response } = await client.chat.completions
      .create({
        model: 'claude',
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: 'What is the capital of Malaysia?' },
        ],
        max_completion_tokens: 300,
        temperature: 0.2,
        stop: ['\n\n'],
        user: 'citizen-42',
      })
      .withResponse();
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(data.object, 'chat.completion');
    assert.match(data.id, /^chatcmpl-/);
    assert.equal(data.model, 'claude-sonnet-4-5');
    assert.equal(typeof data.created, 'number');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0]!.index, 0);
    assert.equal(data.choices[0]!.finish_reason, 'stop');
    assert.equal(data.choices[0]!.message.role, 'assistant');
    assert.equal(data.choices[0]!.message.content, 'Kuala Lumpur.');
    assert.equal(data.choices[0]!.message.tool_calls, undefined);
    assert.deepEqual(data.usage, TEXT_OPENAI_USAGE);

    const id = response.headers.get('x-request-id')!;
    const rec = await g.record(id);
    assert.equal(rec.status, 200);
    assert.equal(rec.outcome, 'ok');
    assert.equal(rec.model, 'claude');
    assert.equal(rec.backend_id, 'claude');
    assert.equal(rec.upstream_model, 'claude-sonnet-4-5');
    assert.equal(rec.stream, 0);
    assert.equal(rec.prompt_tokens, TEXT_USAGE.input);
    assert.equal(rec.completion_tokens, TEXT_USAGE.output);
    assert.equal(rec.total_tokens, TEXT_USAGE.input + TEXT_USAGE.output);
    assert.equal(rec.usage_source, 'upstream');

    // What api.anthropic.com would have received.
    assert.equal(anth.messages().length, n0 + 1, 'exactly one upstream call');
    const up = anth.messages().at(-1)!;
    assert.ok(up.authorized, 'x-api-key and anthropic-version were right');
    assert.equal(up.headers['x-api-key'], ANTHROPIC_KEY);
    assert.equal(up.headers['anthropic-version'], ANTHROPIC_VERSION);
    assert.equal(up.headers['anthropic-beta'], ANTHROPIC_BETA, 'the static header from the config');
    assert.match(String(up.headers['content-type']), /^application\/json/);
    assert.equal(up.headers['x-request-id'], id, 'the gateway request id goes upstream');
    assert.equal(up.headers['authorization'], undefined, "the client's Sovra key is not forwarded");
    assert.ok(!JSON.stringify(up.headers).includes(g.key));
    assert.deepEqual(up.json, {
      model: 'claude-sonnet-4-5',
      max_tokens: 300,
      system: 'You are terse.',
      messages: [{ role: 'user', content: 'What is the capital of Malaysia?' }],
      temperature: 0.2,
      stop_sequences: ['\n\n'],
      metadata: { user_id: 'citizen-42' },
    });
  });

  test('non-stream without a cap: max_tokens is set anyway (Anthropic requires it)', async () => {
    const r = await chat('claude', { messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: 'Capital?' }] });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json!['choices'][0].message.content, 'Kuala Lumpur.');
    const up = anth.messages().at(-1)!.json;
    assert.equal(typeof up['max_tokens'], 'number');
    assert.ok(up['max_tokens'] > 0);
    assert.equal(up['system'], 'Be brief.');
    assert.equal('stream' in up, false);
    assert.equal('max_completion_tokens' in up, false);
  });

  test('stream with two tool calls via the openai SDK, no include_usage: deltas assemble into the calls, usage charged once and not shown', async () => {
    const k = await meteredKey('tools-no-usage');
    const client = sdk(k.key);
    const n0 = anth.messages().length;
    const stream = await client.chat.completions.create({ model: 'claude', messages: TOOL_PROMPT, tools: TOOLS, tool_choice: 'auto', stream: true, max_tokens: 1024 });
    const calls: Array<{ id?: string; name?: string; type?: string; args: string }> = [];
    const ids = new Set<string>();
    let argDeltas = 0;
    let content = '';
    let finish: string | null = null;
    let chunks = 0;
    let usageChunks = 0;
    for await (const c of stream) {
      chunks++;
      ids.add(c.id);
      assert.equal(c.object, 'chat.completion.chunk');
      if (c.usage) usageChunks++;
      assert.equal(c.choices.length, 1, 'no usage-only chunk for a client that did not ask');
      const ch = c.choices[0]!;
      content += ch.delta.content ?? '';
      for (const tc of ch.delta.tool_calls ?? []) {
        const s = (calls[tc.index] ??= { args: '' });
        if (tc.id) s.id = tc.id;
        if (tc.type) s.type = tc.type;
        if (tc.function?.name) s.name = tc.function.name;
        if (tc.function?.arguments) {
          s.args += tc.function.arguments;
          argDeltas++;
        }
      }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    assert.equal(ids.size, 1, 'every chunk has the same completion id');
    assert.equal(usageChunks, 0);
    assert.equal(content, 'Let me check both.');
    assert.equal(finish, 'tool_calls');
    assert.equal(calls.length, 2);
    assert.deepEqual(
      calls.map((c) => ({ id: c.id, type: c.type, name: c.name })),
      [
        { id: 'toolu_01WeatherAAAA', type: 'function', name: 'get_weather' },
        { id: 'toolu_01TimeBBBBBBB', type: 'function', name: 'get_time' },
      ],
    );
    assert.equal(calls[0]!.args, WEATHER_ARGS, 'the partial JSON concatenates to the exact arguments');
    assert.equal(calls[1]!.args, TIME_ARGS);
    assert.deepEqual(JSON.parse(calls[0]!.args), { location: 'Kuala Lumpur, MY', unit: 'celsius' });
    assert.deepEqual(JSON.parse(calls[1]!.args), { timezone: 'Asia/Kuala_Lumpur', format: '24h' });
    assert.ok(argDeltas >= 30, `arguments arrived over many deltas (${argDeltas})`);
    assert.ok(chunks > argDeltas);

    // Upstream: one streamed Messages request with the tools translated.
    assert.equal(anth.messages().length, n0 + 1);
    const up = anth.messages().at(-1)!;
    assert.ok(up.authorized);
    assert.match(String(up.headers['accept']), /text\/event-stream/);
    assert.equal(up.json['stream'], true);
    assert.equal(up.json['model'], 'claude-sonnet-4-5');
    assert.equal(up.json['max_tokens'], 1024);
    assert.equal(up.json['system'], 'You are a travel assistant. Use tools.');
    assert.equal('stream_options' in up.json, false, 'no OpenAI-only field reaches Anthropic');
    assert.deepEqual(up.json['tool_choice'], { type: 'auto' });
    assert.deepEqual(
      up.json['tools'],
      TOOLS.map((t) => ({ name: (t as any).function.name, description: (t as any).function.description, input_schema: (t as any).function.parameters })),
    );

    const [rec] = await recordsOf(k.id, 1);
    assert.ok(rec);
    assert.equal(rec.status, 200);
    assert.equal(rec.outcome, 'ok');
    assert.equal(rec.stream, 1);
    assert.equal(rec.backend_id, 'claude');
    assert.equal(rec.upstream_model, 'claude-sonnet-4-5');
    assert.equal(rec.prompt_tokens, TOOL_OPENAI_USAGE.prompt_tokens, 'input_tokens + cache_read_input_tokens');
    assert.equal(rec.completion_tokens, TOOL_USAGE.output, "message_delta's output_tokens (cumulative), not a sum");
    assert.equal(rec.total_tokens, TOOL_OPENAI_USAGE.total_tokens);
    assert.equal(rec.usage_source, 'upstream');
    const b = await budgetOf(k.id);
    assert.equal(b.used, TOOL_OPENAI_USAGE.total_tokens, 'charged once');
    assert.equal(b.reserved, 0);
  });

  test('stream with two tool calls via the SDK stream helper, include_usage: one usage chunk at the end, charged once', async () => {
    const k = await meteredKey('tools-usage');
    const client = sdk(k.key);
    const stream = client.chat.completions.stream({
      model: 'claude',
      messages: TOOL_PROMPT,
      tools: TOOLS,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 1024,
    });
    const argEvents: string[] = [];
    stream.on('tool_calls.function.arguments.delta', (e) => argEvents.push(e.arguments_delta));
    const usageChunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      if (c.usage) usageChunks.push(c);
    }
    const final = await stream.finalChatCompletion();
    const msg = final.choices[0]!.message;
    assert.equal(final.choices[0]!.finish_reason, 'tool_calls');
    assert.equal(msg.content, 'Let me check both.');
    const tc = (msg.tool_calls ?? []) as Array<OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall>;
    assert.deepEqual(
      tc.map((t) => [t.id, t.type, t.function.name, JSON.parse(t.function.arguments)]),
      [
        ['toolu_01WeatherAAAA', 'function', 'get_weather', { location: 'Kuala Lumpur, MY', unit: 'celsius' }],
        ['toolu_01TimeBBBBBBB', 'function', 'get_time', { timezone: 'Asia/Kuala_Lumpur', format: '24h' }],
      ],
    );
    assert.ok(argEvents.length >= 30, `the SDK saw many argument deltas (${argEvents.length})`);
    assert.equal(usageChunks.length, 1, 'exactly one usage chunk');
    const u = usageChunks[0]!;
    assert.deepEqual(u.choices, [], 'the usage chunk is usage-only');
    assert.deepEqual(u.usage, TOOL_OPENAI_USAGE);
    assert.deepEqual(final.usage, TOOL_OPENAI_USAGE, "the SDK's final completion carries it");
    assert.ok(chunks > 30);

    const [rec] = await recordsOf(k.id, 1);
    assert.ok(rec);
    assert.equal(rec.status, 200);
    assert.equal(rec.stream, 1);
    assert.equal(rec.total_tokens, TOOL_OPENAI_USAGE.total_tokens);
    assert.equal(rec.prompt_tokens, TOOL_OPENAI_USAGE.prompt_tokens);
    assert.equal(rec.completion_tokens, TOOL_OPENAI_USAGE.completion_tokens);
    const b = await budgetOf(k.id);
    assert.equal(b.used, TOOL_OPENAI_USAGE.total_tokens, 'charged once');
    assert.equal(b.reserved, 0);

    // The client answers the tool calls: Anthropic gets tool_use and tool_result blocks.
    const followUp = await client.chat.completions.create({
      model: 'claude',
      tools: TOOLS,
      messages: [
        ...TOOL_PROMPT,
        { role: 'assistant', content: msg.content, tool_calls: tc.map((t) => ({ id: t.id, type: 'function' as const, function: { name: t.function.name, arguments: t.function.arguments } })) },
        { role: 'tool', tool_call_id: 'toolu_01WeatherAAAA', content: '31°C, humid' },
        { role: 'tool', tool_call_id: 'toolu_01TimeBBBBBBB', content: '14:05' },
      ],
    });
    assert.equal(followUp.choices[0]!.message.content, 'It is 31°C in Kuala Lumpur; the time there is 14:05.');
    const up = anth.messages().at(-1)!.json;
    assert.deepEqual(up['messages'], [
      { role: 'user', content: 'Weather and local time in Kuala Lumpur?' },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Let me check both.' },
          { type: 'tool_use', id: 'toolu_01WeatherAAAA', name: 'get_weather', input: { location: 'Kuala Lumpur, MY', unit: 'celsius' } },
          { type: 'tool_use', id: 'toolu_01TimeBBBBBBB', name: 'get_time', input: { timezone: 'Asia/Kuala_Lumpur', format: '24h' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_01WeatherAAAA', content: '31°C, humid' },
          { type: 'tool_result', tool_use_id: 'toolu_01TimeBBBBBBB', content: '14:05' },
        ],
      },
    ]);
  });

  test('plain text stream: raw SSE ends with [DONE]; usage chunk only when asked', async () => {
    const asked = await chat('claude', { stream: true, stream_options: { include_usage: true } });
    assert.equal(asked.status, 200, asked.text);
    assert.match(asked.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = asked.text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
    assert.equal(events.at(-1), '[DONE]');
    const objs = events.slice(0, -1).map((e) => JSON.parse(e) as Record<string, any>);
    assert.equal(objs.map((o) => o['choices'][0]?.delta?.content ?? '').join(''), 'Kuala Lumpur.');
    assert.deepEqual(objs.at(-1)!['usage'], TEXT_OPENAI_USAGE);
    assert.deepEqual(objs.at(-1)!['choices'], []);
    assert.equal(objs.filter((o) => o['usage']).length, 1);

    const silent = await chat('claude', { stream: true });
    assert.equal(silent.status, 200);
    assert.doesNotMatch(silent.text, /"usage"\s*:\s*\{/, 'no usage for a client that did not ask');
    assert.match(silent.text, /data: \[DONE\]\n\n$/);
    const rec = await g.record(silent.id);
    assert.equal(rec.total_tokens, TEXT_USAGE.input + TEXT_USAGE.output, 'but it is recorded');
  });

  test('weighted pool of an openai-compatible upstream and the Anthropic one: both serve valid chat completions', async () => {
    const a0 = anth.messages().length;
    const o0 = oa.completions().length;
    const client = sdk(g.key);
    const byBackend = new Map<string, number>();
    for (let i = 0; i < 6; i++) {
      const { data, response } = await client.chat.completions.create({ model: 'mixed', messages: [{ role: 'user', content: 'What is the capital of Malaysia?' }] }).withResponse();
      assert.equal(data.object, 'chat.completion');
      assert.equal(data.choices[0]!.message.role, 'assistant');
      assert.equal(typeof data.choices[0]!.message.content, 'string');
      assert.equal(data.choices[0]!.finish_reason, 'stop');
      assert.ok(data.usage && data.usage.total_tokens > 0);
      const rec = await g.record(response.headers.get('x-request-id')!);
      assert.equal(rec.model, 'mixed');
      assert.equal(rec.status, 200);
      byBackend.set(rec.backend_id!, (byBackend.get(rec.backend_id!) ?? 0) + 1);
      if (rec.backend_id === 'claude') {
        assert.equal(data.choices[0]!.message.content, 'Kuala Lumpur.');
        assert.equal(data.model, 'claude-haiku-4-5', "the pool member's upstream_model");
        assert.equal(rec.upstream_model, 'claude-haiku-4-5');
        assert.equal(rec.total_tokens, TEXT_USAGE.input + TEXT_USAGE.output);
      } else {
        assert.equal(rec.backend_id, 'oa');
        assert.equal(data.choices[0]!.message.content, 'hello from oa');
        assert.equal(rec.upstream_model, 'oa-llm');
        assert.equal(rec.total_tokens, 8);
      }
    }
    const toClaude = anth.messages().length - a0;
    const toOa = oa.completions().length - o0;
    assert.ok(toClaude >= 1 && toOa >= 1, `both backends served (claude ${toClaude}, oa ${toOa})`);
    assert.equal(toClaude + toOa, 6);
    assert.equal(byBackend.get('claude'), toClaude);
    assert.equal(byBackend.get('oa'), toOa);
    assert.ok(anth.messages().slice(a0).every((m) => m.json['model'] === 'claude-haiku-4-5' && m.authorized));
    assert.ok(oa.completions().slice(o0).every((m) => JSON.parse(m.body).model === 'oa-llm'));

    // Streams through the same pool: both kinds end with [DONE] and carry text.
    const s0 = { a: anth.messages().length, o: oa.completions().length };
    for (let i = 0; i < 4; i++) {
      const stream = await client.chat.completions.create({ model: 'mixed', stream: true, messages: [{ role: 'user', content: 'Capital?' }] });
      let text = '';
      for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
      assert.ok(text === 'Kuala Lumpur.' || text === 'hello from oa', text);
    }
    assert.ok(anth.messages().length > s0.a && oa.completions().length > s0.o, 'both backends streamed');
  });

  test('Anthropic 529 overloaded in a pool: retried on the other member before any byte, the client gets 200', async () => {
    anth.mode = 'overloaded';
    try {
      const a0 = anth.messages().length;
      const o0 = oa.completions().length;
      for (let i = 0; i < 3; i++) {
        const r = await chat('claude-first');
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json!['object'], 'chat.completion');
        assert.equal(r.json!['choices'][0].message.content, 'hello from oa');
        const rec = await g.record(r.id);
        assert.equal(rec.status, 200);
        assert.equal(rec.outcome, 'ok');
        assert.equal(rec.backend_id, 'oa', 'the record names the backend that served');
        assert.equal(rec.error_code, null);
        assert.equal(rec.total_tokens, 8, "the usage of the answer that was served, once");
      }
      // Streamed too: the 529 comes before the first byte, so the stream goes to oa.
      const s = await chat('claude-first', { stream: true });
      assert.equal(s.status, 200, s.text);
      assert.match(s.text, /hello from oa/);
      assert.match(s.text, /data: \[DONE\]\n\n$/);
      assert.doesNotMatch(s.text, /overloaded/i);
      assert.equal(anth.messages().length - a0, 4, 'claude was tried first every time (and once each)');
      assert.equal(oa.completions().length - o0, 4, 'oa served every request');
    } finally {
      anth.mode = 'ok';
    }
  });

  test('Anthropic 529 overloaded with the Anthropic backend alone: 503 in OpenAI shape, one upstream call', async () => {
    anth.mode = 'overloaded';
    try {
      const a0 = anth.messages().length;
      const r = await chat('claude');
      assert.equal(r.status, 503, r.text);
      assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
      assertOpenAiError(r.json, 'overloaded');
      assert.equal(r.json!['error'].type, 'api_error');
      assert.equal(r.json!['error'].param, null);
      assert.equal(anth.messages().length - a0, 1, 'a backend is never tried twice for one request');
      const rec = await g.record(r.id);
      assert.equal(rec.status, 503);
      assert.equal(rec.outcome, 'upstream_error');
      assert.equal(rec.error_code, 'overloaded');
      assert.equal(rec.backend_id, 'claude');

      // Streaming request: the 529 comes before any byte, so it is a JSON 503 too.
      const s = await chat('claude', { stream: true });
      assert.equal(s.status, 503, s.text);
      assertOpenAiError(s.json, 'overloaded');

      // The SDK sees an APIError with status 503.
      await assert.rejects(sdk(g.key).chat.completions.create({ model: 'claude', messages: [{ role: 'user', content: 'hi' }] }), (e: unknown) => e instanceof OpenAI.APIError && e.status === 503);
    } finally {
      anth.mode = 'ok';
    }
    // And it serves again once Anthropic recovers.
    const ok = await chat('claude');
    assert.equal(ok.status, 200, ok.text);
  });

  test(
    'an upstream that streams the key back cut over several text deltas: the client never sees the key',
    {
      skip:
        'BUG: scrubbing is per SSE event (AnthropicProvider scrubItem, provider.ts items()), so a key quoted across ' +
        'several text_delta events reaches the client whole once the deltas are joined (same design in the ' +
        'openai-compatible adapter). Defense-in-depth gap; see report.',
    },
    async () => {
      anth.mode = 'echo_key_split';
      try {
        const s = await chat('claude', { stream: true });
        assert.equal(s.status, 200);
        const joined = s.text
          .split('\n\n')
          .filter((e) => e.startsWith('data: {'))
          .map((e) => (JSON.parse(e.slice(6)) as Record<string, any>)['choices']?.[0]?.delta?.content ?? '')
          .join('');
        assert.ok(!joined.includes(ANTHROPIC_KEY), 'the text the client assembles does not contain the key');
      } finally {
        anth.mode = 'ok';
      }
    },
  );

  test('the Anthropic API key never appears in a response, a log line or a request record (even when the upstream quotes it)', async () => {
    // The upstream quotes the key back: in an error message, and in a streamed text delta.
    anth.mode = 'echo_key';
    try {
      const e = await chat('claude');
      assert.equal(e.status, 400, e.text);
      assertOpenAiError(e.json, 'invalid_request');
      assert.match(e.json!['error'].message, /\[redacted\]/);
      const s = await chat('claude', { stream: true });
      assert.equal(s.status, 200);
      assert.match(s.text, /\[redacted\]/);
      assert.match(s.text, /data: \[DONE\]\n\n$/);
    } finally {
      anth.mode = 'ok';
    }
    // The admin view of the backends.
    const admin = await createAdmin({ store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' }, { role: 'platform-admin' });
    const view = await recordingFetch(`${g.origin}/admin/v1/backends`, { headers: { authorization: `Bearer ${admin.secret}` } });
    assert.equal(view.status, 200);
    const backends = (await view.json()) as { data: Array<{ id: string }> };
    assert.ok(backends.data.some((b) => b.id === 'claude'));

    await Promise.all(pendingTranscripts);
    assert.ok(transcripts.length >= 25, `every response of this file was kept (${transcripts.length})`);
    const leaks = (where: string, texts: string[]) => {
      const hits = texts.filter((t) => t.includes(ANTHROPIC_KEY) || t.includes(ANTHROPIC_KEY.slice(-24)));
      assert.deepEqual(hits, [], `the Anthropic key appears in ${where}`);
    };
    leaks('a response', transcripts);
    const logs = g.logs();
    assert.ok(logs.length > 0);
    leaks('a log line', logs);
    const rows = await g.records();
    assert.ok(rows.length >= 20);
    leaks('a request record', rows.map((r) => JSON.stringify(r)));
    // Sanity: the upstream did get the key on every call (so the absence above means something).
    assert.ok(anth.seen.length > 0 && anth.seen.every((s) => s.authorized), 'every upstream call carried the right key and version');
  });
});
