/**
 * Adversarial tests of the privacy guard (docs/privacy.md): what the model receives is checked on
 * the upstream's OWN request log, what the caller gets back on the raw HTTP answer, what is stored on
 * the audit log, the request rows, the log lines and the gateway's folder.
 *
 * Tests that pass pin what holds. A test marked `{ skip: 'BUG: …' }` asserts the documented (or
 * plainly expected) behaviour that the current code does not deliver; the report lists each with a
 * reproduction, the place in src believed at fault and a severity. Every identifier used here is a
 * synthetic value from test/fixtures/pii-vectors.json.
 *
 * "The model sees a value" is judged the way a model reads text: every string of the upstream body
 * (JSON-decoded, and JSON inside strings such as tool arguments decoded too), NFKC-folded, with
 * format characters (zero-width, bidi marks, soft hyphens) dropped, digits of every script mapped to
 * ASCII and separators removed — and the value's letters and digits must not appear in it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { allEntries, auditEntry } from './helpers/audit.ts';
import { anthropicProbe, chatCompletion, probeUpstream, responsesObject, type AnthropicProbe, type ProbeUpstream, type ProbeReply } from './helpers/privacy-probe-upstream.ts';
import { createKey } from '../src/keys/keys.ts';
import { PrivacyGuard } from '../src/privacy/guard.ts';
import { privacySchema } from '../src/config/schema.ts';
import { parseConfig } from '../src/config/load.ts';
import { createLogger } from '../src/telemetry/logger.ts';

// --- synthetic identifiers (all `valid: true` vectors of the fixture) ----------------------------------

const FIXTURE = JSON.parse(readFileSync(new URL('./fixtures/pii-vectors.json', import.meta.url), 'utf8')) as {
  vectors: Array<{ id_type: string; value: string; valid: boolean }>;
};
const valid = (type: string, i = 0): string => {
  const v = FIXTURE.vectors.filter((x) => x.id_type === type && x.valid)[i];
  if (!v) throw new Error(`no valid ${type} #${i} in the fixture`);
  return v.value;
};
const MYKAD = valid('MY_NRIC', 0); // 570306-09-3427
const CARD = valid('PAYMENT_CARD', 0); // 4310 0455 4388 7329
const EMAIL = valid('EMAIL', 0); // siti.aminah@example.com
const IBAN = valid('IBAN', 0); // SA63 8023 9272 9841 4730 2626
const AADHAAR = valid('IN_AADHAAR', 0); // 7013 8216 4176
const SA_ID = valid('SA_NATIONAL_ID', 0); // 1696536364
const TCKN = valid('TR_TCKN', 0); // 57702299348
const NRIC_SG = valid('SG_NRIC_FIN', 0); // S8585833E
const CPF = valid('BR_CPF', 0); // 381.451.294-43
const CURP = valid('MX_CURP', 0);
const ZA_TIED = valid('ZA_ID', 1); // 5809211805089: valid as ZA_ID, PK_CNIC and PAYMENT_CARD → labelled NATIONAL_ID
const CANARY = valid('MY_NRIC', 2); // 750614-01-4637: used only by the storage canary
const CARD_C = CARD.replace(/\D/g, '');

// --- what a model would read -----------------------------------------------------------------------------

/** ASCII value of a Unicode decimal digit (digit blocks are runs of ten starting at zero). */
function digitValue(ch: string): number {
  let cp = ch.codePointAt(0)!;
  let k = 0;
  while (k < 200 && /\p{Nd}/u.test(String.fromCodePoint(cp - 1))) {
    cp--;
    k++;
  }
  return k % 10;
}
/** The text as a model reads it: NFKC, format characters / CGJ / variation selectors dropped, digits to ASCII. */
function visible(s: string): string {
  return s
    .normalize('NFKC')
    .replace(/[\p{Cf}\u034F\uFE00-\uFE0F]/gu, '')
    .replace(/\p{Nd}/gu, (d) => String(digitValue(d)));
}
const squash = (s: string) => visible(s).replace(/[^0-9A-Za-z@]/g, '').toUpperCase();
/** True when `text` shows `value` to a reader (see module doc). */
function shows(text: string, value: string): boolean {
  return squash(text).includes(squash(value));
}
/** Every string of a JSON value (keys too), with JSON held in strings (tool arguments …) decoded as well. */
function allStrings(v: unknown, out: string[] = [], depth = 0): string[] {
  if (depth > 64) return out;
  if (typeof v === 'string') {
    out.push(v);
    const t = v.trim();
    if ((t.startsWith('{') || t.startsWith('[')) && t.length < 5_000_000) {
      try {
        allStrings(JSON.parse(t), out, depth + 1);
      } catch {
        /* not JSON */
      }
    }
  } else if (Array.isArray(v)) for (const x of v) allStrings(x, out, depth + 1);
  else if (v && typeof v === 'object')
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      allStrings(x, out, depth + 1);
    }
  return out;
}
/** The values (of `values`) a model could read in one upstream body. */
function seenValues(body: string, values: readonly string[]): string[] {
  let strings: string[];
  try {
    strings = allStrings(JSON.parse(body));
  } catch {
    strings = [body];
  }
  return values.filter((v) => body.includes(v) || strings.some((s) => shows(s, v)));
}

// --- SSE ---------------------------------------------------------------------------------------------------

/** `data:` payloads of an SSE text, parsed (non-JSON ones as strings). */
function sseData(text: string): unknown[] {
  const out: unknown[] = [];
  for (const frame of text.split('\n\n')) {
    const data = frame
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => l.slice(6))
      .join('\n');
    if (!data) continue;
    try {
      out.push(JSON.parse(data));
    } catch {
      out.push(data);
    }
  }
  return out;
}
/** Concatenated `delta.content` (or `text`) per choice index. */
function streamedText(text: string, field: 'content' | 'text' = 'content'): Map<number, string> {
  const m = new Map<number, string>();
  for (const o of sseData(text)) {
    const choices = (o as any)?.choices;
    if (!Array.isArray(choices)) continue;
    for (const c of choices) {
      const piece = field === 'text' ? c?.text : c?.delta?.content;
      if (typeof piece === 'string') m.set(c.index ?? 0, (m.get(c.index ?? 0) ?? '') + piece);
    }
  }
  return m;
}
/** Chat chunk helper. */
const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ id: 'chatcmpl-s', object: 'chat.completion.chunk', created: 1, model: 'probe', choices, ...extra });
const deltaChunk = (content: string, index = 0, finish: string | null = null) => chunk([{ index, delta: { content }, finish_reason: finish }]);
/** A chat stream of `pieces`, then a finish chunk. */
function chatStream(pieces: string[], index = 0): ProbeReply {
  return { kind: 'sse', events: [chunk([{ index, delta: { role: 'assistant', content: '' }, finish_reason: null }]), ...pieces.map((p) => deltaChunk(p, index)), chunk([{ index, delta: {}, finish_reason: 'stop' }])] };
}
const cut = (s: string, n: number): string[] => {
  const out: string[] = [];
  for (let i = 0; i < s.length; i += n) out.push(s.slice(i, i + n));
  return out;
};

// --- the gateway ---------------------------------------------------------------------------------------------

let up: ProbeUpstream;
let anth: AnthropicProbe;
let g: TestGateway;
const keys: Record<string, string> = {};
const TENANTS = ['tok', 'blk', 'msk', 'mix', 'alw', 'redza'] as const;

before(async () => {
  up = await probeUpstream();
  anth = await anthropicProbe();
  g = await startGateway({
    logLevel: 'debug',
    env: { ...process.env, PROBE_ANTHROPIC_KEY: `sk-ant-TESTONLY-${randomBytes(8).toString('hex')}` },
    config: {
      audit: { checkpoint_interval_ms: 20 },
      privacy: {
        max_chars: 300_000,
        default: { action: 'redact' },
        tenants: {
          tok: { action: 'tokenize' },
          blk: { action: 'block' },
          msk: { action: 'mask' },
          mix: { action: 'tokenize', types: { PAYMENT_CARD: 'block', EMAIL: 'redact' } },
          // "identifiers may go out, except these": the doc's statistics-office shape plus per-type blocks.
          alw: { action: 'allow', types: { ZA_ID: 'block', PK_CNIC: 'block', PAYMENT_CARD: 'block' } },
          redza: { action: 'redact', types: { ZA_ID: 'block' } },
        },
      },
      backends: [
        { id: 'probe', provider: 'openai-compatible', base_url: up.url, jurisdiction: 'MY' },
        { id: 'claude', provider: 'anthropic', base_url: anth.url, api_key_env: 'PROBE_ANTHROPIC_KEY', jurisdiction: 'MY' },
      ],
      models: [
        { name: 'probe', backend: 'probe', upstream_model: 'probe-llm' },
        { name: 'claude', backend: 'claude', upstream_model: 'claude-probe' },
      ],
    },
  });
  keys['red'] = g.key;
  for (const t of TENANTS) keys[t] = (await createKey(g.gw.store(), { tenant: t, name: `${t}-key` })).key;
});
after(async () => {
  await g?.close();
  await up?.close();
  await anth?.close();
});

