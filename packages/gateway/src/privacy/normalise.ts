/**
 * Text normalisation for the detector (spec §4.2).
 *
 * 1. Every Unicode decimal digit (`\p{Nd}`: Arabic-Indic ٠–٩, Persian/Urdu ۰–۹, Bengali ০–৯,
 *    Thai ๐–๙, Devanagari ०–९, full-width ０–９ …) becomes the ASCII digit of the same value.
 *    BMP digits are one UTF-16 code unit, so offsets are unchanged.
 * 2. Optional hardening against deliberate evasion: zero-width characters (U+200B–U+200D,
 *    U+2060, U+FEFF) and soft hyphens (U+00AD) sitting inside an identifier-like run are removed.
 *    Removal (and the rare astral-plane digit, two code units) changes lengths, so an offset map
 *    back to the original is kept.
 *
 * Case is not changed (upper-casing happens inside validators only; spec §4.2).
 */

/** First non-ASCII decimal digit in the BMP (U+0660 ARABIC-INDIC DIGIT ZERO). */
const FIRST_NATIVE_DIGIT = 0x660;

/**
 * Digit value + 1 of each code point of one plane (BMP, plane 1) that is `\p{Nd}`; 0 otherwise.
 * Each plane is built lazily with one regex pass, the first time a character of it is looked up.
 */
const planes: Array<Int8Array | null> = [null, null];

function buildPlane(plane: number): Int8Array {
  const table = new Int8Array(0x10000);
  const chars: string[] = [];
  for (let c = plane * 0x10000; c < (plane + 1) * 0x10000; c++) {
    chars.push(c >= 0xd800 && c <= 0xdfff ? ' ' : String.fromCodePoint(c));
  }
  // Unicode digit blocks are runs of ten starting at zero; longer runs are several blocks.
  let prev = -2;
  let run = 0;
  for (const m of chars.join('').matchAll(/\p{Nd}/gu)) {
    const cp = m[0].codePointAt(0)!;
    run = cp === prev + 1 ? run + 1 : 0;
    table[cp & 0xffff] = (run % 10) + 1;
    prev = cp;
  }
  return table;
}

/** Decimal value of code point `cp` if it is `\p{Nd}` (BMP or plane 1), else −1. */
function digitValue(cp: number): number {
  const plane = cp >>> 16;
  if (plane > 1) return -1;
  const table = (planes[plane] ??= buildPlane(plane));
  return table[cp & 0xffff]! - 1;
}

/** Index of the first non-ASCII decimal digit (BMP or astral) at or after `from`, or −1. */
function firstNativeDigit(s: string, from: number): number {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < FIRST_NATIVE_DIGIT) continue;
    if (c >= 0xd800 && c <= 0xdbff) {
      if (digitValue(s.codePointAt(i)!) >= 0) return i;
      i++;
      continue;
    }
    if (digitValue(c) >= 0) return i;
  }
  return -1;
}

/**
 * Maps every non-ASCII Unicode decimal digit of `s` to its ASCII digit. Length is preserved
 * unless `s` contains astral-plane digits (each two code units become one). One pass over the
 * text; no allocation when there is nothing to map.
 */
export function normaliseDigits(s: string): string {
  let i = firstNativeDigit(s, 0);
  if (i < 0) return s;
  const parts: string[] = [];
  let last = 0;
  while (i >= 0) {
    const cp = s.codePointAt(i)!;
    parts.push(s.slice(last, i), String.fromCharCode(48 + digitValue(cp)));
    last = i + (cp > 0xffff ? 2 : 1);
    i = firstNativeDigit(s, last);
  }
  parts.push(s.slice(last));
  return parts.join('');
}

/** True when `s` contains a non-ASCII decimal digit. */
export function hasNativeDigits(s: string): boolean {
  return firstNativeDigit(s, 0) >= 0;
}

/** An invisible character between identifier characters: the only case worth remapping for. */
const INVISIBLE_IN_ID = /[0-9A-Za-z.\/ @_+-][\u00AD\u200B-\u200D\u2060\uFEFF]+[0-9A-Za-z.\/ @_+-]/;

/** Options of {@link normalise}. */
export interface NormaliseOptions {
  /** Remove zero-width characters and soft hyphens inside identifier-like runs (default true). */
  stripInvisible?: boolean;
}

