/**
 * Kazakhstan IIN (`YYMMDD C NNNN K`, 12 digits). Own validator (spec §3.1; Government Decree
 * No. 565 of 11 June 2003 as cited by public implementations): century/sex digit C (1/2 → 1800s,
 * 3/4 → 1900s, 5/6 → 2000s) with a plausible birth date (1800s only when the context's
 * `minBirthYear` allows it), and the two-pass weighted mod-11 check: weights 1…11, and if the
 * remainder is 10, weights 3…11,1,2; a second 10 means "not issued".
 */
import { checkDigits, invalid, num2, plausibleBirthDate, VALID, type ValidateContext, type ValidationResult } from './common.ts';

const W1 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const W2 = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];

function weighted(c: string, w: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < 11; i++) s += (c.charCodeAt(i) - 48) * w[i]!;
  return s % 11;
}

/** Validates a compact 12-digit IIN. */
export function validateKzIin(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 12);
  if (bad) return bad;
  const code = c.charCodeAt(6) - 48;
  if (code < 1 || code > 6) return invalid('prefix');
  const century = 1800 + 100 * ((code - 1) >> 1);
  if (!plausibleBirthDate(century + num2(c, 0), num2(c, 2), num2(c, 4), ctx)) return invalid('date');
  let k = weighted(c, W1);
  if (k === 10) {
    k = weighted(c, W2);
    if (k === 10) return invalid('checksum');
  }
  return k === c.charCodeAt(11) - 48 ? VALID : invalid('checksum');
}
