/**
 * Identifier types of the privacy detector, their validation class and base score.
 *
 * The 30 keys are exactly the `id_types` of the fixture `test/fixtures/pii-vectors.json` and of
 * spec `pii-identifiers.md` §3.1; classes and base scores follow the table in spec §4.5.
 */

/** The 30 identifier types (spec §3.1), in catalogue order. */
export const PII_TYPES = [
  'MY_NRIC',
  'SG_NRIC_FIN',
  'ID_NIK',
  'TH_NATIONAL_ID',
  'VN_CCCD',
  'PH_PSN',
  'SA_NATIONAL_ID',
  'SA_IQAMA',
  'AE_EMIRATES_ID',
  'QA_QID',
  'EG_NATIONAL_ID',
  'KE_NATIONAL_ID',
  'KE_KRA_PIN',
  'NG_NIN',
  'NG_BVN',
  'ZA_ID',
  'ET_FAYDA_FIN',
  'PK_CNIC',
  'IN_AADHAAR',
  'IN_PAN',
  'BD_NID',
  'KZ_IIN',
  'TR_TCKN',
  'CN_RIC',
  'BR_CPF',
  'BR_CNPJ',
  'MX_CURP',
  'IBAN',
  'PAYMENT_CARD',
  'EMAIL',
] as const;

/** One of the 30 identifier types of spec §3.1. */
export type IdType = (typeof PII_TYPES)[number];

/**
 * Label of a reported span: an identifier type, or `NATIONAL_ID` when two different types
 * remained tied after overlap resolution (spec §4.6: redaction matters more than the label).
 */
export type PiiType = IdType | 'NATIONAL_ID';

/** Confidence tier (spec §4.5): high ≥ 0.85, medium 0.60–0.85, low < 0.60. */
export type Tier = 'high' | 'medium' | 'low';

/** Validation class (spec §4.5 table rows). */
export type ValidationClass = 'strong' | 'check-structure' | 'single-check' | 'structure' | 'context-only';

/** Static facts about one type used by the scorer. */
export interface TypeInfo {
  /** ISO 3166-1 alpha-2 country, or null for international types. */
  readonly country: string | null;
  readonly cls: ValidationClass;
  /** Score of a validated candidate before context (spec §4.5). */
  readonly base: number;
  /** What a successful validation proves, used in the `rule` string (never the value). */
  readonly evidence: string;
}

/** Per-type facts; base scores are the starting points of spec §4.5. */
export const TYPE_INFO: Readonly<Record<IdType, TypeInfo>> = {
  MY_NRIC: { country: 'MY', cls: 'structure', base: 0.45, evidence: 'date+birthplace' },
  SG_NRIC_FIN: { country: 'SG', cls: 'strong', base: 0.9, evidence: 'prefix+check-letter' },
  ID_NIK: { country: 'ID', cls: 'structure', base: 0.45, evidence: 'province+date' },
  TH_NATIONAL_ID: { country: 'TH', cls: 'single-check', base: 0.65, evidence: 'category+mod11' },
  VN_CCCD: { country: 'VN', cls: 'structure', base: 0.4, evidence: 'province+century+year' },
  PH_PSN: { country: 'PH', cls: 'context-only', base: 0.3, evidence: 'length' },
  SA_NATIONAL_ID: { country: 'SA', cls: 'single-check', base: 0.65, evidence: 'prefix+luhn' },
  SA_IQAMA: { country: 'SA', cls: 'single-check', base: 0.65, evidence: 'prefix+luhn' },
  AE_EMIRATES_ID: { country: 'AE', cls: 'strong', base: 0.9, evidence: '784+luhn' },
  QA_QID: { country: 'QA', cls: 'structure', base: 0.4, evidence: 'century+year+nationality' },
  EG_NATIONAL_ID: { country: 'EG', cls: 'structure', base: 0.45, evidence: 'century+date+governorate' },
  KE_NATIONAL_ID: { country: 'KE', cls: 'context-only', base: 0.3, evidence: 'length' },
  KE_KRA_PIN: { country: 'KE', cls: 'check-structure', base: 0.7, evidence: 'layout' },
  NG_NIN: { country: 'NG', cls: 'context-only', base: 0.3, evidence: 'length' },
  NG_BVN: { country: 'NG', cls: 'context-only', base: 0.3, evidence: 'length' },
  ZA_ID: { country: 'ZA', cls: 'check-structure', base: 0.75, evidence: 'date+status+luhn' },
  ET_FAYDA_FIN: { country: 'ET', cls: 'context-only', base: 0.3, evidence: 'length' },
  PK_CNIC: { country: 'PK', cls: 'structure', base: 0.4, evidence: 'province' },
  IN_AADHAAR: { country: 'IN', cls: 'single-check', base: 0.6, evidence: 'verhoeff' },
  IN_PAN: { country: 'IN', cls: 'check-structure', base: 0.7, evidence: 'layout+holder-type' },
  BD_NID: { country: 'BD', cls: 'structure', base: 0.4, evidence: 'structure' },
  KZ_IIN: { country: 'KZ', cls: 'check-structure', base: 0.75, evidence: 'date+century+mod11' },
  TR_TCKN: { country: 'TR', cls: 'strong', base: 0.85, evidence: 'two-checks' },
  CN_RIC: { country: 'CN', cls: 'strong', base: 0.95, evidence: 'province+date+mod11-2' },
  BR_CPF: { country: 'BR', cls: 'strong', base: 0.85, evidence: 'two-mod11' },
  BR_CNPJ: { country: 'BR', cls: 'strong', base: 0.9, evidence: 'two-mod11' },
  MX_CURP: { country: 'MX', cls: 'strong', base: 0.95, evidence: 'date+state+mod10' },
  IBAN: { country: null, cls: 'strong', base: 0.95, evidence: 'country+bban+mod97' },
  PAYMENT_CARD: { country: null, cls: 'check-structure', base: 0.75, evidence: 'range+luhn' },
  EMAIL: { country: null, cls: 'strong', base: 0.95, evidence: 'syntax' },
};

/** Base score of a 10-digit Bangladesh smart-card NID: context-only (spec §4.5, last row). */
export const BD_NID_10_BASE = 0.3;

/** Tier thresholds (spec §4.5). */
export const HIGH_THRESHOLD = 0.85;
export const MEDIUM_THRESHOLD = 0.6;

/** True when `s` is one of the 30 type keys. */
export function isIdType(s: string): s is IdType {
  return (PII_TYPES as readonly string[]).includes(s);
}
