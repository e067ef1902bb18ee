/**
 * Egypt national number (`C YYMMDD GG SSSS K`, 14 digits). Own validator: century digit 2 (1900s)
 * or 3 (2000s), a plausible birth date and an assigned governorate code (01–04, 11–19, 21–29,
 * 31–35, 88 = born abroad). The final digit's algorithm is not published, so it is not checked
 * (spec §3.3: Wikipedia, codereview.stackexchange 221899).
 */
import { checkDigits, invalid, num2, plausibleBirthDate, VALID, type ValidateContext, type ValidationResult } from './common.ts';

const GOVERNORATES = new Set([
  1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 29, 31, 32, 33, 34, 35, 88,
]);

/** Validates a compact 14-digit Egyptian national number. */
export function validateEgNationalId(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 14);
  if (bad) return bad;
  const cen = c.charCodeAt(0) - 48;
  if (cen !== 2 && cen !== 3) return invalid('prefix');
  const year = (cen === 2 ? 1900 : 2000) + num2(c, 1);
  if (!plausibleBirthDate(year, num2(c, 3), num2(c, 5), ctx)) return invalid('date');
  if (!GOVERNORATES.has(num2(c, 7))) return invalid('region');
  return VALID;
}
