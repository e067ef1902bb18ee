/**
 * Micro-benchmark of @sovra/tlog.
 *
 * Run: node --import tsx bench/tlog.bench.ts [--entries 200000] [--size 10000000] [--proofs 2000]
 *
 * 1. Sequencer hashing throughput (entries/s): leaf hash + tree/tile building, node:crypto SHA-256 vs
 *    @noble/hashes, for (a) the TileIntegrator (leaf hash, 256-hash tiles, entry bundles, a flush —
 *    tiles + root — every 256 entries, i.e. what the gateway does minus the store) and (b) the bare
 *    incremental TreeBuilder. Entries are ~300-byte JSON records like the spec's audit records.
 * 2. Inclusion / consistency proof generation at 10 million entries, without materialising 10M leaves:
 *    the tree is a *sparse* tree whose leaves are all the same filler entry except K "interesting"
 *    positions with distinct content. The hash of a complete subtree containing no interesting leaf is
 *    the memoised filler hash of its level; others are computed recursively. This is a genuine RFC 9162
 *    tree of 10M entries (only its contents are repetitive), so tiles and proofs are exactly what a real
 *    store would serve. Tiles are synthesised on first use and cached in memory (warm-up pass, not
 *    timed); the timed pass generates proofs from the in-memory tiles (tile lookups + the in-tile
 *    hashing of up to 255 hashes per level) and, separately, from a subtree-hash callback.
 * 3. Verification time: inclusion and consistency proof verification (both hashers), signed
 *    checkpoint verification (Ed25519, @noble/curves), full offline tlog-proof verification.
 *
 * Every loop is bounded by a count; a typical run takes ~20 s.
 */
import os from 'node:os';
import {
  TileIntegrator,
  TreeBuilder,
  consistencyProof,
  consistencyProofFromTiles,
  createEd25519Signer,
  createEd25519Verifier,
  formatTlogProof,
  inclusionProof,
  inclusionProofFromTiles,
  nobleTreeHasher,
  openCheckpoint,
  rootHash,
  signCheckpoint,
  tileWidth,
  verifyConsistency,
  verifyInclusion,
  verifyTlogProof,
  type NodeId,
  type TileReader,
  type TreeHasher,
} from '../packages/tlog/src/index.ts';
import { createNodeEd25519Signer, nodeTreeHasher } from '../packages/tlog/src/node.ts';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const ENTRIES = Number(args.get('entries') ?? 200_000);
const SIZE = BigInt(args.get('size') ?? 10_000_000);
const PROOFS = Number(args.get('proofs') ?? 2000);