interface Answer {
  status: number;
  text: string;
  id: string;
  headers: Headers;
  json(): any;
}
async function post(path: string, key: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await fetch(`${g.baseURL}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, text, id: r.headers.get('x-request-id') ?? '', headers: r.headers, json: () => JSON.parse(text) };
}
const chat = (key: string, body: Record<string, unknown>, headers?: Record<string, string>) => post('/chat/completions', key, { model: 'probe', ...body }, headers);
/** Runs `f` and returns what the probe upstream received meanwhile. */
async function forwarded<T>(f: () => Promise<T>): Promise<{ result: T; bodies: string[] }> {
  const n = up.posts().length;
  const result = await f();
  return { result, bodies: up.posts().slice(n).map((r) => r.body) };
}
const entryOf = (id: string) => auditEntry(g.origin, g.gw.audit()!.vkey, id);
/** Scripts the probe for the duration of `f`. */
async function withReply<T>(reply: (r: { json: Record<string, any> }) => ProbeReply, f: () => Promise<T>): Promise<T> {
  up.reply = reply;
  try {
    return await f();
  } finally {
    up.reply = null;
  }
}

// =============================================================================================================
// 1. No identifier reaches the upstream (scanned fields, evasion, unscanned fields)
// =============================================================================================================

describe('1. scanned fields: no identifier reaches the upstream under redact / mask / tokenize', () => {
  const ALL = [MYKAD, CARD, EMAIL, IBAN, AADHAAR, SA_ID, TCKN, NRIC_SG, CPF, CURP];

  it('the fixture values used here are valid vectors', () => {
    for (const v of [MYKAD, CARD, EMAIL, IBAN, AADHAAR, SA_ID, TCKN, NRIC_SG, CPF, CURP, ZA_TIED, CANARY]) assert.ok(FIXTURE.vectors.some((x) => x.valid && x.value === v), v);
  });

  it('chat: string content, text / input_text parts, system and developer, assistant tool-call arguments, tool results (string and parts)', async () => {
    const body = {
      messages: [
        { role: 'system', content: `Customer card ${CARD}.` },
        { role: 'developer', content: [{ type: 'text', text: `Saudi ID ${SA_ID}` }] },
        { role: 'user', content: `My MyKad is ${MYKAD}, mail ${EMAIL}` },
        { role: 'user', content: [{ type: 'text', text: `IBAN ${IBAN}` }, { type: 'input_text', text: `NRIC ${NRIC_SG}` }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: JSON.stringify({ aadhaar: AADHAAR, cpf: CPF }) } }] },
        { role: 'tool', tool_call_id: 'c1', content: `found TCKN ${TCKN}` },
        { role: 'tool', tool_call_id: 'c1', content: [{ type: 'text', text: `CURP ${CURP}` }] },
      ],
    };
    for (const k of ['red', 'msk', 'tok']) {
      const { result, bodies } = await forwarded(() => chat(keys[k]!, body));
      assert.equal(result.status, 200, `${k}: ${result.text}`);
      assert.equal(bodies.length, 1);
      assert.deepEqual(seenValues(bodies[0]!, ALL), [], `${k}: the model saw a value`);
      if (k !== 'msk') for (const p of ['[PAYMENT_CARD_1]', '[SA_NATIONAL_ID_1]', '[MY_NRIC_1]', '[EMAIL_1]', '[IBAN_1]', '[SG_NRIC_FIN_1]', '[IN_AADHAAR_1]', '[BR_CPF_1]', '[TR_TCKN_1]', '[MX_CURP_1]']) assert.ok(bodies[0]!.includes(p), `${k}: ${p}`);
      else assert.ok(bodies[0]!.includes('******-**-3427') && bodies[0]!.includes('**** **** **** 7329'), 'mask keeps the last 4 and the separators');
    }
  });

  it('completions: prompt as a string and as an array of strings, and suffix', async () => {
    for (const prompt of [`IC ${MYKAD} card ${CARD}`, [`IC ${MYKAD}`, `card ${CARD}`]]) {
      const { result, bodies } = await forwarded(() => post('/completions', keys['red']!, { model: 'probe', prompt, suffix: `mail ${EMAIL}` }));
      assert.equal(result.status, 200, result.text);
      assert.deepEqual(seenValues(bodies[0]!, [MYKAD, CARD, EMAIL]), []);
    }
  });

  it('embeddings: input as a string and as an array of strings', async () => {
    for (const input of [`IBAN ${IBAN}`, [`IBAN ${IBAN}`, `Aadhaar ${AADHAAR}`, `NRIC ${NRIC_SG}`]]) {
      const { result, bodies } = await forwarded(() => post('/embeddings', keys['red']!, { model: 'probe', input }));
      assert.equal(result.status, 200, result.text);
      assert.deepEqual(seenValues(bodies[0]!, [IBAN, AADHAAR, NRIC_SG]), []);
    }
  });

  it('responses: instructions, input string, message items (string, input_text, output_text), function_call arguments and outputs', async () => {
    const cases: unknown[] = [
      `IC ${MYKAD}`,
      [
        { role: 'user', content: `IC ${MYKAD}` },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: `card ${CARD}` }] },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: `mail ${EMAIL}` }] },
        { type: 'function_call', call_id: 'f1', name: 'lookup', arguments: JSON.stringify({ iban: IBAN }) },
        { type: 'function_call_output', call_id: 'f1', output: `TCKN ${TCKN}` },
      ],
    ];
    for (const input of cases) {
      const { result, bodies } = await forwarded(() => post('/responses', keys['tok']!, { model: 'probe', instructions: `Saudi ID ${SA_ID}`, input }));
      assert.equal(result.status, 200, result.text);
      assert.deepEqual(seenValues(bodies[0]!, [MYKAD, CARD, EMAIL, IBAN, TCKN, SA_ID]), []);
    }
  });

  it('one value is one placeholder throughout a request (across messages and fields, separators and digit scripts ignored)', async () => {
    const arabic = MYKAD.replace(/\d/g, (d) => String.fromCodePoint(0x660 + Number(d)));
    const { bodies } = await forwarded(() =>
      chat(keys['red']!, { messages: [{ role: 'system', content: `IC ${MYKAD}` }, { role: 'user', content: `IC ${MYKAD.replace(/-/g, '')} / ${arabic}; mail ${EMAIL.toUpperCase()} ${EMAIL}` }] }),
    );
    const sent = JSON.parse(bodies[0]!).messages as Array<{ content: string }>;
    assert.equal(sent[0]!.content, 'IC [MY_NRIC_1]');
    assert.equal(sent[1]!.content, 'IC [MY_NRIC_1] / [MY_NRIC_1]; mail [EMAIL_1] [EMAIL_1]');
  });
});

/** Digits of `s` written in the script whose zero is `zero`. */
const inScript = (s: string, zero: number) => s.replace(/\d/g, (d) => String.fromCodePoint(zero + Number(d)));
/** One chat request with one user message per text; returns the texts the upstream received. */
async function sendEach(key: string, texts: string[]): Promise<{ status: number; sent: string[]; body: string }> {
  const { result, bodies } = await forwarded(() => chat(key, { messages: texts.map((t) => ({ role: 'user', content: t })) }));
  if (result.status !== 200) return { status: result.status, sent: [], body: '' };
  return { status: 200, sent: (JSON.parse(bodies[0]!).messages as Array<{ content: string }>).map((m) => m.content), body: bodies[0]! };
}
/** Which (text, value) pairs the model could still read. */
function leaked(sent: string[], pairs: Array<[string, string]>): string[] {
  return pairs.flatMap(([label, value], i) => (shows(sent[i] ?? '', value) ? [label] : []));
}

describe('1b. evasion', () => {
  it('native digits of every script, full-width and mathematical digits, zero-width characters, soft hyphens, word joiners, e-mail case, IBAN with or without spaces: all caught', async () => {
    const zw = (s: string, c: string) => [...s].join(c);
    const pairs: Array<[string, string, string]> = [
      ['Arabic-Indic MyKad', `MyKad ${inScript(MYKAD, 0x660)}`, MYKAD],
      ['Persian card', `card ${inScript(CARD, 0x6f0)}`, CARD],
      ['Devanagari Aadhaar', `Aadhaar ${inScript(AADHAAR, 0x966)}`, AADHAAR],
      ['Bengali card', `card ${inScript(CARD_C, 0x9e6)}`, CARD],
      ['Thai card', `บัตร ${inScript(CARD, 0xe50)}`, CARD],
      ['full-width digits (ASCII hyphens) MyKad', `MyKad ${inScript(MYKAD, 0xff10)}`, MYKAD],
      ['Gujarati card', `card ${inScript(CARD_C, 0xae6)}`, CARD],
      ['Myanmar card', `card ${inScript(CARD_C, 0x1040)}`, CARD],
      ['mathematical bold card (astral)', `card ${inScript(CARD_C, 0x1d7ce)}`, CARD],
      ['ZWSP between every digit', `card ${zw(CARD_C, '\u200b')}`, CARD],
      ['ZWJ / ZWNJ mixed', `IC ${zw(MYKAD, '\u200c').replace(/-/g, '-\u200d')}`, MYKAD],
      ['soft hyphens', `card ${zw(CARD_C, '\u00ad')}`, CARD],
      ['word joiner + BOM', `card ${zw(CARD_C, '\u2060\ufeff')}`, CARD],
      ['upper-case e-mail', `mail ${EMAIL.toUpperCase()}`, EMAIL],
      ['mixed-case e-mail with ZWSP', `mail ${EMAIL.replace('@', '\u200b@').replace('A', 'a').replace('s', 'S')}`, EMAIL],
      ['IBAN with spaces', `IBAN ${IBAN}`, IBAN],
      ['IBAN compact', `IBAN ${IBAN.replace(/ /g, '')}`, IBAN],
      ['IBAN irregular spaces', `IBAN ${IBAN.replace(/ /g, '').replace(/(.{6})/g, '$1 ')}`, IBAN],
      ['lower-case SG NRIC', `nric ${NRIC_SG.toLowerCase()}`, NRIC_SG],
      ['lower-case CURP', `curp ${CURP.toLowerCase()}`, CURP],
      ['glued to Thai/Chinese words', `เลขบัตร${CARD_C}ครับ 身份证号是${valid('CN_RIC', 1)}`, CARD],
      ['inside a URL path', `https://shop.example/pay/${CARD_C}/confirm`, CARD],
      ['bidi isolate around', `card \u2066${CARD_C}\u2069`, CARD],
    ];
    const r = await sendEach(keys['red']!, pairs.map((p) => p[1]));
    assert.equal(r.status, 200);
    assert.deepEqual(leaked(r.sent, pairs.map((p) => [p[0], p[2]])), []);
  });

  it('identifiers inside tool-call arguments and tool results with ordinary JSON (ASCII) are caught', async () => {
    const args = JSON.stringify({ card: CARD, owner: { email: EMAIL, ids: [MYKAD] } }, null, 2);
    const { bodies } = await forwarded(() =>
      chat(keys['red']!, {
        messages: [
          { role: 'user', content: 'look me up' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: args } }] },
          { role: 'tool', tool_call_id: 'c1', content: JSON.stringify({ iban: IBAN, aadhaar: AADHAAR }) },
        ],
      }),
    );
    assert.deepEqual(seenValues(bodies[0]!, [CARD, EMAIL, MYKAD, IBAN, AADHAAR]), []);
  });

  it('BUG: separators written as no-break spaces (U+00A0, U+202F) — text pasted from PDFs, Word, web pages — are not joined', async () => {
    const pairs: Array<[string, string, string]> = [
      ['card NBSP', `card ${CARD.replace(/ /g, '\u00a0')}`, CARD],
      ['card NNBSP', `card ${CARD.replace(/ /g, '\u202f')}`, CARD],
      ['IBAN NBSP', `IBAN ${IBAN.replace(/ /g, '\u00a0')}`, IBAN],
      ['Aadhaar NBSP', `Aadhaar ${AADHAAR.replace(/ /g, '\u00a0')}`, AADHAAR],
      ['Fayda FIN NBSP', `FIN ${valid('ET_FAYDA_FIN').replace(/ /g, '\u00a0')}`, valid('ET_FAYDA_FIN')],
    ];
    const r = await sendEach(keys['red']!, pairs.map((p) => p[1]));
    assert.deepEqual(leaked(r.sent, pairs.map((p) => [p[0], p[2]])), []);
  });

  it('BUG: an identifier typed entirely in full-width form (full-width digits AND full-width hyphen, as CJK IMEs produce) is not caught', async () => {
    const fw = inScript(MYKAD, 0xff10).replace(/-/g, '\uff0d');
    const pairs: Array<[string, string, string]> = [
      ['full-width MyKad', `MyKad ${fw}`, MYKAD],
      ['en-dash MyKad', `MyKad ${MYKAD.replace(/-/g, '\u2013')}`, MYKAD],
      ['minus-sign CNIC', `CNIC ${valid('PK_CNIC').replace(/-/g, '\u2212')}`, valid('PK_CNIC')],
      ['full-width card', `card ${inScript(CARD, 0xff10).replace(/ /g, '\u3000')}`, CARD],
    ];
    const r = await sendEach(keys['red']!, pairs.map((p) => p[1]));
    assert.deepEqual(leaked(r.sent, pairs.map((p) => [p[0], p[2]])), []);
  });

  it('BUG: bidi marks (LRM/RLM/ALM), combining grapheme joiner or variation selectors between digits hide an identifier', async () => {
    const j = (s: string, c: string) => [...s].join(c);
    const pairs: Array<[string, string, string]> = [
      ['RLM in Saudi ID', `رقم الهوية ${j(SA_ID, '\u200f')}`, SA_ID],
      ['LRM in card', `card ${j(CARD_C, '\u200e')}`, CARD],
      ['ALM in Saudi ID', `رقم الهوية ${j(SA_ID, '\u061c')}`, SA_ID],
      ['CGJ in card', `card ${j(CARD_C, '\u034f')}`, CARD],
      ['VS16 in card', `card ${j(CARD_C, '\ufe0f')}`, CARD],
    ];
    const r = await sendEach(keys['red']!, pairs.map((p) => p[1]));
    assert.deepEqual(leaked(r.sent, pairs.map((p) => [p[0], p[2]])), []);
  });

  it('BUG: a lower-case IBAN is not caught (e-mails, CURP, SG NRIC and KRA PIN are matched case-insensitively)', async () => {
    const pairs: Array<[string, string, string]> = [
      ['lower-case IBAN', `iban ${IBAN.toLowerCase()}`, IBAN],
      ['lower-case compact IBAN', `iban ${IBAN.replace(/ /g, '').toLowerCase()}`, IBAN],
    ];
    const r = await sendEach(keys['red']!, pairs.map((p) => p[1]));
    assert.deepEqual(leaked(r.sent, pairs.map((p) => [p[0], p[2]])), []);
  });

  it('BUG: JSON \\u escapes inside tool-call arguments and tool results hide an identifier; the Anthropic translation even decodes it into the upstream body', async () => {
    const esc = (s: string) => [...s].map((c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`).join('');
    const args = `{"nric":"${esc(MYKAD)}"}`;
    // Python: json.dumps({"id": "١٦٩٦٥٣٦٣٦٤"}) → {"id": "\u0661\u0666…"} (ensure_ascii is the default)
    const pyResult = `{"saudi_id": "${esc(inScript(SA_ID, 0x660))}"}`;
    const messages = [
      { role: 'user', content: 'check my records' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'lookup', arguments: args } }] },
      { role: 'tool', tool_call_id: 'toolu_1', content: pyResult },
    ];
    const a0 = anth.messages().length;
    const c = await post('/chat/completions', keys['red']!, { model: 'claude', messages, tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }] });
    assert.equal(c.status, 200, c.text);
    const toAnthropic = anth.messages().slice(a0).map((r) => r.body);
    assert.equal(toAnthropic.length, 1);
    assert.ok(!toAnthropic[0]!.includes(MYKAD), 'Anthropic received the decoded MyKad in tool_use.input');
    const { bodies } = await forwarded(() => chat(keys['red']!, { messages }));
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, SA_ID]), [], 'the model reads the escaped values');
  });

  it('BUG: an identifier split across two text parts or two messages is sent as is (each piece is scanned alone)', { skip: 'BUG: guard.ts visits each text field separately; the model reads parts of one message as one text. A card cut in two parts / a MyKad cut in two consecutive messages reaches the model' }, async () => {
    const { bodies } = await forwarded(() =>
      chat(keys['red']!, {
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'My card is 4310 0455' }, { type: 'text', text: ' 4388 7329, thanks' }] },
          { role: 'user', content: 'and my MyKad is 570306-09' },
          { role: 'user', content: '-3427' },
        ],
      }),
    );
    const sent = JSON.parse(bodies[0]!).messages as Array<{ content: unknown }>;
    const partsText = (sent[0]!.content as Array<{ text: string }>).map((p) => p.text).join('');
    assert.ok(!shows(partsText, CARD), 'card across two parts');
    assert.ok(!shows(`${sent[1]!.content as string}${sent[2]!.content as string}`, MYKAD), 'MyKad across two messages');
  });

  it('BUG: HTML numeric entities hide an identifier from the scan but not from a model', { skip: 'BUG (low, deliberate evasion): "&#52;&#51;…" and "siti.aminah&#64;example.com" are not decoded before scanning' }, async () => {
    const ent = (s: string) => [...s].map((c) => (/[0-9@]/.test(c) ? `&#${c.charCodeAt(0)};` : c)).join('');
    const r = await sendEach(keys['red']!, [`card ${ent(CARD_C)}`, `mail ${ent(EMAIL)}`]);
    const decoded = r.sent.map((s) => s.replace(/&#(\d+);/g, (_m, n: string) => String.fromCharCode(Number(n))));
    assert.deepEqual(leaked(decoded, [['card', CARD], ['email', EMAIL]]), []);
  });
});

describe('1c. fields that are not scanned but reach the model', () => {
  it('FINDING (documented scope): which unscanned fields carry a value to the upstream (name, user, safety_identifier, metadata, stop, tool and response_format descriptions, image URLs, audio) — listed in the diagnostics', async (t) => {
    // docs/privacy.md lists these as never scanned. This test does not fail either way: it reports
    // which ones carry free text to the upstream (and, for names, descriptions and schemas, into the
    // model's context). See the report for the priorities.
    const tools = [{ type: 'function', function: { name: 'f', description: `Look up the customer with card ${CARD}`, parameters: { type: 'object', properties: { id: { type: 'string', description: `e.g. ${AADHAAR}`, enum: [SA_ID] } } } } }];
    const body = {
      user: EMAIL,
      safety_identifier: valid('EMAIL', 1),
      metadata: { customer: MYKAD },
      store: true,
      stop: [`IBAN ${IBAN}`],
      messages: [
        {
          role: 'user',
          name: `ic-${valid('MY_NRIC', 1).replace(/-/g, '')}`,
          content: [
            { type: 'text', text: 'describe this' },
            { type: 'image_url', image_url: { url: `https://records.example/scan/${valid('PAYMENT_CARD', 1)}.png` } },
            { type: 'input_audio', input_audio: { data: Buffer.from(`KRA ${valid('KE_KRA_PIN')}`).toString('base64'), format: 'wav' } },
          ],
        },
      ],
      tools,
      response_format: { type: 'json_schema', json_schema: { name: 'r', description: `Answer for ${TCKN}`, schema: { type: 'object', properties: { a: { type: 'string', default: NRIC_SG } } } } },
    };
    const probes: Array<[string, string]> = [
      ['user', EMAIL],
      ['safety_identifier', valid('EMAIL', 1)],
      ['metadata (stored by the provider with store: true)', MYKAD],
      ['stop', IBAN],
      ['messages[].name (model context)', valid('MY_NRIC', 1)],
      ['image_url path (fetched by the provider)', valid('PAYMENT_CARD', 1)],
      ['tools[].function.description (model context)', CARD],
      ['tool parameter description / enum (model context)', AADHAAR],
      ['response_format description (model context)', TCKN],
      ['response_format schema default (model context)', NRIC_SG],
    ];
    const { result, bodies } = await forwarded(() => chat(keys['red']!, body));
    assert.equal(result.status, 200, result.text);
    const sent = bodies[0]!;
    for (const [field, v] of probes) t.diagnostic(`${seenValues(sent, [v]).length ? 'REACHES the upstream' : 'scanned/removed     '}: ${field}`);
    t.diagnostic(`${sent.includes(Buffer.from(`KRA ${valid('KE_KRA_PIN')}`).toString('base64')) ? 'REACHES the upstream' : 'scanned/removed     '}: input_audio data (audio is not scanned by design)`);
    // Through the Anthropic adapter `user` becomes metadata.user_id and tool descriptions stay model context.
    const a0 = anth.messages().length;
    const c = await post('/chat/completions', keys['red']!, { model: 'claude', user: EMAIL, messages: [{ role: 'user', content: 'hi' }], tools });
    assert.equal(c.status, 200, c.text);
    const ab = anth.messages().slice(a0)[0]!.body;
    t.diagnostic(`${seenValues(ab, [EMAIL]).length ? 'REACHES Anthropic' : 'removed          '}: user → metadata.user_id`);
    t.diagnostic(`${seenValues(ab, [CARD]).length ? 'REACHES Anthropic' : 'removed          '}: tools[].function.description → tools[].description`);
  });

  it('BUG: assistant `refusal` parts and the `refusal` field are prior model output the next turn re-reads, yet are never scanned (the Anthropic adapter turns them into assistant text)', async () => {
    const messages = [
      { role: 'user', content: 'what did you refuse?' },
      { role: 'assistant', content: [{ type: 'refusal', refusal: `I cannot store MyKad ${MYKAD}.` }] },
      { role: 'user', content: 'and before that?' },
      { role: 'assistant', content: null, refusal: `I cannot charge card ${CARD}.` },
      { role: 'user', content: 'ok' },
    ];
    const { bodies } = await forwarded(() => chat(keys['red']!, { messages }));
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, CARD]), [], 'OpenAI-compatible upstream');
    const a0 = anth.messages().length;
    const c = await post('/chat/completions', keys['red']!, { model: 'claude', messages });
    assert.equal(c.status, 200, c.text);
    assert.deepEqual(seenValues(anth.messages().slice(a0)[0]!.body, [MYKAD, CARD]), [], 'Anthropic received them as assistant text');
  });

  it('BUG: legacy assistant `function_call.arguments` (functions API, still accepted by OpenAI and vLLM) is not scanned', async () => {
    const { bodies } = await forwarded(() =>
      chat(keys['red']!, {
        functions: [{ name: 'lookup', parameters: { type: 'object' } }],
        messages: [
          { role: 'user', content: 'look me up' },
          { role: 'assistant', content: null, function_call: { name: 'lookup', arguments: JSON.stringify({ nric: MYKAD, email: EMAIL }) } },
          { role: 'function', name: 'lookup', content: 'found' },
        ],
      }),
    );
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, EMAIL]), []);
  });

  it('BUG: `prediction.content` (Predicted Outputs: text the model processes) is not scanned', async () => {
    const { bodies } = await forwarded(() =>
      chat(keys['red']!, { messages: [{ role: 'user', content: 'fix the typo' }], prediction: { type: 'content', content: [{ type: 'text', text: `Customer IC: ${MYKAD}, card ${CARD}` }] } }),
    );
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, CARD]), []);
  });

  it('BUG: chat `file` parts (filename, inline text file) and Responses input_file / refusal / reasoning / custom tool items are not scanned', async () => {
    const { bodies: chatBodies } = await forwarded(() =>
      chat(keys['red']!, { messages: [{ role: 'user', content: [{ type: 'text', text: 'summarise' }, { type: 'file', file: { filename: `statement ${IBAN}.txt`, file_data: `data:text/plain;base64,${Buffer.from(`card ${CARD}`).toString('base64')}` } }] }] }),
    );
    assert.deepEqual(seenValues(chatBodies[0]!, [IBAN]), [], 'file name');
    const input = [
      { role: 'user', content: [{ type: 'input_text', text: 'see attached' }, { type: 'input_file', filename: `MyKad ${MYKAD}.pdf`, file_data: 'data:application/pdf;base64,JVBERi0=' }] },
      { type: 'message', role: 'assistant', content: [{ type: 'refusal', refusal: `not storing ${EMAIL}` }] },
      { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: `user's Aadhaar is ${AADHAAR}` }] },
      { type: 'custom_tool_call', call_id: 'ct1', name: 'grep', input: `grep ${TCKN} db.csv` },
      { type: 'custom_tool_call_output', call_id: 'ct1', output: `row: ${SA_ID}` },
    ];
    const { bodies } = await forwarded(() => post('/responses', keys['red']!, { model: 'probe', input }));
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, EMAIL, AADHAAR, TCKN, SA_ID]), []);
  });

  it('BUG: Responses `function_call_output.output` given as an array of input_text parts (allowed by the Responses API) is not scanned', async () => {
    const input = [
      { role: 'user', content: 'look me up' },
      { type: 'function_call', call_id: 'f1', name: 'lookup', arguments: '{}' },
      { type: 'function_call_output', call_id: 'f1', output: [{ type: 'input_text', text: `MyKad ${MYKAD}, card ${CARD}, mail ${EMAIL}` }] },
    ];
    const { bodies } = await forwarded(() => post('/responses', keys['red']!, { model: 'probe', input }));
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, CARD, EMAIL]), []);
  });

  it('BUG: Responses `prompt.variables` (substituted into a stored prompt) are not scanned', async () => {
    const { bodies } = await forwarded(() => post('/responses', keys['red']!, { model: 'probe', input: 'hi', prompt: { id: 'pmpt_1', variables: { customer_ic: MYKAD, card: `card ${CARD}` } } }));
    assert.deepEqual(seenValues(bodies[0]!, [MYKAD, CARD]), []);
  });
});

