/**
 * Candidate scan (spec §3.2, §4.3) over the digit-normalised text.
 *
 * Boundary rule (spec §3.2): a candidate is never preceded or followed by an ASCII letter or
 * digit; other scripts do not count, so `身份证号是110105…` and Thai text glued to numbers are
 * found while a digit run inside `1Z9A45E2031245781` is not.
 *
 * Numeric types are found by ONE combined scan: a regex finds each maximal run of digit groups
 * joined by single spaces or hyphens (linear: greedy, no trailing look-ahead, so no backtracking),
 * then every contiguous sub-sequence of groups that uses one separator throughout is matched
 * against the per-type layouts below, which are the patterns of spec §3.2:
 *
 * | type | spec pattern | layout here |
 * |---|---|---|
 * | MY_NRIC | `\d{6}([- ]?)\d{2}\1\d{4}` | 12 · 6-2-4 (`-` or ` `) |
 * | ID_NIK | `\d{16}` | 16 |
 * | TH_NATIONAL_ID | `[1-8]([- ]?)\d{4}\1\d{5}\1\d{2}\1\d` | 13 · 1-4-5-2-1 |
 * | VN_CCCD | `0\d{11}` | 12 (leading 0 checked by the validator) |
 * | PH_PSN, ET_FAYDA_FIN | `\d{4}([- ]?)\d{4}\1\d{4}` | 12 · 4-4-4 |
 * | SA_NATIONAL_ID, SA_IQAMA | `1\d{9}`, `2\d{9}` | 10 |
 * | AE_EMIRATES_ID | `784([- ]?)\d{4}\1\d{7}\1\d` | 15 · 3-4-7-1 starting 784 |
 * | QA_QID | `[23]\d{10}` | 11 |
 * | EG_NATIONAL_ID | `[23]\d{13}` | 14 |
 * | KE_NATIONAL_ID | `\d{7,8}` | 7, 8 |
 * | NG_NIN, NG_BVN | `\d{11}\|\d{4} \d{3} \d{4}` | 11 · 4-3-4 (space) |
 * | ZA_ID | `\d{6}( ?)\d{4}\1\d{3}` | 13 · 6-4-3 (space) |
 * | PK_CNIC | `[1-7]\d{4}-\d{7}-\d\|[1-7]\d{12}` | 13 · 5-7-1 (hyphen) |
 * | IN_AADHAAR | `[2-9]\d{3}([ -]?)\d{4}\1\d{4}` | 12 · 4-4-4 |
 * | BD_NID | `\d{17}\|\d{13}\|\d{10}` | 10, 13, 17 |
 * | KZ_IIN, TR_TCKN | `\d{12}`, `[1-9]\d{10}` | 12, 11 |
 * | CN_RIC | `\d{17}[\dXx]` | 18 (last may be X) |
 * | BR_CPF (compact), BR_CNPJ (numeric compact) | `\d{11}`, `\d{14}` | 11, 14 |
 * | PAYMENT_CARD | `\d(?:[ -]?\d){12,18}` + consistent groups | 13–19 · 4-4-4-4(-1..4), 4-6-5, 4-6-4 |
 *
 * Prefixes, dates and check digits are the validators' job. Fixed multi-group layouts must be
 * the whole same-separator sequence (a 4-4-4 inside 4-4-4-4 is not a 12-digit number); card
 * numbers may be a sub-sequence (spec §3.2: retry shorter runs at group boundaries).
 *
 * Alphanumeric types (SG_NRIC_FIN, KE_KRA_PIN, IN_PAN, MX_CURP, BR_CNPJ formatted or with
 * letters, formatted BR_CPF, IBAN) use their own precompiled regexes — the spec §3.2 patterns,
 * flags `g`, `i` where the spec says so — run only on windows of ±46 characters around digit runs
 * (every one of these identifiers contains digits), so text without numbers is never scanned by
 * them. Their boundary look-behind is checked in code so V8 can scan for the first character
 * quickly. IBAN matches are cut to the country's length (ibantools specifications); emails are
 * expanded around each `@`.
 */
