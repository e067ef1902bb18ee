/**
 * The embedded (in-process llama.cpp) provider against a tiny random-weight GGUF written by
 * test/helpers/tiny-gguf.ts. The model's text is gibberish; what is tested is the engine plumbing:
 * OpenAI shapes, exact usage, streaming order, sampling controls, stop strings, cancellation,
 * queueing, template selection and load failures.
 *
 * Greedy decoding (temperature 0) of the tiny model never yields EOS (its output row is zero), so
 * `max_tokens` bounds every generation.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmbeddedProvider } from '../src/providers/embedded/provider.ts';
import { SlotPool } from '../src/providers/embedded/pool.ts';
import { StopMatcher, StreamingDetokenizer } from '../src/providers/embedded/text.ts';
import { UpstreamError, type Operation, type ProviderCall, type ProviderResult } from '../src/providers/types.ts';
import type { SseItem } from '../src/sse/types.ts';
import { buildTinyGguf, CHATML_TEMPLATE, writeTinyGguf } from './helpers/tiny-gguf.ts';
import type { Token } from 'node-llama-cpp';

const TIMEOUTS = { connectMs: 0, firstByteMs: 0, idleMs: 0, totalMs: 0, streamTotalMs: 0 };
const CHAT = { model: 'tiny-model', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello world' }] };

function mkCall(body: Record<string, unknown>, opts: { op?: Operation; signal?: AbortSignal; timeouts?: Partial<typeof TIMEOUTS> } = {}): ProviderCall {
  return {
    operation: opts.op ?? 'chat.completions',
    body,
    stream: body['stream'] === true,
    requestId: 'req-test',
    signal: opts.signal ?? new AbortController().signal,
    timeouts: { ...TIMEOUTS, ...opts.timeouts },
  };
}

/** Non-stream call → parsed JSON body (asserts kind json). */
async function json(p: EmbeddedProvider, body: Record<string, unknown>, opts: Parameters<typeof mkCall>[1] = {}): Promise<{ status: number; body: any }> {
  const r = await p.call(mkCall(body, opts));
  assert.equal(r.kind, 'json');
  assert.equal(r.headers['content-type'], 'application/json');
  return { status: r.status, body: JSON.parse(r.body.toString('utf8')) };
}

function items(r: ProviderResult): AsyncIterable<SseItem> {
  assert.equal(r.kind, 'stream');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/event-stream');
  return r.items;
}

/** Stream call → all event data strings. */
async function streamData(p: EmbeddedProvider, body: Record<string, unknown>, opts: Parameters<typeof mkCall>[1] = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const it of items(await p.call(mkCall({ ...body, stream: true }, opts)))) {
    assert.equal(it.type, 'event');
    if (it.type === 'event') {
      assert.equal(it.event, undefined);
      assert.equal(it.id, undefined);
      out.push(it.data);
    }
  }
  return out;
}

function chatContent(data: string[]): string {
  return data
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d))
    .filter((c) => c.choices.length > 0)
    .map((c) => c.choices[0].delta.content ?? '')
    .join('');
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await sleep(2);
  }
}

