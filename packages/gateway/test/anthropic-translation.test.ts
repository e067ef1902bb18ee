/**
 * Pure translation between OpenAI chat.completions and the Anthropic Messages API
 * (src/providers/anthropic/translate.ts): requests, responses, stream events and errors.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AnthropicStreamTranslator,
  AnthropicTranslationError,
  finishReason,
  fromAnthropicError,
  fromAnthropicResponse,
  toAnthropicRequest,
} from '../src/providers/anthropic/translate.ts';
import { UpstreamError } from '../src/providers/types.ts';
import type { SseItem } from '../src/sse/types.ts';

const META = { id: 'chatcmpl-test', model: 'claude-test', created: 1_700_000_000 };

/** Asserts that translating `body` throws an AnthropicTranslationError with this code and param. */
function rejects(body: Record<string, unknown>, code: 'unsupported_parameter' | 'invalid_parameter', param: string): void {
  assert.throws(
    () => toAnthropicRequest(body),
    (e: unknown) => {
      assert.ok(e instanceof AnthropicTranslationError, `expected AnthropicTranslationError, got ${String(e)}`);
      assert.equal(e.code, code);
      assert.equal(e.param, param);
      assert.ok(e.message.includes(param), 'the message names the field');
      return true;
    },
  );
}

const base = (extra: Record<string, unknown> = {}) => ({ model: 'claude-test', messages: [{ role: 'user', content: 'hi' }], ...extra });

describe('toAnthropicRequest: scalar fields', () => {
  test('maps the common fields and drops the ones with no upstream meaning', () => {
    const body = {
      model: 'claude-test',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hello' },
      ],
      max_tokens: 50,
      max_completion_tokens: 100,
      temperature: 0.2,
      top_p: 0.9,
      top_k: 40,
      stop: 'END',
      stream: true,
      stream_options: { include_usage: true },
      seed: 7,
      user: 'user-42',
      metadata: { tag: 'x' },
      n: 1,
      logprobs: false,
      response_format: { type: 'text' },
      frequency_penalty: 0,
      presence_penalty: null,
      tools: null,
    };
    const frozen = JSON.stringify(body);
    assert.deepEqual(toAnthropicRequest(body), {
      model: 'claude-test',
      max_tokens: 100,
      system: 'be brief',
      messages: [{ role: 'user', content: 'hello' }],
      temperature: 0.2,
      top_p: 0.9,
      top_k: 40,
      stop_sequences: ['END'],
      stream: true,
      metadata: { user_id: 'user-42' },
    });
    assert.equal(JSON.stringify(body), frozen, 'the input body is not mutated');
  });

  test('max_tokens: falls back to max_tokens, then to the default; must be a positive integer', () => {
    assert.equal(toAnthropicRequest(base({ max_tokens: 33 })).max_tokens, 33);
    assert.equal(toAnthropicRequest(base()).max_tokens, 4096);
    assert.equal(toAnthropicRequest(base(), { defaultMaxTokens: 1000 }).max_tokens, 1000);
    rejects(base({ max_tokens: 0 }), 'invalid_parameter', 'max_tokens');
    rejects(base({ max_completion_tokens: 1.5 }), 'invalid_parameter', 'max_completion_tokens');
  });

  test('stop arrays become stop_sequences; stream false is omitted; safety_identifier wins over user', () => {
    const r = toAnthropicRequest(base({ stop: ['a', 'b'], stream: false, user: 'u', safety_identifier: 's' }));
    assert.deepEqual(r.stop_sequences, ['a', 'b']);
    assert.equal(r.stream, undefined);
    assert.deepEqual(r.metadata, { user_id: 's' });
    rejects(base({ stop: ['a', 3] }), 'invalid_parameter', 'stop[1]');
  });

  test('fields that change semantics are refused, naming the field', () => {
    rejects(base({ n: 2 }), 'unsupported_parameter', 'n');
    rejects(base({ logprobs: true }), 'unsupported_parameter', 'logprobs');
    rejects(base({ top_logprobs: 3 }), 'unsupported_parameter', 'top_logprobs');
    rejects(base({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }), 'unsupported_parameter', 'response_format');
    rejects(base({ response_format: { type: 'json_object' } }), 'unsupported_parameter', 'response_format');
    rejects(base({ frequency_penalty: 0.5 }), 'unsupported_parameter', 'frequency_penalty');
    rejects(base({ logit_bias: { '50256': -100 } }), 'unsupported_parameter', 'logit_bias');
    rejects(base({ modalities: ['text', 'audio'] }), 'unsupported_parameter', 'modalities');
    rejects(base({ store: true }), 'unsupported_parameter', 'store');
    rejects(base({ functions: [{ name: 'f' }] }), 'unsupported_parameter', 'functions');
    rejects(base({ reasoning_effort: 'high' }), 'unsupported_parameter', 'reasoning_effort');
    rejects(base({ some_vendor_extension: true }), 'unsupported_parameter', 'some_vendor_extension');
  });

  test('malformed values are invalid_parameter', () => {
    rejects(base({ temperature: 'hot' }), 'invalid_parameter', 'temperature');
    rejects({ model: 'claude-test', messages: 'hi' }, 'invalid_parameter', 'messages');
    rejects({ model: 'claude-test', messages: [{ role: 'robot', content: 'x' }] }, 'invalid_parameter', 'messages[0].role');
    rejects({ messages: [] }, 'invalid_parameter', 'model');
  });
});

