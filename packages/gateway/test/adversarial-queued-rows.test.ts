/**
 * Adversarial tests of commit f21aba9: a data-plane request is ONE `audit_queue` row carrying the
 * entry, its `requests` row (`audit_queue.req_*`; JSON / jsonb until the columns replaced it) and its salt (`audit_queue.salt`),
 * and the integrator moves row and salt to `requests` / `audit_secrets` in SQL inside the transaction
 * that integrates the entry (`src/audit/queued-rows.ts`, `AuditStorage.commitIntegration`, migration
 * 0007). Run on SQLite and, with SOVRA_TEST_POSTGRES_URL, on PostgreSQL. What is attacked:
 *
 * - fidelity: a row that went through the queue (at first JSON with `json_extract` / `jsonb ->>` casts, now typed `req_*` columns) must equal the row
 *   the audit-off path writes directly (seeded nasty strings: quotes, backslashes, control and
 *   astral characters, NUL, '' vs null; integers at the int4 / 2^53 edges; stream 0/1), and a row the
 *   direct path rejects must be rejected by the queued path too;
 * - erasure vs integration: an erasure between the integrator's read and its transaction, erasures
 *   interleaved with many small rounds (PostgreSQL: truly concurrent), and on PostgreSQL both lock
 *   orders held by hand (erase waiting for the move; the move waiting for the erase). An erased
 *   salt must never reach `audit_secrets`, and no erasure may fail;
 * - a round that fails after the move (trigger on `integrated_size`), also in the second chunk of a
 *   round: nothing moved twice, the rest stays queued, and the next round completes;
 * - non-contiguous seqs (rows renumbered with gaps, rows queued by another connection in between),
 *   small batches, and on SQLite the in-memory QueueTail;
 * - a standby integrator whose round overlaps the lease holder's;
 * - migration 0007 down/up with queued payloads, an erased queued salt and a duplicate row;
 * - the gateway end to end (store worker on SQLite, PostgreSQL): erasures from another connection
 *   while requests are in flight; `/admin/v1/usage` right after `gw.flush()`.
 *
 * Regressions (bugs this review found, now fixed; each test's comment tells the story):
 * - PostgreSQL: an accepted row whose integer does not fit the column (e.g. an upstream reporting
 *   prompt 2e9 + completion 2e9 without total: total_tokens 4e9 > int4) was cast only by the move,
 *   so every later integration round failed. Fixed: `readUsage` ignores a sum beyond the limit, and
 *   `normalise` refuses out-of-range integers at write time (that request: 503, as before the change);
 * - a duplicate request id was no longer rejected by the journal (the `requests` primary key is not
 *   in its transaction any more), and its second queue row then failed every round on
 *   `audit_index`. Fixed: the second entry is integrated (the tree may hold duplicated entries) and
 *   the id index keeps the first; the `requests` row keeps the first;
 * - (older than f21aba9) `eraseEntry`'s existence check read the index, then the queue, in two
 *   statements: integration in between made a valid erasure fail. Fixed: queue first.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Migrator, sql, type Kysely } from 'kysely';
import pg from 'pg';
import { openStore, type Store } from '../src/store/db.ts';
import { migrationProvider } from '../src/store/migrations.ts';
import { Journal, type JournalItem } from '../src/audit/journal.ts';
import { AuditLog, type AuditLogOptions } from '../src/audit/integrator.ts';
import { AuditStorage, type IntegrationCommit } from '../src/audit/storage.ts';
import { QueueTail } from '../src/audit/queue-tail.ts';
import { moveQueuedRowsSql } from '../src/audit/queued-rows.ts';
import { eraseEntry } from '../src/audit/cli.ts';
import { freshSalt } from '../src/audit/record.ts';
import { normalise } from '../src/store/requests.ts';
import { newRequestId } from '../src/http/request-id.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { createAdmin } from '../src/tenancy/index.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { chatCompletion, jsonResponse, startMockUpstream } from './helpers/mock-upstream.ts';
import { MOCK_ENV, mockConfig, startGateway } from './helpers/gateway.ts';
import { rng } from './helpers/prng.ts';
import { storeBackends } from './helpers/store-backends.ts';

const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-adv-qrows-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));
const pgUrl = process.env['SOVRA_TEST_POSTGRES_URL'];
const logger = createLogger('silent');
const digests = { alg: 'hmac-sha256' as const, request: 'c'.repeat(64), response: 'd'.repeat(64) };

// ----- helpers ------------------------------------------------------------------------------------

/** A plain, valid row. */
function plainRow(id: string, i: number, o: Partial<RequestsTable> = {}): RequestsTable {
  return {
    id, ts: 1_760_000_000_000 + i, key_id: `k${i % 7}`, tenant_id: 't', operation: 'chat.completions', model: `m${i % 3}`, backend_id: 'b',
    upstream_model: null, stream: i % 2, status: 200, outcome: 'ok', error_code: null, latency_ms: i, ttfb_ms: null,
    prompt_tokens: i, completion_tokens: 1, total_tokens: i + 1, usage_source: 'upstream', cost_micros: 1000 + i, ...o,
  };
}

