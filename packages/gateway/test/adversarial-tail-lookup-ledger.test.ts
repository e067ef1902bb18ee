/**
 * Adversarial tests of three pieces: the integrator's in-memory queue tail (`queue-tail.ts`), the
 * leaf-hash lookup (`leaf-lookup.ts`, `AuditStorage.indexOfLeafHash`, migration 0006) and the budget
 * ledger on the store worker (`StoreWorker.ledger`, `createSqliteLedger`), plus the admission state of
 * `Metering` (private symbol instead of a WeakMap).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { Migrator, type Kysely } from 'kysely';
import { openCheckpoint, verifyLogFromTiles } from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import { openStore, type Store } from '../src/store/db.ts';
import { migrationProvider } from '../src/store/migrations.ts';
import { Journal } from '../src/audit/journal.ts';
import { AuditLog } from '../src/audit/integrator.ts';
import { AuditStorage, type IntegrationCommit } from '../src/audit/storage.ts';
import { QueueTail } from '../src/audit/queue-tail.ts';
import { LEAF_LOOKUP_EPOCH, leafPrefix } from '../src/audit/leaf-lookup.ts';
import { StoreWorker } from '../src/audit/store-worker.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { createBudget } from '../src/metering/index.ts';
import { createLedger, type Adjustment, type GrantRequest, type Ledger } from '../src/metering/ledger.ts';
import { Allotments } from '../src/metering/allotments.ts';
import { Metering } from '../src/metering/metering.ts';
import { rng } from './helpers/prng.ts';
import { storeBackends } from './helpers/store-backends.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-adv-tll-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));
const logger = createLogger('silent');
const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');
const fresh = () => join(tmpRoot, `${randomBytes(5).toString('hex')}.db`);

async function until(fn: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Captures the `Worker` instances the code under test creates (through `postMessage`, which the
 * StoreWorker calls on its private thread handle) so a test can kill the thread or hold its replies.
 */
function captureWorkers(): { seen: Worker[]; restore: () => void } {
  const seen: Worker[] = [];
  const orig = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (this: Worker, ...args: Parameters<Worker['postMessage']>) {
    if (!seen.includes(this)) seen.push(this);
    return orig.apply(this, args);
  };
  return { seen, restore: () => void (Worker.prototype.postMessage = orig) };
}

/**
 * Kills the thread as a crash would. A ref'd timer keeps this thread's event loop alive until the
 * 'exit' event: `terminate()` refs the handle, but a reply that was already on its way can make
 * the StoreWorker unref it again (nothing left in flight), and with no other handle the loop
 * could end while the test awaits the exit.
 */
async function kill(w: Worker): Promise<void> {
  const keep = setInterval(() => {}, 1000);
  try {
    await w.terminate();
  } finally {
    clearInterval(keep);
  }
}

/** Makes `w` drop the worker's `reply` messages while `drop()` is true (as if it died before they left). */
function holdReplies(w: Worker, drop: () => boolean): void {
  const emit = w.emit;
  w.emit = function (this: Worker, ev: string | symbol, ...a: unknown[]) {
    if (ev === 'message' && drop() && (a[0] as { t?: string })?.t === 'reply') return true;
    return emit.call(this, ev, ...a);
  } as Worker['emit'];
}

// --------------------------------------------------------------------------------------------
// 3. The budget ledger on the store worker
// --------------------------------------------------------------------------------------------

