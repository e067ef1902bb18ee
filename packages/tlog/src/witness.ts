/**
 * Witness cosignatures (spec §12; C2SP tlog-cosignature, Ed25519 type 0x04; C2SP tlog-witness).
 *
 * A cosignature is an extra note signature line on the checkpoint whose payload is
 * `keyID (4) || timestamp (8, big-endian POSIX seconds) || Ed25519 signature (64)` over
 * `"cosignature/v1\n" + "time <T>\n" + <checkpoint note text>`.
 *
 * The verifiers built here plug into `openNote` / `openCheckpoint` like any {@link Verifier}.
 * Pure module (no Node-only API).
 */
import { ed25519 } from '@noble/curves/ed25519';
import { TlogError } from './errors.ts';
import {
  concatBytes,
  decodeHash,
  encodeBase64,
  parseDecimal,
  readUint64BE,
  toU63,
  uint64BE,
  utf8Decode,
  utf8Encode,
  type TextInput,
  type Uint63,
} from './encoding.ts';
import {
  SIG_TYPE_COSIGNATURE_ED25519,
  computeKeyId,
  ed25519PublicKey,
  ed25519Verify,
  formatSignatureLine,
  formatVerifierKey,
  parseNote,
  parseSignatureLine,
  parseVerifierKey,
  type NoteSignature,
  type Signer,
  type Verifier,
  type VerifierKey,
} from './note.ts';
import { MAX_PROOF_LENGTH } from './tree.ts';

const MAX_TIMESTAMP = (1n << 63n) - 1n;

/**
 * The message an Ed25519 cosigner signs (C2SP tlog-cosignature "Ed25519 signed message", spec §12):
 * `cosignature/v1\ntime <T>\n` followed by the whole checkpoint note text.
 * @param checkpointText the note text (ending in LF, no signature lines)
 * @param timestamp POSIX seconds, 0 ≤ T ≤ 2^63−1
 */
export function cosignatureMessage(checkpointText: TextInput, timestamp: Uint63): Uint8Array {
  const t = toU63(timestamp, 'timestamp');
  const text = typeof checkpointText === 'string' ? utf8Encode(checkpointText) : checkpointText;
  return concatBytes(utf8Encode(`cosignature/v1\ntime ${t}\n`), text);
}

/**
 * Splits a cosignature payload (the signature bytes after the key ID) into timestamp and signature.
 * @throws TlogError `MALFORMED_SIGNATURE` unless it is exactly 8 + 64 bytes with a timestamp < 2^63
 */
export function parseCosignaturePayload(payload: Uint8Array): { timestamp: bigint; signature: Uint8Array } {
  if (payload.length !== 72) throw new TlogError('MALFORMED_SIGNATURE', `Ed25519 cosignature must be 72 bytes after the key ID, got ${payload.length}`);
  const timestamp = readUint64BE(payload, 0);
  if (timestamp > MAX_TIMESTAMP) throw new TlogError('MALFORMED_SIGNATURE', 'cosignature timestamp exceeds 2^63-1');
  return { timestamp, signature: payload.slice(8) };
}

/**
 * A {@link Verifier} for Ed25519 cosignatures (type 0x04) from a witness vkey
 * `<name>+<id>+base64(0x04 || key)` (spec §12).
 * @param options.maxTimestamp if given, cosignatures with a later timestamp are rejected (e.g. now + skew)
 * @throws TlogError `MALFORMED_VKEY`, or `INVALID_ARGUMENT` for a non-0x04 key
 */
export function createCosignatureVerifier(vkey: string | VerifierKey, options: { maxTimestamp?: bigint } = {}): Verifier {
  const k = typeof vkey === 'string' ? parseVerifierKey(vkey) : vkey;
  if (k.type !== SIG_TYPE_COSIGNATURE_ED25519) {
    throw new TlogError('INVALID_ARGUMENT', 'not an Ed25519 cosignature (0x04) key');
  }
  const publicKey = k.publicKey.slice();
  return {
    name: k.name,
    keyId: k.keyId,
    type: SIG_TYPE_COSIGNATURE_ED25519,
    publicKey,
    verify(text: Uint8Array, payload: Uint8Array): boolean {
      if (payload.length !== 72) return false;
      const timestamp = readUint64BE(payload, 0);
      if (timestamp > MAX_TIMESTAMP) return false;
      if (options.maxTimestamp !== undefined && timestamp > options.maxTimestamp) return false;
      return ed25519Verify(publicKey, cosignatureMessage(text, timestamp), payload.subarray(8));
    },
  };
}

/** A witness cosigner: a {@link Signer} (type 0x04) plus helpers. */
export interface Cosigner extends Signer {
  readonly publicKey: Uint8Array;
  /** `<name>+<id>+base64(0x04 || key)`. */
  readonly vkey: string;
  /** Cosignature payload `timestamp (8) || Ed25519 signature (64)` over the checkpoint text at `timestamp`. */
  cosignAt(checkpointText: TextInput, timestamp: Uint63): Uint8Array;
  /** The complete signature line (without LF) for the checkpoint text at `timestamp`. */
  signatureLine(checkpointText: TextInput, timestamp: Uint63): string;
}

