/**
 * UAE Emirates ID (`784-YYYY-NNNNNNN-C`, 15 digits). Own validator: country prefix 784 and Luhn
 * over all digits (Microsoft Purview definition; spec §3.1). The year block is usually, not
 * always, the birth year, so it is not checked.
 */
import { luhnValid } from './algorithms.ts';
import { checkDigits, invalid, VALID, type ValidationResult } from './common.ts';

/** Validates a compact 15-digit Emirates ID. */
export function validateAeEmiratesId(c: string): ValidationResult {
  const bad = checkDigits(c, 15);
  if (bad) return bad;
  if (!c.startsWith('784')) return invalid('prefix');
  return luhnValid(c) ? VALID : invalid('checksum');
}
