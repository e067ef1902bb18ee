/**
 * Store, migrations, request reads and API keys. Runs against SQLite always, and against
 * PostgreSQL too when SOVRA_TEST_POSTGRES_URL is set (each run in a fresh schema, dropped afterwards).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { openStore, type Store } from '../src/store/db.ts';
import { listRequests } from '../src/store/requests.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import {
  createKey,
  digestKey,
  generateKey,
  KeyAuthenticator,
  listKeys,
  randomId,
  revokeKey,
} from '../src/keys/keys.ts';

const PG_URL = process.env.SOVRA_TEST_POSTGRES_URL;
const tmpRoot = mkdtempSync(join(tmpdir(), 'sovra-store-test-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

function row(i: number, over: Partial<RequestsTable> = {}): RequestsTable {
  return {
    id: `req_${i}_${randomBytes(4).toString('hex')}`,
    ts: 1_700_000_000_000 + i,
    key_id: null,
    tenant_id: 'ten_x',
    operation: 'chat.completions',
    model: 'm',
    backend_id: 'b',
    upstream_model: 'um',
    stream: i % 2,
    status: 200,
    outcome: 'ok',
    error_code: null,
    latency_ms: 12.6,
    ttfb_ms: 3,
    prompt_tokens: 10,
    completion_tokens: 5,
    total_tokens: 15,
    usage_source: 'upstream',
    ...over,
  };
}

async function countRows(store: Store, table: 'requests' | 'api_keys' | 'tenants'): Promise<number> {
  const r = await store.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

interface Backend {
  name: 'sqlite' | 'postgres';
  /** A fresh, unmigrated store; `sameAs` opens a second store on the same database/schema. */
  open(sameAs?: Store): Promise<Store>;
  cleanup(): Promise<void>;
}

function sqliteBackend(): Backend {
  const files = new Map<Store, string>();
  const stores: Store[] = [];
  return {
    name: 'sqlite',
    async open(sameAs) {
      const file = sameAs ? files.get(sameAs)! : join(tmpRoot, `db-${randomBytes(6).toString('hex')}`, 'sovra.db');
      const s = await openStore(`sqlite:${file}`);
      files.set(s, file);
      stores.push(s);
      return s;
    },
    async cleanup() {
      for (const s of stores) await s.close();
    },
  };
}

function postgresBackend(url: string): Backend {
  const schemas = new Map<Store, string>();
  const stores: Store[] = [];
  return {
    name: 'postgres',
    async open(sameAs) {
      const schema = sameAs ? schemas.get(sameAs)! : `t_${randomBytes(8).toString('hex')}`;
      const s = await openStore(url, { pgSchema: schema });
      schemas.set(s, schema);
      stores.push(s);
      return s;
    },
    async cleanup() {
      const admin = await openStore(url);
      try {
        for (const schema of new Set(schemas.values())) {
          await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(admin.db);
        }
      } finally {
        for (const s of stores) await s.close();
        await admin.close();
      }
    },
  };
}

