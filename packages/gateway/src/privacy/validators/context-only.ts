/**
 * Context-only types (spec §3.1, §4.5): random numbers with no published structure — PhilSys
 * PSN (12), Fayda FIN (12), Nigerian NIN and BVN (11), Kenyan ID card number (7–8). The
 * validator checks length, digits and the all-identical rule only; detection relies on context.
 * (A claimed NIN Verhoeff check is unverified, so it is not applied; spec §3.3.)
 */
import { checkDigits, VALID, type ValidationResult } from './common.ts';

/** Validates a compact PhilSys Number (12 digits). */
export function validatePhPsn(c: string): ValidationResult {
  return checkDigits(c, 12) ?? VALID;
}

/** Validates a compact Fayda FIN (12 digits). */
export function validateEtFaydaFin(c: string): ValidationResult {
  return checkDigits(c, 12) ?? VALID;
}

/** Validates a compact NIN (11 digits). */
export function validateNgNin(c: string): ValidationResult {
  return checkDigits(c, 11) ?? VALID;
}

/** Validates a compact BVN (11 digits; the leading 22 seen in practice is not a published rule). */
export function validateNgBvn(c: string): ValidationResult {
  return checkDigits(c, 11) ?? VALID;
}

/** Validates a compact Kenyan ID card number (7 or 8 digits, per public code). */
export function validateKeNationalId(c: string): ValidationResult {
  return checkDigits(c, c.length === 7 ? 7 : 8) ?? VALID;
}
