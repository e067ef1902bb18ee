/**
 * C2SP tlog-tiles (spec §9): tile and entry-bundle paths, which tiles exist for a tree size, tile and
 * bundle encodings, reading subtree hashes (hence proofs and roots) from tiles, an integrator that
 * turns appended entries into new tiles and bundles, and a full audit of a log from its tiles.
 *
 * Tile height is 8: a full tile holds 256 hashes. Level-L tile N position i holds the MTH of the
 * complete subtree of 256^L entries starting at entry (256·N + i)·256^L. Partial tiles (`.p/W`,
 * W = 1…255) hold the first W hashes and are never hashed into the level above.
 *
 * No HTTP here: readers are abstract ({@link TileReader}); {@link createFetchTileReader} only needs a
 * `fetch`-like callback. Pure module (no Node-only API).
 */
import { TlogError } from './errors.ts';
import { bytesEqual, concatBytes, toU63, utf8Decode, type Uint63 } from './encoding.ts';
import { HASH_SIZE, assertHash, defaultTreeHasher, type TreeHasher } from './hash.ts';
import {
  completeSubtreeHash,
  consistencyProofAsync,
  foldRight,
  inclusionProofAsync,
  rootHashAsync,
  type AsyncNodeReader,
  type NodeId,
} from './tree.ts';

/** Tile height (spec §9.2). */
export const TILE_HEIGHT = 8;
/** Hashes in a full tile, entries in a full bundle: 2^8 = 256. */
export const TILE_WIDTH = 256;
/** Maximum entry size (16-bit length prefix in bundles, spec §2, §9.4). */
export const MAX_ENTRY_SIZE = 65535;

const W = 256n;

/** A hash tile: `level` 0–63, `index` N, `width` 1–256 (256 = full tile, no `.p/` suffix). */
export interface TileSpec {
  readonly level: number;
  readonly index: bigint;
  readonly width: number;
}

/** An entry bundle: `index` N (entries 256·N …), `width` 1–256 (256 = full bundle). */
export interface BundleSpec {
  readonly index: bigint;
  readonly width: number;
}

/** A parsed tile or bundle path. */
export type TilePath = ({ readonly kind: 'tile' } & TileSpec) | ({ readonly kind: 'entries' } & BundleSpec);

// ---------------------------------------------------------------------------------------------------
// Paths (spec §9.2, §9.4)
// ---------------------------------------------------------------------------------------------------

/**
 * Encodes a tile index as 3-digit groups, all but the last prefixed with `x` (spec §9.2):
 * 0 → `000`, 1000 → `x001/000`, 1234067 → `x001/x234/067`.
 */
export function formatTileIndex(index: Uint63): string {
  let s = toU63(index, 'tile index').toString();
  while (s.length % 3 !== 0) s = '0' + s;
  const groups: string[] = [];
  for (let i = 0; i < s.length; i += 3) groups.push(s.slice(i, i + 3));
  return groups.map((g, i) => (i < groups.length - 1 ? 'x' + g : g)).join('/');
}

/**
 * Strictly parses a tile index path element sequence (inverse of {@link formatTileIndex}); rejects
 * non-canonical forms such as `x000/007` or `7`.
 * @throws TlogError `MALFORMED_TILE_PATH`
 */
export function parseTileIndex(s: string): bigint {
  const groups = s.split('/');
  let digits = '';
  groups.forEach((g, i) => {
    const last = i === groups.length - 1;
    if (!(last ? /^[0-9]{3}$/ : /^x[0-9]{3}$/).test(g)) {
      throw new TlogError('MALFORMED_TILE_PATH', `bad tile index element ${JSON.stringify(g)}`);
    }
    digits += last ? g : g.slice(1);
  });
  const v = BigInt(digits);
  if (v >= 1n << 63n || formatTileIndex(v) !== s) {
    throw new TlogError('MALFORMED_TILE_PATH', `non-canonical tile index ${JSON.stringify(s)}`);
  }
  return v;
}

function checkWidth(width: number): void {
  if (!Number.isInteger(width) || width < 1 || width > TILE_WIDTH) {
    throw new TlogError('INVALID_ARGUMENT', `tile width must be an integer in 1..256, got ${width}`);
  }
}

function checkLevel(level: number): void {
  if (!Number.isInteger(level) || level < 0 || level > 63) {
    throw new TlogError('INVALID_ARGUMENT', `tile level must be an integer in 0..63, got ${level}`);
  }
}

/** `tile/<L>/<N>` or `tile/<L>/<N>.p/<W>` (relative to the log prefix, spec §9.2). */
export function tilePath(level: number, index: Uint63, width: number = TILE_WIDTH): string {
  checkLevel(level);
  checkWidth(width);
  return `tile/${level}/${formatTileIndex(index)}${width === TILE_WIDTH ? '' : `.p/${width}`}`;
}

/** `tile/entries/<N>` or `tile/entries/<N>.p/<W>` (spec §9.4). */
export function entryBundlePath(index: Uint63, width: number = TILE_WIDTH): string {
  checkWidth(width);
  return `tile/entries/${formatTileIndex(index)}${width === TILE_WIDTH ? '' : `.p/${width}`}`;
}

/**
 * Strictly parses a tile or bundle path relative to the prefix (`tile/0/x001/000.p/44`,
 * `tile/entries/000`). Rejects leading zeros in level or width, `.p/0`, `.p/256`, levels above 63,
 * non-canonical index groups, tiles that would start at or beyond entry 2^63, and anything else
 * (spec §9.2, pitfall 9).
 * @throws TlogError `MALFORMED_TILE_PATH`
 */
export function parseTilePath(path: string): TilePath {
  const m = /^tile\/(entries|0|[1-9][0-9]?)\/((?:x[0-9]{3}\/)*[0-9]{3})(?:\.p\/([1-9][0-9]{0,2}))?$/.exec(path);
  if (!m) throw new TlogError('MALFORMED_TILE_PATH', `malformed tile path ${JSON.stringify(path)}`);
  const index = parseTileIndex(m[2]!);
  const width = m[3] === undefined ? TILE_WIDTH : Number(m[3]);
  if (m[3] !== undefined && width >= TILE_WIDTH) {
    throw new TlogError('MALFORMED_TILE_PATH', `partial width must be 1..255 in ${JSON.stringify(path)}`);
  }
  if (m[1] === 'entries') {
    if (index * W >= 1n << 63n) throw new TlogError('MALFORMED_TILE_PATH', 'bundle beyond the maximum tree size');
    return { kind: 'entries', index, width };
  }
  const level = Number(m[1]);
  if (level > 63) throw new TlogError('MALFORMED_TILE_PATH', `tile level ${level} above 63`);
  if (index * W ** BigInt(level + 1) >= 1n << 63n) {
    throw new TlogError('MALFORMED_TILE_PATH', 'tile starts beyond the maximum tree size');
  }
  return { kind: 'tile', level, index, width };
}

