/**
 * The identifier detector (spec §4.1): normalise → candidate scan → compact + validate →
 * context words → score → resolve overlaps → spans on the ORIGINAL text.
 *
 * Fail-closed: input over `maxChars` throws {@link PiiInputTooLargeError} before any work, and a
 * scan past `deadline` throws {@link PiiTimeoutError}: the deadline is checked inside every stage
 * that grows with the input (normalisation, candidate scan, validation, context words, scoring,
 * overlap resolution), at least every 64 Ki code units or 256 candidates. Every stage is linear or
 * O(n log n) in the text length and the number of candidates. Nothing here logs, and no span,
 * rule, error or reason carries the identifier's value.
 */
import { ContextMatcher, DEFAULT_KEYWORDS, DEFAULT_NEGATIVE, DEFAULT_NEGATIVE_NEAR, NEAR_AFTER, NEAR_BEFORE, type KeywordHit } from './context.ts';
import { PiiInputTooLargeError, PiiTimeoutError } from './errors.ts';
import { normalise } from './normalise.ts';
import { scanCandidates, type Candidate } from './patterns.ts';
import { isValidPhoneNumber } from './phone.ts';
import { clampScore, contextBoost, SCORE, tierOf } from './score.ts';
import { BD_NID_10_BASE, PII_TYPES, TYPE_INFO, type IdType, type PiiType, type Tier } from './types.ts';
import { cardLuhnOnly, DEFAULT_CARD_RANGES, validatePaymentCard, type CardRange } from './validators/card.ts';
import { makeContext, type ValidateContext } from './validators/common.ts';
import { ibanInRegistry } from './validators/iban.ts';
import { VALIDATORS } from './validators/index.ts';

export { PiiInputTooLargeError, PiiTimeoutError } from './errors.ts';
export type { IdType, PiiType, Tier } from './types.ts';

/** One identifier found. Offsets are UTF-16 code units into the ORIGINAL text, end exclusive. */
export interface PiiSpan {
  type: PiiType;
  start: number;
  end: number;
  /** Score in [0, 1] (3 decimals). */
  confidence: number;
  tier: Tier;
  /** Evidence, e.g. `MY_NRIC:date+birthplace+layout+context` — never the value. */
  rule: string;
  /**
   * Only on `NATIONAL_ID` spans: the identifier types that tied for this span (same score, same
   * nearest preceding keyword, same length; two or more, catalogue order), so that a policy can
   * apply the strictest action of those types instead of one for the generic label. Absent on
   * every other span.
   */
  candidates?: PiiType[];
}

/** Per-call options of {@link detect} / {@link Detector.detect}. */
export interface DetectOptions {
  /** Types to report (default: all types enabled in the detector's configuration). */
  types?: ReadonlySet<PiiType>;
  /** Also report low-tier findings that have a keyword of their type (spec §4.5 strict mode). */
  strict?: boolean;
  /** Processing date for birth-date plausibility (default: now). */
  now?: Date;
  /** Maximum input length in UTF-16 code units (default: the detector's, 2 000 000). */
  maxChars?: number;
  /** Absolute `performance.now()` time in ms after which the scan throws {@link PiiTimeoutError}. */
  deadline?: number;
}

/** Construction-time configuration of a {@link Detector} (per deployment). */
export interface DetectorConfig {
  /** Enabled types (default: all 30). */
  types?: Iterable<IdType>;
  /** Extra positive context words per type, added to the defaults (local languages). */
  extraKeywords?: Readonly<Partial<Record<IdType, readonly string[]>>>;
  /** Extra negative context words. */
  extraNegative?: readonly string[];
  /** Card issuer ranges (default {@link DEFAULT_CARD_RANGES}); replace to add regional schemes. */
  cardRanges?: readonly CardRange[];
  /** Default strict mode. */
  strict?: boolean;
  /** Default maximum input length (UTF-16 code units); default 2 000 000. */
  maxChars?: number;
  /** Remove zero-width characters / soft hyphens inside identifiers before scanning (default true). */
  stripInvisible?: boolean;
  /** Earliest accepted birth year (default 1900; set 1800 to accept IIN century codes 1/2). */
  minBirthYear?: number;
  /** Lower context-only numbers that are valid phone numbers of their country (default true). */
  phoneSuppression?: boolean;
}

/** Default maximum input length (UTF-16 code units). */
export const DEFAULT_MAX_CHARS = 2_000_000;

