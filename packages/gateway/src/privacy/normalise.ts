/**
 * Text normalisation for the detector (spec §4.2).
 *
 * 1. Every Unicode decimal digit (`\p{Nd}`: Arabic-Indic ٠–٩, Persian/Urdu ۰–۹, Bengali ০–৯,
 *    Thai ๐–๙, Devanagari ०–९, full-width ０–９ …) becomes the ASCII digit of the same value.
 *    BMP digits are one UTF-16 code unit, so offsets are unchanged.
 * 2. Look-alike separators and full-width characters become their ASCII form, one code unit for
 *    one, so offsets are unchanged (text pasted from PDFs, word processors, web pages and CJK input
 *    methods): no-break, narrow no-break, figure, thin and the other typographic spaces
 *    (U+00A0, U+2000–U+200A, U+202F, U+205F) and the ideographic space U+3000 → ` `; hyphens,
 *    dashes and minus signs (U+2010–U+2015, U+2212, U+FE58, U+FE63, U+FF0D) → `-`; full-width
 *    letters (U+FF21–FF3A, U+FF41–FF5A), the full-width `@ . / _ + %` and the small `﹫ ﹒`
 *    (U+FE6B, U+FE52) → ASCII (so full-width e-mails, IBANs, PANs and NRICs are found). Other full-width punctuation (`，：！？（）` …) is
 *    left alone.
 * 3. Hardening against deliberate evasion: invisible characters sitting inside an identifier-like
 *    run are removed — zero-width space/non-joiner/joiner (U+200B–U+200D), word joiner and the
 *    invisible operators (U+2060–U+2064), BOM (U+FEFF), soft hyphen (U+00AD), the bidi marks
 *    LRM/RLM/ALM (U+200E, U+200F, U+061C), bidi embeddings, overrides and isolates
 *    (U+202A–U+202E, U+2066–U+2069), the deprecated format characters U+206A–U+206F, the
 *    Mongolian vowel separator (U+180E), the combining grapheme joiner (U+034F), variation
 *    selectors (U+FE00–U+FE0F, U+E0100–U+E01EF) and tag characters (U+E0000–U+E007F). Removal
 *    (and the rare astral-plane digit, two code units) changes lengths, so an offset map back to
 *    the original is kept.
 *
 * Linear in the text length, including runs of invisible characters of any length (each run is
 * looked at once). Case is not changed (upper-casing happens inside validators only; spec §4.2).
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

/**
 * Length-preserving replacement of each BMP code unit that has an ASCII look-alike used in
 * identifiers (separators, full-width letters and `@ . / _ + %`; step 2 of the module doc); 0 when
 * the unit is kept as is. Digits are not in this table (see {@link digitValue}).
 */
const LOOKALIKE: Uint16Array = (() => {
  const t = new Uint16Array(0x10000);
  const set = (from: number, to: number, v: number): void => {
    for (let c = from; c <= to; c++) t[c] = v;
  };
  set(0x00a0, 0x00a0, 0x20);
  set(0x2000, 0x200a, 0x20);
  set(0x202f, 0x202f, 0x20);
  set(0x205f, 0x205f, 0x20);
  set(0x3000, 0x3000, 0x20);
  set(0x2010, 0x2015, 0x2d);
  set(0x2212, 0x2212, 0x2d);
  set(0xfe58, 0xfe58, 0x2d);
  set(0xfe63, 0xfe63, 0x2d);
  set(0xff0d, 0xff0d, 0x2d);
  for (let c = 0xff21; c <= 0xff3a; c++) t[c] = c - 0xff21 + 0x41;
  for (let c = 0xff41; c <= 0xff5a; c++) t[c] = c - 0xff41 + 0x61;
  t[0xff20] = 0x40; // ＠
  t[0xff0e] = 0x2e; // ．
  t[0xff0f] = 0x2f; // ／
  t[0xff3f] = 0x5f; // ＿
  t[0xff0b] = 0x2b; // ＋
  t[0xff05] = 0x25; // ％
  t[0xfe6b] = 0x40; // ﹫ small commercial at
  t[0xfe52] = 0x2e; // ﹒ small full stop
  return t;
})();

