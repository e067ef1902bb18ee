/**
 * Mexico CURP (18 characters). Adapter around stdnum `MX.curp` (layout, YYMMDD date, sex letter,
 * state list, offensive-word list, mod-10 check over `0123456789ABCDEFGHIJKLMNÑOPQRSTUVWXYZ`
 * with weights 18 − position) plus the century rule stdnum ignores (spec §2.4, RENAPO): the 17th
 * character is a digit for births before 2000 and a letter from 2000 on, and the birth date
 * must not be after the processing date.
 */
import { validate as stdnumCurp } from 'stdnum/lib/cjs/mx/curp.js';
import { invalid, num2, plausibleBirthDate, type ValidateContext, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

const LAYOUT = /^[A-Z][AEIOUX][A-Z]{2}\d{6}[HMX][A-Z]{5}[0-9A-Z]\d$/;

/** Validates an 18-character CURP (case-insensitive, as in the pattern of spec §3.2). */
export function validateMxCurp(raw: string, ctx: ValidateContext): ValidationResult {
  if (raw.length !== 18) return invalid('length');
  const c = raw.toUpperCase();
  if (!LAYOUT.test(c)) return invalid('format');
  const c17 = c.charCodeAt(16);
  const century = c17 >= 48 && c17 <= 57 ? 1900 : 2000;
  if (!plausibleBirthDate(century + num2(c, 4), num2(c, 6), num2(c, 8), ctx)) return invalid('date');
  return viaStdnum(stdnumCurp, c);
}
