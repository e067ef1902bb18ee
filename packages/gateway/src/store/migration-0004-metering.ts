/**
 * Migration `0004_metering`: rate limits, budgets and budget usage per period (src/metering/), and
 * the request record's cost.
 *
 * - `rate_limits`: one row per scope (tenant or key) with its requests-per-minute and
 *   tokens-per-minute limits (null = unlimited).
 * - `budgets`: token or micro-USD budgets of a scope, per UTC day, UTC month or fixed (never resets).
 * - `budget_usage`: one row per (budget, period start): `used` (settled) and `reserved` (admitted,
 *   not yet settled). Reservations are single conditional UPDATEs on this row, so budgets are never
 *   overspent by concurrent requests or several gateway processes sharing the database.
 * - `requests.cost_micros`: the request's cost in micro-USD (null when unknown).
 *
 * Amounts and counters are `bigint` (micro-USD exceed 2^31 quickly); times are ms since the epoch.
 */
import { sql, type Kysely, type Migration } from 'kysely';

/** Builds migration `0004_metering` (the same shape on both dialects). */
export function m0004_metering(dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('rate_limits')
        .addColumn('scope_kind', 'text', (c) => c.notNull())
        .addColumn('scope_id', 'text', (c) => c.notNull())
        .addColumn('rpm', 'bigint')
        .addColumn('tpm', 'bigint')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('rate_limits_pk', ['scope_kind', 'scope_id'])
        .execute();
      await db.schema
        .createTable('budgets')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('scope_kind', 'text', (c) => c.notNull())
        .addColumn('scope_id', 'text', (c) => c.notNull())
        .addColumn('unit', 'text', (c) => c.notNull())
        .addColumn('amount', 'bigint', (c) => c.notNull())
        .addColumn('period', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('budgets_scope_idx').on('budgets').columns(['scope_kind', 'scope_id']).execute();
      if (dialect === 'sqlite') {
        // WITHOUT ROWID: the hot-path UPDATE finds the row in one B-tree by its primary key.
        await sql`create table budget_usage (budget_id text not null, period_start bigint not null, used bigint not null default 0, reserved bigint not null default 0, primary key (budget_id, period_start)) without rowid`.execute(db);
      } else {
        await db.schema
          .createTable('budget_usage')
          .addColumn('budget_id', 'text', (c) => c.notNull())
          .addColumn('period_start', 'bigint', (c) => c.notNull())
          .addColumn('used', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('reserved', 'bigint', (c) => c.notNull().defaultTo(0))
          .addPrimaryKeyConstraint('budget_usage_pk', ['budget_id', 'period_start'])
          .execute();
      }
      await db.schema.alterTable('requests').addColumn('cost_micros', 'bigint').execute();
      await db.schema.createIndex('requests_key_ts_idx').on('requests').columns(['key_id', 'ts']).execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      await db.schema.dropIndex('requests_key_ts_idx').execute();
      await db.schema.alterTable('requests').dropColumn('cost_micros').execute();
      await db.schema.dropTable('budget_usage').execute();
      await db.schema.dropTable('budgets').execute();
      await db.schema.dropTable('rate_limits').execute();
    },
  };
}
