/**
 * Phone-number check used to suppress phone-shaped candidates (spec §2.4, §4.6). Uses
 * libphonenumber-js with the `max` metadata: with the default `min` metadata, Kenyan IDs, NINs
 * and Saudi IDs were mis-read as Indian phone numbers (spec §2.4).
 */
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js/max';
import { guardLib } from './validators/common.ts';

/**
 * True when the digits `compact` form a valid phone number of `country` (ISO alpha-2) in national
 * or international notation. Never throws.
 */
export function isValidPhoneNumber(compact: string, country: string): boolean {
  return guardLib(() => {
    const p = parsePhoneNumberFromString(compact, country as CountryCode);
    return p !== undefined && p.isValid();
  }, false);
}