// =============================================================================================================
// 2. Block
// =============================================================================================================

describe('2. block: 400 pii_detected naming types, nothing forwarded, audit counts', () => {
  it('every operation (and a stream request): 400, types named and sorted, no value in the answer, nothing forwarded, audit entry with counts', async () => {
    const reqs: Array<[string, Record<string, unknown>]> = [
      ['/chat/completions', { model: 'probe', messages: [{ role: 'user', content: `IC ${MYKAD}, card ${CARD}, again ${MYKAD}` }] }],
      ['/chat/completions', { model: 'probe', stream: true, messages: [{ role: 'user', content: `IC ${MYKAD}, card ${CARD}, again ${MYKAD}` }] }],
      ['/completions', { model: 'probe', prompt: [`IC ${MYKAD}`, `card ${CARD}`], suffix: `IC ${MYKAD}` }],
      ['/embeddings', { model: 'probe', input: [`IC ${MYKAD}`, `card ${CARD} ${MYKAD}`] }],
      ['/responses', { model: 'probe', instructions: `IC ${MYKAD}`, input: [{ role: 'user', content: `card ${CARD}` }, { type: 'function_call_output', call_id: 'x', output: `IC ${MYKAD}` }] }],
    ];
    for (const [path, body] of reqs) {
      const { result, bodies } = await forwarded(() => post(path, keys['blk']!, body));
      assert.equal(result.status, 400, `${path}: ${result.text}`);
      assert.match(result.headers.get('content-type') ?? '', /application\/json/);
      const err = result.json().error;
      assert.equal(err.code, 'pii_detected');
      assert.match(err.message, /MY_NRIC, PAYMENT_CARD\b/);
      assert.deepEqual(seenValues(result.text, [MYKAD, CARD]), [], 'the answer names no value');
      assert.equal(bodies.length, 0, `${path}: nothing forwarded`);
      const e = await entryOf(result.id);
      assert.equal(e['status'], 400);
      assert.deepEqual(e['policy']['pii'], ['MY_NRIC block 2', 'PAYMENT_CARD block 1']);
      assert.equal((await g.record(result.id)).error_code, 'pii_detected');
    }
  });

  it('one blocked type refuses the whole request even when the others would be tokenized or redacted; all counts are recorded', async () => {
    const { result, bodies } = await forwarded(() => chat(keys['mix']!, { messages: [{ role: 'user', content: `IC ${MYKAD} mail ${EMAIL} card ${CARD}` }] }));
    assert.equal(result.status, 400);
    assert.match(result.json().error.message, /: PAYMENT_CARD\. /);
    assert.equal(bodies.length, 0);
    assert.deepEqual((await entryOf(result.id))['policy']['pii'], ['EMAIL redact 1', 'MY_NRIC tokenize 1', 'PAYMENT_CARD block 1']);
  });

  it('the configuration may name NATIONAL_ID (the label of a tie between two types); a tie also takes the strictest action of the tied types', () => {
    assert.doesNotThrow(() => parseConfig('privacy:\n  default:\n    types: { NATIONAL_ID: block }\n', 'x', {}));
  });

  it('BUG: a per-type block is bypassed when the number is also valid for another type (the NATIONAL_ID tie label takes the default action): under default `allow` the value reaches the model', async () => {
    const a = await forwarded(() => chat(keys['alw']!, { messages: [{ role: 'user', content: `ID ${ZA_TIED}` }] }));
    assert.equal(a.result.status, 400, 'allow + ZA_ID:block must refuse');
    assert.equal(a.bodies.length, 0);
    const r = await forwarded(() => chat(keys['redza']!, { messages: [{ role: 'user', content: `ID ${ZA_TIED}` }] }));
    assert.equal(r.result.status, 400, 'redact + ZA_ID:block must refuse');
  });

  it('(control) the same tenants block an untied ZA_ID', async () => {
    for (const k of ['alw', 'redza']) {
      const { result, bodies } = await forwarded(() => chat(keys[k]!, { messages: [{ role: 'user', content: `ID ${valid('ZA_ID', 0)}` }] }));
      assert.equal(result.status, 400, k);
      assert.equal(bodies.length, 0);
    }
  });
});

