/**
 * Adversarial tests of content retention (`audit.content_retention`, src/audit/content.ts): tries to
 * make the retained bytes differ from what the entry commits to, to keep content where it should not
 * be (tenants, caps, erasure, purge), to split entry and content, and to get bad exit codes or leaked
 * secrets out of the CLI.
 *
 * It found three defects, fixed since and kept here as tests: the age purge did not run once retention
 * (or the audit log) was turned off, and it deleted 5,000 rows per statement whatever their size
 * (seconds of a blocked event loop on SQLite). Every other test is a property that held.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { stringify } from 'yaml';
import { CONTENT_KEY_ENV, contentKeyId, loadContentKeyring, openContent, sealContent, type ContentKeyring } from '../src/audit/content.ts';
import { Commitments, decodeRecord, type RequestRecord } from '../src/audit/record.ts';
import { Journal, type JournalItem } from '../src/audit/journal.ts';
import { AuditLog } from '../src/audit/integrator.ts';
import { AuditStorage } from '../src/audit/storage.ts';
import { auditCheckCommitment, auditOpen, eraseEntry, type CliIo } from '../src/audit/cli.ts';
import { newRequestId } from '../src/http/request-id.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { parseConfig } from '../src/config/load.ts';
import { createGateway, type Gateway } from '../src/app.ts';
import { createKey } from '../src/keys/keys.ts';
import { openStore, type Store } from '../src/store/db.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { CH, EV, DONE, chatCompletion, jsonResponse, openaiError, startMockUpstream, type MockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest, type RawResponse } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { runSovra, until, writeCliConfig } from './helpers/audit.ts';
import { storeBackends } from './helpers/store-backends.ts';

const pgUrl = process.env['SOVRA_TEST_POSTGRES_URL'];
const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-adv-content-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const hmac = (salt: Uint8Array, b: Uint8Array) => createHmac('sha256', salt).update(b).digest('hex');
const ring = (...keys: Buffer[]): ContentKeyring => {
  const ks = keys.map((key) => ({ id: contentKeyId(key), key }));
  return { current: ks[0]!, byId: new Map(ks.map((k) => [k.id, k])), source: 'test', created: false };
};
const AUDIT_COMMENT = /: sovra-audit leaf_hash=[A-Za-z0-9+/=]+\n\n/;
const HEARTBEAT = /: keep-alive\n\n/g;
/** What the client received, less heartbeats and the audit comment: what the response commitment covers. */
const committedPart = (r: RawResponse) => Buffer.from(r.body.toString('latin1').replace(HEARTBEAT, '').replace(AUDIT_COMMENT, ''), 'latin1');

/** Runs `auditOpen` in-process (any store, including PostgreSQL schemas and in-thread SQLite). */
async function openInProcess(store: Store, id: string, keys: ContentKeyring | undefined) {
  const out = mkdtempSync(join(tmpRoot, 'open-'));
  let stdout = '';
  let stderr = '';
  const io: CliIo = { out: (s) => void (stdout += s), err: (s) => void (stderr += s) };
  const code = await auditOpen(store, id, () => keys, { out }, io);
  const read = (ext: string) => {
    try {
      return readFileSync(join(out, `${id}.${ext}`));
    } catch {
      return undefined;
    }
  };
  return { code, out: stdout, err: stderr, dir: out, request: read('request'), response: read('response'), entry: read('entry.json'), salt: read('salt') };
}

function row(id: string, i: number): RequestsTable {
  return {
    id,
    ts: 1_750_000_000_000 + i,
    key_id: `key_${i}`,
    tenant_id: 'ten',
    operation: 'chat.completions',
    model: 'm',
    backend_id: 'b',
    upstream_model: null,
    stream: 0,
    status: 200,
    outcome: 'ok',
    error_code: null,
    latency_ms: 3,
    ttfb_ms: 1,
    prompt_tokens: 1,
    completion_tokens: 1,
    total_tokens: 2,
    usage_source: 'upstream',
    cost_micros: null,
  };
}