describe('budget ledger on the store worker (adversarial)', () => {
  const usage = (store: Store, id: string) => store.sqlite!.prepare('SELECT used, reserved FROM budget_usage WHERE budget_id = ?').get(id) as { used: number; reserved: number } | undefined;

  test('an adjustment the worker applied just before dying is not applied a second time through the fallback', async () => {
    const store = await openStore(`sqlite:${fresh()}`);
    await store.migrate();
    const cap = captureWorkers();
    const worker = StoreWorker.for(store, logger)!;
    try {
      const budget = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_die' }, unit: 'tokens', amount: 100, period: 'fixed' });
      const ledger = worker.ledger(createLedger(store));
      const allot = new Allotments(ledger);
      const hold = { budgetId: budget.id, periodStart: 0, amount: 100, reserve: 60 };
      const { misfit, taken } = await allot.reserve([hold]);
      assert.equal(misfit, -1);
      assert.deepEqual(usage(store, budget.id), { used: 0, reserved: 60 });
      allot.settle(taken, [30]); // the request used 30 of its 60

      // The worker commits the write-back, then dies before its reply reaches this thread.
      const w = cap.seen[0]!;
      let dropping = true;
      holdReplies(w, () => dropping);
      const first = allot.flush(true);
      await until(() => usage(store, budget.id)?.used === 30, 5000, 'the worker to apply the adjustment');
      await kill(w);
      dropping = false;
      // Unknown outcome: the write-back counts as applied (it was) and is not sent again.
      await first;
      assert.equal(worker.alive, false);
      // The allotments keep the unwritten usage and retry: now through the fallback ledger.
      await allot.flush(true).catch(() => undefined);
      allot.close();

      const row = usage(store, budget.id)!;
      // True state: 30 used, nothing reserved, 70 free. A double write-back makes the row say 60 used
      // and -60 reserved: 100 "free", so another process could now be granted 100 more (130 > 100).
      const overspendable = await createLedger(store).grant({ budgetId: budget.id, periodStart: 0, amount: 100, need: 100, extra: 0, margin: 0 });
      assert.deepEqual(
        { row, grant100: overspendable.fitted },
        { row: { used: 30, reserved: 0 }, grant100: false },
        'the write-back must be applied exactly once; a double application frees capacity that was spent (overspend)',
      );
    } finally {
      cap.restore();
      await worker.close();
      await store.close();
    }
  });

  test('a write-back the worker never received (it died first) leaves the reservation counted: never overspent', async () => {
    const store = await openStore(`sqlite:${fresh()}`);
    await store.migrate();
    const cap = captureWorkers();
    const worker = StoreWorker.for(store, logger)!;
    const orig = Worker.prototype.postMessage;
    try {
      const budget = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_lost' }, unit: 'tokens', amount: 100, period: 'fixed' });
      const ledger = worker.ledger(createLedger(store));
      const allot = new Allotments(ledger);
      const { misfit, taken } = await allot.reserve([{ budgetId: budget.id, periodStart: 0, amount: 100, reserve: 60 }]);
      assert.equal(misfit, -1);
      allot.settle(taken, [30]);
      // The write-back message is lost on the way (the thread dies before reading it).
      const w = cap.seen[0]!;
      const post = Worker.prototype.postMessage;
      Worker.prototype.postMessage = function (this: Worker, ...args: Parameters<Worker['postMessage']>) {
        if ((args[0] as { t?: string })?.t === 'ledger-adjust') return;
        return post.apply(this, args);
      };
      const first = allot.flush(true);
      await new Promise((r) => setTimeout(r, 50));
      await kill(w);
      await first; // counted as written
      await allot.flush(true).catch(() => undefined);
      allot.close();
      // The row still counts the whole reservation (60) instead of the 30 used: 40 free, not 70.
      assert.deepEqual(usage(store, budget.id), { used: 0, reserved: 60 });
      const g = await createLedger(store).grant({ budgetId: budget.id, periodStart: 0, amount: 100, need: 41, extra: 0, margin: 0 });
      assert.equal(g.fitted, false, 'nothing beyond the amount can be granted');
    } finally {
      Worker.prototype.postMessage = orig;
      cap.restore();
      await worker.close();
      await store.close();
    }
  });

  test('concurrent grants on the worker connection and two main-thread connections never pass the amount', async () => {
    const file = fresh();
    const store = await openStore(`sqlite:${file}`);
    await store.migrate();
    const other = await openStore(`sqlite:${file}`);
    const worker = StoreWorker.for(store, logger)!;
    try {
      const AMOUNT = 997;
      const budget = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_conc' }, unit: 'tokens', amount: AMOUNT, period: 'fixed' });
      const ledgers: Ledger[] = [worker.ledger(createLedger(store)), createLedger(store), createLedger(other)];
      const r = rng(7);
      const calls: Array<Promise<{ granted: number; fitted: boolean }>> = [];
      for (let round = 0; round < 6; round++) {
        for (let i = 0; i < 60; i++) {
          const need = 1 + Math.floor(r() * 20);
          const extra = Math.floor(r() * 30);
          const g: GrantRequest = { budgetId: budget.id, periodStart: 0, amount: AMOUNT, need, extra, margin: Math.floor(r() * 50) };
          calls.push(ledgers[i % 3]!.grant(g));
        }
        // give some back concurrently (through every connection), as write-backs do
        if (round % 2 === 1) {
          calls.push(ledgers[round % 3]!.adjust([{ budgetId: budget.id, periodStart: 0, used: 0, release: 0 }]).then(() => ({ granted: 0, fitted: true })));
        }
        await new Promise((res) => setImmediate(res));
      }
      const results = await Promise.allSettled(calls);
      const granted = results.reduce((s, x) => s + (x.status === 'fulfilled' ? x.value.granted : 0), 0);
      const failed = results.filter((x) => x.status === 'rejected');
      assert.equal(failed.length, 0, `no call failed (${failed.map((f) => String((f as PromiseRejectedResult).reason)).join('; ')})`);
      assert.ok(granted <= AMOUNT, `granted ${granted} > amount ${AMOUNT}`);
      assert.ok(granted > AMOUNT - 60, `the budget was (nearly) used up: ${granted}`);
      assert.deepEqual(usage(store, budget.id), { used: 0, reserved: granted }, 'the row counts exactly what was granted');
    } finally {
      await worker.close();
      await other.close();
      await store.close();
    }
  });

  test('the worker killed with grants in flight: they reject, later calls use the fallback, nothing is ever overspent', async () => {
    const store = await openStore(`sqlite:${fresh()}`);
    await store.migrate();
    const cap = captureWorkers();
    const worker = StoreWorker.for(store, logger)!;
    try {
      const AMOUNT = 500;
      const budget = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_kill' }, unit: 'tokens', amount: AMOUNT, period: 'fixed' });
      let fallbackCalls = 0;
      const inThread = createLedger(store);
      const fallback: Ledger = {
        grant: (g) => (fallbackCalls++, inThread.grant(g)),
        adjust: (ops: readonly Adjustment[]) => (fallbackCalls++, inThread.adjust(ops)),
      };
      const ledger = worker.ledger(fallback);
      const g: GrantRequest = { budgetId: budget.id, periodStart: 0, amount: AMOUNT, need: 7, extra: 0, margin: 0 };
      assert.equal((await ledger.grant(g)).granted, 7);
      const w = cap.seen[0]!;
      const burst = Array.from({ length: 40 }, () => ledger.grant(g));
      await until(() => (usage(store, budget.id)?.reserved ?? 0) > 7, 5000, 'some grants of the burst to land');
      await kill(w);
      const settled = await Promise.allSettled(burst);
      const rejected = settled.filter((s) => s.status === 'rejected').length;
      const okGranted = 7 + settled.reduce((s, x) => s + (x.status === 'fulfilled' ? x.value.granted : 0), 0);
      assert.equal(worker.alive, false);
      assert.equal(fallbackCalls, 0, 'nothing went to the fallback while the worker ran');
      // later calls: the fallback, exact accounting from here on
      const before = usage(store, budget.id)!.reserved;
      assert.ok(before >= okGranted, `the row holds at least what was acknowledged (${before} >= ${okGranted}); rejected in flight: ${rejected}`);
      let more = 0;
      for (let i = 0; i < 100; i++) {
        const x = await ledger.grant(g);
        more += x.granted;
        if (!x.fitted) break;
      }
      assert.ok(fallbackCalls > 0, 'calls after the death use the fallback');
      const row = usage(store, budget.id)!;
      assert.equal(row.reserved, before + more);
      assert.ok(row.reserved <= AMOUNT, `reserved ${row.reserved} never beyond ${AMOUNT}`);
      assert.ok(okGranted + more <= AMOUNT, 'what callers were told they got never passes the amount');
    } finally {
      cap.restore();
      await worker.close();
      await store.close();
    }
  });
});

