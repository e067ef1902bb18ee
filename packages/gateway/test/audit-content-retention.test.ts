/**
 * Content retention (`audit.content_retention`, src/audit/content.ts): sealing and opening, key files
 * and rotation, the bodies `Commitments` keeps, the sink's tenant filter, and end to end on SQLite
 * (and PostgreSQL when SOVRA_TEST_POSTGRES_URL is set): requests through the gateway → `sovra audit
 * open` writes the exact bytes, which match the entry's commitments → `check-commitment` offline →
 * a body over the cap, a row moved onto another entry, the purge by age, and erasure.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONTENT_KEY_ENV,
  ContentError,
  contentKeyId,
  loadContentKeyring,
  openContent,
  parseContentKeys,
  sealContent,
  type ContentKeyring,
} from '../src/audit/content.ts';
import { Commitments } from '../src/audit/record.ts';
import { createJournalSink } from '../src/audit/sink.ts';
import { AuditStorage } from '../src/audit/storage.ts';
import { auditOpen } from '../src/audit/cli.ts';
import type { Journal, JournalItem } from '../src/audit/journal.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { CH, EV, DONE, chatCompletion, jsonResponse, startMockUpstream, type MockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { allEntries, runSovra, writeCliConfig } from './helpers/audit.ts';
import { rng } from './helpers/prng.ts';

const pgUrl = process.env['SOVRA_TEST_POSTGRES_URL'];
const hmac = (salt: Uint8Array, b: Uint8Array) => createHmac('sha256', salt).update(b).digest('hex');
const ring = (...keys: Buffer[]): ContentKeyring => {
  const ks = keys.map((key) => ({ id: contentKeyId(key), key }));
  return { current: ks[0]!, byId: new Map(ks.map((k) => [k.id, k])), source: 'test', created: false };
};

describe('sealing and opening retained content', () => {
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);

  test('every combination of bodies round-trips, for random sizes', () => {
    const rnd = rng(7);
    const keys = ring(k1);
    for (let i = 0; i < 60; i++) {
      const size = (n: number) => Math.floor(rnd() * n);
      const request = i % 4 === 1 ? null : randomBytes(size(i % 2 ? 5000 : 3));
      const response = i % 4 === 2 ? null : randomBytes(size(i % 3 ? 70_000 : 2));
      const sealed = sealContent(keys.current, `req-${i}`, { request, response });
      assert.equal(sealed.keyId, keys.current.id);
      assert.equal(sealed.nonce.byteLength, 12);
      const opened = openContent(keys, sealed);
      assert.deepEqual(opened.request && Buffer.from(opened.request), request, `request of case ${i}`);
      assert.deepEqual(opened.response && Buffer.from(opened.response), response, `response of case ${i}`);
    }
  });

  test('the ciphertext hides the bodies, and two seals of the same bodies differ (fresh nonce)', () => {
    const body = Buffer.from('CANARY-SECRET-PROMPT '.repeat(20));
    const a = sealContent(ring(k1).current, 'x', { request: body, response: body });
    const b = sealContent(ring(k1).current, 'x', { request: body, response: body });
    assert.ok(!Buffer.from(a.data).includes('CANARY'));
    assert.notDeepEqual(Buffer.from(a.nonce), Buffer.from(b.nonce));
    assert.notDeepEqual(Buffer.from(a.data), Buffer.from(b.data));
  });

  test('a row moved onto another entry, an altered byte, or a missing key does not open', () => {
    const keys = ring(k1);
    const sealed = sealContent(keys.current, 'entry-a', { request: Buffer.from('{"a":1}'), response: Buffer.from('ok') });
    assert.throws(() => openContent(keys, { ...sealed, id: 'entry-b' }), (e: unknown) => e instanceof ContentError && e.code === 'CORRUPT');
    for (let i = 0; i < sealed.data.byteLength; i += 7) {
      const d = Buffer.from(sealed.data);
      d[i]! ^= 1;
      assert.throws(() => openContent(keys, { ...sealed, data: d }), (e: unknown) => e instanceof ContentError && e.code === 'CORRUPT', `flipped byte ${i}`);
    }
    assert.throws(() => openContent(keys, { ...sealed, data: Buffer.from(sealed.data).subarray(0, 10) }), (e: unknown) => e instanceof ContentError && e.code === 'CORRUPT');
    assert.throws(() => openContent(ring(k2), sealed), (e: unknown) => e instanceof ContentError && e.code === 'UNKNOWN_KEY');
    // A key id that names an existing key but data sealed under another: authentication fails.
    assert.throws(() => openContent(ring(k2), { ...sealed, keyId: contentKeyId(k2) }), (e: unknown) => e instanceof ContentError && e.code === 'CORRUPT');
  });

  test('rotation: the first key seals, every key opens', () => {
    const old = sealContent(ring(k1).current, 'old', { request: null, response: Buffer.from('before rotation') });
    const rotated = ring(k2, k1);
    const fresh = sealContent(rotated.current, 'new', { request: null, response: Buffer.from('after') });
    assert.equal(fresh.keyId, contentKeyId(k2));
    assert.equal(Buffer.from(openContent(rotated, old).response!).toString(), 'before rotation');
    assert.equal(Buffer.from(openContent(rotated, fresh).response!).toString(), 'after');
  });

  test('key text: lines, commas and comments; malformed keys are refused without echoing them', () => {
    const a = k1.toString('base64');
    const b = k2.toString('base64');
    assert.deepEqual(parseContentKeys(`# keys\n${a}\n\n${b}\n`, 'f').map((k) => k.id), [contentKeyId(k1), contentKeyId(k2)]);
    assert.deepEqual(parseContentKeys(`${a}, ${b}`, 'env').map((k) => k.id), [contentKeyId(k1), contentKeyId(k2)]);
    const short = randomBytes(16).toString('base64');
    for (const bad of ['', '# only a comment', short, a.slice(0, -2) + '!!', `${a} ${short}`]) {
      assert.throws(
        () => parseContentKeys(bad, 'the-source'),
        (e: unknown) => e instanceof Error && e.message.includes('the-source') && !e.message.includes(short) && !e.message.includes(a),
        JSON.stringify(bad),
      );
    }
  });

  test('the key file is created once with mode 0600 and read back; the environment variable wins', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sovra-content-key-'));
    const file = join(dir, 'sub', 'content.key');
    assert.equal(loadContentKeyring(file, {}, { create: false }), undefined);
    const created = loadContentKeyring(file, {}, { create: true })!;
    assert.equal(created.created, true);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = loadContentKeyring(file, {}, { create: true })!;
    assert.equal(again.created, false);
    assert.equal(again.current.id, created.current.id);
    assert.equal(again.warning, undefined);
    chmodSync(file, 0o644);
    assert.match(loadContentKeyring(file, {}, { create: false })!.warning ?? '', /mode 0644: others can read it/);
    const fromEnv = loadContentKeyring(file, { [CONTENT_KEY_ENV]: k2.toString('base64') }, { create: true })!;
    assert.equal(fromEnv.current.id, contentKeyId(k2));
    assert.equal(fromEnv.source, CONTENT_KEY_ENV);
  });
});

describe('Commitments with retention', () => {
  test('the retained bytes are exactly the committed bytes (strings, buffers, multi-byte UTF-8)', () => {
    const c = new Commitments(undefined, 1 << 20);
    const req = Buffer.from('{"messages":[{"role":"user","content":"héllo 🌏"}]}');
    c.request(req);
    const parts: Array<string | Uint8Array> = ['data: {"a":"é"}\n\n', Buffer.from('data: {"b":2}\n\n'), 'x'.repeat(20_000), 'data: [DONE]\n\n'];
    for (const p of parts) c.response(p);
    const d = c.digests();
    const kept = c.retained();
    assert.deepEqual(Buffer.from(kept.request!), req);
    assert.equal(hmac(c.salt, kept.request!), d.request);
    assert.equal(hmac(c.salt, kept.response!), d.response);
    assert.equal(Buffer.from(kept.response!).toString('utf8'), parts.map((p) => (typeof p === 'string' ? p : Buffer.from(p).toString())).join(''));
  });

  test('property: for random mixes of strings and buffers (split surrogate pairs, long strings), the retained response opens its commitment', () => {
    const rnd = rng(11);
    const pieces = ['data: {"x":"é"}\n\n', '🌏', '\ud83c', '\udf0f', 'x'.repeat(9000), ': ping\n\n', ''];
    for (let round = 0; round < 200; round++) {
      const c = new Commitments(undefined, 1 << 20);
      const plain = new Commitments(c.salt);
      const n = 1 + Math.floor(rnd() * 12);
      for (let i = 0; i < n; i++) {
        const p = pieces[Math.floor(rnd() * pieces.length)]!;
        const chunk = rnd() < 0.3 ? Buffer.from(p, 'utf8') : p;
        c.response(chunk);
        plain.response(chunk);
      }
      const d = c.digests();
      assert.equal(d.response, plain.digests().response, 'retention does not change the commitment');
      assert.equal(hmac(c.salt, c.retained().response!), d.response, `round ${round}`);
    }
  });

  test('a body over the cap is dropped whole, never cut; the other body is still kept', () => {
    const c = new Commitments(undefined, 10);
    c.request(Buffer.from('0123456789A'));
    c.response('0123456789');
    assert.deepEqual(c.retained(), { request: null, response: Buffer.from('0123456789') });
    const d = new Commitments(undefined, 10);
    d.request(Buffer.from('0123456789'));
    d.response('01234');
    d.response('é0123'); // 7 bytes in UTF-8 → 12 in all
    d.response('x');
    assert.equal(d.retained().response, null);
    assert.deepEqual(Buffer.from(d.retained().request!), Buffer.from('0123456789'));
  });

  test('stopRetaining drops what was kept and keeps nothing more', () => {
    const c = new Commitments(undefined, 100);
    c.request(Buffer.from('req'));
    c.response('before');
    c.stopRetaining();
    c.request(Buffer.from('again'));
    c.response(Buffer.from('after'));
    c.digests();
    assert.deepEqual(c.retained(), { request: null, response: null });
  });

  test('retention off keeps nothing; a caller reusing its buffer does not change what was kept', () => {
    const off = new Commitments();
    off.request(Buffer.from('x'));
    off.response('y');
    assert.deepEqual(off.retained(), { request: null, response: null });
    const c = new Commitments(undefined, 100);
    const buf = Buffer.from('first');
    c.response(buf);
    buf.write('XXXXX');
    assert.equal(Buffer.from(c.retained().response!).toString(), 'first');
  });
});

describe('the sink seals the retained bodies of the tenants it is told to', () => {
  const row = (id: string): RequestsTable => ({ id }) as unknown as RequestsTable;
  const capture = () => {
    const items: JournalItem[] = [];
    const journal = { write: async (it: JournalItem) => (items.push(it), 'leaf') } as unknown as Journal;
    return { items, journal };
  };
  const logger = createLogger('silent');
  const keys = ring(randomBytes(32));

  test('tenant list: only the listed tenants; no list: every request, unauthenticated ones included', async () => {
    const { items, journal } = capture();
    const sink = createJournalSink(() => journal, true, logger, { keyring: keys, maxBodyBytes: 1000, tenants: new Set(['health']) });
    assert.equal(sink.retainBytes, 1000);
    assert.deepEqual(['health', 'finance', null].map((t) => sink.retains!(t)), [true, false, false]);
    for (const [id, tenant] of [['a', 'health'], ['b', 'finance'], ['c', null]] as const) {
      const c = new Commitments(undefined, sink.retainBytes);
      c.request(Buffer.from(`body of ${id}`));
      c.response('answer');
      await sink.commit(row(id), tenant, c);
    }
    assert.deepEqual(items.map((i) => i.content?.id ?? null), ['a', null, null]);
    assert.equal(Buffer.from(openContent(keys, items[0]!.content!).request!).toString(), 'body of a');

    const all = capture();
    const everyone = createJournalSink(() => all.journal, true, logger, { keyring: keys, maxBodyBytes: 1000, tenants: null });
    for (const tenant of ['x', null]) {
      const c = new Commitments(undefined, everyone.retainBytes);
      c.response('r');
      await everyone.commit(row(`t-${tenant}`), tenant, c);
    }
    assert.equal(all.items.filter((i) => i.content).length, 2);
  });

  test('no row when neither body was kept; nothing kept with the audit log off', async () => {
    const { items, journal } = capture();
    const sink = createJournalSink(() => journal, true, logger, { keyring: keys, maxBodyBytes: 2, tenants: null });
    const c = new Commitments(undefined, sink.retainBytes);
    c.request(Buffer.from('too long'));
    c.response('too long');
    await sink.commit(row('big'), 't', c);
    assert.equal(items[0]!.content, undefined);
    assert.ok(items[0]!.salt, 'the salt is still written');
    const off = createJournalSink(() => journal, false, logger, { keyring: keys, maxBodyBytes: 1000, tenants: null });
    assert.equal(off.retainBytes, 0);
  });
});

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`content retention end to end on ${backend}`, { skip: backend === 'postgres' && !pgUrl ? 'SOVRA_TEST_POSTGRES_URL not set' : false }, () => {
    const CANARY = 'CANARY-RETAINED-7d1e4c2b';
    let mock: MockUpstream;
    let g: TestGateway;
    let cliCfg: string;
    let work: string;
    const cli = (args: string[]) => runSovra(work, [...args, '--config', cliCfg]);
    const post = (body: string) => rawRequest(`${g.baseURL}/chat/completions`, { headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' }, body });
    const chat = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: `${CANARY} what is the capital?` }], ...extra });

    before(async () => {
      mock = await startMockUpstream();
      g = await startGateway({
        config: { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100, content_retention: { enabled: true, max_body_bytes: 4096 } } },
        env: MOCK_ENV,
        postgres: backend === 'postgres',
      });
      work = mkdtempSync(join(g.dir, 'work-'));
      // The CLI reads the same config folder, so the same relative key file.
      cliCfg = writeCliConfig(g.dir, g.database, { audit: { content_retention: { enabled: true } } });
    });
    after(async () => {
      await g?.close();
      await mock?.close();
    });

    test('the key file was created with mode 0600 and the gateway said so', () => {
      const file = join(g.dir, 'data', 'audit-content.key');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.ok(g.logs().some((l) => l.includes('created a new audit content key')));
      const key = readFileSync(file, 'utf8').split('\n').find((l) => l && !l.startsWith('#'))!;
      assert.ok(!g.logs().some((l) => l.includes(key)), 'the key is never logged');
    });

    test('open writes the exact request and response bytes, which match the commitments; check-commitment agrees offline', async () => {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'Kuala Lumpur' })));
      const body = chat();
      const r = await post(body);
      assert.equal(r.status, 200);
      const id = String(r.headers['x-request-id']);
      const o = await cli(['audit', 'open', id, '--out', work]);
      assert.equal(o.code, 0, o.err + o.out);
      assert.match(o.out, /request: \d+ bytes, MATCH/);
      assert.match(o.out, /response: \d+ bytes, MATCH/);
      assert.deepEqual(readFileSync(join(work, `${id}.request`)), Buffer.from(body));
      assert.deepEqual(readFileSync(join(work, `${id}.response`)), r.body);
      assert.equal(statSync(join(work, `${id}.salt`)).mode & 0o777, 0o600);

      const ok = await runSovra(work, ['audit', 'check-commitment', `${id}.entry.json`, '--salt', `${id}.salt`, '--request', `${id}.request`, '--response', `${id}.response`]);
      assert.equal(ok.code, 0, ok.err);
      writeFileSync(join(work, 'forged.request'), body.replace('capital', 'kapital'));
      const bad = await runSovra(work, ['audit', 'check-commitment', `${id}.entry.json`, '--salt', `${id}.salt`, '--request', 'forged.request']);
      assert.equal(bad.code, 1);
      assert.match(bad.err, /DO NOT MATCH/);
      const usage = await runSovra(work, ['audit', 'check-commitment', `${id}.entry.json`, '--salt', `${id}.salt`]);
      assert.equal(usage.code, 2);
    });

    test('a stream: the retained response is what the client received, less the audit comment', async () => {
      mock.enqueue({
        status: 200,
        headers: { 'content-type': 'text/event-stream; charset=utf-8' },
        writes: [
          { text: EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Kuala"},"finish_reason":null}]')) },
          { text: EV(CH('"choices":[{"index":0,"delta":{"content":" Lumpur"},"finish_reason":"stop"}]')) },
          { text: DONE },
        ],
      });
      const r = await post(chat({ stream: true }));
      assert.equal(r.status, 200);
      const id = String(r.headers['x-request-id']);
      const o = await cli(['audit', 'open', id, '--out', work]);
      assert.equal(o.code, 0, o.err + o.out);
      const received = r.text().replace(/: sovra-audit leaf_hash=[A-Za-z0-9+/=]+\n\n/, '');
      assert.notEqual(received, r.text(), 'the client saw the audit comment');
      assert.equal(readFileSync(join(work, `${id}.response`), 'utf8'), received);
    });

    test('a request body over max_body_bytes is not kept; its response is', async () => {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'short' })));
      const r = await post(chat({ user: 'u'.repeat(5000) }));
      assert.equal(r.status, 200);
      const id = String(r.headers['x-request-id']);
      const o = await cli(['audit', 'open', id, '--out', work]);
      assert.equal(o.code, 0, o.err + o.out);
      assert.match(o.out, /request: not retained/);
      assert.match(o.out, /response: \d+ bytes, MATCH/);
      assert.equal(existsSync(join(work, `${id}.request`)), false);
    });

    test('nothing in plain text: neither the log entries nor the content table hold the prompt', async () => {
      const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
      assert.ok(!Buffer.concat(entries).includes(CANARY));
      const rows = await g.gw.store().db.selectFrom('audit_content').select(['data']).execute();
      assert.ok(rows.length >= 3);
      for (const row of rows) assert.ok(!Buffer.from(row.data).includes(CANARY));
    });

    test('content moved onto another entry does not open', async () => {
      const ids: string[] = [];
      for (const answer of ['one', 'two']) {
        mock.enqueue(jsonResponse(200, chatCompletion({ content: answer })));
        ids.push(String((await post(chat())).headers['x-request-id']));
      }
      await g.gw.flush();
      const db = g.gw.store().db;
      const a = await db.selectFrom('audit_content').selectAll().where('entry_id', '=', ids[0]!).executeTakeFirstOrThrow();
      await db.updateTable('audit_content').set({ key_id: a.key_id, nonce: a.nonce, data: a.data }).where('entry_id', '=', ids[1]!).execute();
      const o = await cli(['audit', 'open', ids[1]!, '--out', work]);
      assert.equal(o.code, 1);
      assert.match(o.err, /does not authenticate/);
    });

    test('erasure deletes the content with the salt; open then refuses', async () => {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'to forget' })));
      const id = String((await post(chat())).headers['x-request-id']);
      const storage = new AuditStorage(g.gw.store());
      await g.gw.flush();
      assert.ok(await storage.contentOf(id));
      const e = await cli(['audit', 'erase', id]);
      assert.equal(e.code, 0, e.err);
      assert.equal(await storage.contentOf(id), undefined);
      assert.equal(await storage.saltOf(id), undefined);
      const o = await cli(['audit', 'open', id, '--out', work]);
      assert.equal(o.code, 1);
      assert.match(o.err, /erased/);
    });

    test('the purge by age deletes content only, in chunks, and keeps the salts', async () => {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'kept salt' })));
      const id = String((await post(chat())).headers['x-request-id']);
      await g.gw.flush();
      const storage = new AuditStorage(g.gw.store());
      const before = await g.gw.store().db.selectFrom('audit_content').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      assert.deepEqual(await storage.purgeContent(0), { rows: 0, chunks: 0 }, 'nothing is older than the epoch');
      const n = Number(before.n);
      assert.ok(n >= 4);
      // Chunks of at most 2 rows, or of about one row's bytes: as many statements as rows.
      assert.deepEqual(await storage.purgeContent(Date.now() + 1000, { maxRows: 2, maxBytes: 1 }), { rows: n, chunks: n });
      assert.equal(await storage.contentOf(id), undefined);
      assert.ok(await storage.saltOf(id));
      const o = await cli(['audit', 'open', id, '--out', work]);
      assert.equal(o.code, 0, o.err);
      assert.match(o.out, /no content retained/);
      // With nothing retained, the content keys are not even loaded (a bad key file does not matter).
      const io = { out: () => undefined, err: () => undefined };
      assert.equal(await auditOpen(g.gw.store(), id, () => { throw new Error('malformed key'); }, { out: work }, io), 0);
    });
  });
}

describe('start-up with a malformed content key', () => {
  test('fails, naming the source and not the key', async () => {
    const bad = 'not-a-key-SECRETISH';
    await assert.rejects(
      startGateway({ config: { ...mockConfig('http://127.0.0.1:9'), audit: { content_retention: { enabled: true } } }, env: { ...MOCK_ENV, [CONTENT_KEY_ENV]: bad } }),
      (e: unknown) => e instanceof Error && e.message.includes(CONTENT_KEY_ENV) && !e.message.includes(bad),
    );
  });
});

describe('start-up with retention for named tenants', () => {
  test('a tenant name that matches no tenant is warned about', async () => {
    const g = await startGateway({ config: { ...mockConfig('http://127.0.0.1:9'), audit: { content_retention: { enabled: true, tenants: ['no-such-agency'] } } }, env: MOCK_ENV });
    try {
      const warned = () => g.logs().some((l) => l.includes('no-such-agency') && l.includes('does not exist'));
      for (let i = 0; i < 100 && !warned(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(warned(), 'warned about the unknown tenant');
    } finally {
      await g.close();
    }
  });
});
