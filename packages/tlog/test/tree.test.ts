/**
 * Property tests of the Merkle tree (seeded PRNG): proofs of every kind verify, every corruption
 * fails, incremental roots equal the recursive MTH, plans and reference definitions agree.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  InMemoryTree,
  TreeBuilder,
  consistencyProofPlan,
  decomposeRange,
  emptyRoot,
  foldRight,
  inclusionProofPlan,
  merkleTreeHash,
  referenceConsistencyProof,
  referenceInclusionProof,
  rootFromInclusionProof,
  rootNodes,
  splitPoint,
  verifyConsistency,
  verifyInclusion,
  type NodeId,
} from '../src/index.ts';
import { nodeTreeHasher } from '../src/node.ts';
import { Prng, flipBit, leafEntry } from './helpers/util.ts';

const H = nodeTreeHasher; // the portable hasher is exercised by vectors.test.ts; bulk property tests use the fast one

function buildTree(n: number, seed: number): { tree: InMemoryTree; leaves: Uint8Array[] } {
  const rnd = new Prng(seed);
  const tree = new InMemoryTree(H);
  const leaves: Uint8Array[] = [];
  for (let i = 0; i < n; i++) leaves.push(tree.appendEntry(rnd.bytes(rnd.int(0, 40))));
  return { tree, leaves };
}

/**
 * The sequence of hashing operations the RFC 9162 §2.1.3.2 verifier performs for (index, size, proof
 * length): two (index, size) pairs with the same shape accept the same proofs against the same root.
 * That is inherent to the algorithm: the size is authenticated by the signed checkpoint, not the proof.
 */
function inclusionShape(index: bigint, size: bigint, len: number): string | null {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1n;
  let s = '';
  for (let i = 0; i < len; i++) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      s += 'L';
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else s += 'R';
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? s : null;
}

/** Same idea for RFC 9162 §2.1.4.2 (given the proof length before the optional R1 prefix). */
function consistencyShape(first: bigint, second: bigint, len: number): string | null {
  if (first === 0n || first >= second || len === 0) return null;
  const n = (first & (first - 1n)) === 0n ? len + 1 : len;
  let fn = first - 1n;
  let sn = second - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let s = (first & (first - 1n)) === 0n ? 'P' : '';
  for (let i = 1; i < n; i++) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      s += 'B';
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else s += 'S';
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? s : null;
}

/** All the ways to corrupt a proof: flipped bits, dropped/added elements, swapped neighbours. */
function corruptions(proof: Uint8Array[], rnd: Prng): Array<[string, Uint8Array[]]> {
  const out: Array<[string, Uint8Array[]]> = [];
  for (let i = 0; i < proof.length; i++) {
    out.push([`flip bit in [${i}]`, proof.map((h, j) => (j === i ? flipBit(h, rnd.int(0, 255)) : h))]);
    out.push([`drop [${i}]`, proof.filter((_, j) => j !== i)]);
    if (i + 1 < proof.length) {
      const sw = proof.slice();
      [sw[i], sw[i + 1]] = [sw[i + 1]!, sw[i]!];
      out.push([`swap [${i}] and [${i + 1}]`, sw]);
    }
  }
  out.push(['append random', [...proof, rnd.bytes(32)]]);
  out.push(['prepend random', [rnd.bytes(32), ...proof]]);
  if (proof.length > 0) out.push(['duplicate last', [...proof, proof[proof.length - 1]!]]);
  out.push(['short element', proof.length > 0 ? [proof[0]!.subarray(0, 31), ...proof.slice(1)] : [new Uint8Array(31)]]);
  return out;
}

