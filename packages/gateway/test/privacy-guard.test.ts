/**
 * The privacy guard as units: which fields are scanned (and which never are), the five actions,
 * policy layering, failing closed, and restoring tokenized identifiers — in streams, with the
 * placeholder split at every position.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { PrivacyGuard, rewrite } from '../src/privacy/guard.ts';
import { restoreAnswer, restoreText, StreamFieldRestorer, StreamRestorer } from '../src/privacy/restore.ts';
import { scrubDeep, scrubText } from '../src/privacy/scrub.ts';
import { GatewayError } from '../src/http/errors.ts';

const MYKAD = '570306-09-3427'; // a fixture-valid MyKad
const CARD = '4111 1111 1111 1111';
const EMAIL = 'siti.aminah@example.my';

function guardOf(privacy: Record<string, unknown> = {}) {
  const c = parseConfig(stringify({ privacy }), 'test', {});
  return new PrivacyGuard(c.privacy);
}

const gatewayError = (status: number, code: string) => (e: unknown) => e instanceof GatewayError && e.status === status && e.code === code;

describe('fields: free text is scanned, structure never is', () => {
  const g = guardOf();
  const p = g.policyFor('t', 'k');

  it('chat: contents, text parts, tool-call arguments and tool results; not response_format or tools', () => {
    const body = {
      model: 'm',
      messages: [
        { role: 'system', content: `Agent notes: customer MyKad ${MYKAD}.` },
        { role: 'user', content: [{ type: 'text', text: `My IC number is ${MYKAD}, email ${EMAIL}` }, { type: 'image_url', image_url: { url: `https://x/${MYKAD}` } }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: `{"nric":"${MYKAD}"}` } }] },
        { role: 'tool', tool_call_id: 'c1', content: `Record found for NRIC ${MYKAD}` },
      ],
      response_format: { type: 'json_schema', json_schema: { name: 's', schema: { type: 'object', properties: { [`nric ${MYKAD}`]: { type: 'string', description: `e.g. MyKad ${MYKAD}` } } } } },
      tools: [{ type: 'function', function: { name: 'lookup', description: `Look up a MyKad such as ${MYKAD}`, parameters: { type: 'object' } } }],
      metadata: { note: `MyKad ${MYKAD}` },
    };
    const before = JSON.stringify(body);
    const out = g.inspect('chat.completions', body, p);
    assert.equal(JSON.stringify(body), before, 'the input body is not modified');
    const msgs = out.body['messages'] as any[];
    assert.equal(msgs[0].content, 'Agent notes: customer MyKad [MY_NRIC_1].');
    assert.equal(msgs[1].content[0].text, 'My IC number is [MY_NRIC_1], email [EMAIL_1]');
    assert.equal(msgs[1].content[1].image_url.url, `https://x/${MYKAD}`, 'non-text parts are not text');
    assert.equal(msgs[2].tool_calls[0].function.arguments, '{"nric":"[MY_NRIC_1]"}');
    assert.equal(msgs[3].content, 'Record found for NRIC [MY_NRIC_1]');
    assert.deepEqual(out.body['response_format'], body.response_format);
    assert.deepEqual(out.body['tools'], body.tools);
    assert.deepEqual(out.body['metadata'], body.metadata);
    assert.deepEqual([...out.counts.entries()].sort(), [['EMAIL redact', 1], ['MY_NRIC redact', 4]]);
  });

  it('completions prompt (string and array), embeddings input (strings, not token arrays), responses input', () => {
    const c = g.inspect('completions', { model: 'm', prompt: [`IC ${MYKAD}`, 'nothing'], suffix: `card ${CARD}` }, p);
    assert.deepEqual(c.body['prompt'], ['IC [MY_NRIC_1]', 'nothing']);
    assert.equal(c.body['suffix'], 'card [PAYMENT_CARD_1]');
    const e = g.inspect('embeddings', { model: 'm', input: [`MyKad ${MYKAD}`, [1, 2, 3]] }, p);
    assert.deepEqual(e.body['input'], ['MyKad [MY_NRIC_1]', [1, 2, 3]]);
    const r = g.inspect(
      'responses',
      { model: 'm', instructions: `Customer ${EMAIL}`, input: [{ role: 'user', content: [{ type: 'input_text', text: `IC ${MYKAD}` }] }, { type: 'function_call_output', call_id: 'x', output: `card ${CARD}` }] },
      p,
    );
    assert.equal(r.body['instructions'], 'Customer [EMAIL_1]');
    assert.equal((r.body['input'] as any)[0].content[0].text, 'IC [MY_NRIC_1]');
    assert.equal((r.body['input'] as any)[1].output, 'card [PAYMENT_CARD_1]');
  });

  it('a body without identifiers is returned as the same object', () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'Order 1234567 ships on 2026-11-30, total RM 1,250.00' }] };
    const out = g.inspect('chat.completions', body, p);
    assert.equal(out.body, body);
    assert.equal(out.counts.size, 0);
  });

  it('rewrite touches nothing but the listed fields', () => {
    const seen: string[] = [];
    rewrite('chat.completions', { model: 'x1', user: 'u1', metadata: { m: 'm1' }, messages: [{ role: 'user', name: 'n1', content: 'c1' }] }, (s) => (seen.push(s), s));
    assert.deepEqual(seen, ['c1', 'n1'], 'content and the participant name; never model, user or metadata');
  });
});

describe('actions and policies', () => {
  const body = () => ({ model: 'm', messages: [{ role: 'user', content: `MyKad ${MYKAD}, again ${MYKAD}; card ${CARD}` }] });

  it('block: 400 pii_detected naming the types, never the values', () => {
    const g = guardOf({ default: { types: { PAYMENT_CARD: 'block' } } });
    assert.throws(
      () => g.inspect('chat.completions', body(), g.policyFor('t', null)),
      (e: unknown) => gatewayError(400, 'pii_detected')(e) && /PAYMENT_CARD/.test((e as Error).message) && !(e as Error).message.includes('1111') && (e as { pii?: string[] }).pii?.includes('PAYMENT_CARD block 1') === true,
    );
  });

  it('redact numbers per request and type; the same value keeps its placeholder', () => {
    const g = guardOf();
    const out = g.inspect('chat.completions', body(), g.policyFor('t', null));
    assert.equal((out.body['messages'] as any)[0].content, 'MyKad [MY_NRIC_1], again [MY_NRIC_1]; card [PAYMENT_CARD_1]');
    assert.equal(out.restore.size, 0, 'redacted values are not restored');
  });

  it('mask keeps the last four', () => {
    const g = guardOf({ default: { action: 'mask' } });
    const out = g.inspect('chat.completions', body(), g.policyFor('t', null));
    assert.equal((out.body['messages'] as any)[0].content, 'MyKad ******-**-3427, again ******-**-3427; card **** **** **** 1111');
  });

  it('tokenize: placeholders out, the restore map for the answer', () => {
    const g = guardOf({ tenants: { moh: { action: 'tokenize', types: { PAYMENT_CARD: 'redact' } } } });
    const out = g.inspect('chat.completions', body(), g.policyFor('moh', null));
    assert.equal((out.body['messages'] as any)[0].content, 'MyKad [MY_NRIC_1], again [MY_NRIC_1]; card [PAYMENT_CARD_1]');
    assert.deepEqual([...out.restore.entries()], [['[MY_NRIC_1]', MYKAD]]);
  });

  it('allow: unchanged, flagged for the classification raise; off: not looked for', () => {
    const g = guardOf({ default: { action: 'allow', allow_classification: 'confidential', types: { PAYMENT_CARD: 'off' } } });
    const p = g.policyFor('t', null);
    assert.equal(p.allowClassification, 'confidential');
    assert.equal(p.types.has('PAYMENT_CARD'), false);
    const out = g.inspect('chat.completions', body(), p);
    assert.equal(out.allowed, true);
    assert.equal((out.body['messages'] as any)[0].content, body().messages[0]!.content);
    assert.deepEqual([...out.counts.keys()], ['MY_NRIC allow']);
  });

  it('a key policy overrides its tenant, which overrides the default', () => {
    const g = guardOf({ default: { action: 'redact' }, tenants: { t: { action: 'mask', strict: true } }, keys: { key_1: { types: { MY_NRIC: 'block' } } } });
    const k = g.policyFor('t', 'key_1');
    assert.equal(k.actions.get('MY_NRIC'), 'block');
    assert.equal(k.actions.get('EMAIL'), 'mask');
    assert.equal(k.strict, true);
    assert.equal(g.policyFor('other', 'key_1').actions.get('EMAIL'), 'redact');
  });

  it('unknown types and classifications in the configuration are refused', () => {
    assert.throws(() => guardOf({ default: { types: { MY_MYKAD: 'block' } } }), /privacy\.default\.types\.MY_MYKAD: unknown identifier type/);
    assert.throws(() => guardOf({ default: { allow_classification: 'ultra' } }), /privacy\.default\.allow_classification: unknown classification/);
  });
});

describe('fails closed', () => {
  it('a scan over its time budget refuses the request (503), oversized text is a 413', () => {
    const g = guardOf({ time_budget_ms: 1, max_chars: 5_000_000 });
    const big = Array.from({ length: 60_000 }, (_, i) => `ref ${100000000 + i} MyKad ${MYKAD}`).join('\n');
    assert.throws(() => g.inspect('chat.completions', { model: 'm', messages: [{ role: 'user', content: big }] }, g.policyFor('t', null)), gatewayError(503, 'privacy_guard_unavailable'));
    const small = guardOf({ max_chars: 1000 });
    assert.throws(() => small.inspect('embeddings', { model: 'm', input: ['x'.repeat(600), 'y'.repeat(600)] }, small.policyFor('t', null)), gatewayError(413, 'privacy_scan_too_large'));
  });

  it('a detector that throws refuses the request', () => {
    const g = guardOf();
    (g.detector as unknown as { detect: () => never }).detect = () => {
      throw new Error('boom');
    };
    assert.throws(() => g.inspect('chat.completions', { model: 'm', messages: [{ role: 'user', content: 'hello' }] }, g.policyFor('t', null)), gatewayError(503, 'privacy_guard_unavailable'));
  });
});

describe('restoring tokenized identifiers', () => {
  const map = new Map([
    ['[MY_NRIC_1]', MYKAD],
    ['[EMAIL_1]', EMAIL],
  ]);
  const answer = 'Dear customer [EMAIL_1], your IC [MY_NRIC_1] is on file; [MY_NRIC_2] and [NOT_A_PLACEHOLDER] and [x_1] stay; [MY_NRIC_1].';
  const expected = restoreText(answer, map);

  it('complete texts and answers', () => {
    assert.equal(expected, `Dear customer ${EMAIL}, your IC ${MYKAD} is on file; [MY_NRIC_2] and [NOT_A_PLACEHOLDER] and [x_1] stay; ${MYKAD}.`);
    const body = { choices: [{ index: 0, message: { role: 'assistant', content: answer, tool_calls: [{ function: { name: 'f', arguments: '{"ic":"[MY_NRIC_1]"}' } }] } }] };
    restoreAnswer(body, map);
    assert.equal(body.choices[0]!.message.content, expected);
    assert.equal(body.choices[0]!.message.tool_calls[0]!.function.arguments, `{"ic":"${MYKAD}"}`);
  });

  it('a stream split at every position (two chunks) restores exactly', () => {
    for (let i = 0; i <= answer.length; i++) {
      const r = new StreamFieldRestorer(map);
      const out = r.push(answer.slice(0, i)) + r.push(answer.slice(i)) + r.flush();
      assert.equal(out, expected, `split at ${i}`);
    }
  });

  it('every pair of split positions (three chunks), and one character per chunk', () => {
    for (let i = 0; i <= answer.length; i++)
      for (let j = i; j <= answer.length; j += 3) {
        const r = new StreamFieldRestorer(map);
        const out = r.push(answer.slice(0, i)) + r.push(answer.slice(i, j)) + r.push(answer.slice(j)) + r.flush();
        assert.equal(out, expected, `split at ${i}, ${j}`);
      }
    const r = new StreamFieldRestorer(map);
    let out = '';
    for (const ch of answer) out += r.push(ch);
    assert.equal(out + r.flush(), expected);
  });

  it('no placeholder text is emitted while held: a fragment never leaks half-restored', () => {
    const r = new StreamFieldRestorer(map);
    assert.equal(r.push('IC [MY_NR'), 'IC ');
    assert.equal(r.push('IC_1] ok'), `${MYKAD} ok`);
    assert.equal(r.push('[' + 'A'.repeat(60)), '[' + 'A'.repeat(60), 'too long to be a placeholder: released');
  });

  it('chat chunks: per choice and per tool call, released at finish_reason, or at the end', () => {
    const s = new StreamRestorer(map);
    const chunks = [
      { choices: [{ index: 0, delta: { content: 'IC [MY_' } }, { index: 1, delta: { content: 'mail [EMA' } }] },
      { choices: [{ index: 0, delta: { content: 'NRIC_1] and [MY_NRIC' } }, { index: 1, delta: { tool_calls: [{ index: 0, function: { arguments: '{"e":"[EMAIL' } }] } }] },
      { choices: [{ index: 0, delta: {}, finish_reason: 'stop' }, { index: 1, delta: { tool_calls: [{ index: 0, function: { arguments: '_1]"}' } }] }, finish_reason: null }] },
    ];
    const content: Record<number, string> = { 0: '', 1: '' };
    const args: string[] = [];
    for (const c of chunks) {
      s.chunk(c as any);
      for (const ch of c.choices as any[]) {
        content[ch.index] += ch.delta.content ?? '';
        for (const t of ch.delta.tool_calls ?? []) args.push(t.function.arguments);
      }
    }
    assert.equal(content[0], `IC ${MYKAD} and [MY_NRIC`, 'the held fragment is released at finish_reason');
    assert.equal(args.join(''), `{"e":"${EMAIL}"}`);
    const tail = s.end();
    assert.ok(tail, 'choice 1 still holds "[EMA": a closing chunk carries it');
    assert.equal((tail!['choices'] as any[])[0].delta.content, '[EMA');
    assert.equal(content[1], 'mail ');
  });
});

describe('the log scrubber', () => {
  it('replaces identifiers in strings and nested objects, errors included', () => {
    assert.equal(scrubText(`failed for MyKad ${MYKAD} and ${EMAIL}`), 'failed for MyKad [MY_NRIC] and [EMAIL]');
    const e = new Error(`upstream said: card ${CARD} declined`);
    const out = scrubDeep({ err: e, list: [`IC ${MYKAD}`], n: 5 }) as any;
    assert.equal(out.err.message, 'upstream said: card [PAYMENT_CARD] declined');
    assert.doesNotMatch(out.err.stack, /1111 1111/);
    assert.deepEqual(out.list, ['IC [MY_NRIC]']);
    const clean = { a: 'nothing here', b: 12 };
    assert.equal(scrubDeep(clean), clean, 'no copy when nothing changed');
  });
});