describe('toAnthropicRequest: messages', () => {
  test('system and developer messages anywhere are hoisted into system text blocks, in order', () => {
    const r = toAnthropicRequest({
      model: 'm',
      messages: [
        { role: 'system', content: 'one' },
        { role: 'user', content: 'q' },
        { role: 'developer', content: [{ type: 'text', text: 'two' }, { type: 'text', text: 'three' }] },
      ],
    });
    assert.deepEqual(r.system, [
      { type: 'text', text: 'one' },
      { type: 'text', text: 'two' },
      { type: 'text', text: 'three' },
    ]);
    assert.deepEqual(r.messages, [{ role: 'user', content: 'q' }]);
    rejects({ model: 'm', messages: [{ role: 'system', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] }, 'invalid_parameter', 'messages[0].content[0]');
  });

  test('consecutive same-role turns are merged (Anthropic requires alternation)', () => {
    const r = toAnthropicRequest({
      model: 'm',
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: [{ type: 'text', text: 'b' }] },
        { role: 'assistant', content: 'c' },
        { role: 'assistant', content: 'd', name: 'bot' },
      ],
    });
    assert.deepEqual(r.messages, [
      { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
      { role: 'assistant', content: [{ type: 'text', text: 'c' }, { type: 'text', text: 'd' }] },
    ]);
  });

  test('image parts: data URLs → base64 blocks, http(s) URLs → url blocks, anything else → 400', () => {
    const r = toAnthropicRequest({
      model: 'm',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is this?' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'high' } },
            { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
          ],
        },
      ],
    });
    assert.deepEqual(r.messages[0]!.content, [
      { type: 'text', text: 'what is this?' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
      { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
    ]);
    const img = (url: string) => ({ model: 'm', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }] }] });
    rejects(img('data:image/png,rawbytes'), 'invalid_parameter', 'messages[0].content[0].image_url.url');
    rejects(img('ftp://example.com/cat.jpg'), 'invalid_parameter', 'messages[0].content[0].image_url.url');
    rejects(
      { model: 'm', messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'x', format: 'wav' } }] }] },
      'unsupported_parameter',
      'messages[0].content[0].type',
    );
  });

  test('assistant tool_calls → tool_use; tool messages → tool_result blocks merged into one user turn', () => {
    const r = toAnthropicRequest({
      model: 'm',
      messages: [
        { role: 'user', content: 'weather in Paris and Rome?' },
        {
          role: 'assistant',
          content: 'Let me check.',
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } },
            { id: 'call_3', type: 'function', function: { name: 'now', arguments: '' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
        { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: 'rainy' }] },
        { role: 'tool', tool_call_id: 'call_3', content: '12:00' },
        { role: 'user', content: 'thanks' },
      ],
    });
    assert.deepEqual(r.messages, [
      { role: 'user', content: 'weather in Paris and Rome?' },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Let me check.' },
          { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } },
          { type: 'tool_use', id: 'call_2', name: 'get_weather', input: { city: 'Rome' } },
          { type: 'tool_use', id: 'call_3', name: 'now', input: {} },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'call_1', content: 'sunny' },
          { type: 'tool_result', tool_use_id: 'call_2', content: [{ type: 'text', text: 'rainy' }] },
          { type: 'tool_result', tool_use_id: 'call_3', content: '12:00' },
          { type: 'text', text: 'thanks' },
        ],
      },
    ]);
  });

  test('tool-call arguments that are not a JSON object → invalid_parameter naming the field', () => {
    const withArgs = (args: string) => ({
      model: 'm',
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: args } }] },
      ],
    });
    rejects(withArgs('{"city":'), 'invalid_parameter', 'messages[1].tool_calls[0].function.arguments');
    rejects(withArgs('[1,2]'), 'invalid_parameter', 'messages[1].tool_calls[0].function.arguments');
    rejects({ model: 'm', messages: [{ role: 'tool', content: 'x' }] }, 'invalid_parameter', 'messages[0].tool_call_id');
  });
});

