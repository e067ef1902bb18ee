/**
 * Payment card number (ISO/IEC 7812 PAN, 13–19 digits). Adapter around `validator.isLuhnNumber`
 * plus our own issuer-range table with per-range lengths: `validator.isCreditCard` has an
 * operator-precedence slip in its Mastercard pattern (any Luhn-valid string starting 51–55 passes
 * regardless of length), and Luhn alone cannot tell cards from Luhn-based national IDs or IMEIs
 * (spec §2.4). Regional schemes are included and the table is extensible per deployment
 * (spec §3.3 "keep the range table configurable").
 */
import { isLuhnNumber } from './validator-lib.ts';
import { allSame, guardLib, invalid, isDigits, VALID, type ValidationResult } from './common.ts';

/** One issuer range: numeric prefixes `from`–`to` (same number of digits) and accepted lengths. */
export interface CardRange {
  readonly scheme: string;
  readonly from: number;
  readonly to: number;
  readonly lengths: readonly number[];
}

const L16_19 = [16, 17, 18, 19];
const L13_19 = [13, 14, 15, 16, 17, 18, 19];

/** Default issuer ranges (public IIN tables; regional schemes of the deployment regions included). */
export const DEFAULT_CARD_RANGES: readonly CardRange[] = [
  { scheme: 'visa', from: 4, to: 4, lengths: [13, 16, 19] },
  { scheme: 'mastercard', from: 51, to: 55, lengths: [16] },
  { scheme: 'mastercard', from: 2221, to: 2720, lengths: [16] },
  { scheme: 'amex', from: 34, to: 34, lengths: [15] },
  { scheme: 'amex', from: 37, to: 37, lengths: [15] },
  { scheme: 'diners', from: 300, to: 305, lengths: [14, 15, 16, 17, 18, 19] },
  { scheme: 'diners', from: 36, to: 36, lengths: [14, 15, 16, 17, 18, 19] },
  { scheme: 'diners', from: 38, to: 39, lengths: [14, 15, 16, 17, 18, 19] },
  { scheme: 'jcb', from: 3528, to: 3589, lengths: L16_19 },
  { scheme: 'discover', from: 6011, to: 6011, lengths: L16_19 },
  { scheme: 'discover', from: 644, to: 649, lengths: L16_19 },
  { scheme: 'discover/rupay', from: 65, to: 65, lengths: L16_19 },
  { scheme: 'unionpay', from: 62, to: 62, lengths: L16_19 },
  { scheme: 'unionpay/rupay', from: 81, to: 82, lengths: L16_19 },
  { scheme: 'rupay', from: 60, to: 60, lengths: L16_19 },
  { scheme: 'rupay', from: 508, to: 508, lengths: [16] },
  { scheme: 'maestro', from: 50, to: 50, lengths: L13_19 },
  { scheme: 'maestro', from: 56, to: 58, lengths: L13_19 },
  { scheme: 'maestro', from: 6304, to: 6304, lengths: L13_19 },
  { scheme: 'maestro', from: 6759, to: 6759, lengths: L13_19 },
  { scheme: 'maestro', from: 6761, to: 6763, lengths: L13_19 },
  { scheme: 'interpayment/instapayment', from: 636, to: 639, lengths: L16_19 },
  { scheme: 'mir', from: 2200, to: 2204, lengths: L16_19 },
  { scheme: 'hipercard', from: 3841, to: 3841, lengths: L16_19 },
  { scheme: 'napas', from: 9704, to: 9704, lengths: [16, 19] },
  { scheme: 'mada', from: 9682, to: 9682, lengths: [16] },
  { scheme: 'troy', from: 9792, to: 9792, lengths: [16] },
  { scheme: 'humo', from: 9860, to: 9860, lengths: [16] },
  { scheme: 'uzcard', from: 8600, to: 8600, lengths: [16] },
];

function prefixValue(c: string, digits: number): number {
  let v = 0;
  for (let i = 0; i < digits; i++) v = v * 10 + (c.charCodeAt(i) - 48);
  return v;
}

function digitCount(n: number): number {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : n < 100000 ? 5 : 6;
}

/**
 * Validates a compact card number against `ranges` (default {@link DEFAULT_CARD_RANGES}):
 * 13–19 digits, an issuer range whose lengths include this length, Luhn.
 * Reasons: `prefix` = no range matches, `length` = a range matched but not with this length.
 */
export function validatePaymentCard(c: string, ranges: readonly CardRange[] = DEFAULT_CARD_RANGES): ValidationResult {
  if (c.length < 13 || c.length > 19) return invalid('length');
  if (!isDigits(c)) return invalid('format');
  if (allSame(c)) return invalid('repeated');
  let prefixHit = false;
  let ok = false;
  for (const r of ranges) {
    const p = prefixValue(c, digitCount(r.from));
    if (p < r.from || p > r.to) continue;
    prefixHit = true;
    if (r.lengths.includes(c.length)) {
      ok = true;
      break;
    }
  }
  if (!ok) return invalid(prefixHit ? 'length' : 'prefix');
  return guardLib(() => isLuhnNumber(c), false) ? VALID : invalid('checksum');
}

/** Luhn only (no range), for unknown-range numbers that have card context (spec §3.3). */
export function cardLuhnOnly(c: string): boolean {
  return c.length >= 13 && c.length <= 19 && isDigits(c) && !allSame(c) && guardLib(() => isLuhnNumber(c), false);
}