describe('Metering admission state (adversarial)', () => {
  test('another instance settles to 0 and touches nothing; settle is idempotent, also for copies of the admission', async () => {
    const store = await openStore(`sqlite:${fresh()}`);
    await store.migrate();
    const prices = { m: { input_per_1m_usd: 2, output_per_1m_usd: 10 } };
    const m1 = new Metering(store, { prices, defaultMaxTokens: 100 });
    const m2 = new Metering(store, { prices, defaultMaxTokens: 100 });
    try {
      const budget = await createBudget(store, { scope: { kind: 'tenant', id: 'ten_m' }, unit: 'tokens', amount: 1000, period: 'fixed' });
      const a = await m1.admit({ tenantId: 'ten_m', keyId: 'key_m', model: 'm', promptTokens: 10, maxTokens: 20 });
      assert.deepEqual(await m2.settle(a, { prompt_tokens: 10, completion_tokens: 5 }), { costMicros: 0 }, 'foreign admission');
      assert.deepEqual(await m2.settle({ ...a }, { prompt_tokens: 10, completion_tokens: 5 }), { costMicros: 0 }, 'foreign copy');
      await m2.flush();
      const row = () => store.sqlite!.prepare('SELECT used, reserved FROM budget_usage WHERE budget_id = ?').get(budget.id) as { used: number; reserved: number };
      const beforeSettle = row();
      assert.equal(beforeSettle.used, 0, 'the other instance wrote no usage');
      const s1 = await m1.settle(a, { prompt_tokens: 10, completion_tokens: 5 });
      assert.deepEqual(s1, { costMicros: 70 });
      assert.deepEqual(await m1.settle(a, { prompt_tokens: 500, completion_tokens: 500 }), s1, 'second settle: first result');
      assert.deepEqual(await m1.settle({ ...a }, { prompt_tokens: 500, completion_tokens: 500 }), s1, 'a spread copy shares the state');
      assert.deepEqual(await m1.settle(JSON.parse(JSON.stringify(a)), { prompt_tokens: 1, completion_tokens: 1 }), { costMicros: 0 }, 'a JSON copy carries no state');
      assert.deepEqual(await m1.settle({ headers: {}, reservedCompletionTokens: null }, null), { costMicros: 0 }, 'a forged admission');
      await m1.flush();
      assert.deepEqual(row(), { used: 15, reserved: 0 }, 'usage counted exactly once');
      assert.deepEqual(Object.keys(a).sort(), ['headers', 'reservedCompletionTokens']);
      assert.equal(JSON.stringify(a).includes('owner'), false);
    } finally {
      await m1.close();
      await m2.close();
      await store.close();
    }
  });
});