describe('toAnthropicRequest: tools', () => {
  const fnTool = (name: string, extra: Record<string, unknown> = {}) => ({
    type: 'function',
    function: { name, description: `the ${name} tool`, parameters: { type: 'object', properties: { q: { type: 'string' } } }, ...extra },
  });

  test('function tools → name/description/input_schema; tool_choice and parallel_tool_calls', () => {
    const r = toAnthropicRequest(base({ tools: [fnTool('search'), { type: 'function', function: { name: 'noargs' } }], tool_choice: 'required', parallel_tool_calls: false }));
    assert.deepEqual(r.tools, [
      { name: 'search', description: 'the search tool', input_schema: { type: 'object', properties: { q: { type: 'string' } } } },
      { name: 'noargs', input_schema: { type: 'object', properties: {} } },
    ]);
    assert.deepEqual(r.tool_choice, { type: 'any', disable_parallel_tool_use: true });

    const choice = (tool_choice: unknown, extra: Record<string, unknown> = {}) => toAnthropicRequest(base({ tools: [fnTool('search')], tool_choice, ...extra })).tool_choice;
    assert.deepEqual(choice('auto'), { type: 'auto' });
    assert.deepEqual(choice('none'), { type: 'none' });
    assert.deepEqual(choice('none', { parallel_tool_calls: false }), { type: 'none' });
    assert.deepEqual(choice({ type: 'function', function: { name: 'search' } }), { type: 'tool', name: 'search' });
    assert.deepEqual(choice(undefined, { parallel_tool_calls: false }), { type: 'auto', disable_parallel_tool_use: true });
    assert.equal(choice(undefined, { parallel_tool_calls: true }), undefined);
  });

  test('without tools, auto/none are dropped and a forced tool is an error', () => {
    const r = toAnthropicRequest(base({ tools: [], tool_choice: 'auto', parallel_tool_calls: false }));
    assert.equal(r.tools, undefined);
    assert.equal(r.tool_choice, undefined);
    rejects(base({ tool_choice: 'required' }), 'invalid_parameter', 'tool_choice');
  });

  test('unsupported tool kinds and strict schemas are refused', () => {
    rejects(base({ tools: [{ type: 'custom', custom: { name: 'x' } }] }), 'unsupported_parameter', 'tools[0].type');
    rejects(base({ tools: [fnTool('s', { strict: true })] }), 'unsupported_parameter', 'tools[0].function.strict');
    rejects(base({ tools: [fnTool('s')], tool_choice: { type: 'allowed_tools', allowed_tools: {} } }), 'unsupported_parameter', 'tool_choice.type');
  });
});

