/**
 * Email address. Adapter around `validator.isEmail` (RFC 5322-derived syntax, TLD required, no
 * underscores in the domain) plus the free-text rules of spec §3.2: an alphabetic top-level
 * domain of two or more letters, no leading, trailing or consecutive dots in the local part.
 */
import { isEmail } from './validator-lib.ts';
import { guardLib, invalid, VALID, type ValidationResult } from './common.ts';

const TLD_RE = /\.[A-Za-z]{2,63}$/;
const LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** Validates an email address as found in text (no display name, no quoted local part). */
export function validateEmail(s: string): ValidationResult {
  const at = s.lastIndexOf('@');
  if (at <= 0 || at !== s.indexOf('@') || s.length > 254) return invalid('format');
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  if (local.length > 64 || local.startsWith('.') || local.endsWith('.') || local.includes('..')) return invalid('format');
  if (!TLD_RE.test(domain)) return invalid('prefix');
  for (const label of domain.split('.')) if (!LABEL_RE.test(label)) return invalid('format');
  const ok = guardLib(
    () => isEmail(s, { allow_utf8_local_part: true, require_tld: true, allow_underscores: false, allow_display_name: false }),
    false,
  );
  return ok ? VALID : invalid('library');
}