/** True for a BMP invisible character removed inside identifiers (module doc, step 3). */
function isInvisible(c: number): boolean {
  if (c < 0x2000) return c === 0xad || c === 0x34f || c === 0x61c || c === 0x180e;
  return (
    (c >= 0x200b && c <= 0x200f) ||
    (c >= 0x202a && c <= 0x202e) ||
    (c >= 0x2060 && c <= 0x2064) ||
    (c >= 0x2066 && c <= 0x206f) ||
    (c >= 0xfe00 && c <= 0xfe0f) ||
    c === 0xfeff
  );
}

/** True for an astral invisible character: tag characters and variation selectors supplement. */
function isAstralInvisible(cp: number): boolean {
  return (cp >= 0xe0000 && cp <= 0xe007f) || (cp >= 0xe0100 && cp <= 0xe01ef);
}

/** {@link KIND} value of an invisible character. */
const K_INVISIBLE = 0xffff;
/** {@link KIND} value of a high surrogate (astral digits and invisibles are looked up per code point). */
const K_HIGH = 0xfffe;

/**
 * What the first pass does with each BMP code unit, in one lookup: 0 keep; an ASCII code unit
 * (look-alike or decimal digit) replace; {@link K_INVISIBLE}; {@link K_HIGH}. Built on first use
 * (it needs the BMP digit table).
 */
let KIND: Uint16Array | null = null;

function buildKind(): Uint16Array {
  const k = LOOKALIKE.slice();
  for (let c = FIRST_NATIVE_DIGIT; c < 0x10000; c++) {
    if (c >= 0xd800 && c <= 0xdfff) continue;
    const dv = digitValue(c);
    if (dv >= 0) k[c] = 48 + dv;
  }
  for (let c = 0xa0; c < 0x10000; c++) if (isInvisible(c)) k[c] = K_INVISIBLE;
  for (let c = 0xd800; c <= 0xdbff; c++) k[c] = K_HIGH;
  return k;
}

/** Characters that may need work: everything from U+00A0 up (plain ASCII/Latin-1 controls need none). */
const MAYBE_WORK = /[\u00a0-\uffff]/;

/** Options of {@link normalise}. */
export interface NormaliseOptions {
  /** Remove invisible characters inside identifier-like runs (default true; module doc step 3). */
  stripInvisible?: boolean;
  /** Called every 64 Ki code units; throws to abandon the work (the detector's deadline). */
  checkDeadline?: () => void;
}

/** Normalised copy of a text plus the way back to original offsets. */
export interface NormalisedText {
  /** The scan copy: ASCII digits and separators, possibly with invisible characters removed. */
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

const CHECK_EVERY = 0xffff;
function noop(): void {}

/**
 * Maps the look-alike characters of `s` (module doc step 2) and its BMP digits to ASCII, one code
 * unit for one. Reports whether astral digits or invisible characters (which need the offset map
 * of {@link buildMapped}) are present. Linear; returns `s` itself when nothing changes.
 */
function mapSameLength(s: string, from: number, check: () => void): { text: string; needsMap: boolean } {
  const kind = (KIND ??= buildKind());
  const n = s.length;
  let parts: string[] | null = null;
  let last = 0;
  let needsMap = false;
  let next = from + CHECK_EVERY;
  for (let i = from; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xa0) continue;
    const r = kind[c]!;
    if (r === 0) continue;
    if (r >= K_HIGH) {
      if (i >= next) {
        check();
        next = i + CHECK_EVERY;
      }
      if (r === K_INVISIBLE) {
        needsMap = true;
        continue;
      }
      if (i + 1 < n) {
        const cp = s.codePointAt(i)!;
        if (cp > 0xffff) {
          if (digitValue(cp) >= 0 || isAstralInvisible(cp)) needsMap = true;
          i++;
        }
      }
      continue;
    }
    (parts ??= []).push(s.slice(last, i), String.fromCharCode(r));
    last = i + 1;
    if (i >= next) {
      check();
      next = i + CHECK_EVERY;
    }
  }
  if (!parts) return { text: s, needsMap };
  parts.push(s.slice(last));
  return { text: parts.join(''), needsMap };
}

/**
 * Normalises `text` for scanning (see module doc). Plain ASCII text is returned as is after one
 * regex test; otherwise one linear pass maps look-alikes and digits, and a second linear pass
 * (only when the text has astral digits or invisible characters) removes invisibles inside
 * identifiers and builds the offset map. `opts.checkDeadline` is called every 64 Ki code units.
 */