import type { IdType } from './types.ts';
import { ibanLength } from './validators/iban.ts';

/** One candidate: offsets into the normalised text, end exclusive. */
export interface Candidate {
  type: IdType;
  start: number;
  end: number;
  /** The candidate with its separators removed (ASCII digits; letters as written). */
  compact: string;
  /** A distinctive separator layout of the type was used (MyKad 6-2-4, CNIC 5-7-1; spec §4.5). */
  layout: boolean;
}

/** Candidate types of a compact all-digit run, by length (index = number of digits). */
const BY_LENGTH: ReadonlyArray<readonly IdType[]> = (() => {
  const t: IdType[][] = Array.from({ length: 20 }, () => []);
  t[7] = ['KE_NATIONAL_ID'];
  t[8] = ['KE_NATIONAL_ID'];
  t[10] = ['SA_NATIONAL_ID', 'SA_IQAMA', 'BD_NID'];
  t[11] = ['TR_TCKN', 'BR_CPF', 'QA_QID', 'NG_NIN', 'NG_BVN'];
  t[12] = ['MY_NRIC', 'VN_CCCD', 'KZ_IIN', 'IN_AADHAAR', 'PH_PSN', 'ET_FAYDA_FIN'];
  t[13] = ['TH_NATIONAL_ID', 'ZA_ID', 'PK_CNIC', 'BD_NID', 'PAYMENT_CARD'];
  t[14] = ['BR_CNPJ', 'EG_NATIONAL_ID', 'PAYMENT_CARD'];
  t[15] = ['AE_EMIRATES_ID', 'PAYMENT_CARD'];
  t[16] = ['ID_NIK', 'PAYMENT_CARD'];
  t[17] = ['BD_NID', 'PAYMENT_CARD'];
  t[18] = ['CN_RIC', 'PAYMENT_CARD'];
  t[19] = ['PAYMENT_CARD'];
  return t;
})();

interface Layout {
  readonly groups: readonly number[];
  readonly seps: string; // allowed separator characters
  readonly types: readonly IdType[];
  readonly distinctive: boolean;
  readonly prefix?: string;
}

/** Multi-group layouts of spec §3.2 (see the module table). */
const LAYOUTS: readonly Layout[] = [
  { groups: [6, 2, 4], seps: '- ', types: ['MY_NRIC'], distinctive: true },
  { groups: [1, 4, 5, 2, 1], seps: '- ', types: ['TH_NATIONAL_ID'], distinctive: false },
  { groups: [4, 4, 4], seps: '- ', types: ['IN_AADHAAR', 'PH_PSN', 'ET_FAYDA_FIN'], distinctive: false },
  { groups: [3, 4, 7, 1], seps: '- ', types: ['AE_EMIRATES_ID'], distinctive: false, prefix: '784' },
  { groups: [4, 3, 4], seps: ' ', types: ['NG_NIN', 'NG_BVN'], distinctive: false },
  { groups: [6, 4, 3], seps: ' ', types: ['ZA_ID'], distinctive: false },
  { groups: [5, 7, 1], seps: '-', types: ['PK_CNIC'], distinctive: true },
];

/** Layouts indexed by number of groups, for a quick reject. */
const LAYOUTS_BY_COUNT: ReadonlyArray<readonly Layout[]> = (() => {
  const t: Layout[][] = Array.from({ length: 8 }, () => []);
  for (const l of LAYOUTS) t[l.groups.length]!.push(l);
  return t;
})();

/** Card grouping: all groups of 4 except a last of 1–4, or Amex/Diners 4-6-5 / 4-6-4. */
function isCardGrouping(lens: readonly number[], i: number, j: number): boolean {
  const k = j - i + 1;
  if (k === 3 && lens[i] === 4 && lens[i + 1] === 6 && (lens[i + 2] === 5 || lens[i + 2] === 4)) return true;
  for (let g = i; g < j; g++) if (lens[g] !== 4) return false;
  const last = lens[j]!;
  return last >= 1 && last <= 4;
}

function isAsciiAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/** Numeric run: digit groups joined by single spaces/hyphens, optional trailing X (CN_RIC). */
const NUM_RUN = /\d+(?:[ -]\d+)*[Xx]?/g;

/** Scratch arrays reused across runs (no per-run allocation in the common case). */
const gStart: number[] = [];
const gEnd: number[] = [];
const gLen: number[] = [];
const gSep: number[] = []; // separator char code AFTER group g

function pushCandidate(out: Candidate[], enabled: ReadonlySet<IdType>, type: IdType, start: number, end: number, compact: string, layout: boolean): void {
  if (enabled.has(type)) out.push({ type, start, end, compact, layout });
}

/** Reports the candidates of one numeric run `t[s, e)` (already maximal). */
function scanRun(t: string, s: number, e: number, enabled: ReadonlySet<IdType>, wantCard: boolean, out: Candidate[]): void {
  // Split into groups.
  let n = 0;
  let hasX = false;
  let gs = s;
  for (let p = s; p <= e; p++) {
    const c = p < e ? t.charCodeAt(p) : -1;
    if (c === 32 || c === 45 || c === -1) {
      gStart[n] = gs;
      gEnd[n] = p;
      gLen[n] = p - gs;
      gSep[n] = c;
      n++;
      gs = p + 1;
    }
  }
  const lastEnd = gEnd[n - 1]!;
  if (t.charCodeAt(lastEnd - 1) === 88 || t.charCodeAt(lastEnd - 1) === 120) {
    hasX = true;
  }
  // Boundary rule: a first group glued to a preceding ASCII letter/digit, or a last group glued
  // to a following one, is not part of any candidate.
  let first = 0;
  let last = n - 1;
  if (s > 0 && isAsciiAlnum(t.charCodeAt(s - 1))) first = 1;
  if (e < t.length && isAsciiAlnum(t.charCodeAt(e))) last = n - 2;
  if (first > last) return;

  for (let i = first; i <= last; i++) {
    let digits = 0;
    let sep = -1;
    for (let j = i; j <= last; j++) {
      if (j > i) {
        const sj = gSep[j - 1]!;
        if (sep === -1) sep = sj;
        else if (sj !== sep) break;
      }
      const xHere = hasX && j === n - 1;
      digits += gLen[j]! - (xHere ? 1 : 0);
      if (digits > 19) break;
      const k = j - i + 1;
      if (k === 1) {
        // Compact single group.
        if (xHere) {
          if (digits === 17) pushCandidate(out, enabled, 'CN_RIC', gStart[i]!, gEnd[i]!, t.slice(gStart[i]!, gEnd[i]!), false);
          continue;
        }
        if (digits < 7) continue;
        const types = BY_LENGTH[digits]!;
        if (types.length === 0) continue;
        const compact = t.slice(gStart[i]!, gEnd[i]!);
        for (const ty of types) {
          if (ty === 'PAYMENT_CARD' && !wantCard) continue;
          pushCandidate(out, enabled, ty, gStart[i]!, gEnd[i]!, compact, false);
        }
        continue;
      }
      if (xHere) break;
      if (digits < 11) continue;
      // Fixed layouts: must be the whole same-separator sequence.
      const maximal = (i === first || gSep[i - 1] !== sep) && (j === last || gSep[j] !== sep);
      const sepCh = String.fromCharCode(sep);
      let compact: string | null = null;
      if (maximal && k < LAYOUTS_BY_COUNT.length) {
        for (const l of LAYOUTS_BY_COUNT[k]!) {
          if (!l.seps.includes(sepCh)) continue;
          let ok = true;
          for (let g = 0; g < k; g++) {
            if (gLen[i + g] !== l.groups[g]) {
              ok = false;
              break;
            }
          }
          if (!ok) continue;
          if (l.prefix && !t.startsWith(l.prefix, gStart[i]!)) continue;
          compact ??= joinGroups(t, i, j);
          for (const ty of l.types) pushCandidate(out, enabled, ty, gStart[i]!, gEnd[j]!, compact, l.distinctive);
        }
      }
      if (wantCard && digits >= 13 && isCardGrouping(gLen, i, j)) {
        compact ??= joinGroups(t, i, j);
        pushCandidate(out, enabled, 'PAYMENT_CARD', gStart[i]!, gEnd[j]!, compact, false);
      }
    }
  }
}

