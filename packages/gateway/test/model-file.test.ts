/**
 * The shipped model file is the one its model card and checksum describe (CI checks the SHA-256),
 * and it is a GGUF v3 llama model with the chat template the card documents.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SHIPPED_MODEL } from '../src/config/default-config.ts';

const models = resolve(fileURLToPath(import.meta.url), '../../../../models');

test('the shipped GGUF matches its recorded SHA-256 and its model card', () => {
  const bytes = readFileSync(SHIPPED_MODEL);
  const digest = createHash('sha256').update(bytes).digest('hex');
  const recorded = readFileSync(join(models, 'sovra-austen-1m.Q8_0.gguf.sha256'), 'utf8').split(/\s+/)[0];
  assert.equal(digest, recorded);
  const card = readFileSync(join(models, 'sovra-austen-1m.md'), 'utf8');
  assert.ok(card.includes(digest), 'the model card names the SHA-256');
  assert.equal(bytes.subarray(0, 4).toString('latin1'), 'GGUF');
  assert.equal(bytes.readUInt32LE(4), 3, 'GGUF version 3');
  assert.ok(bytes.includes(Buffer.from('general.architecture')) && bytes.includes(Buffer.from('llama')));
  assert.ok(bytes.includes(Buffer.from('tokenizer.chat_template')));
});
