/**
 * Scoring (spec §4.5): base score of the type's validation class, + a distance-weighted context
 * boost, + a bonus for a distinctive separator layout, − a penalty when a negative word is
 * closer than any keyword of the type (or a near negative word — a technical timestamp label such
 * as `created`, `ts`, `exp` — right next to a number that has no keyword of its type), − a penalty
 * for a context-only number that is a valid phone number with no keyword right before it. Tiers:
 * high ≥ 0.85, medium ≥ 0.60, low below.
 *
 * Refinements made in detect.ts while testing multi-sentence prompts: words after the number only
 * count within its sentence and line, negative words before it only within its sentence, and a
 * keyword before the number is outweighed only by a closer negative word before it (labels
 * precede values: in `NIN 123… Call 0803…` the `Call` belongs to the next clause).
 */
import { HIGH_THRESHOLD, MEDIUM_THRESHOLD, type Tier } from './types.ts';

/** Scoring constants (spec §4.5 starting points). */
export const SCORE = Object.freeze({
  /** Context window before the candidate (UTF-16 units between keyword end and candidate start). */
  windowBefore: 40,
  /** Context window after the candidate. */
  windowAfter: 20,
  /** Boost for a keyword right before the candidate; falls linearly to `boostBeforeFar` at 40. */
  boostBeforeNear: 0.35,
  boostBeforeFar: 0.3,
  /** Boost for a keyword right after the candidate; falls linearly to `boostAfterFar` at 20. */
  boostAfterNear: 0.33,
  boostAfterFar: 0.3,
  /** Distinctive layout (MyKad 6-2-4, CNIC 5-7-1). */
  layout: 0.2,
  /** Negative word closer than any keyword of the type (or a near negative word; see nearNegativeReach). */
  negative: 0.35,
  /**
   * Reach of a near negative word (context.ts DEFAULT_NEGATIVE_NEAR), in UTF-16 units between the
   * word and the number: `"created": 1764412800` is 3, `Date.now() returned …` 12.
   */
  nearNegativeReach: 12,
  /** Context-only number that parses as a valid phone number of the type's country. */
  phone: 0.2,
  /** A keyword this close before the candidate outweighs the phone-number reading. */
  phoneKeywordShield: 12,
  /** Base of a Luhn-valid number outside the card range table, with card context only. */
  unknownCardRange: 0.35,
  /** Base of a checksum-failed candidate with type context (strict mode only). */
  checksumFailed: 0.3,
  /** Highest score of a checksum-failed candidate (keeps it in the low tier). */
  checksumFailedCap: 0.55,
  /** Base of an IBAN of a country outside the SWIFT registry. */
  unregisteredIban: 0.85,
});

/** Context boost for a keyword at `distance` units before (or after) the candidate; 0 if out of range. */
export function contextBoost(distance: number, before: boolean): number {
  if (before) {
    if (distance > SCORE.windowBefore) return 0;
    return SCORE.boostBeforeNear - ((SCORE.boostBeforeNear - SCORE.boostBeforeFar) * distance) / SCORE.windowBefore;
  }
  if (distance > SCORE.windowAfter) return 0;
  return SCORE.boostAfterNear - ((SCORE.boostAfterNear - SCORE.boostAfterFar) * distance) / SCORE.windowAfter;
}

/** Confidence tier of a score (spec §4.5). */
export function tierOf(score: number): Tier {
  return score >= HIGH_THRESHOLD - 1e-9 ? 'high' : score >= MEDIUM_THRESHOLD - 1e-9 ? 'medium' : 'low';
}

/** Score clamped to [0, 1] and rounded to 3 decimals. */
export function clampScore(score: number): number {
  return Math.round(Math.min(1, Math.max(0, score)) * 1000) / 1000;
}
