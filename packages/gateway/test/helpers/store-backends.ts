/**
 * Store backends for tests that run on both dialects: SQLite always (a fresh file under `dir`), and
 * PostgreSQL when SOVRA_TEST_POSTGRES_URL is set (a fresh schema per `open()`, all dropped by
 * `cleanup()`).
 */
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { openStore, type Store } from '../../src/store/db.ts';

/**
 * A migrated SQLite store on `file`, by default a fresh file under `dir` (the caller removes `dir`).
 * Two calls with the same `file` give two connections to one database.
 */
export async function migratedSqliteStore(dir: string, file = join(dir, `m-${randomBytes(5).toString('hex')}.db`)): Promise<Store> {
  const s = await openStore(`sqlite:${file}`);
  await s.migrate();
  return s;
}

/** One dialect to run a suite on. */
export interface StoreBackend {
  name: 'sqlite' | 'postgres';
  /** A fresh, unmigrated store; `schema` is the PostgreSQL schema it lives in. */
  open(): Promise<{ store: Store; schema?: string }>;
  /** Drops what `open()` created (PostgreSQL schemas); call from `after()`. */
  cleanup(): Promise<void>;
}

/**
 * The backends to run on.
 * @param dir folder for SQLite files (the caller removes it)
 */
export function storeBackends(dir: string): StoreBackend[] {
  const backends: StoreBackend[] = [
    {
      name: 'sqlite',
      open: async () => ({ store: await openStore(`sqlite:${join(dir, `s-${randomBytes(5).toString('hex')}.db`)}`) }),
      cleanup: async () => {},
    },
  ];
  const pgUrl = process.env['SOVRA_TEST_POSTGRES_URL'];
  if (pgUrl) {
    const schemas: string[] = [];
    backends.push({
      name: 'postgres',
      async open() {
        const schema = `t_${randomBytes(8).toString('hex')}`;
        schemas.push(schema);
        return { store: await openStore(pgUrl, { pgSchema: schema }), schema };
      },
      async cleanup() {
        const admin = await openStore(pgUrl);
        try {
          for (const s of schemas) await sql`drop schema if exists ${sql.id(s)} cascade`.execute(admin.db);
        } finally {
          await admin.close();
        }
      },
    });
  }
  return backends;
}
