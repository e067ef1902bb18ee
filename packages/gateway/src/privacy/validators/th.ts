/**
 * Thailand national ID (13 digits, `N-NNNN-NNNNN-NN-N`). Adapter around stdnum `TH.idnr`
 * (weighted mod 11: sum d_i × (13 − i), check = (11 − sum mod 11) mod 10) plus the category
 * rule "first digit 1–8" (spec §4.4; stdnum only excludes 0 and 9).
 */
import { validate as stdnumIdnr } from 'stdnum/lib/cjs/th/idnr.js';
import { checkDigits, invalid, type ValidateContext, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 13-digit Thai ID. */
export function validateThNationalId(c: string, _ctx?: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 13);
  if (bad) return bad;
  const first = c.charCodeAt(0) - 48;
  if (first < 1 || first > 8) return invalid('prefix');
  return viaStdnum(stdnumIdnr, c);
}
