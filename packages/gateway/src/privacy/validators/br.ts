/**
 * Brazil CPF and CNPJ. Adapters around stdnum `BR.cpf` and `BR.cnpj` (two mod-11 check digits;
 * CNPJ characters valued ASCII − 48 so the July-2026 alphanumeric form works — Receita Federal
 * Nota Técnica 49/2024) plus the repeated-character rule stdnum misses (spec §2.4:
 * `111.111.111-11` and `00.000.000/0000-00` pass the arithmetic but are never issued).
 */
import { validate as stdnumCpf } from 'stdnum/lib/cjs/br/cpf.js';
import { validate as stdnumCnpj } from 'stdnum/lib/cjs/br/cnpj.js';
import { allSame, checkDigits, invalid, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact 11-digit CPF. */
export function validateBrCpf(c: string): ValidationResult {
  return checkDigits(c, 11) ?? viaStdnum(stdnumCpf, c);
}

const CNPJ_RE = /^[0-9A-Z]{12}[0-9]{2}$/;

/** Validates a compact 14-character CNPJ (numeric or alphanumeric, upper case). */
export function validateBrCnpj(c: string): ValidationResult {
  if (c.length !== 14) return invalid('length');
  if (!CNPJ_RE.test(c)) return invalid('format');
  if (allSame(c)) return invalid('repeated');
  return viaStdnum(stdnumCnpj, c);
}
