/**
 * RFC 9162 §2.1.1 hashing with SHA-256 (spec §3): leaf hash `SHA-256(0x00 || entry)`, interior node
 * hash `SHA-256(0x01 || left || right)`, empty-tree hash `SHA-256("")`.
 *
 * The hash implementation is pluggable through {@link TreeHasher}: the default,
 * {@link nobleTreeHasher}, is pure JavaScript (`@noble/hashes`) and runs anywhere; `node.ts` provides
 * a faster one built on `node:crypto` for servers. Both produce identical bytes.
 */
import { sha256 as nobleSha256 } from '@noble/hashes/sha2';
import { TlogError } from './errors.ts';

/** Size in bytes of every hash (SHA-256). */
export const HASH_SIZE = 32;

/**
 * The three tree hash operations (RFC 9162 §2.1.1). Implementations must return fresh 32-byte
 * `Uint8Array`s (never a reused buffer: callers keep the results).
 */
export interface TreeHasher {
  /** `SHA-256("")`, the root of the empty tree (spec §4, n = 0). */
  emptyRoot(): Uint8Array;
  /** Leaf hash `LH(e) = SHA-256(0x00 || e)` of an entry's exact bytes (spec §3). */
  hashLeaf(entry: Uint8Array): Uint8Array;
  /** Interior node hash `NH(l, r) = SHA-256(0x01 || l || r)`, both children 32 bytes (spec §3). */
  hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array;
}

/**
 * Builds a {@link TreeHasher} from any SHA-256 that can hash a sequence of byte chunks (as if they
 * were concatenated).
 * @param sha256Chunks returns the 32-byte SHA-256 digest of the concatenation of `chunks`
 */
export function createTreeHasher(sha256Chunks: (chunks: readonly Uint8Array[]) => Uint8Array): TreeHasher {
  const P0 = Uint8Array.of(0);
  const P1 = Uint8Array.of(1);
  const empty = sha256Chunks([]);
  return {
    emptyRoot: () => empty.slice(),
    hashLeaf: (entry) => sha256Chunks([P0, entry]),
    hashChildren: (l, r) => sha256Chunks([P1, l, r]),
  };
}

/** Pure-JS SHA-256 (`@noble/hashes`) of a single byte string. Works in browsers and Node. */
export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}

/** The default, portable {@link TreeHasher} (SHA-256 from `@noble/hashes`). */
export const nobleTreeHasher: TreeHasher = (() => {
  const empty = nobleSha256(new Uint8Array(0));
  const buf = new Uint8Array(65);
  buf[0] = 1;
  return {
    emptyRoot: () => empty.slice(),
    hashLeaf(entry: Uint8Array): Uint8Array {
      const h = nobleSha256.create();
      h.update(Uint8Array.of(0));
      h.update(entry);
      return h.digest();
    },
    hashChildren(l: Uint8Array, r: Uint8Array): Uint8Array {
      if (l.length !== HASH_SIZE || r.length !== HASH_SIZE) {
        throw new TlogError('INVALID_ARGUMENT', 'child hashes must be 32 bytes');
      }
      buf.set(l, 1);
      buf.set(r, 33);
      return nobleSha256(buf);
    },
  };
})();

/** The hasher used when a function's optional `hasher` argument is omitted. */
export const defaultTreeHasher: TreeHasher = nobleTreeHasher;

/** `SHA-256("")` = `47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=` (spec §4). Returns a fresh copy. */
export function emptyRoot(): Uint8Array {
  return nobleTreeHasher.emptyRoot();
}

/** Leaf hash `SHA-256(0x00 || entry)` (RFC 9162 §2.1.1, spec §3). */
export function hashLeaf(entry: Uint8Array, hasher: TreeHasher = defaultTreeHasher): Uint8Array {
  return hasher.hashLeaf(entry);
}

/** Node hash `SHA-256(0x01 || left || right)` (RFC 9162 §2.1.1, spec §3). */
export function hashChildren(left: Uint8Array, right: Uint8Array, hasher: TreeHasher = defaultTreeHasher): Uint8Array {
  return hasher.hashChildren(left, right);
}

/**
 * Throws unless `h` is a 32-byte `Uint8Array`.
 * @throws TlogError `INVALID_ARGUMENT`
 */
export function assertHash(h: unknown, what = 'hash'): asserts h is Uint8Array {
  if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE) {
    throw new TlogError('INVALID_ARGUMENT', `${what} must be a 32-byte Uint8Array`);
  }
}
