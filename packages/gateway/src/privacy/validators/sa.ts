/**
 * Saudi national ID (leading 1) and Iqama (leading 2): 10 digits with a Luhn check digit. Own
 * validator: the Luhn check and the 1/2 prefixes are community-documented
 * (github.com/malzaid0/saudi-id-validator-npm; Microsoft Purview lists no checksum) — spec §3.3.
 * `validator.isLuhnNumber` alone accepts prefix 3 (spec §2.4).
 */
import { luhnValid } from './algorithms.ts';
import { checkDigits, invalid, VALID, type ValidationResult } from './common.ts';

function saudi(c: string, prefix: number): ValidationResult {
  const bad = checkDigits(c, 10);
  if (bad) return bad;
  if (c.charCodeAt(0) - 48 !== prefix) return invalid('prefix');
  return luhnValid(c) ? VALID : invalid('checksum');
}

/** Validates a compact Saudi national ID (citizen, leading 1). */
export function validateSaNationalId(c: string): ValidationResult {
  return saudi(c, 1);
}

/** Validates a compact Iqama number (resident, leading 2). */
export function validateSaIqama(c: string): ValidationResult {
  return saudi(c, 2);
}
