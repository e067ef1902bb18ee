/**
 * Strict codecs and byte helpers shared by every module (no Node-only APIs: `Uint8Array`,
 * `TextEncoder`/`TextDecoder` only).
 *
 * Integer policy (spec §1): every tree size and index is an unsigned integer below 2^63. The library
 * represents them as `bigint` internally and in every returned value. Public inputs accept
 * `bigint | number`; a `number` must be a non-negative *safe* integer (≤ 2^53−1), otherwise a
 * `TlogError('INVALID_ARGUMENT')` is thrown — there is never a silent precision loss. Tile levels
 * (0–63), tile widths (1–256) and byte offsets are plain `number`s.
 */
import { TlogError } from './errors.ts';

/** A tree size or an entry index: `bigint`, or a safe non-negative integer `number`. */
export type Uint63 = bigint | number;

/** 2^63, the exclusive upper bound of tree sizes and indexes (spec §1). */
export const MAX_TREE_SIZE_EXCLUSIVE = 1n << 63n;

// ---------------------------------------------------------------------------------------------------
// Integers
// ---------------------------------------------------------------------------------------------------

/**
 * Validates and converts a tree size or index to `bigint`.
 * @param x a `bigint` in [0, 2^63) or a safe non-negative integer `number`
 * @param what name used in the error message (e.g. `"tree size"`)
 * @throws TlogError `INVALID_ARGUMENT` if `x` is negative, not an integer, an unsafe `number`
 *   (> 2^53−1) or ≥ 2^63
 */
export function toU63(x: Uint63, what = 'value'): bigint {
  if (typeof x === 'bigint') {
    if (x < 0n || x >= MAX_TREE_SIZE_EXCLUSIVE) {
      throw new TlogError('INVALID_ARGUMENT', `${what} out of range [0, 2^63): ${x}`);
    }
    return x;
  }
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
    throw new TlogError(
      'INVALID_ARGUMENT',
      `${what} must be a non-negative safe integer or a bigint, got ${String(x)}`,
    );
  }
  return BigInt(x);
}

/**
 * Converts a `bigint` to `number` only if it is exactly representable (≤ 2^53−1).
 * @throws TlogError `INVALID_ARGUMENT` otherwise
 */
export function toSafeNumber(x: bigint, what = 'value'): number {
  if (x < 0n || x > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new TlogError('INVALID_ARGUMENT', `${what} ${x} is not representable as a safe JS number`);
  }
  return Number(x);
}

const DECIMAL_RE = /^(?:0|[1-9][0-9]*)$/;

/**
 * Strictly parses an ASCII decimal (spec §1: digits only, no sign, no leading zeros, `0` for zero).
 * @param s the text
 * @param max inclusive maximum (default 2^63−1)
 * @returns the value as `bigint`
 * @throws TlogError `MALFORMED_DECIMAL` if `s` is not canonical decimal or exceeds `max`
 */
export function parseDecimal(s: string, what = 'decimal', max: bigint = MAX_TREE_SIZE_EXCLUSIVE - 1n): bigint {
  if (typeof s !== 'string' || s.length > 20 || !DECIMAL_RE.test(s)) {
    throw new TlogError('MALFORMED_DECIMAL', `${what} is not a canonical decimal: ${JSON.stringify(s)}`);
  }
  const v = BigInt(s);
  if (v > max) throw new TlogError('MALFORMED_DECIMAL', `${what} ${s} exceeds the maximum ${max}`);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------------

/** Concatenates byte arrays into a fresh `Uint8Array`. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Byte equality. Runs in time dependent only on the lengths (the values compared here — hashes,
 * roots — are public, so this is hygiene rather than a security requirement).
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** Big-endian uint32 from 4 bytes at `off`. */
export function readUint32BE(b: Uint8Array, off = 0): number {
  return ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
}

/** 4 big-endian bytes of a uint32. */
export function uint32BE(x: number): Uint8Array {
  if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) {
    throw new TlogError('INVALID_ARGUMENT', `not a uint32: ${x}`);
  }
  return Uint8Array.of(x >>> 24, (x >>> 16) & 0xff, (x >>> 8) & 0xff, x & 0xff);
}

/** Big-endian uint64 (as bigint) from 8 bytes at `off`. */
export function readUint64BE(b: Uint8Array, off = 0): bigint {
  let v = 0n;
  for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(b[off + i]!);
  return v;
}

