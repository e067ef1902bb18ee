/**
 * Vietnam CCCD / personal identification number (`PPP G YY NNNNNN`, 12 digits). Own validator:
 * birth-registration province (the 63 historic codes, Decree 137/2015, Circular 07/2016),
 * century/sex digit (0/1 → 1900s, 2/3 → 2000s, 4/5 → 2100s …) and a birth year not after the
 * processing year (spec §3.1, §4.4: that is how `2035` is rejected).
 */
import { checkDigits, invalid, num2, numAt, VALID, type ValidateContext, type ValidationResult } from './common.ts';

const PROVINCES = new Set([
  1, 2, 4, 6, 8, 10, 11, 12, 14, 15, 17, 19, 20, 22, 24, 25, 26, 27, 30, 31, 33, 34, 35, 36, 37, 38,
  40, 42, 44, 45, 46, 48, 49, 51, 52, 54, 56, 58, 60, 62, 64, 66, 67, 68, 70, 72, 74, 75, 77, 79,
  80, 82, 83, 84, 86, 87, 89, 91, 92, 93, 94, 95, 96,
]);

/** Validates a compact 12-digit CCCD number (domestic registrations: province 001–096). */
export function validateVnCccd(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 12);
  if (bad) return bad;
  if (!PROVINCES.has(numAt(c, 0, 3))) return invalid('region');
  const century = 1900 + 100 * ((c.charCodeAt(3) - 48) >> 1);
  const year = century + num2(c, 4);
  if (year > ctx.nowYear || year < ctx.minBirthYear) return invalid('date');
  return VALID;
}