let dir: string;
let modelPath: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sovra-embedded-'));
  modelPath = join(dir, 'tiny.gguf');
  writeTinyGguf(modelPath);
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('embedded provider (tiny model, contexts=1, fallback template)', () => {
  let p: EmbeddedProvider;
  const logs: string[] = [];

  before(async () => {
    p = new EmbeddedProvider({ id: 'tiny', modelPath, log: (l, m) => logs.push(`${l}: ${m}`) });
    assert.deepEqual(p.state(), { ready: false, reason: 'model not loaded yet (start() not called)' });
    const starting = p.start();
    assert.equal(p.state().ready, false);
    await starting;
    await p.start(); // idempotent
  });

  after(async () => {
    await p.close();
    assert.deepEqual(p.state(), { ready: false, reason: 'closed' });
  });

  test('is ready, reports its engine, supports chat and completions only', () => {
    assert.deepEqual(p.state(), { ready: true });
    const info = p.info()!;
    assert.equal(info.architecture, 'llama');
    assert.equal(info.contextSize, 256); // 2048 requested, clamped to the model's training context
    assert.equal(info.threads, 1);
    assert.equal(info.contexts, 1);
    assert.equal(info.chatTemplate, 'fallback');
    assert.ok(logs.some((l) => l.startsWith('info: ') && l.includes('loaded')));
    assert.equal(p.kind, 'embedded');
    assert.equal(p.supports('chat.completions'), true);
    assert.equal(p.supports('completions'), true);
    assert.equal(p.supports('embeddings'), false);
    assert.equal(p.supports('responses'), false);
  });

  test('fallback chat template', () => {
    const pp = p.preparePrompt('chat.completions', {
      messages: [
        { role: 'developer', content: 'sys' },
        { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
        { role: 'assistant', content: 'c' },
        { role: 'tool', content: 'd' },
      ],
    });
    assert.equal(pp.text, 'System: sys\nUser: a\nb\nAssistant: c\nTool: d\nAssistant:');
    assert.equal(pp.tokens[0], 1); // BOS
    assert.deepEqual(pp.stops, ['\nUser:']);
  });

  test('non-stream chat: chat.completion with content and exact usage', async () => {
    const { status, body } = await json(p, { ...CHAT, temperature: 0, max_tokens: 20 });
    assert.equal(status, 200);
    assert.match(body.id, /^chatcmpl-[0-9a-f]{24}$/);
    assert.equal(body.object, 'chat.completion');
    assert.equal(body.model, 'tiny-model');
    assert.ok(Number.isInteger(body.created) && Math.abs(body.created - Date.now() / 1000) < 60);
    assert.equal(body.choices.length, 1);
    const ch = body.choices[0];
    assert.equal(ch.index, 0);
    assert.equal(ch.message.role, 'assistant');
    assert.equal(typeof ch.message.content, 'string');
    assert.ok(ch.message.content.length > 0);
    assert.equal(ch.finish_reason, 'length');
    const promptTokens = p.preparePrompt('chat.completions', CHAT).tokens.length;
    assert.deepEqual(body.usage, { prompt_tokens: promptTokens, completion_tokens: 20, total_tokens: promptTokens + 20 });
  });

  test('stream: chunks in OpenAI order ending with [DONE]; content equals the non-stream text', async () => {
    const req = { ...CHAT, temperature: 0, seed: 7, max_tokens: 40 };
    const expected = (await json(p, req)).body.choices[0].message.content as string;
    const data = await streamData(p, req);
    assert.equal(data.at(-1), '[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.ok(chunks.length >= 3);
    const first = chunks[0];
    assert.deepEqual(first.choices, [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    assert.match(first.id, /^chatcmpl-/);
    for (const c of chunks) {
      assert.equal(c.id, first.id);
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.created, first.created);
      assert.equal(c.model, 'tiny-model');
      assert.equal('usage' in c, false, 'no usage field without include_usage');
    }
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [{ index: 0, delta: {}, logprobs: null, finish_reason: 'length' }]);
    const middle = chunks.slice(1, -1);
    assert.ok(middle.length > 0);
    for (const c of middle) {
      assert.equal(c.choices[0].finish_reason, null);
      assert.deepEqual(Object.keys(c.choices[0].delta), ['content']);
      assert.ok(c.choices[0].delta.content.length > 0, 'no empty content deltas');
    }
    assert.equal(chatContent(data), expected);
  });

  test('stream: usage chunk only with include_usage; other chunks then carry usage: null', async () => {
    const req = { ...CHAT, temperature: 0, max_tokens: 12, stream_options: { include_usage: true } };
    const data = await streamData(p, req);
    assert.equal(data.at(-1), '[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    const usageChunk = chunks.at(-1);
    const promptTokens = p.preparePrompt('chat.completions', CHAT).tokens.length;
    assert.deepEqual(usageChunk.choices, []);
    assert.deepEqual(usageChunk.usage, { prompt_tokens: promptTokens, completion_tokens: 12, total_tokens: promptTokens + 12 });
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'length');
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);

    const noUsage = (await streamData(p, { ...req, stream_options: { include_usage: false } })).slice(0, -1).map((d) => JSON.parse(d));
    assert.ok(noUsage.every((c) => c.choices.length === 1 && !('usage' in c)));
  });

  test('max_tokens / max_completion_tokens (the newer wins), finish_reason length', async () => {
    for (const [req, n] of [
      [{ max_tokens: 5 }, 5],
      [{ max_completion_tokens: 9 }, 9],
      [{ max_tokens: 50, max_completion_tokens: 3 }, 3],
      [{ max_tokens: 0 }, 0],
    ] as const) {
      const { body } = await json(p, { ...CHAT, temperature: 0, ...req });
      assert.equal(body.usage.completion_tokens, n, JSON.stringify(req));
      assert.equal(body.choices[0].finish_reason, 'length');
    }
  });

  test('no max_tokens: generation is bounded by the context size', async () => {
    const { body } = await json(p, { ...CHAT, temperature: 0 });
    assert.equal(body.usage.total_tokens, 256);
    assert.equal(body.choices[0].finish_reason, 'length');
  });

  test('seed makes sampling reproducible', async () => {
    const req = { ...CHAT, temperature: 1, top_p: 0.9, seed: 42, max_tokens: 30 };
    const a = (await json(p, req)).body.choices[0].message.content;
    const b = (await json(p, req)).body.choices[0].message.content;
    assert.equal(a, b);
    const s = chatContent(await streamData(p, req));
    assert.equal(s, a);
  });

  test('stop strings: text up to the first stop, stop text not emitted, finish_reason stop', async () => {
    const base = { ...CHAT, temperature: 0, max_tokens: 60 };
    const full = (await json(p, base)).body.choices[0].message.content as string;
    assert.ok(full.length > 20, full);
    const stop = full.slice(12, 15);
    const expected = full.slice(0, full.indexOf(stop));

    for (const s of [stop, [stop], ['never-in-output-xyz', stop]]) {
      const { body } = await json(p, { ...base, stop: s });
      assert.equal(body.choices[0].message.content, expected, JSON.stringify(s));
      assert.equal(body.choices[0].finish_reason, 'stop');
      assert.ok(body.usage.completion_tokens < 60);
      const data = await streamData(p, { ...base, stop: s });
      assert.equal(chatContent(data), expected);
      assert.equal(JSON.parse(data.at(-2)!).choices[0].finish_reason, 'stop');
    }
    // A stop string that never occurs changes nothing.
    const { body } = await json(p, { ...base, stop: ['never-in-output-xyz'] });
    assert.equal(body.choices[0].message.content, full);
    assert.equal(body.choices[0].finish_reason, 'length');
  });

  test('completions: text_completion object, string or one-string-array prompt, stream format', async () => {
    const req = { model: 'tiny-model', prompt: 'the cat sat on the', temperature: 0, max_tokens: 16 };
    const { status, body } = await json(p, req, { op: 'completions' });
    assert.equal(status, 200);
    assert.match(body.id, /^cmpl-/);
    assert.equal(body.object, 'text_completion');
    assert.equal(body.choices[0].index, 0);
    assert.equal(body.choices[0].finish_reason, 'length');
    assert.equal(body.choices[0].logprobs, null);
    const text = body.choices[0].text as string;
    assert.ok(text.length > 0);
    const promptTokens = p.preparePrompt('completions', req).tokens.length;
    assert.deepEqual(body.usage, { prompt_tokens: promptTokens, completion_tokens: 16, total_tokens: promptTokens + 16 });

    const arr = await json(p, { ...req, prompt: [req.prompt] }, { op: 'completions' });
    assert.equal(arr.body.choices[0].text, text);

    const data = await streamData(p, { ...req, stream_options: { include_usage: true } }, { op: 'completions' });
    assert.equal(data.at(-1), '[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    for (const c of chunks) assert.equal(c.object, 'text_completion');
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.equal(chunks.at(-1).usage.completion_tokens, 16);
    assert.deepEqual(chunks.at(-2).choices, [{ index: 0, text: '', logprobs: null, finish_reason: 'length' }]);
    assert.equal(chunks.slice(0, -2).map((c) => c.choices[0].text).join(''), text);
  });

  test('400s in OpenAI error shape: n > 1, bad parameters, prompt too long, unsupported operation', async () => {
    const cases: Array<[Record<string, unknown>, string, Operation?]> = [
      [{ ...CHAT, n: 2 }, 'n'],
      [{ ...CHAT, temperature: 3 }, 'temperature'],
      [{ ...CHAT, stop: [1] }, 'stop'],
      [{ ...CHAT, max_tokens: -1 }, 'max_tokens'],
      [{ ...CHAT, logprobs: true }, 'logprobs'],
      [{ ...CHAT, tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
      [{ model: 'm', messages: [] }, 'messages'],
      [{ model: 'm', messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
      [{ model: 'm', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content[0]'],
      [{ model: 'm', prompt: ['a', 'b'] }, 'prompt', 'completions'],
      [{ model: 'm', prompt: [1, 99999] }, 'prompt', 'completions'],
    ];
    for (const [b, param, op] of cases) {
      const { status, body } = await json(p, b, { op: op ?? 'chat.completions' });
      assert.equal(status, 400, JSON.stringify(b));
      assert.equal(body.error.type, 'invalid_request_error');
      assert.equal(body.error.param, param);
      assert.equal(typeof body.error.message, 'string');
      assert.ok('code' in body.error);
    }
    const long = await json(p, { model: 'm', prompt: 'the cat sat on the mat. '.repeat(60) }, { op: 'completions' });
    assert.equal(long.status, 400);
    assert.equal(long.body.error.code, 'context_length_exceeded');
    assert.match(long.body.error.message, /maximum context length is 256 tokens/);

    const emb = await json(p, { model: 'm', input: 'x' }, { op: 'embeddings' });
    assert.equal(emb.status, 400);
    assert.equal(emb.body.error.code, 'unsupported_operation');
    assert.deepEqual(p.stats(), { active: 0, queued: 0 });
  });

  test('abort mid-stream stops generation at once, releases the context, and the next call works', async () => {
    const ac = new AbortController();
    const r = await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 200 }, { signal: ac.signal }));
    const it = items(r)[Symbol.asyncIterator]();
    for (let i = 0; i < 4; i++) assert.equal((await it.next()).done, false);
    assert.equal(p.stats().active, 1);
    ac.abort();
    const t0 = Date.now();
    await assert.rejects(it.next(), (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
    await waitFor(() => p.stats().active === 0);
    assert.ok(Date.now() - t0 < 500);
    const { body } = await json(p, { ...CHAT, temperature: 0, max_tokens: 5 });
    assert.equal(body.usage.completion_tokens, 5);
  });

  test('abort while the consumer is not reading releases the context without another pull', async () => {
    const ac = new AbortController();
    const r = await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 200 }, { signal: ac.signal }));
    const it = items(r)[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    ac.abort();
    await waitFor(() => p.stats().active === 0);
    await assert.rejects(it.next(), (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
  });

  test('return() on the stream iterator (consumer stops) releases the context', async () => {
    const r = await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 200 }));
    let n = 0;
    for await (const _ of items(r)) if (++n === 3) break;
    await waitFor(() => p.stats().active === 0);
    // A stream that is dropped before its first pull is released too.
    const r2 = await p.call(mkCall({ ...CHAT, stream: true, max_tokens: 5 }));
    await items(r2)[Symbol.asyncIterator]().return!();
    await waitFor(() => p.stats().active === 0);
    const { body } = await json(p, { ...CHAT, temperature: 0, max_tokens: 3 });
    assert.equal(body.usage.completion_tokens, 3);
  });

  test('an aborted signal before the call rejects with aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(p.call(mkCall({ ...CHAT }, { signal: ac.signal })), (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
  });

  test('contexts=1: three concurrent calls are queued FIFO and all served', async () => {
    const req = { ...CHAT, temperature: 0, max_tokens: 25 };
    const order: number[] = [];
    const calls = [0, 1, 2].map((i) => json(p, req).then((r) => (order.push(i), r)));
    assert.deepEqual(p.stats(), { active: 1, queued: 2 });
    const results = await Promise.all(calls);
    assert.deepEqual(order, [0, 1, 2]);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.body.usage.completion_tokens, 25);
      assert.equal(r.body.choices[0].message.content, results[0]!.body.choices[0].message.content);
    }
    assert.deepEqual(p.stats(), { active: 0, queued: 0 });
  });

  test('a queued call whose signal aborts leaves the queue and rejects with aborted', async () => {
    const holder = await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 10 }));
    const ac = new AbortController();
    const queued = p.call(mkCall({ ...CHAT, max_tokens: 3 }, { signal: ac.signal }));
    const third = json(p, { ...CHAT, temperature: 0, max_tokens: 3 });
    assert.deepEqual(p.stats(), { active: 1, queued: 2 });
    ac.abort();
    await assert.rejects(queued, (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
    assert.deepEqual(p.stats(), { active: 1, queued: 1 });
    const content = chatContent(await (async () => {
      const out: string[] = [];
      for await (const it of items(holder)) if (it.type === 'event') out.push(it.data);
      return out;
    })());
    assert.ok(content.length > 0);
    assert.equal((await third).body.usage.completion_tokens, 3);
  });

  test('first-byte timeout bounds the wait for a context', async () => {
    const holder = await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 10 }));
    await assert.rejects(
      p.call(mkCall({ ...CHAT, max_tokens: 3 }, { timeouts: { firstByteMs: 30 } })),
      (e: unknown) => e instanceof UpstreamError && e.kind === 'first_byte_timeout',
    );
    for await (const _ of items(holder)) {
      /* drain */
    }
    assert.deepEqual(p.stats(), { active: 0, queued: 0 });
  });
});

