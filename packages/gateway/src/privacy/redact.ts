/**
 * Redaction on the ORIGINAL text by offsets (spec §4.7).
 *
 * - `redact`: each span becomes a typed placeholder `[MY_NRIC_1]`, numbered per type per call;
 *   the same identifier (same type and same digits/letters once separators and native digits
 *   are normalised) gets the same number, so the model still sees that two mentions are one
 *   entity. The returned {@link RedactionVault} maps placeholder → original text (the first
 *   spelling seen) for tokenize/restore.
 * - `mask`: keeps the last 4 letters/digits of the identifier, replaces every other letter or
 *   digit with `*` and keeps separators (`4310 0455 4388 7329` → `**** **** **** 7329`). No
 *   vault entries (masking is not reversible).
 *
 * The vault never serialises its values: `JSON.stringify`, `util.inspect`/`console.log` and
 * string conversion show only its size, so it cannot end up in a log by accident.
 */
import { inspect } from 'node:util';
import { normalise } from './normalise.ts';
import type { PiiType } from './types.ts';

/** Redaction actions. */
export type RedactionAction = 'redact' | 'mask';

/** A span to redact: offsets are UTF-16 code units into the text, end exclusive. */
export interface RedactionSpan {
  type: PiiType;
  start: number;
  end: number;
}

/**
 * Per-request mapping placeholder → original value. Keep it inside the gateway; it is opaque to
 * logging (see module doc).
 */
export class RedactionVault {
  readonly #byPlaceholder = new Map<string, string>();

  /** @internal */
  set(placeholder: string, original: string): void {
    this.#byPlaceholder.set(placeholder, original);
  }

  /** Original value of a placeholder such as `[ID_NIK_1]`, or undefined. */
  get(placeholder: string): string | undefined {
    return this.#byPlaceholder.get(placeholder);
  }

  /** Number of placeholders. */
  get size(): number {
    return this.#byPlaceholder.size;
  }

  /** Placeholders in order of first appearance (no values). */
  placeholders(): string[] {
    return [...this.#byPlaceholder.keys()];
  }

  /** [placeholder, original] pairs — for the restore step only; never log the result. */
  entries(): Array<[string, string]> {
    return [...this.#byPlaceholder.entries()];
  }

  toJSON(): { size: number } {
    return { size: this.#byPlaceholder.size };
  }

  toString(): string {
    return `[RedactionVault size=${this.#byPlaceholder.size}]`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/** Output of {@link applyRedaction}. */
export interface RedactionResult {
  text: string;
  vault: RedactionVault;
}

const ALNUM_OR_DIGIT = /[\p{L}\p{Nd}]/u;

/** Identity key of a value for numbering: native digits → ASCII, separators removed, upper case. */
function valueKey(type: PiiType, raw: string): string {
  // The detector's own normalisation (digits, look-alike separators and letters, invisibles), so
  // that every spelling of one identifier gets one placeholder.
  const ascii = normalise(raw).text;
  return type + '\u0000' + (type === 'EMAIL' ? ascii.toLowerCase() : ascii.replace(/[\s.\/\-\u00AD\u200B-\u200D\u2060\uFEFF]/g, '').toUpperCase());
}

/** Masks all letters/digits of `raw` except the last `keep`, keeping separators. */
function maskValue(raw: string, keep = 4): string {
  const chars = [...raw];
  let remaining = keep;
  for (let i = chars.length - 1; i >= 0; i--) {
    if (!ALNUM_OR_DIGIT.test(chars[i]!)) continue;
    if (remaining > 0) remaining--;
    else chars[i] = '*';
  }
  return chars.join('');
}

/**
 * Placeholder numbering and the vault for one request: every text of the request (each message,
 * each tool argument…) goes through the same session, so the same identifier gets the same
 * placeholder everywhere in the request.
 */
export class RedactionSession {
  readonly vault = new RedactionVault();
  readonly #counters = new Map<PiiType, number>();
  readonly #numbers = new Map<string, string>();

  /** The placeholder for one identifier value (allocated on first sight). */
  placeholder(type: PiiType, raw: string): string {
    const key = valueKey(type, raw);
    let placeholder = this.#numbers.get(key);
    if (placeholder === undefined) {
      const n = (this.#counters.get(type) ?? 0) + 1;
      this.#counters.set(type, n);
      placeholder = `[${type}_${n}]`;
      this.#numbers.set(key, placeholder);
      this.vault.set(placeholder, raw);
    }
    return placeholder;
  }

  /**
   * Applies each span's action to `text`: `redact` and `tokenize` → the placeholder, `mask` → the
   * value with all but its last 4 letters/digits replaced by `*`.
   * @throws RangeError when spans overlap or fall outside the text
   */
  apply(text: string, spans: ReadonlyArray<RedactionSpan & { action: RedactionAction | 'tokenize'; value?: string }>): string {
    const sorted = [...spans].sort((a, b) => a.start - b.start);
    const parts: string[] = [];
    let pos = 0;
    for (const s of sorted) {
      if (s.start < pos || s.end > text.length || s.end <= s.start) throw new RangeError('redaction spans overlap or are out of range');
      parts.push(text.slice(pos, s.start));
      // `value`: the identifier as read when the text holds it encoded (e.g. JSON \u escapes).
      const raw = s.value ?? text.slice(s.start, s.end);
      parts.push(s.action === 'mask' ? maskValue(raw) : this.placeholder(s.type, raw));
      pos = s.end;
    }
    parts.push(text.slice(pos));
    return parts.join('');
  }
}

/**
 * Applies `action` to `spans` of `text` (spans as returned by `detect`: sorted or not, they must
 * not overlap). Returns the new text and, for `redact`, the placeholder vault.
 * @throws RangeError when spans overlap or fall outside the text.
 */
export function applyRedaction(text: string, spans: readonly RedactionSpan[], action: RedactionAction): RedactionResult {
  const session = new RedactionSession();
  const out = session.apply(text, spans.map((s) => ({ ...s, action })));
  return { text: out, vault: session.vault };
}
