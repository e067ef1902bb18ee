/**
 * C2SP signed-note (Go's `golang.org/x/mod/sumdb/note` format), spec §8: parsing, signing and
 * verifying notes; key names, key IDs and verifier keys (vkeys); Ed25519 signers and verifiers.
 *
 * Layout: `<text ending in LF>` `\n` then one or more lines `— <key name> <base64(keyID || sig)>\n`.
 * The text and the signatures are split at the last `\n\n`. Verification ignores signatures from
 * unknown (name, key ID) pairs, rejects the whole note if a signature from a known key fails, and
 * requires at least one verified signature (spec §8.4).
 *
 * Pure module (no Node-only API): Ed25519 via `@noble/curves`, SHA-256 via `@noble/hashes`.
 */
import { ed25519 } from '@noble/curves/ed25519';
import { TlogError } from './errors.ts';
import {
  UNICODE_SPACE_RE,
  concatBytes,
  decodeBase64,
  encodeBase64,
  readUint32BE,
  textAndBytes,
  uint32BE,
  utf8Encode,
  type TextInput,
} from './encoding.ts';
import { sha256 } from './hash.ts';

/** Signature type byte of Ed25519 note signatures (C2SP signed-note, spec §8.2). */
export const SIG_TYPE_ED25519 = 0x01;
/** Signature type byte of timestamped Ed25519 witness cosignatures (C2SP tlog-cosignature, spec §12). */
export const SIG_TYPE_COSIGNATURE_ED25519 = 0x04;

/** The U+2014 EM DASH + space that starts every signature line (spec §8.1). */
export const SIGNATURE_LINE_PREFIX = '\u2014 ';

/** Default maximum number of signature lines accepted by {@link parseNote}/{@link openNote} (Go's limit; ≥ 16 required). */
export const DEFAULT_MAX_SIGNATURES = 100;

/**
 * Something that checks signatures of one key. `(name, keyId)` identifies the key (spec §8.4).
 * `verify` receives the exact note text bytes and the signature bytes *after* the 4-byte key ID, and
 * must return `false` (not throw) on a bad signature.
 */
export interface Verifier {
  /** Key name (no whitespace, no `+`). */
  readonly name: string;
  /** 32-bit key ID. */
  readonly keyId: number;
  /** Signature type byte (0x01 Ed25519 note signature, 0x04 Ed25519 cosignature), informational. */
  readonly type?: number;
  /** Raw public key (without type byte), informational. */
  readonly publicKey?: Uint8Array;
  verify(text: Uint8Array, signature: Uint8Array): boolean;
}

/**
 * Something that signs note texts with one key. `sign` returns the signature bytes *without* the key
 * ID (64 bytes for Ed25519); it may be async (e.g. an HSM) — use {@link signNoteAsync} then.
 */
export interface Signer {
  readonly name: string;
  readonly keyId: number;
  sign(text: Uint8Array): Uint8Array | Promise<Uint8Array>;
}

/** One parsed signature line. */
export interface NoteSignature {
  /** Key name. */
  readonly name: string;
  /** 32-bit key ID (first 4 bytes of the decoded signature, big-endian). */
  readonly keyId: number;
  /** The base64 text as it appeared on the line. */
  readonly base64: string;
  /** Signature bytes after the key ID. */
  readonly signature: Uint8Array;
  /** The whole line, without its final LF. */
  readonly line: string;
}

/** A structurally parsed, *unverified* note. */
export interface ParsedNote {
  /** The note text, including its final LF (what signatures cover). */
  readonly text: string;
  /** UTF-8 bytes of `text`. */
  readonly textBytes: Uint8Array;
  /** Signature lines in order. */
  readonly signatures: readonly NoteSignature[];
}

/** A verified note: at least one trusted signature verified. */
export interface OpenedNote extends ParsedNote {
  /** Signatures from known keys, all verified, one per (name, key ID), with the verifier that matched. */
  readonly verified: ReadonlyArray<NoteSignature & { readonly verifier: Verifier }>;
  /** Signatures from unknown keys (ignored, spec §8.4), duplicates removed. */
  readonly unverified: readonly NoteSignature[];
}

