/**
 * Pakistan CNIC (`#####-#######-#`, 13 digits). Adapter around stdnum `PK.cnic`: province digit
 * 1–7 and a last (sex) digit that is not 0. No check digit exists (spec §3.1).
 */
import { validate as stdnumCnic } from 'stdnum/lib/cjs/pk/cnic.js';
import { checkDigits, invalid, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 13-digit CNIC. */
export function validatePkCnic(c: string): ValidationResult {
  const bad = checkDigits(c, 13);
  if (bad) return bad;
  const p = c.charCodeAt(0) - 48;
  if (p < 1 || p > 7) return invalid('prefix');
  return viaStdnum(stdnumCnic, c);
}