// ---------------------------------------------------------------------------------------------------
// Which tiles exist for a tree size (spec §9.2)
// ---------------------------------------------------------------------------------------------------

/** Tiles of one level for a tree size: `fullTiles` full tiles, then one partial of `partialWidth` (0 = none). */
export interface LevelLayout {
  readonly level: number;
  readonly fullTiles: bigint;
  readonly partialWidth: number;
}

/**
 * The tile layout of a tree of `size` entries (spec §9.2): for each level L with
 * floor(size / 256^L) > 0, floor(size / 256^(L+1)) full tiles and a partial tile of width
 * floor(size / 256^L) mod 256 if non-zero. Empty for size 0.
 */
export function tileLayout(size: Uint63): LevelLayout[] {
  const s = toU63(size, 'tree size');
  const out: LevelLayout[] = [];
  for (let level = 0, count = s; count > 0n; level++, count /= W) {
    out.push({ level, fullTiles: count / W, partialWidth: Number(count % W) });
  }
  return out;
}

/**
 * Width of tile `(level, index)` in the tree of `size` entries: 256 if full, 1–255 if partial, 0 if the
 * tile does not exist at that size.
 */
export function tileWidth(level: number, index: Uint63, size: Uint63): number {
  checkLevel(level);
  const n = toU63(index, 'tile index');
  const count = toU63(size, 'tree size') / W ** BigInt(level);
  const rem = count - n * W;
  return rem <= 0n ? 0 : rem >= W ? TILE_WIDTH : Number(rem);
}

/** Width of entry bundle `index` in the tree of `size` entries (0 if it does not exist). */
export function bundleWidth(index: Uint63, size: Uint63): number {
  return tileWidth(0, index, size);
}

/** Every hash tile of a tree of `size` entries, level by level, full tiles then the partial one. */
export function* tilesForSize(size: Uint63): Generator<TileSpec> {
  for (const l of tileLayout(size)) {
    for (let i = 0n; i < l.fullTiles; i++) yield { level: l.level, index: i, width: TILE_WIDTH };
    if (l.partialWidth > 0) yield { level: l.level, index: l.fullTiles, width: l.partialWidth };
  }
}

/** Every entry bundle of a tree of `size` entries. */
export function* bundlesForSize(size: Uint63): Generator<BundleSpec> {
  const s = toU63(size, 'tree size');
  for (let i = 0n; i < s / W; i++) yield { index: i, width: TILE_WIDTH };
  if (s % W > 0n) yield { index: s / W, width: Number(s % W) };
}

/**
 * The hash tiles whose content is new when the tree grows from `oldSize` to `newSize` (what a log
 * must write before publishing the new checkpoint, spec §9.3): tiles that did not exist or were
 * narrower at `oldSize`.
 * @throws TlogError `INVALID_ARGUMENT` if `oldSize > newSize`
 */
export function* newTiles(oldSize: Uint63, newSize: Uint63): Generator<TileSpec> {
  const a = toU63(oldSize, 'old size');
  const b = toU63(newSize, 'new size');
  if (a > b) throw new TlogError('INVALID_ARGUMENT', 'old size exceeds new size');
  for (let level = 0, div = 1n; b / div > 0n; level++, div *= W) {
    const c0 = a / div;
    const c1 = b / div;
    for (let n = c0 / W; n * W < c1; n++) {
      const w1 = c1 - n * W >= W ? TILE_WIDTH : Number(c1 - n * W);
      const w0 = c0 - n * W >= W ? TILE_WIDTH : c0 > n * W ? Number(c0 - n * W) : 0;
      if (w1 !== w0) yield { level, index: n, width: w1 };
    }
  }
}

/** The entry bundles whose content is new when the tree grows from `oldSize` to `newSize`. */
export function* newBundles(oldSize: Uint63, newSize: Uint63): Generator<BundleSpec> {
  for (const t of newTiles(oldSize, newSize)) if (t.level === 0) yield { index: t.index, width: t.width };
}

// ---------------------------------------------------------------------------------------------------
// Tile and bundle contents (spec §9.2, §9.4)
// ---------------------------------------------------------------------------------------------------

/** Concatenates 1–256 32-byte hashes into a tile body (no header). */
export function encodeHashTile(hashes: readonly Uint8Array[]): Uint8Array {
  checkWidth(hashes.length);
  for (const h of hashes) assertHash(h, 'tile hash');
  return concatBytes(...hashes);
}

/**
 * Splits a tile body into its hashes (views into `data`).
 * @param width expected width; the body must be exactly `32 · width` bytes
 * @throws TlogError `MALFORMED_TILE`
 */
export function decodeHashTile(data: Uint8Array, width: number): Uint8Array[] {
  checkWidth(width);
  if (!(data instanceof Uint8Array) || data.length !== width * HASH_SIZE) {
    throw new TlogError('MALFORMED_TILE', `tile body must be ${width * HASH_SIZE} bytes, got ${data?.length}`);
  }
  const out: Uint8Array[] = [];
  for (let i = 0; i < width; i++) out.push(data.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE));
  return out;
}

/**
 * The hash that a *full* tile contributes to the level above: the root of the 8-level binary tree over
 * its 256 hashes (spec §9.2).
 * @throws TlogError `MALFORMED_TILE` if `data` is not 8192 bytes
 */
export function fullTileHash(data: Uint8Array, hasher: TreeHasher = defaultTreeHasher): Uint8Array {
  if (data.length !== TILE_WIDTH * HASH_SIZE) throw new TlogError('MALFORMED_TILE', 'not a full tile (8192 bytes)');
  return completeSubtreeHash(data, 0, TILE_WIDTH, hasher);
}

/**
 * Encodes an entry bundle: for each entry a 2-byte big-endian length then the bytes (spec §9.4).
 * @throws TlogError `INVALID_ARGUMENT` for more than 256 entries or an entry over 65 535 bytes
 */
