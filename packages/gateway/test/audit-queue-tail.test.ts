/**
 * The integrator's in-memory queue tail (`src/audit/queue-tail.ts`): the rows the journal just
 * committed are integrated without reading them back, but only when they are exactly the queue's
 * rows; rows queued by another writer, a stale tail, a tail whose rows are not the queue's and a tail
 * over its bound all fall back to reading `audit_queue`, and the log holds every entry once, in queue order.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openCheckpoint, verifyLogFromTiles } from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import { openStore, type Store } from '../src/store/db.ts';
import { Journal } from '../src/audit/journal.ts';
import { AuditLog } from '../src/audit/integrator.ts';
import { AuditStorage, type QueuedEntry } from '../src/audit/storage.ts';
import { QueueTail } from '../src/audit/queue-tail.ts';
import { createLogger } from '../src/telemetry/logger.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-queue-tail-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const row = (seq: number, id = `e${seq}`): QueuedEntry => ({ seq, entryId: id, entry: Buffer.from(id), leafHash: null });
const seqs = (rows: QueuedEntry[] | null) => rows?.map((r) => r.seq) ?? null;

describe('QueueTail', () => {
  test('takes contiguous rows only from the queue head, by seq and entry id', () => {
    const t = new QueueTail(100);
    t.push([row(5), row(6), row(7)]);
    assert.equal(t.take(10, { seq: 4, entryId: 'e4' }), null, 'the tail does not start at the head');
    assert.equal(t.take(10, { seq: 5, entryId: 'other' }), null, 'same seq, another entry');
    assert.deepEqual(seqs(t.take(2, { seq: 5, entryId: 'e5' })), [5, 6]);
    assert.deepEqual(seqs(t.take(2, { seq: 7, entryId: 'e7' })), [7]);
    assert.equal(t.size, 0);
  });

  test('a gap (another writer) restarts the tail; the bound clears it; dropThrough forgets read rows', () => {
    const t = new QueueTail(4);
    t.push([row(1), row(2)]);
    t.push([row(4)]); // row 3 came from elsewhere
    assert.equal(t.size, 1);
    assert.deepEqual(seqs(t.take(10, { seq: 4, entryId: 'e4' })), [4]);
    t.push([row(10), row(11), row(12), row(13)]);
    t.push([row(14)]); // over the bound: cleared, then holds 14 only
    assert.equal(t.size, 1);
    t.push([row(15), row(16)]);
    t.dropThrough(15);
    assert.deepEqual(seqs(t.take(10, { seq: 16, entryId: 'e16' })), [16]);
    assert.throws(() => new QueueTail(0), RangeError);
  });
});

describe('integration with a queue tail (SQLite)', () => {
  const open = async (): Promise<Store> => {
    const s = await openStore(`sqlite:${join(tmpRoot, `t-${randomBytes(4).toString('hex')}.db`)}`);
    await s.migrate();
    return s;
  };
  const entryOf = (id: string) => Buffer.from(`{"id":"${id}","kind":"tail-test"}`);

  test('journal rows and rows from another writer in between: every entry once, in queue order', async () => {
    const store = await open();
    const tail = new QueueTail(10_000);
    const journal = new Journal(store, { tail });
    const log = await AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(4).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 700, logger: createLogger('silent'), tail });
    const order: string[] = [];
    const write = async (prefix: string, n: number) => {
      const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
      order.push(...ids);
      await Promise.all(ids.map((id) => journal.write({ entry: { id, bytes: entryOf(id) } })));
    };
    try {
      await write('a', 1000);
      assert.equal(tail.size, 1000, 'the journal handed its committed rows to the tail');
      await log.integrateNow(); // 700 from the tail
      assert.equal(tail.size, 300);

      // another writer (the CLI) queues rows in between: a gap in the tail
      const raw = store.db as unknown as import('kysely').Kysely<any>;
      for (const id of ['cli0', 'cli1', 'cli2']) {
        await raw.insertInto('audit_queue').values({ entry_id: id, entry: entryOf(id), created_at: 1 }).execute();
        order.push(id);
      }
      await write('b', 500);

      const cp = await log.drain();
      assert.equal(cp.size, BigInt(order.length));
      assert.equal(tail.size, 0);

      const storage = new AuditStorage(store);
      const checkpoint = openCheckpoint(cp.note, [log.verifier()], { origin: log.origin }).checkpoint;
      const seen: string[] = [];
      const report = await verifyLogFromTiles(checkpoint, storage, { mode: 'full', entries: true, hasher: nodeTreeHasher, onEntry: (_i, e) => void seen.push(JSON.parse(Buffer.from(e).toString('utf8')).id) });
      assert.equal(report.entriesVerified, BigInt(order.length));
      assert.deepEqual(seen, order, 'every entry once, in queue order');
    } finally {
      await journal.close();
      await log.close();
      await store.close();
    }
  });

  test('a tail whose rows are not the queue\'s (other entries at those seqs, or seqs reused) is never integrated', async () => {
    const store = await open();
    const tail = new QueueTail(100);
    const log = await AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(4).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 100, logger: createLogger('silent'), tail });
    const journal = new Journal(store); // no tail: the rows reach the integrator only through the table
    try {
      const ids = ['x0', 'x1', 'x2', 'x3'];
      await Promise.all(ids.map((id) => journal.write({ entry: { id, bytes: entryOf(id) } })));
      const head = (await log.storage.queueHead())!;
      // the head row matches, the second is another entry than the queue holds at that seq
      tail.push([{ seq: head.seq, entryId: head.entryId, entry: entryOf('forged-0'), leafHash: null }, { seq: head.seq + 1, entryId: 'forged-1', entry: entryOf('forged-1'), leafHash: null }]);
      await log.integrateNow();
      // stale: an integrated row's seq, which the emptied queue hands out again (rowid reuse)
      tail.push([{ seq: 1, entryId: 'x0', entry: entryOf('stale'), leafHash: null }]);
      await Promise.all(['y0', 'y1'].map((id) => journal.write({ entry: { id, bytes: entryOf(id) } })));
      const cp = await log.drain();
      assert.equal(cp.size, 6n);
      const checkpoint = openCheckpoint(cp.note, [log.verifier()], { origin: log.origin }).checkpoint;
      const seen: string[] = [];
      await verifyLogFromTiles(checkpoint, log.storage, { mode: 'full', entries: true, hasher: nodeTreeHasher, onEntry: (_i, e) => void seen.push(JSON.parse(Buffer.from(e).toString('utf8')).id) });
      assert.deepEqual(seen, [...ids, 'y0', 'y1']);
    } finally {
      await journal.close();
      await log.close();
      await store.close();
    }
  });
});
