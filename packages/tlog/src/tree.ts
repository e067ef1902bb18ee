/**
 * The Merkle tree of RFC 9162 §2.1 (spec §4–§6): tree hash for any size, the decomposition of a range
 * into complete aligned subtrees, an incremental builder, and inclusion / consistency proof
 * generation and verification.
 *
 * Addressing: a stored hash is identified by a {@link NodeId} `{ level, index }`, the root of the
 * complete subtree of `2^level` leaves starting at leaf `index · 2^level` (level 0 = leaf hashes).
 * Proofs are generated from any source of such hashes (an array, a database of subtree hashes, or
 * tiles, see `tiles.ts`) through a reader callback, so no leaf is ever rehashed.
 *
 * Integers: sizes and indexes are `bigint` internally and in results; inputs accept `bigint | number`
 * (safe integers only, see `encoding.ts`). Only bigint arithmetic is applied to them (spec §1).
 */
import { TlogError } from './errors.ts';
import { bytesEqual, toU63, type Uint63 } from './encoding.ts';
import { HASH_SIZE, defaultTreeHasher, assertHash, type TreeHasher } from './hash.ts';

/** Maximum number of hashes in an inclusion or consistency proof for sizes below 2^63 (spec §5). */
export const MAX_PROOF_LENGTH = 63;

/**
 * Identifies the hash of the complete subtree of `2^level` leaves starting at leaf `index · 2^level`
 * (`level` in 0–63; `index` a bigint).
 */
export interface NodeId {
  readonly level: number;
  readonly index: bigint;
}

/** Synchronous source of stored subtree hashes: returns one 32-byte hash per requested id, in order. */
export type NodeReader = (ids: readonly NodeId[]) => Uint8Array[];

/** Asynchronous source of stored subtree hashes (e.g. tiles over HTTP); same contract as {@link NodeReader}. */
export type AsyncNodeReader = (ids: readonly NodeId[]) => Promise<Uint8Array[]> | Uint8Array[];

// ---------------------------------------------------------------------------------------------------
// Tree arithmetic
// ---------------------------------------------------------------------------------------------------

/** Number of bits needed to write `n` (0 for 0). */
function bitLength(n: bigint): number {
  return n === 0n ? 0 : n.toString(2).length;
}

/**
 * The largest power of two strictly less than `n` (the split point `k` of spec §4), for `n ≥ 2`.
 * @throws TlogError `INVALID_ARGUMENT` if `n < 2`
 */
export function splitPoint(n: Uint63): bigint {
  const v = toU63(n, 'n');
  if (v < 2n) throw new TlogError('INVALID_ARGUMENT', 'split point needs n >= 2');
  return 1n << BigInt(bitLength(v - 1n) - 1);
}

/**
 * Decomposes the leaf range `[lo, hi)` into maximal complete aligned subtrees, from left to right
 * (spec §4: for ranges arising in the MTH recursion these have strictly decreasing sizes, and
 * `MTH(D[lo:hi])` is the right fold of their hashes, see {@link foldRight}).
 * @returns node ids; empty when `lo == hi`
 * @throws TlogError `INVALID_ARGUMENT` if `lo > hi` or out of range
 */
export function decomposeRange(lo: Uint63, hi: Uint63): NodeId[] {
  let a = toU63(lo, 'lo');
  const b = toU63(hi, 'hi');
  if (a > b) throw new TlogError('INVALID_ARGUMENT', `empty range: lo ${a} > hi ${b}`);
  const out: NodeId[] = [];
  while (a < b) {
    // largest power of two dividing a (a = 0: unbounded) that still fits in [a, b)
    let level = bitLength(b - a) - 1;
    if (a !== 0n) {
      let tz = 0;
      while (((a >> BigInt(tz)) & 1n) === 0n) tz++;
      if (tz < level) level = tz;
    }
    out.push({ level, index: a >> BigInt(level) });
    a += 1n << BigInt(level);
  }
  return out;
}

/** The complete subtrees whose right fold is the root of a tree of `size` leaves (spec §4). */
export function rootNodes(size: Uint63): NodeId[] {
  return decomposeRange(0n, size);
}

