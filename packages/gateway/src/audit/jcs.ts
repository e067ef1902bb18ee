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
      if (LONE_SURROGATE.test(value)) throw new TypeError('JCS: string contains a lone surrogate');
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`JCS: number ${value} cannot be represented`);
      return JSON.stringify(value);
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
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
      let s = '{';
      for (let i = 0; i < keys.length; i++) {
        if (i > 0) s += ',';
        const k = keys[i]!;
        if (LONE_SURROGATE.test(k)) throw new TypeError('JCS: member name contains a lone surrogate');
        s += JSON.stringify(k) + ':' + canonicalize(obj[k]);
      }
      return s + '}';
    }
    default:
      throw new TypeError(`JCS: cannot canonicalize a ${typeof value}`);
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