/** A journal item as the sink makes it: real commitments, retained bodies sealed under `keys.current`. */
function requestItem(keys: ContentKeyring, id: string, i: number, request: Buffer, response: Buffer): JournalItem {
  const c = new Commitments(undefined, 1 << 20);
  c.request(request);
  c.response(response);
  const digests = c.digests();
  return { request: row(id, i), requestEntry: { tenant: 't', commitments: digests }, salt: { id, salt: c.salt }, content: sealContent(keys.current, id, c.retained()) };
}

const count = async (store: Store, table: 'audit_content' | 'audit_secrets' | 'audit_queue') =>
  Number(((await store.db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()) as { n: unknown }).n);

// -------------------------------------------------------------------------------------------------
// The journal, below the gateway: in-thread SQLite (no store worker) and PostgreSQL.
// -------------------------------------------------------------------------------------------------

for (const backend of storeBackends(tmpRoot)) {
  describe(`ADV journal + storage on ${backend.name} (in-thread journal)`, () => {
    after(() => backend.cleanup());
    const keys = ring(randomBytes(32));

    test('a failing item in a batch (duplicate id) takes neither its entry nor its content; every other item has both; a queued and an integrated entry open and erase cleanly; purge deletes only old rows', async () => {
      const { store } = await backend.open();
      try {
        await store.migrate();
        const journal = new Journal(store);
        const ids = Array.from({ length: 30 }, () => newRequestId());
        const bodies = ids.map((_, i) => ({ req: Buffer.from(`{"n":${i},"p":"héllo 🌏"}`), res: randomBytes(100 + i * 37) }));
        // One batch: 30 items and a second item with the id of item 7 (another body) in the middle.
        const writes = ids.map((id, i) => journal.write(requestItem(keys, id, i, bodies[i]!.req, bodies[i]!.res)));
        const dup = journal.write(requestItem(keys, ids[7]!, 99, Buffer.from('{"dup":true}'), Buffer.from('dup answer')));
        const results = await Promise.allSettled([...writes, dup]);
        assert.equal(results.slice(0, 30).filter((r) => r.status === 'fulfilled').length, 30, 'every distinct item commits');
        assert.equal(results[30]!.status, 'rejected', 'the duplicate is refused');
        assert.equal(await count(store, 'audit_content'), 30);
        assert.equal(await count(store, 'audit_queue'), 30);
        const storage = new AuditStorage(store);
        for (const [i, id] of ids.entries()) {
          assert.ok(await storage.queuedEntry(id), `entry ${i} is queued`);
          const opened = openContent(keys, (await storage.contentOf(id))!);
          assert.deepEqual(Buffer.from(opened.request!), bodies[i]!.req, `content ${i} is its own (the duplicate did not replace it)`);
          assert.deepEqual(Buffer.from(opened.response!), bodies[i]!.res);
        }

        // open + erase while queued
        const q = await openInProcess(store, ids[0]!, keys);
        assert.equal(q.code, 0, q.err + q.out);
        assert.match(q.out, /request: \d+ bytes, MATCH/);
        assert.match(q.out, /response: \d+ bytes, MATCH/);
        await eraseEntry(store, ids[0]!);
        assert.equal(await storage.contentOf(ids[0]!), undefined, 'erasing a queued entry deletes its content');
        assert.equal(await storage.saltOf(ids[0]!), undefined);
        await assert.rejects(eraseEntry(store, ids[0]!), /no commitment salt/);

        // integrate, then open + erase an integrated entry
        const log = await AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(4).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 1000, logger: createLogger('silent') });
        await log.drain();
        await log.close();
        assert.equal(await count(store, 'audit_queue'), 0);
        assert.ok((await storage.indexOf(ids[1]!)) !== undefined, 'integrated');
        const o = await openInProcess(store, ids[1]!, keys);
        assert.equal(o.code, 0, o.err + o.out);
        assert.deepEqual(o.request, bodies[1]!.req);
        assert.deepEqual(o.response, bodies[1]!.res);
        await eraseEntry(store, ids[1]!);
        assert.equal(await storage.contentOf(ids[1]!), undefined, 'erasing an integrated entry deletes its content');
        const erased = await openInProcess(store, ids[1]!, keys);
        assert.equal(erased.code, 1);
        assert.match(erased.err, /erased/);
        assert.equal(erased.request, undefined, 'nothing disclosed after erasure');
        assert.equal(await count(store, 'audit_content'), 28);

        // purge: only rows created before the cut; salts stay
        const old = new Journal(store, { now: () => 1_000 });
        const oldIds = [newRequestId(), newRequestId(), newRequestId()];
        await Promise.all(oldIds.map((id, i) => old.write(requestItem(keys, id, 200 + i, Buffer.from('old'), Buffer.from('old answer')))));
        await old.close();
        assert.deepEqual(await storage.purgeContent(2_000, { maxRows: 2 }), { rows: 3, chunks: 2 }, 'the three old rows, in chunks of 2');
        assert.equal(await count(store, 'audit_content'), 28, 'the new rows stay');
        for (const id of oldIds) assert.ok(await storage.saltOf(id), 'the salt of a purged entry stays');
        assert.equal((await storage.purgeContent(2_000)).rows, 0);
        await journal.close();
      } finally {
        await store.close();
      }
    });
  });
}