const enc = new TextEncoder();
function record(i: number): Uint8Array {
  return enc.encode(
    JSON.stringify({
      v: 1,
      request_id: `req_${i.toString(36).padStart(12, '0')}`,
      received_at: '2025-01-01T00:00:00Z',
      tenant: 'tenant-' + (i % 97),
      model: 'gpt-4o-mini-2024-07-18',
      request_sha256: (i * 2654435761).toString(16).padStart(64, '0'),
      response_sha256: (i * 40503).toString(16).padStart(64, '0'),
      status: 200,
    }),
  );
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

// ---------------------------------------------------------------------------------------------------
// 1. Hashing throughput
// ---------------------------------------------------------------------------------------------------

function integratorRun(hasher: TreeHasher, entries: Uint8Array[]): number {
  const t = new TileIntegrator({ hasher });
  const t0 = performance.now();
  let sink = 0;
  for (let i = 0; i < entries.length; i++) {
    t.appendEntry(entries[i]!);
    if ((i & 255) === 255) sink += t.flush().tiles.length;
  }
  sink += t.flush().rootHash[0]!;
  const ms = performance.now() - t0;
  if (sink < 0) console.log(sink);
  return (entries.length / ms) * 1000;
}

function builderRun(hasher: TreeHasher, entries: Uint8Array[]): number {
  const b = new TreeBuilder({ hasher });
  const t0 = performance.now();
  for (let i = 0; i < entries.length; i++) b.appendEntry(entries[i]!);
  const r = b.root();
  const ms = performance.now() - t0;
  if (r.length !== 32) throw new Error('bad root');
  return (entries.length / ms) * 1000;
}

function leafOnlyRun(hasher: TreeHasher, entries: Uint8Array[]): number {
  const t0 = performance.now();
  let x = 0;
  for (let i = 0; i < entries.length; i++) x ^= hasher.hashLeaf(entries[i]!)[0]!;
  const ms = performance.now() - t0;
  if (x === 256) console.log(x);
  return (entries.length / ms) * 1000;
}

function best(f: () => number, rounds = 3): number {
  let b = 0;
  for (let i = 0; i < rounds; i++) b = Math.max(b, f());
  return b;
}

// ---------------------------------------------------------------------------------------------------
// 2. Sparse 10M-entry tree
// ---------------------------------------------------------------------------------------------------

class SparseTree {
  readonly filler: Uint8Array[] = [];
  readonly interesting: bigint[];
  readonly #leafHash = new Map<bigint, Uint8Array>();
  readonly #memo = new Map<string, Uint8Array>();
  constructor(
    readonly size: bigint,
    interesting: bigint[],
    readonly hasher: TreeHasher,
  ) {
    this.interesting = [...new Set(interesting)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.filler[0] = hasher.hashLeaf(enc.encode('{"v":1,"filler":true}'));
    for (let h = 1; h < 64; h++) this.filler[h] = hasher.hashChildren(this.filler[h - 1]!, this.filler[h - 1]!);
    for (const i of this.interesting) this.#leafHash.set(i, hasher.hashLeaf(this.entry(i)));
  }
  entry(i: bigint): Uint8Array {
    return this.#leafHash.has(i) || this.interesting.includes(i) ? record(Number(i)) : enc.encode('{"v":1,"filler":true}');
  }
  leafHash(i: bigint): Uint8Array {
    return this.#leafHash.get(i) ?? this.filler[0]!;
  }
  /** Any interesting leaf in [lo, hi)? (binary search) */
  #any(lo: bigint, hi: bigint): boolean {
    let a = 0;
    let b = this.interesting.length;
    while (a < b) {
      const m = (a + b) >> 1;
      if (this.interesting[m]! < lo) a = m + 1;
      else b = m;
    }
    return a < this.interesting.length && this.interesting[a]! < hi;
  }
  node(level: number, index: bigint): Uint8Array {
    const lo = index << BigInt(level);
    if (lo + (1n << BigInt(level)) > this.size) throw new Error('incomplete subtree');
    if (!this.#any(lo, lo + (1n << BigInt(level)))) return this.filler[level]!;
    if (level === 0) return this.#leafHash.get(index)!;
    const key = `${level}/${index}`;
    let h = this.#memo.get(key);
    if (!h) {
      h = this.hasher.hashChildren(this.node(level - 1, index * 2n), this.node(level - 1, index * 2n + 1n));
      this.#memo.set(key, h);
    }
    return h;
  }
  readonly reader = (ids: readonly NodeId[]): Uint8Array[] => ids.map((id) => this.node(id.level, id.index));
}

/** Tiles synthesised from the sparse tree on first read, then served from memory. */
class SparseTileStore implements TileReader {
  readonly cache = new Map<string, Uint8Array>();
  synthesised = 0;
  constructor(readonly tree: SparseTree) {}
  readTile(level: number, index: bigint, width: number): Uint8Array {
    const key = `${level}/${index}/${width}`;
    let t = this.cache.get(key);
    if (!t) {
      if (tileWidth(level, index, this.tree.size) < width) throw new Error('tile beyond the tree');
      t = new Uint8Array(width * 32);
      for (let i = 0; i < width; i++) t.set(this.tree.node(8 * level, index * 256n + BigInt(i)), i * 32);
      this.cache.set(key, t);
      this.synthesised++;
    }
    return t;
  }
  readEntryBundle(): Uint8Array {
    throw new Error('not needed');
  }
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  console.log(`# @sovra/tlog micro-benchmark`);
  console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}, load avg ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);

  // 1 ------------------------------------------------------------------------------------------------
  const entries = Array.from({ length: ENTRIES }, (_, i) => record(i));
  const avg = entries.reduce((n, e) => n + e.length, 0) / entries.length;
  console.log(`## 1. Sequencer hashing throughput (${fmt(ENTRIES)} entries of ~${fmt(avg)} bytes, best of 3)\n`);
  console.log('| what | node:crypto | @noble/hashes |');
  console.log('|---|---:|---:|');
  const small = entries.slice(0, Math.min(ENTRIES, 50_000));
  const rows: Array<[string, (h: TreeHasher, e: Uint8Array[]) => number]> = [
    ['leaf hash only', leafOnlyRun],
    ['TreeBuilder (leaf hash + compact range)', builderRun],
    ['TileIntegrator (leaf hash + tiles + bundles + flush/256)', integratorRun],
  ];
  for (const [name, f] of rows) {
    const nodeRate = best(() => f(nodeTreeHasher, entries));
    const nobleRate = best(() => f(nobleTreeHasher, small), 2);
    console.log(`| ${name} | ${fmt(nodeRate)} entries/s | ${fmt(nobleRate)} entries/s |`);
  }

  // 2 ------------------------------------------------------------------------------------------------
  console.log(`\n## 2. Proof generation at ${fmt(Number(SIZE))} entries (sparse tree, ${fmt(PROOFS)} random leaves)\n`);
  let seed = 12345;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const targets = Array.from({ length: PROOFS }, () => BigInt(Math.floor(rand() * Number(SIZE))));
  const H = nodeTreeHasher;
  const tB = performance.now();
  const sparse = new SparseTree(SIZE, targets, H);
  const root = rootHash(SIZE, sparse.reader, H);
  const store = new SparseTileStore(sparse);
  for (const m of targets) await inclusionProofFromTiles(m, SIZE, store, H); // warm-up: synthesise the tiles
  const older = SIZE - 1_234_567n;
  const oldRoot = rootHash(older, sparse.reader, H);
  for (let k = 0; k < 50; k++) await consistencyProofFromTiles(older - BigInt(k * 1000), SIZE, store, H);
  console.log(`setup (sparse tree, ${fmt(store.synthesised)} tiles synthesised and cached): ${fmt(performance.now() - tB)} ms\n`);

  const tileTimes: number[] = [];
  const proofs: Uint8Array[][] = [];
  for (const m of targets) {
    const t0 = performance.now();
    proofs.push(await inclusionProofFromTiles(m, SIZE, store, H));
    tileTimes.push(performance.now() - t0);
  }
  const directTimes: number[] = [];
  for (let k = 0; k < targets.length; k++) {
    const t0 = performance.now();
    const p = inclusionProof(targets[k]!, SIZE, sparse.reader, H);
    directTimes.push(performance.now() - t0);
    if (p.length !== proofs[k]!.length || !p.every((h, i) => Buffer.compare(h, proofs[k]![i]!) === 0)) {
      throw new Error('tile-based and direct proofs differ');
    }
  }
  const consTimes: number[] = [];
  for (let k = 0; k < 50; k++) {
    const t0 = performance.now();
    await consistencyProofFromTiles(older - BigInt(k * 1000), SIZE, store, H);
    consTimes.push(performance.now() - t0);
  }
  const directCons = consistencyProof(older, SIZE, sparse.reader, H);
  const consProof0 = await consistencyProofFromTiles(older, SIZE, store, H);
  if (directCons.length !== consProof0.length || !directCons.every((h, i) => Buffer.compare(h, consProof0[i]!) === 0)) {
    throw new Error('tile-based and direct consistency proofs differ');
  }
  let okCount = 0;
  for (let k = 0; k < targets.length; k++) if (verifyInclusion(targets[k]!, SIZE, sparse.leafHash(targets[k]!), proofs[k]!, root, H)) okCount++;
  if (okCount !== targets.length) throw new Error(`only ${okCount} proofs verified`);
  if (!verifyConsistency(older, SIZE, oldRoot, root, consProof0, H)) throw new Error('consistency proof failed');

  console.log('| operation (node:crypto hasher, tiles in memory) | median | p99 |');
  console.log('|---|---:|---:|');
  console.log(`| inclusion proof from tiles (${proofs[0]!.length}–${Math.max(...proofs.map((p) => p.length))} hashes) | ${fmt(percentile(tileTimes, 50) * 1000)} µs | ${fmt(percentile(tileTimes, 99) * 1000)} µs |`);
  console.log(`| inclusion proof from a subtree-hash callback | ${fmt(percentile(directTimes, 50) * 1000)} µs | ${fmt(percentile(directTimes, 99) * 1000)} µs |`);
  console.log(`| consistency proof ${fmt(Number(older))} → ${fmt(Number(SIZE))} from tiles (${consProof0.length} hashes) | ${fmt(percentile(consTimes, 50) * 1000)} µs | ${fmt(percentile(consTimes, 99) * 1000)} µs |`);
  console.log(`\nall ${fmt(targets.length)} inclusion proofs verified against the 10M root; tile-based = callback-based for every one.`);

  // 3 ------------------------------------------------------------------------------------------------
  console.log(`\n## 3. Verification (auditor side)\n`);
  const time = (n: number, f: () => void): number => {
    for (let i = 0; i < Math.min(50, n); i++) f();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) f();
    return ((performance.now() - t0) / n) * 1000;
  };
  const idx = targets[0]!;
  const leaf = sparse.leafHash(idx);
  const p0 = proofs[0]!;
  const origin = 'gw.example.com/audit';
  const seedBytes = new Uint8Array(32).fill(1);
  const signer = createEd25519Signer(origin, seedBytes);
  const verifier = createEd25519Verifier(signer.vkey);
  const note = signCheckpoint({ origin, size: SIZE, rootHash: root }, [signer]);
  const tlogProof = formatTlogProof({ index: idx, proof: p0, checkpoint: note });
  const entry = sparse.entry(idx);
  const nodeSigner = createNodeEd25519Signer(origin, seedBytes);
  console.log('| operation | time |');
  console.log('|---|---:|');
  console.log(`| verifyInclusion at 10M (${p0.length} hashes), node:crypto | ${fmt(time(20000, () => void verifyInclusion(idx, SIZE, leaf, p0, root, nodeTreeHasher)), 1)} µs |`);
  console.log(`| verifyInclusion at 10M (${p0.length} hashes), @noble/hashes | ${fmt(time(5000, () => void verifyInclusion(idx, SIZE, leaf, p0, root, nobleTreeHasher)), 1)} µs |`);
  console.log(`| verifyConsistency ${fmt(Number(older))} → 10M (${consProof0.length} hashes), @noble/hashes | ${fmt(time(5000, () => void verifyConsistency(older, SIZE, oldRoot, root, consProof0, nobleTreeHasher)), 1)} µs |`);
  console.log(`| openCheckpoint (parse + Ed25519 verify, @noble/curves) | ${fmt(time(300, () => void openCheckpoint(note, [verifier])), 0)} µs |`);
  console.log(`| verifyTlogProof (checkpoint + entry + inclusion, all portable) | ${fmt(time(300, () => void verifyTlogProof(tlogProof, { verifiers: [verifier], entry })), 0)} µs |`);
  console.log(`| signCheckpoint, @noble/curves | ${fmt(time(300, () => void signCheckpoint({ origin, size: SIZE, rootHash: root }, [signer])), 0)} µs |`);
  console.log(`| signCheckpoint, node:crypto | ${fmt(time(2000, () => void signCheckpoint({ origin, size: SIZE, rootHash: root }, [nodeSigner])), 0)} µs |`);
}

await main();