describe('embedded provider (model chat template, long context, contexts=2)', () => {
  let p: EmbeddedProvider;

  before(async () => {
    const path = join(dir, 'tiny-chatml.gguf');
    writeTinyGguf(path, { contextLength: 4096, chatTemplate: CHATML_TEMPLATE });
    p = new EmbeddedProvider({ id: 'chatml', modelPath: path, contexts: 2, contextSize: 4096 });
    await p.start();
  });

  after(async () => {
    await p.close();
  });

  test("uses the GGUF's own chat template through node-llama-cpp", async () => {
    const info = p.info()!;
    assert.equal(info.chatTemplate, 'model');
    assert.equal(info.contextSize, 4096);
    const pp = p.preparePrompt('chat.completions', CHAT);
    // With a SentencePiece vocabulary llama.cpp puts the dummy-prefix space after each special token
    // (as llama-server does), so the rendered text shows one; normalise it away.
    const text = pp.text!.replace(/(<s>|<\|im_start\|>|<\|im_end\|>) /g, '$1');
    assert.equal(text, '<s><|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n');
    // The template's end of turn stops generation both as a control token and as literal text.
    assert.ok(pp.stopTokens.size >= 1);
    assert.ok(pp.stops.includes('<|im_end|>'));
    const { body } = await json(p, { ...CHAT, temperature: 0, max_tokens: 8 });
    assert.equal(body.usage.prompt_tokens, pp.tokens.length);
    assert.equal(body.usage.completion_tokens, 8);
  });

  test('non-stream abort mid-generation rejects promptly and frees the context', async (t) => {
    const ac = new AbortController();
    const t0 = Date.now();
    const pending = p.call(mkCall({ model: 'm', prompt: 'the', temperature: 0, max_tokens: 4000 }, { op: 'completions', signal: ac.signal }));
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(pending, (e: unknown) => e instanceof UpstreamError && e.kind === 'aborted');
    const elapsed = Date.now() - t0;
    t.diagnostic(`aborted after ${elapsed} ms`);
    assert.ok(elapsed < 400, `took ${elapsed} ms`);
    await waitFor(() => p.stats().active === 0);
  });

  test('total timeout ends a non-streaming call', async () => {
    await assert.rejects(
      p.call(mkCall({ model: 'm', prompt: 'the', temperature: 0, max_tokens: 4000 }, { op: 'completions', timeouts: { totalMs: 40 } })),
      (e: unknown) => e instanceof UpstreamError && e.kind === 'total_timeout',
    );
    await waitFor(() => p.stats().active === 0);
  });

  test('contexts=2: two streams generate at the same time', async () => {
    const a = items(await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 30 })))[Symbol.asyncIterator]();
    const b = items(await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 30 })))[Symbol.asyncIterator]();
    assert.deepEqual(p.stats(), { active: 2, queued: 0 });
    let doneA = false;
    let doneB = false;
    while (!doneA || !doneB) {
      if (!doneA) doneA = !!(await a.next()).done;
      if (!doneB) doneB = !!(await b.next()).done;
    }
    await waitFor(() => p.stats().active === 0);
  });

  test('throughput with threads=1 (diagnostic)', async (t) => {
    const t0 = performance.now();
    const { body } = await json(p, { model: 'm', prompt: 'the', temperature: 0, max_tokens: 500 }, { op: 'completions' });
    const ms = performance.now() - t0;
    assert.equal(body.usage.completion_tokens, 500);
    t.diagnostic(`tiny model, threads=1: ${Math.round((500 / ms) * 1000)} tokens/s (500 tokens in ${Math.round(ms)} ms)`);
  });

  test('close() stops a suspended stream and the provider refuses further calls', async () => {
    const it = items(await p.call(mkCall({ ...CHAT, stream: true, temperature: 0, max_tokens: 100 })))[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    await p.close();
    await assert.rejects(it.next(), (e: unknown) => e instanceof UpstreamError && e.kind === 'engine');
    await assert.rejects(p.call(mkCall({ ...CHAT })), (e: unknown) => e instanceof UpstreamError && e.kind === 'engine');
    assert.deepEqual(p.state(), { ready: false, reason: 'closed' });
  });
});

