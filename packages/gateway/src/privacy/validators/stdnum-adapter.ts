/**
 * Adapter from a stdnum `validate()` result to {@link ValidationResult}.
 * stdnum (koblas/stdnum-js, pinned 1.12.0) reports failures as `{ isValid: false, error }` with
 * error classes InvalidLength / InvalidFormat / InvalidComponent / InvalidChecksum; a thrown
 * error is treated as invalid (spec §2.5).
 */
import { guardLib, invalid, VALID, type ValidationResult } from './common.ts';

interface StdnumResult {
  isValid: boolean;
  error?: { name?: string } | undefined;
}

const LIB_FAILED: StdnumResult = { isValid: false };

/** Calls `validate(value)` of a deep-imported stdnum module and maps the outcome. */
export function viaStdnum(validate: (value: string) => StdnumResult, value: string): ValidationResult {
  const r = guardLib(() => validate(value), LIB_FAILED);
  if (r.isValid) return VALID;
  switch (r.error?.name) {
    case 'InvalidLength':
      return invalid('length');
    case 'InvalidFormat':
      return invalid('format');
    case 'InvalidChecksum':
      return invalid('checksum');
    case 'InvalidComponent':
      return invalid('prefix');
    default:
      return invalid('library');
  }
}