const NUMERIC_TYPES: ReadonlySet<IdType> = new Set(
  PII_TYPES.filter((t) => !['SG_NRIC_FIN', 'KE_KRA_PIN', 'IN_PAN', 'MX_CURP', 'IBAN', 'EMAIL'].includes(t)),
);

/** How a candidate was accepted by validation. */
const Basis = {
  Valid: 0,
  /** Luhn-valid card number outside the range table: needs card context. */
  UnknownCardRange: 1,
  /** Failed only its check digit, strict mode: needs context. */
  ChecksumFailed: 2,
} as const;
type Basis = (typeof Basis)[keyof typeof Basis];

interface Scored {
  c: Candidate;
  basis: Basis;
  base: number;
  score: number;
  /** Distance to the nearest preceding keyword of the type (Infinity if none). */
  kwBefore: number;
  /** Distance to the nearest keyword of the type on either side (Infinity if none). */
  kwNearest: number;
  boost: number;
  negative: boolean;
  phone: boolean;
}

/**
 * A detector with precompiled per-configuration state (enabled types, context automaton with the
 * deployment's extra words, card ranges). Thread-compatible: `detect` keeps no state between calls.
 */
export class Detector {
  private readonly enabled: ReadonlySet<IdType>;
  private readonly matcher: ContextMatcher;
  private readonly cardRanges: readonly CardRange[];
  private readonly strict: boolean;
  private readonly maxChars: number;
  private readonly stripInvisible: boolean;
  private readonly minBirthYear: number;
  private readonly phoneSuppression: boolean;

  constructor(config: DetectorConfig = {}) {
    this.enabled = new Set(config.types ?? PII_TYPES);
    const keywords: Partial<Record<IdType, string[]>> = {};
    for (const t of PII_TYPES) keywords[t] = [...DEFAULT_KEYWORDS[t], ...(config.extraKeywords?.[t] ?? [])];
    this.matcher = new ContextMatcher(keywords, [...DEFAULT_NEGATIVE, ...(config.extraNegative ?? [])], DEFAULT_NEGATIVE_NEAR);
    this.cardRanges = config.cardRanges ?? DEFAULT_CARD_RANGES;
    this.strict = config.strict ?? false;
    this.maxChars = config.maxChars ?? DEFAULT_MAX_CHARS;
    this.stripInvisible = config.stripInvisible ?? true;
    this.minBirthYear = config.minBirthYear ?? 1900;
    this.phoneSuppression = config.phoneSuppression ?? true;
  }

  /**
   * Finds identifiers in `text`.
   * @returns spans sorted by start, non-overlapping, offsets in UTF-16 code units of `text`.
   * @throws PiiInputTooLargeError when `text.length` exceeds `maxChars` (nothing scanned).
   * @throws PiiTimeoutError when `performance.now()` passes `opts.deadline` during the scan.
   */
  detect(text: string, opts: DetectOptions = {}): PiiSpan[] {
    const maxChars = opts.maxChars ?? this.maxChars;
    if (text.length > maxChars) throw new PiiInputTooLargeError(text.length, maxChars);
    const deadline = opts.deadline;
    const check =
      deadline === undefined
        ? noop
        : (): void => {
            if (performance.now() > deadline) throw new PiiTimeoutError(deadline);
          };
    check();
    const strict = opts.strict ?? this.strict;
    let enabled = this.enabled;
    if (opts.types) {
      const want = opts.types;
      enabled = new Set([...this.enabled].filter((t) => want.has(t)));
    }
    if (enabled.size === 0 || text.length === 0) return [];

    const norm = normalise(text, { stripInvisible: this.stripInvisible, checkDeadline: check });
    const t = norm.text;
    const cands: Candidate[] = [];
    scanCandidates(t, enabled, cands, check);
    if (cands.length === 0) return [];

    // Validate.
    const ctx = makeContext(opts.now ?? new Date(), this.minBirthYear);
    const kept: Scored[] = [];
    for (let i = 0; i < cands.length; i++) {
      const s = this.validate(cands[i]!, t, ctx, strict);
      if (s) kept.push(s);
      if ((i & 255) === 255) check();
    }
    check();
    if (kept.length === 0) return [];

    // Context words around the kept candidates.
    const hits = this.contextHits(t, kept, check);
    check();

    // Score and keep what gets reported.
    const eligible: Scored[] = [];
    for (let i = 0; i < kept.length; i++) {
      const s = kept[i]!;
      this.score(s, t, hits, strict);
      if (this.isEligible(s, strict)) eligible.push(s);
      if ((i & 255) === 255) check();
    }
    if (eligible.length === 0) return [];
    check();
    return this.resolve(eligible, t.length, norm.toOriginal.bind(norm), check);
  }