// --------------------------------------------------------------------------------------------
// 2. Leaf-hash lookup and migration 0006
// --------------------------------------------------------------------------------------------

const backends = storeBackends(tmpRoot);

async function migrateTo(store: Store, name: string, schema: string | undefined): Promise<void> {
  const migrator = new Migrator({ db: store.db, provider: migrationProvider(store.dialect), ...(schema ? { migrationTableSchema: schema } : {}) });
  const { error } = await migrator.migrateTo(name);
  if (error) throw error;
}

/** Crafted leaf hashes: high bits in each of the 6 prefix bytes, all-ones, sign-bit patterns, randoms. */
function craftedHashes(): Buffer[] {
  const out: Buffer[] = [];
  const base = (fill: number) => Buffer.alloc(32, fill);
  for (const fill of [0x00, 0xff, 0x80, 0x7f]) {
    for (let p = 0; p < 6; p++) {
      for (const v of [0xff, 0x80, 0x7f, 0x01, 0x00]) {
        const h = base(fill);
        h[p] = v;
        h[31] = out.length & 0xff; // keep the rest distinct
        h[30] = out.length >> 8;
        out.push(h);
      }
    }
  }
  out.push(Buffer.from('ffffffffffff' + '00'.repeat(26), 'hex'));
  out.push(Buffer.from('800000000000' + '11'.repeat(26), 'hex'));
  out.push(Buffer.from('000000800000' + '22'.repeat(26), 'hex'));
  out.push(Buffer.from('0000ffffffff' + '33'.repeat(26), 'hex'));
  out.push(Buffer.from('7fffffffffff' + '44'.repeat(26), 'hex'));
  const r = rng(99);
  for (let i = 0; i < 60; i++) out.push(Buffer.from(Array.from({ length: 32 }, () => Math.floor(r() * 256))));
  return out;
}

