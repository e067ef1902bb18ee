/**
 * IBAN (ISO 13616). Adapter around ibantools (pinned 4.5.4): `electronicFormatIBAN` first (it
 * needs the compact upper-case form; spec §2.4), then `validateIBAN` — country length, BBAN
 * format, ISO 7064 mod 97-10 and some national check digits. ibantools also accepts countries
 * outside the SWIFT IBAN registry (DZ, MA, CI, SN, IR …); {@link ibanInRegistry} tells them apart
 * so the scorer can weigh them lower.
 */
import { electronicFormatIBAN, getCountrySpecifications, validateIBAN, ValidationErrorsIBAN } from 'ibantools';
import { guardLib, invalid, VALID, type ValidationResult } from './common.ts';

const SPECS = getCountrySpecifications();

/** Total IBAN length (characters, compact) for a country code, or 0 when unknown. */
export function ibanLength(cc: string): number {
  return SPECS[cc]?.chars ?? 0;
}

/** True when the country of a compact IBAN is in the SWIFT IBAN registry. */
export function ibanInRegistry(compact: string): boolean {
  return SPECS[compact.slice(0, 2)]?.IBANRegistry === true;
}

/**
 * Validates an IBAN (spaces allowed; any case: `gb82 west 1234 5698 7654 32` is the IBAN
 * `GB82WEST12345698765432` — it is validated upper-cased, as ibantools needs).
 */
export function validateIban(raw: string): ValidationResult {
  const upper = raw.toUpperCase();
  const e = guardLib(() => electronicFormatIBAN(upper), null);
  if (!e) return invalid('format');
  if (e !== upper.replace(/ /g, '')) return invalid('format'); // other characters
  const cc = e.slice(0, 2);
  const spec = SPECS[cc];
  if (!spec || !spec.chars) return invalid('prefix');
  if (e.length !== spec.chars) return invalid('length');
  const r = guardLib(() => validateIBAN(e), null);
  if (!r) return invalid('library');
  if (r.valid) return VALID;
  const code = r.errorCodes[0];
  switch (code) {
    case ValidationErrorsIBAN.NoIBANCountry:
      return invalid('prefix');
    case ValidationErrorsIBAN.WrongBBANLength:
      return invalid('length');
    case ValidationErrorsIBAN.WrongBBANFormat:
      return invalid('format');
    default:
      return invalid('checksum');
  }
}