// -------------------------------------------------------------------------------------------------
// Through the gateway: SQLite file (store worker) and PostgreSQL.
// -------------------------------------------------------------------------------------------------

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`ADV content retention through the gateway on ${backend}`, { skip: backend === 'postgres' && !pgUrl ? 'SOVRA_TEST_POSTGRES_URL not set' : false }, () => {
    const CAP = 4096;
    const CANARY = 'CANARY-ADV-4f0c9a';
    let mock: MockUpstream;
    let g: TestGateway;
    let keys: ContentKeyring;
    let healthKey: string;
    let financeKey: string;
    const post = (body: string | Buffer, extra: { key?: string; abortAfterEvents?: number } = {}) =>
      rawRequest(`${g.baseURL}/chat/completions`, {
        headers: { authorization: `Bearer ${extra.key ?? healthKey}`, 'content-type': 'application/json' },
        body,
        ...(extra.abortAfterEvents ? { abortAfterEvents: extra.abortAfterEvents } : {}),
      });
    const chat = (extra: Record<string, unknown> = {}, content = `${CANARY} what is the capital?`) => JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content }], ...extra });
    /** A request body of exactly `n` bytes. */
    const chatOfSize = (n: number) => {
      const base = chat({ user: '' });
      return chat({ user: 'u'.repeat(n - Buffer.byteLength(base)) });
    };
    /** An upstream chat.completion body of exactly `n` bytes. */
    const completionOfSize = (n: number) => {
      const base = JSON.stringify(chatCompletion({ content: '' }));
      return JSON.stringify(chatCompletion({ content: 'a'.repeat(n - Buffer.byteLength(base)) }));
    };
    const open = async (id: string) => {
      await g.gw.flush();
      return openInProcess(g.gw.store(), id, keys);
    };
    const idOf = (r: RawResponse) => String(r.headers['x-request-id']);

    before(async () => {
      mock = await startMockUpstream();
      g = await startGateway({
        config: {
          ...mockConfig(mock.url, {}, { server: { sse_heartbeat_ms: 40 } }),
          audit: { checkpoint_interval_ms: 100, content_retention: { enabled: true, max_body_bytes: CAP, tenants: ['health'] } },
          privacy: { default: { action: 'tokenize' } },
        },
        env: MOCK_ENV,
        postgres: backend === 'postgres',
      });
      keys = loadContentKeyring(join(g.dir, 'data', 'audit-content.key'), {}, { create: false })!;
      healthKey = (await createKey(g.gw.store(), { tenant: 'health', name: 'h' })).key;
      financeKey = (await createKey(g.gw.store(), { tenant: 'finance', name: 'f' })).key;
    });
    after(async () => {
      await g?.close();
      await mock?.close();
    });

    test('tenant filter: a listed tenant is retained, an unlisted one (and the default "test" tenant) is not', async () => {
      const ids: Record<string, string> = {};
      for (const [name, key] of [['health', healthKey], ['finance', financeKey], ['test', g.key]] as const) {
        mock.enqueue(jsonResponse(200, chatCompletion({ content: `for ${name}` })));
        const r = await post(chat(), { key });
        assert.equal(r.status, 200);
        ids[name] = idOf(r);
      }
      await g.gw.flush();
      const storage = new AuditStorage(g.gw.store());
      assert.ok(await storage.contentOf(ids['health']!));
      assert.equal(await storage.contentOf(ids['finance']!), undefined);
      assert.equal(await storage.contentOf(ids['test']!), undefined);
      const o = await open(ids['finance']!);
      assert.equal(o.code, 0);
      assert.match(o.out, /no content retained/);
    });

    test('a stream with heartbeats: the retained response is the client bytes less heartbeats and the audit comment, and matches', async () => {
      mock.enqueue({
        status: 200,
        headers: { 'content-type': 'text/event-stream' },
        writes: [
          { text: EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Kuala"},"finish_reason":null}]')) },
          { after: 150, text: ': upstream-comment\n\n' },
          { after: 150, text: EV(CH('"choices":[{"index":0,"delta":{"content":" Lumpur"},"finish_reason":"stop"}]')) },
          { after: 150, text: DONE },
        ],
      });
      const r = await post(chat({ stream: true }));
      assert.equal(r.status, 200);
      assert.ok(HEARTBEAT.test(r.text()), 'the client saw heartbeats');
      const o = await open(idOf(r));
      assert.equal(o.code, 0, o.err + o.out);
      assert.deepEqual(o.response, committedPart(r));
      assert.ok(o.response!.includes(': upstream-comment'), 'upstream comments are part of the committed response');
    });

    test('multi-byte UTF-8 split across upstream writes: retained bytes equal what the client got, and match', async () => {
      const text = 'é🌏ü中';
      const ev = Buffer.from(EV(CH(`"choices":[{"index":0,"delta":{"content":"${text}"},"finish_reason":"stop"}]`)), 'utf8');
      const at = ev.indexOf(Buffer.from('🌏')) + 2; // inside the 4-byte sequence
      const at2 = ev.indexOf(Buffer.from('中')) + 1;
      mock.enqueue({
        status: 200,
        headers: { 'content-type': 'text/event-stream' },
        writes: [{ hex: ev.subarray(0, at).toString('hex') }, { hex: ev.subarray(at, at2).toString('hex') }, { hex: ev.subarray(at2).toString('hex') }, { text: DONE }],
      });
      const r = await post(chat({ stream: true }));
      assert.equal(r.status, 200);
      assert.ok(r.text().includes(text), 'the client got the characters whole');
      const o = await open(idOf(r));
      assert.equal(o.code, 0, o.err + o.out);
      assert.deepEqual(o.response, committedPart(r));
    });

    test('a client that disconnects mid-stream: the retained response is what was written by then, and matches', async () => {
      mock.enqueue({
        status: 200,
        headers: { 'content-type': 'text/event-stream' },
        writes: [
          { text: EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"one"},"finish_reason":null}]')) },
          { text: EV(CH('"choices":[{"index":0,"delta":{"content":" two"},"finish_reason":null}]')) },
          { after: 1500, text: EV(CH('"choices":[{"index":0,"delta":{"content":" three"},"finish_reason":"stop"}]')) },
          { text: DONE },
        ],
      });
      const r = await post(chat({ stream: true }), { abortAfterEvents: 2 });
      assert.ok(r.aborted);
      const id = idOf(r);
      const storage = new AuditStorage(g.gw.store());
      await until(async () => (await g.gw.flush(), await storage.contentOf(id)), 10_000, 'the disconnected request to be committed');
      const o = await open(id);
      assert.equal(o.code, 0, o.err + o.out);
      assert.match(o.out, /response: \d+ bytes, MATCH/);
      assert.ok(!o.response!.includes(' three'), 'nothing after the disconnect');
      assert.ok(o.response!.includes(' two'));
    });

    test('an upstream error and a gateway-made error: retained bytes match and equal the client bytes', async () => {
      mock.enqueue(jsonResponse(400, openaiError('bad thing', 'invalid_request_error', 'bad')));
      const up = await post(chat());
      assert.equal(up.status, 400);
      const o1 = await open(idOf(up));
      assert.equal(o1.code, 0, o1.err + o1.out);
      assert.deepEqual(o1.response, up.body);

      const broken = Buffer.from(`{"model":"test-model","messages":[{"role":"user","content":"${CANARY} \xff`, 'latin1'); // invalid JSON and UTF-8
      const gw = await post(broken);
      assert.equal(gw.status, 400);
      const o2 = await open(idOf(gw));
      assert.equal(o2.code, 0, o2.err + o2.out);
      assert.deepEqual(o2.request, broken, 'the raw request bytes, invalid UTF-8 included');
      assert.deepEqual(o2.response, gw.body);
    });

    test('privacy guard tokenize: the request is retained as sent (identifier included), the response as restored for the client; both match', async () => {
      const email = 'alice.adv@example.com';
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'I will write to [EMAIL_1] today.' })));
      const body = chat({}, `Please mail ${email} about it`);
      const r = await post(body);
      assert.equal(r.status, 200);
      assert.ok(r.text().includes(email), 'restored for the client');
      assert.ok(!mock.requests.at(-1)!.body.toString().includes(email), 'the upstream saw the placeholder');
      const o = await open(idOf(r));
      assert.equal(o.code, 0, o.err + o.out);
      assert.deepEqual(o.request, Buffer.from(body));
      assert.deepEqual(o.response, r.body);
    });

    test('size boundaries: bodies of exactly max_body_bytes are kept, one byte more are not', async () => {
      const cases = [
        { req: CAP, res: CAP, keepReq: true, keepRes: true },
        { req: CAP + 1, res: CAP + 1, keepReq: false, keepRes: false },
        { req: CAP + 1, res: CAP, keepReq: false, keepRes: true },
      ];
      const storage = new AuditStorage(g.gw.store());
      for (const c of cases) {
        const reqBody = chatOfSize(c.req);
        const resBody = completionOfSize(c.res);
        assert.equal(Buffer.byteLength(reqBody), c.req);
        assert.equal(Buffer.byteLength(resBody), c.res);
        mock.enqueue(jsonResponse(200, resBody));
        const r = await post(reqBody);
        assert.equal(r.status, 200);
        assert.equal(r.body.length, c.res, 'relayed byte-exact');
        const id = idOf(r);
        await g.gw.flush();
        const sealed = await storage.contentOf(id);
        if (!c.keepReq && !c.keepRes) {
          assert.equal(sealed, undefined, `no row for ${JSON.stringify(c)}`);
          continue;
        }
        const o = await open(id);
        assert.equal(o.code, 0, o.err + o.out);
        assert.deepEqual(o.request, c.keepReq ? Buffer.from(reqBody) : undefined, JSON.stringify(c));
        assert.deepEqual(o.response, c.keepRes ? r.body : undefined, JSON.stringify(c));
      }
    });

    test('an integrated entry opens (bundles path), erasure then removes content and salt', async () => {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'to be integrated' })));
      const r = await post(chat());
      const id = idOf(r);
      const storage = new AuditStorage(g.gw.store());
      await until(async () => (await storage.indexOf(id)) !== undefined, 10_000, 'integration');
      const o = await open(id);
      assert.equal(o.code, 0, o.err + o.out);
      assert.deepEqual(o.response, r.body);
      const rec = decodeRecord(o.entry!) as RequestRecord;
      assert.equal(rec.id, id);
      await eraseEntry(g.gw.store(), id);
      assert.equal(await storage.contentOf(id), undefined);
      assert.equal(await storage.saltOf(id), undefined);
    });

    test('no plaintext at rest: neither the canary nor the tokenized identifier is in any content row', async () => {
      const rows = await g.gw.store().db.selectFrom('audit_content').select(['data', 'nonce', 'key_id']).execute();
      assert.ok(rows.length >= 5);
      for (const row of rows) {
        const d = Buffer.from(row.data);
        assert.ok(!d.includes(CANARY) && !d.includes('alice.adv'));
        assert.equal(row.key_id, keys.current.id);
        assert.equal(Buffer.from(row.nonce).length, 12);
      }
      const nonces = new Set(rows.map((r) => Buffer.from(r.nonce).toString('hex')));
      assert.equal(nonces.size, rows.length, 'no nonce reused');
      if (backend === 'sqlite') {
        // Every file of the gateway's folder (database, WAL, keys), not just the table.
        const walk = (d: string): string[] => readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
        for (const f of walk(g.dir)) {
          const bytes = readFileSync(f);
          assert.ok(!bytes.includes(CANARY) && !bytes.includes('alice.adv@example.com'), `plaintext in ${f}`);
        }
      }
    });
  });
}

