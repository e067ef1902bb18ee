/**
 * Indonesia NIK (`PPKKCC DDMMYY SSSS`, 16 digits). Own validator: province code list (including
 * the 2022 Papua provinces 93–96), non-zero regency and district, birth date DDMMYY with day + 40
 * for women, 19YY or 20YY plausible, serial not 0000 (spec §3.1, §4.4).
 * Source: Dukcapil Klaten (structure, +40 rule), Microsoft Purview definition.
 */
import { checkDigits, invalid, num2, plausibleTwoDigitYearDate, VALID, type ValidateContext, type ValidationResult } from './common.ts';

/** Province codes (BPS/Kemendagri): Sumatra, Java, Bali–Nusa Tenggara, Kalimantan, Sulawesi, Maluku, Papua. */
const PROVINCES = new Set([
  11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 31, 32, 33, 34, 35, 36, 51, 52, 53, 61, 62, 63, 64, 65,
  71, 72, 73, 74, 75, 76, 81, 82, 91, 92, 93, 94, 95, 96,
]);

/** Validates a compact 16-digit NIK. */
export function validateIdNik(c: string, ctx: ValidateContext): ValidationResult {
  const bad = checkDigits(c, 16);
  if (bad) return bad;
  if (!PROVINCES.has(num2(c, 0))) return invalid('region');
  if (num2(c, 2) === 0 || num2(c, 4) === 0) return invalid('region');
  let day = num2(c, 6);
  if (day > 40) day -= 40;
  if (!plausibleTwoDigitYearDate(num2(c, 10), num2(c, 8), day, ctx)) return invalid('date');
  if (c.endsWith('0000')) return invalid('repeated');
  return VALID;
}