function suite(backend: Backend): void {
  describe(`store on ${backend.name}`, () => {
    let store: Store;
    before(async () => {
      store = await backend.open();
      await store.migrate();
    });
    after(() => backend.cleanup());

    describe('migrations', () => {
      test('fresh database gets all tables; migrating again is a no-op', async () => {
        const s = await backend.open();
        await s.migrate();
        const tables = (await s.db.introspection.getTables()).map((t) => t.name);
        for (const t of ['tenants', 'api_keys', 'requests', 'audit_queue', 'audit_index', 'audit_tiles', 'audit_bundles', 'audit_checkpoints', 'audit_meta', 'audit_secrets', 'audit_content']) assert.ok(tables.includes(t), `missing ${t}`);
        await s.migrate();
        await s.migrate();
        const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(s.db);
        assert.deepEqual(applied.rows.map((r) => r.name), ['0001_init', '0002_audit', '0003_tenancy', '0004_metering', '0005_audit_leaf_hash', '0006_audit_leaf_lookup', '0007_audit_queue_rows', '0008_audit_content']);
        assert.equal(await countRows(s, 'requests'), 0);
      });

      test('unique constraints exist (tenants.name, api_keys.digest)', async () => {
        const now = Date.now();
        await store.db.insertInto('tenants').values({ id: randomId('ten'), name: 'uq-t', created_at: now }).execute();
        await assert.rejects(
          store.db.insertInto('tenants').values({ id: randomId('ten'), name: 'uq-t', created_at: now }).execute(),
        );
        const k = await createKey(store, { tenant: 'uq-t' });
        const t = await store.db.selectFrom('tenants').select('id').where('name', '=', 'uq-t').executeTakeFirstOrThrow();
        await assert.rejects(
          store.db
            .insertInto('api_keys')
            .values({ id: randomId('key'), tenant_id: t.id, name: null, digest: digestKey(k.key), prefix: 'x', created_at: now, revoked_at: null })
            .execute(),
        );
      });

      test('ms times round-trip as JS numbers', async () => {
        const big = 1_750_000_000_123;
        const r = row(1, { ts: big, latency_ms: 12 }); // direct insert: integers only (PG rejects 12.6)
        await store.db.insertInto('requests').values(r).execute();
        const back = await store.db.selectFrom('requests').selectAll().where('id', '=', r.id).executeTakeFirstOrThrow();
        assert.equal(typeof back.ts, 'number');
        assert.equal(back.ts, big);
        await store.db.deleteFrom('requests').where('id', '=', r.id).execute();
      });

      if (backend.name === 'postgres') {
        test('two migrate() calls racing on the same fresh schema both succeed', async () => {
          const a = await backend.open();
          const b = await backend.open(a);
          const c = await backend.open(a);
          await Promise.all([a.migrate(), b.migrate(), c.migrate()]);
          const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(a.db);
          assert.deepEqual(applied.rows.map((r) => r.name), ['0001_init', '0002_audit', '0003_tenancy', '0004_metering', '0005_audit_leaf_hash', '0006_audit_leaf_lookup', '0007_audit_queue_rows', '0008_audit_content']);
          assert.equal(await countRows(b, 'tenants'), 0);
        });
      } else {
        test('two processes migrating the same SQLite file at once both succeed', async () => {
          const dir = mkdtempSync(join(tmpRoot, 'race-'));
          const file = join(dir, 'race.db');
          const dbModule = pathToFileURL(fileURLToPath(new URL('../src/store/db.ts', import.meta.url))).href;
          const script = join(dir, 'migrate.mts');
          writeFileSync(
            script,
            `import { openStore } from ${JSON.stringify(dbModule)};\n` +
              `const s = await openStore(${JSON.stringify(`sqlite:${file}`)});\n` +
              `await s.migrate();\nawait s.close();\n`,
          );
          const run = () =>
            new Promise<{ code: number | null; stderr: string }>((resolveRun) => {
              const p = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'ignore', 'pipe'] });
              let stderr = '';
              p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
              p.on('close', (code) => resolveRun({ code, stderr }));
            });
          const results = await Promise.all([run(), run(), run()]);
          for (const r of results) assert.equal(r.code, 0, r.stderr);
          const s = await openStore(`sqlite:${file}`);
          try {
            const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(s.db);
            assert.deepEqual(applied.rows.map((r) => r.name), ['0001_init', '0002_audit', '0003_tenancy', '0004_metering', '0005_audit_leaf_hash', '0006_audit_leaf_lookup', '0007_audit_queue_rows', '0008_audit_content']);
          } finally {
            await s.close();
          }
        });
      }
    });

    describe('api keys', () => {
      test('createKey returns the plaintext once and stores only digest + prefix', async () => {
        const k = await createKey(store, { tenant: 'acme', name: 'ci' });
        assert.match(k.key, /^sk-sovra-[0-9A-Za-z]{32}$/);
        assert.equal(k.prefix, k.key.slice(0, 13));
        assert.match(k.id, /^key_[0-9A-Za-z]{16}$/);
        assert.match(k.tenantId, /^ten_[0-9A-Za-z]{16}$/);
        assert.equal(k.tenant, 'acme');
        assert.equal(k.name, 'ci');
        assert.equal(typeof k.createdAt, 'number');
        const stored = await store.db.selectFrom('api_keys').selectAll().where('id', '=', k.id).executeTakeFirstOrThrow();
        assert.equal(stored.digest, digestKey(k.key));
        assert.equal(stored.prefix, k.prefix);
        assert.ok(!JSON.stringify(stored).includes(k.key), 'plaintext key is not stored');
        const k2 = await createKey(store, { tenant: 'acme' });
        assert.equal(k2.tenantId, k.tenantId, 'existing tenant is reused');
        assert.equal(k2.name, null);
      });

      test('concurrent createKey for a new tenant creates it once', async () => {
        const ks = await Promise.all(Array.from({ length: 8 }, () => createKey(store, { tenant: 'racy' })));
        assert.equal(new Set(ks.map((k) => k.tenantId)).size, 1);
        const n = await store.db.selectFrom('tenants').select('id').where('name', '=', 'racy').execute();
        assert.equal(n.length, 1);
      });

      test('createKey rejects an empty tenant name', async () => {
        await assert.rejects(createKey(store, { tenant: '  ' }), /Tenant name/);
      });

      test('listKeys never exposes the digest or the key', async () => {
        const k = await createKey(store, { tenant: 'list-t', name: 'n1' });
        const list = await listKeys(store);
        const mine = list.find((x) => x.id === k.id);
        assert.deepEqual(mine, { id: k.id, tenant: 'list-t', name: 'n1', prefix: k.prefix, createdAt: k.createdAt, revokedAt: null, expiresAt: null });
        for (const item of list) {
          assert.deepEqual(Object.keys(item).sort(), ['createdAt', 'expiresAt', 'id', 'name', 'prefix', 'revokedAt', 'tenant']);
        }
        const text = JSON.stringify(list);
        assert.ok(!text.includes(digestKey(k.key)));
        assert.ok(!text.includes(k.key));
      });

      test('revokeKey: true once, then false; unknown id false; listed as revoked', async () => {
        const k = await createKey(store, { tenant: 'rev-t' });
        assert.equal(await revokeKey(store, k.id), true);
        assert.equal(await revokeKey(store, k.id), false);
        assert.equal(await revokeKey(store, 'key_doesnotexist0000'), false);
        const listed = (await listKeys(store)).find((x) => x.id === k.id);
        assert.equal(typeof listed?.revokedAt, 'number');
      });

      test('authenticate: valid accepted, unknown/malformed/revoked rejected', async () => {
        const auth = new KeyAuthenticator(store, { cacheTtlMs: 0 });
        const k = await createKey(store, { tenant: 'auth-t' });
        assert.deepEqual(await auth.authenticate(k.key), {
          keyId: k.id,
          meteringKeyId: k.id,
          tenantId: k.tenantId,
          tenant: 'auth-t',
          modelAllowlist: null,
          tenantAttributes: { jurisdiction: null, classification: null },
          expiresAt: null,
        });
        assert.equal(await auth.authenticate(generateKey()), null);
        assert.equal(await auth.authenticate(''), null);
        assert.equal(await auth.authenticate(k.key + 'x'), null);
        assert.equal(await auth.authenticate(k.key.slice(0, -1)), null);
        assert.equal(await auth.authenticate('Bearer ' + k.key), null);
        await revokeKey(store, k.id);
        assert.equal(await auth.authenticate(k.key), null);
      });

      test('cache: results reused within TTL; invalidate() does not resurrect a revoked key', async () => {
        let now = 1_000_000;
        const auth = new KeyAuthenticator(store, { cacheTtlMs: 5000, now: () => now });
        const k = await createKey(store, { tenant: 'cache-t' });
        assert.ok(await auth.authenticate(k.key));
        assert.equal(auth.cacheSize, 1);
        await revokeKey(store, k.id);
        assert.ok(await auth.authenticate(k.key), 'within TTL the cached positive result is reused');
        auth.invalidate();
        assert.equal(auth.cacheSize, 0);
        assert.equal(await auth.authenticate(k.key), null);
        assert.equal(await auth.authenticate(k.key), null);

        // Negative results are cached too, and expire.
        const k2 = generateKey();
        assert.equal(await auth.authenticate(k2), null);
        assert.equal(auth.cacheSize, 2);
        now += 5001;
        const k3 = await createKey(store, { tenant: 'cache-t' });
        assert.ok(await auth.authenticate(k3.key));
      });

      test('cache: revoked key stays rejected once the TTL expires', async () => {
        let now = 0;
        const auth = new KeyAuthenticator(store, { cacheTtlMs: 1000, now: () => now });
        const k = await createKey(store, { tenant: 'ttl-t' });
        assert.ok(await auth.authenticate(k.key));
        await revokeKey(store, k.id);
        now += 1001;
        assert.equal(await auth.authenticate(k.key), null);
      });

      test('cache: a lookup in flight during invalidate() does not repopulate the cache', async () => {
        const auth = new KeyAuthenticator(store, { cacheTtlMs: 60_000 });
        const k = await createKey(store, { tenant: 'flight-t' });
        const inFlight = auth.authenticate(k.key);
        const revoked = revokeKey(store, k.id);
        auth.invalidate();
        await inFlight;
        assert.equal(await revoked, true);
        assert.equal(await auth.authenticate(k.key), null);
      });

      test('cache: concurrent lookups share one result; size is bounded', async () => {
        const auth = new KeyAuthenticator(store, { cacheTtlMs: 60_000, maxCacheEntries: 3 });
        const k = await createKey(store, { tenant: 'bound-t' });
        const rs = await Promise.all(Array.from({ length: 20 }, () => auth.authenticate(k.key)));
        assert.ok(rs.every((r) => r !== null && r.keyId === k.id));
        for (let i = 0; i < 10; i++) assert.equal(await auth.authenticate(generateKey()), null);
        assert.equal(auth.cacheSize, 3);
      });
    });
  });
}

