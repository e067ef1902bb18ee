/**
 * Request rows and commitment salts that wait in the audit queue until integration (migration
 * `0007_audit_queue_rows`, `src/audit/queued-rows.ts`), on SQLite and (with SOVRA_TEST_POSTGRES_URL)
 * PostgreSQL:
 * - a data-plane journal item is one queue row carrying its row and salt; `requests` and
 *   `audit_secrets` get them in the integration transaction, with every column's value and type intact;
 * - an erasure made while the entry is still queued holds: the salt never reaches `audit_secrets`;
 * - a queued row whose id is already in `requests` does not stop the log;
 * - migration 0007 `down` moves whatever is still queued to the tables, and `up` again works.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Migrator, type Kysely } from 'kysely';
import type { Store } from '../src/store/db.ts';
import { migrationProvider } from '../src/store/migrations.ts';
import { Journal } from '../src/audit/journal.ts';
import { AuditLog } from '../src/audit/integrator.ts';
import { AuditStorage } from '../src/audit/storage.ts';
import { eraseEntry } from '../src/audit/cli.ts';
import { freshSalt } from '../src/audit/record.ts';
import { normalise } from '../src/store/requests.ts';
import { newRequestId } from '../src/http/request-id.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { storeBackends } from './helpers/store-backends.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-queued-rows-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

const digests = { alg: 'hmac-sha256' as const, request: 'a'.repeat(64), response: 'b'.repeat(64) };

/** A row with every column set, odd values included (unicode, nulls, a big cost, stream on/off). */
function row(id: string, i: number): RequestsTable {
  return {
    id,
    ts: 1_750_000_000_000 + i,
    key_id: i % 3 === 0 ? null : `key_${i}`,
    tenant_id: 'ministère-ü',
    operation: i % 2 ? 'chat.completions' : 'embeddings',
    model: 'm "quoted" \\ back',
    backend_id: 'b',
    upstream_model: null,
    stream: i % 2,
    status: i % 5 === 0 ? 502 : 200,
    outcome: i % 5 === 0 ? 'upstream_error' : 'ok',
    error_code: i % 5 === 0 ? 'bad_gateway' : null,
    latency_ms: 3 + i,
    ttfb_ms: i % 4 === 0 ? null : 1,
    prompt_tokens: 10 * i,
    completion_tokens: null,
    total_tokens: 10 * i,
    usage_source: 'upstream',
    cost_micros: 9_007_199_254_740 + i,
  };
}

async function migrateTo(store: Store, name: string, schema: string | undefined): Promise<void> {
  const migrator = new Migrator({ db: store.db, provider: migrationProvider(store.dialect), ...(schema ? { migrationTableSchema: schema } : {}) });
  const { error } = await migrator.migrateTo(name);
  if (error) throw error;
}

const count = async (db: Kysely<any>, table: string) => Number(((await db.selectFrom(table).select(db.fn.countAll().as('n')).executeTakeFirst()) as { n: unknown }).n);
const openLog = (store: Store) =>
  AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(4).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 100, logger: createLogger('silent') });