export function encodeEntryBundle(entries: readonly Uint8Array[]): Uint8Array {
  if (entries.length < 1 || entries.length > TILE_WIDTH) throw new TlogError('INVALID_ARGUMENT', 'a bundle holds 1..256 entries');
  let n = 0;
  for (const e of entries) {
    if (!(e instanceof Uint8Array)) throw new TlogError('INVALID_ARGUMENT', 'entries must be Uint8Arrays');
    if (e.length > MAX_ENTRY_SIZE) throw new TlogError('INVALID_ARGUMENT', `entry of ${e.length} bytes exceeds 65535`);
    n += 2 + e.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const e of entries) {
    out[off] = e.length >> 8;
    out[off + 1] = e.length & 0xff;
    out.set(e, off + 2);
    off += 2 + e.length;
  }
  return out;
}

/**
 * Decodes an entry bundle strictly: exactly `expectedCount` entries (if given) and no trailing bytes.
 * @returns views into `data`
 * @throws TlogError `MALFORMED_ENTRY_BUNDLE`
 */
export function decodeEntryBundle(data: Uint8Array, expectedCount?: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < data.length) {
    if (off + 2 > data.length) throw new TlogError('MALFORMED_ENTRY_BUNDLE', 'truncated length prefix');
    const len = (data[off]! << 8) | data[off + 1]!;
    if (off + 2 + len > data.length) throw new TlogError('MALFORMED_ENTRY_BUNDLE', 'truncated entry');
    out.push(data.subarray(off + 2, off + 2 + len));
    off += 2 + len;
    if (out.length > TILE_WIDTH) throw new TlogError('MALFORMED_ENTRY_BUNDLE', 'more than 256 entries');
  }
  if (expectedCount !== undefined && out.length !== expectedCount) {
    throw new TlogError('MALFORMED_ENTRY_BUNDLE', `bundle holds ${out.length} entries, expected ${expectedCount}`);
  }
  return out;
}

/**
 * Checks the invariant `LH(entry j of bundle N) == hash j of tile/0/N` (spec §9.4).
 * @throws TlogError `TILE_MISMATCH` (with the first mismatching position), `MALFORMED_*`
 */
export function checkBundleAgainstTile(
  bundle: Uint8Array,
  tile: Uint8Array,
  width: number,
  hasher: TreeHasher = defaultTreeHasher,
): Uint8Array[] {
  const entries = decodeEntryBundle(bundle, width);
  const hashes = decodeHashTile(tile, width);
  for (let j = 0; j < width; j++) {
    if (!bytesEqual(hasher.hashLeaf(entries[j]!), hashes[j]!)) {
      throw new TlogError('TILE_MISMATCH', `entry ${j} of the bundle does not hash to hash ${j} of its level-0 tile`);
    }
  }
  return entries;
}

// ---------------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------------

/**
 * Source of tiles and bundles (e.g. HTTP GETs under the log prefix, a database, files). Implementations
 * return the exact body; for a partial tile/bundle that is gone they MAY return the first `width`
 * hashes/entries of the full one (spec §9.3). Missing resources should reject with
 * `TlogError('NOT_FOUND')`.
 */
export interface TileReader {
  /** Body of `tile/<level>/<index>[.p/<width>]` (exactly `32 · width` bytes). */
  readTile(level: number, index: bigint, width: number): Promise<Uint8Array> | Uint8Array;
  /** Body of `tile/entries/<index>[.p/<width>]`. */
  readEntryBundle(index: bigint, width: number): Promise<Uint8Array> | Uint8Array;
}

/** Reads tiles with de-duplication of concurrent requests for the same tile. */
class TileCache {
  readonly #reader: TileReader;
  readonly #cache = new Map<string, Promise<Uint8Array>>();
  reads = 0;
  constructor(reader: TileReader) {
    this.#reader = reader;
  }
  get(level: number, index: bigint, width: number): Promise<Uint8Array> {
    const key = `${level}/${index}/${width}`;
    let p = this.#cache.get(key);
    if (!p) {
      this.reads++;
      p = Promise.resolve(this.#reader.readTile(level, index, width)).then((data) => {
        if (!(data instanceof Uint8Array) || data.length !== width * HASH_SIZE) {
          throw new TlogError(
            'MALFORMED_TILE',
            `${tilePath(level, index, width)}: body must be ${width * HASH_SIZE} bytes, got ${data?.length}`,
          );
        }
        return data;
      });
      this.#cache.set(key, p);
    }
    return p;
  }
}

/**
 * A bounded, shared cache of the subtree hashes inside hash tiles, for a server that computes many
 * proofs from the tiles of ONE log (spec §9.2). A cached tile is *expanded*: its hashes and every
 * complete subtree hash above them within the tile (`width − 1` node hashes, ≈ 16 KiB for a full
 * tile), so a later proof through it reads no tile and hashes nothing there.
 *
 * Without a cache, each proof hashes up to 247 nodes per tile it crosses (the sibling subtrees
 * inside the tile). Proofs for random entries share their upper tiles (at 10 M entries, one of
 * 153 level-1 tiles and the level-2 tile), while level-0 tiles are rarely hit twice; by default only
 * tiles of level ≥ `minLevel` (1) are cached, so a stream of random level-0 tiles does not evict them.
 *
 * Keyed by level, index and width: the body of `tile/L/N[.p/W]` never changes in an append-only log,
 * so entries never go stale. Do not share one cache between logs (or between a log and a fork of it
 * being audited). Least-recently-used eviction beyond `maxTiles`.
 */
export class TileHashCache {
  readonly maxTiles: number;
  readonly minLevel: number;
  readonly #map = new Map<string, Uint8Array[]>();
  /** Lookups answered from the cache, and those that were not (for metrics and tests). */
  hits = 0;
  misses = 0;

  /**
   * @param opts `maxTiles`: most expanded tiles kept (default 256, ≈ 4 MiB); `minLevel`: lowest tile
   *   level cached (default 1)
   * @throws TlogError `INVALID_ARGUMENT` for a `maxTiles` below 1 or a `minLevel` outside 0–63
   */
  constructor(opts: { maxTiles?: number; minLevel?: number } = {}) {
    const maxTiles = opts.maxTiles ?? 256;
    const minLevel = opts.minLevel ?? 1;
    if (!Number.isSafeInteger(maxTiles) || maxTiles < 1) throw new TlogError('INVALID_ARGUMENT', 'maxTiles must be an integer ≥ 1');
    if (!Number.isInteger(minLevel) || minLevel < 0 || minLevel > 63) throw new TlogError('INVALID_ARGUMENT', 'minLevel must be 0–63');
    this.maxTiles = maxTiles;
    this.minLevel = minLevel;
  }

