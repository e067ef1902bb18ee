/**
 * The embedded engine's wait queue is bounded: beyond `max_queue` waiting calls, a call gets 503
 * `engine_overloaded` with retry-after instead of piling up; queued calls are then served in order.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedProvider } from '../src/providers/embedded/provider.ts';
import type { ProviderResult } from '../src/providers/types.ts';
import { writeTinyGguf } from './helpers/tiny-gguf.ts';

let dir: string;
let p: EmbeddedProvider;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sovra-queue-'));
  writeTinyGguf(join(dir, 'tiny.gguf'));
  p = new EmbeddedProvider({ id: 'e', modelPath: join(dir, 'tiny.gguf'), contextSize: 256, contexts: 1, maxQueue: 1 });
  await p.start();
});
after(async () => {
  await p?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('beyond max_queue waiting calls, 503 engine_overloaded with retry-after; the others are served', async () => {
  const t = { connectMs: 0, firstByteMs: 0, idleMs: 0, totalMs: 0, streamTotalMs: 0 };
  const call = () =>
    p.call({ operation: 'completions', body: { model: 'x', prompt: 'It is a truth', max_tokens: 20, temperature: 0 }, stream: false, requestId: 'r', signal: new AbortController().signal, timeouts: t });
  const results: ProviderResult[] = await Promise.all([call(), call(), call()]);
  const statuses = results.map((r) => (r.kind === 'json' ? r.status : 0));
  assert.deepEqual(statuses.slice().sort(), [200, 200, 503]);
  const over = results.find((r) => r.kind === 'json' && r.status === 503)!;
  assert.equal(over.headers['retry-after'], '1');
  assert.equal((JSON.parse((over as { body: Buffer }).body.toString()) as { error: { code: string } }).error.code, 'engine_overloaded');
  // Contexts go back to the pool as soon as llama.cpp finishes its current token.
  for (let i = 0; i < 100 && p.stats().active > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(p.stats(), { active: 0, queued: 0 });
});