  private validate(c: Candidate, t: string, ctx: ValidateContext, strict: boolean): Scored | null {
    // A number written with an international prefix is a phone number.
    if (c.start > 0 && t.charCodeAt(c.start - 1) === 43 /* + */ && NUMERIC_TYPES.has(c.type)) return null;
    const r = c.type === 'PAYMENT_CARD' ? validatePaymentCard(c.compact, this.cardRanges) : VALIDATORS[c.type](c.compact, ctx);
    let basis: Basis = Basis.Valid;
    let base = TYPE_INFO[c.type].base;
    if (r.valid) {
      if (c.type === 'BD_NID' && c.compact.length === 10) base = BD_NID_10_BASE;
      else if (c.type === 'IBAN' && !ibanInRegistry(c.compact)) base = SCORE.unregisteredIban;
    } else if (c.type === 'PAYMENT_CARD' && r.reason === 'prefix' && cardLuhnOnly(c.compact)) {
      basis = Basis.UnknownCardRange;
      base = SCORE.unknownCardRange;
    } else if (strict && r.reason === 'checksum') {
      basis = Basis.ChecksumFailed;
      base = SCORE.checksumFailed;
    } else {
      return null;
    }
    return { c, basis, base, score: base, kwBefore: Infinity, kwNearest: Infinity, boost: 0, negative: false, phone: false };
  }

  /** Keyword hits in merged windows around the candidates, sorted by start. */
  private contextHits(t: string, kept: readonly Scored[], check: () => void): KeywordHit[] {
    const pad = this.matcher.maxLength;
    const spans: Array<[number, number]> = kept.map((s) => [
      Math.max(0, s.c.start - SCORE.windowBefore - pad),
      Math.min(t.length, s.c.end + SCORE.windowAfter + pad),
    ]);
    sortChecked(spans, (a, b) => a[0] - b[0], check);
    const hits: KeywordHit[] = [];
    let [ws, we] = spans[0]!;
    for (let i = 1; i < spans.length; i++) {
      const [s, e] = spans[i]!;
      if (s <= we) {
        if (e > we) we = e;
      } else {
        this.matcher.scan(t, ws, we, hits, check);
        ws = s;
        we = e;
      }
      if ((i & 1023) === 0) check();
    }
    this.matcher.scan(t, ws, we, hits, check);
    sortChecked(hits, (a, b) => a.start - b.start, check);
    return hits;
  }