// ---------------------------------------------------------------------------------------------------
// Names, key IDs, vkeys
// ---------------------------------------------------------------------------------------------------

/**
 * `true` iff `name` is a valid key name: non-empty, no Unicode white space, no `+`, no control
 * character (C2SP signed-note; spec §8.2).
 */
export function isValidKeyName(name: string): boolean {
  return (
    typeof name === 'string' &&
    name.length > 0 &&
    !UNICODE_SPACE_RE.test(name) &&
    !name.includes('+') &&
    !/[\x00-\x1f\x7f]/.test(name) &&
    !/[\uD800-\uDFFF]/.test(name.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''))
  );
}

function assertKeyName(name: string, code: 'MALFORMED_VKEY' | 'INVALID_ARGUMENT' = 'INVALID_ARGUMENT'): void {
  if (!isValidKeyName(name)) {
    throw new TlogError(code, `invalid key name ${JSON.stringify(name)}: must be non-empty, without spaces or '+'`);
  }
}

/**
 * Key ID = `SHA-256(name || 0x0A || type || publicKey)[0:4]` as a big-endian uint32 (spec §8.2, §12).
 * @param type signature type byte (0x01 log key, 0x04 witness cosigner key)
 * @param publicKey raw public key (32 bytes for Ed25519)
 */
export function computeKeyId(name: string, type: number, publicKey: Uint8Array): number {
  assertKeyName(name);
  const h = sha256(concatBytes(utf8Encode(name), Uint8Array.of(0x0a, type), publicKey));
  return readUint32BE(h, 0);
}

/** A key ID as 8 lowercase hex digits (spec §8.2). */
export function formatKeyId(keyId: number): string {
  return keyId.toString(16).padStart(8, '0');
}

/** A parsed verifier key (`<name>+<id hex>+<base64(type || public key)>`, spec §8.3). */
export interface VerifierKey {
  readonly name: string;
  readonly keyId: number;
  /** Signature type byte (first decoded byte): 0x01 or 0x04. */
  readonly type: number;
  /** Raw public key (32 bytes for Ed25519), without the type byte. */
  readonly publicKey: Uint8Array;
}

/**
 * Strictly parses a verifier key string (spec §8.3, §12; Go's `note.NewVerifier` format).
 * Supported types: 0x01 (Ed25519) and 0x04 (Ed25519 cosignature), both with 32-byte keys.
 * @throws TlogError `MALFORMED_VKEY` on a bad name, a key ID that is not 8 lowercase hex digits or
 *   does not match the key, bad base64, an unsupported type or a wrong key length
 */
export function parseVerifierKey(vkey: string): VerifierKey {
  if (typeof vkey !== 'string') throw new TlogError('MALFORMED_VKEY', 'vkey must be a string');
  const i = vkey.indexOf('+');
  const j = i < 0 ? -1 : vkey.indexOf('+', i + 1);
  if (i < 0 || j < 0) throw new TlogError('MALFORMED_VKEY', 'vkey must be <name>+<key id>+<base64 key>');
  const name = vkey.slice(0, i);
  const idHex = vkey.slice(i + 1, j);
  const keyB64 = vkey.slice(j + 1);
  assertKeyName(name, 'MALFORMED_VKEY');
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new TlogError('MALFORMED_VKEY', 'vkey key ID must be 8 lowercase hex digits');
  let key: Uint8Array;
  try {
    key = decodeBase64(keyB64, undefined, 'vkey public key');
  } catch (e) {
    throw new TlogError('MALFORMED_VKEY', `vkey public key: ${(e as Error).message}`, { cause: e });
  }
  if (key.length === 0) throw new TlogError('MALFORMED_VKEY', 'vkey public key is empty');
  const type = key[0]!;
  const publicKey = key.slice(1);
  if (type !== SIG_TYPE_ED25519 && type !== SIG_TYPE_COSIGNATURE_ED25519) {
    throw new TlogError('MALFORMED_VKEY', `unsupported vkey signature type 0x${type.toString(16).padStart(2, '0')}`);
  }
  if (publicKey.length !== 32) throw new TlogError('MALFORMED_VKEY', `Ed25519 vkey must hold 32 key bytes, got ${publicKey.length}`);
  const keyId = parseInt(idHex, 16);
  if (computeKeyId(name, type, publicKey) !== keyId) {
    throw new TlogError('MALFORMED_VKEY', 'vkey key ID does not match SHA-256(name || 0x0A || type || key)[0:4]');
  }
  return { name, keyId, type, publicKey };
}

