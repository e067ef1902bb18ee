/**
 * Candidate scan (spec §3.2, §4.3) over the digit-normalised text.
 *
 * Boundary rule (spec §3.2): a candidate is never preceded or followed by an ASCII letter or
 * digit; other scripts do not count, so `身份证号是110105…` and Thai text glued to numbers are
 * found while a digit run inside `1Z9A45E2031245781` is not.
 *
 * Numeric types are found by ONE combined scan: each maximal run of digit groups joined by single
 * spaces or hyphens (`\d+(?:[ -]\d+)*[Xx]?`, extended by hand from each first digit so that one
 * huge run is interruptible by the deadline) is split into groups, then every contiguous
 * sub-sequence of groups that uses one separator throughout is matched against the per-type
 * layouts below, which are the patterns of spec §3.2:
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
 * numbers may be a sub-sequence (spec §3.2: retry shorter runs at group boundaries). Digit groups
 * that belong to a UUID (8-4-4-4-12 hex digits, e.g. the `426614174000` of
 * `123e4567-e89b-12d3-a456-426614174000`) are never part of a candidate.
 *
 * Alphanumeric types (SG_NRIC_FIN, KE_KRA_PIN, IN_PAN, MX_CURP, BR_CNPJ formatted or with
 * letters, formatted BR_CPF, IBAN) use their own precompiled regexes — the spec §3.2 patterns,
 * flags `g`, `i` where the spec says so — run only on windows of ±46 characters around digit runs
 * (every one of these identifiers contains digits), so text without numbers is never scanned by
 * them. Their boundary look-behind is checked in code so V8 can scan for the first character
 * quickly (except IBAN's, whose long optional tail would otherwise be matched at every position of
 * a long letters-and-digits token). IBANs are matched case-insensitively (the validator upper-cases)
 * and cut to the country's length (ibantools specifications). Windows are merged and each is
 * extended to token boundaries once, so one long letters-and-digits token (a hex dump) costs one
 * pass per pattern, not one per digit run in it.
 *
 * Emails are expanded around each `@`; an SCP-style remote (`git@github.com:owner/repo.git`) is
 * an SSH address, not an e-mail.
 *
 * Works on the scan copy of normalise.ts: digits, look-alike spaces and dashes and full-width
 * letters are already ASCII there.
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

/** Finds the first digit of the next numeric run (the run itself is extended by {@link runEnd}). */
const DIGIT = /\d/g;

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/**
 * End of the numeric run starting with the digit at `s`: the greedy match of
 * `\d+(?:[ -]\d+)*[Xx]?` (digit groups joined by single spaces/hyphens, optional trailing X for
 * CN_RIC). `checkDeadline` is called every 64 Ki characters of one run.
 */
function runEnd(t: string, s: number, checkDeadline: () => void): number {
  const n = t.length;
  let p = s;
  let next = s + 0x10000;
  for (;;) {
    while (p < n && isDigit(t.charCodeAt(p))) p++;
    if (p + 1 < n) {
      const c = t.charCodeAt(p);
      if ((c === 32 || c === 45) && isDigit(t.charCodeAt(p + 1))) {
        p += 2;
        if (p >= next) {
          checkDeadline();
          next = p + 0x10000;
        }
        continue;
      }
    }
    break;
  }
  if (p < n && (t.charCodeAt(p) | 0x20) === 120 /* x */) p++;
  return p;
}

/** Scratch arrays reused across runs (no per-run allocation in the common case). */
const gStart: number[] = [];
const gEnd: number[] = [];
const gLen: number[] = [];
const gSep: number[] = []; // separator char code AFTER group g
const gUuid: boolean[] = []; // group g lies inside a UUID

/** A UUID (RFC 9562: 8-4-4-4-12 hex digits), tested at one position (sticky). */
const UUID_AT = /[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}/y;
/** Length of a UUID, and where each of its groups starts. */
const UUID_LEN = 36;
const UUID_GROUP_AT: Readonly<Record<number, readonly number[]>> = { 8: [0], 4: [9, 14, 19], 12: [24] };

/** True when a UUID starts at `us`, with the scan's boundary rule (no ASCII letter/digit around). */
function uuidAt(t: string, us: number): boolean {
  if (us < 0 || us + UUID_LEN > t.length) return false;
  if (t.charCodeAt(us + 8) !== 45 || t.charCodeAt(us + 13) !== 45 || t.charCodeAt(us + 18) !== 45 || t.charCodeAt(us + 23) !== 45) return false;
  if ((us > 0 && isAsciiAlnum(t.charCodeAt(us - 1))) || (us + UUID_LEN < t.length && isAsciiAlnum(t.charCodeAt(us + UUID_LEN)))) return false;
  UUID_AT.lastIndex = us;
  return UUID_AT.test(t);
}