/**
 * Right fold `NH(c1, NH(c2, … NH(c_{m−1}, c_m)))` of subtree hashes (spec §4).
 * @throws TlogError `INVALID_ARGUMENT` if `hashes` is empty
 */
export function foldRight(hashes: readonly Uint8Array[], hasher: TreeHasher = defaultTreeHasher): Uint8Array {
  if (hashes.length === 0) throw new TlogError('INVALID_ARGUMENT', 'nothing to fold');
  let r = hashes[hashes.length - 1]!;
  for (let i = hashes.length - 2; i >= 0; i--) r = hasher.hashChildren(hashes[i]!, r);
  return r;
}

/**
 * Root hash of `2^k` consecutive hashes at the same level (a complete binary subtree), hashing pairwise.
 * @param hashes concatenated 32-byte hashes; `count` must be a power of two
 */
export function completeSubtreeHash(
  hashes: Uint8Array,
  offset: number,
  count: number,
  hasher: TreeHasher = defaultTreeHasher,
): Uint8Array {
  if (count < 1 || (count & (count - 1)) !== 0) {
    throw new TlogError('INVALID_ARGUMENT', 'count must be a power of two');
  }
  if ((offset + count) * HASH_SIZE > hashes.length) throw new TlogError('INVALID_ARGUMENT', 'range beyond data');
  const base = offset * HASH_SIZE;
  if (count === 1) return hashes.slice(base, base + HASH_SIZE);
  // First level straight from the buffer, then pairwise in place.
  const row: Uint8Array[] = new Array(count >> 1);
  for (let i = 0, p = base; i < row.length; i++, p += 2 * HASH_SIZE) {
    row[i] = hasher.hashChildren(hashes.subarray(p, p + HASH_SIZE), hashes.subarray(p + HASH_SIZE, p + 2 * HASH_SIZE));
  }
  for (let n = row.length; n > 1; n >>= 1) {
    for (let i = 0; i < n >> 1; i++) row[i] = hasher.hashChildren(row[2 * i]!, row[2 * i + 1]!);
  }
  return row[0]!;
}

// ---------------------------------------------------------------------------------------------------
// Reference definitions (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1) over an array of leaf hashes — for tests
// and small trees; production code uses the reader-based functions below.
// ---------------------------------------------------------------------------------------------------

function mthRange(leaves: readonly Uint8Array[], lo: number, hi: number, hasher: TreeHasher): Uint8Array {
  const n = hi - lo;
  if (n === 0) return hasher.emptyRoot();
  if (n === 1) return leaves[lo]!;
  let k = 1;
  while (k * 2 < n) k *= 2;
  return hasher.hashChildren(mthRange(leaves, lo, lo + k, hasher), mthRange(leaves, lo + k, hi, hasher));
}

/**
 * Merkle Tree Hash `MTH(D[0:n])` by the recursive definition (RFC 9162 §2.1.1, spec §4) over the
 * given leaf hashes (not entries). `n = 0` gives `SHA-256("")`. O(n) hashes: a reference for tests;
 * use {@link TreeBuilder} or {@link rootHash} in production.
 */
export function merkleTreeHash(leafHashes: readonly Uint8Array[], hasher: TreeHasher = defaultTreeHasher): Uint8Array {
  return mthRange(leafHashes, 0, leafHashes.length, hasher);
}

/**
 * `PATH(m, D[0:n])` by the recursive definition (RFC 9162 §2.1.3.1, spec §5) over all leaf hashes.
 * Reference implementation (O(n) hashes per proof).
 * @throws TlogError `INVALID_ARGUMENT` unless `0 ≤ m < n`
 */