const queuedItem = (row: RequestsTable, salt: Uint8Array = freshSalt()): JournalItem => ({ request: row, requestEntry: { tenant: null, commitments: digests }, salt: { id: row.id, salt } });

/** Pieces of nasty strings: JSON escapes, SQL and JSON-path look-alikes, control, astral, BOM, NUL. */
const PIECES = [
  'a', 'Z', ' ', '"', '\\', '/', "'", '\n', '\r', '\t', '\b', '\f', '\u0001', '\u001f', '\u007f', 'é', 'ß', '\u2028', '\u2029',
  '\ufeff', '\uffff', '😀', '𝔘', '中', '$', '.', '$.id', '[0]', 'null', 'true', '1e3', '-0', '{}', '[]', '\\u0041', '%', '_', "'); --",
];
const INT4 = [0, 1, -1, 2_147_483_647, -2_147_483_648, 200, 65_535];
const INT8 = [0, 1, -1, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 53 - 2, 1_760_000_000_000, 9_007_199_254_740];
/** Times the entry's RFC 3339 `time` can spell (the record refuses others, on both paths' entry). */
const TIMES = [0, 1, 1_760_000_000_000, 253_402_300_799_999];

/** A row with seeded nasty values (all within the column types of both dialects). `nul` adds a NUL. */
function nastyRow(id: string, r: () => number, nul: boolean): RequestsTable {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const str = (): string => {
    const n = Math.floor(r() * 6);
    let s = '';
    for (let i = 0; i < n; i++) s += pick(PIECES);
    return s;
  };
  const opt = (): string | null => (r() < 0.25 ? null : r() < 0.2 ? '' : str());
  const int4 = (): number => (r() < 0.5 ? pick(INT4) : Math.floor(r() * 2 ** 32) - 2 ** 31);
  const optInt = (): number | null => (r() < 0.2 ? null : int4());
  const row: RequestsTable = {
    id, ts: pick(TIMES), key_id: opt(), tenant_id: opt(), operation: str(), model: opt(), backend_id: opt(), upstream_model: opt(),
    stream: r() < 0.5 ? 1 : 0, status: int4(), outcome: str(), error_code: opt(), latency_ms: Math.abs(int4() % 2_147_483_647), ttfb_ms: optInt(),
    prompt_tokens: optInt(), completion_tokens: optInt(), total_tokens: optInt(), usage_source: str(), cost_micros: r() < 0.2 ? null : pick(INT8),
  };
  if (nul) row.model = `${row.model ?? ''}\u0000x`;
  return row;
}

async function migrateTo(store: Store, name: string, schema: string | undefined): Promise<void> {
  const migrator = new Migrator({ db: store.db, provider: migrationProvider(store.dialect), ...(schema ? { migrationTableSchema: schema } : {}) });
  const { error } = await migrator.migrateTo(name);
  if (error) throw error;
}

const anyDb = (s: Store) => s.db as unknown as Kysely<any>;
const count = async (s: Store, table: string, where?: [string, unknown]) => {
  let q = anyDb(s).selectFrom(table).select(anyDb(s).fn.countAll().as('n'));
  if (where) q = q.where(where[0], '=', where[1]);
  return Number(((await q.executeTakeFirst()) as { n: unknown }).n);
};
const secretIds = async (s: Store) => new Set((await anyDb(s).selectFrom('audit_secrets').select('entry_id').execute()).map((r) => r.entry_id as string));
const rowsById = async (s: Store) => new Map((await anyDb(s).selectFrom('requests').selectAll().execute()).map((r) => [r.id as string, r as Record<string, unknown>]));
/** A stored row as plain values (PostgreSQL returns bigint columns as strings). */
const plain = (r: Record<string, unknown>) => ({ ...r, ts: Number(r['ts']), cost_micros: r['cost_micros'] === null ? null : Number(r['cost_micros']) });

function openLog(store: Store, o: Partial<AuditLogOptions> & { keyFile?: string } = {}): Promise<AuditLog> {
  return AuditLog.open(store, { keyFile: join(tmpRoot, `k-${randomBytes(5).toString('hex')}`), env: {}, intervalMs: 3_600_000, batchMax: 1000, logger, ...o });
}

