/**
 * Fail-closed errors of the detector. Messages never contain any part of the scanned text.
 * Callers must treat both as "could not verify the prompt is clean" and reject or block it.
 */

/** The scan did not finish before `DetectOptions.deadline` (a `performance.now()` timestamp). */
export class PiiTimeoutError extends Error {
  override readonly name = 'PiiTimeoutError';
  constructor(readonly deadline: number) {
    super('PII detection exceeded its deadline');
  }
}

/** The input is longer than `maxChars` UTF-16 code units; nothing was scanned. */
export class PiiInputTooLargeError extends Error {
  override readonly name = 'PiiInputTooLargeError';
  constructor(
    readonly length: number,
    readonly maxChars: number,
  ) {
    super(`PII detection input too large: ${length} > ${maxChars} UTF-16 code units`);
  }
}