/**
 * Marks the groups (0…n−1, already split) that lie inside a UUID. A UUID group that is a whole
 * group of the run has 8, 4 or 12 digits and a hyphen next to it (hex groups with letters are not
 * digit groups, and a digit tail glued to a letter is excluded by the boundary rule anyway), so
 * only those groups are tried, each at its possible UUID starts: O(1) per group, exact.
 * Returns true when some group was marked.
 */
function markUuidGroups(t: string, n: number): boolean {
  let any = false;
  for (let g = 0; g < n; g++) {
    const starts = UUID_GROUP_AT[gLen[g]!];
    if (!starts || gUuid[g]) continue;
    const gs = gStart[g]!;
    if (t.charCodeAt(gEnd[g]!) !== 45 && t.charCodeAt(gs - 1) !== 45) continue;
    for (const off of starts) {
      const us = gs - off;
      if (!uuidAt(t, us)) continue;
      for (let k = g; k >= 0 && gStart[k]! >= us; k--) gUuid[k] = true;
      for (let k = g; k < n && gEnd[k]! <= us + UUID_LEN; k++) gUuid[k] = true;
      any = true;
      break;
    }
  }
  return any;
}

function pushCandidate(out: Candidate[], enabled: ReadonlySet<IdType>, type: IdType, start: number, end: number, compact: string, layout: boolean): void {
  if (enabled.has(type)) out.push({ type, start, end, compact, layout });
}

/**
 * Reports the candidates of one numeric run `t[s, e)` (already maximal). At most 19 digits make a
 * candidate, so each group starts O(1) sub-sequences: linear in the run. `checkDeadline` is called
 * every 4096 groups (one run can be the whole text: `4310 ` × 400k).
 */