function joinGroups(t: string, i: number, j: number): string {
  let s = '';
  for (let g = i; g <= j; g++) s += t.slice(gStart[g]!, gEnd[g]!);
  return s;
}

/** Alphanumeric patterns of spec §3.2 (boundary checked in code). */
const SG_RE = /[STFGM]\d{7}[A-Z](?![0-9A-Za-z])/gi;
const KRA_RE = /[AP]\d{9}[A-Z](?![0-9A-Za-z])/gi;
const PAN_RE = /[A-Z]{3}[ABCFGHJLPTK][A-Z]\d{4}[A-Z](?![0-9A-Za-z])/g;
const CURP_RE = /[A-Z][AEIOUX][A-Z]{2}\d{6}[HMX][A-Z]{5}[0-9A-Z]\d(?![0-9A-Za-z])/gi;
const CNPJ_FMT_RE = /[0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{3}\/[0-9A-Z]{4}-\d{2}(?![0-9A-Za-z])/g;
/**
 * Compact CNPJ with at least one letter (all-digit ones come from the numeric scan). The leading
 * look-behind makes positions inside digit runs fail on their first character.
 */
const CNPJ_ALNUM_RE = /(?<![0-9A-Za-z])(?=\d{0,11}[A-Z])[0-9A-Z]{12}\d{2}(?![0-9A-Za-z])/g;
const CPF_RE = /\d{3}\.\d{3}\.\d{3}-\d{2}(?![0-9A-Za-z])/g;
const IBAN_RE = /[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}/g;

interface AlnumPattern {
  readonly type: IdType;
  readonly re: RegExp;
  readonly strip: RegExp | null;
  /** A character the window must contain for the pattern to match at all. */
  readonly requires: string | null;
}

const ALNUM: readonly AlnumPattern[] = [
  { type: 'SG_NRIC_FIN', re: SG_RE, strip: null, requires: null },
  { type: 'KE_KRA_PIN', re: KRA_RE, strip: null, requires: null },
  { type: 'IN_PAN', re: PAN_RE, strip: null, requires: null },
  { type: 'MX_CURP', re: CURP_RE, strip: null, requires: null },
  { type: 'BR_CNPJ', re: CNPJ_FMT_RE, strip: /[./-]/g, requires: '/' },
  { type: 'BR_CNPJ', re: CNPJ_ALNUM_RE, strip: null, requires: null },
  { type: 'BR_CPF', re: CPF_RE, strip: /[.-]/g, requires: '.' },
];

function scanAlnum(t: string, w: string, off: number, p: AlnumPattern, out: Candidate[]): void {
  if (p.requires !== null && w.indexOf(p.requires) < 0) return;
  const re = p.re;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(w)) !== null) {
    const s = off + m.index;
    if (s > 0 && isAsciiAlnum(t.charCodeAt(s - 1))) {
      re.lastIndex = m.index + 1;
      continue;
    }
    const raw = m[0];
    out.push({ type: p.type, start: s, end: s + raw.length, compact: p.strip ? raw.replace(p.strip, '') : raw, layout: false });
  }
}

function scanIban(t: string, w: string, off: number, out: Candidate[]): void {
  const re = IBAN_RE;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(w)) !== null) {
    const s = off + m.index;
    if (s > 0 && isAsciiAlnum(t.charCodeAt(s - 1))) {
      re.lastIndex = m.index + 1;
      continue;
    }
    const want = ibanLength(t.slice(s, s + 2));
    if (want === 0) {
      re.lastIndex = m.index + 1;
      continue;
    }
    // Count characters up to the country's length; single spaces allowed between them.
    let count = 0;
    let p = s;
    let compact = '';
    const end = s + m[0].length;
    while (p < end && count < want) {
      const c = t.charCodeAt(p);
      if (c !== 32) {
        compact += t[p];
        count++;
      }
      p++;
    }
    if (count === want && (p >= t.length || !isAsciiAlnum(t.charCodeAt(p)))) {
      out.push({ type: 'IBAN', start: s, end: p, compact, layout: false });
      re.lastIndex = p - off;
    } else {
      re.lastIndex = m.index + 1;
    }
  }
}

