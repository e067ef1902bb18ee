/**
 * A real completion from the embedded engine (llama.cpp in-process), streamed through Sovra to the
 * openai SDK, with usage counted from the engine's own tokens and recorded. The model is a tiny GGUF
 * written by the test itself (random weights: gibberish text, real tokens).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import { writeTinyGguf } from './helpers/tiny-gguf.ts';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { rawRequest } from './helpers/raw-client.ts';

let g: TestGateway;
let client: OpenAI;

before(async () => {
  g = await startGateway({
    config: {
      backends: [{ id: 'local', provider: 'embedded', model_path: './tiny.gguf', jurisdiction: 'MY', threads: 1, context_size: 256, contexts: 1 }],
      models: [{ name: 'tiny', backend: 'local' }],
    },
    // The model file is written into the gateway's folder before backends start (see below).
    beforeStart: (dir) => writeTinyGguf(join(dir, 'tiny.gguf')),
  });
  client = new OpenAI({ apiKey: g.key, baseURL: g.baseURL, maxRetries: 0 });
});
after(async () => {
  await g?.close();
});

test('streams a real completion through the gateway with usage from the engine', async () => {
  const stream = await client.chat.completions.create({
    model: 'tiny',
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: 12,
    temperature: 0,
    messages: [{ role: 'user', content: 'Tell me about Mr. Darcy.' }],
  });
  let text = '';
  let contentChunks = 0;
  let usage: OpenAI.CompletionUsage | undefined | null;
  let finish: string | null | undefined;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (ch?.delta?.content) {
      text += ch.delta.content;
      contentChunks++;
    }
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  assert.ok(text.length > 0, 'generated some text');
  assert.ok(contentChunks > 1, 'text arrived in several chunks');
  assert.equal(finish, 'length');
  assert.ok(usage && usage.completion_tokens === 12 && usage.prompt_tokens > 0);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  const rec = (await g.records()).at(-1)!;
  assert.equal(rec.backend_id, 'local');
  assert.equal(rec.outcome, 'ok');
  assert.equal(rec.completion_tokens, 12);
  assert.equal(rec.usage_source, 'upstream');

  // The same request without streaming gives the same text (greedy decoding).
  const full = await client.chat.completions.create({ model: 'tiny', max_tokens: 12, temperature: 0, messages: [{ role: 'user', content: 'Tell me about Mr. Darcy.' }] });
  assert.equal(full.choices[0]!.message.content, text);
});

test('a client that leaves mid-stream frees the engine for the next request', async () => {
  const r = await rawRequest(`${g.baseURL}/chat/completions`, {
    headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
    json: { model: 'tiny', stream: true, max_tokens: 200, messages: [{ role: 'user', content: 'go on' }] },
    abortAfterEvents: 3,
  });
  assert.ok(r.aborted);
  const c = await client.completions.create({ model: 'tiny', prompt: 'It is a truth', max_tokens: 5, temperature: 0 });
  assert.equal(c.usage!.completion_tokens, 5);
  const rec = (await g.records()).find((x) => x.id === String(r.headers['x-request-id']));
  assert.equal(rec?.outcome, 'client_disconnected');
});
