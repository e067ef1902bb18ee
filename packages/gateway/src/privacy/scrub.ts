/**
 * The redaction choke point for everything Sovra writes about requests (docs/privacy.md): log lines
 * pass {@link scrubText} / {@link scrubDeep}, so that no identifier reaches a log even when an error
 * message or an upstream's answer quotes a prompt. Identifiers become `[TYPE]` (no numbering, no
 * vault: nothing can be restored from a log).
 *
 * Fail closed: if detection throws (too large, too slow), the whole string is replaced by
 * `[unscannable text: N chars]`.
 */
import { Detector } from './detect.ts';

let shared: Detector | undefined;
const detector = () => (shared ??= new Detector({ maxChars: 1_000_000 }));

/** Most time one log string may take to scan, ms. */
const BUDGET_MS = 50;

/** A quick pre-check: every identifier type has a digit (of any script) or an `@` (e-mail). */
const MAYBE = /[\p{Nd}@\uff20\ufe6b]/u;

/**
 * Replaces every identifier found in `s` with `[TYPE]`.
 * @returns `s` itself when nothing was found
 */
export function scrubText(s: string): string {
  if (s.length < 6 || !MAYBE.test(s)) return s;
  try {
    const spans = detector().detect(s, { deadline: performance.now() + BUDGET_MS });
    if (spans.length === 0) return s;
    let out = '';
    let pos = 0;
    for (const sp of spans) {
      out += s.slice(pos, sp.start) + `[${sp.type}]`;
      pos = sp.end;
    }
    return out + s.slice(pos);
  } catch {
    return `[unscannable text: ${s.length} chars]`;
  }
}

/**
 * Scrubs every string inside a log object (own enumerable properties and their keys, arrays, nested
 * objects, Error messages and stacks). Deeper than 8 levels a value is replaced by a note, binary
 * data by its size: what cannot be scanned is not written. Returns a new object only where
 * something changed.
 */
export function scrubDeep(v: unknown, depth = 0): unknown {
  if (typeof v === 'string') return scrubText(v);
  if (v === null || typeof v !== 'object') return v;
  if (depth > 8) return '[nested too deep to scan]';
  if (ArrayBuffer.isView(v)) return `[${v.byteLength} bytes]`;
  if (Array.isArray(v)) {
    let out: unknown[] | null = null;
    for (let i = 0; i < v.length; i++) {
      const n = scrubDeep(v[i], depth + 1);
      if (n !== v[i]) (out ??= v.slice())[i] = n;
    }
    return out ?? v;
  }
  const src = v as Record<string, unknown>;
  let out: Record<string, unknown> | null = null;
  const keys = v instanceof Error ? ['message', 'stack', ...Object.keys(v)] : Object.keys(src);
  for (const k of keys) {
    const cur = src[k];
    const n = scrubDeep(cur, depth + 1);
    const sk = scrubText(k);
    if (sk !== k) {
      // An identifier used as a key: the key is replaced too.
      if (!out) {
        out = v instanceof Error ? { type: v.name, message: v.message, stack: v.stack } : {};
        for (const kk of Object.keys(src)) out[kk] = src[kk];
      }
      delete out[k];
      out[sk] = n;
      continue;
    }
    if (n !== cur) {
      if (!out) {
        out = v instanceof Error ? { type: v.name, message: v.message, stack: v.stack } : {};
        for (const kk of Object.keys(src)) out[kk] = src[kk];
      }
      out[k] = n;
    }
  }
  return out ?? v;
}