// -------------------------------------------------------------------------------------------------
// The CLI as a process: exit codes and messages for bad input; no secret in its output.
// -------------------------------------------------------------------------------------------------

describe('ADV the CLI (sqlite)', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  let cliCfg: string;
  let work: string;
  let id: string;
  let body: string;
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runSovra(work, [...args, '--config', cliCfg], env);

  before(async () => {
    mock = await startMockUpstream();
    g = await startGateway({ config: { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100, content_retention: { enabled: true } } }, env: MOCK_ENV });
    work = mkdtempSync(join(tmpRoot, 'cli-'));
    cliCfg = writeCliConfig(g.dir, g.database, { audit: { content_retention: { enabled: true } } });
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'cli answer' })));
    body = JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'hello cli' }] });
    const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' }, body });
    id = String(r.headers['x-request-id']);
    await g.gw.flush();
  });
  after(async () => {
    await g?.close();
    await mock?.close();
  });

  test('open with the wrong key: exit 1, names the key id, never a key', async () => {
    const wrong = randomBytes(32).toString('base64');
    const o = await cli(['audit', 'open', id, '--out', work], { [CONTENT_KEY_ENV]: wrong });
    assert.equal(o.code, 1, o.err + o.out);
    assert.match(o.err, /cannot be opened: .*not in SOVRA_AUDIT_CONTENT_KEY/);
    const real = readFileSync(join(g.dir, 'data', 'audit-content.key'), 'utf8').split('\n').find((l) => l && !l.startsWith('#'))!;
    assert.ok(!(o.out + o.err).includes(wrong) && !(o.out + o.err).includes(real));
    // rotation: a new first key plus the old one opens
    const rotated = await cli(['audit', 'open', id, '--out', work], { [CONTENT_KEY_ENV]: `${wrong},${real}` });
    assert.equal(rotated.code, 0, rotated.err);
    assert.deepEqual(readFileSync(join(work, `${id}.request`)), Buffer.from(body));
  });

  test('open with a malformed key: exit 1, no echo of the key; unknown id and a non-request entry: exit 1', async () => {
    const bad = 'SECRET-but-not-base64-key';
    const o = await cli(['audit', 'open', id, '--out', work], { [CONTENT_KEY_ENV]: bad });
    assert.equal(o.code, 1);
    assert.ok(!(o.out + o.err).includes(bad));
    const unknown = await cli(['audit', 'open', 'req_does_not_exist', '--out', work]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.err, /no audit entry/);
    // an admin entry (the key the test gateway created is not audited as admin; erase one to get an erasure entry)
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'to erase' })));
    const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' }, body });
    await g.gw.flush();
    const eraseId = await eraseEntry(g.gw.store(), String(r.headers['x-request-id']));
    const era = await cli(['audit', 'open', eraseId, '--out', work]);
    assert.equal(era.code, 1);
    assert.match(era.err, /erasure entry: it has no commitments/);
  });

  test('check-commitment: malformed salt, missing body file, a proof file as the entry → exit 1 with a message; no body → exit 2', async () => {
    const o = await cli(['audit', 'open', id, '--out', work]);
    assert.equal(o.code, 0, o.err);
    writeFileSync(join(work, 'short.salt'), 'abcd\n');
    const s = await runSovra(work, ['audit', 'check-commitment', `${id}.entry.json`, '--salt', 'short.salt', '--request', `${id}.request`]);
    assert.equal(s.code, 1);
    assert.match(s.err, /does not hold a 32-byte salt/);
    const m = await runSovra(work, ['audit', 'check-commitment', `${id}.entry.json`, '--salt', `${id}.salt`, '--request', 'missing.request']);
    assert.equal(m.code, 1);
    assert.match(m.err, /ENOENT|no such file/);
    writeFileSync(join(work, 'not-an-entry.json'), '{"v":1,"type":"erasure","id":"x","time":"t","target":"y"}');
    const e = await runSovra(work, ['audit', 'check-commitment', 'not-an-entry.json', '--salt', `${id}.salt`, '--request', `${id}.request`]);
    assert.equal(e.code, 1);
    assert.match(e.err, /not a Sovra request entry/);
    const none = await runSovra(work, ['audit', 'check-commitment', `${id}.entry.json`, '--salt', `${id}.salt`]);
    assert.equal(none.code, 2);
    // in-process: the response of another entry with the right salt does not match
    let err = '';
    const code = auditCheckCommitment(join(work, `${id}.entry.json`), { salt: join(work, `${id}.salt`), response: join(work, `${id}.request`) }, { out: () => undefined, err: (x) => void (err += x) });
    assert.equal(code, 1);
    assert.match(err, /DO NOT MATCH/);
  });
});