// =============================================================================================================
// 3. Tokenize: restore exactly and only this request's placeholders
// =============================================================================================================

describe('3. tokenize restores exactly and only this request’s placeholders', () => {
  const PROMPT = `IC ${MYKAD} and mail ${EMAIL}`;
  const MSG = [{ role: 'user', content: PROMPT }];
  const FOREIGN = ' [EMAIL_2] [MY_NRIC_9] [IBAN_1] [PAYMENT_CARD_1] [MY_NRIC_1 [my_nric_1] [MY_NRIC_01] [ MY_NRIC_1] [MY_NRIC_1_] ';
  const restoreOf = (s: string) => s.replaceAll('[MY_NRIC_1]', MYKAD).replaceAll('[EMAIL_1]', EMAIL);

  it('non-streamed: message content, tool-call arguments, n=2 choices; foreign or malformed placeholders stay as they are', async () => {
    const content = `Noted [MY_NRIC_1] / [EMAIL_1].${FOREIGN}`;
    const args = JSON.stringify({ ic: '[MY_NRIC_1]', to: ['[EMAIL_1]', '[EMAIL_2]'] });
    const r = await withReply(
      () => ({
        kind: 'json',
        body: chatCompletion('', {
          choices: [
            { index: 0, message: { role: 'assistant', content, tool_calls: [{ id: 't', type: 'function', function: { name: 'f', arguments: args } }] }, finish_reason: 'tool_calls' },
            { index: 1, message: { role: 'assistant', content: '[EMAIL_1][MY_NRIC_1]' }, finish_reason: 'stop' },
          ],
        }),
      }),
      () => chat(keys['tok']!, { messages: MSG, n: 2 }),
    );
    assert.equal(r.status, 200, r.text);
    const j = r.json();
    assert.equal(j.choices[0].message.content, restoreOf(content));
    assert.ok(j.choices[0].message.content.includes(FOREIGN));
    assert.equal(j.choices[0].message.tool_calls[0].function.arguments, JSON.stringify({ ic: MYKAD, to: [EMAIL, '[EMAIL_2]'] }));
    assert.equal(j.choices[1].message.content, `${EMAIL}${MYKAD}`);
  });

  it('placeholders of a redact-typed identifier in a mixed policy are not restored; another request’s placeholders are not either', async () => {
    const r = await withReply(
      () => ({ kind: 'json', body: chatCompletion('[MY_NRIC_1] [EMAIL_1]') }),
      () => chat(keys['mix']!, { messages: [{ role: 'user', content: `IC ${MYKAD} mail ${EMAIL}` }] }),
    );
    assert.equal(r.json().choices[0].message.content, `${MYKAD} [EMAIL_1]`, 'EMAIL is redact in this tenant');
    const other = await withReply(
      () => ({ kind: 'json', body: chatCompletion('[MY_NRIC_1] [EMAIL_1]') }),
      () => chat(keys['tok']!, { messages: [{ role: 'user', content: 'no identifiers here' }] }),
    );
    assert.equal(other.json().choices[0].message.content, '[MY_NRIC_1] [EMAIL_1]');
  });

  it('completions text and Responses output (non-streamed)', async () => {
    const c = await withReply(
      () => ({ kind: 'json', body: { id: 'c', object: 'text_completion', created: 1, model: 'p', choices: [{ index: 0, text: 'x [MY_NRIC_1] y', finish_reason: 'stop' }] } }),
      () => post('/completions', keys['tok']!, { model: 'probe', prompt: PROMPT }),
    );
    assert.equal(c.json().choices[0].text, `x ${MYKAD} y`);
    const rr = await withReply(
      () => ({ kind: 'json', body: { ...responsesObject('hi [EMAIL_1]'), output: [{ type: 'message', id: 'm', role: 'assistant', content: [{ type: 'output_text', text: 'hi [EMAIL_1]', annotations: [] }] }, { type: 'function_call', id: 'fc', call_id: 'c', name: 'f', arguments: '{"ic":"[MY_NRIC_1]"}' }] } }),
      () => post('/responses', keys['tok']!, { model: 'probe', input: PROMPT }),
    );
    const out = rr.json().output;
    assert.equal(out[0].content[0].text, `hi ${EMAIL}`);
    assert.equal(out[1].arguments, `{"ic":"${MYKAD}"}`);
  });

  it('streamed: a placeholder split at every position between two chunks, and 1-character chunks, come back whole; nothing else changes', async () => {
    const answer = `A[MY_NRIC_1]B[EMAIL_1]C${FOREIGN}[`;
    const want = restoreOf(answer);
    const splits: string[][] = [cut(answer, 1)];
    for (let k = 0; k <= 26; k++) splits.push([answer.slice(0, k), answer.slice(k)]);
    for (const pieces of splits) {
      const r = await withReply(() => chatStream(pieces), () => chat(keys['tok']!, { messages: MSG, stream: true }));
      assert.equal(r.status, 200);
      assert.equal(streamedText(r.text).get(0), want, `split ${JSON.stringify(pieces.slice(0, 2))}`);
      const finish = sseData(r.text).findIndex((o) => (o as any)?.choices?.[0]?.finish_reason === 'stop');
      const lastText = sseData(r.text).map((o, i) => ((o as any)?.choices?.[0]?.delta?.content ? i : -1)).reduce((a, b) => Math.max(a, b), -1);
      assert.ok(lastText <= finish, 'no content after the finish chunk');
    }
  });

  it('streamed tool-call argument deltas of 1 character, two tool calls, restored per call', async () => {
    const a0 = JSON.stringify({ ic: '[MY_NRIC_1]' });
    const a1 = JSON.stringify({ to: '[EMAIL_1]', cc: '[EMAIL_3]' });
    const events: unknown[] = [chunk([{ index: 0, delta: { role: 'assistant', tool_calls: [{ index: 0, id: 't0', type: 'function', function: { name: 'f', arguments: '' } }, { index: 1, id: 't1', type: 'function', function: { name: 'g', arguments: '' } }] }, finish_reason: null }])];
    for (let i = 0; i < Math.max(a0.length, a1.length); i++) {
      const calls: unknown[] = [];
      if (i < a0.length) calls.push({ index: 0, function: { arguments: a0[i] } });
      if (i < a1.length) calls.push({ index: 1, function: { arguments: a1[i] } });
      events.push(chunk([{ index: 0, delta: { tool_calls: calls }, finish_reason: null }]));
    }
    events.push(chunk([{ index: 0, delta: {}, finish_reason: 'tool_calls' }]));
    const r = await withReply(() => ({ kind: 'sse', events }), () => chat(keys['tok']!, { messages: MSG, stream: true }));
    const args = new Map<number, string>();
    for (const o of sseData(r.text)) for (const t of (o as any)?.choices?.[0]?.delta?.tool_calls ?? []) args.set(t.index, (args.get(t.index) ?? '') + (t.function?.arguments ?? ''));
    assert.equal(args.get(0), JSON.stringify({ ic: MYKAD }));
    assert.equal(args.get(1), JSON.stringify({ to: EMAIL, cc: '[EMAIL_3]' }));
  });

  it('streamed n=2, choices interleaved 1 character at a time, each restored; completions `text` streams too', async () => {
    const t0 = 'first [MY_NRIC_1].';
    const t1 = '[EMAIL_1] second';
    const events: unknown[] = [];
    for (let i = 0; i < Math.max(t0.length, t1.length); i++) {
      if (i < t0.length) events.push(deltaChunk(t0[i]!, 0));
      if (i < t1.length) events.push(deltaChunk(t1[i]!, 1));
    }
    events.push(chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]), chunk([{ index: 1, delta: {}, finish_reason: 'stop' }]));
    const r = await withReply(() => ({ kind: 'sse', events }), () => chat(keys['tok']!, { messages: MSG, stream: true, n: 2 }));
    const m = streamedText(r.text);
    assert.equal(m.get(0), restoreOf(t0));
    assert.equal(m.get(1), restoreOf(t1));
    const text = 'c: [MY_NRIC_1]!';
    const c = await withReply(
      () => ({ kind: 'sse', events: [...cut(text, 1).map((p) => ({ id: 'c', object: 'text_completion', created: 1, model: 'p', choices: [{ index: 0, text: p, finish_reason: null }] })), { id: 'c', object: 'text_completion', created: 1, model: 'p', choices: [{ index: 0, text: '', finish_reason: 'stop' }] }] }),
      () => post('/completions', keys['tok']!, { model: 'probe', prompt: PROMPT, stream: true }),
    );
    assert.equal(streamedText(c.text, 'text').get(0), restoreOf(text));
  });

  it('a placeholder at the very end of a stream without finish_reason is released before [DONE]; an unclosed `[MY_NRIC_1` is passed through as is', async () => {
    for (const [pieces, want] of [
      [['end: [MY_NR', 'IC_1]'], `end: ${MYKAD}`],
      [['end: [MY_NRIC_1'], 'end: [MY_NRIC_1'],
      [['x', '['], 'x['],
    ] as Array<[string[], string]>) {
      const r = await withReply(() => ({ kind: 'sse', events: pieces.map((p) => deltaChunk(p)) }), () => chat(keys['tok']!, { messages: MSG, stream: true }));
      assert.equal(streamedText(r.text).get(0), want);
      assert.ok(r.text.trimEnd().endsWith('data: [DONE]'));
    }
    const unclosed = await withReply(() => chatStream(['IC [MY_NRIC_1', ' is mine']), () => chat(keys['tok']!, { messages: MSG, stream: true }));
    assert.equal(streamedText(unclosed.text).get(0), 'IC [MY_NRIC_1 is mine');
  });

  it('a long streamed answer (200k characters, 2000 placeholders, 7-character chunks) is restored exactly', async () => {
    let answer = '';
    for (let i = 0; i < 2000; i++) answer += `${'lorem ipsum '.repeat(8)}[${i % 2 ? 'MY_NRIC' : 'EMAIL'}_1] `;
    const t0 = performance.now();
    const r = await withReply(() => chatStream(cut(answer, 7)), () => chat(keys['tok']!, { messages: MSG, stream: true }));
    assert.equal(r.status, 200);
    assert.equal(streamedText(r.text).get(0), restoreOf(answer));
    assert.ok(performance.now() - t0 < 30_000);
  });

  const responsesEvents = (text: string, deltas: string[]) => [
    { type: 'response.created', sequence_number: 0, response: { id: 'resp_s', object: 'response', status: 'in_progress', output: [] } },
    { type: 'response.output_item.added', output_index: 0, item: { type: 'message', id: 'msg_s', status: 'in_progress', role: 'assistant', content: [] } },
    { type: 'response.content_part.added', item_id: 'msg_s', output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } },
    ...deltas.map((d) => ({ type: 'response.output_text.delta', item_id: 'msg_s', output_index: 0, content_index: 0, delta: d })),
    { type: 'response.output_text.done', item_id: 'msg_s', output_index: 0, content_index: 0, text },
    { type: 'response.content_part.done', item_id: 'msg_s', output_index: 0, content_index: 0, part: { type: 'output_text', text, annotations: [] } },
    { type: 'response.output_item.done', output_index: 0, item: { type: 'message', id: 'msg_s', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] } },
    { type: 'response.completed', response: { ...responsesObject(text), id: 'resp_s' } },
  ];
  const responsesDeltas = (sse: string) =>
    sseData(sse)
      .filter((o) => (o as any)?.type === 'response.output_text.delta')
      .map((o) => (o as any).delta as string)
      .join('');

  it('Responses API stream: 1-character output_text deltas and the output_text.done text are restored', async () => {
    const text = 'Your IC is [MY_NRIC_1] and mail [EMAIL_1].';
    const r = await withReply(() => ({ kind: 'sse', events: responsesEvents(text, cut(text, 1)), done: false }), () => post('/responses', keys['tok']!, { model: 'probe', input: PROMPT, stream: true }));
    assert.equal(r.status, 200);
    assert.equal(responsesDeltas(r.text), restoreOf(text));
    assert.equal((sseData(r.text).find((o) => (o as any)?.type === 'response.output_text.done') as any).text, restoreOf(text));
  });

  it('BUG: Responses API stream: content_part.done, output_item.done and response.completed still carry the placeholders', async () => {
    const text = 'Your IC is [MY_NRIC_1].';
    const r = await withReply(() => ({ kind: 'sse', events: responsesEvents(text, [text]), done: false }), () => post('/responses', keys['tok']!, { model: 'probe', input: PROMPT, stream: true }));
    assert.doesNotMatch(r.text, /\[MY_NRIC_1\]/);
    const completed = sseData(r.text).find((o) => (o as any)?.type === 'response.completed') as any;
    assert.equal(completed.response.output[0].content[0].text, restoreOf(text));
  });

  it('BUG: Responses API stream: a fragment held at the end of the deltas is dropped when output_text.done arrives', async () => {
    const text = 'see list [';
    const r = await withReply(() => ({ kind: 'sse', events: responsesEvents(text, ['see list ', '[']), done: false }), () => post('/responses', keys['tok']!, { model: 'probe', input: PROMPT, stream: true }));
    assert.equal(responsesDeltas(r.text), text);
  });

  it('BUG: a held fragment is sent after the finish chunk when the finish chunk has no `delta` (content after finish_reason)', async () => {
    const events = [deltaChunk('IC [MY_NR'), chunk([{ index: 0, finish_reason: 'stop' }])];
    const r = await withReply(() => ({ kind: 'sse', events }), () => chat(keys['tok']!, { messages: MSG, stream: true }));
    const data = sseData(r.text);
    const finish = data.findIndex((o) => (o as any)?.choices?.[0]?.finish_reason === 'stop');
    const after = data.slice(finish + 1).filter((o) => typeof (o as any)?.choices?.[0]?.delta?.content === 'string' && (o as any).choices[0].delta.content !== '');
    assert.deepEqual(after, [], 'no content after finish_reason');
    assert.equal(streamedText(r.text).get(0), 'IC [MY_NR');
  });

  it('BUG: a non-streamed tokenize answer is re-serialised: bytes outside the restored values change (whitespace, escapes, integers beyond 2^53)', async () => {
    const raw = '{\n  "id": "chatcmpl-x",\n  "object": "chat.completion",\n  "created": 1,\n  "model": "probe",\n  "system_fingerprint": "caf\\u00e9",\n  "seed": 12345678901234567891,\n  "choices": [ { "index": 0, "message": { "role": "assistant", "content": "ok" }, "finish_reason": "stop" } ],\n  "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 }\n}';
    const red = await withReply(() => ({ kind: 'raw', text: raw }), () => chat(keys['red']!, { messages: MSG }));
    assert.equal(red.text, raw, 'redact relays the bytes (control)');
    const tok = await withReply(() => ({ kind: 'raw', text: raw }), () => chat(keys['tok']!, { messages: MSG }));
    assert.equal(tok.text, raw);
  });

  it('one identifier written two ways is one placeholder for the model; the caller gets its first spelling back for both (docs/privacy.md)', async () => {
    const prompt = `IC ${MYKAD}, also written ${MYKAD.replace(/-/g, '')}`;
    const r = await chat(keys['tok']!, { messages: [{ role: 'user', content: prompt }] });
    assert.equal(r.json().choices[0].message.content, `You said: IC ${MYKAD}, also written ${MYKAD}`);
  });
});