describe('tree arithmetic', () => {
  it('splitPoint is the largest power of two strictly below n', () => {
    assert.equal(splitPoint(2), 1n);
    assert.equal(splitPoint(5), 4n);
    assert.equal(splitPoint(8), 4n);
    assert.equal(splitPoint(9), 8n);
    assert.equal(splitPoint((1n << 63n) - 1n), 1n << 62n);
    assert.throws(() => splitPoint(1), { code: 'INVALID_ARGUMENT' });
  });
  it('decomposeRange gives aligned complete subtrees covering the range', () => {
    const rnd = new Prng(7);
    for (let k = 0; k < 2000; k++) {
      const lo = BigInt(rnd.int(0, 5000));
      const hi = lo + BigInt(rnd.int(0, 5000));
      let pos = lo;
      for (const id of decomposeRange(lo, hi)) {
        const width = 1n << BigInt(id.level);
        assert.equal(id.index * width, pos);
        pos += width;
      }
      assert.equal(pos, hi);
    }
    assert.deepEqual(rootNodes(13).map((n) => [n.level, n.index]), [
      [3, 0n],
      [2, 2n],
      [0, 12n],
    ]);
  });
  it('sizes and indexes above 2^53 are exact (bigint)', () => {
    const n = (1n << 62n) + 12345n;
    const plan = inclusionProofPlan(n - 1n, n);
    const ids = plan.flat();
    assert.ok(ids.every((id) => (id.index + 1n) << BigInt(id.level) <= n));
    assert.equal(inclusionProofPlan(0, n).length, 63); // ceil(log2 n)
    assert.ok(consistencyProofPlan(n - 7n, n).length > 0);
    assert.throws(() => inclusionProofPlan(0, 1n << 63n), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => inclusionProofPlan(2 ** 53, 2 ** 53 + 2), { code: 'INVALID_ARGUMENT' }); // unsafe number
    assert.throws(() => inclusionProofPlan(-1, 3), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => inclusionProofPlan(1.5, 3), { code: 'INVALID_ARGUMENT' });
  });
  it('verification at sizes near 2^63 uses exact arithmetic', () => {
    // A synthetic tree: every leaf hash of the proof path is random; the computed root must round-trip.
    const rnd = new Prng(99);
    for (const size of [(1n << 63n) - 1n, (1n << 62n) + 1n, 1n << 53n, (1n << 53n) + 1n]) {
      const index = size - 1n - BigInt(rnd.int(0, 1000));
      const len = inclusionProofPlan(index, size).length;
      const proof = Array.from({ length: len }, () => rnd.bytes(32));
      const leaf = rnd.bytes(32);
      const root = rootFromInclusionProof(index, size, leaf, proof, H);
      assert.ok(root);
      assert.equal(verifyInclusion(index, size, leaf, proof, root, H), true);
      assert.equal(verifyInclusion(index - 1n, size, leaf, proof, root, H), false);
    }
  });
});

describe('incremental roots equal the recursive MTH', () => {
  it('every prefix size 0..300', () => {
    const b = new TreeBuilder({ hasher: H });
    const leaves: Uint8Array[] = [];
    assert.deepEqual(b.root(), emptyRoot());
    for (let i = 0; i < 300; i++) {
      leaves.push(b.appendEntry(leafEntry(i)));
      assert.deepEqual(b.root(), merkleTreeHash(leaves, H), `size ${i + 1}`);
    }
  });
  it('random sizes up to 4000, restore from subtree hashes, onNode reports every complete subtree', () => {
    const rnd = new Prng(1);
    for (let t = 0; t < 6; t++) {
      const n = rnd.int(1, 4000);
      const nodes = new Map<string, Uint8Array>();
      const b = new TreeBuilder({ hasher: H, onNode: (id, h) => nodes.set(`${id.level}/${id.index}`, h) });
      const leaves: Uint8Array[] = [];
      for (let i = 0; i < n; i++) leaves.push(b.appendEntry(rnd.bytes(rnd.int(0, 64))));
      const root = merkleTreeHash(leaves, H);
      assert.deepEqual(b.root(), root);
      const restored = TreeBuilder.fromSubtreeHashes(n, b.subtreeHashes(), { hasher: H });
      assert.deepEqual(restored.root(), root);
      const fromReader = TreeBuilder.fromReader(n, (ids) => ids.map((id) => nodes.get(`${id.level}/${id.index}`)!), { hasher: H });
      assert.deepEqual(fromReader.root(), root);
      // continue appending after restore
      const extra = rnd.bytes(10);
      restored.appendEntry(extra);
      assert.deepEqual(restored.root(), merkleTreeHash([...leaves, H.hashLeaf(extra)], H));
      let complete = 0;
      for (let level = 0; 1 << level <= n; level++) complete += Math.floor(n / (1 << level));
      assert.equal(nodes.size, complete);
    }
  });
  it('InMemoryTree roots at every historical size equal MTH', () => {
    const { tree, leaves } = buildTree(600, 3);
    for (let s = 0; s <= 600; s += 7) assert.deepEqual(tree.root(s), merkleTreeHash(leaves.slice(0, s), H));
  });
  it('fromSubtreeHashes rejects the wrong number of hashes', () => {
    assert.throws(() => TreeBuilder.fromSubtreeHashes(5, [new Uint8Array(32)]), { code: 'INVALID_ARGUMENT' });
  });
  it('foldRight matches the MTH of a ragged range', () => {
    const { tree, leaves } = buildTree(77, 4);
    const ids = decomposeRange(64, 77);
    assert.deepEqual(foldRight(ids.map((id: NodeId) => tree.nodeHash(id)), H), merkleTreeHash(leaves.slice(64, 77), H));
  });
});

