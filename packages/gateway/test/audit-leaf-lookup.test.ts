/**
 * The leaf-hash lookup (`src/audit/leaf-lookup.ts`, `AuditStorage.indexOfLeafHash`) on SQLite, and
 * on PostgreSQL when SOVRA_TEST_POSTGRES_URL is set (fresh schema, dropped afterwards): a log of more
 * than two lookup epochs, entries found in every epoch, a duplicated entry resolved to its lowest
 * index (spec §10.1), and forged lookup rows (a 48-bit prefix collision) never returning a wrong
 * index, because every candidate is checked against the level-0 tile.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { nodeTreeHasher } from '@sovra/tlog/node';
import { Journal } from '../src/audit/journal.ts';
import { AuditLog } from '../src/audit/integrator.ts';
import { AuditStorage } from '../src/audit/storage.ts';
import { LEAF_LOOKUP_EPOCH, leafEpoch, leafPrefix } from '../src/audit/leaf-lookup.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { storeBackends } from './helpers/store-backends.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-leaf-lookup-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');
const entryOf = (id: string) => Buffer.from(`{"id":"${id}","kind":"lookup-test"}`);

describe('leafPrefix and leafEpoch', () => {
  test('the first 6 bytes, unsigned big-endian; epochs of 16,384 entries', () => {
    const h = (...b: number[]) => Uint8Array.from([...b, ...new Array(32 - b.length).fill(0xee)]);
    assert.equal(leafPrefix(h(0, 0, 0, 0, 0, 1)), 1);
    assert.equal(leafPrefix(h(1, 2, 3, 4, 5, 6)), 0x010203040506);
    assert.equal(leafPrefix(h(0x80, 0, 0, 0, 0, 0)), 2 ** 47);
    assert.equal(leafPrefix(h(0, 0, 0x80, 0, 0, 0)), 2 ** 31, 'bit 31 is not a sign bit');
    assert.equal(leafPrefix(h(0xff, 0xff, 0xff, 0xff, 0xff, 0xff)), 2 ** 48 - 1);
    assert.equal(leafPrefix(h(0, 0, 0, 0, 0, 0)), 0);
    assert.equal(LEAF_LOOKUP_EPOCH, 16_384);
    assert.deepEqual([0, 16_383, 16_384, 40_000].map(leafEpoch), [0, 0, 1, 2]);
  });
});

const backends = storeBackends(tmpRoot);

/** Past two epoch boundaries, ending in a partial tile. */
const TOTAL = 2 * LEAF_LOOKUP_EPOCH + 1_000 + 77;
/** The duplicated entry's indexes: one per epoch. */
const DUPS = [5, LEAF_LOOKUP_EPOCH + 9, 2 * LEAF_LOOKUP_EPOCH + 500];

for (const backend of backends) {
  describe(`leaf-hash lookup on ${backend.name}`, () => {
    after(() => backend.cleanup());

    test('finds entries in every epoch, the lowest index of a duplicate, and never a forged candidate', async () => {
      const { store } = await backend.open();
      try {
        await store.migrate();
        const ids = Array.from({ length: TOTAL }, (_, i) => (DUPS.includes(i) ? 'dup' : `e_${i}`));
        const journal = new Journal(store);
        for (let i = 0; i < TOTAL; i += 4096) {
          await Promise.all(ids.slice(i, i + 4096).map((id, j) => journal.write({ entry: { id: id === 'dup' ? `dup_${i + j}` : id, bytes: entryOf(id) } })));
        }
        await journal.close();
        const log = await AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(4).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 65_536, logger: createLogger('silent') });
        const cp = await log.drain();
        await log.close();
        assert.equal(cp.size, BigInt(TOTAL));

        const storage = new AuditStorage(store);
        const lh = (id: string) => hex(nodeTreeHasher.hashLeaf(entryOf(id)));
        for (let i = 0; i < TOTAL; i += 1_009) {
          if (ids[i] === 'dup') continue;
          assert.equal(await storage.indexOfLeafHash(lh(ids[i]!)), BigInt(i), `entry ${i} (epoch ${leafEpoch(i)})`);
        }
        for (const i of [LEAF_LOOKUP_EPOCH - 1, LEAF_LOOKUP_EPOCH, TOTAL - 1]) assert.equal(await storage.indexOfLeafHash(lh(ids[i]!)), BigInt(i), `entry ${i}`);
        assert.equal(await storage.indexOfLeafHash(lh('dup')), BigInt(DUPS[0]!), 'a duplicated entry gives its lowest index');
        assert.equal(await storage.indexOfLeafHash(lh('never-logged')), undefined);

        // Forge lookup rows with the prefix of a late entry at earlier indexes (as a 48-bit collision
        // would): the candidates fail the check against the level-0 tile and the real index is found.
        const late = TOTAL - 3;
        const raw = store.db as unknown as import('kysely').Kysely<any>;
        const prefix = leafPrefix(nodeTreeHasher.hashLeaf(entryOf(ids[late]!)));
        await raw.insertInto('audit_leaf_lookup').values([{ epoch: 0, prefix, idx: 7 }, { epoch: 1, prefix, idx: LEAF_LOOKUP_EPOCH + 3 }]).execute();
        assert.equal(await storage.indexOfLeafHash(lh(ids[late]!)), BigInt(late));
        const ghost = hex(Buffer.concat([Buffer.from(lh(ids[late]!), 'hex').subarray(0, 6), Buffer.alloc(26, 0xab)]));
        assert.equal(await storage.indexOfLeafHash(ghost), undefined, 'same prefix, different hash: not found');
      } finally {
        await store.close();
      }
    });
  });
}
