/**
 * The leaf-hash lookup behind `GET /audit/proof/inclusion?leaf_hash=…` (spec §10.1: "lookup by leaf
 * hash … for a duplicated entry, return the lowest index").
 *
 * Leaf hashes are uniformly random, so an ordinary B-tree index on them takes every insert at a
 * random page: each integration chunk dirties (and the WAL then carries, and a checkpoint writes
 * again) a page per entry once the index outgrows the chunk, and that cost grows with the log
 * (measured: 63 k entries/s integrated at 100 k entries, 40 k/s at 1 M, with the index as the
 * difference). The lookup table `audit_leaf_lookup (epoch, prefix, idx)` (migration
 * `0006_audit_leaf_lookup`) bounds it:
 * - **epoch** = `floor(idx / LEAF_LOOKUP_EPOCH)`: the key starts with it, so every insert lands in
 *   the current epoch's key range, a few dozen pages that stay in the page cache whatever the size
 *   of the log (like the right edge of a time-ordered index);
 * - **prefix** = the first 6 bytes of `LH(entry)` as an unsigned big-endian integer (< 2^48, exact in
 *   a JS number): a 48-bit filter, not the hash itself. The full 32-byte hash is already stored once,
 *   in the level-0 hash tiles, and every candidate is checked against it there, so a prefix collision
 *   can never return a wrong index;
 * - **idx** completes the key (a duplicated entry has several rows; the lowest is returned).
 *
 * A lookup probes one key per epoch, oldest first, and stops at the first epoch holding a verified
 * match: about `size / LEAF_LOOKUP_EPOCH` index seeks (610 at 10 M entries), which is what an
 * optional endpoint can afford in exchange for integration that does not slow down as the log grows.
 */

/** Entries per lookup epoch (2^14 = 64 full tiles). Part of the stored format: never change it. */
export const LEAF_LOOKUP_EPOCH = 16_384;

/** Bytes of the leaf hash kept as the lookup prefix. */
export const LEAF_PREFIX_BYTES = 6;

/**
 * The lookup prefix of a leaf hash: its first {@link LEAF_PREFIX_BYTES} bytes as an unsigned
 * big-endian integer (0 … 2^48 − 1).
 * @param leafHash `LH(entry)`, at least 6 bytes (32 in practice)
 */
export function leafPrefix(leafHash: Uint8Array): number {
  return (
    leafHash[0]! * 0x10000000000 +
    leafHash[1]! * 0x100000000 +
    ((leafHash[2]! << 24) >>> 0) +
    (leafHash[3]! << 16) +
    (leafHash[4]! << 8) +
    leafHash[5]!
  );
}

/** The lookup epoch of leaf index `idx` (a JS number: leaf indexes stay below 2^53). */
export function leafEpoch(idx: number): number {
  return Math.floor(idx / LEAF_LOOKUP_EPOCH);
}
