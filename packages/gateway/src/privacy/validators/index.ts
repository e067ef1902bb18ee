/**
 * Validator registry: one compact + validate pair per identifier type (spec §4.4).
 *
 * Fourteen types use our own validators (no library covers them; spec §1): SG_NRIC_FIN, ID_NIK,
 * VN_CCCD, PH_PSN, SA_NATIONAL_ID, SA_IQAMA, AE_EMIRATES_ID, QA_QID, EG_NATIONAL_ID,
 * KE_NATIONAL_ID, NG_NIN, NG_BVN, ET_FAYDA_FIN, BD_NID and KZ_IIN. The rest are adapters around
 * stdnum, validator and ibantools that add the checks spec §2.4 lists as missing.
 */
import type { IdType } from '../types.ts';
import { validateAeEmiratesId } from './ae.ts';
import { validateBdNid } from './bd.ts';
import { validateBrCnpj, validateBrCpf } from './br.ts';
import { validatePaymentCard } from './card.ts';
import { validateCnRic } from './cn.ts';
import { makeContext, type ValidateContext, type ValidationResult } from './common.ts';
import { validateEtFaydaFin, validateKeNationalId, validateNgBvn, validateNgNin, validatePhPsn } from './context-only.ts';
import { validateEgNationalId } from './eg.ts';
import { validateEmail } from './email.ts';
import { validateIban } from './iban.ts';
import { validateIdNik } from './id.ts';
import { validateInAadhaar, validateInPan } from './in.ts';
import { validateKeKraPin } from './ke.ts';
import { validateKzIin } from './kz.ts';
import { validateMxCurp } from './mx.ts';
import { validateMyNric } from './my.ts';
import { validatePkCnic } from './pk.ts';
import { validateQaQid } from './qa.ts';
import { validateSaIqama, validateSaNationalId } from './sa.ts';
import { validateSgNricFin } from './sg.ts';
import { validateThNationalId } from './th.ts';
import { validateTrTckn } from './tr.ts';
import { validateVnCccd } from './vn.ts';
import { validateZaId } from './za.ts';
import { normalise } from '../normalise.ts';

export type { InvalidReason, ValidateContext, ValidationResult } from './common.ts';
export { makeContext } from './common.ts';
export { DEFAULT_CARD_RANGES, type CardRange } from './card.ts';

/** Validates the compact form of one type. */
export type CompactValidator = (compact: string, ctx: ValidateContext) => ValidationResult;

/** Per-type validator of the compact form (separators removed by {@link compactFor}). */
export const VALIDATORS: Readonly<Record<IdType, CompactValidator>> = {
  MY_NRIC: validateMyNric,
  SG_NRIC_FIN: validateSgNricFin,
  ID_NIK: validateIdNik,
  TH_NATIONAL_ID: validateThNationalId,
  VN_CCCD: validateVnCccd,
  PH_PSN: validatePhPsn,
  SA_NATIONAL_ID: validateSaNationalId,
  SA_IQAMA: validateSaIqama,
  AE_EMIRATES_ID: validateAeEmiratesId,
  QA_QID: validateQaQid,
  EG_NATIONAL_ID: validateEgNationalId,
  KE_NATIONAL_ID: validateKeNationalId,
  KE_KRA_PIN: validateKeKraPin,
  NG_NIN: validateNgNin,
  NG_BVN: validateNgBvn,
  ZA_ID: validateZaId,
  ET_FAYDA_FIN: validateEtFaydaFin,
  PK_CNIC: validatePkCnic,
  IN_AADHAAR: validateInAadhaar,
  IN_PAN: validateInPan,
  BD_NID: validateBdNid,
  KZ_IIN: validateKzIin,
  TR_TCKN: validateTrTckn,
  CN_RIC: validateCnRic,
  BR_CPF: validateBrCpf,
  BR_CNPJ: validateBrCnpj,
  MX_CURP: validateMxCurp,
  IBAN: (c) => validateIban(c),
  PAYMENT_CARD: (c) => validatePaymentCard(c),
  EMAIL: validateEmail,
};

const SEP_SPACE_HYPHEN = /[ -]/g;
const SEP_BR = /[ .\/-]/g;

/**
 * Removes the separators a type allows (spec §3.1 "Usual separators"): spaces and hyphens for
 * most types; dots, slash, hyphen and spaces for CPF/CNPJ; nothing for email.
 * Expects ASCII digits (normalise first).
 */
export function compactFor(type: IdType, raw: string): string {
  switch (type) {
    case 'EMAIL':
      return raw;
    case 'BR_CPF':
    case 'BR_CNPJ':
      return raw.replace(SEP_BR, '');
    default:
      return raw.indexOf(' ') < 0 && raw.indexOf('-') < 0 ? raw : raw.replace(SEP_SPACE_HYPHEN, '');
  }
}

/**
 * Validates an isolated value of `type` as written (separators allowed, native digits allowed):
 * normalised as the detector's scan copy (digits, look-alike spaces and dashes and full-width
 * letters to ASCII, invisible characters inside removed; normalise.ts), the type's separators
 * removed, then the type's validator runs. `now` is the processing date for date plausibility
 * (default: today). Never throws.
 */
export function validateIdentifier(type: IdType, value: string, now: Date = new Date()): ValidationResult {
  const ascii = normalise(value).text;
  return VALIDATORS[type](compactFor(type, ascii), makeContext(now));
}
