/**
 * Singapore NRIC / FIN (`@1234567#`). Own validator (no library covers it; spec §2.2).
 * Check letter: digits × 2,7,6,5,4,3,2, +4 for T/G, +3 for M, mod 11, looked up in
 * `JZIHGFEDCBA` (S/T), `XWUTRQPNMLK` (F/G) or `XWUTRQPNJLK` (M, community-derived) — spec §3.1.
 */
import { invalid, VALID, type ValidationResult } from './common.ts';

const WEIGHTS = [2, 7, 6, 5, 4, 3, 2];
const TABLE_ST = 'JZIHGFEDCBA';
const TABLE_FG = 'XWUTRQPNMLK';
const TABLE_M = 'XWUTRQPNJLK';

/** Validates a compact 9-character NRIC/FIN (case-insensitive). */
export function validateSgNricFin(raw: string): ValidationResult {
  if (raw.length !== 9) return invalid('length');
  const c = raw.toUpperCase();
  const prefix = c[0]!;
  let offset: number;
  let table: string;
  switch (prefix) {
    case 'S': offset = 0; table = TABLE_ST; break;
    case 'T': offset = 4; table = TABLE_ST; break;
    case 'F': offset = 0; table = TABLE_FG; break;
    case 'G': offset = 4; table = TABLE_FG; break;
    case 'M': offset = 3; table = TABLE_M; break;
    default: return invalid('prefix');
  }
  let sum = offset;
  for (let i = 0; i < 7; i++) {
    const d = c.charCodeAt(i + 1) - 48;
    if (d < 0 || d > 9) return invalid('format');
    sum += d * WEIGHTS[i]!;
  }
  const last = c.charCodeAt(8);
  if (last < 65 || last > 90) return invalid('format');
  return table[sum % 11] === c[8] ? VALID : invalid('checksum');
}