for (const backend of backends) {
  describe(`migration 0006 prefix and leaf-hash lookup with crafted hashes on ${backend.name}`, () => {
    after(() => backend.cleanup());

    test('the SQL prefix equals leafPrefix() for every crafted hash; lookups find the lowest verified index across epochs; down restores every hash', async () => {
      const { store, schema } = await backend.open();
      try {
        await migrateTo(store, '0005_audit_leaf_hash', schema);
        const raw = store.db as unknown as Kysely<any>;
        const hashes = craftedHashes();
        // Indexes across epochs (up to epoch 64), in partial tiles.
        const starts = [0, LEAF_LOOKUP_EPOCH - 40, 3 * LEAF_LOOKUP_EPOCH + 7, 64 * LEAF_LOOKUP_EPOCH + 3];
        const placed: Array<{ idx: number; hash: Buffer; id: string }> = [];
        hashes.forEach((h, k) => {
          const idx = starts[k % starts.length]! + Math.floor(k / starts.length);
          placed.push({ idx, hash: h, id: `c_${k}` });
        });
        // a duplicate: the same hash again in a later epoch (lowest index wins)
        const dup = hashes[3]!;
        const dupIdx = 3 * LEAF_LOOKUP_EPOCH + 200;
        placed.push({ idx: dupIdx, hash: dup, id: 'dup_late' });
        // a 48-bit prefix collision at a LOWER index with a different hash
        const victim = placed.find((p) => p.idx > 64 * LEAF_LOOKUP_EPOCH + 20)!;
        const collider = Buffer.concat([victim.hash.subarray(0, 6), Buffer.alloc(26, 0x5a)]);
        placed.push({ idx: 200, hash: collider, id: 'collider' });
        const usedIdx = new Set<number>();
        for (const p of placed) {
          assert.ok(!usedIdx.has(p.idx), `index ${p.idx} placed once`);
          usedIdx.add(p.idx);
        }
        // level-0 tiles holding the hashes (other slots random), width up to the highest slot used
        const tiles = new Map<number, Buffer>();
        for (const p of placed) {
          const t = Math.floor(p.idx / 256);
          const w = (p.idx % 256) + 1;
          const cur = tiles.get(t);
          if (!cur || cur.length < w * 32) {
            const nb = randomBytes(w * 32);
            if (cur) cur.copy(nb);
            tiles.set(t, nb);
          }
        }
        for (const p of placed) p.hash.copy(tiles.get(Math.floor(p.idx / 256))!, (p.idx % 256) * 32);
        for (const [t, data] of tiles) await raw.insertInto('audit_tiles').values({ level: 0, idx: t, width: data.length / 32, data }).execute();
        // a narrower, older tile of tile 0 too (down must use the widest)
        await raw.insertInto('audit_tiles').values({ level: 0, idx: 0, width: 1, data: tiles.get(0)!.subarray(0, 32) }).execute();
        await raw.insertInto('audit_index').values(placed.map((p) => ({ entry_id: p.id, idx: p.idx, leaf_hash: p.hash }))).execute();

        await store.migrate(); // 0006 up
        const rows = await raw.selectFrom('audit_leaf_lookup').select(['epoch', 'prefix', 'idx']).execute();
        assert.equal(rows.length, placed.length);
        const byIdx = new Map(rows.map((r) => [Number(r.idx), r]));
        for (const p of placed) {
          const r = byIdx.get(p.idx);
          assert.ok(r, `lookup row of ${p.idx}`);
          assert.equal(Number(r.prefix), leafPrefix(p.hash), `prefix of ${hex(p.hash.subarray(0, 6))} at ${p.idx}`);
          assert.equal(Number(r.epoch), Math.floor(p.idx / LEAF_LOOKUP_EPOCH), `epoch of ${p.idx}`);
        }

        const storage = new AuditStorage(store);
        const lowest = new Map<string, number>();
        for (const p of placed) lowest.set(hex(p.hash), Math.min(lowest.get(hex(p.hash)) ?? Infinity, p.idx));
        assert.ok(lowest.get(hex(dup))! < dupIdx || placed[3]!.idx > dupIdx);
        for (const p of placed) {
          const want = lowest.get(hex(p.hash))!;
          assert.equal(await storage.indexOfLeafHash(hex(p.hash)), BigInt(want), `lookup of ${p.id} (${hex(p.hash.subarray(0, 6))})`);
        }
        assert.equal(await storage.indexOfLeafHash(hex(Buffer.concat([victim.hash.subarray(0, 6), Buffer.alloc(26, 0x01)]))), undefined, 'prefix only: not found');

        // the journal/integrator's write path computes the same prefixes (leafPrefix in JS)
        await migrateTo(store, '0005_audit_leaf_hash', schema); // 0006 down
        const restored = await raw.selectFrom('audit_index').select(['entry_id', 'idx', 'leaf_hash']).execute();
        assert.equal(restored.length, placed.length);
        const want = new Map(placed.map((p) => [p.id, p]));
        for (const r of restored) {
          const p = want.get(r.entry_id)!;
          assert.equal(Number(r.idx), p.idx);
          assert.equal(hex(r.leaf_hash), hex(p.hash), `restored hash of ${r.entry_id}`);
        }
        // and up again gives the same lookup rows
        await store.migrate();
        const again = await raw.selectFrom('audit_leaf_lookup').select(['epoch', 'prefix', 'idx']).execute();
        assert.equal(again.length, placed.length);
        for (const r of again) assert.equal(Number(r.prefix), leafPrefix(want.get(placed.find((p) => p.idx === Number(r.idx))!.id)!.hash));
      } finally {
        await store.close();
      }
    });
  });
}

