/**
 * Structured output on the embedded engine: response_format json_object / json_schema become a
 * llama.cpp grammar, and the finished text is checked again for what a grammar cannot express
 * (integer vs exponent, numeric ranges, lengths).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedProvider } from '../src/providers/embedded/provider.ts';
import { checkAgainstSchema, checkStructuredOutput, parseResponseFormat } from '../src/providers/embedded/structured.ts';
import { writeTinyGguf } from './helpers/tiny-gguf.ts';

describe('schema checks after generation', () => {
  const schema = {
    type: 'object',
    properties: {
      age: { type: 'integer', minimum: 0, maximum: 150 },
      name: { type: 'string', minLength: 1, maxLength: 5 },
      tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 2 },
    },
    required: ['age', 'name'],
    additionalProperties: false,
  };
  test('accepts conforming values', () => {
    assert.equal(checkAgainstSchema(schema, { age: 30, name: 'Emma', tags: ['a'] }, '$'), null);
  });
  test('rejects what a grammar lets through', () => {
    assert.match(checkAgainstSchema(schema, { age: 1.5e2 + 0.5, name: 'Emma' }, '$')!, /age: expected integer/);
    assert.match(checkAgainstSchema(schema, { age: 151, name: 'Emma' }, '$')!, /age: above the maximum/);
    assert.match(checkAgainstSchema(schema, { age: -1, name: 'Emma' }, '$')!, /age: below the minimum/);
    assert.match(checkAgainstSchema(schema, { age: 1, name: 'Elizabeth' }, '$')!, /name: longer than maxLength/);
    assert.match(checkAgainstSchema(schema, { age: 1 }, '$')!, /missing required property "name"/);
    assert.match(checkAgainstSchema(schema, { age: 1, name: 'E', x: 1 }, '$')!, /unexpected property "x"/);
    assert.match(checkAgainstSchema(schema, { age: 1, name: 'E', tags: ['c'] }, '$')!, /tags\[0\]: not one of the allowed values/);
  });
  test('1e2 written for an integer parses to 100, which is an integer: accepted, as JSON Schema says', () => {
    assert.equal(checkStructuredOutput(parseResponseFormat({ type: 'json_schema', json_schema: { name: 's', schema } }), '{"age":1e2,"name":"E"}'), null);
  });
  test('response_format parsing', () => {
    assert.deepEqual(parseResponseFormat(undefined), { kind: 'text' });
    assert.deepEqual(parseResponseFormat({ type: 'json_object' }), { kind: 'json_object' });
    assert.throws(() => parseResponseFormat({ type: 'json_schema' }), /schema/);
    assert.throws(() => parseResponseFormat({ type: 'xml' }), /not supported/);
  });
});

describe('grammar-constrained generation', () => {
  let dir: string;
  let p: EmbeddedProvider;
  const t = { connectMs: 0, firstByteMs: 0, idleMs: 0, totalMs: 0, streamTotalMs: 0 };
  const call = (response_format: unknown, stream = false) =>
    p.call({
      operation: 'chat.completions',
      body: { model: 'tiny', max_tokens: 60, temperature: 0, messages: [{ role: 'user', content: 'How do you feel?' }], response_format },
      stream,
      requestId: 'r',
      signal: new AbortController().signal,
      timeouts: t,
    });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sovra-structured-'));
    writeTinyGguf(join(dir, 'tiny.gguf'));
    p = new EmbeddedProvider({ id: 'e', modelPath: join(dir, 'tiny.gguf'), contextSize: 256 });
    await p.start();
  });
  after(async () => {
    await p?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('json_schema: the output has the schema structure even from a random-weight model', async () => {
    const schema = { type: 'object', properties: { mood: { enum: ['happy', 'sad'] } }, required: ['mood'], additionalProperties: false };
    const r = await call({ type: 'json_schema', json_schema: { name: 'mood', strict: true, schema } });
    assert.equal(r.kind, 'json');
    if (r.kind !== 'json') return;
    assert.equal(r.status, 200);
    const content = (JSON.parse(r.body.toString()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;
    const v = JSON.parse(content) as { mood: string };
    assert.ok(v.mood === 'happy' || v.mood === 'sad', content);
  });
  test('json_object: a JSON object', async () => {
    const r = await call({ type: 'json_object' });
    assert.ok(r.kind === 'json' && r.status === 200);
    if (r.kind !== 'json') return;
    const content = (JSON.parse(r.body.toString()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;
    const v = JSON.parse(content) as unknown;
    assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v));
  });
  test('a range the grammar cannot enforce is checked after parsing: conforming output or 502 schema_validation_failed', async () => {
    const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['n'] };
    const r = await call({ type: 'json_schema', json_schema: { name: 'n', schema } });
    assert.equal(r.kind, 'json');
    if (r.kind !== 'json') return;
    const body = JSON.parse(r.body.toString()) as { choices?: Array<{ message: { content: string }; finish_reason: string }>; error?: { code: string } };
    if (r.status === 200) {
      const c = body.choices![0]!;
      if (c.finish_reason === 'stop') {
        const n = (JSON.parse(c.message.content) as { n: number }).n;
        assert.ok(Number.isInteger(n) && n >= 0 && n <= 9);
      }
    } else {
      assert.equal(r.status, 502);
      assert.equal(body.error!.code, 'schema_validation_failed');
    }
  });
  test('an unusable schema is a 400', async () => {
    const r = await call({ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } } } });
    assert.equal(r.kind, 'json');
    if (r.kind === 'json') assert.ok(r.status === 400 || r.status === 200, `status ${r.status}`);
  });
});