/** Normalised copy of a text plus the way back to original offsets. */
export interface NormalisedText {
  /** The scan copy: ASCII digits, possibly with invisible characters removed. */
  readonly text: string;
  /** True when offsets differ from the original (invisibles removed or astral digits mapped). */
  readonly remapped: boolean;
  /**
   * Original UTF-16 offsets [start, end) of the normalised span [start, end) (end exclusive).
   * Removed characters inside the span are covered; ones just outside are not.
   */
  toOriginal(start: number, end: number): [number, number];
}

class IdentityText implements NormalisedText {
  readonly remapped = false;
  constructor(readonly text: string) {}
  toOriginal(start: number, end: number): [number, number] {
    return [start, end];
  }
}

class MappedText implements NormalisedText {
  readonly remapped = true;
  constructor(
    readonly text: string,
    private readonly startOf: Int32Array,
    private readonly endOf: Int32Array,
  ) {}
  toOriginal(start: number, end: number): [number, number] {
    if (end <= start) {
      const p = start < this.startOf.length ? this.startOf[start]! : (this.endOf[this.endOf.length - 1] ?? 0);
      return [p, p];
    }
    return [this.startOf[start]!, this.endOf[end - 1]!];
  }
}

/** ASCII letters/digits and the separators identifiers use: the context in which invisibles are dropped. */
function isIdChar(c: number): boolean {
  return (
    (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) ||
    c === 45 || c === 46 || c === 47 || c === 32 || c === 64 || c === 95 || c === 43
  );
}
function isAsciiAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}
function isInvisible(c: number): boolean {
  return c === 0xad || (c >= 0x200b && c <= 0x200d) || c === 0x2060 || c === 0xfeff;
}

/**
 * Normalises `text` for scanning (see module doc). Cost: one regex test per feature when the
 * text needs nothing (the common case), so plain ASCII text is returned as is.
 */
export function normalise(text: string, opts: NormaliseOptions = {}): NormalisedText {
  const digits = normaliseDigits(text);
  const strip = opts.stripInvisible !== false && INVISIBLE_IN_ID.test(digits);
  if (!strip && digits.length === text.length) return new IdentityText(digits);
  return buildMapped(text, strip);
}

function buildMapped(original: string, strip: boolean): NormalisedText {
  const n = original.length;
  const out: string[] = [];
  const startOf = new Int32Array(n + 1);
  const endOf = new Int32Array(n + 1);
  let k = 0;
  // First pass: digits to ASCII, one output unit per code point that is a digit.
  // Keep a parallel array of (orig start, orig end) per output unit.
  const units: number[] = [];
  const uStart: number[] = [];
  const uEnd: number[] = [];
  for (let i = 0; i < n; ) {
    const c = original.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const cp = original.codePointAt(i)!;
      const dv = digitValue(cp);
      if (dv >= 0) {
        units.push(48 + dv);
        uStart.push(i);
        uEnd.push(i + 2);
      } else {
        units.push(c, original.charCodeAt(i + 1));
        uStart.push(i, i);
        uEnd.push(i + 2, i + 2);
      }
      i += 2;
      continue;
    }
    const dv = c < FIRST_NATIVE_DIGIT ? -1 : digitValue(c);
    units.push(dv >= 0 ? 48 + dv : c);
    uStart.push(i);
    uEnd.push(i + 1);
    i++;
  }
  const m = units.length;
  for (let j = 0; j < m; j++) {
    const c = units[j]!;
    if (strip && isInvisible(c)) {
      let p = j - 1;
      while (p >= 0 && isInvisible(units[p]!)) p--;
      let q = j + 1;
      while (q < m && isInvisible(units[q]!)) q++;
      const a = p >= 0 ? units[p]! : -1;
      const b = q < m ? units[q]! : -1;
      if (a >= 0 && b >= 0 && isIdChar(a) && isIdChar(b) && (isAsciiAlnum(a) || isAsciiAlnum(b))) continue;
    }
    out.push(String.fromCharCode(c));
    startOf[k] = uStart[j]!;
    endOf[k] = uEnd[j]!;
    k++;
  }
  startOf[k] = n;
  endOf[k] = n;
  return new MappedText(out.join(''), startOf.subarray(0, k + 1), endOf.subarray(0, k + 1));
}