function scanRun(
  t: string,
  s: number,
  e: number,
  enabled: ReadonlySet<IdType>,
  wantCard: boolean,
  out: Candidate[],
  checkDeadline: () => void,
): void {
  // Split into groups.
  let n = 0;
  let hasX = false;
  let hyphen = (s > 0 && t.charCodeAt(s - 1) === 45) || (e < t.length && t.charCodeAt(e) === 45);
  let gs = s;
  for (let p = s; p <= e; p++) {
    const c = p < e ? t.charCodeAt(p) : -1;
    if (c === 32 || c === 45 || c === -1) {
      gStart[n] = gs;
      gEnd[n] = p;
      gLen[n] = p - gs;
      gSep[n] = c;
      gUuid[n] = false;
      n++;
      gs = p + 1;
      if (c === 45) hyphen = true;
      if ((n & 4095) === 0) checkDeadline();
    }
  }
  // Groups of a UUID are no identifier (nor part of one).
  const uuid = hyphen && markUuidGroups(t, n);
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
    if ((i & 4095) === 4095) checkDeadline();
    if (uuid && gUuid[i]) continue;
    let digits = 0;
    let sep = -1;
    for (let j = i; j <= last; j++) {
      if (uuid && gUuid[j]) break;
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
/** IBAN: case-insensitive (validated upper-cased); boundary look-behind in the pattern (see module doc). */
const IBAN_RE = /(?<![0-9A-Za-z])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}/gi;

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

function scanAlnum(t: string, w: string, off: number, p: AlnumPattern, out: Candidate[], checkDeadline: () => void): void {
  if (p.requires !== null && w.indexOf(p.requires) < 0) return;
  const re = p.re;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  let matches = 0;
  while ((m = re.exec(w)) !== null) {
    if ((++matches & 1023) === 0) checkDeadline();
    const s = off + m.index;
    if (s > 0 && isAsciiAlnum(t.charCodeAt(s - 1))) {
      re.lastIndex = m.index + 1;
      continue;
    }
    const raw = m[0];
    out.push({ type: p.type, start: s, end: s + raw.length, compact: p.strip ? raw.replace(p.strip, '') : raw, layout: false });
  }
}

function scanIban(t: string, w: string, off: number, out: Candidate[], checkDeadline: () => void): void {
  const re = IBAN_RE;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  let matches = 0;
  while ((m = re.exec(w)) !== null) {
    if ((++matches & 1023) === 0) checkDeadline();
    const s = off + m.index;
    if (s > 0 && isAsciiAlnum(t.charCodeAt(s - 1))) {
      re.lastIndex = m.index + 1;
      continue;
    }
    const want = ibanLength(t.slice(s, s + 2).toUpperCase());
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
      out.push({ type: 'IBAN', start: s, end: p, compact: compact.toUpperCase(), layout: false });
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

/** Characters of the path of an SCP-style remote (`host:owner/repo.git`). */
function isPathChar(c: number): boolean {
  return isAsciiAlnum(c) || c === 46 || c === 95 || c === 45 || c === 126 || c === 47;
}

/**
 * True when `t[e]` starts the `:path` of an SCP-style SSH address (`git@github.com:owner/repo.git`,
 * `deploy@host:/srv/app`): a colon directly followed by a path that has a slash or ends in `.git`.
 * Looks at most 256 characters ahead.
 */
function scpPathAt(t: string, e: number): boolean {
  if (e >= t.length || t.charCodeAt(e) !== 58 /* : */) return false;
  let p = e + 1;
  let slash = false;
  const max = Math.min(t.length, p + 256);
  while (p < max && isPathChar(t.charCodeAt(p))) {
    if (t.charCodeAt(p) === 47) slash = true;
    p++;
  }
  if (p === e + 1) return false;
  return slash || t.endsWith('.git', p);
}

/**
 * Emails around each `@` (spec §3.2 pattern `[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+`,
 * trailing dots stripped, not followed by `_`, not an SCP-style remote). Each `@` is expanded over
 * at most 64 + 256 characters: linear. `checkDeadline` is called every 1024 `@`.
 */
function scanEmails(t: string, out: Candidate[], checkDeadline: () => void): void {
  let at = t.indexOf('@');
  let count = 0;
  while (at >= 0) {
    if ((++count & 1023) === 0) checkDeadline();
    let s = at;
    while (s > 0 && isLocalChar(t.charCodeAt(s - 1)) && at - s < 64) s--;
    let e = at + 1;
    while (e < t.length && isDomainChar(t.charCodeAt(e)) && e - at < 256) e++;
    while (e > at + 1 && t.charCodeAt(e - 1) === 46) e--; // trailing dots are punctuation
    const next = e < t.length ? t.charCodeAt(e) : -1;
    if (s < at && e > at + 1 && next !== 95 /* _ */ && next !== 64 && !scpPathAt(t, e)) {
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
 * numeric scan is one pass; the alphanumeric patterns (which all contain digits) run only
 * on merged windows of ±46 characters around digit runs, snapped outwards to token boundaries so
 * a window never cuts a candidate (each character is looked at by the snapping at most once, and
 * each window is scanned once per pattern); emails are expanded around each `@`.
 * `checkDeadline` is called between stages, every 256 runs, every 4096 groups and 64 Ki
 * characters of one run, every 64 Ki characters of window snapping, every 1024 `@` or IBAN-shaped
 * matches, and between the patterns of a large window.
 */
export function scanCandidates(t: string, enabled: ReadonlySet<IdType>, out: Candidate[], checkDeadline: () => void): void {
  const wantCard = enabled.has('PAYMENT_CARD');
  const alnum = ALNUM.filter((p) => enabled.has(p.type));
  const wantIban = enabled.has('IBAN');
  const wantAlnum = alnum.length > 0 || wantIban;
  const re = DIGIT;
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  let count = 0;
  let ws = -1;
  let we = -1;
  const n = t.length;
  while ((m = re.exec(t)) !== null) {
    const s = m.index;
    const e = runEnd(t, s, checkDeadline);
    const len = e - s;
    re.lastIndex = e;
    if (len >= 7) scanRun(t, s, e, enabled, wantCard, out, checkDeadline);
    if (wantAlnum && len >= 2) {
      let a = Math.max(0, s - ALNUM_PAD);
      if (a > we) {
        if (ws >= 0) scanAlnumWindow(t, ws, we, alnum, wantIban, out, checkDeadline);
        // `we` is a token boundary (or −1), so this never walks back over the previous window.
        while (a > 0 && isAsciiAlnum(t.charCodeAt(a - 1))) {
          a--;
          if ((a & 0xffff) === 0) checkDeadline();
        }
        ws = a;
      }
      // The window already reaches a token boundary at `we`: extend (and snap) only past it, so a
      // long token is walked once, not once per digit run inside it.
      let b = Math.min(n, e + ALNUM_PAD);
      if (b > we) {
        while (b < n && isAsciiAlnum(t.charCodeAt(b))) {
          b++;
          if ((b & 0xffff) === 0) checkDeadline();
        }
        we = b;
      }
    }
    if ((++count & 255) === 0) checkDeadline();
  }
  if (ws >= 0) scanAlnumWindow(t, ws, we, alnum, wantIban, out, checkDeadline);
  checkDeadline();
  if (enabled.has('EMAIL')) scanEmails(t, out, checkDeadline);
}

/** Size of a window above which the deadline is checked between its patterns. */
const BIG_WINDOW = 1 << 16;

function scanAlnumWindow(
  t: string,
  ws: number,
  we: number,
  alnum: readonly AlnumPattern[],
  wantIban: boolean,
  out: Candidate[],
  checkDeadline: () => void,
): void {
  const w = t.slice(ws, we);
  const big = we - ws > BIG_WINDOW;
  for (const p of alnum) {
    scanAlnum(t, w, ws, p, out, checkDeadline);
    if (big) checkDeadline();
  }
  if (wantIban) scanIban(t, w, ws, out, checkDeadline);
}
