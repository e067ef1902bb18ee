/**
 * C2SP tlog-checkpoint (spec §7): the note text `<origin>\n<size>\n<base64 root>\n` with optional
 * extension lines (which this log never emits and which {@link parseCheckpoint} rejects unless asked),
 * and opening a signed checkpoint with the log key (and optionally witness cosigners, spec §12).
 */
import { TlogError } from './errors.ts';
import {
  UNICODE_SPACE_RE,
  decodeHash,
  encodeBase64,
  parseDecimal,
  toU63,
  readUint64BE,
  type TextInput,
  type Uint63,
} from './encoding.ts';
import { HASH_SIZE } from './hash.ts';
import {
  SIG_TYPE_COSIGNATURE_ED25519,
  openNote,
  signNote,
  signNoteAsync,
  type NoteSignature,
  type OpenedNote,
  type Signer,
  type Verifier,
} from './note.ts';

/** A checkpoint (signed tree head body). */
export interface Checkpoint {
  /** Log identity, equal to the log's key name (spec §7, §8.2). */
  readonly origin: string;
  /** Tree size (number of entries). */
  readonly size: bigint;
  /** `MTH` of the first `size` entries (32 bytes). */
  readonly rootHash: Uint8Array;
  /** Extension lines (without LF); always empty for this log. */
  readonly extensions: readonly string[];
}

/**
 * `true` iff `origin` is acceptable as a checkpoint origin and key name: non-empty, no Unicode white
 * space, no `+`, no control character (spec §7).
 */
export function isValidOrigin(origin: string): boolean {
  return (
    typeof origin === 'string' &&
    origin.length > 0 &&
    !UNICODE_SPACE_RE.test(origin) &&
    !origin.includes('+') &&
    !/[\x00-\x1f\x7f\uFEFF]/.test(origin)
  );
}

/**
 * Formats a checkpoint note text (spec §7): three LF-terminated lines plus any extension lines.
 * @param cp.size bigint or safe integer
 * @param cp.extensions optional; each non-empty with no control character (the gateway MUST NOT emit any)
 * @throws TlogError `INVALID_ARGUMENT` on an invalid origin, size, root hash or extension line
 */
export function formatCheckpoint(cp: {
  origin: string;
  size: Uint63;
  rootHash: Uint8Array;
  extensions?: readonly string[];
}): string {
  if (!isValidOrigin(cp.origin)) throw new TlogError('INVALID_ARGUMENT', `invalid origin ${JSON.stringify(cp.origin)}`);
  const size = toU63(cp.size, 'tree size');
  if (!(cp.rootHash instanceof Uint8Array) || cp.rootHash.length !== HASH_SIZE) {
    throw new TlogError('INVALID_ARGUMENT', 'root hash must be 32 bytes');
  }
  let text = `${cp.origin}\n${size}\n${encodeBase64(cp.rootHash)}\n`;
  for (const ext of cp.extensions ?? []) {
    if (ext.length === 0 || /[\x00-\x1f]/.test(ext)) throw new TlogError('INVALID_ARGUMENT', 'invalid extension line');
    text += ext + '\n';
  }
  return text;
}

/**
 * Strictly parses a checkpoint note text (spec §7, C2SP tlog-checkpoint): origin without white space
 * or `+`, canonical decimal size < 2^63, canonical base64 32-byte root, every line LF-terminated, no
 * CR, no blank line, no extension lines unless `allowExtensions`.
 * @param text the note text (not the signed note)
 * @param options.allowExtensions accept non-empty extension lines (default `false`)
 * @param options.origin if given, the origin must equal it
 * @throws TlogError `MALFORMED_CHECKPOINT`, `ORIGIN_MISMATCH`
 */
export function parseCheckpoint(text: string, options: { allowExtensions?: boolean; origin?: string } = {}): Checkpoint {
  if (typeof text !== 'string' || !text.endsWith('\n')) {
    throw new TlogError('MALFORMED_CHECKPOINT', 'checkpoint text must end with a newline');
  }
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw new TlogError('MALFORMED_CHECKPOINT', `checkpoint needs 3 lines, got ${lines.length}`);
  const [origin, sizeLine, rootLine, ...extensions] = lines as [string, string, string, ...string[]];
  if (!isValidOrigin(origin)) throw new TlogError('MALFORMED_CHECKPOINT', `invalid origin line ${JSON.stringify(origin)}`);
  let size: bigint;
  try {
    size = parseDecimal(sizeLine, 'tree size');
  } catch (e) {
    throw new TlogError('MALFORMED_CHECKPOINT', (e as Error).message, { cause: e });
  }
  let rootHash: Uint8Array;
  try {
    rootHash = decodeHash(rootLine, 'root hash');
  } catch (e) {
    throw new TlogError('MALFORMED_CHECKPOINT', (e as Error).message, { cause: e });
  }
  for (const ext of extensions) {
    if (ext.length === 0) throw new TlogError('MALFORMED_CHECKPOINT', 'checkpoint contains a blank line');
    if (/[\x00-\x1f]/.test(ext)) throw new TlogError('MALFORMED_CHECKPOINT', 'control character in an extension line');
  }
  if (extensions.length > 0 && !options.allowExtensions) {
    throw new TlogError('MALFORMED_CHECKPOINT', `checkpoint has ${extensions.length} extension line(s); this log emits none`);
  }
  if (options.origin !== undefined && origin !== options.origin) {
    throw new TlogError('ORIGIN_MISMATCH', `checkpoint origin ${JSON.stringify(origin)} is not ${JSON.stringify(options.origin)}`);
  }
  return { origin, size, rootHash, extensions };
}

