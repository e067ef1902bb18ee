/**
 * RFC 8785 JSON Canonicalization Scheme (JCS) for the values audit records hold.
 *
 * - Object members are sorted by their names' UTF-16 code units (RFC 8785 §3.2.3), which is what
 *   JavaScript's default string comparison does.
 * - Primitives are serialised as ECMAScript's JSON.stringify does (RFC 8785 §3.2.2: the number
 *   format is ES Number.prototype.toString, string escaping is the ES JSON one).
 * - No whitespace.
 *
 * @throws TypeError for values JCS cannot represent: non-finite numbers, lone surrogates in strings,
 *   undefined inside arrays, functions, symbols, bigint.
 */
export function canonicalize(value: unknown): string {
  switch (typeof value) {
    case 'string':
      if (!wellFormed(value)) throw new TypeError('JCS: string contains a lone surrogate');
      return quote(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`JCS: number ${value} cannot be represented`);
      return String(value); // ES Number::toString, as JSON.stringify (and -0 → "0")
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let s = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) s += ',';
          const v = value[i];
          if (v === undefined) throw new TypeError('JCS: undefined inside an array');
          s += canonicalize(v);
        }
        return s + ']';
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).sort();
      let s = '{';
      let first = true;
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i]!;
        const v = obj[k];
        if (v === undefined) continue;
        if (!wellFormed(k)) throw new TypeError('JCS: member name contains a lone surrogate');
        s += (first ? '' : ',') + quote(k) + ':' + canonicalize(v);
        first = false;
      }
      return s + '}';
    }
    default:
      throw new TypeError(`JCS: cannot canonicalize a ${typeof value}`);
  }
}

/** JSON string literal of a well-formed `s` (JSON.stringify's escaping; fast path when nothing needs escaping). */
const quote = (s: string): string => (NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : '"' + s + '"');
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f]/;

/** True when `s` has no lone surrogate (ES2024 `String.prototype.isWellFormed`, in Node ≥ 20). */
const wellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed();