export function normalise(text: string, opts: NormaliseOptions = {}): NormalisedText {
  const first = text.search(MAYBE_WORK);
  if (first < 0) return new IdentityText(text);
  const check = opts.checkDeadline ?? noop;
  const { text: mapped, needsMap } = mapSameLength(text, first, check);
  if (!needsMap) return new IdentityText(mapped);
  return buildMapped(mapped, opts.stripInvisible !== false, check);
}

/** Code unit that `m[i]` becomes in the output (astral digits → ASCII digit), or −1 past the end. */
function outUnitAt(m: string, i: number): number {
  if (i >= m.length) return -1;
  const c = m.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < m.length) {
    const dv = digitValue(m.codePointAt(i)!);
    if (dv >= 0) return 48 + dv;
  }
  return c;
}

/** Width in code units of the invisible character at `m[i]`, or 0 when it is not one. */
function invisibleWidth(m: string, i: number): number {
  const c = m.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff) {
    if (i + 1 >= m.length) return 0;
    return isAstralInvisible(m.codePointAt(i)!) ? 2 : 0;
  }
  return isInvisible(c) ? 1 : 0;
}

/**
 * Second pass over the same-length mapped copy `m` (offsets of `m` = offsets of the original):
 * astral digits become one ASCII unit, and each maximal run of invisible characters is removed as
 * a whole when the characters around it are identifier characters, at least one of them an ASCII
 * letter or digit. Every unit and every run is visited once: linear.
 */
function buildMapped(m: string, strip: boolean, check: () => void): NormalisedText {
  const n = m.length;
  const out = new Uint16Array(n);
  const startOf = new Int32Array(n + 1);
  const endOf = new Int32Array(n + 1);
  let k = 0;
  let changed = false;
  let tick = 0;
  for (let i = 0; i < n; ) {
    if ((++tick & CHECK_EVERY) === 0) check();
    const c = m.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const cp = m.codePointAt(i)!;
      if (cp > 0xffff) {
        const dv = digitValue(cp);
        if (dv >= 0) {
          out[k] = 48 + dv;
          startOf[k] = i;
          endOf[k] = i + 2;
          k++;
          i += 2;
          changed = true;
          continue;
        }
        if (!isAstralInvisible(cp)) {
          out[k] = c;
          startOf[k] = i;
          endOf[k] = i + 2;
          k++;
          out[k] = m.charCodeAt(i + 1);
          startOf[k] = i;
          endOf[k] = i + 2;
          k++;
          i += 2;
          continue;
        }
      }
    }
    let w = invisibleWidth(m, i);
    if (w === 0) {
      out[k] = c;
      startOf[k] = i;
      endOf[k] = i + 1;
      k++;
      i++;
      continue;
    }
    // A maximal run of invisible characters [i, j): decided once, as a whole.
    let j = i;
    while (w > 0) {
      j += w;
      if ((++tick & CHECK_EVERY) === 0) check();
      w = j < n ? invisibleWidth(m, j) : 0;
    }
    if (strip) {
      const a = k > 0 ? out[k - 1]! : -1;
      const b = outUnitAt(m, j);
      if (a >= 0 && b >= 0 && isIdChar(a) && isIdChar(b) && (isAsciiAlnum(a) || isAsciiAlnum(b))) {
        changed = true;
        i = j;
        continue;
      }
    }
    for (let p = i; p < j; ) {
      const pw = invisibleWidth(m, p);
      for (let q = 0; q < pw; q++) {
        out[k] = m.charCodeAt(p + q);
        startOf[k] = p;
        endOf[k] = p + pw;
        k++;
      }
      p += pw;
    }
    i = j;
  }
  if (!changed) return new IdentityText(m);
  startOf[k] = n;
  endOf[k] = n;
  return new MappedText(unitsToString(out, k), startOf.subarray(0, k + 1), endOf.subarray(0, k + 1));
}

/** The first `len` UTF-16 units of `u` as a string (lone surrogates kept as they are). */
function unitsToString(u: Uint16Array, len: number): string {
  return Buffer.from(u.buffer, u.byteOffset, len * 2).toString('utf16le');
}