/** A second connection (pool) to the same database as `store`. */
async function secondConnection(store: Store, schema: string | undefined): Promise<Store> {
  if (store.sqlite) return openStore(`sqlite:${store.sqlite.name}`);
  return openStore(pgUrl!, { pgSchema: schema! });
}

/** Makes the transaction that sets `integrated_size` to `value` ('*' = any) fail, after the move. */
async function failIntegrationAt(store: Store, value: string): Promise<() => Promise<void>> {
  if (store.sqlite) {
    const cond = `NEW.key = 'integrated_size'${value === '*' ? '' : ` AND NEW.value = '${value}'`}`;
    store.sqlite.exec(`CREATE TRIGGER adv_fail_i BEFORE INSERT ON audit_meta WHEN ${cond} BEGIN SELECT RAISE(ABORT, 'adv: forced failure after the move'); END`);
    store.sqlite.exec(`CREATE TRIGGER adv_fail_u BEFORE UPDATE ON audit_meta WHEN ${cond} BEGIN SELECT RAISE(ABORT, 'adv: forced failure after the move'); END`);
    return async () => void store.sqlite!.exec('DROP TRIGGER adv_fail_i; DROP TRIGGER adv_fail_u');
  }
  await sql
    .raw(
      `CREATE OR REPLACE FUNCTION adv_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
         IF NEW.key = 'integrated_size' AND (TG_ARGV[0] = '*' OR NEW.value = TG_ARGV[0]) THEN RAISE EXCEPTION 'adv: forced failure after the move'; END IF;
         RETURN NEW; END $$`,
    )
    .execute(store.db);
  await sql.raw(`CREATE TRIGGER adv_fail BEFORE INSERT OR UPDATE ON audit_meta FOR EACH ROW EXECUTE FUNCTION adv_fail('${value}')`).execute(store.db);
  return async () => void (await sql.raw('DROP TRIGGER adv_fail ON audit_meta').execute(store.db));
}

const settle = <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e: e as Error }));

// ----- unit level, both dialects ------------------------------------------------------------------