export function referenceInclusionProof(
  m: number,
  leafHashes: readonly Uint8Array[],
  hasher: TreeHasher = defaultTreeHasher,
): Uint8Array[] {
  if (!Number.isSafeInteger(m) || m < 0 || m >= leafHashes.length) {
    throw new TlogError('INVALID_ARGUMENT', `leaf index ${m} not in [0, ${leafHashes.length})`);
  }
  const path = (m: number, lo: number, hi: number): Uint8Array[] => {
    const n = hi - lo;
    if (n === 1) return [];
    let k = 1;
    while (k * 2 < n) k *= 2;
    if (m < k) return [...path(m, lo, lo + k), mthRange(leafHashes, lo + k, hi, hasher)];
    return [...path(m - k, lo + k, hi), mthRange(leafHashes, lo, lo + k, hasher)];
  };
  return path(m, 0, leafHashes.length);
}

/**
 * `PROOF(m, D[0:n])` by the recursive definition (RFC 9162 §2.1.4.1, spec §6) over all leaf hashes,
 * with the spec's edge cases (empty for `m = 0` and `m = n`). Reference implementation.
 * @throws TlogError `INVALID_ARGUMENT` unless `0 ≤ m ≤ n`
 */
export function referenceConsistencyProof(
  m: number,
  leafHashes: readonly Uint8Array[],
  hasher: TreeHasher = defaultTreeHasher,
): Uint8Array[] {
  const n = leafHashes.length;
  if (!Number.isSafeInteger(m) || m < 0 || m > n) throw new TlogError('INVALID_ARGUMENT', `old size ${m} not in [0, ${n}]`);
  if (m === 0 || m === n) return [];
  const sub = (m: number, lo: number, hi: number, b: boolean): Uint8Array[] => {
    const size = hi - lo;
    if (m === size) return b ? [] : [mthRange(leafHashes, lo, hi, hasher)];
    let k = 1;
    while (k * 2 < size) k *= 2;
    if (m <= k) return [...sub(m, lo, lo + k, b), mthRange(leafHashes, lo + k, hi, hasher)];
    return [...sub(m - k, lo + k, hi, false), mthRange(leafHashes, lo, lo + k, hasher)];
  };
  return sub(m, 0, n, true);
}

// ---------------------------------------------------------------------------------------------------
// Proof plans: which stored subtree hashes make up each proof element
// ---------------------------------------------------------------------------------------------------

/**
 * The stored subtree hashes needed for `PATH(index, D[0:size])` (RFC 9162 §2.1.3.1): one group per
 * proof element, bottom-up; each group's hashes are right-folded into the element (spec §4).
 * @throws TlogError `INVALID_ARGUMENT` unless `0 ≤ index < size < 2^63`
 */
export function inclusionProofPlan(index: Uint63, size: Uint63): NodeId[][] {
  const m = toU63(index, 'leaf index');
  const n = toU63(size, 'tree size');
  if (m >= n) throw new TlogError('INVALID_ARGUMENT', `leaf index ${m} not below tree size ${n}`);
  const ranges: Array<[bigint, bigint]> = [];
  let lo = 0n;
  let hi = n;
  while (hi - lo > 1n) {
    const k = splitPoint(hi - lo);
    if (m < lo + k) {
      ranges.push([lo + k, hi]);
      hi = lo + k;
    } else {
      ranges.push([lo, lo + k]);
      lo = lo + k;
    }
  }
  ranges.reverse();
  return ranges.map(([a, b]) => decomposeRange(a, b));
}

/**
 * The stored subtree hashes needed for `PROOF(m, D[0:n])` (RFC 9162 §2.1.4.1, spec §6), one group
 * per proof element in proof order. Empty for `m = 0` and `m = n`.
 * @throws TlogError `INVALID_ARGUMENT` unless `0 ≤ m ≤ n < 2^63`
 */
export function consistencyProofPlan(oldSize: Uint63, newSize: Uint63): NodeId[][] {
  const m = toU63(oldSize, 'old size');
  const n = toU63(newSize, 'new size');
  if (m > n) throw new TlogError('INVALID_ARGUMENT', `old size ${m} exceeds new size ${n}`);
  if (m === 0n || m === n) return [];
  const ranges: Array<[bigint, bigint]> = [];
  let lo = 0n;
  let hi = n;
  let b = true;
  for (;;) {
    if (m === hi) {
      if (!b) ranges.push([lo, hi]);
      break;
    }
    const k = splitPoint(hi - lo);
    if (m <= lo + k) {
      ranges.push([lo + k, hi]);
      hi = lo + k;
    } else {
      ranges.push([lo, lo + k]);
      lo = lo + k;
      b = false;
    }
  }
  ranges.reverse();
  return ranges.map(([a, c]) => decomposeRange(a, c));
}

