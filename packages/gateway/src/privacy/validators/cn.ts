/**
 * China resident identity number (`AAAAAA YYYYMMDD SSS C`, 18 characters). Adapter around stdnum
 * `CN.ric` (date, ISO 7064 MOD 11-2 check `10X98765432`; GB 11643-1999) plus what stdnum misses
 * (spec §2.4): the province list (first two digits of the GB/T 2260 division code, as in
 * validator's zh-CN check, plus 83 for Taiwan residents' permits) and a birth year ≥ 1900.
 */
import { validate as stdnumRic } from 'stdnum/lib/cjs/cn/ric.js';
import { allSame, invalid, isDigits, num2, numAt, plausibleBirthDate, type ValidateContext, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

const PROVINCES = new Set([
  11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53,
  54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91,
]);

/** Validates a compact 18-character RIC (check character 0–9 or X, case-insensitive). */
export function validateCnRic(raw: string, ctx: ValidateContext): ValidationResult {
  if (raw.length !== 18) return invalid('length');
  const c = raw.toUpperCase();
  const front = c.slice(0, 17);
  if (!isDigits(front)) return invalid('format');
  const last = c.charCodeAt(17);
  if (!((last >= 48 && last <= 57) || last === 88)) return invalid('format');
  if (allSame(c)) return invalid('repeated');
  if (!PROVINCES.has(num2(c, 0))) return invalid('region');
  if (!plausibleBirthDate(numAt(c, 6, 10), num2(c, 10), num2(c, 12), ctx)) return invalid('date');
  return viaStdnum(stdnumRic, c);
}
