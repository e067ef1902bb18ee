/**
 * The transparency log end to end (SQLite always; PostgreSQL when SOVRA_TEST_POSTGRES_URL is set):
 * requests through the gateway (non-stream, stream, upstream error, gateway-made errors, a client
 * disconnect) → signed checkpoint → inclusion proofs over the HTTP API verified with only the vkey →
 * `sovra audit verify` (a child process) recomputes the log from its tiles → consistency between
 * checkpoints, `--prev` with forged and rolled-back checkpoints → `prove` / `check-proof` offline →
 * erasure → no content and no key in any entry → tampered bundle and tile rows are detected.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  createEd25519Verifier,
  createFetchTileReader,
  decodeBase64,
  formatCheckpoint,
  parseSignerKey,
  readEntryFromBundles,
  signNote,
  toHex,
  verifyConsistencyProofJSON,
  verifyInclusionProofJSON,
  verifyTlogProof,
  createEd25519Signer,
  type Checkpoint,
} from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import { CH, EV, DONE, chatCompletion, jsonResponse, startMockUpstream, type MockUpstream, type Write } from './helpers/mock-upstream.ts';
import { rawRequest, type RawResponse } from './helpers/raw-client.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { allEntries, fetchCheckpoint, runSovra, until, writeCliConfig } from './helpers/audit.ts';
import { AuditStorage } from '../src/audit/storage.ts';
import { commitment } from '../src/audit/record.ts';

const pgUrl = process.env['SOVRA_TEST_POSTGRES_URL'];
const CANARY = 'CANARY-PROMPT-e0c1b7a9-do-not-log';
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8' };

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`audit log end to end on ${backend}`, { skip: backend === 'postgres' && !pgUrl ? 'SOVRA_TEST_POSTGRES_URL not set' : false }, () => {
    let mock: MockUpstream;
    let g: TestGateway;
    let vkey: string;
    let cliCfg: string;
    let work: string;
    let cpA: Checkpoint;
    const ids: Record<string, string> = {};
    const leafHashes: Record<string, string> = {};

    const chat = (extra: Record<string, unknown> = {}) => ({ model: 'test-model', messages: [{ role: 'user', content: `${CANARY} tell me a story` }], ...extra });
    const post = (json: unknown, opts: { key?: string; abortAfterEvents?: number } = {}): Promise<RawResponse> =>
      rawRequest(`${g.baseURL}/chat/completions`, {
        headers: { authorization: `Bearer ${opts.key ?? g.key}`, 'content-type': 'application/json' },
        json,
        ...(opts.abortAfterEvents !== undefined ? { abortAfterEvents: opts.abortAfterEvents } : {}),
      });
    const settle = async () => {
      await g.gw.recorder().flush();
      return g.gw.audit()!.drain();
    };
    const cli = (args: string[]) => runSovra(work, args);

    before(async () => {
      mock = await startMockUpstream();
      g = await startGateway({
        config: { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100 } },
        env: MOCK_ENV,
        postgres: backend === 'postgres',
      });
      vkey = g.gw.audit()!.vkey;
      work = mkdtempSync(join(g.dir, 'work-'));
      cliCfg = writeCliConfig(g.dir, g.database);
      cpA = (await fetchCheckpoint(g.origin, vkey)).checkpoint;
    });
    after(async () => {
      await g?.close();
      await mock?.close();
    });

    test('every request answers with its entry id and leaf hash, and is committed before the last byte', async () => {
      // non-stream, OK
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'Once upon a time' })));
      const a = await post(chat());
      assert.equal(a.status, 200);
      ids['json'] = String(a.headers['x-request-id']);
      leafHashes['json'] = String(a.headers['x-sovra-audit-leaf-hash']);
      assert.match(leafHashes['json'], /^[A-Za-z0-9+/]{43}=$/);
      assert.equal(a.headers['x-audit-leaf-hash'], leafHashes['json']);

      // stream, OK: the audit comment comes right before [DONE], which stays last
      mock.enqueue({
        status: 200,
        headers: SSE_HEADERS,
        writes: [
          { text: EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Once"},"finish_reason":null}]')) },
          { text: EV(CH('"choices":[{"index":0,"delta":{"content":" upon"},"finish_reason":"stop"}]')) },
          { text: DONE },
        ],
      });
      const s = await post(chat({ stream: true }));
      assert.equal(s.status, 200);
      ids['stream'] = String(s.headers['x-request-id']);
      const text = s.text();
      const m = /\n: sovra-audit leaf_hash=([A-Za-z0-9+/]{43}=)\n\ndata: \[DONE\]\n\n$/.exec(text);
      assert.ok(m, `stream ends with the audit comment then [DONE]: ${JSON.stringify(text.slice(-160))}`);
      leafHashes['stream'] = m[1]!;
      assert.equal(s.events.at(-1)?.data, '[DONE]');

      // upstream error, relayed
      mock.enqueue(jsonResponse(400, { error: { message: 'bad', type: 'invalid_request_error', param: null, code: 'bad_thing' } }));
      const e = await post(chat());
      assert.equal(e.status, 400);
      ids['upstream_error'] = String(e.headers['x-request-id']);
      leafHashes['upstream_error'] = String(e.headers['x-sovra-audit-leaf-hash']);

      // gateway-made errors: unknown model (in the pipeline) and a bad key (before the body is read)
      const nf = await post({ ...chat(), model: 'no-such-model' });
      assert.equal(nf.status, 404);
      ids['not_found'] = String(nf.headers['x-request-id']);
      leafHashes['not_found'] = String(nf.headers['x-sovra-audit-leaf-hash']);
      assert.match(leafHashes['not_found'], /=$/);
      const bad = await post(chat(), { key: 'sk-sovra-' + 'x'.repeat(32) });
      assert.equal(bad.status, 401);
      ids['unauthorized'] = String(bad.headers['x-request-id']);
      leafHashes['unauthorized'] = String(bad.headers['x-sovra-audit-leaf-hash']);
      assert.match(leafHashes['unauthorized'], /=$/);

      // client disconnect mid-stream: committed anyway
      const writes: Write[] = [];
      for (let i = 0; i < 50; i++) writes.push({ after: i === 0 ? 0 : 30, text: EV(CH(`"choices":[{"index":0,"delta":{"content":"w${i} "},"finish_reason":null}]`)) });
      mock.enqueue({ status: 200, headers: SSE_HEADERS, writes });
      const d = await post(chat({ stream: true }), { abortAfterEvents: 3 });
      assert.ok(d.aborted);
      ids['disconnect'] = String(d.headers['x-request-id']);
      const rec = await g.record(ids['disconnect']);
      assert.equal(rec.status, 499);
      assert.equal(rec.outcome, 'client_disconnected');
    });

    test('exactly one entry per request row, none for anything else, and the leaf hashes match the entries', async () => {
      const cp = await settle();
      assert.ok(cp.size >= 6n);
      const { entries } = await allEntries(g.origin, vkey);
      const recs = entries.map((e) => JSON.parse(e.toString('utf8')) as Record<string, unknown>);
      const requestEntries = recs.filter((r) => r['type'] === 'request');
      const rows = await g.records();
      assert.deepEqual(requestEntries.map((r) => r['id']).sort(), rows.map((r) => r.id).sort());
      assert.equal(new Set(requestEntries.map((r) => r['id'])).size, requestEntries.length, 'no duplicate entries');
      for (const [k, id] of Object.entries(ids)) {
        const i = recs.findIndex((r) => r['id'] === id);
        assert.ok(i >= 0, `${k}: entry ${id}`);
        if (leafHashes[k]) assert.equal(Buffer.from(nodeTreeHasher.hashLeaf(entries[i]!)).toString('base64'), leafHashes[k], k);
      }
      const byId = (id: string) => recs.find((r) => r['id'] === id)!;
      const j = byId(ids['json']!);
      assert.equal(j['v'], 1);
      assert.equal(j['status'], 200);
      assert.equal(j['outcome'], 'ok');
      assert.equal(j['key_id'], g.keyId);
      assert.equal(j['tenant'], 'test');
      assert.equal(j['stream'], false);
      assert.match(String(j['time']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.deepEqual(Object.keys(j['commitments'] as object).sort(), ['alg', 'request', 'response']);
      assert.equal(byId(ids['stream']!)['stream'], true);
      assert.equal(byId(ids['upstream_error']!)['outcome'], 'upstream_error');
      assert.equal(byId(ids['not_found']!)['status'], 404);
      assert.equal(byId(ids['unauthorized']!)['status'], 401);
      assert.equal((byId(ids['unauthorized']!)['commitments'] as Record<string, unknown>)['request'], null, 'the body of a 401 is never read');
      assert.equal(byId(ids['disconnect']!)['outcome'], 'client_disconnected');
    });

    test('the commitments open with the salt to the exact bytes relayed', async () => {
      mock.enqueue(jsonResponse(200, chatCompletion({ content: 'exact' })));
      const body = JSON.stringify(chat());
      const r = await rawRequest(`${g.baseURL}/chat/completions`, { headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' }, body });
      const id = String(r.headers['x-request-id']);
      await settle();
      const storage = new AuditStorage(g.gw.store());
      const salt = (await storage.saltOf(id))!;
      assert.equal(salt.length, 32);
      const idx = (await storage.indexOf(id))!;
      const size = g.gw.audit()!.latest().size;
      const rec = JSON.parse(Buffer.from(await readEntryFromBundles(idx, size, storage)).toString('utf8')) as { commitments: { request: string; response: string } };
      assert.equal(rec.commitments.request, commitment(salt, Buffer.from(body)));
      assert.equal(rec.commitments.response, commitment(salt, r.body));
    });

    test('records hold no content and no key', async () => {
      const { entries } = await allEntries(g.origin, vkey);
      const all = Buffer.concat(entries).toString('utf8');
      assert.ok(all.length > 0);
      for (const secret of [CANARY, 'tell me a story', 'Once upon a time', g.key, g.key.slice(9), 'up-cred-TEST-9999']) {
        assert.ok(!all.includes(secret), `an entry contains ${JSON.stringify(secret)}`);
      }
    });

    test('inclusion proofs over the HTTP API verify against the signed checkpoint with only the vkey', async () => {
      const v = createEd25519Verifier(vkey);
      const storage = new AuditStorage(g.gw.store());
      for (const [k, id] of Object.entries(ids)) {
        const idx = (await storage.indexOf(id))!;
        const r = await fetch(`${g.origin}/audit/proof/inclusion?index=${idx}`);
        assert.equal(r.status, 200, k);
        assert.equal(r.headers.get('access-control-allow-origin'), '*');
        assert.equal(r.headers.get('cache-control'), 'no-cache');
        const doc = await r.text();
        const { checkpoint } = verifyInclusionProofJSON(doc, { verifiers: [v] });
        assert.equal(checkpoint.size, g.gw.audit()!.latest().size);
        if (leafHashes[k]) {
          const byHash = await fetch(`${g.origin}/audit/proof/inclusion?leaf_hash=${toHex(decodeBase64(leafHashes[k]!))}`);
          assert.equal(byHash.status, 200);
          const res = verifyInclusionProofJSON(await byHash.text(), { verifiers: [v], leafHash: decodeBase64(leafHashes[k]!) });
          assert.equal(res.doc.leafIndex, idx);
        }
      }
      // explicit older size: immutable, still verifies against that size's checkpoint
      const small = g.gw.audit()!.latest().size - 1n;
      const r2 = await fetch(`${g.origin}/audit/proof/inclusion?index=0&tree_size=${small}`);
      assert.equal(r2.status, 200);
      assert.match(String(r2.headers.get('cache-control')), /immutable/);
      const d2 = JSON.parse(await r2.text()) as { root_hash: string; checkpoint?: string };
      assert.ok(d2.root_hash);
      // offline tlog-proof from the API
      const tp = await fetch(`${g.origin}/audit/proof/tlog-proof?index=0`);
      assert.equal(tp.status, 200);
      const entry0 = await readEntryFromBundles(0n, g.gw.audit()!.latest().size, createFetchTileReader(`${g.origin}/audit`, fetch));
      assert.equal(verifyTlogProof(await tp.text(), { verifiers: [v], entry: entry0 }).index, 0n);
    });

    test('strict query parsing and publication rules (400 / 404)', async () => {
      const size = g.gw.audit()!.latest().size;
      const st = async (p: string) => (await fetch(`${g.origin}${p}`)).status;
      assert.equal(await st(`/audit/proof/inclusion?index=${size}`), 400);
      assert.equal(await st('/audit/proof/inclusion?index=01'), 400);
      assert.equal(await st('/audit/proof/inclusion?index=-1'), 400);
      assert.equal(await st('/audit/proof/inclusion?index=1.5'), 400);
      assert.equal(await st('/audit/proof/inclusion?index=0&index=1'), 400);
      assert.equal(await st('/audit/proof/inclusion'), 400);
      assert.equal(await st(`/audit/proof/inclusion?index=0&tree_size=${size + 1n}`), 400);
      assert.equal(await st(`/audit/proof/inclusion?leaf_hash=${'0'.repeat(64)}`), 404);
      assert.equal(await st(`/audit/proof/inclusion?leaf_hash=${'A'.repeat(64)}`), 400);
      assert.equal(await st('/audit/proof/consistency'), 400);
      assert.equal(await st(`/audit/proof/consistency?old_size=${size + 1n}`), 400);
      assert.equal(await st(`/audit/proof/consistency?old_size=2&new_size=1`), 400);
      assert.equal(await st('/audit/tile/0/000'), 404, 'no full tile yet');
      assert.equal(await st(`/audit/tile/0/000.p/${size}`), 200);
      assert.equal(await st(`/audit/tile/0/000.p/${size + 1n}`), 404, 'not published');
      assert.equal(await st('/audit/tile/0/0.p/1'), 404, 'malformed');
      assert.equal(await st('/audit/tile/0/000.p/0'), 404);
      assert.equal(await st(`/audit/tile/entries/000.p/${size}`), 200);
      assert.equal(await st(`/audit/tile/entries/000.p/${size + 1n}`), 404);
      assert.equal(await st('/audit/tile/entries/000'), 404);
      const t = await fetch(`${g.origin}/audit/tile/entries/000.p/${size}`);
      assert.equal(t.headers.get('content-type'), 'application/octet-stream');
      assert.equal(t.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      const c = await fetch(`${g.origin}/audit/checkpoint`);
      assert.equal(c.headers.get('content-type'), 'text/plain; charset=utf-8');
      assert.equal(c.headers.get('cache-control'), 'no-cache');
      assert.equal(await (await fetch(`${g.origin}/audit/vkey`)).text(), `${vkey}\n`);
    });

    test('a consistency proof between two checkpoints verifies', async () => {
      const cpB = (await fetchCheckpoint(g.origin, vkey)).checkpoint;
      const r = await fetch(`${g.origin}/audit/proof/consistency?old_size=${cpA.size}&new_size=${cpB.size}`);
      assert.equal(r.status, 200);
      const res = verifyConsistencyProofJSON(await r.text(), { verifiers: [createEd25519Verifier(vkey)], trustedOld: cpA });
      assert.equal(res.checkpoint.size, cpB.size);
      const r0 = await fetch(`${g.origin}/audit/proof/consistency?old_size=0`);
      assert.deepEqual((JSON.parse(await r0.text()) as { proof: unknown[] }).proof, []);
    });

    test('sovra audit verify (child process) checks the whole log from its tiles; --prev detects forks and rollbacks', async () => {
      const saved = join(work, 'saved.checkpoint');
      const v1 = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--full', '--save', saved]);
      assert.equal(v1.code, 0, v1.err);
      assert.match(v1.out, /^OK: .* verified at size \d+/);
      assert.ok(existsSync(saved));
      // more entries, new checkpoint; the saved one is a prefix
      mock.enqueue(jsonResponse(200, chatCompletion()));
      await post(chat());
      await settle();
      const v2 = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--prev', saved]);
      assert.equal(v2.code, 0, v2.err);
      assert.match(v2.out, /consistent with the saved checkpoint/);

      // Forged history signed with the log's own key (as a misbehaving operator could): a different root at the saved size.
      const skey = parseSignerKey(readFileSync(join(g.dir, 'data', 'audit-signing.key'), 'utf8').trim());
      const signer = createEd25519Signer(skey.name, skey.seed);
      const savedCp = (await fetchCheckpoint(g.origin, vkey)).checkpoint;
      const forged = join(work, 'forged.checkpoint');
      writeFileSync(forged, signNote(formatCheckpoint({ origin: skey.name, size: savedCp.size - 1n, rootHash: new Uint8Array(32).fill(7) }), [signer]));
      const f = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--prev', forged]);
      assert.equal(f.code, 3, f.out + f.err);
      assert.match(f.err, /FORK OR ROLLBACK DETECTED/);
      // Rollback: the saved checkpoint is larger than what the log serves now.
      const ahead = join(work, 'ahead.checkpoint');
      writeFileSync(ahead, signNote(formatCheckpoint({ origin: skey.name, size: savedCp.size + 10n, rootHash: new Uint8Array(32).fill(9) }), [signer]));
      const rb = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--prev', ahead]);
      assert.equal(rb.code, 3);
      assert.match(rb.err, /FORK OR ROLLBACK DETECTED: the log shrank/);
      // A saved checkpoint signed by some other key is rejected as such.
      const other = createEd25519Signer(skey.name, new Uint8Array(32).fill(1));
      const alien = join(work, 'alien.checkpoint');
      writeFileSync(alien, signNote(formatCheckpoint({ origin: skey.name, size: 1n, rootHash: new Uint8Array(32) }), [other]));
      const al = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--prev', alien]);
      assert.equal(al.code, 1);
      assert.match(al.err, /not a checkpoint signed by/);
      // a wrong vkey fails
      const wrong = await cli(['audit', 'verify', g.origin, '--vkey', other.vkey]);
      assert.equal(wrong.code, 1);
    });

    test('sovra audit prove writes an offline proof that check-proof verifies without the network', async () => {
      const id = ids['stream']!;
      const p = await cli(['audit', 'prove', id, '--out', work, '--config', cliCfg]);
      assert.equal(p.code, 0, p.err);
      const proofFile = join(work, `${id}.tlog-proof`);
      assert.match(readFileSync(proofFile, 'utf8'), /^c2sp\.org\/tlog-proof@v1\nindex \d+\n/);
      const c = await cli(['audit', 'check-proof', proofFile, '--vkey', vkey]);
      assert.equal(c.code, 0, c.err);
      assert.match(c.out, new RegExp(`OK: entry \\(request ${id}\\) is at index`));
      const tampered = join(work, 'tampered.entry.json');
      writeFileSync(tampered, readFileSync(join(work, `${id}.entry.json`), 'utf8').replace('"status":200', '"status":201'));
      const t = await cli(['audit', 'check-proof', proofFile, '--vkey', vkey, '--entry', tampered]);
      assert.equal(t.code, 1);
      assert.match(t.err, /PROOF FAILED/);
      const v = await cli(['audit', 'vkey', '--config', cliCfg]);
      assert.equal(v.out.trim(), vkey);
      const none = await cli(['audit', 'prove', 'no-such-id', '--config', cliCfg]);
      assert.equal(none.code, 1);
    });

    test('erasure: the salt is gone, an erasure entry is logged, every proof still verifies', async () => {
      const id = ids['json']!;
      const storage = new AuditStorage(g.gw.store());
      assert.ok(await storage.saltOf(id));
      const e = await cli(['audit', 'erase', id, '--config', cliCfg]);
      assert.equal(e.code, 0, e.err);
      assert.equal(await storage.saltOf(id), undefined);
      const found = await until(async () => {
        await g.gw.audit()!.drain();
        const { entries } = await allEntries(g.origin, vkey);
        return entries.map((x) => JSON.parse(x.toString('utf8')) as Record<string, unknown>).find((r) => r['type'] === 'erasure' && r['target'] === id);
      }, 10_000, 'the erasure entry');
      assert.match(String(found['id']), /^era_/);
      const idx = (await storage.indexOf(id))!;
      const r = await fetch(`${g.origin}/audit/proof/inclusion?index=${idx}`);
      verifyInclusionProofJSON(await r.text(), { verifiers: [createEd25519Verifier(vkey)], leafHash: decodeBase64(leafHashes['json']!) });
      const v = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--full']);
      assert.equal(v.code, 0, v.err);
      const again = await cli(['audit', 'erase', id, '--config', cliCfg]);
      assert.equal(again.code, 1);
    });

    test('a tampered entry bundle or tile row is detected by the verifier', async () => {
      await settle();
      const size = Number(g.gw.audit()!.latest().size);
      const db = g.gw.store().db;
      const bundle = await db.selectFrom('audit_bundles').select('data').where('idx', '=', 0).where('width', '=', size).executeTakeFirstOrThrow();
      const original = Buffer.from(bundle.data);
      const text = original.toString('latin1');
      const evil = Buffer.from(text.replace('"status":200', '"status":500'), 'latin1');
      assert.notDeepEqual(evil, original);
      await db.updateTable('audit_bundles').set({ data: evil }).where('idx', '=', 0).where('width', '=', size).execute();
      const b = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--full']);
      assert.equal(b.code, 1, b.out);
      assert.match(b.err, /VERIFICATION FAILED.*tile\/entries\/000/);
      await db.updateTable('audit_bundles').set({ data: original }).where('idx', '=', 0).where('width', '=', size).execute();

      const tile = await db.selectFrom('audit_tiles').select('data').where('level', '=', 0).where('idx', '=', 0).where('width', '=', size).executeTakeFirstOrThrow();
      const t = Buffer.from(tile.data);
      t[5] = t[5]! ^ 1;
      await db.updateTable('audit_tiles').set({ data: t }).where('level', '=', 0).where('idx', '=', 0).where('width', '=', size).execute();
      const r = await cli(['audit', 'verify', g.origin, '--vkey', vkey]);
      assert.equal(r.code, 1);
      assert.match(r.err, /VERIFICATION FAILED/);
      t[5] = t[5]! ^ 1;
      await db.updateTable('audit_tiles').set({ data: t }).where('level', '=', 0).where('idx', '=', 0).where('width', '=', size).execute();
      const ok = await cli(['audit', 'verify', g.origin, '--vkey', vkey, '--full']);
      assert.equal(ok.code, 0, ok.err);
    });
  });
}