  /** Expanded tiles held. */
  get size(): number {
    return this.#map.size;
  }

  /** @internal The expansion of a tile (`rows[r]`: its subtree hashes of height r, concatenated), or undefined. */
  get(level: number, index: bigint, width: number): Uint8Array[] | undefined {
    const key = `${level}/${index}/${width}`;
    const rows = this.#map.get(key);
    if (rows) {
      this.hits++;
      this.#map.delete(key);
      this.#map.set(key, rows);
    } else {
      this.misses++;
    }
    return rows;
  }

  /** @internal Expands `data` (the tile's `32 · width`-byte body) and keeps it; returns the expansion. */
  put(level: number, index: bigint, width: number, data: Uint8Array, hasher: TreeHasher): Uint8Array[] {
    const rows = expandTile(data, width, hasher);
    const key = `${level}/${index}/${width}`;
    this.#map.delete(key);
    this.#map.set(key, rows);
    while (this.#map.size > this.maxTiles) this.#map.delete(this.#map.keys().next().value as string);
    return rows;
  }

  /** Drops every cached tile. */
  clear(): void {
    this.#map.clear();
  }
}

/** `rows[r]` = the complete subtree hashes of height r (2^r tile hashes each) of a tile, concatenated. */
function expandTile(data: Uint8Array, width: number, hasher: TreeHasher): Uint8Array[] {
  // A copy, never a view: `slice` of a Node.js buffer shares its memory, and proofs hand these bytes out.
  const rows: Uint8Array[] = [new Uint8Array(data.subarray(0, width * HASH_SIZE))];
  for (let r = 1, n = width >> 1; r < TILE_HEIGHT && n > 0; r++, n >>= 1) {
    const below = rows[r - 1]!;
    const row = new Uint8Array(n * HASH_SIZE);
    for (let i = 0; i < n; i++) {
      const p = 2 * i * HASH_SIZE;
      row.set(hasher.hashChildren(below.subarray(p, p + HASH_SIZE), below.subarray(p + HASH_SIZE, p + 2 * HASH_SIZE)), i * HASH_SIZE);
    }
    rows.push(row);
  }
  return rows;
}

/** Where a stored subtree hash lives in the tiles of a tree of `size` entries. */
function locate(id: NodeId, size: bigint): { level: number; index: bigint; width: number; offset: number; count: number } {
  const level = Math.floor(id.level / TILE_HEIGHT);
  const r = id.level % TILE_HEIGHT;
  const start = id.index << BigInt(r);
  const index = start / W;
  const offset = Number(start % W);
  const count = 1 << r;
  const width = tileWidth(level, index, size);
  if (width < offset + count) {
    throw new TlogError('INVALID_ARGUMENT', `subtree (level ${id.level}, index ${id.index}) is not complete in a tree of size ${size}`);
  }
  return { level, index, width, offset, count };
}

/**
 * Reads the hashes of complete subtrees from the tiles of a tree of `size` entries (spec §9.2): a
 * subtree at binary level h = 8L + r comes from the level-L tile, hashing the 2^r hashes below it.
 * Each tile is fetched once, all in parallel.
 * @throws TlogError `INVALID_ARGUMENT` if a requested subtree is not complete at `size`,
 *   `MALFORMED_TILE` for a body of the wrong length, or whatever the reader throws
 */
export async function readHashesFromTiles(
  size: Uint63,
  ids: readonly NodeId[],
  reader: TileReader,
  hasher: TreeHasher = defaultTreeHasher,
): Promise<Uint8Array[]> {
  return readWithCache(toU63(size, 'tree size'), ids, new TileCache(reader), hasher);
}

async function readWithCache(
  size: bigint,
  ids: readonly NodeId[],
  cache: TileCache,
  hasher: TreeHasher,
  shared?: TileHashCache,
): Promise<Uint8Array[]> {
  const locs = ids.map((id) => locate(id, size));
  const out: Uint8Array[] = new Array(locs.length);
  const rest: number[] = [];
  locs.forEach((l, i) => {
    const rows = shared && l.level >= shared.minLevel ? shared.get(l.level, l.index, l.width) : undefined;
    if (rows) out[i] = subtreeFromRows(rows, l.offset, l.count);
    else rest.push(i);
  });
  if (rest.length === 0) return out;
  const datas = await Promise.all(rest.map((i) => cache.get(locs[i]!.level, locs[i]!.index, locs[i]!.width)));
  const expanded = new Map<string, Uint8Array[]>(); // tiles this batch expanded (several ids may share one)
  rest.forEach((i, k) => {
    const l = locs[i]!;
    if (shared && l.level >= shared.minLevel) {
      const key = `${l.level}/${l.index}/${l.width}`;
      let rows = expanded.get(key);
      if (!rows) expanded.set(key, (rows = shared.put(l.level, l.index, l.width, datas[k]!, hasher)));
      out[i] = subtreeFromRows(rows, l.offset, l.count);
    } else {
      out[i] = completeSubtreeHash(datas[k]!, l.offset, l.count, hasher);
    }
  });
  return out;
}

/** The hash of the complete subtree of `count` (a power of two, 1–128) tile hashes at `offset`, from an expanded tile. */
function subtreeFromRows(rows: Uint8Array[], offset: number, count: number): Uint8Array {
  const r = 31 - Math.clz32(count);
  if (r >= rows.length) throw new TlogError('INVALID_ARGUMENT', 'subtree beyond the tile');
  const at = (offset >> r) * HASH_SIZE;
  return rows[r]!.slice(at, at + HASH_SIZE);
}

/**
 * An {@link AsyncNodeReader} over the tiles of a tree of `size` entries (for the proof functions of
 * `tree.ts`). With `cache`, subtree hashes of tiles at or above its `minLevel` come from (and go to)
 * that shared {@link TileHashCache}.
 */
export function tileNodeReader(size: Uint63, reader: TileReader, hasher: TreeHasher = defaultTreeHasher, cache?: TileHashCache): AsyncNodeReader {
  const s = toU63(size, 'tree size');
  const tiles = new TileCache(reader);
  return (ids) => readWithCache(s, ids, tiles, hasher, cache);
}

/**
 * Inclusion proof of entry `index` in the tree of `size` entries, computed from tiles (spec §5, §9);
 * `cache` as in {@link tileNodeReader}.
 */
export function inclusionProofFromTiles(
  index: Uint63,
  size: Uint63,
  reader: TileReader,
  hasher: TreeHasher = defaultTreeHasher,
  cache?: TileHashCache,
): Promise<Uint8Array[]> {
  return inclusionProofAsync(index, size, tileNodeReader(size, reader, hasher, cache), hasher);
}

/**
 * Consistency proof from `oldSize` to `newSize`, computed from the tiles of `newSize` (spec §6, §9);
 * `cache` as in {@link tileNodeReader}.
 */
export function consistencyProofFromTiles(
  oldSize: Uint63,
  newSize: Uint63,
  reader: TileReader,
  hasher: TreeHasher = defaultTreeHasher,
  cache?: TileHashCache,
): Promise<Uint8Array[]> {
  return consistencyProofAsync(oldSize, newSize, tileNodeReader(newSize, reader, hasher, cache), hasher);
}

/** Root hash of the tree of `size` entries from its right-edge tiles (spec §4, §9); `cache` as in {@link tileNodeReader}. */
export function rootHashFromTiles(size: Uint63, reader: TileReader, hasher: TreeHasher = defaultTreeHasher, cache?: TileHashCache): Promise<Uint8Array> {
  return rootHashAsync(size, tileNodeReader(size, reader, hasher, cache), hasher);
}

/**
 * Reads entry `index` of the tree of `size` entries from its bundle (no verification: check its leaf
 * hash with an inclusion proof, or use {@link verifyLogFromTiles}).
 * @throws TlogError `INVALID_ARGUMENT` if `index ≥ size`, `MALFORMED_ENTRY_BUNDLE`
 */
export async function readEntryFromBundles(index: Uint63, size: Uint63, reader: TileReader): Promise<Uint8Array> {
  const i = toU63(index, 'index');
  const s = toU63(size, 'tree size');
  if (i >= s) throw new TlogError('INVALID_ARGUMENT', `index ${i} not below size ${s}`);
  const n = i / W;
  const width = bundleWidth(n, s);
  const entries = decodeEntryBundle(await reader.readEntryBundle(n, width), width);
  return entries[Number(i % W)]!;
}

/**
 * In-memory tile and bundle store keyed by path; implements {@link TileReader} (with the
 * partial → full fallback of spec §9.3). For tests, tools and small deployments.
 */
export class MemoryTileStore implements TileReader {
  readonly #files = new Map<string, Uint8Array>();