/**
 * Creates an Ed25519 cosigner from a 32-byte seed (pure JS). `sign(text)` uses `options.now()`
 * (default: the current time in POSIX seconds) as the timestamp, so the cosigner also works with
 * `signNote`.
 * @throws TlogError `INVALID_ARGUMENT` for a bad name or seed
 */
export function createCosigner(name: string, seed: Uint8Array, options: { now?: () => Uint63 } = {}): Cosigner {
  const publicKey = ed25519PublicKey(seed);
  const keyId = computeKeyId(name, SIG_TYPE_COSIGNATURE_ED25519, publicKey);
  const secret = seed.slice();
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const cosignAt = (text: TextInput, timestamp: Uint63): Uint8Array => {
    const t = toU63(timestamp, 'timestamp');
    return concatBytes(uint64BE(t), ed25519.sign(cosignatureMessage(text, t), secret));
  };
  return {
    name,
    keyId,
    publicKey,
    vkey: formatVerifierKey(name, publicKey, SIG_TYPE_COSIGNATURE_ED25519),
    sign: (text) => cosignAt(text, now()),
    cosignAt,
    signatureLine: (text, timestamp) => formatSignatureLine(name, keyId, cosignAt(text, timestamp)),
  };
}

/** Timestamp of a cosignature line already parsed by `parseNote` (no verification). */
export function cosignatureTimestamp(sig: NoteSignature): bigint {
  return parseCosignaturePayload(sig.signature).timestamp;
}

// ---------------------------------------------------------------------------------------------------
// tlog-witness add-checkpoint request body
// ---------------------------------------------------------------------------------------------------

/**
 * Formats the body of `POST <witness>/add-checkpoint` (C2SP tlog-witness, spec §12):
 * `old <size>\n`, the consistency proof lines (base64, at most 63; none when old size is 0),
 * an empty line, then the signed checkpoint.
 * @throws TlogError `INVALID_ARGUMENT`
 */
export function formatAddCheckpointRequest(oldSize: Uint63, proof: readonly Uint8Array[], signedCheckpoint: string): string {
  const old = toU63(oldSize, 'old size');
  if (proof.length > MAX_PROOF_LENGTH) throw new TlogError('INVALID_ARGUMENT', 'at most 63 consistency proof lines');
  if (old === 0n && proof.length > 0) throw new TlogError('INVALID_ARGUMENT', 'the proof must be empty when the old size is 0');
  parseNote(signedCheckpoint);
  return `old ${old}\n${proof.map((h) => encodeBase64(h) + '\n').join('')}\n${signedCheckpoint}`;
}

/**
 * Parses an add-checkpoint request body (the witness side; useful for tests and mock witnesses).
 * @returns old size, proof hashes, and the signed checkpoint text (not verified)
 * @throws TlogError `MALFORMED_PROOF`
 */
export function parseAddCheckpointRequest(body: TextInput): { oldSize: bigint; proof: Uint8Array[]; checkpoint: string } {
  const text = typeof body === 'string' ? body : utf8Decode(body);
  const nl = text.indexOf('\n');
  const first = nl < 0 ? '' : text.slice(0, nl);
  if (!first.startsWith('old ')) throw new TlogError('MALFORMED_PROOF', 'add-checkpoint body must start with "old <size>"');
  let oldSize: bigint;
  try {
    oldSize = parseDecimal(first.slice(4), 'old size');
  } catch (e) {
    throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
  }
  const proof: Uint8Array[] = [];
  let pos = nl + 1;
  for (;;) {
    const end = text.indexOf('\n', pos);
    if (end < 0) throw new TlogError('MALFORMED_PROOF', 'missing empty line before the checkpoint');
    const line = text.slice(pos, end);
    pos = end + 1;
    if (line === '') break;
    try {
      proof.push(decodeHash(line, 'consistency proof line'));
    } catch (e) {
      throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
    }
    if (proof.length > MAX_PROOF_LENGTH) throw new TlogError('MALFORMED_PROOF', 'more than 63 proof lines');
  }
  if (oldSize === 0n && proof.length > 0) throw new TlogError('MALFORMED_PROOF', 'proof must be empty when old size is 0');
  return { oldSize, proof, checkpoint: text.slice(pos) };
}

/**
 * Decodes the `200` response body of add-checkpoint (one or more signature lines, each ending in LF)
 * into lines suitable for `addSignatureLines`. Does not verify (append them to the checkpoint and use
 * `openCheckpoint` with the witness verifiers).
 * @throws TlogError `MALFORMED_NOTE`
 */
export function parseCosignatureResponse(body: TextInput): string[] {
  const text = typeof body === 'string' ? body : utf8Decode(body);
  if (text.length === 0 || !text.endsWith('\n')) throw new TlogError('MALFORMED_NOTE', 'cosignature response must be LF-terminated signature lines');
  const lines = text.slice(0, -1).split('\n');
  for (const l of lines) parseSignatureLine(l);
  return lines;
}