/**
 * Formats a verifier key `<name>+<key ID hex>+<base64(type || publicKey)>` (spec §8.3).
 * @param type 0x01 (log key, default) or 0x04 (witness cosigner key)
 */
export function formatVerifierKey(name: string, publicKey: Uint8Array, type: number = SIG_TYPE_ED25519): string {
  assertKeyName(name);
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) {
    throw new TlogError('INVALID_ARGUMENT', 'Ed25519 public key must be 32 bytes');
  }
  const id = computeKeyId(name, type, publicKey);
  return `${name}+${formatKeyId(id)}+${encodeBase64(concatBytes(Uint8Array.of(type), publicKey))}`;
}

// ---------------------------------------------------------------------------------------------------
// Ed25519 signers and verifiers (portable: @noble/curves)
// ---------------------------------------------------------------------------------------------------

/**
 * RFC 8032 Ed25519 verification with strict (non-ZIP-215) rules: canonical encodings, `S < L`.
 * Never throws; returns `false` for malformed keys or signatures.
 */
export function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

/** The 32-byte Ed25519 public key of a 32-byte seed (RFC 8032 private key). */
export function ed25519PublicKey(seed: Uint8Array): Uint8Array {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new TlogError('INVALID_ARGUMENT', 'Ed25519 seed must be 32 bytes');
  return ed25519.getPublicKey(seed);
}

/**
 * A {@link Verifier} for Ed25519 note signatures (type 0x01) from a vkey string or a parsed key.
 * @throws TlogError `MALFORMED_VKEY` for a bad vkey, `INVALID_ARGUMENT` for a type-0x04 key
 */
export function createEd25519Verifier(vkey: string | VerifierKey): Verifier {
  const k = typeof vkey === 'string' ? parseVerifierKey(vkey) : vkey;
  if (k.type !== SIG_TYPE_ED25519) {
    throw new TlogError('INVALID_ARGUMENT', 'not an Ed25519 (0x01) note key; use createCosignatureVerifier for 0x04 keys');
  }
  const publicKey = k.publicKey.slice();
  return {
    name: k.name,
    keyId: k.keyId,
    type: SIG_TYPE_ED25519,
    publicKey,
    verify: (text, sig) => ed25519Verify(publicKey, text, sig),
  };
}

/**
 * An Ed25519 note {@link Signer} (type 0x01) from a 32-byte seed, pure JS (`@noble/curves`). For
 * servers, `node.ts` offers a `node:crypto` equivalent. Signatures are deterministic.
 * @throws TlogError `INVALID_ARGUMENT` for a bad name or seed
 */
export function createEd25519Signer(name: string, seed: Uint8Array): Signer & { readonly publicKey: Uint8Array; readonly vkey: string } {
  assertKeyName(name);
  const publicKey = ed25519PublicKey(seed);
  const secret = seed.slice();
  return {
    name,
    keyId: computeKeyId(name, SIG_TYPE_ED25519, publicKey),
    publicKey,
    vkey: formatVerifierKey(name, publicKey, SIG_TYPE_ED25519),
    sign: (text) => ed25519.sign(text, secret),
  };
}