describe('embedded provider: load failures reject cleanly (the process survives)', () => {
  async function failStart(path: string): Promise<{ err: Error; p: EmbeddedProvider }> {
    const p = new EmbeddedProvider({ id: 'bad', modelPath: path });
    let err: Error | undefined;
    try {
      await p.start();
    } catch (e) {
      err = e as Error;
    }
    assert.ok(err instanceof Error, 'start() must reject');
    const st = p.state();
    assert.equal(st.ready, false);
    if (!st.ready) assert.equal(st.reason, err.message);
    await assert.rejects(p.call(mkCall({ ...CHAT })), (e: unknown) => e instanceof UpstreamError && e.kind === 'engine');
    await p.close();
    return { err, p };
  }

  test('missing file', async () => {
    const { err } = await failStart(join(dir, 'nope', 'missing.gguf'));
    assert.match(err.message, /missing\.gguf does not exist/);
    assert.match(err.message, /model_path in sovra\.yaml/);
  });

  test('a directory', async () => {
    const { err } = await failStart(dir);
    assert.match(err.message, /is not a file/);
  });

  test('garbage file', async () => {
    const path = join(dir, 'garbage.gguf');
    writeFileSync(path, 'this is not a model\n'.repeat(50));
    const { err } = await failStart(path);
    assert.match(err.message, /is not a GGUF model file/);
    assert.match(err.message, /model_path in sovra\.yaml/);
  });

  test('truncated GGUF (tensor data cut off)', async () => {
    const full = buildTinyGguf();
    const path = join(dir, 'truncated.gguf');
    writeFileSync(path, full.subarray(0, Math.floor(full.length * 0.6)));
    const { err } = await failStart(path);
    assert.match(err.message, /could not load the GGUF model/);
    assert.match(err.message, /not within the file bounds|corrupted or incomplete/);
  });

  test('GGUF magic followed by junk', async () => {
    const path = join(dir, 'junk.gguf');
    writeFileSync(path, Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(4000, 0xab)]));
    const { err } = await failStart(path);
    assert.match(err.message, /could not load the GGUF model/);
  });
});

