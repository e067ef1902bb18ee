/**
 * Turkey T.C. Kimlik No (11 digits). Adapter around stdnum `TR.tckimlik`: first digit not 0,
 * d10 = (7·(d1+d3+d5+d7+d9) − (d2+d4+d6+d8)) mod 10, d11 = (d1+…+d10) mod 10 (spec §3.1).
 * stdnum accepts no separators, so it is given the compact form.
 */
import { validate as stdnumTckimlik } from 'stdnum/lib/cjs/tr/tckimlik.js';
import { checkDigits, invalid, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 11-digit TCKN. */
export function validateTrTckn(c: string): ValidationResult {
  const bad = checkDigits(c, 11);
  if (bad) return bad;
  if (c[0] === '0') return invalid('prefix');
  return viaStdnum(stdnumTckimlik, c);
}