// =============================================================================================================
// 4. Fail closed: budget, size, pathological inputs
// =============================================================================================================

/** Time one guard scan (the default configuration, redact) of `text` as a chat message. */
function timeScan(text: string, cfg: Record<string, unknown> = {}): { ms: number; outcome: string } {
  const guard = new PrivacyGuard(privacySchema.parse(cfg));
  const policy = guard.policyFor(null, null);
  const t0 = performance.now();
  let outcome: string;
  try {
    const o = guard.inspect('chat.completions', { model: 'm', messages: [{ role: 'user', content: text }] }, policy);
    outcome = `forwarded (${[...o.counts].map(([k, n]) => `${k} ${n}`).join(', ') || 'nothing found'})`;
  } catch (e) {
    outcome = `${(e as { status?: number }).status ?? '?'} ${(e as { code?: string }).code ?? (e as Error).message}`;
  }
  return { ms: performance.now() - t0, outcome };
}

describe('4. fail closed', () => {
  it('text beyond max_chars (summed over every scanned field) → 413 privacy_scan_too_large, nothing forwarded, recorded', async () => {
    const half = 'a'.repeat(150_001);
    const { result, bodies } = await forwarded(() => chat(keys['red']!, { messages: [{ role: 'user', content: half }, { role: 'user', content: [{ type: 'text', text: half }] }] }));
    assert.equal(result.status, 413, result.text);
    assert.equal(result.json().error.code, 'privacy_scan_too_large');
    assert.equal(bodies.length, 0);
    assert.equal((await g.record(result.id)).error_code, 'privacy_scan_too_large');
    const emb = await forwarded(() => post('/embeddings', keys['red']!, { model: 'probe', input: Array.from({ length: 31 }, () => 'b'.repeat(10_000)) }));
    assert.equal(emb.result.status, 413);
    assert.equal(emb.bodies.length, 0);
  });

  it('pathological inputs: every scan is bounded and the gateway answers and keeps serving (scan times in the diagnostics)', async (t) => {
    const inputs: Array<[string, string]> = [
      ['100k digits', '7'.repeat(100_000)],
      ['290k digits', '7'.repeat(290_000)],
      ['"1 " × 145k (digits and spaces)', '1 '.repeat(145_000)],
      ['"1-" × 145k', '1-'.repeat(145_000)],
      ['"4310 " × 58k (card-like groups)', '4310 '.repeat(58_000)],
      ['" - " × 96k (separators only)', ' - '.repeat(96_000)],
      ['290k "-"', '-'.repeat(290_000)],
      ['290k "@"', '@'.repeat(290_000)],
      ['"a@" × 145k', 'a@'.repeat(145_000)],
      ['"a." × 145k then @x.com', `${'a.'.repeat(145_000)}@x.com`],
      ['x@ then "a." × 145k', `x@${'a.'.repeat(145_000)}`],
      ['"SA63" then " 1" × 145k', `SA63${' 1'.repeat(145_000)}`],
      ['"A1" × 145k', 'A1'.repeat(145_000)],
      ['Arabic-Indic digits 290k', '٧'.repeat(290_000)],
      ['"1\\u200b2" × 96k (zero-width between digits)', '1\u200b2'.repeat(96_000)],
      ['base64 290k', randomBytes(217_000).toString('base64')],
      ['context words × 14k', 'MyKad NIK Aadhaar IC '.repeat(14_000)],
    ];
    const report: string[] = [];
    for (const [label, text] of inputs) {
      const s = timeScan(text);
      report.push(`${label.padEnd(44)} ${String(text.length).padStart(7)} chars  ${s.ms.toFixed(1).padStart(8)} ms  ${s.outcome}`);
      assert.ok(s.ms < 2_000, `${label}: ${s.ms} ms`);
    }
    for (const line of report) t.diagnostic(line);
    // Through the gateway: answered (200 or a fail-closed refusal), never a crash, still serving.
    for (const [label, text] of inputs.slice(0, 6)) {
      const r = await chat(keys['red']!, { messages: [{ role: 'user', content: text }] });
      assert.ok([200, 503].includes(r.status), `${label}: ${r.status}`);
    }
    assert.equal((await fetch(`${g.origin}/healthz`)).status, 200);
  });

  it('BUG: a run of zero-width characters (or soft hyphens) between two digits is quadratic and the time budget is not checked during it', () => {
    const s = timeScan(`1${'\u200b'.repeat(100_000)}2`);
    assert.ok(s.ms < 1_000, `${s.ms} ms for 100k zero-width characters (budget 250 ms)`);
  });

  it('BUG: many identifiers of equal length make overlap resolution quadratic; the budget is not checked there, so the request is forwarded after many times its budget', () => {
    const s = timeScan('ab@cd.ef '.repeat(60_000));
    assert.ok(s.ms < 1_000 || s.outcome.startsWith('503'), `${s.ms} ms, ${s.outcome}`);
    const c = timeScan(`${CARD} `.repeat(30_000));
    assert.ok(c.ms < 1_000 || c.outcome.startsWith('503'), `${c.ms} ms, ${c.outcome}`);
  });

  it('BUG: one long letters-and-digits token (a hex dump) is quadratic in the alphanumeric window scan: the budget overshoots many times and 100k hex characters are refused', () => {
    const hex = timeScan(randomBytes(50_000).toString('hex'));
    assert.ok(!hex.outcome.startsWith('503'), `100k hex characters: ${hex.outcome}`);
    const big = timeScan('AB12'.repeat(499_000));
    assert.ok(big.ms < 1_000, `2M alphanumeric characters: ${big.ms} ms`);
  });
});

