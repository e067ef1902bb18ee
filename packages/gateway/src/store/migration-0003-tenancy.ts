/**
 * Migration `0003_tenancy`: tenant attributes, API-key lifecycle columns and admin principals.
 *
 * - `tenants`: `display_name`, `jurisdiction` (ISO 3166-1 alpha-2, upper case), `classification`
 *   (data-classification ceiling, free-form label) and `updated_at` (ms since epoch), all nullable.
 * - `api_keys`: `model_allowlist` (JSON array of model aliases as text; NULL = every model),
 *   `expires_at` (ms since epoch; NULL = never) and `rotated_from` (id of the key this one replaced).
 * - `admins` (new): admin principals, one admin key each; only the key's SHA-256 digest is stored.
 *
 * Additive only (new nullable columns and a new table), so it is safe on a populated database and
 * older rows keep their meaning (no allowlist, no expiry, no attributes).
 */
import type { Kysely, Migration } from 'kysely';

/** Builds migration `0003_tenancy` for a dialect (the statements are the same on both). */
export function m0003_tenancy(_dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>): Promise<void> {
      // One column per statement: SQLite's ALTER TABLE adds one column at a time.
      await db.schema.alterTable('tenants').addColumn('display_name', 'text').execute();
      await db.schema.alterTable('tenants').addColumn('jurisdiction', 'text').execute();
      await db.schema.alterTable('tenants').addColumn('classification', 'text').execute();
      await db.schema.alterTable('tenants').addColumn('updated_at', 'bigint').execute();

      await db.schema.alterTable('api_keys').addColumn('model_allowlist', 'text').execute();
      await db.schema.alterTable('api_keys').addColumn('expires_at', 'bigint').execute();
      await db.schema.alterTable('api_keys').addColumn('rotated_from', 'text').execute();

      await db.schema
        .createTable('admins')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text')
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('tenant_id', 'text', (c) => c.references('tenants.id'))
        .addColumn('digest', 'text', (c) => c.notNull())
        .addColumn('prefix', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('revoked_at', 'bigint')
        .execute();
      await db.schema.createIndex('admins_digest_uq').unique().on('admins').column('digest').execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      await db.schema.dropTable('admins').execute();
      for (const c of ['rotated_from', 'expires_at', 'model_allowlist']) await db.schema.alterTable('api_keys').dropColumn(c).execute();
      for (const c of ['updated_at', 'classification', 'jurisdiction', 'display_name']) await db.schema.alterTable('tenants').dropColumn(c).execute();
    },
  };
}