/**
 * Formats a Go-style signer key `PRIVATE+KEY+<name>+<id hex>+<base64(0x01 || seed)>` (the format of
 * `note.GenerateKey`). Treat the result as a secret.
 */
export function formatSignerKey(name: string, seed: Uint8Array): string {
  const publicKey = ed25519PublicKey(seed);
  const id = computeKeyId(name, SIG_TYPE_ED25519, publicKey);
  return `PRIVATE+KEY+${name}+${formatKeyId(id)}+${encodeBase64(concatBytes(Uint8Array.of(SIG_TYPE_ED25519), seed))}`;
}

/**
 * Parses a Go-style Ed25519 signer key (see {@link formatSignerKey}) into its name and seed; checks
 * the key ID against the derived public key.
 * @throws TlogError `MALFORMED_VKEY` (the message never contains key material)
 */
export function parseSignerKey(skey: string): { name: string; keyId: number; seed: Uint8Array } {
  const prefix = 'PRIVATE+KEY+';
  if (typeof skey !== 'string' || !skey.startsWith(prefix)) throw new TlogError('MALFORMED_VKEY', 'signer key must start with PRIVATE+KEY+');
  const rest = skey.slice(prefix.length);
  const i = rest.indexOf('+');
  const j = i < 0 ? -1 : rest.indexOf('+', i + 1);
  if (i < 0 || j < 0) throw new TlogError('MALFORMED_VKEY', 'signer key must be PRIVATE+KEY+<name>+<id>+<base64>');
  const name = rest.slice(0, i);
  const idHex = rest.slice(i + 1, j);
  const b64 = rest.slice(j + 1); // base64 may itself contain '+'
  assertKeyName(name, 'MALFORMED_VKEY');
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new TlogError('MALFORMED_VKEY', 'signer key ID must be 8 lowercase hex digits');
  let key: Uint8Array;
  try {
    key = decodeBase64(b64, 33);
  } catch {
    throw new TlogError('MALFORMED_VKEY', 'signer key material must be base64 of 33 bytes');
  }
  if (key[0] !== SIG_TYPE_ED25519) throw new TlogError('MALFORMED_VKEY', 'unsupported signer key type');
  const seed = key.slice(1);
  const keyId = parseInt(idHex, 16);
  if (computeKeyId(name, SIG_TYPE_ED25519, ed25519PublicKey(seed)) !== keyId) {
    throw new TlogError('MALFORMED_VKEY', 'signer key ID does not match the key');
  }
  return { name, keyId, seed };
}

// ---------------------------------------------------------------------------------------------------
// Note text validation, parsing, verification, signing
// ---------------------------------------------------------------------------------------------------

const CONTROL_RE = /[\x00-\x09\x0b-\x1f]/;

/**
 * Checks a note text: non-empty, ends with LF, no control characters other than LF, no BOM at the
 * start, no lone surrogates (spec §1, §8.1).
 * @throws TlogError `MALFORMED_NOTE`
 */
export function validateNoteText(text: string): void {
  if (typeof text !== 'string' || text.length === 0 || !text.endsWith('\n')) {
    throw new TlogError('MALFORMED_NOTE', 'note text must be non-empty and end with a newline');
  }
  if (CONTROL_RE.test(text)) throw new TlogError('MALFORMED_NOTE', 'note text contains a control character (only LF is allowed; no CR or TAB)');
  if (text.charCodeAt(0) === 0xfeff) throw new TlogError('MALFORMED_NOTE', 'note starts with a byte-order mark');
}

/** One signature line `— <name> <base64(keyId || signature)>` without the final LF (spec §8.1). */
export function formatSignatureLine(name: string, keyId: number, signature: Uint8Array): string {
  assertKeyName(name);
  return `${SIGNATURE_LINE_PREFIX}${name} ${encodeBase64(concatBytes(uint32BE(keyId), signature))}`;
}