/** 8 big-endian bytes of a uint64 given as bigint. */
export function uint64BE(x: bigint): Uint8Array {
  if (x < 0n || x >= 1n << 64n) throw new TlogError('INVALID_ARGUMENT', `not a uint64: ${x}`);
  const out = new Uint8Array(8);
  for (let i = 7; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Hex
// ---------------------------------------------------------------------------------------------------

const HEX = '0123456789abcdef';

/** Lowercase hex encoding. */
export function toHex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += HEX[b[i]! >> 4]! + HEX[b[i]! & 15]!;
  return s;
}

/**
 * Strict lowercase hex decoding (even length, `[0-9a-f]` only).
 * @param expectedLength if given, the decoded length in bytes that is required
 * @throws TlogError `MALFORMED_HEX`
 */
export function fromHex(s: string, expectedLength?: number): Uint8Array {
  if (typeof s !== 'string' || s.length % 2 !== 0 || !/^[0-9a-f]*$/.test(s)) {
    throw new TlogError('MALFORMED_HEX', 'not lowercase hex of even length');
  }
  if (expectedLength !== undefined && s.length !== expectedLength * 2) {
    throw new TlogError('MALFORMED_HEX', `expected ${expectedLength} bytes of hex, got ${s.length / 2}`);
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Base64 (RFC 4648 §4, standard alphabet, with padding) — strict
// ---------------------------------------------------------------------------------------------------

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INV = new Int16Array(128).fill(-1);
for (let i = 0; i < B64.length; i++) B64_INV[B64.charCodeAt(i)] = i;
const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with `=` padding (RFC 4648 §4). Never URL-safe, never unpadded. */
export function encodeBase64(b: Uint8Array): string {
  let s = '';
  let i = 0;
  for (; i + 3 <= b.length; i += 3) {
    const v = (b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!;
    s += B64[v >> 18]! + B64[(v >> 12) & 63]! + B64[(v >> 6) & 63]! + B64[v & 63]!;
  }
  const rest = b.length - i;
  if (rest === 1) {
    const v = b[i]! << 16;
    s += B64[v >> 18]! + B64[(v >> 12) & 63]! + '==';
  } else if (rest === 2) {
    const v = (b[i]! << 16) | (b[i + 1]! << 8);
    s += B64[v >> 18]! + B64[(v >> 12) & 63]! + B64[(v >> 6) & 63]! + '=';
  }
  return s;
}

/**
 * Strict standard base64 decoding (spec §1, pitfall 4): rejects non-alphabet characters (including
 * URL-safe `-`/`_`), whitespace, missing or extra padding, and non-canonical encodings (non-zero
 * padding bits), i.e. re-encoding the result always gives back `s` exactly.
 * @param s base64 text
 * @param expectedLength if given, the exact decoded length in bytes that is required
 * @param what name used in error messages
 * @throws TlogError `MALFORMED_BASE64`
 */
export function decodeBase64(s: string, expectedLength?: number, what = 'base64'): Uint8Array {
  if (typeof s !== 'string' || !B64_RE.test(s)) {
    throw new TlogError('MALFORMED_BASE64', `${what} is not canonical standard padded base64`);
  }
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const n = (s.length / 4) * 3 - pad;
  if (expectedLength !== undefined && n !== expectedLength) {
    throw new TlogError('MALFORMED_BASE64', `${what} decodes to ${n} bytes, expected ${expectedLength}`);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    const c0 = B64_INV[s.charCodeAt(i)]!;
    const c1 = B64_INV[s.charCodeAt(i + 1)]!;
    const ch2 = s.charCodeAt(i + 2);
    const ch3 = s.charCodeAt(i + 3);
    const c2 = ch2 === 61 ? 0 : B64_INV[ch2]!;
    const c3 = ch3 === 61 ? 0 : B64_INV[ch3]!;
    const v = (c0 << 18) | (c1 << 12) | (c2 << 6) | c3;
    out[o++] = v >> 16;
    if (ch2 !== 61) out[o++] = (v >> 8) & 0xff;
    else if ((v & 0xffff) !== 0) throw new TlogError('MALFORMED_BASE64', `${what} has non-zero padding bits`);
    if (ch3 !== 61) out[o++] = v & 0xff;
    else if ((v & 0xff) !== 0) throw new TlogError('MALFORMED_BASE64', `${what} has non-zero padding bits`);
  }
  return out;
}

/**
 * Decodes a 32-byte hash from its 44-character base64 form (`/^[A-Za-z0-9+/]{43}=$/` plus canonical
 * padding bits, spec §1).
 * @throws TlogError `MALFORMED_BASE64`
 */
export function decodeHash(s: string, what = 'hash'): Uint8Array {
  return decodeBase64(s, 32, what);
}

// ---------------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------------

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const LONE_SURROGATE_RE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * UTF-8 encoding of a string that must be well-formed (no lone surrogates, which would otherwise be
 * silently replaced by U+FFFD).
 * @throws TlogError `MALFORMED_UTF8`
 */
export function utf8Encode(s: string): Uint8Array {
  if (LONE_SURROGATE_RE.test(s)) throw new TlogError('MALFORMED_UTF8', 'string contains a lone surrogate');
  return utf8Encoder.encode(s);
}

/**
 * Strict UTF-8 decoding (invalid sequences throw; a BOM is kept, not stripped, so callers can reject it).
 * @throws TlogError `MALFORMED_UTF8`
 */
export function utf8Decode(b: Uint8Array): string {
  try {
    return utf8Decoder.decode(b);
  } catch (e) {
    throw new TlogError('MALFORMED_UTF8', 'invalid UTF-8', { cause: e });
  }
}

/** Input accepted for text formats: a string or its UTF-8 bytes. */
export type TextInput = string | Uint8Array;

/**
 * Normalises a text input to both forms: the string and its exact UTF-8 bytes (a byte input is
 * decoded strictly and kept as is, so signatures are checked over the received bytes).
 * @throws TlogError `MALFORMED_UTF8`
 */
export function textAndBytes(input: TextInput): { text: string; bytes: Uint8Array } {
  if (typeof input === 'string') return { text: input, bytes: utf8Encode(input) };
  if (input instanceof Uint8Array) return { text: utf8Decode(input), bytes: input };
  throw new TlogError('INVALID_ARGUMENT', 'expected a string or a Uint8Array');
}

/** Unicode White_Space (what Go's `unicode.IsSpace` tests), used for key-name and origin checks. */
export const UNICODE_SPACE_RE = /\p{White_Space}/u;