describe('inclusion proofs (property)', () => {
  it('every proof verifies and equals the RFC definition, sizes 1..70 exhaustively', () => {
    const { tree, leaves } = buildTree(70, 10);
    for (let n = 1; n <= 70; n++) {
      const root = tree.root(n);
      for (let m = 0; m < n; m++) {
        const p = tree.inclusionProof(m, n);
        assert.deepEqual(p, referenceInclusionProof(m, leaves.slice(0, n), H));
        assert.equal(verifyInclusion(m, n, leaves[m]!, p, root, H), true);
      }
    }
  });
  it('random sizes up to 3000: every leaf verifies; every corruption fails', () => {
    const rnd = new Prng(11);
    for (let t = 0; t < 4; t++) {
      const n = rnd.int(2, 3000);
      const { tree, leaves } = buildTree(n, 100 + t);
      const N = BigInt(n);
      const root = tree.root();
      for (let m = 0; m < n; m++) {
        const p = tree.inclusionProof(m, n);
        assert.ok(p.length <= Math.ceil(Math.log2(n)));
        assert.equal(verifyInclusion(m, n, leaves[m]!, p, root, H), true);
      }
      for (let k = 0; k < 60; k++) {
        const m = rnd.int(0, n - 1);
        const M = BigInt(m);
        const p = tree.inclusionProof(m, n);
        for (const [what, bad] of corruptions(p, rnd)) {
          assert.equal(verifyInclusion(m, n, leaves[m]!, bad, root, H), false, `${what} (m=${m}, n=${n})`);
        }
        assert.equal(verifyInclusion(m, n, flipBit(leaves[m]!, 3), p, root, H), false, 'wrong leaf');
        assert.equal(verifyInclusion(m, n, leaves[m]!, p, flipBit(root, 200), H), false, 'wrong root');
        for (const wrong of [M - 1n, M + 1n, M ^ 1n, N, N + 5n]) {
          if (wrong < 0n || wrong === M) continue;
          assert.equal(verifyInclusion(wrong, n, leaves[m]!, p, root, H), false, `wrong index ${wrong} (m=${m}, n=${n})`);
        }
        for (const wrong of [N - 1n, N + 1n, N * 2n, M + 1n, M]) {
          if (wrong === N || wrong < 0n) continue;
          const same = inclusionShape(M, wrong, p.length) === inclusionShape(M, N, p.length) && inclusionShape(M, wrong, p.length) !== null;
          assert.equal(verifyInclusion(m, wrong, leaves[m]!, p, root, H), same, `wrong size ${wrong} (m=${m}, n=${n})`);
        }
      }
    }
  });
  it('edge cases: index >= size, empty tree, too-long proof', () => {
    const { tree, leaves } = buildTree(5, 12);
    assert.equal(verifyInclusion(5, 5, leaves[0]!, [], tree.root(), H), false);
    assert.equal(verifyInclusion(0, 0, leaves[0]!, [], emptyRoot(), H), false);
    assert.equal(verifyInclusion(0, 1, leaves[0]!, [], leaves[0]!, H), true);
    assert.equal(verifyInclusion(0, 1, leaves[0]!, [leaves[1]!], leaves[0]!, H), false);
    assert.equal(verifyInclusion(0, 5, leaves[0]!, Array(64).fill(leaves[1]!), tree.root(), H), false);
    assert.throws(() => tree.inclusionProof(5, 5), { code: 'INVALID_ARGUMENT' });
  });
});