  /** Number of stored resources. */
  get count(): number {
    return this.#files.size;
  }

  /** Stores the body of a path produced by {@link tilePath} / {@link entryBundlePath}. */
  set(path: string, data: Uint8Array): void {
    parseTilePath(path);
    this.#files.set(path, data);
  }

  /** The body stored at `path`, or `undefined`. */
  get(path: string): Uint8Array | undefined {
    return this.#files.get(path);
  }

  /** Stores everything returned by {@link TileIntegrator.flush}. */
  write(result: { tiles: readonly WrittenTile[]; bundles: readonly WrittenBundle[] }): void {
    for (const t of result.tiles) this.set(tilePath(t.level, t.index, t.width), t.data);
    for (const b of result.bundles) this.set(entryBundlePath(b.index, b.width), b.data);
  }

  /** All stored paths. */
  paths(): string[] {
    return [...this.#files.keys()];
  }

  /** Tile body; a missing partial falls back to the first `width` hashes of the full tile. @throws TlogError `NOT_FOUND` */
  readTile(level: number, index: bigint, width: number): Uint8Array {
    const exact = this.#files.get(tilePath(level, index, width));
    if (exact) return exact;
    const full = width < TILE_WIDTH ? this.#files.get(tilePath(level, index)) : undefined;
    if (full) return full.subarray(0, width * HASH_SIZE);
    throw new TlogError('NOT_FOUND', `${tilePath(level, index, width)} not found`);
  }

  /** Bundle body; a missing partial falls back to the first `width` entries of the full bundle. @throws TlogError `NOT_FOUND` */
  readEntryBundle(index: bigint, width: number): Uint8Array {
    const exact = this.#files.get(entryBundlePath(index, width));
    if (exact) return exact;
    const full = width < TILE_WIDTH ? this.#files.get(entryBundlePath(index)) : undefined;
    if (full) return encodeEntryBundle(decodeEntryBundle(full, TILE_WIDTH).slice(0, width));
    throw new TlogError('NOT_FOUND', `${entryBundlePath(index, width)} not found`);
  }
}

/** Minimal `fetch` shape needed by {@link createFetchTileReader} (the global `fetch` fits). */
export type FetchLike = (url: string) => Promise<{
  readonly ok: boolean;
  readonly status: number;
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

/**
 * A {@link TileReader} over the tlog-tiles HTTP layout under `prefix` (e.g.
 * `https://gw.example.com/audit`), using a caller-supplied `fetch`. Partial tiles/bundles that answer
 * 404 fall back to the full one (spec §9.3). Bodies are length-checked by the consumers.
 * Also offers `readCheckpoint()` (GET `<prefix>/checkpoint`, strictly UTF-8 decoded, unverified).
 */
export function createFetchTileReader(prefix: string, fetchFn: FetchLike): TileReader & { readCheckpoint(): Promise<string> } {
  const base = prefix.replace(/\/+$/, '');
  const get = async (path: string): Promise<Uint8Array | null> => {
    const res = await fetchFn(`${base}/${path}`);
    if (res.status === 404) return null;
    if (!res.ok) throw new TlogError('NOT_FOUND', `GET ${base}/${path}: HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  };
  return {
    async readTile(level, index, width) {
      const body = await get(tilePath(level, index, width));
      if (body) return body;
      if (width < TILE_WIDTH) {
        const full = await get(tilePath(level, index));
        if (full && full.length === TILE_WIDTH * HASH_SIZE) return full.subarray(0, width * HASH_SIZE);
      }
      throw new TlogError('NOT_FOUND', `${base}/${tilePath(level, index, width)}: 404`);
    },
    async readEntryBundle(index, width) {
      const body = await get(entryBundlePath(index, width));
      if (body) return body;
      if (width < TILE_WIDTH) {
        const full = await get(entryBundlePath(index));
        if (full) return encodeEntryBundle(decodeEntryBundle(full, TILE_WIDTH).slice(0, width));
      }
      throw new TlogError('NOT_FOUND', `${base}/${entryBundlePath(index, width)}: 404`);
    },
    async readCheckpoint() {
      const body = await get('checkpoint');
      if (!body) throw new TlogError('NOT_FOUND', `${base}/checkpoint: 404`);
      return utf8Decode(body);
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Writer: entries → tiles and bundles
// ---------------------------------------------------------------------------------------------------

/**
 * A copy of `b` in a new buffer. (`b.slice()` is not one when `b` is a subclass whose `slice`
 * returns a view, as Node's byte buffers do.)
 */
function copyBytes(b: Uint8Array): Uint8Array {
  return Uint8Array.prototype.slice.call(b);
}

/** @throws TlogError `INVALID_ARGUMENT` unless `entry` is a Uint8Array of at most 65 535 bytes (spec §2). */
function checkEntry(entry: Uint8Array): void {
  if (!(entry instanceof Uint8Array)) throw new TlogError('INVALID_ARGUMENT', 'entry must be a Uint8Array');
  if (entry.length > MAX_ENTRY_SIZE) throw new TlogError('INVALID_ARGUMENT', `entry of ${entry.length} bytes exceeds 65535`);
}

/** A tile produced by {@link TileIntegrator.flush}. */
export interface WrittenTile extends TileSpec {
  readonly data: Uint8Array;
}

/** An entry bundle produced by {@link TileIntegrator.flush}. */
export interface WrittenBundle extends BundleSpec {
  readonly data: Uint8Array;
}

/** Result of {@link TileIntegrator.flush}: what to persist before signing a checkpoint of `size`/`rootHash`. */
export interface FlushResult {
  readonly size: bigint;
  readonly rootHash: Uint8Array;
  /** New or grown tiles (full tiles completed since the last flush, then the changed partial tiles). */
  readonly tiles: readonly WrittenTile[];
  /** New or grown entry bundles (empty when bundles are not tracked). */
  readonly bundles: readonly WrittenBundle[];
}

/**
 * Sequencer-side integrator: appends entries (or leaf hashes), keeps only the right edge of the tree
 * (≤ 256 hashes per level and the pending partial bundle), and on {@link flush} returns the tiles and
 * bundles to write for the new size plus the new root, computed from those tiles (spec §4, §9.3,
 * §11.3). Amortised cost per entry: one leaf hash and ~one node hash.
 *
 * Typical loop: `append…` → `flush()` → persist tiles/bundles → sign checkpoint (size, rootHash) →
 * persist → serve. On startup: `TileIntegrator.restore(size, reader)` then compare `rootHash()` with
 * the last signed checkpoint (spec §11.4).
 */
export class TileIntegrator {
  #size = 0n;
  /** Per tile level: the hashes of the current (partial) right-edge tile. */
  readonly #rows: Uint8Array[][] = [[]];
  /** Per tile level: compact range of that row (one subtree hash per set bit of its width, largest first). */
  readonly #stacks: Uint8Array[][] = [[]];
  /** Per tile level: number of full tiles so far. */
  readonly #fullCount: bigint[] = [0n];
  /**
   * The pending (partial) entry bundle, already encoded (spec §9.4): the first `#bundleLen` bytes of
   * `#bundleBuf` hold `#bundleCount` entries. Entries are copied in once, as they are appended.
   */
  #bundleBuf: Uint8Array = new Uint8Array(0);
  #bundleLen = 0;
  #bundleCount = 0;
  readonly #withBundles: boolean;
  readonly #hasher: TreeHasher;
  readonly #dirty = new Set<number>();
  #bundleDirty = false;
  #tiles: WrittenTile[] = [];
  #bundles: WrittenBundle[] = [];

  /**
   * @param options.hasher hash implementation (use the node:crypto one on servers)
   * @param options.bundles produce entry bundles (default `true`; then only {@link appendEntry} and {@link appendEntryWithLeafHash} are allowed)
   */
  constructor(options: { hasher?: TreeHasher; bundles?: boolean } = {}) {
    this.#hasher = options.hasher ?? defaultTreeHasher;
    this.#withBundles = options.bundles ?? true;
  }

  /**
   * Rebuilds the right edge of a tree of `size` entries from its stored partial tiles (and partial
   * bundle). Does not verify against a checkpoint: compare {@link rootHash} yourself (spec §11.4).
   * @throws TlogError from the reader, `MALFORMED_TILE`, `TILE_MISMATCH` (bundle vs tile)
   */
  static async restore(size: Uint63, reader: TileReader, options: { hasher?: TreeHasher; bundles?: boolean } = {}): Promise<TileIntegrator> {
    const s = toU63(size, 'tree size');
    const t = new TileIntegrator(options);
    t.#size = s;
    const layout = tileLayout(s);
    for (const l of layout) {
      t.#rows[l.level] = [];
      t.#stacks[l.level] = [];
      t.#fullCount[l.level] = l.fullTiles;
      if (l.partialWidth > 0) {
        const data = await reader.readTile(l.level, l.fullTiles, l.partialWidth);
        for (const h of decodeHashTile(data, l.partialWidth)) t.#pushRow(l.level, copyBytes(h));
      }
    }
    const top = layout.length;
    t.#rows[top] = [];
    t.#stacks[top] = [];
    t.#fullCount[top] = 0n;
    const w0 = layout[0]?.partialWidth ?? 0;
    if (t.#withBundles && w0 > 0) {
      const bundle = await reader.readEntryBundle(layout[0]!.fullTiles, w0);
      checkBundleAgainstTile(bundle, encodeHashTile(t.#rows[0]!), w0, t.#hasher); // exactly w0 well-formed entries
      t.#bundleBuf = copyBytes(bundle);
      t.#bundleLen = bundle.length;
      t.#bundleCount = w0;
    }
    return t;
  }

  /** Current number of entries. */
  get size(): bigint {
    return this.#size;
  }

  /**
   * Appends one entry (its exact bytes, spec §2).
   * @returns its index and leaf hash
   * @throws TlogError `INVALID_ARGUMENT` if the entry exceeds 65 535 bytes
   */
  appendEntry(entry: Uint8Array): { index: bigint; leafHash: Uint8Array } {
    checkEntry(entry);
    return this.#appendHashed(entry, this.#hasher.hashLeaf(entry));
  }

  /**
   * Appends one entry whose leaf hash the caller already computed, e.g. when the entry was hashed
   * once at commit time and stored next to it: the same as {@link appendEntry} without hashing the
   * entry again. The entry's bytes still go into the entry bundle.
   *
   * `leafHash` MUST be `LH(entry)` = SHA-256(0x00 ‖ entry) (spec §3); it is **not** checked (that is
   * the saving). A wrong one makes the level-0 tile disagree with the bundle (spec §9.4): the root
   * and proofs follow the wrong hash, and auditors who check bundles against tiles
   * (`checkBundleAgainstTile`, `verifyLogFromTiles` with `entries`) reject the log. Pass only hashes
   * computed by trusted code from these exact bytes. Both are copied (whatever their subclass), so the
   * caller may reuse them.
   * @param entry the exact entry bytes (spec §2), at most 65 535
   * @param leafHash its 32-byte leaf hash
   * @returns its index and leaf hash (a copy of `leafHash`)
   * @throws TlogError `INVALID_ARGUMENT` if the entry exceeds 65 535 bytes, or `leafHash` is not a
   *   32-byte Uint8Array
   */
  appendEntryWithLeafHash(entry: Uint8Array, leafHash: Uint8Array): { index: bigint; leafHash: Uint8Array } {
    checkEntry(entry);
    assertHash(leafHash, 'leaf hash');
    return this.#appendHashed(entry, copyBytes(leafHash));
  }

  /** Appends a checked entry and its leaf hash (owned by the integrator from now on). */
  #appendHashed(entry: Uint8Array, leafHash: Uint8Array): { index: bigint; leafHash: Uint8Array } {
    const index = this.#size;
    if (this.#withBundles) {
      this.#bundleAppend(entry);
      this.#bundleDirty = true;
      if (this.#bundleCount === TILE_WIDTH) {
        this.#bundles.push({ index: this.#fullCount[0]!, width: TILE_WIDTH, data: this.#bundleBuf.slice(0, this.#bundleLen) });
        this.#bundleLen = 0;
        this.#bundleCount = 0;
        this.#bundleDirty = false;
      }
    }
    this.#push(0, leafHash);
    this.#size++;
    return { index, leafHash };
  }

  /**
   * Appends a leaf by hash (only when constructed with `bundles: false`).
   * @throws TlogError `INVALID_ARGUMENT`
   */
  appendLeafHash(leafHash: Uint8Array): bigint {
    if (this.#withBundles) throw new TlogError('INVALID_ARGUMENT', 'this integrator writes entry bundles: use appendEntry or appendEntryWithLeafHash');
    assertHash(leafHash, 'leaf hash');
    const index = this.#size;
    this.#push(0, copyBytes(leafHash));
    this.#size++;
    return index;
  }

  /** Appends a checked entry to the pending bundle (2-byte big-endian length, then the bytes; spec §9.4). */
  #bundleAppend(entry: Uint8Array): void {
    const end = this.#bundleLen + 2 + entry.length;
    if (end > this.#bundleBuf.length) {
      const grown = new Uint8Array(Math.max(end, 2 * this.#bundleBuf.length, 4096));
      grown.set(this.#bundleBuf.subarray(0, this.#bundleLen));
      this.#bundleBuf = grown;
    }
    const b = this.#bundleBuf;
    b[this.#bundleLen] = entry.length >> 8;
    b[this.#bundleLen + 1] = entry.length & 0xff;
    b.set(entry, this.#bundleLen + 2);
    this.#bundleLen = end;
    this.#bundleCount++;
  }

  /** Appends a hash to a row and its compact range (amortised one node hash). */
  #pushRow(level: number, h: Uint8Array): void {
    const row = this.#rows[level]!;
    const stack = this.#stacks[level]!;
    let c = row.length;
    row.push(h);
    let top = h;
    while ((c & 1) === 1) {
      top = this.#hasher.hashChildren(stack.pop()!, top);
      c >>= 1;
    }
    stack.push(top);
  }

  #push(level: number, h: Uint8Array): void {
    this.#pushRow(level, h);
    this.#dirty.add(level);
    const row = this.#rows[level]!;
    if (row.length < TILE_WIDTH) return;
    const index = this.#fullCount[level]!;
    this.#tiles.push({ level, index, width: TILE_WIDTH, data: concatBytes(...row) });
    const up = this.#stacks[level]![0]!; // the row's compact range is now the single root of the full tile
    this.#rows[level] = [];
    this.#stacks[level] = [];
    this.#fullCount[level] = index + 1n;
    this.#dirty.delete(level);
    if (this.#rows[level + 1] === undefined) {
      this.#rows[level + 1] = [];
      this.#stacks[level + 1] = [];
      this.#fullCount[level + 1] = 0n;
    }
    this.#push(level + 1, up);
  }

  /** Root hash of the current size, from the right-edge hashes (spec §4); `SHA-256("")` when empty. */
  rootHash(): Uint8Array {
    // The compact ranges of the rows, from the top level down, are exactly the complete subtrees of
    // [0, size) from left to right (spec §4); fold them.
    const parts: Uint8Array[] = [];
    for (let level = this.#stacks.length - 1; level >= 0; level--) parts.push(...this.#stacks[level]!);
    return parts.length === 0 ? this.#hasher.emptyRoot() : foldRight(parts, this.#hasher);
  }

  /**
   * Returns everything to persist for the current size (full tiles completed since the last flush,
   * the partial tiles and bundle that changed) and the root hash; then resets the pending lists.
   * Persist all of it durably before signing the checkpoint (spec §9.3, §11.3).
   */
  flush(): FlushResult {
    const tiles = this.#tiles;
    const bundles = this.#bundles;
    for (const level of [...this.#dirty].sort((a, b) => a - b)) {
      const row = this.#rows[level]!;
      if (row.length > 0) tiles.push({ level, index: this.#fullCount[level]!, width: row.length, data: concatBytes(...row) });
    }
    if (this.#bundleDirty && this.#bundleCount > 0) {
      bundles.push({ index: this.#fullCount[0]!, width: this.#bundleCount, data: this.#bundleBuf.slice(0, this.#bundleLen) });
    }
    this.#dirty.clear();
    this.#bundleDirty = false;
    this.#tiles = [];
    this.#bundles = [];
    return { size: this.#size, rootHash: this.rootHash(), tiles, bundles };
  }
}

// ---------------------------------------------------------------------------------------------------
// Auditor: verify a whole log from its tiles
// ---------------------------------------------------------------------------------------------------

/** Options of {@link verifyLogFromTiles}. */
export interface VerifyLogOptions {
  /**
   * `'root'`: only recompute the root from the right-edge tiles (a few tiles).
   * `'full'` (default): also check that every full tile hashes to its entry in the level above, so
   * every tile served for this size is bound to the signed root.
   */
  mode?: 'root' | 'full';
  /** In full mode, also fetch every entry bundle and check it against its level-0 tile (default `false`). */
  entries?: boolean;
  /** Called for every entry, in index order, when `entries` is true (after its bundle is verified). */
  onEntry?: (index: bigint, entry: Uint8Array) => void | Promise<void>;
  /** Maximum parallel reads (default 8). */
  concurrency?: number;
  /** Progress callback: resources read so far. */
  onProgress?: (done: { tiles: number; bundles: number }) => void;
  hasher?: TreeHasher;
}

/** Result of {@link verifyLogFromTiles}. */
export interface VerifyLogReport {
  readonly size: bigint;
  readonly rootHash: Uint8Array;
  readonly mode: 'root' | 'full';
  readonly tilesRead: number;
  readonly bundlesRead: number;
  readonly entriesVerified: bigint;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (x: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}

/**
 * Recomputes and checks a log from its tiles against a checkpoint (spec §9; what an auditor does):
 * the root computed from the tiles must equal `checkpoint.rootHash`; in full mode every full tile at
 * level L must hash to its entry in its level-(L+1) tile (partial or full), and optionally every entry
 * bundle must match its level-0 tile. Together these bind every served tile and entry to the root.
 *
 * The checkpoint MUST already be verified (`openCheckpoint`): this function trusts `size`/`rootHash`.
 * @throws TlogError `ROOT_MISMATCH`, `TILE_MISMATCH` (naming the offending path), `MALFORMED_TILE`,
 *   `MALFORMED_ENTRY_BUNDLE`, `NOT_FOUND` (from the reader)
 */
export async function verifyLogFromTiles(
  checkpoint: { readonly size: bigint; readonly rootHash: Uint8Array },
  reader: TileReader,
  options: VerifyLogOptions = {},
): Promise<VerifyLogReport> {
  const size = toU63(checkpoint.size, 'tree size');
  assertHash(checkpoint.rootHash, 'checkpoint root hash');
  const hasher = options.hasher ?? defaultTreeHasher;
  const mode = options.mode ?? 'full';
  const limit = options.concurrency ?? 8;
  let tilesRead = 0;
  let bundlesRead = 0;
  let entriesVerified = 0n;

  const readTile = async (level: number, index: bigint, width: number): Promise<Uint8Array> => {
    const data = await reader.readTile(level, index, width);
    tilesRead++;
    options.onProgress?.({ tiles: tilesRead, bundles: bundlesRead });
    if (!(data instanceof Uint8Array) || data.length !== width * HASH_SIZE) {
      throw new TlogError('MALFORMED_TILE', `${tilePath(level, index, width)}: body must be ${width * HASH_SIZE} bytes, got ${data?.length}`);
    }
    return data;
  };

  // 1. Root from the right edge.
  const edge = new TileCache({ readTile, readEntryBundle: () => Promise.reject(new Error('unused')) });
  const root = await rootHashAsync(size, (ids) => readWithCache(size, ids, edge, hasher), hasher);
  if (!bytesEqual(root, checkpoint.rootHash)) {
    throw new TlogError('ROOT_MISMATCH', `root computed from the tiles of size ${size} does not match the checkpoint`);
  }
  if (mode === 'root') return { size, rootHash: root, mode, tilesRead, bundlesRead, entriesVerified };

  // 2. Every full tile hashes to its entry in the parent tile (processed parent tile by parent tile);
  //    at level 0, optionally the entry bundles too (same pass, so level-0 tiles are read once).
  const withEntries = options.entries === true;
  const readBundle = async (index: bigint, width: number, tile: Uint8Array): Promise<Uint8Array[]> => {
    const bundle = await reader.readEntryBundle(index, width);
    bundlesRead++;
    options.onProgress?.({ tiles: tilesRead, bundles: bundlesRead });
    try {
      return checkBundleAgainstTile(bundle, tile, width, hasher);
    } catch (e) {
      if (e instanceof TlogError) throw new TlogError(e.code, `${entryBundlePath(index, width)}: ${e.message}`, { cause: e });
      throw e;
    }
  };
  const emit = async (first: bigint, entries: readonly Uint8Array[]): Promise<void> => {
    for (let j = 0; j < entries.length; j++) {
      if (options.onEntry) await options.onEntry(first + BigInt(j), entries[j]!);
      entriesVerified++;
    }
  };
  const layout = tileLayout(size);
  for (const l of layout) {
    const bundles = withEntries && l.level === 0;
    const parentLevel = l.level + 1;
    for (let p = 0n; p * W < l.fullTiles; p++) {
      const pWidth = tileWidth(parentLevel, p, size);
      const parent = decodeHashTile(await readTile(parentLevel, p, pWidth), pWidth);
      const children: bigint[] = [];
      for (let c = p * W; c < l.fullTiles && c < (p + 1n) * W; c++) children.push(c);
      const entryLists = await mapLimit(children, limit, async (c) => {
        const data = await readTile(l.level, c, TILE_WIDTH);
        if (!bytesEqual(fullTileHash(data, hasher), parent[Number(c % W)]!)) {
          throw new TlogError(
            'TILE_MISMATCH',
            `${tilePath(l.level, c)} does not hash to entry ${c % W} of ${tilePath(parentLevel, p, pWidth)}`,
          );
        }
        return bundles ? readBundle(c, TILE_WIDTH, data) : [];
      });
      for (let k = 0; k < children.length; k++) await emit(children[k]! * W, entryLists[k]!);
    }
    if (bundles && l.partialWidth > 0) {
      const tile = await readTile(0, l.fullTiles, l.partialWidth);
      await emit(l.fullTiles * W, await readBundle(l.fullTiles, l.partialWidth, tile));
    }
  }
  return { size, rootHash: root, mode, tilesRead, bundlesRead, entriesVerified };
}

