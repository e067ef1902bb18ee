/**
 * Kenya KRA PIN (`A#########X`, 11 characters). Adapter around stdnum `KE.pin` (layout only),
 * fixing its character class `[A|P]` (a leading `|` passes; spec §2.4): the first letter must be
 * A (individual) or P (non-individual). The final letter's algorithm is not published.
 */
import { validate as stdnumPin } from 'stdnum/lib/cjs/ke/pin.js';
import { invalid, type ValidationResult } from './common.ts';
import { viaStdnum } from './stdnum-adapter.ts';

/** Validates a compact KRA PIN (case-insensitive, as in the candidate pattern of spec §3.2). */
export function validateKeKraPin(raw: string): ValidationResult {
  if (raw.length !== 11) return invalid('length');
  const c = raw.toUpperCase();
  const p = c.charCodeAt(0);
  if (p !== 65 /* A */ && p !== 80 /* P */) return invalid('prefix');
  return viaStdnum(stdnumPin, c);
}