for (const backend of storeBackends(tmpRoot)) {
  describe(`request rows and salts queued with their entries on ${backend.name}`, () => {
    after(() => backend.cleanup());

    test('one queue row per item; integration moves row and salt intact; an erasure before integration holds; a duplicate id does not stop the log', async () => {
      const { store } = await backend.open();
      const db = store.db as unknown as Kysely<any>;
      try {
        await store.migrate();
        const journal = new Journal(store);
        const ids = Array.from({ length: 250 }, () => newRequestId());
        const salts = ids.map(() => freshSalt());
        await Promise.all(ids.map((id, i) => journal.write({ request: row(id, i), requestEntry: { tenant: 't', commitments: digests }, salt: { id, salt: salts[i]! } })));
        // committed: only queue rows, carrying row and salt
        assert.equal(await count(db, 'audit_queue'), 250);
        assert.equal(await count(db, 'requests'), 0);
        assert.equal(await count(db, 'audit_secrets'), 0);
        const storage = new AuditStorage(store);
        assert.deepEqual(Buffer.from((await storage.saltOf(ids[3]!))!), Buffer.from(salts[3]!), 'a queued salt can be read (to open a commitment)');

        // erase one entry while it is still queued; erasing again fails
        const erasedId = ids[10]!;
        await eraseEntry(store, erasedId);
        assert.equal(await storage.saltOf(erasedId), undefined);
        await assert.rejects(eraseEntry(store, erasedId), /no commitment salt/);

        // a row with the id of a queued one reaches `requests` first (cannot happen with gateway ids)
        const dupId = ids[20]!;
        await db.insertInto('requests').values(normalise({ ...row(dupId, 20), model: 'first' })).execute();

        const log = await openLog(store);
        const cp = await log.drain();
        await log.close();
        assert.equal(cp.size, 251n, '250 requests and the erasure entry, the duplicate included');
        assert.equal(await count(db, 'audit_queue'), 0);
        assert.equal(await count(db, 'requests'), 250);
        assert.equal(await count(db, 'audit_secrets'), 249, 'every salt but the erased one');
        assert.equal(await storage.saltOf(erasedId), undefined, 'the erasure made before integration holds');
        assert.deepEqual(Buffer.from((await storage.saltOf(ids[3]!))!), Buffer.from(salts[3]!));
        const dup = await db.selectFrom('requests').select('model').where('id', '=', dupId).executeTakeFirstOrThrow();
        assert.equal(dup.model, 'first', 'the row already there is kept');

        // every column, value and type as written (PostgreSQL returns bigint columns as strings)
        const stored = await db.selectFrom('requests').selectAll().where('id', '!=', dupId).orderBy('ts').execute();
        const expected = ids.map((id, i) => normalise(row(id, i))).filter((r) => r.id !== dupId);
        const asNumbers = (r: Record<string, unknown>) => ({ ...r, ts: Number(r['ts']), cost_micros: r['cost_micros'] === null ? null : Number(r['cost_micros']) });
        assert.deepEqual(stored.map(asNumbers), expected);
        assert.equal(typeof stored[0]!.status, 'number');
        await journal.close();
      } finally {
        await store.close();
      }
    });

    test('a gateway started with the audit log off releases queued rows and salts; the entries stay queued and integrate later', async () => {
      const { store } = await backend.open();
      const db = store.db as unknown as Kysely<any>;
      try {
        await store.migrate();
        const journal = new Journal(store);
        const ids = Array.from({ length: 12 }, () => newRequestId());
        await Promise.all(ids.map((id, i) => journal.write({ request: row(id, i), requestEntry: { tenant: null, commitments: digests }, salt: { id, salt: freshSalt() } })));
        await journal.close();
        const storage = new AuditStorage(store);
        assert.equal(await storage.releaseQueuedRows(), 12);
        assert.equal(await storage.releaseQueuedRows(), 0, 'nothing left to release');
        assert.equal(await count(db, 'requests'), 12);
        assert.equal(await count(db, 'audit_secrets'), 12);
        assert.equal(await count(db, 'audit_queue'), 12, 'the entries stay queued');
        const log = await openLog(store);
        assert.equal((await log.drain()).size, 12n);
        await log.close();
        assert.equal(await count(db, 'requests'), 12, 'integration does not write them twice');
        assert.equal(await count(db, 'audit_secrets'), 12);
      } finally {
        await store.close();
      }
    });

    test('migration 0007 down moves what is still queued to the tables; up again', async () => {
      const { store, schema } = await backend.open();
      const db = store.db as unknown as Kysely<any>;
      try {
        await store.migrate();
        const journal = new Journal(store);
        const ids = Array.from({ length: 30 }, () => newRequestId());
        await Promise.all(ids.map((id, i) => journal.write({ request: row(id, i), requestEntry: { tenant: null, commitments: digests }, salt: { id, salt: freshSalt() } })));
        await journal.close();
        await migrateTo(store, '0006_audit_leaf_lookup', schema);
        assert.equal(await count(db, 'requests'), 30);
        assert.equal(await count(db, 'audit_secrets'), 30);
        assert.equal(await count(db, 'audit_queue'), 30, 'the entries stay queued');
        const cols = Object.keys((await db.selectFrom('audit_queue').selectAll().limit(1).executeTakeFirstOrThrow()) as object).sort();
        assert.deepEqual(cols, ['created_at', 'entry', 'entry_id', 'leaf_hash', 'seq']);
        await store.migrate();
        const log = await openLog(store);
        assert.equal((await log.drain()).size, 30n, 'the entries integrate after the round trip');
        await log.close();
        assert.equal(await count(db, 'requests'), 30);
      } finally {
        await store.close();
      }
    });
  });
}