// -------------------------------------------------------------------------------------------------
// Age purge across configuration changes.
// -------------------------------------------------------------------------------------------------

describe('ADV age purge', () => {
  let mock: MockUpstream;
  before(async () => {
    mock = await startMockUpstream();
  });
  after(async () => {
    await mock?.close();
  });

  /** A gateway on the SQLite file of `dir` (kept across restarts), with this content_retention section. */
  async function gatewayIn(dir: string, audit: Record<string, unknown>): Promise<{ gw: Gateway; key: string; origin: string }> {
    const text = stringify({ ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100, ...audit }, server: { host: '127.0.0.1', port: 0 }, database: { url: `sqlite:${join(dir, 'sovra.db')}` }, logging: { level: 'silent' } });
    writeFileSync(join(dir, 'sovra.yaml'), text);
    const gw = await createGateway({ config: parseConfig(text, 'adv', {}), configDir: dir, logger: createLogger('silent'), env: MOCK_ENV, configPath: join(dir, 'sovra.yaml') });
    const origin = await gw.start();
    const key = (await createKey(gw.store(), { tenant: 'test', name: `k-${randomBytes(3).toString('hex')}` })).key;
    await gw.backendsSettled();
    return { gw, key, origin };
  }

  /** Starts with retention on, sends one request, closes; then ages every content row by 10 days. */
  async function retainedOne(dir: string): Promise<string> {
    const { gw, key, origin } = await gatewayIn(dir, { content_retention: { enabled: true } });
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'old content' })));
    const r = await rawRequest(`${origin}/v1/chat/completions`, {
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'old' }] }),
    });
    assert.equal(r.status, 200);
    await gw.flush();
    await gw.close();
    const s = await openStore(`sqlite:${join(dir, 'sovra.db')}`);
    await s.db.updateTable('audit_content').set({ created_at: Date.now() - 10 * 86_400_000 }).execute();
    assert.equal(await count(s, 'audit_content'), 1);
    await s.close();
    return String(r.headers['x-request-id']);
  }

  const contentRows = async (dir: string) => {
    const s = await openStore(`sqlite:${join(dir, 'sovra.db')}`);
    try {
      return await count(s, 'audit_content');
    } finally {
      await s.close();
    }
  };

  test('with retention on, content older than max_age_days is deleted at start-up; the salt stays', async () => {
    const dir = mkdtempSync(join(tmpRoot, 'purge-on-'));
    const id = await retainedOne(dir);
    const { gw } = await gatewayIn(dir, { content_retention: { enabled: true, max_age_days: 1 } });
    try {
      await until(async () => (await count(gw.store(), 'audit_content')) === 0, 5_000, 'the start-up purge');
      assert.ok(await new AuditStorage(gw.store()).saltOf(id));
    } finally {
      await gw.close();
    }
  });

  test('with retention turned off since (enabled: false, max_age_days: 1), content retained earlier is purged', async () => {
    const dir = mkdtempSync(join(tmpRoot, 'purge-off-'));
    await retainedOne(dir);
    const { gw } = await gatewayIn(dir, { content_retention: { enabled: false, max_age_days: 1 } });
    try {
      await until(async () => (await count(gw.store(), 'audit_content')) === 0, 5_000, 'the start-up purge');
    } finally {
      await gw.close();
    }
    assert.equal(await contentRows(dir), 0);
  });

  test('with the audit log turned off since (audit.enabled: false), content retained earlier is purged', async () => {
    const dir = mkdtempSync(join(tmpRoot, 'purge-audit-off-'));
    await retainedOne(dir);
    const { gw } = await gatewayIn(dir, { enabled: false, content_retention: { enabled: true, max_age_days: 1 } });
    try {
      await until(async () => (await count(gw.store(), 'audit_content')) === 0, 5_000, 'the start-up purge');
    } finally {
      await gw.close();
    }
    assert.equal(await contentRows(dir), 0);
  });
});

