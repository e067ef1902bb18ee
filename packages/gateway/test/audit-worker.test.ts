/**
 * The store worker thread (journal commits and integration off the event loop), the journal's
 * in-thread fallback, RFC 8785 canonical JSON, and the salt pool / response-buffered commitments.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyInclusion, decodeBase64, rootHashFromTiles } from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import { openStore, type Store } from '../src/store/db.ts';
import { Journal } from '../src/audit/journal.ts';
import { StoreWorker } from '../src/audit/store-worker.ts';
import { canonicalize } from '../src/audit/jcs.ts';
import { Commitments, SALT_BYTES, encodeRecord, freshSalt, requestRecord } from '../src/audit/record.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { newRequestId } from '../src/http/request-id.ts';
import { randomSlice } from '../src/random.ts';
import { normalise } from '../src/store/requests.ts';
import { createBudget } from '../src/metering/index.ts';
import { createLedger, type Adjustment, type GrantRequest } from '../src/metering/ledger.ts';

const logger = createLogger('silent');

function row(id: string): RequestsTable {
  return {
    id, ts: 1_750_000_000_000, key_id: 'key_a', tenant_id: 'ten_a', operation: 'chat.completions', model: 'm', backend_id: 'b',
    upstream_model: 'u', stream: 1, status: 200, outcome: 'ok', error_code: null, latency_ms: 3, ttfb_ms: 1,
    prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, usage_source: 'upstream',
  };
}
const digests = { alg: 'hmac-sha256' as const, request: 'a'.repeat(64), response: 'b'.repeat(64) };

describe('RFC 8785 canonical JSON', () => {
  test('string escaping and number formatting as RFC 8785 §3.2.2 (its example)', () => {
    const v = { numbers: [333333333.33333329, 1e30, 4.5, 2e-3, 0.000000000000000000000000001], string: '\u20ac$\u000F\u000aA\'\u0042\u0022\u005c\\"/', literals: [null, true, false] };
    assert.equal(
      canonicalize(v),
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });
  test('members sorted by UTF-16 code units (RFC 8785 §3.2.3 example)', () => {
    const v = { '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One', '\ud83d\ude00': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' };
    // (not via JSON.parse: JS objects list integer-like keys such as "1" first)
    const out = canonicalize(v);
    const order = Object.values(v).sort((a, b) => out.indexOf(`"${a}"`) - out.indexOf(`"${b}"`));
    assert.deepEqual(order, ['Carriage Return', 'One', 'Control', 'Latin Small Letter O With Diaeresis', 'Euro Sign', 'Emoji: Grinning Face', 'Hebrew Letter Dalet With Dagesh']);
  });
  test('every string serialises as JSON.stringify does (random code units, control characters, quotes)', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    for (let i = 0; i < 2000; i++) {
      let s = '';
      const n = rnd() % 12;
      for (let j = 0; j < n; j++) {
        const pick = rnd() % 4;
        s += pick === 0 ? String.fromCharCode(rnd() % 0x20) : pick === 1 ? '"\\/'[rnd() % 3] : pick === 2 ? String.fromCharCode(0x20 + (rnd() % 0x5f)) : '\u00e9\u4e2d\ud83d\ude00'[rnd() % 3];
      }
      if (!(s as string & { isWellFormed(): boolean }).isWellFormed()) continue;
      assert.equal(canonicalize(s), JSON.stringify(s));
      assert.equal(canonicalize({ [s]: s }), `{${JSON.stringify(s)}:${JSON.stringify(s)}}`);
    }
  });
  test('undefined members are skipped; lone surrogates, non-finite numbers and bigint are refused', () => {
    assert.equal(canonicalize({ b: 1, a: undefined, c: [1, 'x'] }), '{"b":1,"c":[1,"x"]}');
    assert.throws(() => canonicalize('a\ud800'), /lone surrogate/);
    assert.throws(() => canonicalize({ ['\udc00']: 1 }), /lone surrogate/);
    assert.throws(() => canonicalize(Number.NaN), TypeError);
    assert.throws(() => canonicalize(1n), TypeError);
    assert.equal(canonicalize(-0), '0');
  });
});

describe('salts and commitments', () => {
  test('freshSalt: 32 bytes each, never repeated across pool refills', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const s = freshSalt();
      assert.equal(s.length, SALT_BYTES);
      seen.add(s.toString('hex'));
    }
    assert.equal(seen.size, 1000);
  });
  test('the response commitment is the HMAC of the concatenated bytes, however they were fed', () => {
    const c = new Commitments();
    const parts: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const s = `data: {"i":${i},"t":"é"}\n\n`;
      if (i % 97 === 0) {
        const b = Buffer.from(s);
        c.response(b);
        parts.push(b);
      } else {
        c.response(s);
        parts.push(Buffer.from(s, 'utf8'));
      }
    }
    const expect = createHmac('sha256', c.salt).update(Buffer.concat(parts)).digest('hex');
    assert.equal(c.digests().response, expect);
    c.response('ignored after digests');
    assert.equal(c.digests().response, expect);
  });
  test('request ids are UUIDv7 and increase', () => {
    const a = newRequestId();
    const b = newRequestId();
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(a < b);
  });
  test('request ids from the pooled CSPRNG: 20,000 strictly increasing UUIDv7 (many per millisecond), the current time, random tails', () => {
    const t0 = Date.now();
    const ids = Array.from({ length: 20_000 }, () => newRequestId());
    const t1 = Date.now();
    const v7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    for (let i = 0; i < ids.length; i++) {
      assert.match(ids[i]!, v7);
      if (i > 0) assert.ok(ids[i - 1]! < ids[i]!, `${ids[i - 1]} < ${ids[i]}`);
    }
    const ms = (id: string) => parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    assert.ok(ms(ids[0]!) >= t0 - 1 && ms(ids[ids.length - 1]!) <= t1 + 1000, 'timestamps of now (the counter may carry a few ms on)');
    const perMs = new Map<number, number>();
    for (const id of ids) perMs.set(ms(id), (perMs.get(ms(id)) ?? 0) + 1);
    assert.ok([...perMs.values()].some((n) => n > 1), 'several ids within one millisecond: ordered by the counter');
    assert.equal(new Set(ids.map((id) => id.slice(-12))).size, ids.length, 'the last 48 bits are random: no repeats');
  });
  test('randomSlice: fresh bytes each call, never the same slice twice; sizes 1–4096 only', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) seen.add(randomSlice(16).toString('hex'));
    assert.equal(seen.size, 2000);
    const salts = Array.from({ length: 300 }, () => freshSalt());
    const copies = salts.map((s) => Buffer.from(s));
    randomSlice(4096); // more pools drawn after the salts were handed out
    randomSlice(4096);
    salts.forEach((s, i) => assert.ok(s.equals(copies[i]!), 'a salt handed out is never overwritten'));
    assert.throws(() => randomSlice(0), RangeError);
    assert.throws(() => randomSlice(4097), RangeError);
    assert.throws(() => randomSlice(1.5), RangeError);
  });
});

describe('store worker on a SQLite file', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sovra-worker-'));
    store = await openStore(`sqlite:${join(dir, 'w.db')}`);
    await store.migrate();
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('commits on the worker: leaf hashes of the records it builds, a bad item fails alone, integration and checkpoints come back', async () => {
    const worker = StoreWorker.for(store, logger)!;
    assert.ok(worker, 'a worker for a file database');
    const log = await worker.openAudit(store, { keyFile: join(dir, 'k.key'), env: {}, intervalMs: 3_600_000, batchMax: 1000 });
    const j = new Journal(store, { committer: worker });
    const ids = Array.from({ length: 300 }, () => newRequestId());
    // A row already in `requests` (a data-plane item's row waits in the queue until integration).
    const taken = newRequestId();
    await j.write({ request: row(taken) });
    const writes = ids.map((id) => j.write({ request: row(id), requestEntry: { tenant: 't', commitments: digests }, salt: { id, salt: freshSalt() } }));
    writes.push(j.write({ request: row(taken) })); // duplicate id
    const results = await Promise.allSettled(writes);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 300);
    assert.equal(results[300]!.status, 'rejected');
    assert.match(String((results[300] as PromiseRejectedResult).reason), /UNIQUE/);
    // the leaf hash returned is LH of the exact record the gateway would build
    const leaf0 = (results[0] as PromiseFulfilledResult<string | null>).value!;
    const bytes = encodeRecord(requestRecord(row(ids[0]!), { tenant: 't', commitments: digests }));
    assert.equal(leaf0, Buffer.from(nodeTreeHasher.hashLeaf(bytes)).toString('base64'));
    // the main thread's connection sees the commits
    assert.equal((store.sqlite!.prepare('SELECT count(*) AS n FROM audit_queue').get() as { n: number }).n, 300);

    const cp = await log.drain();
    assert.equal(cp.size, 300n);
    // the rows and salts that waited in the queue rows are in their tables now, exactly as written
    const count = (t: string) => (store.sqlite!.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
    assert.equal(count('audit_queue'), 0);
    assert.equal(count('requests'), 301);
    assert.equal(count('audit_secrets'), 300);
    assert.deepEqual({ ...(store.sqlite!.prepare('SELECT * FROM requests WHERE id = ?').get(ids[7]!) as object) }, normalise(row(ids[7]!)));
    assert.equal(log.latest().size, 300n, 'the checkpoint published by the worker reached the main thread');
    // and the main thread's storage proves an entry against it
    const root = await rootHashFromTiles(300n, log.storage, nodeTreeHasher);
    assert.deepEqual(root, cp.rootHash);
    const { inclusionProofFromTiles } = await import('@sovra/tlog');
    const proof = await inclusionProofFromTiles(0n, 300n, log.storage, nodeTreeHasher);
    assert.ok(verifyInclusion(0n, 300n, decodeBase64(leaf0), proof, cp.rootHash, nodeTreeHasher));

    await j.close();
    await log.close();
    await worker.close();
    assert.equal(worker.alive, false);
  });

  test('when the worker dies, what it held is rejected and the journal goes on in-thread', async () => {
    const worker = StoreWorker.for(store, logger)!;
    const j = new Journal(store, { committer: worker });
    await j.write({ request: row(newRequestId()) });
    await worker.close(); // the thread is gone
    const id = newRequestId();
    const leaf = await j.write({ request: row(id), requestEntry: { tenant: null, commitments: digests }, salt: { id, salt: freshSalt() } });
    assert.match(leaf!, /^[A-Za-z0-9+/]{43}=$/);
    const r = store.sqlite!.prepare('SELECT entry_id FROM audit_queue WHERE entry_id = ?').get(id);
    assert.ok(r, 'committed in-thread');
    await j.close();
  });

  test('the budget ledger on the worker: grants and write-backs land in budget_usage; once the worker is gone, the fallback ledger takes over', async () => {
    const budget = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_worker' }, unit: 'tokens', amount: 100, period: 'fixed' });
    const row = () => store.sqlite!.prepare('SELECT used, reserved FROM budget_usage WHERE budget_id = ?').get(budget.id) as { used: number; reserved: number } | undefined;
    const fallbackCalls: string[] = [];
    const inThread = createLedger(store);
    const fallback = {
      grant: (g: GrantRequest) => (fallbackCalls.push('grant'), inThread.grant(g)),
      adjust: (ops: readonly Adjustment[]) => (fallbackCalls.push('adjust'), inThread.adjust(ops)),
    };
    const worker = StoreWorker.for(store, logger)!;
    const ledger = worker.ledger(fallback);
    const g = { budgetId: budget.id, periodStart: 0, amount: 100, need: 30, extra: 40, margin: 10 };
    assert.deepEqual(await ledger.grant(g), { fitted: true, granted: 70, free: 30 }, 'need + extra while the margin stays free');
    assert.deepEqual(row(), { used: 0, reserved: 70 }, 'written by the worker, seen by the main connection');
    assert.deepEqual(await ledger.grant(g), { fitted: true, granted: 30, free: 0 }, 'then need alone');
    assert.deepEqual(await ledger.grant({ ...g, need: 1, extra: 0 }), { fitted: false, granted: 0, free: 0 }, 'never beyond the amount');
    await ledger.adjust([{ budgetId: budget.id, periodStart: 0, used: 25, release: 100 }]);
    assert.deepEqual(row(), { used: 25, reserved: 0 });
    assert.deepEqual(fallbackCalls, [], 'nothing went through the fallback while the worker ran');
    await worker.close();
    assert.deepEqual(await ledger.grant({ ...g, need: 5, extra: 0 }), { fitted: true, granted: 5, free: 70 });
    await ledger.adjust([{ budgetId: budget.id, periodStart: 0, used: 5, release: 5 }]);
    assert.deepEqual(fallbackCalls, ['grant', 'adjust']);
    assert.deepEqual(row(), { used: 30, reserved: 0 });
  });

  test('an integrity failure at open comes back as an AuditIntegrityError', async () => {
    const worker = StoreWorker.for(store, logger)!;
    await assert.rejects(worker.openAudit(store, { origin: 'other.example/audit', keyFile: join(dir, 'k.key'), env: {}, intervalMs: 1000, batchMax: 10 }), (e: Error) => e.name === 'AuditIntegrityError');
    await worker.close();
  });

  test('no worker for an in-memory database', async () => {
    const mem = await openStore('sqlite::memory:');
    assert.equal(StoreWorker.for(mem, logger), undefined);
    await mem.close();
  });
});