for (const backend of storeBackends(tmpRoot)) {
  const pgOnly = { skip: backend.name !== 'postgres' && 'PostgreSQL only' };
  describe(`queued request rows and salts, adversarially, on ${backend.name}`, () => {
    after(() => backend.cleanup());

    async function fresh(): Promise<{ store: Store; schema?: string }> {
      const o = await backend.open();
      await o.store.migrate();
      return o;
    }

    test('fidelity: a moved row equals the row the audit-off path writes (seeded nasty values); acceptance is the same', async () => {
      const { store } = await fresh();
      try {
        const journal = new Journal(store);
        const r = rng(0x51ab);
        const pairs: Array<{ direct: string; queued: string; row: RequestsTable; directOk: boolean; queuedOk: boolean }> = [];
        for (let i = 0; i < 80; i++) {
          const row = nastyRow('x', r, i % 10 === 9);
          const direct = newRequestId();
          const queued = newRequestId();
          const [d, q] = await Promise.all([settle(journal.write({ request: { ...row, id: direct } })), settle(journal.write(queuedItem({ ...row, id: queued })))]);
          pairs.push({ direct, queued, row, directOk: d.ok, queuedOk: q.ok });
        }
        for (const p of pairs) assert.equal(p.queuedOk, p.directOk, `accepted by one path only: ${JSON.stringify(p.row)}`);
        // PostgreSQL refuses NUL in text (and jsonb refuses \u0000): both paths reject those 8 rows; SQLite keeps them
        assert.equal(pairs.filter((p) => !p.directOk).length, backend.name === 'postgres' ? 8 : 0);
        const log = await openLog(store);
        await log.drain();
        await log.close();
        assert.equal(await count(store, 'audit_queue'), 0);
        const rows = await rowsById(store);
        for (const p of pairs.filter((x) => x.directOk)) {
          const a = rows.get(p.direct);
          const b = rows.get(p.queued);
          assert.ok(a && b, 'both rows stored');
          assert.deepEqual({ ...b, id: '' }, { ...a, id: '' }, `queued row differs from the direct one for ${JSON.stringify(p.row)}`);
          for (const k of Object.keys(a)) assert.equal(typeof b[k], typeof a[k], `type of ${k}`);
          assert.deepEqual(plain({ ...b, id: 'x' }), normalise(p.row), 'and equals the normalised row');
        }
        await journal.close();
      } finally {
        await store.close();
      }
    });

    test('an erasure made after the integrator read the queue, before its transaction, holds (eraseEntry and deleteSalt, other connection)', async () => {
      const { store, schema } = await fresh();
      const other = await secondConnection(store, schema);
      try {
        const journal = new Journal(store);
        const ids = Array.from({ length: 40 }, () => newRequestId());
        await Promise.all(ids.map((id, i) => journal.write(queuedItem(plainRow(id, i)))));
        const log = await openLog(store, { batchMax: 16 });
        const erased = new Set<string>();
        const orig = log.storage.commitIntegration.bind(log.storage);
        let calls = 0;
        log.storage.commitIntegration = async (c: IntegrationCommit) => {
          // rows of this chunk were read already; erase one of them (and one of a later chunk) now
          const inChunk = ids.find((id) => c.index.some(([e]) => e === id) && !erased.has(id));
          if (inChunk && calls++ % 2 === 0) {
            erased.add(inChunk);
            await eraseEntry(other, inChunk);
          } else if (inChunk) {
            erased.add(inChunk);
            assert.equal(await new AuditStorage(other).deleteSalt(inChunk), true, 'deleteSalt finds the queued salt');
          }
          return orig(c);
        };
        await log.drain();
        await log.close();
        assert.ok(erased.size >= 3);
        const secrets = await secretIds(store);
        for (const id of ids) assert.equal(secrets.has(id), !erased.has(id), `salt of ${id} (erased: ${erased.has(id)})`);
        for (const id of erased) assert.equal(await new AuditStorage(store).saltOf(id), undefined);
        assert.equal(await count(store, 'requests'), 40);
        assert.equal(await count(store, 'audit_queue'), 0, 'erasure entries integrated too');
        await journal.close();
      } finally {
        await other.close();
        await store.close();
      }
    });

    for (const withTail of backend.name === 'sqlite' ? [false, true] : [false]) {
      test(`a round failing after the move (also in its second chunk) moves nothing twice, keeps the rest queued; the next completes${withTail ? ' (QueueTail)' : ''}`, async () => {
        const { store } = await fresh();
        try {
          const tail = withTail ? new QueueTail() : undefined;
          const journal = new Journal(store, tail ? { tail } : {});
          const ids = Array.from({ length: 300 }, () => newRequestId());
          const src = ids.map((id, i) => plainRow(id, i));
          await Promise.all(src.map((row) => journal.write(queuedItem(row))));
          const log = await openLog(store, tail ? { tail } : {});
          // chunk 1 (256 entries, a full tile) commits; chunk 2 fails after its move
          let undo = await failIntegrationAt(store, '300');
          await assert.rejects(log.drain(), /forced failure/);
          assert.equal(await count(store, 'requests'), 256);
          assert.equal(await count(store, 'audit_secrets'), 256);
          assert.equal(await count(store, 'audit_queue'), 44);
          await undo();
          // every round fails now; an erasure of a still-queued entry meanwhile
          undo = await failIntegrationAt(store, '*');
          const victim = ids[290]!;
          await eraseEntry(store, victim);
          for (let i = 0; i < 3; i++) await assert.rejects(log.integrateNow(), /forced failure/);
          assert.equal(await count(store, 'requests'), 256);
          assert.equal(await count(store, 'audit_queue'), 45);
          await undo();
          const cp = await log.drain();
          await log.close();
          assert.equal(cp.size, 301n);
          assert.equal(await count(store, 'audit_queue'), 0);
          assert.equal(await count(store, 'requests'), 300);
          assert.equal(await count(store, 'audit_secrets'), 299);
          assert.equal((await secretIds(store)).has(victim), false, 'the erasure made while rounds failed holds');
          const rows = await rowsById(store);
          assert.deepEqual(ids.map((id) => plain(rows.get(id)!)), src.map(normalise));
          await journal.close();
        } finally {
          await store.close();
        }
      });
    }

    for (const withTail of backend.name === 'sqlite' ? [false, true] : [false]) {
      test(`non-contiguous seqs: rows queued by another connection in between, renumbered with gaps, small batches${withTail ? ' (QueueTail)' : ''}`, async () => {
        const { store, schema } = await fresh();
        const other = await secondConnection(store, schema);
        try {
          const tail = withTail ? new QueueTail(16) : undefined;
          const journal = new Journal(store, { minIntervalMs: 0, ...(tail ? { tail } : {}) });
          const r = rng(0x9e37);
          const src: RequestsTable[] = [];
          const erased = new Set<string>();
          for (let k = 0; k < 12; k++) {
            const batch = Array.from({ length: 1 + Math.floor(r() * 9) }, (_, i) => plainRow(newRequestId(), src.length + i, { model: `g${k}` }));
            src.push(...batch);
            await Promise.all(batch.map((row) => journal.write(queuedItem(row))));
            // another connection queues an erasure entry between our batches (a gap in our seqs)
            const victim = src[Math.floor(r() * src.length)]!.id;
            if (!erased.has(victim)) {
              await eraseEntry(other, victim);
              erased.add(victim);
            }
          }
          // renumber half of the rows far away: runs of seqs with holes
          await sql.raw('UPDATE audit_queue SET seq = seq * 5 + 1000000 WHERE seq % 2 = 0').execute(store.db);
          const queued = await count(store, 'audit_queue');
          const log = await openLog(store, { batchMax: 7, ...(tail ? { tail } : {}) });
          // more rows from our journal after the renumbering (tail pushes continue)
          const late = Array.from({ length: 9 }, (_, i) => plainRow(newRequestId(), 1000 + i));
          src.push(...late);
          await Promise.all(late.map((row) => journal.write(queuedItem(row))));
          const cp = await log.drain();
          await log.close();
          assert.equal(cp.size, BigInt(queued + late.length));
          assert.equal(await count(store, 'audit_queue'), 0);
          const rows = await rowsById(store);
          assert.equal(rows.size, src.length);
          for (const row of src) assert.deepEqual(plain(rows.get(row.id)!), normalise(row));
          const secrets = await secretIds(store);
          for (const row of src) assert.equal(secrets.has(row.id), !erased.has(row.id));
          await journal.close();
        } finally {
          await other.close();
          await store.close();
        }
      });
    }

    test('a standby integrator whose round overlaps the holder\'s: the late commit fails, nothing is moved twice, an erasure in between holds', async () => {
      const { store, schema } = await fresh();
      const other = await secondConnection(store, schema);
      try {
        const journal = new Journal(store);
        const ids = Array.from({ length: 20 }, () => newRequestId());
        await Promise.all(ids.map((id, i) => journal.write(queuedItem(plainRow(id, i)))));
        const keyFile = join(tmpRoot, `shared-${randomBytes(4).toString('hex')}`);
        const a = await openLog(store, { keyFile });
        const b = await openLog(other, { keyFile }); // standby: a holds the lease
        const victim = ids[5]!;
        const orig = a.storage.commitIntegration.bind(a.storage);
        let once = true;
        a.storage.commitIntegration = async (c: IntegrationCommit) => {
          if (once) {
            once = false;
            // a pauses past its lease: b takes over, integrates everything; the victim is erased after the move
            await sql.raw("UPDATE audit_meta SET value = 'paused 0' WHERE key = 'integrator_lease'").execute(store.db);
            assert.equal((await b.drain()).size, 20n);
            await eraseEntry(other, victim);
          }
          return orig(c);
        };
        await assert.rejects(a.drain(), 'the overlapping commit fails');
        assert.equal(await count(store, 'requests'), 20);
        assert.equal(await count(store, 'audit_secrets'), 19);
        assert.equal((await secretIds(store)).has(victim), false);
        assert.equal(await a.integrateNow(), false, 'a is a standby now');
        assert.equal((await b.drain()).size, 21n, 'b integrates the erasure entry');
        await a.close();
        await b.close();
        await journal.close();
      } finally {
        await other.close();
        await store.close();
      }
    });

    test('migration 0007 down/up with queued payloads, an erased queued salt and a row already in requests', async () => {
      const { store, schema } = await fresh();
      try {
        const journal = new Journal(store);
        const ids = Array.from({ length: 12 }, () => newRequestId());
        const src = ids.map((id, i) => nastyRow(id, rng(i + 1), false));
        await Promise.all(src.map((row) => journal.write(queuedItem(row))));
        await journal.close();
        await eraseEntry(store, ids[0]!);
        await anyDb(store).insertInto('requests').values(normalise({ ...src[1]!, model: 'first' })).execute();
        await migrateTo(store, '0006_audit_leaf_lookup', schema);
        assert.equal(await count(store, 'requests'), 12);
        assert.equal((await secretIds(store)).has(ids[0]!), false, 'down does not resurrect an erased salt');
        assert.equal(await count(store, 'audit_secrets'), 11);
        await store.migrate();
        await migrateTo(store, '0006_audit_leaf_lookup', schema); // nothing queued with payloads now
        await store.migrate();
        const log = await openLog(store);
        assert.equal((await log.drain()).size, 13n);
        await log.close();
        const rows = await rowsById(store);
        assert.equal(rows.get(ids[1]!)!['model'], 'first');
        for (let i = 2; i < 12; i++) assert.deepEqual(plain(rows.get(ids[i]!)!), normalise(src[i]!));
        assert.equal(await count(store, 'audit_secrets'), 11);
      } finally {
        await store.close();
      }
    });

    test('erasures interleaved with many small integration rounds (PostgreSQL: concurrent): none fails, none is undone', async () => {
      const { store, schema } = await fresh();
      const other = await secondConnection(store, schema);
      try {
        const journal = new Journal(store);
        const r = rng(0xe2a5e);
        const ids = Array.from({ length: 160 }, () => newRequestId());
        await Promise.all(ids.map((id, i) => journal.write(queuedItem(plainRow(id, i)))));
        const victims = ids.filter(() => r() < 0.25);
        const log = await openLog(store, { batchMax: 8 });
        let existsRaces = 0;
        const eraseAll = (async () => {
          for (const id of victims) {
            // spread over the rounds: a few event-loop turns between erasures
            for (let k = Math.floor(r() * 4); k > 0; k--) await new Promise((res) => setImmediate(res));
            for (;;) {
              const e = await settle(eraseEntry(other, id));
              if (e.ok) break;
              // the pre-existing existence-check race (see its own test below) is retried here
              if (/no audit entry/.test(e.e.message) && existsRaces++ < 50) continue;
              throw e.e;
            }
          }
        })();
        let erasing = true;
        const erasingDone = eraseAll.finally(() => (erasing = false));
        let rounds = 0;
        const integrating = (async () => {
          while (erasing) {
            await log.integrateNow();
            rounds++;
            await new Promise((res) => setImmediate(res));
          }
        })();
        await Promise.all([erasingDone, integrating]);
        assert.ok(rounds >= 5, `erasures overlapped several rounds (${rounds})`);
        await log.drain();
        await log.close();
        assert.equal(await count(store, 'audit_queue'), 0);
        assert.equal(await count(store, 'requests'), 160);
        const secrets = await secretIds(store);
        const v = new Set(victims);
        for (const id of ids) assert.equal(secrets.has(id), !v.has(id), `salt of ${id} (erased: ${v.has(id)})`);
        await journal.close();
      } finally {
        await other.close();
        await store.close();
      }
    });

    // Regression (both dialects). Before f21aba9 the `requests` insert (primary key on id) was in the same
    // journal transaction as the queue row, so a second write with the same id was rejected (the
    // journal's doc: "one bad item (e.g. a duplicate id) does not take the others with it"). Now the
    // journal writes only the queue row, whose entry_id is not unique: both writes are accepted, and
    // every integration round then fails on audit_index's unique entry_id — the log stops for good.
    // How a duplicate can arrive: any caller of Journal.write, or #drainPg's per-item retry after a
    // batch whose COMMIT the server applied but whose answer was lost. Root cause:
    // src/audit/journal.ts:374-375 (SQLite) and :304 (PostgreSQL): the queued insert has no uniqueness check on entry_id.
    test('a duplicate request id is either rejected by the journal or does not stop the log', async () => {
      const { store } = await fresh();
      try {
        const journal = new Journal(store);
        const id = newRequestId();
        await journal.write(queuedItem(plainRow(id, 1)));
        const second = await settle(journal.write(queuedItem(plainRow(id, 1))));
        const later = newRequestId();
        await journal.write(queuedItem(plainRow(later, 2)));
        const log = await openLog(store);
        const drained = await settle(log.drain());
        await log.close().catch(() => undefined);
        assert.ok(drained.ok, `second write ${second.ok ? 'accepted' : 'rejected'}; integration then fails: ${drained.ok ? '' : drained.e.message}`);
        assert.equal(await count(store, 'requests', ['id', later]), 1, 'later requests still reach `requests`');
        // Accepted: both copies are in the tree, the id index and the row keep the first.
        if (second.ok) {
          assert.equal(log.latest().size, 3n, 'the duplicated entry is integrated too');
          assert.equal(await new AuditStorage(store).indexOf(id), 0n, 'the id index keeps the first');
          assert.equal(await count(store, 'requests', ['id', id]), 1);
        }
        await journal.close();
      } finally {
        await store.close();
      }
    });

    // Regression (PostgreSQL). The journal stores the row as jsonb, which takes any number; the integer
    // casts happen only in the move (src/audit/queued-rows.ts:55, `(request ->> 'total_tokens')::integer`,
    // run by src/audit/storage.ts:201). A row whose integer does not fit its column is accepted at the
    // response, then fails EVERY integration round (`value "4000000000" is out of range for type
    // integer`): nothing after it is integrated, no checkpoint is signed, no `requests` row appears.
    // Before f21aba9 the same row failed its own journal transaction (that request: 503), and the
    // log went on. The values are the ones readUsage produces for an upstream reporting
    // prompt_tokens = completion_tokens = 2e9 (each within MAX_REPORTED_TOKENS) and no total.
    test('a request row whose integer overflows its PostgreSQL column never stops the log', pgOnly, async () => {
      const { store } = await fresh();
      try {
        const journal = new Journal(store);
        const bad = newRequestId();
        const badWrite = await settle(journal.write(queuedItem(plainRow(bad, 1, { prompt_tokens: 2e9, completion_tokens: 2e9, total_tokens: 4e9 }))));
        const good = newRequestId();
        await journal.write(queuedItem(plainRow(good, 2)));
        const log = await openLog(store);
        const drained = await settle(log.drain());
        await log.close().catch(() => undefined);
        assert.ok(drained.ok, `bad row ${badWrite.ok ? 'accepted' : 'rejected'} by the journal; then every integration round fails: ${drained.ok ? '' : drained.e.message}`);
        assert.equal(await count(store, 'requests', ['id', good]), 1, 'the next request\'s row reaches `requests`');
        await journal.close();
      } finally {
        await store.close();
      }
    });

    test('PostgreSQL lock orders by hand: the move waits for an open erasure; an erasure waits for an open move', pgOnly, async () => {
      const { store, schema } = await fresh();
      const c = new pg.Client({ connectionString: pgUrl, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        const journal = new Journal(store);
        const ids = Array.from({ length: 6 }, () => newRequestId());
        await Promise.all(ids.map((id, i) => journal.write(queuedItem(plainRow(id, i)))));

        // 1. an erasure's transaction holds the queue row; the integrator's round must wait and then not move the salt
        await c.query('BEGIN');
        assert.equal((await c.query('UPDATE audit_queue SET salt = NULL WHERE entry_id = $1 AND salt IS NOT NULL', [ids[0]])).rowCount, 1);
        const log = await openLog(store, { batchMax: 3 });
        let done = false;
        const round = log.integrateNow().finally(() => (done = true));
        await new Promise((res) => setTimeout(res, 200));
        assert.equal(done, false, 'the round waits for the erasure\'s row lock');
        await c.query('COMMIT');
        await round;
        assert.equal((await secretIds(store)).has(ids[0]!), false, 'the erased salt was not moved');
        assert.equal((await secretIds(store)).has(ids[1]!), true);

        // 2. a move holds the rows (as commitIntegration does); the real eraseEntry must wait, then delete the moved salt
        const seqs = (await c.query('SELECT seq FROM audit_queue WHERE entry_id = ANY($1) ORDER BY seq', [ids.slice(3)])).rows.map((x) => Number(x.seq));
        const where = `seq IN (${seqs.join(', ')})`;
        await c.query('BEGIN');
        await c.query(`SELECT seq FROM audit_queue WHERE ${where} FOR UPDATE`);
        for (const q of moveQueuedRowsSql('postgres', where)) await c.query(q);
        await c.query(`DELETE FROM audit_queue WHERE ${where}`);
        let erased = false;
        const erase = eraseEntry(store, ids[4]!).finally(() => (erased = true));
        const del = new AuditStorage(store).deleteSalt(ids[5]!);
        await new Promise((res) => setTimeout(res, 200));
        assert.equal(erased, false, 'the erasure waits for the move');
        await c.query('COMMIT');
        await erase;
        assert.equal(await del, true, 'deleteSalt found the moved salt');
        const secrets = await secretIds(store);
        assert.equal(secrets.has(ids[4]!), false);
        assert.equal(secrets.has(ids[5]!), false);
        assert.equal(secrets.has(ids[3]!), true);
        await log.close();
        await journal.close();
      } finally {
        await c.end();
        await store.close();
      }
    });
  });
}

// ----- pre-existing race in eraseEntry's existence check (SQLite, deterministic) --------------------

// Regression (older than f21aba9): eraseEntry (src/audit/cli.ts:218) checks that the entry
// exists with two statements, `indexOf(id)` and then `queuedEntry(id)`. If integration commits between
// them, the entry is in neither place as seen and a valid erasure fails with "no audit entry".
// Fix: look in the queue first, then in the index (integration only moves queue → index), or one query.
test('an erasure whose entry is integrated between the existence checks still succeeds', async () => {
  const store = await openStore(`sqlite:${join(tmpRoot, `race-${randomBytes(4).toString('hex')}.db`)}`);
  const orig = AuditStorage.prototype.indexOf;
  try {
    await store.migrate();
    const journal = new Journal(store);
    const id = newRequestId();
    await journal.write(queuedItem(plainRow(id, 1)));
    await journal.close();
    const log = await openLog(store);
    let armed = true;
    AuditStorage.prototype.indexOf = async function (this: AuditStorage, x: string) {
      const r = await orig.call(this, x);
      if (armed && x === id) {
        armed = false;
        await log.drain(); // the integrator commits right after the index was read
      }
      return r;
    };
    const e = await settle(eraseEntry(store, id));
    AuditStorage.prototype.indexOf = orig;
    await log.close();
    assert.ok(e.ok, `erasure failed: ${e.ok ? '' : e.e.message}`);
    assert.equal(await new AuditStorage(store).saltOf(id), undefined);
  } finally {
    AuditStorage.prototype.indexOf = orig;
    await store.close();
  }
});

// ----- the gateway end to end -----------------------------------------------------------------------

for (const postgres of pgUrl ? [false, true] : [false]) {
  const where = postgres ? 'PostgreSQL' : 'SQLite (store worker)';
  test(`gateway on ${where}: erasures from another connection while requests are in flight; usage right after flush`, async () => {
    const mock = await startMockUpstream();
    const g = await startGateway({ config: mockConfig(mock.url, {}, { audit: { checkpoint_interval_ms: 15 } }), env: MOCK_ENV, postgres });
    const other = await openStore(g.database.url, g.database.schema ? { pgSchema: g.database.schema } : {});
    try {
      const admin = (await createAdmin({ store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' }, { role: 'platform-admin' })).secret;
      const N = 36;
      for (let i = 0; i < N; i++) mock.enqueue(jsonResponse(200, chatCompletion({ usage: { prompt_tokens: 3, completion_tokens: 2 } })));
      const erased: string[] = [];
      const erasures: Array<Promise<unknown>> = [];
      const one = async (i: number) => {
        const r = await fetch(`${g.baseURL}/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: `hi ${i}` }] }),
        });
        await r.text();
        assert.equal(r.status, 200);
        const id = r.headers.get('x-request-id')!;
        if (i % 3 === 0) {
          erased.push(id);
          // erased at once, while other requests are in flight and rounds run every 15 ms
          erasures.push(
            (async () => {
              for (let k = 0; ; k++) {
                const e = await settle(eraseEntry(other, id));
                if (e.ok) return;
                if (!/no audit entry/.test(e.e.message) || k > 20) throw e.e; // pre-existing race, retried
              }
            })(),
          );
        }
        return id;
      };
      const ids: string[] = [];
      for (let w = 0; w < N; w += 6) ids.push(...(await Promise.all(Array.from({ length: 6 }, (_, k) => one(w + k)))));
      await Promise.all(erasures);
      await g.gw.flush();
      const u = await fetch(`${g.origin}/admin/v1/usage?from=2000-01-01T00:00:00Z`, { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(u.status, 200);
      const data = ((await u.json()) as { data: Array<{ requests: number; total_tokens: number }> }).data;
      assert.equal(data.reduce((s, x) => s + x.requests, 0), N, 'every request is in the usage right after flush');
      assert.equal(data.reduce((s, x) => s + x.total_tokens, 0), 5 * N);
      const st = new AuditStorage(other);
      for (const id of ids) assert.equal((await st.saltOf(id)) === undefined, erased.includes(id), `salt of ${id}`);
      assert.equal(await count(other, 'audit_queue'), 0);
      const secrets = await secretIds(other);
      for (const id of erased) assert.equal(secrets.has(id), false);
      assert.equal(String(g.gw.audit()!.latest().size), await new AuditStorage(other).getMeta('integrated_size'));
    } finally {
      await other.close();
      await g.close();
      await mock.close();
    }
  });
}

// Regression (PostgreSQL), end to end: see the unit test above. One upstream answer whose usage counts are
// each valid (≤ MAX_REPORTED_TOKENS) but whose sum, taken as total_tokens by readUsage
// (src/pipeline/forward.ts:272), exceeds int4 gets a 200; from then on no entry is integrated, no
// checkpoint is signed and no request appears in /admin/v1/usage. (Before f21aba9: that one request
// got a 503 audit_unavailable and everything else went on.)
test('gateway on PostgreSQL: one upstream usage report of 2e9 + 2e9 tokens does not stop the log and the usage API', { skip: !pgUrl && 'SOVRA_TEST_POSTGRES_URL not set' }, async () => {
  const mock = await startMockUpstream();
  const g = await startGateway({ config: mockConfig(mock.url, {}, { audit: { checkpoint_interval_ms: 20 } }), env: MOCK_ENV, postgres: true });
  try {
    const send = async () => {
      const r = await fetch(`${g.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }] }),
      });
      await r.text();
      return { status: r.status, id: r.headers.get('x-request-id')! };
    };
    mock.enqueue(jsonResponse(200, { ...chatCompletion(), usage: { prompt_tokens: 2_000_000_000, completion_tokens: 2_000_000_000 } }));
    const bogus = await send();
    mock.enqueue(jsonResponse(200, chatCompletion()));
    const good = await send();
    assert.equal(good.status, 200);
    await g.gw.flush();
    const rows = await g.records();
    assert.ok(
      rows.some((r) => r.id === good.id),
      `the bogus-usage request got ${bogus.status}; after it, the next request's row never reaches \`requests\` (checkpoint size ${g.gw.audit()!.latest().size})`,
    );
  } finally {
    await g.close();
    await mock.close();
  }
});

