/**
 * The transparency log's parts on their own: record encoding limits, the journal's group commit and
 * failure isolation, the integrator's start-up checks (tampered tiles, changed origin or key), the
 * journal-failure answers (503 / stream error event without [DONE]) and `audit.enabled: false`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateLogKey } from '@sovra/tlog/node';
import { openStore, type Store } from '../src/store/db.ts';
import { Journal } from '../src/audit/journal.ts';
import { AuditIntegrityError, AuditLog } from '../src/audit/integrator.ts';
import { Commitments, MAX_ENTRY_BYTES, MAX_FIELD_CHARS, encodeRecord, requestRecord } from '../src/audit/record.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { CH, EV, DONE, chatCompletion, jsonResponse, startMockUpstream, type MockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';

const logger = createLogger('silent');

function row(id: string, extra: Partial<RequestsTable> = {}): RequestsTable {
  return {
    id, ts: 1_750_000_000_000, key_id: 'key_a', tenant_id: 'ten_a', operation: 'chat.completions', model: 'm', backend_id: 'b',
    upstream_model: 'u', stream: 0, status: 200, outcome: 'ok', error_code: null, latency_ms: 3, ttfb_ms: 1,
    prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, usage_source: 'upstream', ...extra,
  };
}

describe('records', () => {
  test('an oversized free-text field is capped and named in `truncated`, never cut silently', () => {
    const c = new Commitments();
    const rec = requestRecord(row('r1', { model: 'M'.repeat(2_000_000), error_code: 'e'.repeat(600) }), { tenant: 't', commitments: c.digests() });
    assert.equal(rec.model!.length, MAX_FIELD_CHARS);
    assert.deepEqual(rec.truncated, ['model', 'error_code']);
    const bytes = encodeRecord(rec);
    assert.ok(bytes.length <= MAX_ENTRY_BYTES);
    assert.equal(bytes.toString('utf8'), JSON.stringify(JSON.parse(bytes.toString('utf8'))), 'no whitespace');
    assert.ok(bytes.toString('utf8').startsWith('{"backend":"b","commitments":{"alg":"hmac-sha256",'), 'keys sorted (JCS)');
  });
});

describe('journal and integrator on SQLite', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sovra-audit-unit-'));
    store = await openStore(`sqlite:${join(dir, 'a.db')}`);
    await store.migrate();
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('writes of one turn commit together; a bad item fails alone; flush waits for all', async () => {
    const j = new Journal(store);
    const ps = [];
    for (let i = 0; i < 50; i++) ps.push(j.write({ request: row(`j${i}`), entry: { id: `j${i}`, bytes: Buffer.from(`{"i":${i}}`) }, salt: { id: `j${i}`, salt: Buffer.alloc(32, i) } }));
    ps.push(j.write({ request: row('j3') })); // duplicate request id
    const results = await Promise.allSettled(ps);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 50);
    assert.equal(results[50]!.status, 'rejected');
    await j.flush();
    const n = store.sqlite!.prepare('SELECT count(*) AS n FROM audit_queue').get() as { n: number };
    assert.equal(n.n, 50);
    await j.close();
    await assert.rejects(j.write({ request: row('late') }), /closed/);
  });

  test('integration, then refusal to start on a tampered tile, a changed origin or another key', async () => {
    const keyFile = join(dir, 'k.key');
    const opts = { keyFile, env: {}, intervalMs: 3_600_000, batchMax: 16, logger };
    const log = await AuditLog.open(store, opts);
    const cp = await log.drain();
    assert.equal(cp.size, 50n, 'integrated in batches of 16');
    await log.close();
    // reopening the untouched log works and keeps the checkpoint
    const again = await AuditLog.open(store, opts);
    assert.equal(again.latest().size, 50n);
    assert.equal(again.vkey, log.vkey);
    await again.close();
    // a different configured origin
    await assert.rejects(AuditLog.open(store, { ...opts, origin: 'other.example/audit' }), AuditIntegrityError);
    // a different key with the right name
    const other = generateLogKey(log.origin);
    await assert.rejects(AuditLog.open(store, { ...opts, env: { SOVRA_AUDIT_SIGNING_KEY: other.signerKey } }), /not this log's key/);
    // a key for another name
    const wrongName = join(dir, 'wrong.key');
    writeFileSync(wrongName, generateLogKey('elsewhere.example/audit').signerKey);
    await assert.rejects(AuditLog.open(store, { ...opts, keyFile: wrongName }), /is named "elsewhere\.example\/audit"/);
    // a tampered stored tile
    const t = store.sqlite!.prepare('SELECT data FROM audit_tiles WHERE level = 0 AND idx = 0 AND width = 50').get() as { data: Buffer };
    const evil = Buffer.from(t.data);
    evil[0] = evil[0]! ^ 0xff;
    store.sqlite!.prepare('UPDATE audit_tiles SET data = ? WHERE level = 0 AND idx = 0 AND width = 50').run(evil);
    await assert.rejects(AuditLog.open(store, opts), /REFUSING TO RUN/);
    store.sqlite!.prepare('UPDATE audit_tiles SET data = ? WHERE level = 0 AND idx = 0 AND width = 50').run(t.data);
    const ok = await AuditLog.open(store, opts);
    await ok.close();
  });
});

describe('journal failure and audit off, through the gateway', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  let off: TestGateway;
  before(async () => {
    mock = await startMockUpstream();
    g = await startGateway({ config: { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100 } }, env: MOCK_ENV });
    off = await startGateway({ config: { ...mockConfig(mock.url), audit: { enabled: false } }, env: MOCK_ENV });
  });
  after(async () => {
    await g?.close();
    await off?.close();
    await mock?.close();
  });
  const post = (gw: TestGateway, json: unknown) =>
    rawRequest(`${gw.baseURL}/chat/completions`, { headers: { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json' }, json });

  test('audit off: no leaf hash, no /audit routes, the request row is still written', async () => {
    mock.enqueue(jsonResponse(200, chatCompletion()));
    const r = await post(off, { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-sovra-audit-leaf-hash'], undefined);
    assert.equal((await off.record(String(r.headers['x-request-id']))).status, 200);
    assert.equal((await fetch(`${off.origin}/audit/checkpoint`)).status, 404);
    const n = off.gw.store().sqlite!.prepare('SELECT count(*) AS n FROM audit_queue').get() as { n: number };
    assert.equal(n.n, 0);
  });

  test('when the journal cannot commit: 503 audit_unavailable instead of the answer; streams end with an error event and no [DONE]', async () => {
    // The queue is where a data-plane commit writes (the entry with its row and salt).
    g.gw.store().sqlite!.exec('ALTER TABLE audit_queue RENAME TO audit_queue_gone');
    try {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'secret answer' })));
      const r = await post(g, { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(r.status, 503);
      assert.equal((r.json() as { error: { code: string } }).error.code, 'audit_unavailable');
      assert.ok(!r.text().includes('secret answer'));
      mock.enqueue({
        status: 200,
        headers: { 'content-type': 'text/event-stream' },
        writes: [{ text: EV(CH('"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]')) }, { text: DONE }],
      });
      const s = await post(g, { model: 'test-model', stream: true, messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(s.status, 200);
      assert.ok(!s.events.some((e) => e.data === '[DONE]'), 'no [DONE]');
      assert.match(s.events.at(-1)!.data, /"code":"audit_unavailable"/);
      assert.ok(!s.comments.some((c) => c.includes('sovra-audit')));
      const nf = await post(g, { model: 'nope', messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(nf.status, 503, 'gateway errors too');
    } finally {
      g.gw.store().sqlite!.exec('ALTER TABLE audit_queue_gone RENAME TO audit_queue');
    }
    mock.enqueue(jsonResponse(200, chatCompletion()));
    const ok = await post(g, { model: 'test-model', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(ok.status, 200, 'recovers once the store works again');
    assert.match(String(ok.headers['x-sovra-audit-leaf-hash']), /=$/);
  });
});
