/**
 * Qatar QID (`C YY NNN SSSSS`, 11 digits). Own validator from secondary sources (spec §3.3):
 * C = 2 (born 1900s) or 3 (2000s), birth year not after the processing year, NNN an ISO 3166-1
 * numeric country code (checked with `validator.isISO31661Numeric`).
 */
import { isISO31661Numeric } from './validator-lib.ts';
import { checkDigits, guardLib, invalid, num2, VALID, type ValidateContext, type ValidationResult } from './common.ts';

/** Validates a compact 11-digit QID. */
export function validateQaQid(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 11);
  if (bad) return bad;
  const cen = c.charCodeAt(0) - 48;
  if (cen !== 2 && cen !== 3) return invalid('prefix');
  const year = (cen === 2 ? 1900 : 2000) + num2(c, 1);
  if (year > ctx.nowYear || year < ctx.minBirthYear) return invalid('date');
  const nationality = c.slice(3, 6);
  if (!guardLib(() => isISO31661Numeric(nationality), false)) return invalid('region');
  return VALID;
}