/**
 * Parses one signature line (without its LF).
 * @throws TlogError `MALFORMED_NOTE`
 */
export function parseSignatureLine(line: string): NoteSignature {
  if (!line.startsWith(SIGNATURE_LINE_PREFIX)) {
    throw new TlogError('MALFORMED_NOTE', 'signature line must start with U+2014 EM DASH and a space');
  }
  const rest = line.slice(SIGNATURE_LINE_PREFIX.length);
  const sp = rest.indexOf(' ');
  if (sp < 0) throw new TlogError('MALFORMED_NOTE', 'signature line must be "— <name> <base64>"');
  const name = rest.slice(0, sp);
  const b64 = rest.slice(sp + 1);
  if (!isValidKeyName(name)) throw new TlogError('MALFORMED_NOTE', `invalid key name in signature line: ${JSON.stringify(name)}`);
  let bytes: Uint8Array;
  try {
    bytes = decodeBase64(b64, undefined, 'signature');
  } catch (e) {
    throw new TlogError('MALFORMED_NOTE', `signature of ${name}: ${(e as Error).message}`, { cause: e });
  }
  if (bytes.length < 5) throw new TlogError('MALFORMED_NOTE', `signature of ${name} is too short`);
  return { name, keyId: readUint32BE(bytes, 0), base64: b64, signature: bytes.slice(4), line };
}

/**
 * Parses the structure of a signed note without verifying anything (spec §8.1): valid UTF-8, no
 * control character but LF, split at the last `\n\n`, one or more well-formed signature lines,
 * ending in LF.
 * @param input the note as a string or as its UTF-8 bytes
 * @param options.maxSignatures maximum number of signature lines (default 100)
 * @throws TlogError `MALFORMED_NOTE` / `MALFORMED_UTF8`
 */
export function parseNote(input: TextInput, options: { maxSignatures?: number } = {}): ParsedNote {
  const { text: all } = textAndBytes(input);
  if (CONTROL_RE.test(all)) throw new TlogError('MALFORMED_NOTE', 'note contains a control character other than LF (CR, TAB, …)');
  if (all.charCodeAt(0) === 0xfeff) throw new TlogError('MALFORMED_NOTE', 'note starts with a byte-order mark');
  const split = all.lastIndexOf('\n\n');
  if (split < 0) throw new TlogError('MALFORMED_NOTE', 'note has no blank line before its signatures');
  const text = all.slice(0, split + 1);
  const sigBlock = all.slice(split + 2);
  if (sigBlock.length === 0 || !sigBlock.endsWith('\n')) {
    throw new TlogError('MALFORMED_NOTE', 'note must end with at least one signature line terminated by LF');
  }
  const lines = sigBlock.slice(0, -1).split('\n');
  const max = options.maxSignatures ?? DEFAULT_MAX_SIGNATURES;
  if (lines.length > max) throw new TlogError('MALFORMED_NOTE', `note has ${lines.length} signatures, more than the limit ${max}`);
  const signatures = lines.map(parseSignatureLine);
  return { text, textBytes: utf8Encode(text), signatures };
}

function verifierKey(name: string, keyId: number): string {
  return `${keyId}\u0000${name}`;
}

/**
 * Parses and verifies a signed note against a set of trusted verifiers (spec §8.4, C2SP signed-note):
 * signatures from unknown (name, key ID) pairs are ignored; every signature from a known key must
 * verify, otherwise the whole note is rejected; at least one must verify.
 * @param verifiers trusted keys; (name, key ID) pairs must be distinct
 * @returns the note with its verified and unverified signatures (the text is *not* parsed further)
 * @throws TlogError `MALFORMED_NOTE`, `INVALID_SIGNATURE` (a known key's signature is bad),
 *   `UNVERIFIED_NOTE` (no known key signed), `INVALID_ARGUMENT` (duplicate verifiers)
 */
