/**
 * Error type of the library. Every failure that is the caller's or the data's fault (malformed input,
 * a proof or signature that does not verify, an out-of-range argument) is thrown as a {@link TlogError}
 * with a stable machine-readable {@link TlogErrorCode}, so that a server can map it to an HTTP status and
 * an auditor can print a precise reason.
 *
 * Plain boolean verifiers (`verifyInclusion`, `verifyConsistency`) never throw for a bad proof: they
 * return `false`. The higher-level document verifiers throw a `TlogError` explaining what failed.
 */

/**
 * Stable error codes.
 *
 * - `INVALID_ARGUMENT`: an argument is out of range or of the wrong shape (e.g. index ≥ size, a
 *   non-integer `number`, a hash that is not 32 bytes).
 * - `MALFORMED_BASE64`, `MALFORMED_HEX`, `MALFORMED_DECIMAL`, `MALFORMED_UTF8`: strict codecs (spec §1).
 * - `MALFORMED_NOTE`, `MALFORMED_CHECKPOINT`, `MALFORMED_VKEY`, `MALFORMED_SIGNATURE`,
 *   `MALFORMED_TILE_PATH`, `MALFORMED_TILE`, `MALFORMED_ENTRY_BUNDLE`, `MALFORMED_PROOF`: strict parsers.
 * - `UNVERIFIED_NOTE`: no signature from a trusted key verified (spec §8.4, C2SP signed-note).
 * - `INVALID_SIGNATURE`: a signature line from a trusted key failed to verify (the whole note is rejected).
 * - `WITNESS_QUORUM`: fewer valid witness cosignatures than required (spec §12).
 * - `ORIGIN_MISMATCH`, `SIZE_MISMATCH`, `ROOT_MISMATCH`: a verified value does not match what was expected.
 * - `PROOF_FAILED`: an inclusion or consistency proof does not verify.
 * - `TILE_MISMATCH`: tiles or entry bundles are inconsistent with each other or with the signed root.
 * - `NOT_FOUND`: a resource needed (e.g. a tile) is not available from a reader.
 */
export type TlogErrorCode =
  | 'INVALID_ARGUMENT'
  | 'MALFORMED_BASE64'
  | 'MALFORMED_HEX'
  | 'MALFORMED_DECIMAL'
  | 'MALFORMED_UTF8'
  | 'MALFORMED_NOTE'
  | 'MALFORMED_CHECKPOINT'
  | 'MALFORMED_VKEY'
  | 'MALFORMED_SIGNATURE'
  | 'MALFORMED_TILE_PATH'
  | 'MALFORMED_TILE'
  | 'MALFORMED_ENTRY_BUNDLE'
  | 'MALFORMED_PROOF'
  | 'UNVERIFIED_NOTE'
  | 'INVALID_SIGNATURE'
  | 'WITNESS_QUORUM'
  | 'ORIGIN_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'ROOT_MISMATCH'
  | 'PROOF_FAILED'
  | 'TILE_MISMATCH'
  | 'NOT_FOUND';

/** The single error class thrown by this library; `code` is stable, `message` is for humans. */
export class TlogError extends Error {
  /** Machine-readable reason, see {@link TlogErrorCode}. */
  readonly code: TlogErrorCode;

  constructor(code: TlogErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TlogError';
    this.code = code;
  }
}

/** Type guard: `true` when `e` is a {@link TlogError} (optionally with the given code). */
export function isTlogError(e: unknown, code?: TlogErrorCode): e is TlogError {
  return e instanceof TlogError && (code === undefined || e.code === code);
}