describe('embedded text helpers and pool (no model)', () => {
  /** Byte-level fake: token n = byte n; decoding like the engine (invalid → U+FFFD). */
  const bytes = {
    detokenize: (tokens: readonly Token[]) => Buffer.from(tokens.map(Number)).toString('utf8'),
  };

  test('streaming detokenizer never splits a multi-byte character', () => {
    const text = 'héllo ✓ 🎉 ok';
    const d = new StreamingDetokenizer(bytes);
    const pieces = [...Buffer.from(text)].map((b) => d.push(b as Token));
    pieces.push(d.flush());
    assert.equal(pieces.join(''), text);
    assert.ok(pieces.every((s) => !s.includes('\uFFFD')));
    assert.ok(pieces.includes('🎉'));
  });

  test('streaming detokenizer emits genuinely invalid bytes after a few tokens', () => {
    const d = new StreamingDetokenizer(bytes);
    const out = [0xff, 0xfe, 0x41, 0x42, 0x43].map((b) => d.push(b as Token)).join('') + d.flush();
    assert.equal(out, '\uFFFD\uFFFDABC');
  });

  test('stop matcher holds possible prefixes and cuts at the earliest stop', () => {
    const m = new StopMatcher(['END', 'xy']);
    assert.deepEqual(m.push('abc E'), { emit: 'abc ', stopped: false });
    assert.deepEqual(m.push('N'), { emit: '', stopped: false });
    assert.deepEqual(m.push('x'), { emit: 'ENx'.slice(0, 2), stopped: false });
    assert.deepEqual(m.push('yz END'), { emit: '', stopped: true });
    const n = new StopMatcher(['END']);
    assert.deepEqual(n.push('the EN'), { emit: 'the ', stopped: false });
    assert.equal(n.flush(), 'EN');
    assert.deepEqual(new StopMatcher([]).push('EN'), { emit: 'EN', stopped: false });
  });

  test('slot pool: FIFO, abort leaves the queue, close rejects waiters', async () => {
    const pool = new SlotPool(['s']);
    const onAbort = (): Error => new Error('aborted');
    const a = await pool.acquire(new AbortController().signal, onAbort);
    const order: string[] = [];
    const ac = new AbortController();
    const b = pool.acquire(new AbortController().signal, onAbort).then((l) => (order.push('b'), l));
    const c = pool.acquire(ac.signal, onAbort);
    const d = pool.acquire(new AbortController().signal, onAbort).then((l) => (order.push('d'), l));
    assert.equal(pool.queued, 3);
    ac.abort();
    await assert.rejects(c, /aborted/);
    assert.equal(pool.queued, 2);
    a.release();
    a.release(); // idempotent
    (await b).release();
    const ld = await d;
    assert.deepEqual(order, ['b', 'd']);
    const e = pool.acquire(new AbortController().signal, onAbort);
    pool.close(new Error('closed'));
    await assert.rejects(e, /closed/);
    ld.release();
    await pool.whenIdle();
    assert.equal(pool.active, 0);
  });
});
