/**
 * Migration `0006_audit_leaf_lookup`: the leaf-hash lookup moves from a B-tree index on random
 * 32-byte hashes to `audit_leaf_lookup (epoch, prefix, idx)` (see `src/audit/leaf-lookup.ts` for the
 * format and why), and `audit_index` drops its `leaf_hash` column: the level-0 hash tiles already
 * hold every leaf hash, and the lookup checks its candidates there.
 *
 * - `audit_leaf_lookup`: primary key (epoch, prefix, idx); `WITHOUT ROWID` on SQLite so the key is
 *   the table (one B-tree, no separate index). Filled from the existing `audit_index` rows in SQL on
 *   both dialects: epoch = `idx / 16384`, prefix = the first 6 bytes of `leaf_hash` as an unsigned
 *   integer (PostgreSQL: `('x' || encode(…, 'hex'))::bit(48)::bigint`; SQLite, which has no hex-to-
 *   integer function: a sum over the 12 hex digits of `hex(substr(leaf_hash, 1, 6))`).
 * - `audit_index`: `idx` (the leaf index, SQLite rowid) and `entry_id` (unique) only.
 *
 * `down` restores `audit_index.leaf_hash` (32 bytes) from the level-0 tiles — for each index, the
 * widest stored tile of its 256-entry block, bytes `(idx mod 256) × 32` to `+ 32` — rebuilds its
 * index and drops the lookup table. Both directions run inside the migration's transaction.
 */
import { sql, type Kysely, type Migration } from 'kysely';
import { LEAF_LOOKUP_EPOCH, LEAF_PREFIX_BYTES } from '../audit/leaf-lookup.ts';

/** SQLite expression: the unsigned big-endian integer of the first LEAF_PREFIX_BYTES bytes of `col`. */
function sqlitePrefixExpr(col: string): string {
  const digits = LEAF_PREFIX_BYTES * 2;
  const h = `hex(substr(${col}, 1, ${LEAF_PREFIX_BYTES}))`;
  const terms: string[] = [];
  for (let k = 1; k <= digits; k++) terms.push(`(instr('0123456789ABCDEF', substr(${h}, ${k}, 1)) - 1) * ${16 ** (digits - k)}`);
  return terms.join(' + ');
}

/** Builds migration `0006_audit_leaf_lookup` for `dialect`. */
export function m0006_audit_leaf_lookup(dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>): Promise<void> {
      if (dialect === 'sqlite') {
        await sql`create table audit_leaf_lookup (epoch integer not null, prefix integer not null, idx integer not null, primary key (epoch, prefix, idx)) without rowid`.execute(db);
        await sql
          .raw(`insert into audit_leaf_lookup (epoch, prefix, idx) select idx / ${LEAF_LOOKUP_EPOCH}, ${sqlitePrefixExpr('leaf_hash')}, idx from audit_index order by 1, 2, 3`)
          .execute(db);
      } else {
        await sql`create table audit_leaf_lookup (epoch bigint not null, prefix bigint not null, idx bigint not null, primary key (epoch, prefix, idx))`.execute(db);
        await sql
          .raw(
            `insert into audit_leaf_lookup (epoch, prefix, idx) select idx / ${LEAF_LOOKUP_EPOCH}, ('x' || encode(substring(leaf_hash from 1 for ${LEAF_PREFIX_BYTES}), 'hex'))::bit(${LEAF_PREFIX_BYTES * 8})::bigint, idx from audit_index`,
          )
          .execute(db);
      }
      await sql`drop index audit_index_leaf_hash_idx`.execute(db);
      await sql`alter table audit_index drop column leaf_hash`.execute(db);
    },
    async down(db: Kysely<any>): Promise<void> {
      if (dialect === 'sqlite') {
        await sql`alter table audit_index rename to audit_index_0006`.execute(db);
        await sql`create table audit_index (idx integer primary key, entry_id text not null unique, leaf_hash blob not null)`.execute(db);
        // A missing tile gives NULL, which NOT NULL refuses: the rollback fails rather than lose a hash.
        await sql`insert into audit_index (idx, entry_id, leaf_hash)
          select i.idx, i.entry_id,
            substr((select t.data from audit_tiles t where t.level = 0 and t.idx = i.idx / 256 order by t.width desc limit 1), (i.idx % 256) * 32 + 1, 32)
          from audit_index_0006 i order by i.idx`.execute(db);
        await sql`drop table audit_index_0006`.execute(db);
      } else {
        await sql`alter table audit_index add column leaf_hash bytea`.execute(db);
        await sql`update audit_index i set leaf_hash = substring(t.data from ((i.idx % 256) * 32 + 1)::int for 32)
          from (select distinct on (idx) idx, data from audit_tiles where level = 0 order by idx, width desc) t
          where t.idx = i.idx / 256`.execute(db);
        await sql`alter table audit_index alter column leaf_hash set not null`.execute(db);
      }
      await db.schema.createIndex('audit_index_leaf_hash_idx').on('audit_index').column('leaf_hash').execute();
      await db.schema.dropTable('audit_leaf_lookup').execute();
    },
  };
}
