/**
 * Bangladesh NID: 10 digits (smart card; check algorithm unpublished, so context-only), 13 digits
 * (legacy: district, area type, upazila, union/ward, serial) or 17 digits (birth year + the 13).
 * Own validator (spec §3.1, §3.3): area-type digit in {1,2,3,4,5,9}, 17-digit birth year
 * plausible, no leading 0 on the 10-digit form, not all-identical.
 */
import { allSame, checkDigits, invalid, isDigits, numAt, VALID, type ValidateContext, type ValidationResult } from './common.ts';

const AREA_TYPES = '123459';

function legacy13(c: string): ValidationResult {
  if (c.startsWith('00')) return invalid('region');
  if (!AREA_TYPES.includes(c[2]!)) return invalid('region');
  return VALID;
}

/** Validates a compact Bangladesh NID of 10, 13 or 17 digits. */
export function validateBdNid(c: string, ctx: ValidateContext): ValidationResult {
  if (c.length === 10) {
    const bad = checkDigits(c, 10);
    if (bad) return bad;
    return c[0] === '0' ? invalid('prefix') : VALID;
  }
  if (c.length === 13) {
    return checkDigits(c, 13) ?? legacy13(c);
  }
  if (c.length === 17) {
    if (!isDigits(c)) return invalid('format');
    if (allSame(c)) return invalid('repeated');
    const year = numAt(c, 0, 4);
    if (year < ctx.minBirthYear || year > ctx.nowYear) return invalid('date');
    return legacy13(c.slice(4));
  }
  return invalid('length');
}