/**
 * Formats and signs a checkpoint (spec §7, §8) with synchronous signers. The log signer's name must
 * equal the origin (spec §8.2).
 * @returns the complete signed note
 * @throws TlogError `INVALID_ARGUMENT` if no signer is named after the origin
 */
export function signCheckpoint(
  cp: { origin: string; size: Uint63; rootHash: Uint8Array },
  signers: readonly Signer[],
): string {
  if (!signers.some((s) => s.name === cp.origin)) {
    throw new TlogError('INVALID_ARGUMENT', 'a checkpoint must be signed by a key whose name equals the origin');
  }
  return signNote(formatCheckpoint(cp), signers);
}

/** Async variant of {@link signCheckpoint} (HSM/KMS signers). */
export async function signCheckpointAsync(
  cp: { origin: string; size: Uint63; rootHash: Uint8Array },
  signers: readonly Signer[],
): Promise<string> {
  if (!signers.some((s) => s.name === cp.origin)) {
    throw new TlogError('INVALID_ARGUMENT', 'a checkpoint must be signed by a key whose name equals the origin');
  }
  return signNoteAsync(formatCheckpoint(cp), signers);
}

/** A verified cosignature found on a checkpoint (spec §12). */
export interface VerifiedCosignature {
  /** Witness key name. */
  readonly name: string;
  readonly keyId: number;
  /** POSIX seconds at which the witness cosigned. */
  readonly timestamp: bigint;
}

/** Result of {@link openCheckpoint}. */
export interface OpenedCheckpoint {
  readonly checkpoint: Checkpoint;
  /** The verified note (text, all signatures). */
  readonly note: OpenedNote;
  /** Verified log signatures (name = origin). */
  readonly logSignatures: readonly NoteSignature[];
  /** Verified witness cosignatures (from `witnesses`). */
  readonly cosignatures: readonly VerifiedCosignature[];
}

/** Options of {@link openCheckpoint}. */
export interface OpenCheckpointOptions {
  /** Expected origin (recommended: pin it). If omitted, the origin is the name of the verified log key. */
  origin?: string;
  /** Trusted witness cosigner verifiers (see `witness.ts`). */
  witnesses?: readonly Verifier[];
  /** Number of distinct valid witness cosignatures required (default 0). */
  witnessThreshold?: number;
  /** Accept checkpoint extension lines (default `false`). */
  allowExtensions?: boolean;
  /** Maximum number of signature lines (default 100). */
  maxSignatures?: number;
}

/**
 * Verifies a signed checkpoint and parses it strictly (spec §8.4 then §7): the note must carry a valid
 * signature from one of `logVerifiers` whose key name equals the origin; signatures from unknown keys
 * are ignored; any bad signature from a trusted log or witness key rejects the note; at least
 * `witnessThreshold` distinct witnesses must have cosigned.
 * @param input the signed note (string or UTF-8 bytes)
 * @param logVerifiers trusted log keys (usually one; two during a key rotation)
 * @throws TlogError `MALFORMED_NOTE`, `INVALID_SIGNATURE`, `UNVERIFIED_NOTE`, `MALFORMED_CHECKPOINT`,
 *   `ORIGIN_MISMATCH`, `WITNESS_QUORUM`
 */
export function openCheckpoint(
  input: TextInput,
  logVerifiers: readonly Verifier[],
  options: OpenCheckpointOptions = {},
): OpenedCheckpoint {
  if (logVerifiers.length === 0) throw new TlogError('INVALID_ARGUMENT', 'at least one log verifier is required');
  const witnesses = options.witnesses ?? [];
  const note = openNote(input, [...logVerifiers, ...witnesses], { maxSignatures: options.maxSignatures });
  const logSet = new Set(logVerifiers);
  const logSigs = note.verified.filter((s) => logSet.has(s.verifier));
  if (logSigs.length === 0) {
    throw new TlogError('UNVERIFIED_NOTE', 'no valid signature from a trusted log key (only witness or unknown signatures)');
  }
  const checkpoint = parseCheckpoint(note.text, { allowExtensions: options.allowExtensions, origin: options.origin });
  const logSignatures = logSigs.filter((s) => s.name === checkpoint.origin);
  if (logSignatures.length === 0) {
    throw new TlogError('ORIGIN_MISMATCH', `checkpoint origin ${JSON.stringify(checkpoint.origin)} does not match the log key name`);
  }
  const witnessSet = new Set(witnesses);
  const cosignatures: VerifiedCosignature[] = [];
  for (const s of note.verified) {
    if (!witnessSet.has(s.verifier)) continue;
    const timestamp =
      s.verifier.type === SIG_TYPE_COSIGNATURE_ED25519 && s.signature.length >= 8 ? readUint64BE(s.signature, 0) : 0n;
    cosignatures.push({ name: s.name, keyId: s.keyId, timestamp });
  }
  const threshold = options.witnessThreshold ?? 0;
  if (cosignatures.length < threshold) {
    throw new TlogError('WITNESS_QUORUM', `${cosignatures.length} valid witness cosignature(s), ${threshold} required`);
  }
  return { checkpoint, note, logSignatures, cosignatures };
}
