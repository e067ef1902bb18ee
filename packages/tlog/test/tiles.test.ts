/**
 * Tiles (spec §9): paths, layouts, the integrator, tile-based proofs equal direct ones, full log
 * verification from tiles (and tamper detection), the fetch-based reader.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  InMemoryTree,
  MemoryTileStore,
  TileHashCache,
  TileIntegrator,
  TlogError,
  bundlesForSize,
  checkBundleAgainstTile,
  consistencyProofFromTiles,
  createFetchTileReader,
  decodeEntryBundle,
  decodeHashTile,
  encodeEntryBundle,
  entryBundlePath,
  formatTileIndex,
  fullTileHash,
  inclusionProofFromTiles,
  merkleTreeHash,
  newBundles,
  newTiles,
  parseTileIndex,
  parseTilePath,
  readEntryFromBundles,
  readHashesFromTiles,
  rootHashFromTiles,
  tileLayout,
  tilePath,
  tileWidth,
  tilesForSize,
  verifyConsistency,
  verifyInclusion,
  verifyLogFromTiles,
  type TileReader,
} from '../src/index.ts';
import { nodeTreeHasher } from '../src/node.ts';
import { Prng, leafEntry } from './helpers/util.ts';

const H = nodeTreeHasher;

function rejects(fn: () => unknown, code: string, label?: string): void {
  assert.throws(fn, (e: unknown) => e instanceof TlogError && e.code === code, label);
}

describe('tile paths (spec §9.2, §9.4)', () => {
  it('formats and parses', () => {
    assert.equal(tilePath(0, 0), 'tile/0/000');
    assert.equal(tilePath(1, 1234067, 17), 'tile/1/x001/x234/067.p/17');
    assert.equal(entryBundlePath(1000, 44), 'tile/entries/x001/000.p/44');
    assert.deepEqual(parseTilePath('tile/0/x001/000.p/44'), { kind: 'tile', level: 0, index: 1000n, width: 44 });
    assert.deepEqual(parseTilePath('tile/entries/000'), { kind: 'entries', index: 0n, width: 256 });
    assert.deepEqual(parseTilePath('tile/63/000.p/1'), { kind: 'tile', level: 63, index: 0n, width: 1 });
    assert.equal(formatTileIndex((1n << 55n) - 1n), 'x036/x028/x797/x018/x963/967');
    const rnd = new Prng(3);
    for (let i = 0; i < 500; i++) {
      const n = BigInt(rnd.int(0, 2 ** 31)) * BigInt(rnd.int(0, 2 ** 20));
      assert.equal(parseTileIndex(formatTileIndex(n)), n);
    }
  });
  for (const bad of [
    'tile/0/7',
    'tile/0/0007',
    'tile/0/x000/007', // non-canonical
    'tile/0/x001',
    'tile/0/001/000', // missing x
    'tile/0/X001/000',
    'tile/00/000',
    'tile/01/000',
    'tile/64/000',
    'tile/8/0/000', // Go checksum-database layout with height
    'tile/0/000.p/0',
    'tile/0/000.p/256',
    'tile/0/000.p/044',
    'tile/0/000.p/',
    'tile/entries/000.p/256',
    'tile/entries/7',
    '/tile/0/000',
    'tile/0/000/',
    'tile/0/001.p/44/',
    'tile/-1/000',
    'tile/0/ 000',
    'tile/1/x036/x028/x797/x018/x963/967', // starts beyond 2^63
    'tile/7/001',
  ]) {
    it(`rejects ${JSON.stringify(bad)}`, () => rejects(() => parseTilePath(bad), 'MALFORMED_TILE_PATH'));
  }
  it('argument checks', () => {
    rejects(() => tilePath(0, 0, 0), 'INVALID_ARGUMENT');
    rejects(() => tilePath(64, 0), 'INVALID_ARGUMENT');
    rejects(() => tilePath(0, -1), 'INVALID_ARGUMENT');
  });
});

describe('tile layout', () => {
  it('sizes 0, 1, 256, 257, 65536', () => {
    assert.deepEqual([...tilesForSize(0)], []);
    assert.deepEqual([...tilesForSize(1)], [{ level: 0, index: 0n, width: 1 }]);
    assert.deepEqual([...tilesForSize(256)], [
      { level: 0, index: 0n, width: 256 },
      { level: 1, index: 0n, width: 1 },
    ]);
    assert.equal([...tilesForSize(65536)].length, 256 + 1 + 1);
    assert.deepEqual([...bundlesForSize(257)], [
      { index: 0n, width: 256 },
      { index: 1n, width: 1 },
    ]);
    assert.equal(tileWidth(0, 1, 300), 44);
    assert.equal(tileWidth(0, 2, 300), 0);
    assert.equal(tileWidth(1, 0, 300), 1);
    assert.equal(tileLayout((1n << 63n) - 1n).length, 8);
  });
  it('newTiles lists exactly the tiles whose bytes changed', () => {
    const rnd = new Prng(8);
    for (let k = 0; k < 300; k++) {
      const a = rnd.int(0, 70000);
      const b = a + (rnd.next() < 0.5 ? rnd.int(0, 300) : rnd.int(0, 70000));
      const before = new Map([...tilesForSize(a)].map((t) => [`${t.level}/${t.index}`, t.width]));
      const expected = [...tilesForSize(b)].filter((t) => before.get(`${t.level}/${t.index}`) !== t.width);
      assert.deepEqual([...newTiles(a, b)], expected, `${a} -> ${b}`);
      assert.deepEqual(
        [...newBundles(a, b)],
        expected.filter((t) => t.level === 0).map((t) => ({ index: t.index, width: t.width })),
      );
    }
    rejects(() => [...newTiles(5, 4)], 'INVALID_ARGUMENT');
  });
});

describe('entry bundles and hash tiles', () => {
  it('encode/decode, strictness', () => {
    const entries = [new Uint8Array(0), Uint8Array.of(1, 2, 3), new Uint8Array(65535).fill(7)];
    const b = encodeEntryBundle(entries);
    assert.deepEqual(decodeEntryBundle(b, 3), entries);
    rejects(() => decodeEntryBundle(b, 2), 'MALFORMED_ENTRY_BUNDLE');
    rejects(() => decodeEntryBundle(b.subarray(0, b.length - 1)), 'MALFORMED_ENTRY_BUNDLE');
    rejects(() => decodeEntryBundle(Uint8Array.of(0)), 'MALFORMED_ENTRY_BUNDLE');
    rejects(() => decodeEntryBundle(Uint8Array.of(...b, 0, 0, 0), 3), 'MALFORMED_ENTRY_BUNDLE');
    rejects(() => encodeEntryBundle([new Uint8Array(65536)]), 'INVALID_ARGUMENT');
    rejects(() => encodeEntryBundle([]), 'INVALID_ARGUMENT');
    rejects(() => decodeHashTile(new Uint8Array(33), 1), 'MALFORMED_TILE');
    rejects(() => decodeHashTile(new Uint8Array(64), 1), 'MALFORMED_TILE');
    rejects(() => new TileIntegrator().appendEntry(new Uint8Array(65536)), 'INVALID_ARGUMENT');
  });
  it('bundle vs level-0 tile invariant', () => {
    const t = new TileIntegrator({ hasher: H });
    for (let i = 0; i < 10; i++) t.appendEntry(leafEntry(i));
    const r = t.flush();
    const tile = r.tiles[0]!.data;
    const bundle = r.bundles[0]!.data;
    assert.equal(checkBundleAgainstTile(bundle, tile, 10, H).length, 10);
    const bad = bundle.slice();
    bad[5]! ^= 1;
    rejects(() => checkBundleAgainstTile(bad, tile, 10, H), 'TILE_MISMATCH');
  });
});

describe('TileIntegrator.appendEntryWithLeafHash', () => {
  it('with the right leaf hashes, writes byte-identical tiles, bundles and roots to appendEntry', () => {
    const a = new TileIntegrator({ hasher: H });
    const b = new TileIntegrator({ hasher: H });
    const rnd = new Prng(5);
    for (let i = 0; i < 700; i++) {
      const e = rnd.bytes(rnd.int(0, 40));
      const lh = H.hashLeaf(e);
      const ra = a.appendEntry(e);
      const rb = b.appendEntryWithLeafHash(e, lh);
      assert.equal(rb.index, ra.index);
      assert.deepEqual(rb.leafHash, ra.leafHash);
      lh.fill(0); // the integrator keeps its own copy
      if (i % 97 === 0 || i === 699) assert.deepEqual(b.flush(), a.flush(), `flush at ${i + 1}`);
    }
    assert.deepEqual(b.rootHash(), a.rootHash());
  });
  it('copies the entry and the leaf hash, also when they are Node Buffers (whose slice() is a view)', () => {
    const a = new TileIntegrator({ hasher: H });
    const b = new TileIntegrator({ hasher: H });
    const scratch = Buffer.alloc(64);
    const lh = Buffer.alloc(32);
    for (let i = 0; i < 300; i++) {
      const e = leafEntry(i);
      a.appendEntry(e);
      scratch.set(e);
      const view = scratch.subarray(0, e.length);
      lh.set(H.hashLeaf(e));
      b.appendEntryWithLeafHash(view, lh);
      scratch.fill(0xee); // reused by the caller
      lh.fill(0xee);
    }
    assert.deepEqual(b.flush(), a.flush());
  });
  it('also works without bundles (then it is appendLeafHash plus the entry check)', () => {
    const a = new TileIntegrator({ hasher: H, bundles: false });
    const b = new TileIntegrator({ hasher: H, bundles: false });
    for (let i = 0; i < 300; i++) {
      a.appendLeafHash(H.hashLeaf(leafEntry(i)));
      b.appendEntryWithLeafHash(leafEntry(i), H.hashLeaf(leafEntry(i)));
    }
    const fb = b.flush();
    assert.deepEqual(fb, a.flush());
    assert.equal(fb.bundles.length, 0);
  });
  it('refuses a leaf hash that is not a 32-byte Uint8Array, and an oversized entry; nothing is appended then', () => {
    const t = new TileIntegrator({ hasher: H });
    const e = leafEntry(1);
    for (const bad of [new Uint8Array(31), new Uint8Array(33), new Uint8Array(0), new Uint8Array(64)]) {
      rejects(() => t.appendEntryWithLeafHash(e, bad), 'INVALID_ARGUMENT', `leaf hash of ${bad.length} bytes`);
    }
    rejects(() => t.appendEntryWithLeafHash(e, Array.from(H.hashLeaf(e)) as unknown as Uint8Array), 'INVALID_ARGUMENT', 'a plain array');
    rejects(() => t.appendEntryWithLeafHash(e, 'ab'.repeat(32) as unknown as Uint8Array), 'INVALID_ARGUMENT', 'a hex string');
    rejects(() => t.appendEntryWithLeafHash(new Uint8Array(65536), new Uint8Array(32)), 'INVALID_ARGUMENT', 'entry over 65535 bytes');
    rejects(() => t.appendEntryWithLeafHash('x' as unknown as Uint8Array, new Uint8Array(32)), 'INVALID_ARGUMENT', 'entry not bytes');
    assert.equal(t.size, 0n);
    assert.deepEqual(t.flush().tiles, []);
  });
  it('a wrong (well-formed) leaf hash is not detected by the integrator but by the bundle check', () => {
    const t = new TileIntegrator({ hasher: H });
    for (let i = 0; i < 4; i++) t.appendEntryWithLeafHash(leafEntry(i), H.hashLeaf(leafEntry(i === 2 ? 99 : i)));
    const r = t.flush();
    rejects(() => checkBundleAgainstTile(r.bundles[0]!.data, r.tiles[0]!.data, 4, H), 'TILE_MISMATCH');
  });
});

describe('integrator, tile-based proofs and roots (property)', () => {
  // A 70 000-entry log built with random flush points; every flushed size is "published".
  const rnd = new Prng(77);
  const N = 70000;
  const tree = new InMemoryTree(H);
  const store = new MemoryTileStore();
  const published: number[] = [];
  const entries: Uint8Array[] = [];
  let integrator = new TileIntegrator({ hasher: H });
  before(async () => {
    const forced = new Set([1, 255, 256, 257, 511, 512, 65535, 65536, 65537]);
    for (let i = 0; i < N; i++) {
      const e = rnd.bytes(rnd.int(0, 48));
      entries.push(e);
      tree.appendEntry(e);
      integrator.appendEntry(e);
      const size = i + 1;
      if (forced.has(size) || rnd.next() < 0.002 || size === N) {
        const res = integrator.flush();
        assert.equal(res.size, BigInt(size));
        assert.deepEqual(res.rootHash, tree.root(size), `root at ${size}`);
        store.write(res);
        published.push(size);
        if (published.length === 40) {
          // simulate a restart in the middle: rebuild the right edge from storage
          integrator = await TileIntegrator.restore(size, store, { hasher: H });
          assert.deepEqual(integrator.rootHash(), tree.root(size));
        }
      }
    }
  });
  it('each flush wrote exactly newTiles/newBundles, and never rewrote a resource with different bytes', () => {
    const expected = new Set<string>();
    let prev = 0;
    for (const s of published) {
      for (const t of newTiles(prev, s)) expected.add(tilePath(t.level, t.index, t.width));
      for (const b of newBundles(prev, s)) expected.add(entryBundlePath(b.index, b.width));
      prev = s;
    }
    assert.deepEqual(new Set(store.paths()), expected);
  });
  it('roots from tiles equal the MTH at every published size', async () => {
    for (const s of published) assert.deepEqual(await rootHashFromTiles(s, store, H), tree.root(s), `size ${s}`);
    assert.deepEqual(await rootHashFromTiles(0, store, H), H.emptyRoot());
  });
  it('inclusion proofs from tiles equal direct generation and verify', async () => {
    const r = new Prng(78);
    for (let k = 0; k < 250; k++) {
      const size = published[r.int(0, published.length - 1)]!;
      const index = r.int(0, size - 1);
      const p = await inclusionProofFromTiles(index, size, store, H);
      assert.deepEqual(p, tree.inclusionProof(index, size), `${index} in ${size}`);
      assert.equal(verifyInclusion(index, size, H.hashLeaf(entries[index]!), p, tree.root(size), H), true);
    }
  });
  it('consistency proofs from tiles equal direct generation and verify', async () => {
    const r = new Prng(79);
    for (let k = 0; k < 250; k++) {
      const a = published[r.int(0, published.length - 1)]!;
      const b = published[r.int(0, published.length - 1)]!;
      const [m, n] = a <= b ? [a, b] : [b, a];
      const oldSize = r.next() < 0.3 ? r.int(0, n) : m; // also unpublished old sizes
      const p = await consistencyProofFromTiles(oldSize, n, store, H);
      assert.deepEqual(p, tree.consistencyProof(oldSize, n), `${oldSize} -> ${n}`);
      assert.equal(verifyConsistency(oldSize, n, tree.root(oldSize), tree.root(n), p, H), true);
    }
  });
  it('with a shared TileHashCache (every level, and the default ≥ 1): proofs and roots equal those without, the cache stays bounded, and hits avoid tile reads', async () => {
    let reads = 0;
    const counting: TileReader = {
      readTile: (l, i, w) => (reads++, store.readTile(l, i, w)),
      readEntryBundle: (i, w) => store.readEntryBundle(i, w),
    };
    for (const cache of [new TileHashCache({ maxTiles: 7, minLevel: 0 }), new TileHashCache()]) {
      const r = new Prng(cache.minLevel === 0 ? 90 : 91);
      for (let k = 0; k < 300; k++) {
        const size = published[r.int(0, published.length - 1)]!;
        const index = r.int(0, size - 1);
        assert.deepEqual(await inclusionProofFromTiles(index, size, counting, H, cache), tree.inclusionProof(index, size), `${index} in ${size}`);
        const oldSize = r.int(0, size);
        assert.deepEqual(await consistencyProofFromTiles(oldSize, size, counting, H, cache), tree.consistencyProof(oldSize, size), `${oldSize} -> ${size}`);
        assert.deepEqual(await rootHashFromTiles(size, counting, H, cache), tree.root(size), `root ${size}`);
        assert.ok(cache.size <= cache.maxTiles);
      }
      assert.ok(cache.hits > 0 && cache.misses > 0, `hits ${cache.hits}, misses ${cache.misses}`);
    }
    // A warm cache: the same proof again reads only the tiles below minLevel.
    const cache = new TileHashCache({ minLevel: 0 });
    await inclusionProofFromTiles(12345, N, counting, H, cache);
    reads = 0;
    assert.deepEqual(await inclusionProofFromTiles(12345, N, counting, H, cache), tree.inclusionProof(12345, N));
    assert.equal(reads, 0, 'every tile came from the cache');
    // At 65,536 entries a proof crosses one level-0 tile and the (full) level-1 tile.
    const upper = new TileHashCache();
    await inclusionProofFromTiles(12345, 65536, counting, H, upper);
    reads = 0;
    assert.deepEqual(await inclusionProofFromTiles(54321, 65536, counting, H, upper), tree.inclusionProof(54321, 65536));
    assert.equal(reads, 1, 'only the level-0 tile is read; the level-1 tile comes from the cache');
    assert.throws(() => new TileHashCache({ maxTiles: 0 }), TlogError);
    assert.throws(() => new TileHashCache({ minLevel: 64 }), TlogError);
  });
  it('entries read back from bundles', async () => {
    for (const i of [0, 255, 256, 69999, 12345]) {
      assert.deepEqual(await readEntryFromBundles(i, N, store), entries[i]);
    }
    await assert.rejects(readEntryFromBundles(N, N, store), { code: 'INVALID_ARGUMENT' });
  });
  it('readHashesFromTiles refuses a subtree that is incomplete at that size', async () => {
    await assert.rejects(readHashesFromTiles(300, [{ level: 9, index: 0n }], store, H), { code: 'INVALID_ARGUMENT' });
  });
  it('full log verification from tiles (with entry bundles) succeeds', async () => {
    const seen: bigint[] = [];
    const rep = await verifyLogFromTiles({ size: BigInt(N), rootHash: tree.root(N) }, store, {
      entries: true,
      hasher: H,
      onEntry: (i) => {
        if (seen.length < 3 || i === BigInt(N - 1)) seen.push(i);
      },
    });
    assert.equal(rep.entriesVerified, BigInt(N));
    assert.equal(rep.bundlesRead, 274);
    assert.deepEqual(seen, [0n, 1n, 2n, BigInt(N - 1)]);
    const quick = await verifyLogFromTiles({ size: 1000n, rootHash: tree.root(1000) }, store, { mode: 'root', hasher: H });
    assert.ok(quick.tilesRead <= 3);
    // every published size verifies too
    for (const s of published.slice(0, 12)) await verifyLogFromTiles({ size: BigInt(s), rootHash: tree.root(s) }, store, { hasher: H });
  });
});

describe('tamper detection in verifyLogFromTiles', () => {
  const size = 600;
  function build(): { store: MemoryTileStore; root: Uint8Array } {
    const t = new TileIntegrator({ hasher: H });
    for (let i = 0; i < size; i++) t.appendEntry(leafEntry(i));
    const store = new MemoryTileStore();
    const r = t.flush();
    store.write(r);
    return { store, root: r.rootHash };
  }
  function tamper(store: MemoryTileStore, path: string, byte: number): void {
    const d = store.get(path)!.slice();
    d[byte]! ^= 1;
    store.set(path, d);
  }
  it('a modified full level-0 tile is caught', async () => {
    const { store, root } = build();
    tamper(store, 'tile/0/001', 100);
    await assert.rejects(verifyLogFromTiles({ size: BigInt(size), rootHash: root }, store, { hasher: H }), { code: 'TILE_MISMATCH' });
    // a root-only check does not read that tile
    await verifyLogFromTiles({ size: BigInt(size), rootHash: root }, store, { mode: 'root', hasher: H });
  });
  it('a modified partial tile changes the root', async () => {
    const { store, root } = build();
    tamper(store, 'tile/0/002.p/88', 5);
    await assert.rejects(verifyLogFromTiles({ size: BigInt(size), rootHash: root }, store, { hasher: H }), { code: 'ROOT_MISMATCH' });
  });
  it('a modified entry is caught against its level-0 tile', async () => {
    const { store, root } = build();
    tamper(store, 'tile/entries/000', 43); // inside entry 5 (byte 40 would hit a length prefix)
    await assert.rejects(verifyLogFromTiles({ size: BigInt(size), rootHash: root }, store, { entries: true, hasher: H }), (e: unknown) => {
      return e instanceof TlogError && e.code === 'TILE_MISMATCH' && e.message.includes('tile/entries/000');
    });
  });
  it('a short tile body is rejected', async () => {
    const { store, root } = build();
    store.set('tile/1/000.p/2', store.get('tile/1/000.p/2')!.subarray(0, 63));
    await assert.rejects(verifyLogFromTiles({ size: BigInt(size), rootHash: root }, store, { hasher: H }), { code: 'MALFORMED_TILE' });
  });
  it('a wrong checkpoint root is rejected', async () => {
    const { store } = build();
    await assert.rejects(verifyLogFromTiles({ size: BigInt(size), rootHash: new Uint8Array(32) }, store, { hasher: H }), { code: 'ROOT_MISMATCH' });
  });
});

describe('fetch-based tile reader', () => {
  it('reads over a fetch-like callback, falls back from deleted partials to full tiles', async () => {
    const t = new TileIntegrator({ hasher: H });
    const tree = new InMemoryTree(H);
    const store = new MemoryTileStore();
    for (let i = 0; i < 300; i++) {
      t.appendEntry(leafEntry(i));
      tree.appendEntry(leafEntry(i));
    }
    store.write(t.flush());
    for (let i = 300; i < 600; i++) {
      t.appendEntry(leafEntry(i));
      tree.appendEntry(leafEntry(i));
    }
    store.write(t.flush());
    const deleted = new Set(['tile/0/001.p/44', 'tile/entries/001.p/44']); // full tiles exist now
    const requested: string[] = [];
    const fetchFn = async (url: string) => {
      const path = url.slice('https://gw.example/audit/'.length);
      requested.push(path);
      const body = path === 'checkpoint' ? new TextEncoder().encode('cp\n') : deleted.has(path) ? undefined : store.get(path);
      return {
        ok: body !== undefined,
        status: body !== undefined ? 200 : 404,
        arrayBuffer: async () => {
          const b = body ?? new Uint8Array(0);
          return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
        },
      };
    };
    const reader = createFetchTileReader('https://gw.example/audit/', fetchFn);
    assert.equal(await reader.readCheckpoint(), 'cp\n');
    assert.deepEqual(await rootHashFromTiles(300, reader, H), tree.root(300));
    assert.ok(requested.includes('tile/0/001.p/44') && requested.includes('tile/0/001'));
    const p = await inclusionProofFromTiles(260, 300, reader, H);
    assert.deepEqual(p, tree.inclusionProof(260, 300));
    assert.deepEqual(await readEntryFromBundles(299, 300, reader), leafEntry(299));
    await verifyLogFromTiles({ size: 300n, rootHash: tree.root(300) }, reader, { entries: true, hasher: H });
    await assert.rejects(Promise.resolve(reader.readTile(0, 9n, 256)), { code: 'NOT_FOUND' });
  });
  it('a reader returning the wrong number of bytes is caught', async () => {
    const reader: TileReader = { readTile: () => new Uint8Array(32), readEntryBundle: () => new Uint8Array(0) };
    await assert.rejects(rootHashFromTiles(300, reader, H), { code: 'MALFORMED_TILE' });
  });
  it('fullTileHash is the MTH of the 256 hashes', () => {
    const rnd = new Prng(1);
    const hashes = Array.from({ length: 256 }, () => rnd.bytes(32));
    const data = new Uint8Array(8192);
    hashes.forEach((h, i) => data.set(h, i * 32));
    assert.deepEqual(fullTileHash(data, H), merkleTreeHash(hashes, H));
  });
});
