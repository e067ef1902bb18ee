/**
 * India: Aadhaar and PAN.
 *
 * Aadhaar (12 digits): adapter around stdnum `IN.aadhaar` — Verhoeff over all digits, first digit
 * 2–9 (validator's `isIdentityCard(…,'IN')` wrongly accepts a leading 1; spec §2.4).
 *
 * PAN (`AAAPA9999A`): adapter around stdnum `IN.pan` (layout, holder-type letter, serial not
 * 0000). stdnum upper-cases its input; the candidate pattern keeps PAN case-sensitive (spec §4.2),
 * so lower-case input is rejected here too. The holder type is read from the 4th letter by
 * {@link panHolderIsIndividual} (stdnum reports every PAN as a company; spec §2.4).
 */
import { validate as stdnumAadhaar } from 'stdnum/lib/cjs/in/aadhaar.js';
import { validate as stdnumPan } from 'stdnum/lib/cjs/in/pan.js';
import { checkDigits, invalid, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 12-digit Aadhaar number. */
export function validateInAadhaar(c: string): ValidationResult {
  const bad = checkDigits(c, 12);
  if (bad) return bad;
  const first = c.charCodeAt(0) - 48;
  if (first < 2) return invalid('prefix');
  return viaStdnum(stdnumAadhaar, c);
}

const PAN_RE = /^[A-Z]{3}[ABCFGHJLPTK][A-Z]\d{4}[A-Z]$/;

/** Validates a 10-character PAN (upper case). */
export function validateInPan(c: string): ValidationResult {
  if (c.length !== 10) return invalid('length');
  if (!/^[A-Z]{5}\d{4}[A-Z]$/.test(c)) return invalid('format');
  if (!PAN_RE.test(c)) return invalid('prefix');
  if (c.slice(5, 9) === '0000') return invalid('repeated');
  return viaStdnum(stdnumPan, c);
}

/** True when the PAN's 4th letter (holder type) is P, an individual. */
export function panHolderIsIndividual(c: string): boolean {
  return c[3] === 'P';
}