describe('keys (pure)', () => {
  test('generateKey: prefix, length, charset; 1,000 keys are distinct', () => {
    const keys = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const k = generateKey();
      assert.equal(k.length, 41);
      assert.match(k, /^sk-sovra-[0-9A-Za-z]{32}$/);
      keys.add(k);
    }
    assert.equal(keys.size, 1000);
  });

  test('generateKey: characters are roughly uniform over base62', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) for (const c of generateKey().slice(9)) counts.set(c, (counts.get(c) ?? 0) + 1);
    assert.equal(counts.size, 62);
    const expected = (2000 * 32) / 62; // ≈1032
    for (const [c, n] of counts) assert.ok(Math.abs(n - expected) < expected * 0.2, `char ${c}: ${n}`);
  });

  test('digestKey is lower-case hex SHA-256', () => {
    assert.equal(digestKey('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe('openStore', () => {
  test('unsupported scheme is named, credentials are not echoed', async () => {
    await assert.rejects(openStore('mysql://admin:hunter2@db.example/x'), (err: Error) => {
      assert.match(err.message, /"mysql:"/);
      assert.ok(!err.message.includes('hunter2'));
      assert.ok(!err.message.includes('admin'));
      return true;
    });
    await assert.rejects(openStore('no-scheme-here'), /no scheme/);
  });

  test('unreachable PostgreSQL: error names host, never the password', async () => {
    await assert.rejects(openStore('postgres://admin:hunter2@127.0.0.1:1/x'), (err: Error) => {
      assert.match(err.message, /127\.0\.0\.1:1\/x/);
      assert.ok(!err.message.includes('hunter2'));
      return true;
    });
  });

  test('sqlite: relative path is resolved against cwd and parent directories are created', async () => {
    const file = join(tmpRoot, 'nested', 'deeper', 'rel.db');
    const s = await openStore(`sqlite:${relative(process.cwd(), file)}`);
    try {
      assert.equal(s.dialect, 'sqlite');
      assert.ok(existsSync(file));
      const mode = await sql<{ journal_mode: string }>`pragma journal_mode`.execute(s.db);
      assert.equal(mode.rows[0]?.journal_mode, 'wal');
      const fk = await sql<{ foreign_keys: number }>`pragma foreign_keys`.execute(s.db);
      assert.equal(fk.rows[0]?.foreign_keys, 1);
      const busy = await sql<{ timeout: number }>`pragma busy_timeout`.execute(s.db);
      assert.equal(busy.rows[0]?.timeout, 5000);
    } finally {
      await s.close();
      await s.close();
    }
  });

  test('sqlite::memory: works', async () => {
    const s = await openStore('sqlite::memory:');
    await s.migrate();
    const k = await createKey(s, { tenant: 'mem' });
    assert.ok(await new KeyAuthenticator(s).authenticate(k.key));
    await s.close();
  });
});

suite(sqliteBackend());
if (PG_URL) suite(postgresBackend(PG_URL));
