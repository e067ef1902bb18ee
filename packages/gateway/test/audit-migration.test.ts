/**
 * Migrations `0005_audit_leaf_hash` and `0006_audit_leaf_lookup` on a log written by an older version
 * (SQLite always; PostgreSQL too when SOVRA_TEST_POSTGRES_URL is set, in a fresh schema dropped
 * afterwards): `audit_index` rows with hex leaf hashes are converted to 32-byte ones (0005), then moved
 * to `audit_leaf_lookup` as (epoch, 48-bit prefix, idx) rows (0006); queue rows written without a leaf
 * hash are integrated by hashing them, the journal's rows carry `LH(entry)`, `leaf_hash=` lookups find
 * every entry, and the resulting log verifies entry by entry (every bundle against its level-0 tile,
 * the root against the checkpoint). Then both migrations are rolled back: 0006's `down` restores the
 * 32-byte hashes from the tiles, 0005's the hex text.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Migrator } from 'kysely';
import { TileIntegrator, openCheckpoint, verifyLogFromTiles } from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import type { Store } from '../src/store/db.ts';
import { migrationProvider } from '../src/store/migrations.ts';
import { Journal } from '../src/audit/journal.ts';
import { AuditLog } from '../src/audit/integrator.ts';
import { AuditStorage } from '../src/audit/storage.ts';
import { LEAF_LOOKUP_EPOCH, leafPrefix } from '../src/audit/leaf-lookup.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { storeBackends } from './helpers/store-backends.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-audit-migration-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');
const entryOf = (id: string) => Buffer.from(`{"id":"${id}","kind":"test"}`);
/** Odd counts so that the old log ends in partial tiles and a partial bundle. */
const OLD_INTEGRATED = 300;
const OLD_QUEUED = 77;
const NEW_JOURNALED = 40;

async function migrateTo(store: Store, name: string, schema: string | undefined): Promise<void> {
  const migrator = new Migrator({ db: store.db, provider: migrationProvider(store.dialect), ...(schema ? { migrationTableSchema: schema } : {}) });
  const { error } = await migrator.migrateTo(name);
  if (error) throw error;
}

/**
 * Writes what the previous version left behind, on the `0004_metering` schema: `OLD_INTEGRATED`
 * entries integrated the old way (tiles, bundles, hex index rows, `integrated_size`, no checkpoint
 * yet) and `OLD_QUEUED` more entries queued without a leaf hash.
 */
async function writeOldLog(store: Store): Promise<string[]> {
  const ids: string[] = [];
  const t = new TileIntegrator({ hasher: nodeTreeHasher });
  const index: Array<{ entry_id: string; idx: number; leaf_hash: string }> = [];
  for (let i = 0; i < OLD_INTEGRATED; i++) {
    const id = `old_${i}`;
    ids.push(id);
    const r = t.appendEntry(entryOf(id));
    index.push({ entry_id: id, idx: Number(r.index), leaf_hash: hex(r.leafHash) });
  }
  const f = t.flush();
  const db = store.db as unknown as import('kysely').Kysely<any>;
  for (const x of f.tiles) await db.insertInto('audit_tiles').values({ level: x.level, idx: Number(x.index), width: x.width, data: Buffer.from(x.data) }).execute();
  for (const b of f.bundles) await db.insertInto('audit_bundles').values({ idx: Number(b.index), width: b.width, data: Buffer.from(b.data) }).execute();
  await db.insertInto('audit_index').values(index).execute();
  await db.insertInto('audit_meta').values({ key: 'integrated_size', value: String(OLD_INTEGRATED) }).execute();
  for (let i = 0; i < OLD_QUEUED; i++) {
    const id = `queued_${i}`;
    ids.push(id);
    await db.insertInto('audit_queue').values({ entry_id: id, entry: entryOf(id), created_at: 1 }).execute();
  }
  return ids;
}

const backends = storeBackends(tmpRoot);