describe('fromAnthropicResponse', () => {
  test('text and tool_use blocks, usage with prompt-cache tokens', () => {
    const out = fromAnthropicResponse(
      {
        id: 'msg_1',
        type: 'message',
        role: 'assistant',
        model: 'claude-test',
        content: [
          { type: 'text', text: 'Checking ' },
          { type: 'text', text: 'both.' },
          { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } },
          { type: 'tool_use', id: 'toolu_2', name: 'get_weather', input: { city: 'Rome', unit: 'c' } },
        ],
        stop_reason: 'tool_use',
        stop_sequence: null,
        usage: { input_tokens: 10, cache_creation_input_tokens: 5, cache_read_input_tokens: 20, output_tokens: 7 },
      },
      META,
    );
    assert.deepEqual(out, {
      id: 'chatcmpl-test',
      object: 'chat.completion',
      created: 1_700_000_000,
      model: 'claude-test',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'Checking both.',
            refusal: null,
            tool_calls: [
              { id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
              { id: 'toolu_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome","unit":"c"}' } },
            ],
          },
          logprobs: null,
          finish_reason: 'tool_calls',
        },
      ],
      usage: { prompt_tokens: 35, completion_tokens: 7, total_tokens: 42, prompt_tokens_details: { cached_tokens: 20 } },
    });
  });

  test('only tool calls → content null; no usage → zeros', () => {
    const out = fromAnthropicResponse({ type: 'message', content: [{ type: 'tool_use', id: 't', name: 'f', input: {} }], stop_reason: 'tool_use' }, META);
    assert.equal(out.choices[0].message.content, null);
    assert.equal(out.choices[0].message.tool_calls![0]!.function.arguments, '{}');
    assert.deepEqual(out.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
  });

  test('stop reasons', () => {
    const cases: Array<[unknown, string]> = [
      ['end_turn', 'stop'],
      ['stop_sequence', 'stop'],
      ['pause_turn', 'stop'],
      [null, 'stop'],
      ['max_tokens', 'length'],
      ['model_context_window_exceeded', 'length'],
      ['tool_use', 'tool_calls'],
      ['refusal', 'content_filter'],
    ];
    for (const [sr, fr] of cases) {
      assert.equal(finishReason(sr), fr, String(sr));
      assert.equal(fromAnthropicResponse({ type: 'message', content: [{ type: 'text', text: 'x' }], stop_reason: sr }, META).choices[0].finish_reason, fr);
    }
  });

  test('something other than a Message → UpstreamError protocol', () => {
    assert.throws(() => fromAnthropicResponse({ type: 'error', error: {} }, META), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
    assert.throws(() => fromAnthropicResponse([], META), UpstreamError);
  });
});

describe('fromAnthropicError', () => {
  test('keeps the status and maps the type; 529 → 503 overloaded', () => {
    const body = (type: string, message: string) => JSON.stringify({ type: 'error', error: { type, message }, request_id: 'req_1' });
    assert.deepEqual(fromAnthropicError(400, body('invalid_request_error', 'messages: roles must alternate')), {
      status: 400,
      body: { error: { message: 'messages: roles must alternate', type: 'invalid_request_error', param: null, code: 'invalid_request' } },
    });
    assert.deepEqual(fromAnthropicError(529, body('overloaded_error', 'Overloaded')), {
      status: 503,
      body: { error: { message: 'Overloaded', type: 'api_error', param: null, code: 'overloaded' } },
    });
    const rl = fromAnthropicError(429, body('rate_limit_error', 'slow down'));
    assert.equal(rl.status, 429);
    assert.equal(rl.body.error.code, 'rate_limit_exceeded');
    assert.equal(fromAnthropicError(404, body('not_found_error', 'model: x')).body.error.code, 'not_found');
    assert.equal(fromAnthropicError(401, body('authentication_error', 'invalid x-api-key')).body.error.type, 'authentication_error');
  });

  test('a body that is not an Anthropic error gives a generic message (not echoed)', () => {
    const r = fromAnthropicError(502, '<html>bad gateway secret-page</html>');
    assert.equal(r.status, 502);
    assert.equal(r.body.error.type, 'api_error');
    assert.equal(r.body.error.code, 'upstream_error');
    assert.ok(!r.body.error.message.includes('html'));
    const o = fromAnthropicError(529, '');
    assert.equal(o.status, 503);
    assert.equal(o.body.error.code, 'overloaded');
  });
});

// ---------------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------------

/** An Anthropic SSE event as the parser yields it. */
function aev(type: string, payload: Record<string, unknown> = {}): { type: 'event'; event: string; data: string; id: undefined } {
  return { type: 'event', event: type, data: JSON.stringify({ type, ...payload }), id: undefined };
}

function run(events: ReturnType<typeof aev>[], includeUsage = true): { items: SseItem[]; t: AnthropicStreamTranslator } {
  const t = new AnthropicStreamTranslator({ ...META, includeUsage });
  const items: SseItem[] = [];
  for (const e of events) items.push(...t.push(e));
  return { items, t };
}

const datas = (items: SseItem[]): string[] => items.map((i) => (i.type === 'event' ? i.data : `:${i.text}`));
const chunks = (items: SseItem[]): any[] => datas(items).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));