function checkRead(ids: readonly NodeId[], hashes: readonly Uint8Array[]): void {
  if (!Array.isArray(hashes) || hashes.length !== ids.length) {
    throw new TlogError('INVALID_ARGUMENT', `node reader returned ${hashes?.length} hashes for ${ids.length} ids`);
  }
  for (const h of hashes) assertHash(h, 'hash returned by the node reader');
}

function assemble(plan: NodeId[][], hashes: readonly Uint8Array[], hasher: TreeHasher): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  for (const group of plan) {
    out.push(foldRight(hashes.slice(i, i + group.length), hasher));
    i += group.length;
  }
  return out;
}

/**
 * Generates the inclusion proof `PATH(index, D[0:size])` (RFC 9162 §2.1.3.1, spec §5) from stored
 * subtree hashes.
 * @param read returns the hashes of the requested complete subtrees (all requested at once)
 * @returns the proof, bottom-up; empty for a one-leaf tree
 * @throws TlogError `INVALID_ARGUMENT` unless `0 ≤ index < size`, or if `read` misbehaves
 */
export function inclusionProof(index: Uint63, size: Uint63, read: NodeReader, hasher: TreeHasher = defaultTreeHasher): Uint8Array[] {
  const plan = inclusionProofPlan(index, size);
  const ids = plan.flat();
  const hashes = ids.length === 0 ? [] : read(ids);
  checkRead(ids, hashes);
  return assemble(plan, hashes, hasher);
}

/** Async variant of {@link inclusionProof} (the reader may fetch tiles). */
export async function inclusionProofAsync(
  index: Uint63,
  size: Uint63,
  read: AsyncNodeReader,
  hasher: TreeHasher = defaultTreeHasher,
): Promise<Uint8Array[]> {
  const plan = inclusionProofPlan(index, size);
  const ids = plan.flat();
  const hashes = ids.length === 0 ? [] : await read(ids);
  checkRead(ids, hashes);
  return assemble(plan, hashes, hasher);
}

/**
 * Generates the consistency proof `PROOF(oldSize, D[0:newSize])` (RFC 9162 §2.1.4.1, spec §6) from
 * stored subtree hashes. Empty when `oldSize` is 0 or equals `newSize`.
 * @throws TlogError `INVALID_ARGUMENT` unless `0 ≤ oldSize ≤ newSize`
 */
export function consistencyProof(
  oldSize: Uint63,
  newSize: Uint63,
  read: NodeReader,
  hasher: TreeHasher = defaultTreeHasher,
): Uint8Array[] {
  const plan = consistencyProofPlan(oldSize, newSize);
  const ids = plan.flat();
  const hashes = ids.length === 0 ? [] : read(ids);
  checkRead(ids, hashes);
  return assemble(plan, hashes, hasher);
}

/** Async variant of {@link consistencyProof}. */
export async function consistencyProofAsync(
  oldSize: Uint63,
  newSize: Uint63,
  read: AsyncNodeReader,
  hasher: TreeHasher = defaultTreeHasher,
): Promise<Uint8Array[]> {
  const plan = consistencyProofPlan(oldSize, newSize);
  const ids = plan.flat();
  const hashes = ids.length === 0 ? [] : await read(ids);
  checkRead(ids, hashes);
  return assemble(plan, hashes, hasher);
}

/**
 * Root hash `MTH(D[0:size])` from stored subtree hashes (the right fold of {@link rootNodes}, spec §4);
 * `SHA-256("")` for size 0.
 */
export function rootHash(size: Uint63, read: NodeReader, hasher: TreeHasher = defaultTreeHasher): Uint8Array {
  const ids = rootNodes(size);
  if (ids.length === 0) return hasher.emptyRoot();
  const hashes = read(ids);
  checkRead(ids, hashes);
  return foldRight(hashes, hasher);
}