// -------------------------------------------------------------------------------------------------
// Memory: many large streamed responses, kept and over the cap.
// -------------------------------------------------------------------------------------------------

describe('ADV memory with many large streamed responses (sqlite)', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  before(async () => {
    mock = await startMockUpstream();
    g = await startGateway({ config: { ...mockConfig(mock.url, {}, { server: { sse_heartbeat_ms: 0 } }), audit: { checkpoint_interval_ms: 100, content_retention: { enabled: true, max_body_bytes: 256 * 1024 } } }, env: MOCK_ENV });
  });
  after(async () => {
    await g?.close();
    await mock?.close();
  });

  test('heap does not grow with the number of retained (and over-cap) streams', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const delta = 'x'.repeat(2000);
    const stream = (events: number) => ({
      status: 200,
      headers: { 'content-type': 'text/event-stream' },
      writes: [
        { text: Array.from({ length: events }, (_, i) => EV(CH(`"choices":[{"index":0,"delta":{"content":"${delta}${i}"},"finish_reason":null}]`))).join('') },
        { text: EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]')) + DONE },
      ],
    });
    const round = async (n: number) => {
      for (let i = 0; i < n; i += 8) {
        const batch = Array.from({ length: Math.min(8, n - i) }, (_, k) => {
          mock.enqueue(stream(k % 2 ? 100 : 160)); // ~210 KB kept / ~340 KB over the cap
          return rawRequest(`${g.baseURL}/chat/completions`, {
            headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'test-model', stream: true, messages: [{ role: 'user', content: 'big' }] }),
          });
        });
        for (const r of await Promise.all(batch)) assert.equal(r.status, 200);
      }
      await g.gw.flush();
      gc();
      return process.memoryUsage().heapUsed;
    };
    await round(16); // warm-up
    const h1 = await round(32);
    const h2 = await round(64);
    const rows = await count(g.gw.store(), 'audit_content');
    assert.ok(rows >= 56, `retained rows: ${rows}`);
    assert.ok(h2 - h1 < 24 * 1024 * 1024, `heap grew by ${((h2 - h1) / 1048576).toFixed(1)} MiB over 64 more streams`);
  });
});

