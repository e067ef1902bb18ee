/**
 * The privacy guard through the gateway: what the upstream receives (its own request log), what
 * the caller gets back (tokenize restores, also in streams split into tiny chunks), what the audit
 * entry records (counts per type and action, never values), routing by what was found (`allow`
 * raises the classification), and the canary test: an identifier sent in prompts under every
 * action, with debug logging and an upstream that echoes it in errors, appears afterwards in no log
 * line, request row, audit entry or file of the gateway's folder (database, WAL, keys).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { allEntries, auditEntry } from './helpers/audit.ts';
import { createKey } from '../src/keys/keys.ts';

const MYKAD = '570306-09-3427';
/** The canary: a valid MyKad used nowhere else. */
const CANARY = '880515-14-5561';
const CANARY_FORMS = [CANARY, CANARY.replace(/-/g, ''), '880515145561'];

interface Echo {
  url: string;
  bodies: string[];
  close(): Promise<void>;
}

/**
 * An OpenAI-compatible upstream that answers with the last user message's text. `user: "chunk-N"`
 * streams the answer N characters per chunk; a prompt containing ECHO_ERROR gets a 400 whose message
 * quotes the prompt and whose `code` is the prompt's digits.
 */
async function echoUpstream(name: string): Promise<Echo> {
  const bodies: string[] = [];
  const server = http.createServer((req, res) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString('utf8')));
    req.on('end', () => {
      bodies.push(b);
      const body = JSON.parse(b) as Record<string, any>;
      const msgs = body['messages'] as Array<{ role: string; content: string }>;
      const text = String(msgs.filter((m) => m.role === 'user').at(-1)?.content ?? '');
      if (text.includes('ECHO_ERROR')) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `cannot process: ${text}`, type: 'invalid_request_error', code: text.replace(/\D/g, '').slice(0, 12) } }));
        return;
      }
      const id = `chatcmpl-${name}`;
      if (body['stream'] !== true) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id, object: 'chat.completion', created: 1, model: name, choices: [{ index: 0, message: { role: 'assistant', content: `You said: ${text}` }, finish_reason: 'stop' }], usage: { prompt_tokens: 9, completion_tokens: 9, total_tokens: 18 } }));
        return;
      }
      const n = Number(/^chunk-(\d+)$/.exec(String(body['user'] ?? ''))?.[1] ?? 4);
      const answer = `You said: ${text}`;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const ev = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
      let out = ev({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
      for (let i = 0; i < answer.length; i += n) out += ev({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [{ index: 0, delta: { content: answer.slice(i, i + n) }, finish_reason: null }] });
      out += ev({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
      out += ev({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [], usage: { prompt_tokens: 9, completion_tokens: 9, total_tokens: 18 } });
      res.end(out + 'data: [DONE]\n\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, bodies, close: () => new Promise((r) => server.close(() => r())) };
}

describe('privacy guard through the gateway', () => {
  let g: TestGateway;
  let pub: Echo;
  let sec: Echo;
  const keys: Record<string, string> = {};

  before(async () => {
    pub = await echoUpstream('echo-public');
    sec = await echoUpstream('echo-secret');
    g = await startGateway({
      logLevel: 'debug',
      config: {
        audit: { checkpoint_interval_ms: 20 },
        privacy: {
          default: { action: 'redact' },
          tenants: {
            tok: { action: 'tokenize' },
            blk: { types: { MY_NRIC: 'block' } },
            alw: { action: 'allow', allow_classification: 'confidential' },
          },
        },
        backends: [
          { id: 'pub', provider: 'openai-compatible', base_url: pub.url, jurisdiction: 'MY', max_classification: 'public' },
          { id: 'sec', provider: 'openai-compatible', base_url: sec.url, jurisdiction: 'MY', max_classification: 'secret' },
        ],
        models: [{ name: 'echo', strategy: 'weighted', pool: [{ backend: 'pub' }, { backend: 'sec' }] }],
      },
    });
    for (const t of ['tok', 'blk', 'alw']) keys[t] = (await createKey(g.gw.store(), { tenant: t, name: `${t}-key` })).key;
    keys['default'] = g.key;
  });
  after(async () => {
    await g.close();
    await pub.close();
    await sec.close();
  });

  const upstreamBodies = () => [...pub.bodies, ...sec.bodies];
  async function chat(key: string, content: string, extra: Record<string, unknown> = {}) {
    const r = await fetch(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content }], ...extra }),
    });
    return { status: r.status, text: await r.text(), id: r.headers.get('x-request-id')! };
  }
  const entryOf = (id: string) => auditEntry(g.origin, g.gw.audit()!.vkey, id);
  const streamText = (sse: string) =>
    sse
      .split('\n\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => JSON.parse(l.slice(6)))
      .map((o) => o.choices?.[0]?.delta?.content ?? '')
      .join('');

  it('redact (default): the upstream and the answer see a placeholder; the audit entry counts it', async () => {
    const n = upstreamBodies().length;
    const r = await chat(keys['default']!, `My MyKad is ${MYKAD}, please check.`);
    assert.equal(r.status, 200, r.text);
    const sent = upstreamBodies().slice(n);
    assert.equal(sent.length, 1);
    assert.ok(sent[0]!.includes('[MY_NRIC_1]') && !sent[0]!.includes(MYKAD));
    assert.match(r.text, /You said: My MyKad is \[MY_NRIC_1\], please check\./);
    const e = await entryOf(r.id);
    assert.deepEqual(e['policy']['pii'], ['MY_NRIC redact 1']);
  });

  it('tokenize: the model sees placeholders, the caller gets the values back — also streamed 1 to 7 characters per chunk', async () => {
    const n = upstreamBodies().length;
    const prompt = `IC ${MYKAD} and again ${MYKAD}; mail siti.aminah@example.my`;
    const plain = await chat(keys['tok']!, prompt);
    assert.equal(plain.status, 200);
    assert.equal(JSON.parse(plain.text).choices[0].message.content, `You said: ${prompt}`);
    for (let size = 1; size <= 7; size++) {
      const s = await chat(keys['tok']!, prompt, { stream: true, user: `chunk-${size}` });
      assert.equal(s.status, 200);
      assert.equal(streamText(s.text), `You said: ${prompt}`, `chunk size ${size}`);
      assert.doesNotMatch(s.text, /\[MY_NRIC|\[EMAIL/);
    }
    for (const b of upstreamBodies().slice(n)) {
      assert.ok(!b.includes(MYKAD) && !b.includes('siti.aminah'), 'the upstream never saw a value');
      assert.ok(b.includes('[MY_NRIC_1] and again [MY_NRIC_1]; mail [EMAIL_1]'));
    }
  });

  it('block: 400 pii_detected, nothing forwarded, the refusal is audited with the counts', async () => {
    const n = upstreamBodies().length;
    const r = await chat(keys['blk']!, `MyKad ${MYKAD}`);
    assert.equal(r.status, 400);
    const err = JSON.parse(r.text).error;
    assert.equal(err.code, 'pii_detected');
    assert.match(err.message, /MY_NRIC/);
    assert.ok(!r.text.includes(MYKAD));
    assert.equal(upstreamBodies().length, n);
    const e = await entryOf(r.id);
    assert.equal(e['status'], 400);
    assert.deepEqual(e['policy']['pii'], ['MY_NRIC block 1']);
  });

  it('allow: the identifier goes out as is, only to a backend cleared for the raised classification', async () => {
    const p0 = pub.bodies.length;
    const s0 = sec.bodies.length;
    for (let i = 0; i < 4; i++) assert.equal((await chat(keys['alw']!, `MyKad ${MYKAD}`)).status, 200);
    assert.equal(pub.bodies.length, p0, 'the public-only backend received none');
    assert.equal(sec.bodies.length, s0 + 4);
    assert.ok(sec.bodies.at(-1)!.includes(MYKAD));
    // Without identifiers the same tenant uses both.
    for (let i = 0; i < 4; i++) assert.equal((await chat(keys['alw']!, 'hello')).status, 200);
    assert.ok(pub.bodies.length > p0);
  });

  it('canary: sent under every action, with debug logging and an upstream echoing it in errors, it is stored nowhere', async () => {
    const prompts = [`My MyKad is ${CANARY}.`, `ECHO_ERROR my IC ${CANARY}`, `IC ${CANARY.replace(/-/g, '')} here`];
    for (const k of ['default', 'tok', 'blk', 'alw']) {
      for (const p of prompts) {
        await chat(keys[k]!, p);
        await chat(keys[k]!, p, { stream: true, user: 'chunk-3' });
      }
    }
    // An upstream error code made of the canary's digits is not recorded as the error code.
    await g.gw.recorder().flush();
    const offenders: string[] = [];
    const check = (where: string, text: string) => {
      for (const f of CANARY_FORMS) if (text.includes(f)) offenders.push(`${where} contains ${f}`);
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
    assert.ok(g.logs().some((l) => l.includes('"pii":["MY_NRIC')), 'the log does record what was found, as counts');
  });
});
