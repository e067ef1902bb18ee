/**
 * Shared pieces of the per-type validators: result objects, the validation context (processing
 * date), date plausibility (spec §4.4 step 3) and the guard used around library calls.
 *
 * Validators never log, never throw and never put the value into a result.
 */

/** Why a value was rejected (diagnostics only; never the value itself). */
export type InvalidReason =
  | 'length'
  | 'format'
  | 'date'
  | 'checksum'
  | 'prefix'
  | 'region'
  | 'repeated'
  | 'library';

/** Outcome of one validator call. */
export interface ValidationResult {
  readonly valid: boolean;
  readonly reason?: InvalidReason;
}

/** The shared, frozen "valid" result (validators allocate nothing on the hot path). */
export const VALID: ValidationResult = Object.freeze({ valid: true });

const INVALID: Readonly<Record<InvalidReason, ValidationResult>> = Object.freeze({
  length: Object.freeze({ valid: false, reason: 'length' }),
  format: Object.freeze({ valid: false, reason: 'format' }),
  date: Object.freeze({ valid: false, reason: 'date' }),
  checksum: Object.freeze({ valid: false, reason: 'checksum' }),
  prefix: Object.freeze({ valid: false, reason: 'prefix' }),
  region: Object.freeze({ valid: false, reason: 'region' }),
  repeated: Object.freeze({ valid: false, reason: 'repeated' }),
  library: Object.freeze({ valid: false, reason: 'library' }),
});

/** The frozen invalid result for `reason`. */
export function invalid(reason: InvalidReason): ValidationResult {
  return INVALID[reason];
}

/**
 * Processing-date context for date plausibility.
 * `nowKey` is the UTC processing date as the number YYYYMMDD; `minBirthYear` the earliest
 * accepted birth year (spec §4.4: 1900 by default; the Kazakh IIN century codes allow 1800s).
 */
export interface ValidateContext {
  readonly nowKey: number;
  readonly nowYear: number;
  readonly minBirthYear: number;
}

/** Builds a {@link ValidateContext} for the processing date `now` (UTC calendar date). */
export function makeContext(now: Date = new Date(), minBirthYear = 1900): ValidateContext {
  const y = now.getUTCFullYear();
  return { nowKey: y * 10000 + (now.getUTCMonth() + 1) * 100 + now.getUTCDate(), nowYear: y, minBirthYear };
}

const DAYS_IN_MONTH = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** True when y-m-d is a real Gregorian calendar date (30 February fails). */
export function isCalendarDate(y: number, m: number, d: number): boolean {
  if (m < 1 || m > 12 || d < 1) return false;
  if (m === 2 && d === 29) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  return d <= DAYS_IN_MONTH[m]!;
}

/**
 * Birth-date plausibility (spec §4.4 step 3): a real calendar date, not after the processing
 * date and not before `ctx.minBirthYear`.
 */
export function plausibleBirthDate(y: number, m: number, d: number, ctx: ValidateContext): boolean {
  if (y < ctx.minBirthYear) return false;
  if (!isCalendarDate(y, m, d)) return false;
  return y * 10000 + m * 100 + d <= ctx.nowKey;
}

/**
 * Two-digit-year birth date with no century information (MyKad, NIK, South Africa; spec §4.4):
 * accepted when either 19YY or 20YY gives a plausible date.
 */
export function plausibleTwoDigitYearDate(yy: number, m: number, d: number, ctx: ValidateContext): boolean {
  return plausibleBirthDate(1900 + yy, m, d, ctx) || plausibleBirthDate(2000 + yy, m, d, ctx);
}

/** Value of the two ASCII digits of `s` at `i` (no validation; callers checked the format). */
export function num2(s: string, i: number): number {
  return (s.charCodeAt(i) - 48) * 10 + (s.charCodeAt(i + 1) - 48);
}

/** Value of the ASCII digits s[i..j) (no validation). */
export function numAt(s: string, i: number, j: number): number {
  let v = 0;
  for (let k = i; k < j; k++) v = v * 10 + (s.charCodeAt(k) - 48);
  return v;
}

/** True when every character of `s` is an ASCII digit (and `s` is not empty). */
export function isDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** True when all characters of `s` are the same (spec §4.4 step 5: never issued). */
export function allSame(s: string): boolean {
  const c = s.charCodeAt(0);
  for (let i = 1; i < s.length; i++) if (s.charCodeAt(i) !== c) return false;
  return true;
}

/** A digit string of exactly `len` digits that is not all-identical; else the reason. */
export function checkDigits(s: string, len: number): ValidationResult | null {
  if (s.length !== len) return INVALID.length;
  if (!isDigits(s)) return INVALID.format;
  if (allSame(s)) return INVALID.repeated;
  return null;
}

/**
 * Runs a library validator call fail-closed: a thrown error means invalid (spec §2.5), and the
 * Error objects libraries construct for rejections are built without stack traces (they are
 * discarded; capturing stacks would dominate the cost of the scan).
 */
export function guardLib<T>(fn: () => T, onThrow: T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return fn();
  } catch {
    return onThrow;
  } finally {
    Error.stackTraceLimit = limit;
  }
}