  private score(s: Scored, t: string, hits: readonly KeywordHit[], strict: boolean): void {
    const { start, end, type } = s.c;
    const lo = start - SCORE.windowBefore - this.matcher.maxLength;
    const hi = end + SCORE.windowAfter;
    let boost = 0;
    let kwBefore = Infinity;
    let kwNearest = Infinity;
    let kwAfter = Infinity;
    let negBefore = Infinity;
    let negAfter = Infinity;
    let nearNeg = false;
    // First hit that could be in range (hits sorted by start).
    let a = 0;
    let b = hits.length;
    while (a < b) {
      const m = (a + b) >> 1;
      if (hits[m]!.start < lo) a = m + 1;
      else b = m;
    }
    for (let i = a; i < hits.length; i++) {
      const h = hits[i]!;
      if (h.start > hi) break;
      let d: number;
      let before: boolean;
      if (h.end <= start) {
        d = start - h.end;
        before = true;
        if (d > SCORE.windowBefore) continue;
      } else if (h.start >= end) {
        d = h.start - end;
        before = false;
        if (d > SCORE.windowAfter) continue;
      } else {
        continue; // inside the candidate
      }
      // Words after the number count only within its sentence and line; negative words before
      // it only within its sentence (a label on the line above still counts).
      const own = h.types.includes(type);
      if (!own && !h.negative) continue;
      if (before ? h.negative && sentenceBreak(t, h.end, start, true) : sentenceBreak(t, end, h.start, false)) continue;
      if (h.negative) {
        if (h.near !== 0) {
          if (d <= SCORE.nearNegativeReach && (h.near & (before ? NEAR_BEFORE : NEAR_AFTER)) !== 0) nearNeg = true;
        } else if (before) negBefore = Math.min(negBefore, d);
        else negAfter = Math.min(negAfter, d);
      }
      if (own) {
        const bst = contextBoost(d, before);
        if (bst > boost) boost = bst;
        if (d < kwNearest) kwNearest = d;
        if (!before && d < kwAfter) kwAfter = d;
        if (before && d < kwBefore) kwBefore = d;
      }
    }
    let score = s.base + boost;
    if (s.c.layout) score += SCORE.layout;
    // Negative context (spec §4.5: closer than any keyword of the type). Labels precede values, so
    // a keyword before the number is only outweighed by a closer negative word before it.
    // A near negative word (a timestamp label right next to the number) counts only when no keyword
    // of the type is in context at all.
    const negative =
      (kwBefore < Infinity ? negBefore < kwBefore : Math.min(negBefore, negAfter) < kwAfter) || (nearNeg && kwNearest === Infinity);
    if (negative) score -= SCORE.negative;
    s.boost = boost;
    s.kwBefore = kwBefore;
    s.kwNearest = kwNearest;
    s.negative = negative;
    // Phone reading of a random (context-only) number, checked only when it would be reported.
    const info = TYPE_INFO[type];
    const contextOnly = info.cls === 'context-only' || (type === 'BD_NID' && s.c.compact.length === 10);
    if (this.phoneSuppression && contextOnly && info.country && kwBefore > SCORE.phoneKeywordShield) {
      if ((score >= 0.6 - 1e-9 || (strict && boost > 0)) && isValidPhoneNumber(s.c.compact, info.country)) {
        score -= SCORE.phone;
        s.phone = true;
      }
    }
    // A checksum failure is only ever a low-tier (strict-mode) finding.
    if (s.basis === Basis.ChecksumFailed) score = Math.min(score, SCORE.checksumFailedCap);
    s.score = clampScore(score);
  }

  /**
   * Reported by default: high and medium. Strict mode adds low findings that have a keyword of
   * their type and no closer negative word. Unknown-range cards and checksum failures always
   * need a keyword of their type.
   */
  private isEligible(s: Scored, strict: boolean): boolean {
    if (s.basis !== Basis.Valid && s.boost === 0) return false;
    if (tierOf(s.score) !== 'low') return true;
    return strict && s.boost > 0 && !s.negative;
  }

  /**
   * Overlap resolution (spec §4.6) and mapping to original offsets: sort by score, nearest
   * preceding keyword, length, start (O(n log n)), then one sweep taking each span that overlaps
   * none taken before (a bitmap over the text: O(span length) per span). A span taken while a
   * candidate of another type ties with it on every criterion over an overlapping span becomes
   * `NATIONAL_ID` with the tied types in `candidates`. Tied candidates are neighbours in the sort
   * order (same score, keyword distance and length, then by start), and an overlapping one starts
   * before the span's end, so the tie search stops at the first candidate that differs or starts at
   * or after the end: bounded by the candidates that start inside the span, not by their total.
   */
  private resolve(
    eligible: Scored[],
    len: number,
    toOriginal: (s: number, e: number) => [number, number],
    check: () => void,
  ): PiiSpan[] {
    sortChecked(
      eligible,
      (x, y) =>
        y.score - x.score ||
        x.kwBefore - y.kwBefore ||
        (y.c.end - y.c.start) - (x.c.end - x.c.start) ||
        x.c.start - y.c.start,
      check,
    );
    const taken = new Uint8Array(len);
    const out: PiiSpan[] = [];
    for (let i = 0; i < eligible.length; i++) {
      if ((i & 255) === 255) check();
      const s = eligible[i]!;
      const { start, end } = s.c;
      if (taken[start] || taken[end - 1] || anyTaken(taken, start, end)) continue;
      // Other types tied on every criterion over an overlapping span → generic label.
      let tied: IdType[] | null = null;
      for (let j = i + 1; j < eligible.length; j++) {
        const o = eligible[j]!;
        if (o.score !== s.score || o.kwBefore !== s.kwBefore || o.c.end - o.c.start !== end - start) break;
        if (o.c.start >= end) break;
        if (o.c.type !== s.c.type && o.c.end > start) {
          tied ??= [s.c.type];
          if (!tied.includes(o.c.type)) tied.push(o.c.type);
        }
      }
      taken.fill(1, start, end);
      const [os, oe] = toOriginal(start, end);
      const label: PiiType = tied ? 'NATIONAL_ID' : s.c.type;
      const span: PiiSpan = { type: label, start: os, end: oe, confidence: s.score, tier: tierOf(s.score), rule: ruleOf(s, label) };
      if (tied) span.candidates = tied.sort((x, y) => TYPE_ORDER[x] - TYPE_ORDER[y]);
      out.push(span);
    }
    sortChecked(out, (a, b) => a.start - b.start, check);
    return out;
  }
}

