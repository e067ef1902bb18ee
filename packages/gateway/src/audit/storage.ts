/**
 * The transparency log's storage in Sovra's store (tables of migrations `0002_audit`,
 * `0005_audit_leaf_hash`, `0006_audit_leaf_lookup` and `0007_audit_queue_rows`): queued entries
 * (with the request rows and salts that travel with them, `./queued-rows.ts`), the leaf index and the
 * leaf-hash lookup (`./leaf-lookup.ts`), hash tiles, entry bundles, signed checkpoints, metadata and
 * commitment salts.
 *
 * SQLite uses native better-sqlite3 prepared statements only (synchronous; multi-statement writes in
 * one synchronous `native.transaction()`), PostgreSQL uses Kysely. Tree sizes and indexes are
 * `bigint` in this API and stored as BIGINT (read back as JS numbers, exact below 2^53).
 */
import { TileHashCache, TlogError, decodeEntryBundle, encodeEntryBundle, type TileReader, type WrittenBundle, type WrittenTile } from '@sovra/tlog';
import { sql, type Transaction } from 'kysely';
import type { Store } from '../store/db.ts';
import type { Database } from '../store/schema.ts';
import { LEAF_LOOKUP_EPOCH, leafPrefix } from './leaf-lookup.ts';
import { CARRIES_REQUEST, clearQueuedRowsSql, moveQueuedRowsSql } from './queued-rows.ts';
import type { SealedContent } from './content.ts';

/** A queued entry. */
export interface QueuedEntry {
  seq: number;
  entryId: string;
  entry: Uint8Array;
  /**
   * `LH(entry)` (32 bytes, spec §3) as the journal computed it when it committed the entry, or null
   * for a row queued without it (an older version, the CLI): then the integrator hashes the entry.
   */
  leafHash: Uint8Array | null;
}

/** A stored signed checkpoint. */
export interface StoredCheckpoint {
  size: bigint;
  note: string;
}

/** What one integration round writes, in one transaction. */
export interface IntegrationCommit {
  tiles: readonly WrittenTile[];
  bundles: readonly WrittenBundle[];
  /**
   * `[entry id, leaf index, 32-byte leaf hash]` for every integrated entry, in leaf-index order: the
   * id goes to `audit_index`, the hash's prefix to `audit_leaf_lookup` (the hash itself is in the
   * level-0 tiles of the same commit).
   */
  index: ReadonlyArray<readonly [string, bigint, Uint8Array]>;
  /** `seq` of every integrated queue row (deleted). */
  seqs: readonly number[];
  /** The new `integrated_size`. */
  size: bigint;
}

const u8 = (b: Buffer | Uint8Array): Uint8Array => (Buffer.isBuffer(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : b);
const buf = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));
const PG_CHUNK = 5_000;
const PG_BLOB_CHUNK = 32;

/** Storage of the log; see the module documentation. Implements {@link TileReader} over the stored tiles. */
export class AuditStorage implements TileReader {
  readonly store: Store;
  readonly #s: ReturnType<typeof prepare> | undefined;
  /**
   * Subtree hashes of the upper tiles (level ≥ 1), shared by every proof and root computed through
   * this storage (`@sovra/tlog` `TileHashCache`; tiles never change, so entries never go stale).
   * ≤ 256 tiles, ≈ 4 MiB.
   */
  readonly tileHashes = new TileHashCache();

  constructor(store: Store) {
    this.store = store;
    this.#s = store.sqlite ? prepare(store.sqlite) : undefined;
  }

  // ----- metadata -----