describe('consistency proofs (property)', () => {
  it('every pair m <= n <= 64 verifies and equals the RFC definition', () => {
    const { tree, leaves } = buildTree(64, 20);
    for (let n = 0; n <= 64; n++) {
      for (let m = 0; m <= n; m++) {
        const p = tree.consistencyProof(m, n);
        assert.deepEqual(p, referenceConsistencyProof(m, leaves.slice(0, n), H));
        assert.equal(verifyConsistency(m, n, tree.root(m), tree.root(n), p, H), true, `${m} -> ${n}`);
      }
    }
  });
  it('random pairs up to 3000: verify; every corruption fails', () => {
    const rnd = new Prng(21);
    const { tree } = buildTree(3000, 22);
    for (let k = 0; k < 300; k++) {
      const n = rnd.int(1, 3000);
      const m = rnd.int(0, n);
      const M = BigInt(m);
      const N = BigInt(n);
      const r1 = tree.root(m);
      const r2 = tree.root(n);
      const p = tree.consistencyProof(m, n);
      assert.equal(verifyConsistency(m, n, r1, r2, p, H), true, `${m} -> ${n}`);
      if (m === 0 || m === n) {
        assert.equal(p.length, 0);
        assert.equal(verifyConsistency(m, n, r1, r2, [H.hashLeaf(new Uint8Array(1))], H), false, 'non-empty trivial proof');
        if (m === n && n > 0) assert.equal(verifyConsistency(m, n, flipBit(r1, 1), r2, p, H), false);
        if (m === 0) assert.equal(verifyConsistency(0, n, flipBit(r1, 1), r2, p, H), false, 'size 0 root must be SHA-256("")');
        continue;
      }
      for (const [what, bad] of corruptions(p, rnd)) {
        assert.equal(verifyConsistency(m, n, r1, r2, bad, H), false, `${what} (${m} -> ${n})`);
      }
      assert.equal(verifyConsistency(m, n, flipBit(r1, 9), r2, p, H), false, 'wrong old root');
      assert.equal(verifyConsistency(m, n, r1, flipBit(r2, 9), p, H), false, 'wrong new root');
      assert.equal(verifyConsistency(n, m, r2, r1, p, H), false, 'swapped sizes');
      for (const [m2, n2] of [
        [M - 1n, N],
        [M + 1n, N],
        [M, N + 1n],
        [M, N - 1n],
      ] as Array<[bigint, bigint]>) {
        if (m2 < 0n || (m2 === M && n2 === N)) continue;
        const a = consistencyShape(M, N, p.length);
        const b = consistencyShape(m2, n2, p.length);
        const same = a !== null && a === b && ((M & (M - 1n)) === 0n) === ((m2 & (m2 - 1n)) === 0n);
        assert.equal(verifyConsistency(m2, n2, r1, r2, p, H), same, `wrong sizes ${m2} -> ${n2} for proof ${m} -> ${n}`);
      }
    }
  });
  it('m > n fails; m == 0 needs the empty-tree root', () => {
    const { tree } = buildTree(10, 23);
    assert.equal(verifyConsistency(5, 4, tree.root(5), tree.root(4), [], H), false);
    assert.equal(verifyConsistency(0, 10, new Uint8Array(32), tree.root(), [], H), false);
    assert.equal(verifyConsistency(0, 10, emptyRoot(), tree.root(), [], H), true);
    assert.equal(verifyConsistency(0, 0, emptyRoot(), emptyRoot(), [], H), true);
  });
});
