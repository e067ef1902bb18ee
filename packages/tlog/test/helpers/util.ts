/** Test helpers: a seeded PRNG, fixture loading, small byte utilities. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));

/** Reads a fixture file (packages/tlog/test/fixtures/<name>) as UTF-8. */
export function fixtureText(name: string): string {
  return readFileSync(join(here, '..', 'fixtures', name), 'utf8');
}

/** The spec §14 vectors, copied verbatim into fixtures/spec-vectors.json. */
export interface SpecVectors {
  leaves: Array<{ index: number; entry: string; hex: string; base64: string }>;
  roots: Array<{ size: number; hex: string; base64: string }>;
  largeRoots: Array<{ size: number; base64: string }>;
  inclusion: Array<{ index: number; size: number; leafHash: string; root: string; proof: string[]; proofHex: string[] }>;
  consistency: Array<{ oldSize: number; oldRoot: string; newSize: number; newRoot: string; proof: string[]; proofHex: string[] }>;
  logKey: { seedHex: string; publicKeyHex: string; name: string; keyIdHex: string; vkey: string };
  checkpoint8Text: string;
  signedCheckpoint8: string;
  signature8Hex: string;
  signedCheckpoint7: string;
  witness: {
    seedHex: string;
    publicKeyHex: string;
    name: string;
    keyIdHex: string;
    vkey: string;
    timestamp: number;
    message: string;
    cosignedCheckpoint: string;
  };
  tiles: {
    indexEncodings: Array<{ index: number; path: string }>;
    bundle3Path: string;
    bundle3Hex: string;
    tile8Path: string;
    tile8Sha256Hex: string;
    size300Paths: string[];
    size300Level1Path: string;
    size300Level1Hash: string;
    size70000Layout: Array<{ level: number; fullTiles: number; partialWidth: number }>;
  };
  inclusionProofJSON: string;
  consistencyProofJSON: string;
  tlogProof: string;
}

export const vectors: SpecVectors = JSON.parse(fixtureText('spec-vectors.json')) as SpecVectors;

/** Deterministic PRNG (mulberry32) for property tests. */
export class Prng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** Uniform float in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255);
    return out;
  }
}

const enc = new TextEncoder();
/** UTF-8 bytes. */
export const utf8 = (s: string): Uint8Array => enc.encode(s);
/** Entry i of the spec vectors: ASCII `leaf-i`. */
export const leafEntry = (i: number | bigint): Uint8Array => enc.encode(`leaf-${i}`);

/** Copy of `b` with bit `bit` flipped. */
export function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const c = b.slice();
  c[bit >> 3]! ^= 1 << (bit & 7);
  return c;
}