// --------------------------------------------------------------------------------------------
// 1. The queue tail under adversarial interleavings
// --------------------------------------------------------------------------------------------

function reqRow(id: string): RequestsTable {
  return {
    id, ts: 1_750_000_000_000, key_id: 'key_a', tenant_id: 'ten_a', operation: 'chat.completions', model: 'm', backend_id: 'b',
    upstream_model: 'u', stream: 0, status: 200, outcome: 'ok', error_code: null, latency_ms: 3, ttfb_ms: 1,
    prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, usage_source: 'upstream',
  };
}

describe('queue tail under adversarial interleavings (SQLite)', () => {
  const entryOf = (id: string) => Buffer.from(`{"id":"${id}","kind":"adv-tail"}`);

  for (const seed of [1, 2, 3]) {
    test(`seed ${seed}: journal commits, direct inserts, failing rounds, duplicate ids, rowid reuse, standby, overflow — every entry once, in queue order`, async () => {
      const store = await openStore(`sqlite:${fresh()}`);
      await store.migrate();
      const native = store.sqlite!;
      const r = rng(seed);
      const tail = new QueueTail(48); // small: overflows often
      let tailHits = 0;
      let tailMisses = 0;
      const take = tail.take.bind(tail);
      tail.take = (limit, head) => {
        const rows = take(limit, head);
        if (rows) tailHits++;
        else tailMisses++;
        return rows;
      };
      let rejectedWrites = 0;
      const journal = new Journal(store, { tail, minIntervalMs: 0 });
      const keyFile = join(tmpRoot, `k-${randomBytes(4).toString('hex')}`);
      const batchMax = 300 + Math.floor(r() * 300); // > one tile: rounds have several chunks
      const log = await AuditLog.open(store, { keyFile, env: {}, intervalMs: 3_600_000, batchMax, logger, tail });
      const log2 = await AuditLog.open(store, { keyFile, env: {}, intervalMs: 3_600_000, batchMax: 97, logger }); // another process: no tail
      // flaky integration commits: throw on chosen calls (before writing anything)
      let failNext = 0;
      const orig = log.storage.commitIntegration.bind(log.storage);
      log.storage.commitIntegration = async (c: IntegrationCommit) => {
        if (failNext > 0) {
          failNext--;
          throw new Error('injected commitIntegration failure');
        }
        return orig(c);
      };
      const expected: string[] = [];
      let n = 0;
      const usedReq: string[] = [];
      const journalWrite = async (k: number) => {
        const ids: string[] = [];
        const ps: Array<Promise<string | null>> = [];
        for (let i = 0; i < k; i++) {
          const id = `j${seed}_${n++}`;
          // sometimes a duplicate request id: that item fails, the batch is retried item by item
          const reqId = usedReq.length > 0 && r() < 0.08 ? usedReq[Math.floor(r() * usedReq.length)]! : `req_${id}`;
          ids.push(id);
          ps.push(journal.write({ request: reqRow(reqId), entry: { id, bytes: entryOf(id) } }));
          if (reqId === `req_${id}`) usedReq.push(reqId);
        }
        const res = await Promise.allSettled(ps);
        res.forEach((x, i) => {
          if (x.status === 'fulfilled') expected.push(ids[i]!);
          else rejectedWrites++;
        });
      };
      const direct = (k: number) => {
        for (let i = 0; i < k; i++) {
          const id = `d${seed}_${n++}`;
          native.prepare('INSERT INTO audit_queue (entry_id, entry, created_at) VALUES (?, ?, ?)').run(id, entryOf(id), 1);
          expected.push(id);
        }
      };
      const setLease = (v: string) => native.prepare("UPDATE audit_meta SET value = ? WHERE key = 'integrator_lease'").run(v);
      const quiet = (p: Promise<unknown>) => p.catch(() => undefined);
      try {
        for (let step = 0; step < 70; step++) {
          const x = r();
          if (x < 0.3) await journalWrite(1 + Math.floor(r() * 60));
          else if (x < 0.4) direct(1 + Math.floor(r() * 3));
          else if (x < 0.55) {
            if (r() < 0.4) failNext = 1 + Math.floor(r() * 2);
            await quiet(log.integrateNow());
          } else if (x < 0.7) {
            // a round with journal commits landing between its chunks, and maybe a chunk failing
            if (r() < 0.3) failNext = 1;
            const round = quiet(log.integrateNow());
            const w = journalWrite(1 + Math.floor(r() * 40));
            direct(r() < 0.5 ? 1 : 0);
            await Promise.all([round, w]);
          } else if (x < 0.8) {
            failNext = 0;
            await quiet(log.drain(50)); // queue empties: SQLite hands out seqs again
            await journalWrite(1 + Math.floor(r() * 5));
          } else if (x < 0.9) {
            // lease lost: another process integrates meanwhile, then the lease comes back
            setLease(`other ${Date.now() + 60_000}`);
            await quiet(log.integrateNow()); // standby round
            await journalWrite(1 + Math.floor(r() * 30));
            setLease('other 0');
            await quiet(log2.integrateNow());
            if (r() < 0.5) await quiet(log2.drain(20));
            await journalWrite(1 + Math.floor(r() * 10));
            const cur = native.prepare("SELECT value FROM audit_meta WHERE key = 'integrator_lease'").get() as { value: string };
            setLease(`${cur.value.split(' ')[0]} 0`); // the other process stops
          } else {
            // lease lost WITHOUT a standby round in between (a paused holder): the other integrates
            await journalWrite(1 + Math.floor(r() * 20));
            setLease('other 0');
            await quiet(log2.integrateNow());
            const cur = native.prepare("SELECT value FROM audit_meta WHERE key = 'integrator_lease'").get() as { value: string };
            setLease(`${cur.value.split(' ')[0]} 0`);
            await journalWrite(1 + Math.floor(r() * 20));
          }
        }
        failNext = 0;
        await journal.flush();
        let cp = await log.drain(200).catch(() => log.drain(200));
        if ((await log.storage.queueLength()) > 0) cp = await log.drain(200);
        assert.equal(await log.storage.queueLength(), 0, 'queue drained');
        assert.ok(tailHits > 0 && tailMisses > 0 && rejectedWrites > 0, `the tail was used and refused (${tailHits}/${tailMisses}), per-item retries happened (${rejectedWrites})`);
        const size = BigInt(native.prepare("SELECT value FROM audit_meta WHERE key = 'integrated_size'").pluck().get() as string);
        assert.equal(size, BigInt(expected.length), 'integrated exactly the committed entries');
        assert.equal(cp.size, size);
        const checkpoint = openCheckpoint(cp.note, [log.verifier()], { origin: log.origin }).checkpoint;
        const seen: string[] = [];
        await verifyLogFromTiles(checkpoint, log.storage, { mode: 'full', entries: true, hasher: nodeTreeHasher, onEntry: (_i, e) => void seen.push(JSON.parse(Buffer.from(e).toString('utf8')).id) });
        assert.equal(seen.length, expected.length);
        assert.deepEqual(seen, expected, 'every entry once, in queue (insertion) order');
        const lookupRows = (native.prepare('SELECT count(*) FROM audit_leaf_lookup').pluck().get() as number);
        assert.equal(lookupRows, expected.length);
        const storage = new AuditStorage(store);
        for (let i = 0; i < expected.length; i += 37) {
          assert.equal(await storage.indexOfLeafHash(hex(nodeTreeHasher.hashLeaf(entryOf(expected[i]!)))), BigInt(i));
        }
      } finally {
        await journal.close();
        await log.close();
        await log2.close();
        await store.close();
      }
    });
  }
});
