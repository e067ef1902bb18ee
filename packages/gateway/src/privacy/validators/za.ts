/**
 * South Africa identity number (`YYMMDD SSSS C A Z`, 13 digits). Adapter around stdnum `ZA.idnr`
 * (date, citizenship digit 0/1, Luhn) plus our own plausibility of the two-digit-year birth date
 * (19YY or 20YY not after the processing date; spec §2.4, §4.4). stdnum accepts spaces but not
 * hyphens, so it is given the compact form.
 */
import { validate as stdnumIdnr } from 'stdnum/lib/cjs/za/idnr.js';
import { checkDigits, invalid, num2, plausibleTwoDigitYearDate, type ValidateContext, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 13-digit South African ID number. */
export function validateZaId(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 13);
  if (bad) return bad;
  if (!plausibleTwoDigitYearDate(num2(c, 0), num2(c, 2), num2(c, 4), ctx)) return invalid('date');
  return viaStdnum(stdnumIdnr, c);
}