/**
 * Sorts `a` in place with `cmp`, calling `check` every 64 Ki comparisons (a sort of a few hundred
 * thousand candidates is otherwise one long stretch without a deadline check; a throw abandons it).
 */
function sortChecked<T>(a: T[], cmp: (x: T, y: T) => number, check: () => void): void {
  if (a.length < 4096) {
    a.sort(cmp);
    return;
  }
  let n = 0;
  a.sort((x, y) => {
    if ((++n & 0xffff) === 0) check();
    return cmp(x, y);
  });
  check();
}

/** Catalogue position of each type (orders `candidates`). */
const TYPE_ORDER: Readonly<Record<IdType, number>> = Object.fromEntries(PII_TYPES.map((t, i) => [t, i])) as Record<IdType, number>;

/**
 * True when a sentence ends inside `t[from, to)`: `! ? ;` and their CJK, Arabic, Devanagari and
 * Ethiopic forms, a line break (only a blank line when `afterKeyword`, i.e. between a keyword and
 * the number after it, where "Label:⏎value" is common), or a full stop followed by white space —
 * except an abbreviation's full stop right before the number (`Ref. 123`, `No. 123`). Keeps
 * context words from acting across sentences.
 */
function sentenceBreak(t: string, from: number, to: number, afterKeyword: boolean): boolean {
  for (let i = from; i < to; i++) {
    const c = t.charCodeAt(i);
    switch (c) {
      case 0x21: // !
      case 0x3f: // ?
      case 0x3b: // ;
      case 0x3002: // 。
      case 0xff01: // ！
      case 0xff1f: // ？
      case 0x61f: // ؟
      case 0x61b: // ؛
      case 0x964: // ।
      case 0x1362: // ።
        return true;
      case 0x0a:
        if (!afterKeyword) return true;
        for (let k = i + 1; k < to; k++) {
          const n = t.charCodeAt(k);
          if (n === 0x0a) return true;
          if (n !== 0x0d && n !== 0x20 && n !== 0x09) break;
        }
        break;
      case 0x2e: {
        // "Ref. 123", "No. 123": an abbreviation's full stop right before the number.
        if (afterKeyword && to - i <= 3) break;
        const next = i + 1 < t.length ? t.charCodeAt(i + 1) : 32;
        if (next === 32 || next === 10 || next === 13 || next === 9) return true;
        break;
      }
    }
  }
  return false;
}

function anyTaken(taken: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (taken[i]) return true;
  return false;
}

function noop(): void {}

function ruleOf(s: Scored, label: PiiType): string {
  const type = s.c.type;
  let evidence: string = TYPE_INFO[type].evidence;
  if (s.basis === Basis.UnknownCardRange) evidence = 'luhn+unknown-range';
  else if (s.basis === Basis.ChecksumFailed) evidence = 'checksum-failed';
  let rule = `${label}:${evidence}`;
  if (label !== type) rule = `${label}:tie(${type}):${evidence}`;
  if (s.c.layout) rule += '+layout';
  if (s.boost > 0) rule += '+context';
  if (s.negative) rule += '-negative';
  if (s.phone) rule += '-phone';
  return rule;
}

let defaultDetector: Detector | undefined;

/**
 * Finds identifiers in `text` with the default configuration (all 30 types, default context
 * words and card ranges).
 * @returns spans sorted by start, non-overlapping; offsets are UTF-16 code units into `text`.
 * @throws PiiInputTooLargeError when `text.length` exceeds `opts.maxChars` (default 2 000 000).
 * @throws PiiTimeoutError when `performance.now()` passes `opts.deadline`.
 */
export function detect(text: string, opts?: DetectOptions): PiiSpan[] {
  defaultDetector ??= new Detector();
  return defaultDetector.detect(text, opts);
}