// -------------------------------------------------------------------------------------------------
// The age purge on SQLite runs on the gateway's main thread (app.ts purgeContent → AuditStorage on the
// main-thread connection). It used to delete 5,000 rows per DELETE whatever their size: 5,000 rows of
// 160 KB blocked the event loop for ~2.5 s, and 400 KB rows held the write lock past busy_timeout.
// Now chunks are bounded by bytes too, and the event loop runs between chunks.
// -------------------------------------------------------------------------------------------------

describe('ADV purge cost on SQLite', () => {
  test('large rows are deleted in byte-bounded chunks, with event-loop turns between them', async () => {
    const store = await openStore(`sqlite:${join(tmpRoot, `purge-${randomBytes(4).toString('hex')}.db`)}`);
    try {
      await store.migrate();
      const native = store.sqlite!;
      const ins = native.prepare('INSERT INTO audit_content (entry_id, key_id, nonce, data, created_at) VALUES (?, ?, ?, ?, ?)');
      const blob = randomBytes(160 * 1024);
      native.transaction(() => {
        for (let i = 0; i < 40; i++) ins.run(`req_${i}`, 'abcd1234', randomBytes(12), blob, 1_000);
        ins.run('req_new', 'abcd1234', randomBytes(12), blob, 5_000);
      })();
      let turns = 0;
      let running = true;
      const tick = () => {
        turns++;
        if (running) setImmediate(tick);
      };
      setImmediate(tick);
      const r = await new AuditStorage(store).purgeContent(2_000, { maxBytes: 1024 * 1024 });
      running = false;
      // 6 rows of 160 KiB fit in 1 MiB, 7 do not: 40 rows take 7 statements.
      assert.deepEqual(r, { rows: 40, chunks: 7 });
      assert.ok(turns >= 7, `the event loop turned ${turns} times during 7 chunks`);
      assert.equal(await count(store, 'audit_content'), 1, 'the newer row stays');
    } finally {
      await store.close();
    }
  });
});