describe('4b. fail closed: time budget exceeded → 503, nothing forwarded', () => {
  let g2: TestGateway;
  let up2: ProbeUpstream;
  before(async () => {
    up2 = await probeUpstream();
    g2 = await startGateway({
      config: {
        privacy: { time_budget_ms: 1, default: { action: 'redact' } },
        backends: [{ id: 'probe', provider: 'openai-compatible', base_url: up2.url, jurisdiction: 'MY' }],
        models: [{ name: 'probe', backend: 'probe', upstream_model: 'probe-llm' }],
      },
    });
  });
  after(async () => {
    await g2?.close();
    await up2?.close();
  });

  it('a scan over its budget refuses the request with 503 privacy_guard_unavailable and retry-after, and forwards nothing', async () => {
    const n = up2.posts().length;
    const r = await fetch(`${g2.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${g2.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'probe', messages: [{ role: 'user', content: `${CARD} `.repeat(20_000) }] }),
    });
    const text = await r.text();
    assert.equal(r.status, 503, text);
    assert.equal(JSON.parse(text).error.code, 'privacy_guard_unavailable');
    assert.equal(r.headers.get('retry-after'), '1');
    assert.equal(up2.posts().length, n);
    assert.ok(!text.includes(CARD));
  });
});

// =============================================================================================================
// 5. No identifier in logs, request rows, audit entries, files
// =============================================================================================================

describe('5. storage: no identifier in logs, request rows, audit entries or files', () => {
  const FORMS = [CANARY, CANARY.replace(/-/g, '')];

  it('canary: every action, upstream errors quoting it (JSON and stream), validation errors naming it, bad JSON around it, Anthropic path — found nowhere afterwards', async () => {
    const prompt = `My MyKad is ${CANARY}.`;
    for (const k of ['red', 'tok', 'blk', 'msk', 'mix', 'alw']) {
      await chat(keys[k]!, { messages: [{ role: 'user', content: prompt }] });
      await chat(keys[k]!, { messages: [{ role: 'user', content: prompt }], stream: true });
    }
    // Upstream errors that quote the prompt, put it in `code`/`type`, or stream it in an error event (allow: it went out).
    await withReply(
      (r) => ({ kind: 'json', status: 400, body: { error: { message: `cannot process: ${JSON.stringify(r.json)}`, type: CANARY, code: CANARY, param: CANARY } } }),
      () => chat(keys['alw']!, { messages: [{ role: 'user', content: prompt }] }),
    );
    await withReply(
      () => ({ kind: 'json', status: 500, body: { error: { message: `boom ${CANARY}`, type: 'server_error', code: CANARY.replace(/-/g, ':') } } }),
      () => chat(keys['alw']!, { messages: [{ role: 'user', content: prompt }] }),
    );
    await withReply(
      () => ({ kind: 'sse', events: [deltaChunk('x'), { error: { message: `bad ${CANARY}`, code: CANARY, type: CANARY } }], done: false }),
      () => chat(keys['alw']!, { messages: [{ role: 'user', content: prompt }], stream: true }),
    );
    await withReply(
      () => ({ kind: 'sse', events: [{ type: 'response.failed', response: { error: { code: CANARY, message: CANARY } } }], done: false }),
      () => post('/responses', keys['alw']!, { model: 'probe', input: prompt, stream: true }),
    );
    // Client errors that name or echo the value.
    await chat(keys['red']!, { model: `MyKad ${CANARY}`, messages: [{ role: 'user', content: 'x' }] });
    await chat(keys['red']!, { stream: CANARY, messages: [{ role: 'user', content: prompt }] });
    await chat(keys['red']!, { n: CANARY, messages: [{ role: 'user', content: prompt }] });
    await chat(keys['red']!, { messages: [{ role: CANARY, content: prompt }] });
    await chat(keys['red']!, { messages: [{ role: 'user', content: prompt }] }, { 'x-sovra-data-class': CANARY });
    await chat(keys['red']!, { messages: [{ role: 'user', content: prompt }] }, { 'x-sovra-timeout-ms': CANARY });
    const badJson = await post('/chat/completions', keys['red']!, `{"model":"probe","messages":[{"role":"user","content":"${prompt}"}] ${CANARY}`);
    assert.equal(badJson.status, 400);
    await post('/chat/completions', `sk-${CANARY}`, { model: 'probe', messages: [{ role: 'user', content: prompt }] });
    await fetch(`${g.origin}/v1/models/${encodeURIComponent(CANARY)}`, { headers: { authorization: `Bearer ${keys['red']!}` } });
    await fetch(`${g.origin}/v1/${CANARY}?ic=${CANARY}`, { method: 'POST', headers: { authorization: `Bearer ${keys['red']!}` }, body: prompt });
    await post('/chat/completions', keys['red']!, { model: 'claude', messages: [{ role: 'user', content: prompt }, { role: 'assistant', content: `ok ${CANARY}` }, { role: 'user', content: 'again' }] });

    await g.gw.recorder().flush();
    const offenders: string[] = [];
    const check = (where: string, text: string) => {
      for (const f of FORMS) if (text.includes(f)) offenders.push(`${where} contains ${f}`);
    };
    for (const l of g.logs()) check('log line', l);
    check('request rows', JSON.stringify(await g.records()));
    const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
    check('audit entries', entries.map((e) => e.toString('utf8')).join('\n'));
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p);
        else check(`file ${name}`, readFileSync(p).toString('latin1'));
      }
    };
    walk(g.dir);
    assert.deepEqual(offenders, []);
    assert.ok(g.logs().some((l) => l.includes('"pii":["MY_NRIC')), 'the log records what was found, as counts');
  });

  /** A logger writing into an array (the production logger: scrubbing on). */
  function captureLogger() {
    const lines: string[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        lines.push(c.toString('utf8'));
        cb();
      },
    });
    return { log: createLogger('trace', sink), lines };
  }

  it('the log scrubber: messages, format arguments, fields, nested objects, errors (message, stack, cause) at every level', () => {
    const { log, lines } = captureLogger();
    log.trace(`card ${CARD}`);
    log.debug({ prompt: `IC ${MYKAD}`, list: [{ mail: EMAIL }] }, 'fields');
    log.info('%s and %s', `IBAN ${IBAN}`, `Aadhaar ${AADHAAR}`);
    log.warn({ err: new Error(`upstream said ${CARD}`, { cause: new Error(`inner ${MYKAD}`) }) }, 'cause');
    log.error({ err: new Error(`thrown with ${EMAIL}`) }, 'with a message');
    log.fatal({ e: new TypeError(`bad ${SA_ID}`) }, `fatal ${inScript(MYKAD, 0x660)}`);
    const all = lines.join('\n');
    assert.deepEqual([CARD, MYKAD, EMAIL, IBAN, AADHAAR, SA_ID].filter((v) => all.includes(v) || shows(all, v)), []);
    assert.match(all, /\[PAYMENT_CARD\]/);
  });

  it('BUG: logging an Error without a message (`log.error(err)`, `log.error({ err })`) writes its message unscrubbed as `msg`', () => {
    const { log, lines } = captureLogger();
    log.error(new Error(`upstream said: IC ${MYKAD}, mail ${EMAIL}`));
    log.warn({ err: new Error(`upstream said: IC ${MYKAD}, mail ${EMAIL}`) });
    const all = lines.join('\n');
    assert.deepEqual([MYKAD, EMAIL].filter((v) => all.includes(v)), [], all);
  });

  it('BUG: the scrubber’s quick pre-check lists only some digit scripts, so identifiers in Gujarati, Myanmar, Tamil, mathematical … digits are logged as is (the guard itself catches them)', () => {
    const { log, lines } = captureLogger();
    for (const zero of [0xae6, 0x1040, 0xbe6, 0x17e0, 0x1d7ce]) log.error({ detail: `card ${inScript(CARD_C, zero)}` }, `upstream echoed ${inScript(CARD_C, zero)}`);
    assert.ok(!lines.some((l) => shows(l, CARD)), lines.join('\n'));
  });

  it('BUG: the scrubber leaves objects nested deeper than 8 levels, Buffers/typed arrays, child-logger bindings and object keys untouched', () => {
    const { log, lines } = captureLogger();
    let deep: Record<string, unknown> = { v: `card ${CARD}` };
    for (let i = 0; i < 10; i++) deep = { d: deep };
    log.info({ deep }, 'deep');
    log.info({ buf: Buffer.from(`card ${CARD}`) }, 'buffer');
    log.child({ ctx: `card ${CARD}` }).info('child');
    log.info({ [`card ${CARD}`]: 1 }, 'key');
    const decoded = lines.map((l) => l.replace(/"data":\[([\d,]+)\]/g, (_m, b: string) => JSON.stringify(Buffer.from(b.split(',').map(Number)).toString('utf8'))));
    assert.ok(!decoded.some((l) => shows(l, CARD)), decoded.join('\n'));
  });
});

// =============================================================================================================
// 6. False positives that would break normal use
// =============================================================================================================

describe('6. false positives', () => {
  it('ordinary prompts reach the model unchanged: prices, amounts, dates, ISO timestamps, phone numbers, order/invoice/tracking numbers, code, hashes, base64, JWTs, IPs, versions, ISBN/IMEI', async () => {
    const texts = [
      'The total is $1,234,567.89, RM 12 345 678,90 or USD 4310.04; budget 9 876 543 210 000 rupiah.',
      'Meeting on 2026-11-29, 29/11/2026, 11.29.2026 and 20261129; born 1990-01-01.',
      '2026-11-29T20:56:07.659Z, 2026-11-29 20:56:07,659 +0800, Fri, 29 Nov 2026 20:56:07 GMT',
      'Call me at +60 12-345 6789, 03-2615 8888, +1 (415) 555-2671, +44 20 7946 0958, +91 98765 43210 or 0501234567.',
      'Your order number 5809211805089 shipped; invoice INV-2026-000417; tracking 1Z9A45E2031245781; ticket 1234567890; Order #4310045543887329.',
      'for (let i = 0; i < 1000000; i++) { x = i * 31 + 7; }\nconst MAX = 9007199254740991; const PRIME = 2147483647; const a = [1234, 5678, 9012, 3456];',
      'sha256 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881, commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904, md5 d41d8cd98f00b204e9800998ecf8427e',
      `token ${Buffer.from('The quick brown fox 1234567890 jumps 0987654321').toString('base64')} and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U`,
      'hosts 192.168.100.200, 10.0.0.1, 2001:db8::1; v1.2.3 build 20261129.1234 (node 20.11.1); @sovra/tlog@1.2.3',
      'Device IMEI 356938035643809 and ISBN 978-0-306-40615-7; EAN 4006381333931; lat 3.139003, lon 101.686855',
      'timestamp 1699864009357, Unix time 1684075748, created_at: 1684075748, order_id=1684075748',
      'factorial 20 = 2432902008176640000; pi 3.14159265358979323846264338327950288419716939937510',
    ];
    const r = await sendEach(keys['red']!, texts);
    assert.equal(r.status, 200);
    const changed = texts.flatMap((t, i) => (r.sent[i] === t ? [] : [`${t} → ${r.sent[i]}`]));
    assert.deepEqual(changed, []);
  });

  it('the fixture’s negative sentences are left alone through the gateway', async () => {
    const negatives = (JSON.parse(readFileSync(new URL('./fixtures/pii-vectors.json', import.meta.url), 'utf8')) as { sentences: Array<{ kind: string; text: string }> }).sentences.filter((s) => s.kind === 'negative').map((s) => s.text);
    const r = await sendEach(keys['red']!, negatives);
    assert.deepEqual(r.sent, negatives);
  });

  it('BUG: Unix timestamps in JSON, logs and SQL (about 1 in 10 of current epoch seconds / milliseconds) are redacted as Saudi / Thai national IDs', async () => {
    const texts = [
      '{"id": 42, "created": 1684075748, "model": "gpt-4o"}',
      '{"ts": 1699864009357, "level": "info"}',
      'exp: 1684075748, iat: 1684072148',
      'SELECT * FROM events WHERE created > 1684075748;',
      'log: [1684075748] GET /api 200',
      'Date.now() returned 1699864009357',
    ];
    const r = await sendEach(keys['red']!, texts);
    assert.deepEqual(r.sent, texts);
  });

  it('BUG: the RFC 4122 example UUID loses its last group (read as an Aadhaar number); an SSH git remote is read as an e-mail', async () => {
    const texts = ['id 123e4567-e89b-12d3-a456-426614174000 in the table', 'git clone git@github.com:owner/repo.git'];
    const r = await sendEach(keys['red']!, texts);
    assert.deepEqual(r.sent, texts);
  });
});
