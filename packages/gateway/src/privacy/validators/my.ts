/**
 * Malaysia MyKad / NRIC (`YYMMDD-PB-###G`, 12 digits). Adapter around stdnum `MY.nric` (calendar
 * date, unassigned birthplace codes 00, 17–20, 69, 73, 80, 81, 94–97) plus our own date
 * plausibility: stdnum pivots two-digit years at 20, so we accept when 19YY or 20YY is a birth
 * date not after the processing date (spec §2.4, §4.4).
 */
import { validate as stdnumNric } from 'stdnum/lib/cjs/my/nric.js';
import { checkDigits, invalid, num2, plausibleTwoDigitYearDate, type ValidateContext, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 12-digit MyKad number. */
export function validateMyNric(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 12);
  if (bad) return bad;
  if (!plausibleTwoDigitYearDate(num2(c, 0), num2(c, 2), num2(c, 4), ctx)) return invalid('date');
  return viaStdnum(stdnumNric, c);
}