  /** `audit_meta` value of `key`, or undefined. */
  async getMeta(key: string): Promise<string | undefined> {
    if (this.#s) return (this.#s.getMeta.get(key) as { value: string } | undefined)?.value;
    const r = await this.store.db.selectFrom('audit_meta').select('value').where('key', '=', key).executeTakeFirst();
    return r?.value;
  }

  /** Inserts `key` = `value` unless `key` exists. @returns the value now stored (the existing one if there was one) */
  async initMeta(key: string, value: string): Promise<string> {
    if (this.#s) this.#s.initMeta.run(key, value);
    else await this.store.db.insertInto('audit_meta').values({ key, value }).onConflict((oc) => oc.column('key').doNothing()).execute();
    return (await this.getMeta(key))!;
  }

  /**
   * Compare-and-set of a meta value: sets `key` to `next` only if it currently holds `prev`
   * (`prev` undefined = the key is absent). Atomic on both dialects (one statement).
   * @returns true when this call changed it
   */
  async casMeta(key: string, prev: string | undefined, next: string): Promise<boolean> {
    if (prev === undefined) {
      if (this.#s) return this.#s.initMeta.run(key, next).changes === 1;
      const r = await this.store.db.insertInto('audit_meta').values({ key, value: next }).onConflict((oc) => oc.column('key').doNothing()).executeTakeFirst();
      return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
    }
    if (this.#s) return this.#s.casMeta.run(next, key, prev).changes === 1;
    const r = await this.store.db.updateTable('audit_meta').set({ value: next }).where('key', '=', key).where('value', '=', prev).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  // ----- queue -----

  /**
   * Up to `limit` queued entries in `seq` order. `entry` and `leafHash` are Buffers owned by the
   * caller (fresh copies out of the database; not pooled). The stored leaf hash is returned as it
   * is; `TileIntegrator.appendEntryWithLeafHash` refuses one that is not 32 bytes.
   */
  async readQueue(limit: number): Promise<QueuedEntry[]> {
    if (this.#s) {
      // Raw rows (arrays, no per-row objects from the driver); blobs come back as Buffers, which are
      // Uint8Arrays already: no copy, no view.
      const rows = this.#s.readQueue.all(limit) as Array<[number, string, Buffer, Buffer | null]>;
      const out = new Array<QueuedEntry>(rows.length);
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]!;
        out[i] = { seq: r[0], entryId: r[1], entry: r[2], leafHash: r[3] };
      }
      return out;
    }
    const rows = await this.store.db.selectFrom('audit_queue').select(['seq', 'entry_id', 'entry', 'leaf_hash']).orderBy('seq').limit(limit).execute();
    return rows.map((r) => ({ seq: Number(r.seq), entryId: r.entry_id, entry: u8(r.entry as Buffer), leafHash: r.leaf_hash ? u8(r.leaf_hash as Buffer) : null }));
  }

  /** The queue's head (the row with the smallest `seq`), or undefined when the queue is empty. */
  async queueHead(): Promise<{ seq: number; entryId: string } | undefined> {
    if (this.#s) {
      const r = this.#s.queueHead.get() as [number, string] | undefined;
      return r ? { seq: r[0], entryId: r[1] } : undefined;
    }
    const r = await this.store.db.selectFrom('audit_queue').select(['seq', 'entry_id']).orderBy('seq').limit(1).executeTakeFirst();
    return r ? { seq: Number(r.seq), entryId: r.entry_id } : undefined;
  }

  /** The entry id of queue row `seq`, or undefined. */
  async queuedIdAt(seq: number): Promise<string | undefined> {
    if (this.#s) return (this.#s.queuedIdAt.get(seq) as [string] | undefined)?.[0];
    const r = await this.store.db.selectFrom('audit_queue').select('entry_id').where('seq', '=', seq).executeTakeFirst();
    return r?.entry_id;
  }

  /** Number of queued (not yet integrated) entries. */
  async queueLength(): Promise<number> {
    if (this.#s) return (this.#s.queueLength.get() as { n: number }).n;
    const r = await sql<{ n: string | number }>`select count(*) as n from audit_queue`.execute(this.store.db);
    return Number(r.rows[0]?.n ?? 0);
  }

  /** A queued entry by id (not yet integrated), or undefined. */
  async queuedEntry(id: string): Promise<Uint8Array | undefined> {
    if (this.#s) {
      const r = this.#s.queuedEntry.get(id) as { entry: Buffer } | undefined;
      return r ? u8(r.entry) : undefined;
    }
    const r = await this.store.db.selectFrom('audit_queue').select('entry').where('entry_id', '=', id).executeTakeFirst();
    return r ? u8(r.entry as Buffer) : undefined;
  }

  /**
   * Writes one integration round atomically: the new tiles and bundles (plain INSERTs: a
   * (level, idx, width) that exists already makes the round fail, so nothing is ever rewritten),
   * the index rows, the deletion of exactly the integrated queue rows, and `integrated_size`.
   * @throws the database error (nothing is written then)
   */
  async commitIntegration(c: IntegrationCommit): Promise<void> {
    const size = c.size.toString();
    if (this.#s) {
      this.#s.commit(c, size);
      return;
    }
    await this.store.db.transaction().execute(async (trx) => {
      for (let i = 0; i < c.tiles.length; i += PG_BLOB_CHUNK) {
        await trx
          .insertInto('audit_tiles')
          .values(c.tiles.slice(i, i + PG_BLOB_CHUNK).map((t) => ({ level: t.level, idx: Number(t.index), width: t.width, data: buf(t.data) })))
          .execute();
      }
      for (let i = 0; i < c.bundles.length; i += PG_BLOB_CHUNK) {
        await trx
          .insertInto('audit_bundles')
          .values(c.bundles.slice(i, i + PG_BLOB_CHUNK).map((b) => ({ idx: Number(b.index), width: b.width, data: buf(b.data) })))
          .execute();
      }
      for (let i = 0; i < c.index.length; i += PG_CHUNK) {
        const part = c.index.slice(i, i + PG_CHUNK);
        await trx
          .insertInto('audit_index')
          .values(part.map(([entry_id, idx]) => ({ entry_id, idx: Number(idx) })))
          .onConflict((oc) => oc.column('entry_id').doNothing()) // a duplicated id keeps its first index (see prepare())
          .execute();
        await trx
          .insertInto('audit_leaf_lookup')
          .values(part.map(([, idx, leafHash]) => ({ epoch: Math.floor(Number(idx) / LEAF_LOOKUP_EPOCH), prefix: leafPrefix(leafHash), idx: Number(idx) })))
          .execute();
      }
      for (let i = 0; i < c.seqs.length; i += PG_CHUNK) {
        const part = c.seqs.slice(i, i + PG_CHUNK);
        // Request rows and salts queued with the entries go to their tables (./queued-rows.ts).
        // (seqs are integers read from the queue, checked here, so they can be spelled in the SQL.)
        if (!part.every(Number.isSafeInteger)) throw new TypeError('audit queue seqs must be integers');
        const where = `seq IN (${part.join(', ')})`;
        // Lock the rows first, so that a concurrent erasure (which clears a queued salt) either
        // commits before the move reads them or waits for this transaction (then finds the salt moved).
        await sql.raw(`SELECT seq FROM audit_queue WHERE ${where} FOR UPDATE`).execute(trx);
        for (const q of moveQueuedRowsSql('postgres', where)) await sql.raw(q).execute(trx);
        const r = await trx.deleteFrom('audit_queue').where('seq', 'in', part).executeTakeFirst();
        if (Number(r.numDeletedRows) !== part.length) throw new Error('audit queue rows vanished during integration (a second integrator?)');
      }
      await trx
        .insertInto('audit_meta')
        .values({ key: 'integrated_size', value: size })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value: size }))
        .execute();
    });
  }

  // ----- tiles (TileReader) -----

  /**
   * Body of tile (level, index, width) for computing hashes: the stored tile of the smallest width
   * ≥ `width`, cut to `width` hashes (tiles are immutable and each narrower tile is a prefix of the
   * wider ones, spec §9.3), so roots and proofs work at any size up to the integrated one.
   * @throws TlogError `NOT_FOUND`
   */
  readTile(level: number, index: bigint, width: number): Uint8Array | Promise<Uint8Array> {
    if (this.#s) {
      const r = this.#s.tileAtLeast.get(level, index, width) as { data: Buffer } | undefined;
      if (!r) throw new TlogError('NOT_FOUND', `tile ${level}/${index}/${width} not found`);
      return u8(r.data).subarray(0, width * 32);
    }
    return (async () => {
      const r = await this.store.db
        .selectFrom('audit_tiles')
        .select('data')
        .where('level', '=', level)
        .where('idx', '=', Number(index))
        .where('width', '>=', width)
        .orderBy('width')
        .limit(1)
        .executeTakeFirst();
      if (!r) throw new TlogError('NOT_FOUND', `tile ${level}/${index}/${width} not found`);
      return u8(r.data as Buffer).subarray(0, width * 32);
    })();
  }

  /** Exact stored body of a tile, or undefined (no fallback; for serving). */
  async tileExact(level: number, index: bigint, width: number): Promise<Uint8Array | undefined> {
    if (this.#s) {
      const r = this.#s.tile.get(level, index, width) as { data: Buffer } | undefined;
      return r ? u8(r.data) : undefined;
    }
    const r = await this.store.db
      .selectFrom('audit_tiles')
      .select('data')
      .where('level', '=', level)
      .where('idx', '=', Number(index))
      .where('width', '=', width)
      .executeTakeFirst();
    return r ? u8(r.data as Buffer) : undefined;
  }

  /**
   * Body of entry bundle (index, width): the exact one, else the first `width` entries of the
   * smallest wider stored bundle (spec §9.3).
   * @throws TlogError `NOT_FOUND`, `MALFORMED_ENTRY_BUNDLE`
   */
  readEntryBundle(index: bigint, width: number): Uint8Array | Promise<Uint8Array> {
    const cut = (d: Uint8Array | undefined, w: number | undefined): Uint8Array => {
      if (!d || w === undefined) throw new TlogError('NOT_FOUND', `entry bundle ${index}/${width} not found`);
      return w === width ? d : encodeEntryBundle(decodeEntryBundle(d, w).slice(0, width));
    };
    if (this.#s) {
      const r = this.#s.bundleAtLeast.get(index, width) as { data: Buffer; width: number } | undefined;
      return cut(r ? u8(r.data) : undefined, r?.width);
    }
    return (async () => {
      const r = await this.store.db
        .selectFrom('audit_bundles')
        .select(['data', 'width'])
        .where('idx', '=', Number(index))
        .where('width', '>=', width)
        .orderBy('width')
        .limit(1)
        .executeTakeFirst();
      return cut(r ? u8(r.data as Buffer) : undefined, r?.width);
    })();
  }

  /** Exact stored body of an entry bundle, or undefined. */
  async bundleExact(index: bigint, width: number): Promise<Uint8Array | undefined> {
    if (this.#s) {
      const r = this.#s.bundle.get(index, width) as { data: Buffer } | undefined;
      return r ? u8(r.data) : undefined;
    }
    const r = await this.store.db.selectFrom('audit_bundles').select('data').where('idx', '=', Number(index)).where('width', '=', width).executeTakeFirst();
    return r ? u8(r.data as Buffer) : undefined;
  }

  // ----- checkpoints -----

  /** The signed checkpoint with the largest size, or undefined. */
  async latestCheckpoint(): Promise<StoredCheckpoint | undefined> {
    if (this.#s) {
      const r = this.#s.latestCheckpoint.get() as { size: number; note: string } | undefined;
      return r ? { size: BigInt(r.size), note: r.note } : undefined;
    }
    const r = await this.store.db.selectFrom('audit_checkpoints').select(['size', 'note']).orderBy('size', 'desc').limit(1).executeTakeFirst();
    return r ? { size: BigInt(r.size), note: r.note } : undefined;
  }

  /** The signed note for exactly `size`, or undefined. */
  async checkpointAt(size: bigint): Promise<string | undefined> {
    if (this.#s) return (this.#s.checkpointAt.get(size) as { note: string } | undefined)?.note;
    const r = await this.store.db.selectFrom('audit_checkpoints').select('note').where('size', '=', Number(size)).executeTakeFirst();
    return r?.note;
  }

  /** Stores a signed checkpoint (a size is signed once: a second insert for the same size fails). */
  async insertCheckpoint(size: bigint, note: string, now: number = Date.now()): Promise<void> {
    if (this.#s) {
      this.#s.insertCheckpoint.run(size, note, now);
      return;
    }
    await this.store.db.insertInto('audit_checkpoints').values({ size: Number(size), note, created_at: now }).execute();
  }

  // ----- index -----

  /** Leaf index of entry `id`, or undefined if it is not integrated (yet). */
  async indexOf(id: string): Promise<bigint | undefined> {
    if (this.#s) {
      const r = this.#s.indexOf.get(id) as { idx: number } | undefined;
      return r ? BigInt(r.idx) : undefined;
    }
    const r = await this.store.db.selectFrom('audit_index').select('idx').where('entry_id', '=', id).executeTakeFirst();
    return r ? BigInt(r.idx) : undefined;
  }

  /**
   * Lowest integrated leaf index whose leaf hash `LH(entry)` (spec §3) is `hex`, or undefined
   * (spec §10.1 `leaf_hash=` lookup). Probes `audit_leaf_lookup` one epoch at a time, oldest first,
   * and checks each candidate's full hash against its level-0 tile, so a 48-bit prefix collision never
   * returns a wrong index (see `./leaf-lookup.ts`). Cost: one index seek per 16,384 entries of the log.
   * @param hex the leaf hash as 64 lowercase hex digits; anything else (uppercase, wrong length,
   *   not hex) matches nothing
   * @throws the database error
   */
  async indexOfLeafHash(hex: string): Promise<bigint | undefined> {
    if (!/^[0-9a-f]{64}$/.test(hex)) return undefined;
    const want = Buffer.from(hex, 'hex');
    const prefix = leafPrefix(want);
    const matches = async (idx: number): Promise<boolean> => {
      const tile = await this.readTile(0, BigInt(Math.floor(idx / 256)), (idx % 256) + 1);
      const at = (idx % 256) * 32;
      return want.equals(tile.subarray(at, at + 32));
    };
    if (this.#s) {
      const s = this.#s;
      const top = (s.lookupTopEpoch.get() as [number | null])[0];
      if (top === null) return undefined;
      for (let e = 0; e <= top; e++) {
        for (const [idx] of s.lookupProbe.all(e, prefix) as Array<[number]>) if (await matches(idx)) return BigInt(idx);
      }
      return undefined;
    }
    // One round trip: a lateral probe per epoch (PostgreSQL 15 has no skip scan).
    const r = await sql<{ idx: string | number }>`select l.idx from generate_series(0, (select coalesce(max(epoch), -1) from audit_leaf_lookup)) as e(n)
      cross join lateral (select idx from audit_leaf_lookup where epoch = e.n and prefix = ${prefix}) as l order by l.idx`.execute(this.store.db);
    for (const row of r.rows) if (await matches(Number(row.idx))) return BigInt(row.idx);
    return undefined;
  }

  /**
   * Moves the request rows and salts of every queued entry to `requests` and `audit_secrets` and
   * clears them from the queue, leaving the entries queued (`./queued-rows.ts`). For a gateway
   * started with the audit log off, whose queued rows no integrator would move. One transaction.
   * @returns the number of queue rows released
   */
  async releaseQueuedRows(): Promise<number> {
    const where = `${CARRIES_REQUEST} OR salt IS NOT NULL`;
    const clear = clearQueuedRowsSql(where);
    const native = this.store.sqlite;
    if (native) {
      const moves = moveQueuedRowsSql('sqlite', where).map((q) => native.prepare(q));
      const upd = native.prepare(clear);
      return native.transaction(() => {
        for (const m of moves) m.run();
        return upd.run().changes;
      }).immediate();
    }
    return this.store.db.transaction().execute(async (trx) => {
      await sql.raw(`SELECT seq FROM audit_queue WHERE ${where} FOR UPDATE`).execute(trx);
      for (const q of moveQueuedRowsSql('postgres', where)) await sql.raw(q).execute(trx);
      return Number((await sql.raw(clear).execute(trx)).numAffectedRows ?? 0);
    });
  }

  // ----- salts -----

  /**
   * The commitment salt of entry `id` — in `audit_secrets`, or still in its queue row before
   * integration (`./queued-rows.ts`) — or undefined (never written, or erased).
   */
  async saltOf(id: string): Promise<Uint8Array | undefined> {
    if (this.#s) {
      const r = this.#s.saltOf.get(id, id) as { salt: Buffer } | undefined;
      return r ? u8(r.salt) : undefined;
    }
    const r = await sql<{ salt: Buffer }>`select salt from audit_secrets where entry_id = ${id} union all select salt from audit_queue where entry_id = ${id} and salt is not null limit 1`.execute(this.store.db);
    return r.rows[0] ? u8(r.rows[0].salt) : undefined;
  }

  // ----- retained content (./content.ts) -----

  /** The sealed request and response bytes of entry `id` (`audit_content`), or undefined (none retained, or erased). */
  async contentOf(id: string): Promise<SealedContent | undefined> {
    const r = await this.store.db.selectFrom('audit_content').select(['key_id', 'nonce', 'data']).where('entry_id', '=', id).executeTakeFirst();
    return r ? { id, keyId: r.key_id, nonce: u8(r.nonce as Buffer), data: u8(r.data as Buffer) } : undefined;
  }

  /**
   * Deletes retained content stored before `before` (ms since the epoch; `max_age_days`), oldest
   * first, in chunks of at most `maxRows` rows and about `maxBytes` bytes of sealed data (at least one
   * row), yielding to the event loop between chunks — so that no statement holds the database (or,
   * on SQLite, the event loop) for long, whatever the size of the bodies. Salts stay: the
   * commitments can still be opened against bytes someone presents.
   * @param opts `maxRows` (default 1,000), `maxBytes` (default 8 MiB)
   * @returns rows deleted and the number of DELETE statements used
   */
  async purgeContent(before: number, opts: { maxRows?: number; maxBytes?: number } = {}): Promise<{ rows: number; chunks: number }> {
    const maxRows = opts.maxRows ?? 1_000;
    const maxBytes = opts.maxBytes ?? 8 * 1024 * 1024;
    let rows = 0;
    let chunks = 0;
    for (;;) {
      const candidates = await this.store.db
        .selectFrom('audit_content')
        .select(['entry_id', sql<number>`length(data)`.as('n')])
        .where('created_at', '<', before)
        .orderBy('created_at')
        .limit(maxRows)
        .execute();
      if (candidates.length === 0) return { rows, chunks };
      const ids: string[] = [];
      let bytes = 0;
      for (const c of candidates) {
        if (ids.length > 0 && bytes + Number(c.n) > maxBytes) break;
        ids.push(c.entry_id);
        bytes += Number(c.n);
      }
      const r = await this.store.db.deleteFrom('audit_content').where('entry_id', 'in', ids).where('created_at', '<', before).executeTakeFirst();
      rows += Number(r.numDeletedRows);
      chunks++;
      await new Promise<void>((resolveTurn) => setImmediate(resolveTurn));
    }
  }

  /**
   * Deletes the salt of entry `id`, from `audit_secrets` and from its queue row if not integrated yet.
   * @returns whether a salt was deleted
   */
  async deleteSalt(id: string): Promise<boolean> {
    if (this.#s) return this.#s.deleteSaltTx(id, null, 0);
    return this.store.db.transaction().execute(async (trx) => (await deleteSaltPg(trx, id)) > 0);
  }

  /**
   * Erasure (spec: the salt is deleted, the entry stays): deletes the salt of entry `id` — from
   * `audit_secrets` and from its queue row if not integrated yet — and any retained content
   * (`audit_content`), and queues the `erasure` entry, in one transaction.
   * @param now ms since the epoch (`created_at` of the queued entry)
   * @throws Error `entry <id> has no commitment salt (already erased?)` when there was none (nothing is written)
   */
  async eraseSalt(id: string, erasure: { id: string; bytes: Uint8Array }, now: number): Promise<void> {
    const none = () => new Error(`entry ${id} has no commitment salt (already erased?)`);
    if (this.#s) {
      if (!this.#s.deleteSaltTx(id, erasure, now)) throw none();
      return;
    }
    await this.store.db.transaction().execute(async (trx) => {
      if ((await deleteSaltPg(trx, id)) === 0) throw none();
      await trx.insertInto('audit_queue').values({ entry_id: erasure.id, entry: buf(erasure.bytes), created_at: now }).execute();
    });
  }
}

/**
 * PostgreSQL: deletes the salt (and retained content) of entry `id` inside `trx`. The queue row goes first: if the
 * integrator is moving it (it locks the rows it moves), this waits for that commit, and the DELETE,
 * a new statement, then sees the moved salt.
 * @returns how many salts were deleted (0 or 1)
 */
async function deleteSaltPg(trx: Transaction<Database>, id: string): Promise<number> {
  const q = await trx.updateTable('audit_queue').set({ salt: null }).where('entry_id', '=', id).where('salt', 'is not', null).executeTakeFirst();
  const r = await trx.deleteFrom('audit_secrets').where('entry_id', '=', id).executeTakeFirst();
  const c = await trx.deleteFrom('audit_content').where('entry_id', '=', id).executeTakeFirst();
  return Number(q.numUpdatedRows) + Number(r.numDeletedRows) + Number(c.numDeletedRows);
}

function prepare(db: NonNullable<Store['sqlite']>) {
  const insTile = db.prepare('INSERT INTO audit_tiles (level, idx, width, data) VALUES (?, ?, ?, ?)');
  const insBundle = db.prepare('INSERT INTO audit_bundles (idx, width, data) VALUES (?, ?, ?)');
  // A second entry with an id already indexed stays in the tree (the spec allows duplicated entries)
  // but not in the id index, which keeps the first: a duplicate must never stop the log.
  const insIndex = db.prepare('INSERT INTO audit_index (entry_id, idx) VALUES (?, ?) ON CONFLICT (entry_id) DO NOTHING');
  const insLookup = db.prepare('INSERT INTO audit_leaf_lookup (epoch, prefix, idx) VALUES (?, ?, ?)');
  const delQueue = db.prepare('DELETE FROM audit_queue WHERE seq = ?');
  const delRange = db.prepare('DELETE FROM audit_queue WHERE seq BETWEEN ? AND ?');
  const setSize = db.prepare("INSERT INTO audit_meta (key, value) VALUES ('integrated_size', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  const delSalt = db.prepare('DELETE FROM audit_secrets WHERE entry_id = ?');
  // Prepared on first use: a store migrated only up to 0007 (tests of older schemas) has no such table.
  let delContent: ReturnType<typeof db.prepare<unknown[]>> | undefined;
  const clearQueuedSalt = db.prepare('UPDATE audit_queue SET salt = NULL WHERE entry_id = ? AND salt IS NOT NULL');
  const insErasure = db.prepare('INSERT INTO audit_queue (entry_id, entry, created_at) VALUES (?, ?, ?)');
  // Request rows and salts queued with the entries go to their tables (./queued-rows.ts).
  const moveRange = moveQueuedRowsSql('sqlite', 'seq BETWEEN ? AND ?').map((q) => db.prepare(q));
  const moveOne = moveQueuedRowsSql('sqlite', 'seq = ?').map((q) => db.prepare(q));
  return {
    getMeta: db.prepare('SELECT value FROM audit_meta WHERE key = ?'),
    initMeta: db.prepare('INSERT INTO audit_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING'),
    casMeta: db.prepare('UPDATE audit_meta SET value = ? WHERE key = ? AND value = ?'),
    readQueue: db.prepare('SELECT seq, entry_id, entry, leaf_hash FROM audit_queue ORDER BY seq LIMIT ?').raw(true),
    queueLength: db.prepare('SELECT count(*) AS n FROM audit_queue'),
    queueHead: db.prepare('SELECT seq, entry_id FROM audit_queue ORDER BY seq LIMIT 1').raw(true),
    queuedIdAt: db.prepare('SELECT entry_id FROM audit_queue WHERE seq = ?').raw(true),
    queuedEntry: db.prepare('SELECT entry FROM audit_queue WHERE entry_id = ? ORDER BY seq LIMIT 1'),
    tile: db.prepare('SELECT data FROM audit_tiles WHERE level = ? AND idx = ? AND width = ?'),
    bundle: db.prepare('SELECT data FROM audit_bundles WHERE idx = ? AND width = ?'),
    tileAtLeast: db.prepare('SELECT data FROM audit_tiles WHERE level = ? AND idx = ? AND width >= ? ORDER BY width LIMIT 1'),
    bundleAtLeast: db.prepare('SELECT data, width FROM audit_bundles WHERE idx = ? AND width >= ? ORDER BY width LIMIT 1'),
    latestCheckpoint: db.prepare('SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1'),
    checkpointAt: db.prepare('SELECT note FROM audit_checkpoints WHERE size = ?'),
    insertCheckpoint: db.prepare('INSERT INTO audit_checkpoints (size, note, created_at) VALUES (?, ?, ?)'),
    indexOf: db.prepare('SELECT idx FROM audit_index WHERE entry_id = ?'),
    lookupTopEpoch: db.prepare('SELECT max(epoch) FROM audit_leaf_lookup').raw(true),
    lookupProbe: db.prepare('SELECT idx FROM audit_leaf_lookup WHERE epoch = ? AND prefix = ? ORDER BY idx').raw(true),
    saltOf: db.prepare('SELECT salt FROM audit_secrets WHERE entry_id = ? UNION ALL SELECT salt FROM audit_queue WHERE entry_id = ? AND salt IS NOT NULL LIMIT 1'),
    /** Deletes the salt of `id` (table and queue row) and its retained content and, if any was deleted and `erasure` is given, queues that entry. @returns whether anything was deleted */
    deleteSaltTx: db.transaction((id: string, erasure: { id: string; bytes: Uint8Array } | null, now: number): boolean => {
      const deleted = clearQueuedSalt.run(id).changes + delSalt.run(id).changes + (delContent ??= db.prepare('DELETE FROM audit_content WHERE entry_id = ?')).run(id).changes > 0;
      if (deleted && erasure) insErasure.run(erasure.id, buf(erasure.bytes), now);
      return deleted;
    }),
    commit: db.transaction((c: IntegrationCommit, size: string) => {
      for (const t of c.tiles) insTile.run(t.level, t.index, t.width, buf(t.data));
      for (const b of c.bundles) insBundle.run(b.index, b.width, buf(b.data));
      for (const [id, idx, leafHash] of c.index) {
        insIndex.run(id, idx);
        const i = Number(idx);
        insLookup.run(Math.floor(i / LEAF_LOOKUP_EPOCH), leafPrefix(leafHash), i);
      }
      const first = c.seqs[0];
      const last = c.seqs[c.seqs.length - 1];
      if (first !== undefined && last !== undefined && last - first + 1 === c.seqs.length) {
        // The usual case: a contiguous run of seqs (read in seq order) — one range delete.
        for (const m of moveRange) m.run(first, last);
        if (delRange.run(first, last).changes !== c.seqs.length) throw new Error('audit queue rows vanished during integration (a second integrator?)');
      } else {
        for (const seq of c.seqs) {
          for (const m of moveOne) m.run(seq);
          if (delQueue.run(seq).changes !== 1) throw new Error(`audit queue row ${seq} vanished during integration (a second integrator?)`);
        }
      }
      setSize.run(size);
    }),
  };
}
