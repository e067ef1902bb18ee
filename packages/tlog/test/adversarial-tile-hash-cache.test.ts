/**
 * Adversarial review of TileHashCache (tiles.ts): a shared LRU of expanded hash tiles used by the
 * tile-based proof and root functions.
 *
 * Regression tests of what held under attack, plus one bug the review found (fixed: an expanded
 * tile copies a Node Buffer's bytes instead of keeping a view of them).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  InMemoryTree,
  MemoryTileStore,
  TileHashCache,
  TileIntegrator,
  TlogError,
  consistencyProofFromTiles,
  inclusionProofFromTiles,
  rootHashFromTiles,
  tileNodeReader,
  type TileReader,
} from '../src/index.ts';
import { nodeTreeHasher } from '../src/node.ts';
import { Prng, leafEntry } from './helpers/util.ts';

const H = nodeTreeHasher;
const turn = () => new Promise<void>((r) => setImmediate(r));

describe('adversarial: TileHashCache', () => {
  // A log of 131 329 entries (= 2^17 + 257): level-2 tiles of width 1 and 2, partial tiles at every
  // level, and flushes at every tile boundary of interest.
  const N = 131_329;
  const tree = new InMemoryTree(H);
  const store = new MemoryTileStore();
  const published: number[] = [];
  const boundary = [1, 2, 3, 127, 128, 129, 255, 256, 257, 511, 512, 513, 65279, 65280, 65535, 65536, 65537, 65791, 65792, 65793, 131071, 131072, 131073, N];
  before(() => {
    const rnd = new Prng(4242);
    const forced = new Set(boundary);
    const integ = new TileIntegrator({ hasher: H });
    for (let i = 0; i < N; i++) {
      const e = leafEntry(i);
      tree.appendEntry(e);
      integ.appendEntry(e);
      const size = i + 1;
      if (forced.has(size) || rnd.next() < 0.0003) {
        const res = integ.flush();
        store.write(res);
        published.push(size);
      }
    }
  });

  const sampleIndexes = (size: number, r: Prng): number[] => {
    const out = new Set([0, size - 1, size >> 1, r.int(0, size - 1), r.int(0, size - 1)]);
    for (const b of [255, 256, 257, 65535, 65536, 65537]) if (b < size) out.add(b);
    return [...out];
  };

  it('proofs and roots byte-identical to the uncached path and the in-memory tree, for every published size (tile boundaries included), minLevel 0–3, maxTiles 1–8, one cache shared across sizes', async () => {
    for (const minLevel of [0, 1, 2, 3]) {
      for (const maxTiles of minLevel === 3 ? [1] : [1, 2, 8]) {
        const cache = new TileHashCache({ minLevel, maxTiles });
        const r = new Prng(minLevel * 100 + maxTiles);
        // Sizes in a shuffled order, so that partial tiles of different widths interleave in the cache.
        const sizes = [...published].sort(() => r.next() - 0.5);
        for (const size of sizes) {
          for (const index of sampleIndexes(size, r)) {
            const p = await inclusionProofFromTiles(index, size, store, H, cache);
            assert.deepEqual(p, tree.inclusionProof(index, size), `min ${minLevel} max ${maxTiles}: ${index} in ${size}`);
            if (r.next() < 0.2) assert.deepEqual(p, await inclusionProofFromTiles(index, size, store, H));
          }
          for (const oldSize of [0, 1, 255, 256, 257, 65535, 65536, 65537, r.int(0, size)]) {
            if (oldSize > size) continue;
            const p = await consistencyProofFromTiles(oldSize, size, store, H, cache);
            assert.deepEqual(p, tree.consistencyProof(oldSize, size), `min ${minLevel} max ${maxTiles}: ${oldSize} -> ${size}`);
          }
          assert.deepEqual(await rootHashFromTiles(size, store, H, cache), tree.root(size), `root ${size}`);
          assert.ok(cache.size <= maxTiles, `bounded: ${cache.size} > ${maxTiles}`);
        }
        if (minLevel < 3) assert.ok(cache.hits > 0, `min ${minLevel} max ${maxTiles}: some hits`); // no level-3 tiles below 2^24 entries
      }
    }
  });

  it('many concurrent proofs (Promise.all) on one small cache, through a reader with random async delays, are all correct', async () => {
    const r = new Prng(7);
    const delay = new Prng(8);
    const slow: TileReader = {
      readTile: async (l, i, w) => {
        for (let k = delay.int(0, 3); k > 0; k--) await turn();
        return store.readTile(l, i, w);
      },
      readEntryBundle: (i, w) => store.readEntryBundle(i, w),
    };
    for (const cache of [new TileHashCache({ minLevel: 0, maxTiles: 2 }), new TileHashCache({ maxTiles: 3 })]) {
      const jobs: Array<Promise<void>> = [];
      for (let k = 0; k < 300; k++) {
        const size = published[r.int(0, published.length - 1)]!;
        const index = r.int(0, size - 1);
        const oldSize = r.int(0, size);
        jobs.push(inclusionProofFromTiles(index, size, slow, H, cache).then((p) => assert.deepEqual(p, tree.inclusionProof(index, size), `${index} in ${size}`)));
        jobs.push(consistencyProofFromTiles(oldSize, size, slow, H, cache).then((p) => assert.deepEqual(p, tree.consistencyProof(oldSize, size), `${oldSize} -> ${size}`)));
        jobs.push(rootHashFromTiles(size, slow, H, cache).then((h) => assert.deepEqual(h, tree.root(size), `root ${size}`)));
      }
      await Promise.all(jobs);
      assert.ok(cache.size <= cache.maxTiles);
    }
  });

  it('a reader that throws, or returns a short / long / empty / non-byte body, poisons nothing: the next correct read gives correct proofs', async () => {
    const bads: Array<[string, (l: number, i: bigint, w: number) => unknown]> = [
      ['throws', () => {
        throw new TlogError('NOT_FOUND', 'transient');
      }],
      ['rejects', () => Promise.reject(new Error('transient'))],
      ['short', (l, i, w) => store.readTile(l, i, w).subarray(0, w * 32 - 1)],
      ['long', (l, i, w) => new Uint8Array(w * 32 + 32)],
      ['empty', () => new Uint8Array(0)],
      ['string', () => 'x'.repeat(8192)],
      ['null', () => null],
    ];
    for (const [name, bad] of bads) {
      for (const minLevel of [0, 1, 2]) {
        const cache = new TileHashCache({ minLevel, maxTiles: 4 });
        let armed = true;
        const reader: TileReader = {
          // Fails for every tile of level ≥ minLevel while armed (the tiles the cache would keep).
          readTile: (l, i, w) => (armed && l >= minLevel ? (bad(l, i, w) as Uint8Array) : store.readTile(l, i, w)),
          readEntryBundle: (i, w) => store.readEntryBundle(i, w),
        };
        for (const [index, size] of [[12345, N], [65535, 65536], [300, 65537], [131072, 131073]] as const) {
          if ((size === 65536 || size === 65537) && minLevel === 2) continue; // reads no level-2 tile
          await assert.rejects(inclusionProofFromTiles(index, size, reader, H, cache), `${name}: refused`);
          await assert.rejects(rootHashFromTiles(size, reader, H, cache));
        }
        assert.equal(cache.size, 0, `${name}: nothing cached from a failed read`);
        armed = false;
        for (const [index, size] of [[12345, N], [65535, 65536], [300, 65537], [131072, 131073]] as const) {
          assert.deepEqual(await inclusionProofFromTiles(index, size, reader, H, cache), tree.inclusionProof(index, size), `${name} min ${minLevel}: ${index} in ${size}`);
          assert.deepEqual(await rootHashFromTiles(size, reader, H, cache), tree.root(size));
        }
      }
    }
  });

  it('failures mixed into concurrent proofs: every proof is either refused or exactly right, and afterwards all are right', async () => {
    const r = new Prng(99);
    const fail = new Prng(100);
    const cache = new TileHashCache({ minLevel: 0, maxTiles: 5 });
    let failing = true;
    const flaky: TileReader = {
      readTile: async (l, i, w) => {
        await turn();
        const x = fail.next();
        if (failing && x < 0.15) throw new Error('flaky');
        if (failing && x < 0.25) return new Uint8Array(w * 32 - 32);
        return store.readTile(l, i, w);
      },
      readEntryBundle: (i, w) => store.readEntryBundle(i, w),
    };
    const cases = Array.from({ length: 200 }, () => {
      const size = published[r.int(0, published.length - 1)]!;
      return { size, index: r.int(0, size - 1), oldSize: r.int(0, size) };
    });
    let refused = 0;
    const all = await Promise.allSettled(cases.flatMap((c) => [inclusionProofFromTiles(c.index, c.size, flaky, H, cache), consistencyProofFromTiles(c.oldSize, c.size, flaky, H, cache)]));
    all.forEach((s, k) => {
      const c = cases[k >> 1]!;
      if (s.status === 'rejected') refused++;
      else assert.deepEqual(s.value, k % 2 === 0 ? tree.inclusionProof(c.index, c.size) : tree.consistencyProof(c.oldSize, c.size));
    });
    assert.ok(refused > 0);
    failing = false;
    for (const c of cases) {
      assert.deepEqual(await inclusionProofFromTiles(c.index, c.size, flaky, H, cache), tree.inclusionProof(c.index, c.size));
      assert.deepEqual(await consistencyProofFromTiles(c.oldSize, c.size, flaky, H, cache), tree.consistencyProof(c.oldSize, c.size));
    }
  });

  it('never a hash for an incomplete subtree, even with the full tile of the same index cached', async () => {
    const cache = new TileHashCache({ minLevel: 0 });
    // Warm: full tiles 0/0, 1/0 (size 65536) and the level-2 tile of width 2 (size 131072+).
    await inclusionProofFromTiles(1, 65536, store, H, cache);
    await inclusionProofFromTiles(131072, 131073, store, H, cache);
    const cases: Array<[number, number, bigint]> = [
      [300, 9, 0n], // 512 leaves at size 300
      [300, 8, 1n], // 2nd 256 at size 300
      [300, 1, 150n], // leaves 300..301
      [65535, 16, 0n],
      [65535, 8, 255n],
      [65536, 17, 0n],
      [131073, 17, 1n],
      [131073, 16, 2n], // nodes 131072..196607
      [131073, 1, 65536n], // leaves 131072..131073
    ];
    for (const [size, level, index] of cases) {
      await assert.rejects(async () => tileNodeReader(size, store, H, cache)([{ level, index }]), (e: unknown) => e instanceof TlogError && e.code === 'INVALID_ARGUMENT', `${level}/${index} at ${size}`);
    }
    // …while complete ones come out right.
    const ok = await tileNodeReader(131073, store, H, cache)([{ level: 17, index: 0n }, { level: 16, index: 1n }, { level: 8, index: 511n }, { level: 0, index: 131072n }]);
    assert.deepEqual(ok, [tree.root(131072), subtreeRoot(65536, 131072), subtreeRoot(511 * 256, 512 * 256), H.hashLeaf(leafEntry(131072))]);
  });

  it('mutating a proof returned through a cached tile (plain Uint8Array reader) does not change later proofs', async () => {
    const cache = new TileHashCache({ minLevel: 0 });
    const want = tree.inclusionProof(40000, 65536);
    const p1 = await inclusionProofFromTiles(40000, 65536, store, H, cache);
    for (const h of p1) h.fill(0);
    assert.deepEqual(await inclusionProofFromTiles(40000, 65536, store, H, cache), want);
    // and a reader that overwrites the body it returned after the read does not either
    const copies: Uint8Array[] = [];
    const scribbling: TileReader = {
      readTile: (l, i, w) => {
        const c = store.readTile(l, i, w).slice();
        copies.push(c);
        return c;
      },
      readEntryBundle: (i, w) => store.readEntryBundle(i, w),
    };
    const fresh = new TileHashCache({ minLevel: 0 });
    await inclusionProofFromTiles(40000, 65536, scribbling, H, fresh);
    for (const c of copies) c.fill(7);
    assert.deepEqual(await inclusionProofFromTiles(40000, 65536, scribbling, H, fresh), want);
  });

  it('a reader returning Node Buffers (fs.readFile, DB drivers): the cache keeps a copy, not a view — mutating a returned proof hash cannot poison a later proof', async () => {
    // Buffer.prototype.slice does not copy: `data.slice(…)` in TileHashCache.put keeps the reader's
    // Buffer, and subtreeFromRows' `rows[0].slice(…)` hands out views into the cache.
    const bufReader: TileReader = {
      readTile: (l, i, w) => Buffer.from(store.readTile(l, i, w)),
      readEntryBundle: (i, w) => store.readEntryBundle(i, w),
    };
    const hex = (p: Uint8Array[]) => p.map((h) => Buffer.from(h).toString('hex'));
    const want = hex(tree.inclusionProof(40000, 65536));
    // Without a cache the same mutation is harmless (each proof reads its own bodies):
    const u1 = await inclusionProofFromTiles(40000, 65536, bufReader, H);
    for (const h of u1) h.fill(0);
    assert.deepEqual(hex(await inclusionProofFromTiles(40000, 65536, bufReader, H)), want);
    // With a shared cache:
    const cache = new TileHashCache({ minLevel: 0 });
    const p1 = await inclusionProofFromTiles(40000, 65536, bufReader, H, cache);
    assert.deepEqual(hex(p1), want);
    for (const h of p1) h.fill(0); // e.g. a caller reusing the arrays
    assert.deepEqual(hex(await inclusionProofFromTiles(40000, 65536, bufReader, H, cache)), want, 'a later proof from the cache is still right');
  });

  it('LRU bound and order: never more than maxTiles; a hit refreshes recency', async () => {
    const cache = new TileHashCache({ minLevel: 0, maxTiles: 2 });
    let reads = 0;
    const counting: TileReader = { readTile: (l, i, w) => (reads++, store.readTile(l, i, w)), readEntryBundle: (i, w) => store.readEntryBundle(i, w) };
    await inclusionProofFromTiles(5, 512, counting, H, cache); // tiles 0/0, 1/0.p/2
    assert.equal(cache.size, 2);
    await inclusionProofFromTiles(300, 512, counting, H, cache); // 0/1 (evicts the LRU one)
    assert.ok(cache.size <= 2);
    for (let k = 0; k < 50; k++) {
      await inclusionProofFromTiles((k * 2731) % N, N, counting, H, cache);
      assert.ok(cache.size <= 2);
    }
    cache.clear();
    assert.equal(cache.size, 0);
    reads = 0;
    assert.deepEqual(await inclusionProofFromTiles(5, 512, counting, H, cache), tree.inclusionProof(5, 512));
    assert.ok(reads > 0, 'cleared: read again');
  });

  /** MTH of leaves [lo, hi) (hi − lo a power of two). */
  function subtreeRoot(lo: number, hi: number): Uint8Array {
    const level = Math.log2(hi - lo);
    let row = Array.from({ length: hi - lo }, (_, k) => H.hashLeaf(leafEntry(lo + k)));
    for (let l = 0; l < level; l++) row = Array.from({ length: row.length / 2 }, (_, k) => H.hashChildren(row[2 * k]!, row[2 * k + 1]!));
    return row[0]!;
  }
});
