/**
 * Node.js-only half (server / signing side): SHA-256 and Ed25519 from `node:crypto`.
 *
 * None of the verification modules import this file, so browsers and auditor scripts can use
 * `index.ts` alone. This module re-exports the whole portable API too, so a server can import
 * everything from here.
 *
 * Outputs are plain `Uint8Array`s (never `Buffer`), byte-identical to the portable implementations.
 */
import * as crypto from 'node:crypto';
import { TlogError } from './errors.ts';
import { concatBytes } from './encoding.ts';
import { HASH_SIZE, type TreeHasher } from './hash.ts';
import {
  SIG_TYPE_ED25519,
  computeKeyId,
  formatSignerKey,
  formatVerifierKey,
  isValidKeyName,
  type Signer,
} from './note.ts';

export * from './index.ts';

function toU8(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

const oneShot: ((algorithm: string, data: Uint8Array, encoding: 'buffer') => Buffer) | undefined =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (crypto.hash as (algorithm: string, data: Uint8Array, encoding: 'buffer') => Buffer)
    : undefined;

/** SHA-256 with `node:crypto` (one-shot `crypto.hash` when available, Node ≥ 20.12). */
export function nodeSha256(data: Uint8Array): Uint8Array {
  return toU8(oneShot ? oneShot('sha256', data, 'buffer') : crypto.createHash('sha256').update(data).digest());
}

/**
 * A {@link TreeHasher} on `node:crypto` SHA-256 (several times faster than pure JS for the
 * sequencer's leaf and node hashing). Not re-entrant across threads (uses a scratch buffer), which is
 * fine on Node's single JS thread.
 */
export function createNodeTreeHasher(): TreeHasher {
  const empty = nodeSha256(new Uint8Array(0));
  const node = new Uint8Array(65);
  node[0] = 1;
  let scratch = new Uint8Array(1024);
  if (oneShot) {
    const h = oneShot;
    return {
      emptyRoot: () => empty.slice(),
      hashLeaf(entry) {
        if (entry.length + 1 > scratch.length) scratch = new Uint8Array(Math.max(entry.length + 1, scratch.length * 2));
        scratch[0] = 0;
        scratch.set(entry, 1);
        return toU8(h('sha256', scratch.subarray(0, entry.length + 1), 'buffer'));
      },
      hashChildren(l, r) {
        if (l.length !== HASH_SIZE || r.length !== HASH_SIZE) throw new TlogError('INVALID_ARGUMENT', 'child hashes must be 32 bytes');
        node.set(l, 1);
        node.set(r, 33);
        return toU8(h('sha256', node, 'buffer'));
      },
    };
  }
  const P0 = Uint8Array.of(0);
  const P1 = Uint8Array.of(1);
  return {
    emptyRoot: () => empty.slice(),
    hashLeaf: (entry) => toU8(crypto.createHash('sha256').update(P0).update(entry).digest()),
    hashChildren(l, r) {
      if (l.length !== HASH_SIZE || r.length !== HASH_SIZE) throw new TlogError('INVALID_ARGUMENT', 'child hashes must be 32 bytes');
      return toU8(crypto.createHash('sha256').update(P1).update(l).update(r).digest());
    },
  };
}

/** Shared instance of {@link createNodeTreeHasher}. */
export const nodeTreeHasher: TreeHasher = createNodeTreeHasher();

/** DER prefix of a PKCS#8 Ed25519 private key; append the 32-byte seed (spec §8.3). */
const PKCS8_ED25519_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

function privateKeyFromSeed(seed: Uint8Array): crypto.KeyObject {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new TlogError('INVALID_ARGUMENT', 'Ed25519 seed must be 32 bytes');
  return crypto.createPrivateKey({ key: Buffer.from(concatBytes(PKCS8_ED25519_PREFIX, seed)), format: 'der', type: 'pkcs8' });
}

/** The raw 32-byte Ed25519 public key of a seed, via `node:crypto`. */
export function nodeEd25519PublicKey(seed: Uint8Array): Uint8Array {
  const spki = crypto.createPublicKey(privateKeyFromSeed(seed)).export({ format: 'der', type: 'spki' });
  return Uint8Array.from(spki.subarray(spki.length - 32));
}

/**
 * An Ed25519 note {@link Signer} (type 0x01) backed by `node:crypto` (spec §8.2, §8.3). The seed is
 * imported once as a PKCS#8 `KeyObject`; signatures are deterministic and identical to the portable
 * signer's.
 * @throws TlogError `INVALID_ARGUMENT` for a bad key name or seed
 */
export function createNodeEd25519Signer(name: string, seed: Uint8Array): Signer & { readonly publicKey: Uint8Array; readonly vkey: string } {
  if (!isValidKeyName(name)) throw new TlogError('INVALID_ARGUMENT', `invalid key name ${JSON.stringify(name)}`);
  const key = privateKeyFromSeed(seed);
  const publicKey = nodeEd25519PublicKey(seed);
  return {
    name,
    keyId: computeKeyId(name, SIG_TYPE_ED25519, publicKey),
    publicKey,
    vkey: formatVerifierKey(name, publicKey, SIG_TYPE_ED25519),
    sign: (text) => Uint8Array.from(crypto.sign(null, text, key)),
  };
}

/** 32 random bytes from the OS CSPRNG, for a new Ed25519 seed. Store it as a secret; never log it. */
export function generateEd25519Seed(): Uint8Array {
  return Uint8Array.from(crypto.randomBytes(32));
}

/**
 * Generates a new log key named `name` (= the log origin): the secret seed, the Go-style signer key
 * string (`PRIVATE+KEY+…`, secret) and the public vkey to give to auditors.
 */
export function generateLogKey(name: string): { seed: Uint8Array; signerKey: string; vkey: string } {
  const seed = generateEd25519Seed();
  return { seed, signerKey: formatSignerKey(name, seed), vkey: formatVerifierKey(name, nodeEd25519PublicKey(seed)) };
}