/** Accumulates chunks the way an OpenAI client does. */
function accumulate(items: SseItem[]) {
  let content = '';
  let role: string | undefined;
  let finish: string | null = null;
  let usage: unknown;
  const calls: Array<{ id: string; name: string; arguments: string }> = [];
  for (const c of chunks(items)) {
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      const d = ch.delta;
      if (d.role) role = d.role;
      if (d.content) content += d.content;
      for (const tc of d.tool_calls ?? []) {
        calls[tc.index] ??= { id: '', name: '', arguments: '' };
        const slot = calls[tc.index]!;
        if (tc.id) slot.id = tc.id;
        if (tc.function?.name) slot.name = tc.function.name;
        if (tc.function?.arguments) slot.arguments += tc.function.arguments;
      }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  return { role, content, finish, usage, calls };
}

const START = aev('message_start', {
  message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-test', content: [], stop_reason: null, usage: { input_tokens: 25, output_tokens: 1 } },
});

describe('AnthropicStreamTranslator', () => {
  test('a streamed text answer with usage', () => {
    const { items, t } = run([
      START,
      aev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      aev('ping'),
      aev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Hello' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: ', world' } }),
      aev('content_block_stop', { index: 0 }),
      aev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 15 } }),
      aev('message_stop'),
    ]);
    const d = datas(items);
    assert.equal(d.length, 6, 'role, 2 text, finish, usage, [DONE]');
    assert.equal(d[d.length - 1], '[DONE]');
    const cs = chunks(items);
    for (const c of cs) {
      assert.equal(c.id, 'chatcmpl-test');
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.created, 1_700_000_000);
      assert.equal(c.model, 'claude-test');
    }
    assert.deepEqual(cs[0].choices, [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    assert.deepEqual(cs[3].choices, [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]);
    assert.deepEqual(cs[4], { id: 'chatcmpl-test', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'claude-test', choices: [], usage: { prompt_tokens: 25, completion_tokens: 15, total_tokens: 40 } });
    const acc = accumulate(items);
    assert.equal(acc.role, 'assistant');
    assert.equal(acc.content, 'Hello, world');
    assert.ok(t.completed && t.ended && !t.failed);
    assert.deepEqual(t.push(aev('message_stop')), [], 'nothing after the end');
  });

  test('without include_usage there is no usage chunk', () => {
    const { items } = run([START, aev('message_delta', { delta: { stop_reason: 'max_tokens' }, usage: { output_tokens: 3 } }), aev('message_stop')], false);
    const d = datas(items);
    assert.equal(d.length, 3);
    assert.equal(chunks(items)[1].choices[0].finish_reason, 'length');
    assert.ok(!d.some((x) => x.includes('"usage"')));
  });

  test('a full tool-use sequence: text, then two tool calls with partial JSON split across many deltas', () => {
    const args1 = '{"city": "Paris", "unit": "celsius", "note": "naïve \\"quoted\\" ✓"}';
    const args2 = '{"city":"Rome","days":[1,2,3]}';
    const split = (s: string, n: number) => Array.from({ length: Math.ceil(s.length / n) }, (_, i) => s.slice(i * n, i * n + n));
    const deltas = (index: number, s: string, n: number) =>
      [aev('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: '' } }), ...split(s, n).map((p) => aev('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: p } }))];
    const { items } = run([
      aev('message_start', { message: { id: 'msg_2', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 100, cache_read_input_tokens: 50, output_tokens: 1 } } }),
      aev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Let me check both.' } }),
      aev('content_block_stop', { index: 0 }),
      aev('content_block_start', { index: 1, content_block: { type: 'tool_use', id: 'toolu_A', name: 'get_weather', input: {} } }),
      ...deltas(1, args1, 3),
      aev('content_block_stop', { index: 1 }),
      aev('ping'),
      aev('content_block_start', { index: 2, content_block: { type: 'tool_use', id: 'toolu_B', name: 'get_forecast', input: {} } }),
      ...deltas(2, args2, 1),
      aev('content_block_stop', { index: 2 }),
      aev('message_delta', { delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 80 } }),
      aev('message_stop'),
    ]);
    const cs = chunks(items);
    // The tool-call starts carry index, id, type and name with empty arguments.
    const starts = cs.filter((c) => c.choices[0]?.delta.tool_calls?.[0]?.id);
    assert.deepEqual(starts.map((c) => c.choices[0].delta.tool_calls), [
      [{ index: 0, id: 'toolu_A', type: 'function', function: { name: 'get_weather', arguments: '' } }],
      [{ index: 1, id: 'toolu_B', type: 'function', function: { name: 'get_forecast', arguments: '' } }],
    ]);
    // Argument deltas carry only index and function.arguments; empty partials are not sent.
    const argDeltas = cs.filter((c) => c.choices[0]?.delta.tool_calls && !c.choices[0].delta.tool_calls[0].id);
    assert.equal(argDeltas.length, Math.ceil(args1.length / 3) + args2.length);
    for (const c of argDeltas) assert.deepEqual(Object.keys(c.choices[0].delta.tool_calls[0]).sort(), ['function', 'index']);
    const acc = accumulate(items);
    assert.equal(acc.content, 'Let me check both.');
    assert.equal(acc.finish, 'tool_calls');
    assert.deepEqual(acc.calls, [
      { id: 'toolu_A', name: 'get_weather', arguments: args1 },
      { id: 'toolu_B', name: 'get_forecast', arguments: args2 },
    ]);
    assert.deepEqual(JSON.parse(acc.calls[0]!.arguments), { city: 'Paris', unit: 'celsius', note: 'naïve "quoted" ✓' });
    assert.deepEqual(acc.usage, { prompt_tokens: 150, completion_tokens: 80, total_tokens: 230, prompt_tokens_details: { cached_tokens: 50 } });
    assert.equal(datas(items).at(-1), '[DONE]');
    assert.equal(datas(items).filter((d) => d === '[DONE]').length, 1);
  });

  test('a tool call without input deltas gets "{}" as its arguments', () => {
    const { items } = run([
      START,
      aev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 'toolu_X', name: 'now', input: {} } }),
      aev('content_block_stop', { index: 0 }),
      aev('message_delta', { delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 5 } }),
      aev('message_stop'),
    ]);
    assert.deepEqual(accumulate(items).calls, [{ id: 'toolu_X', name: 'now', arguments: '{}' }]);
  });

  test('thinking blocks and unknown events are ignored', () => {
    const { items } = run([
      START,
      aev('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'hmm' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'signature_delta', signature: 'sig' } }),
      aev('content_block_stop', { index: 0 }),
      aev('some_future_event', { foo: 1 }),
      aev('content_block_start', { index: 1, content_block: { type: 'text', text: '' } }),
      aev('content_block_delta', { index: 1, delta: { type: 'text_delta', text: 'ok' } }),
      aev('message_delta', { delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 2 } }),
      aev('message_stop'),
    ]);
    assert.equal(accumulate(items).content, 'ok');
    assert.ok(!datas(items).some((d) => d.includes('hmm') || d.includes('sig')));
  });

  test('an error event becomes an OpenAI error event and ends the stream without [DONE]', () => {
    const { items, t } = run([
      START,
      aev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'partial' } }),
      aev('error', { error: { type: 'overloaded_error', message: 'Overloaded' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'ignored' } }),
      aev('message_stop'),
    ]);
    const d = datas(items);
    assert.deepEqual(JSON.parse(d.at(-1)!), { error: { message: 'Overloaded', type: 'api_error', code: 'overloaded', param: null } });
    assert.ok(!d.includes('[DONE]'));
    assert.ok(!d.some((x) => x.includes('ignored')));
    assert.ok(t.failed && t.ended && !t.completed);
  });

  test('a stream that stops before message_stop produces no [DONE]', () => {
    const { items, t } = run([
      START,
      aev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      aev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'cut' } }),
      aev('message_delta', { delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 2 } }),
    ]);
    assert.ok(!datas(items).includes('[DONE]'));
    assert.ok(!t.ended);
  });

  test('malformed events are protocol errors', () => {
    const t = new AnthropicStreamTranslator({ ...META, includeUsage: false });
    assert.throws(() => t.push({ event: 'message_start', data: '{not json' }), (e: unknown) => e instanceof UpstreamError && e.kind === 'protocol');
    const t2 = new AnthropicStreamTranslator({ ...META, includeUsage: false });
    t2.push(START);
    assert.throws(() => t2.push(aev('content_block_delta', { index: 5, delta: { type: 'input_json_delta', partial_json: '{' } })), UpstreamError);
  });
});