export function openNote(input: TextInput, verifiers: readonly Verifier[], options: { maxSignatures?: number } = {}): OpenedNote {
  const note = parseNote(input, options);
  const known = new Map<string, Verifier>();
  for (const v of verifiers) {
    const k = verifierKey(v.name, v.keyId);
    if (known.has(k)) throw new TlogError('INVALID_ARGUMENT', `duplicate verifier ${v.name}+${formatKeyId(v.keyId)}`);
    known.set(k, v);
  }
  const verified: Array<NoteSignature & { verifier: Verifier }> = [];
  const unverified: NoteSignature[] = [];
  const seenVerified = new Set<string>();
  const seenUnverified = new Set<string>();
  for (const sig of note.signatures) {
    const k = verifierKey(sig.name, sig.keyId);
    const v = known.get(k);
    if (!v) {
      if (!seenUnverified.has(sig.line)) {
        seenUnverified.add(sig.line);
        unverified.push(sig);
      }
      continue;
    }
    let ok = false;
    try {
      ok = v.verify(note.textBytes, sig.signature) === true;
    } catch {
      ok = false;
    }
    if (!ok) {
      throw new TlogError('INVALID_SIGNATURE', `signature by ${sig.name}+${formatKeyId(sig.keyId)} does not verify`);
    }
    if (!seenVerified.has(k)) {
      seenVerified.add(k);
      verified.push({ ...sig, verifier: v });
    }
  }
  if (verified.length === 0) {
    throw new TlogError('UNVERIFIED_NOTE', 'no signature from a trusted key (check the vkey: name and key ID must match)');
  }
  return { ...note, verified, unverified };
}

function assemble(text: string, lines: readonly string[]): string {
  return `${text}\n${lines.map((l) => l + '\n').join('')}`;
}

/**
 * Signs a note text with one or more synchronous signers (spec §8.2: the signature covers exactly
 * the text bytes including the final LF) and returns the complete signed note.
 * @throws TlogError `MALFORMED_NOTE` for a bad text, `INVALID_ARGUMENT` if a signer is async or
 *   no signer is given
 */
export function signNote(text: string, signers: readonly Signer[]): string {
  validateNoteText(text);
  if (signers.length === 0) throw new TlogError('INVALID_ARGUMENT', 'at least one signer is required');
  const bytes = utf8Encode(text);
  const lines = signers.map((s) => {
    const sig = s.sign(bytes);
    if (!(sig instanceof Uint8Array)) throw new TlogError('INVALID_ARGUMENT', `signer ${s.name} is async; use signNoteAsync`);
    return formatSignatureLine(s.name, s.keyId, sig);
  });
  return assemble(text, lines);
}

/** Async variant of {@link signNote} for signers whose `sign` returns a Promise (e.g. HSM/KMS). */
export async function signNoteAsync(text: string, signers: readonly Signer[]): Promise<string> {
  validateNoteText(text);
  if (signers.length === 0) throw new TlogError('INVALID_ARGUMENT', 'at least one signer is required');
  const bytes = utf8Encode(text);
  const sigs = await Promise.all(signers.map((s) => s.sign(bytes)));
  return assemble(
    text,
    signers.map((s, i) => formatSignatureLine(s.name, s.keyId, sigs[i]!)),
  );
}

/**
 * Adds signature lines (e.g. witness cosignatures, spec §11.7) to a signed note, keeping the existing
 * ones first and skipping exact duplicates. The note is parsed strictly but not verified.
 * @param lines signature lines with or without their final LF
 * @throws TlogError `MALFORMED_NOTE`
 */
export function addSignatureLines(note: TextInput, lines: readonly string[]): string {
  const parsed = parseNote(note, { maxSignatures: Number.MAX_SAFE_INTEGER });
  const out = parsed.signatures.map((s) => s.line);
  for (const raw of lines) {
    const line = raw.endsWith('\n') ? raw.slice(0, -1) : raw;
    parseSignatureLine(line);
    if (!out.includes(line)) out.push(line);
  }
  return assemble(parsed.text, out);
}