for (const backend of backends) {
  describe(`migrations 0005_audit_leaf_hash and 0006_audit_leaf_lookup on ${backend.name}`, () => {
    after(() => backend.cleanup());

    test('converts hex index rows, integrates old queue rows by hashing them, and the log verifies', async () => {
      const { store, schema } = await backend.open();
      try {
        await migrateTo(store, '0004_metering', schema);
        const oldIds = await writeOldLog(store);
        await migrateTo(store, '0005_audit_leaf_hash', schema);

        const raw = store.db as unknown as import('kysely').Kysely<any>;
        // every old index row is now the 32-byte leaf hash of its entry
        const idx = await raw.selectFrom('audit_index').select(['entry_id', 'idx', 'leaf_hash']).orderBy('idx').execute();
        assert.equal(idx.length, OLD_INTEGRATED);
        for (const r of idx) {
          assert.ok(r.leaf_hash instanceof Uint8Array && r.leaf_hash.length === 32, `index row ${r.idx} holds 32 bytes`);
          assert.equal(hex(r.leaf_hash), hex(nodeTreeHasher.hashLeaf(entryOf(r.entry_id))));
        }
        // the old queue rows have no leaf hash
        const q = await raw.selectFrom('audit_queue').select(['entry_id', 'leaf_hash']).execute();
        assert.equal(q.length, OLD_QUEUED);
        for (const r of q) assert.equal(r.leaf_hash, null);

        // the journal of this version stores LH(entry) with each new entry
        const journal = new Journal(store);
        const newIds = Array.from({ length: NEW_JOURNALED }, (_, i) => `new_${i}`);
        const leaves = await Promise.all(newIds.map((id) => journal.write({ entry: { id, bytes: entryOf(id) } })));
        await journal.close();
        const stored = await raw.selectFrom('audit_queue').select(['entry_id', 'leaf_hash']).where('entry_id', 'like', 'new_%').execute();
        assert.equal(stored.length, NEW_JOURNALED);
        for (const r of stored) assert.equal(hex(r.leaf_hash), hex(nodeTreeHasher.hashLeaf(entryOf(r.entry_id))));
        assert.equal(leaves[0], Buffer.from(nodeTreeHasher.hashLeaf(entryOf('new_0'))).toString('base64'));

        // 0006: the old index rows become lookup rows (in SQL on both dialects), audit_index keeps ids only
        await store.migrate();
        const lookup = await raw.selectFrom('audit_leaf_lookup').select(['epoch', 'prefix', 'idx']).orderBy('idx').execute();
        assert.equal(lookup.length, OLD_INTEGRATED);
        for (const r of lookup) {
          const i = Number(r.idx);
          assert.equal(Number(r.epoch), Math.floor(i / LEAF_LOOKUP_EPOCH));
          assert.equal(Number(r.prefix), leafPrefix(nodeTreeHasher.hashLeaf(entryOf(`old_${i}`))), `prefix of index row ${i}`);
        }
        assert.deepEqual(Object.keys((await raw.selectFrom('audit_index').selectAll().limit(1).execute())[0]!).sort(), ['entry_id', 'idx']);

        // integrate everything: old rows (hashed by the integrator) and new ones (stored hash)
        const log = await AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(4).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 50, logger: createLogger('silent') });
        const cp = await log.drain();
        await log.close();
        const total = OLD_INTEGRATED + OLD_QUEUED + NEW_JOURNALED;
        assert.equal(cp.size, BigInt(total));

        const storage = new AuditStorage(store);
        const all = [...oldIds, ...newIds];
        for (let i = 0; i < all.length; i += 17) {
          const id = all[i]!;
          assert.equal(await storage.indexOf(id), BigInt(i), `index of ${id}`);
          assert.equal(await storage.indexOfLeafHash(hex(nodeTreeHasher.hashLeaf(entryOf(id)))), BigInt(i), `leaf_hash lookup of ${id}`);
        }
        assert.equal(await storage.indexOfLeafHash('00'.repeat(32)), undefined);
        assert.equal(await storage.indexOfLeafHash(hex(nodeTreeHasher.hashLeaf(entryOf('old_1'))).toUpperCase()), undefined, 'uppercase hex matches nothing');
        assert.equal(await storage.indexOfLeafHash('zz'), undefined);

        // an auditor's full check: root from the tiles, every full tile against its parent, every
        // bundle entry against its level-0 hash — a wrong stored leaf hash would fail here
        const checkpoint = openCheckpoint(cp.note, [log.verifier()], { origin: log.origin }).checkpoint;
        const seen: string[] = [];
        const report = await verifyLogFromTiles(checkpoint, storage, {
          mode: 'full',
          entries: true,
          hasher: nodeTreeHasher,
          onEntry: (_i, e) => void seen.push(JSON.parse(Buffer.from(e).toString('utf8')).id),
        });
        assert.equal(report.entriesVerified, BigInt(total));
        assert.deepEqual(seen, all);
        const rows = await raw
          .selectFrom('audit_index')
          .innerJoin('audit_leaf_lookup', 'audit_leaf_lookup.idx', 'audit_index.idx')
          .select(['entry_id', 'prefix', 'epoch', 'audit_index.idx as idx'])
          .execute();
        assert.equal(rows.length, total);
        for (const r of rows) {
          assert.equal(Number(r.prefix), leafPrefix(nodeTreeHasher.hashLeaf(entryOf(r.entry_id))));
          assert.equal(Number(r.epoch), Math.floor(Number(r.idx) / LEAF_LOOKUP_EPOCH));
        }
        assert.equal((await raw.selectFrom('audit_queue').select('seq').execute()).length, 0);

        // rolling 0006 back restores the 32-byte hashes from the level-0 tiles, for every entry
        await migrateTo(store, '0005_audit_leaf_hash', schema);
        const restored = await raw.selectFrom('audit_index').select(['entry_id', 'leaf_hash']).execute();
        assert.equal(restored.length, total);
        for (const r of restored) assert.equal(hex(r.leaf_hash), hex(nodeTreeHasher.hashLeaf(entryOf(r.entry_id))), `restored hash of ${r.entry_id}`);

        // rolling 0005 back restores lowercase hex text (and the old queue shape)
        await migrateTo(store, '0004_metering', schema);
        const back = await raw.selectFrom('audit_index').select(['entry_id', 'leaf_hash']).orderBy('idx').limit(3).execute();
        for (const r of back) assert.equal(r.leaf_hash, hex(nodeTreeHasher.hashLeaf(entryOf(r.entry_id))));
        await store.migrate();
        assert.equal(await storage.indexOfLeafHash(hex(nodeTreeHasher.hashLeaf(entryOf('new_3')))), BigInt(OLD_INTEGRATED + OLD_QUEUED + 3));
      } finally {
        await store.close();
      }
    });
  });
}