/** Async variant of {@link rootHash}. */
export async function rootHashAsync(size: Uint63, read: AsyncNodeReader, hasher: TreeHasher = defaultTreeHasher): Promise<Uint8Array> {
  const ids = rootNodes(size);
  if (ids.length === 0) return hasher.emptyRoot();
  const hashes = await read(ids);
  checkRead(ids, hashes);
  return foldRight(hashes, hasher);
}

// ---------------------------------------------------------------------------------------------------
// Verification (RFC 9162 §2.1.3.2, §2.1.4.2; spec §5, §6)
// ---------------------------------------------------------------------------------------------------

function isHash(h: unknown): h is Uint8Array {
  return h instanceof Uint8Array && h.length === HASH_SIZE;
}

/**
 * Computes the root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1–4 without the final
 * comparison).
 * @returns the root, or `null` if the proof is structurally invalid for (`index`, `size`): index ≥ size,
 *   too long, too short, or an element that is not 32 bytes
 * @throws TlogError `INVALID_ARGUMENT` if `index`/`size` are not integers in [0, 2^63)
 */
export function rootFromInclusionProof(
  index: Uint63,
  size: Uint63,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
  hasher: TreeHasher = defaultTreeHasher,
): Uint8Array | null {
  const m = toU63(index, 'leaf index');
  const n = toU63(size, 'tree size');
  if (m >= n || !isHash(leafHash) || !Array.isArray(proof) || proof.length > MAX_PROOF_LENGTH) return null;
  let fn = m;
  let sn = n - 1n;
  let r = leafHash;
  for (const c of proof) {
    if (!isHash(c)) return null;
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = hasher.hashChildren(c, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = hasher.hashChildren(r, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

/**
 * Verifies an inclusion proof (RFC 9162 §2.1.3.2, spec §5): `leafHash` is entry `index` of the tree
 * of `size` leaves whose root is `root`. The root MUST come from a verified checkpoint of that size.
 * @returns `true` iff the proof verifies; `false` for any invalid or corrupted proof
 * @throws TlogError `INVALID_ARGUMENT` only if `index`/`size` are not integers in [0, 2^63)
 */
export function verifyInclusion(
  index: Uint63,
  size: Uint63,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
  hasher: TreeHasher = defaultTreeHasher,
): boolean {
  const r = rootFromInclusionProof(index, size, leafHash, proof, hasher);
  return r !== null && isHash(root) && bytesEqual(r, root);
}

/**
 * Verifies a consistency proof (RFC 9162 §2.1.4.2 with the edge cases of spec §6): the tree of
 * `oldSize` leaves with root `oldRoot` is a prefix of the tree of `newSize` leaves with root `newRoot`.
 * `oldSize = 0` succeeds iff the proof is empty and `oldRoot = SHA-256("")`; `oldSize = newSize`
 * iff the proof is empty and the roots are equal; `oldSize > newSize` always fails. Extra or missing
 * hashes fail.
 * @returns `true` iff the proof verifies
 * @throws TlogError `INVALID_ARGUMENT` only if the sizes are not integers in [0, 2^63)
 */
export function verifyConsistency(
  oldSize: Uint63,
  newSize: Uint63,
  oldRoot: Uint8Array,
  newRoot: Uint8Array,
  proof: readonly Uint8Array[],
  hasher: TreeHasher = defaultTreeHasher,
): boolean {
  const first = toU63(oldSize, 'old size');
  const second = toU63(newSize, 'new size');
  if (!isHash(oldRoot) || !isHash(newRoot) || !Array.isArray(proof)) return false;
  if (proof.length > MAX_PROOF_LENGTH) return false;
  for (const c of proof) if (!isHash(c)) return false;
  if (first > second) return false;
  if (first === 0n) return proof.length === 0 && bytesEqual(oldRoot, hasher.emptyRoot());
  if (first === second) return proof.length === 0 && bytesEqual(oldRoot, newRoot);
  if (proof.length === 0) return false;
  const p: readonly Uint8Array[] = (first & (first - 1n)) === 0n ? [oldRoot, ...proof] : proof;
  let fn = first - 1n;
  let sn = second - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = p[0]!;
  let sr = p[0]!;
  for (let i = 1; i < p.length; i++) {
    const c = p[i]!;
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      fr = hasher.hashChildren(c, fr);
      sr = hasher.hashChildren(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = hasher.hashChildren(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && bytesEqual(fr, oldRoot) && bytesEqual(sr, newRoot);
}

// ---------------------------------------------------------------------------------------------------
// Incremental builder (compact range [0, size))
// ---------------------------------------------------------------------------------------------------

/**
 * Incremental Merkle tree builder: keeps only the hashes of the complete subtrees of the current size
 * (one per set bit of `size`, at most 63), so appending is amortised O(1) hashes and the root of any
 * size is O(log n) (spec §4: "compute the root incrementally or from stored subtree hashes").
 *
 * Optionally reports every completed subtree hash through `onNode` (level 0 = the leaf hash itself),
 * which lets a server persist subtree hashes as they are created.
 */
export class TreeBuilder {
  #size: bigint;
  #stack: Uint8Array[];
  readonly #hasher: TreeHasher;
  readonly #onNode: ((id: NodeId, hash: Uint8Array) => void) | undefined;

  /**
   * @param options.hasher hash implementation (default: noble SHA-256)
   * @param options.onNode called for every completed subtree, bottom-up, as it is created
   */
  constructor(options: { hasher?: TreeHasher; onNode?: (id: NodeId, hash: Uint8Array) => void } = {}) {
    this.#size = 0n;
    this.#stack = [];
    this.#hasher = options.hasher ?? defaultTreeHasher;
    this.#onNode = options.onNode;
  }

  /**
   * Restores a builder from the hashes of the complete subtrees of `size` (in {@link rootNodes}
   * order: largest, leftmost first), e.g. read from storage on startup.
   * @throws TlogError `INVALID_ARGUMENT` if the number of hashes is not popcount(size)
   */
  static fromSubtreeHashes(
    size: Uint63,
    hashes: readonly Uint8Array[],
    options: { hasher?: TreeHasher; onNode?: (id: NodeId, hash: Uint8Array) => void } = {},
  ): TreeBuilder {
    const n = toU63(size, 'tree size');
    const expected = rootNodes(n).length;
    if (hashes.length !== expected) {
      throw new TlogError('INVALID_ARGUMENT', `size ${n} needs ${expected} subtree hashes, got ${hashes.length}`);
    }
    for (const h of hashes) assertHash(h, 'subtree hash');
    const b = new TreeBuilder(options);
    b.#size = n;
    b.#stack = hashes.map((h) => h.slice());
    return b;
  }

  /** Restores a builder of `size` leaves by reading its {@link rootNodes} through `read`. */
  static fromReader(size: Uint63, read: NodeReader, options: { hasher?: TreeHasher } = {}): TreeBuilder {
    const ids = rootNodes(size);
    const hashes = ids.length === 0 ? [] : read(ids);
    checkRead(ids, hashes);
    return TreeBuilder.fromSubtreeHashes(size, hashes, options);
  }

  /** Current number of leaves. */
  get size(): bigint {
    return this.#size;
  }

  /** Appends an entry (hashes it as a leaf, spec §3). Returns its leaf hash. */
  appendEntry(entry: Uint8Array): Uint8Array {
    const h = this.#hasher.hashLeaf(entry);
    this.appendLeafHash(h);
    return h;
  }

  /**
   * Appends a leaf by its leaf hash.
   * @throws TlogError `INVALID_ARGUMENT` if the hash is not 32 bytes or the tree is full (2^63−1)
   */
  appendLeafHash(leafHash: Uint8Array): void {
    assertHash(leafHash, 'leaf hash');
    if (this.#size >= (1n << 63n) - 1n) throw new TlogError('INVALID_ARGUMENT', 'tree is full');
    let h: Uint8Array = leafHash.slice();
    let s = this.#size;
    let level = 0;
    this.#onNode?.({ level: 0, index: s }, h);
    while ((s & 1n) === 1n) {
      h = this.#hasher.hashChildren(this.#stack.pop()!, h);
      s >>= 1n;
      level++;
      this.#onNode?.({ level, index: s }, h);
    }
    this.#stack.push(h);
    this.#size++;
  }

  /** Hashes of the complete subtrees of the current size, in {@link rootNodes} order (copies). */
  subtreeHashes(): Uint8Array[] {
    return this.#stack.map((h) => h.slice());
  }

  /** Root hash `MTH(D[0:size])`; `SHA-256("")` when empty (spec §4). */
  root(): Uint8Array {
    if (this.#stack.length === 0) return this.#hasher.emptyRoot();
    return foldRight(this.#stack, this.#hasher);
  }
}

// ---------------------------------------------------------------------------------------------------
// In-memory tree (all subtree hashes kept): a NodeReader for tests, tools and small logs
// ---------------------------------------------------------------------------------------------------

/**
 * A whole tree kept in memory (every complete subtree hash, ~2n hashes): appends leaves and serves
 * {@link NodeReader} requests for proofs at any size up to the current one. Indexes must stay below
 * 2^53 (it is backed by arrays).
 */
export class InMemoryTree {
  readonly #levels: Uint8Array[][] = [[]];
  readonly #hasher: TreeHasher;

  constructor(hasher: TreeHasher = defaultTreeHasher) {
    this.#hasher = hasher;
  }

  /** Current number of leaves. */
  get size(): bigint {
    return BigInt(this.#levels[0]!.length);
  }

  /** Appends an entry; returns its leaf hash. */
  appendEntry(entry: Uint8Array): Uint8Array {
    const h = this.#hasher.hashLeaf(entry);
    this.appendLeafHash(h);
    return h;
  }

  /** Appends a leaf by its 32-byte leaf hash. */
  appendLeafHash(leafHash: Uint8Array): void {
    assertHash(leafHash, 'leaf hash');
    let level = 0;
    let h = leafHash;
    for (;;) {
      const row = (this.#levels[level] ??= []);
      row.push(h);
      if (row.length % 2 === 1) return;
      h = this.#hasher.hashChildren(row[row.length - 2]!, h);
      level++;
    }
  }

  /** Leaf hash of entry `i`. */
  leafHash(i: Uint63): Uint8Array {
    return this.nodeHash({ level: 0, index: toU63(i, 'leaf index') });
  }

  /**
   * Hash of a complete subtree.
   * @throws TlogError `NOT_FOUND` if that subtree is not complete yet
   */
  nodeHash(id: NodeId): Uint8Array {
    const row = this.#levels[id.level];
    const h = id.index <= BigInt(Number.MAX_SAFE_INTEGER) ? row?.[Number(id.index)] : undefined;
    if (!h) throw new TlogError('NOT_FOUND', `no complete subtree at level ${id.level} index ${id.index}`);
    return h;
  }

  /** A {@link NodeReader} over this tree. */
  readonly reader: NodeReader = (ids) => ids.map((id) => this.nodeHash(id));

  /** Root of the tree at any `size` ≤ current size. */
  root(size: Uint63 = this.size): Uint8Array {
    const n = toU63(size, 'tree size');
    if (n > this.size) throw new TlogError('INVALID_ARGUMENT', `size ${n} beyond the tree (${this.size})`);
    return rootHash(n, this.reader, this.#hasher);
  }

  /** Inclusion proof of `index` in the tree of `size` (default: current size). */
  inclusionProof(index: Uint63, size: Uint63 = this.size): Uint8Array[] {
    return inclusionProof(index, size, this.reader, this.#hasher);
  }

  /** Consistency proof from `oldSize` to `newSize` (default: current size). */
  consistencyProof(oldSize: Uint63, newSize: Uint63 = this.size): Uint8Array[] {
    return consistencyProof(oldSize, newSize, this.reader, this.#hasher);
  }
}