const EMAIL_AT_RE = /^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+/;

function isLocalChar(c: number): boolean {
  return isAsciiAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45;
}
function isDomainChar(c: number): boolean {
  return isAsciiAlnum(c) || c === 46 || c === 45;
}

/**
 * Emails around each `@` (spec §3.2 pattern `[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+`,
 * trailing dots stripped, not followed by `_`).
 */
function scanEmails(t: string, out: Candidate[]): void {
  let at = t.indexOf('@');
  while (at >= 0) {
    let s = at;
    while (s > 0 && isLocalChar(t.charCodeAt(s - 1)) && at - s < 64) s--;
    let e = at + 1;
    while (e < t.length && isDomainChar(t.charCodeAt(e)) && e - at < 256) e++;
    while (e > at + 1 && t.charCodeAt(e - 1) === 46) e--; // trailing dots are punctuation
    const next = e < t.length ? t.charCodeAt(e) : -1;
    if (s < at && e > at + 1 && next !== 95 /* _ */ && next !== 64) {
      const m = EMAIL_AT_RE.exec(t.slice(s, e));
      if (m && m[0].length === e - s) out.push({ type: 'EMAIL', start: s, end: e, compact: m[0], layout: false });
    }
    at = t.indexOf('@', at + 1);
  }
}

/** Characters around a digit run that the alphanumeric scan looks at (longest IBAN + spaces). */
const ALNUM_PAD = 46;

/**
 * Scans the normalised text `t` for candidates of the `enabled` types and appends them to `out`
 * (unordered; a span may be a candidate for several types). Linear in the text length: the
 * numeric scan is one regex pass; the alphanumeric patterns (which all contain digits) run only
 * on merged windows of ±46 characters around digit runs, snapped outwards to token boundaries so
 * a window never cuts a candidate; emails are expanded around each `@`.
 * `checkDeadline` is called between stages and every 1024 runs.
 */
export function scanCandidates(t: string, enabled: ReadonlySet<IdType>, out: Candidate[], checkDeadline: () => void): void {
  const wantCard = enabled.has('PAYMENT_CARD');
  const alnum = ALNUM.filter((p) => enabled.has(p.type));
  const wantIban = enabled.has('IBAN');
  const wantAlnum = alnum.length > 0 || wantIban;
  const re = NUM_RUN;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  let count = 0;
  let ws = -1;
  let we = -1;
  const n = t.length;
  while ((m = re.exec(t)) !== null) {
    const s = m.index;
    const len = m[0].length;
    const e = s + len;
    if (len >= 7) scanRun(t, s, e, enabled, wantCard, out);
    if (wantAlnum && len >= 2) {
      let a = Math.max(0, s - ALNUM_PAD);
      if (a > we) {
        if (ws >= 0) scanAlnumWindow(t, ws, we, alnum, wantIban, out);
        while (a > 0 && isAsciiAlnum(t.charCodeAt(a - 1))) a--;
        ws = a;
      }
      let b = Math.min(n, e + ALNUM_PAD);
      while (b < n && isAsciiAlnum(t.charCodeAt(b))) b++;
      if (b > we) we = b;
    }
    if ((++count & 1023) === 0) checkDeadline();
  }
  if (ws >= 0) scanAlnumWindow(t, ws, we, alnum, wantIban, out);
  checkDeadline();
  if (enabled.has('EMAIL')) scanEmails(t, out);
}

function scanAlnumWindow(t: string, ws: number, we: number, alnum: readonly AlnumPattern[], wantIban: boolean, out: Candidate[]): void {
  const w = t.slice(ws, we);
  for (const p of alnum) scanAlnum(t, w, ws, p, out);
  if (wantIban) scanIban(t, w, ws, out);
}
