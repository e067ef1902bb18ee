/**
 * Structured output for the embedded engine: OpenAI `response_format` → a llama.cpp grammar.
 *
 * - `{"type":"text"}` (or absent): no grammar.
 * - `{"type":"json_object"}`: node-llama-cpp's generic JSON grammar.
 * - `{"type":"json_schema","json_schema":{"name","schema","strict"}}`: a grammar compiled from the
 *   schema by node-llama-cpp (`llama.createGrammarForJsonSchema`). A GBNF grammar fixes the
 *   structure but not every constraint (it admits exponents in integers and cannot express numeric
 *   ranges or lengths), so the finished text is parsed and checked again with {@link checkAgainstSchema}.
 */
import type { Llama, LlamaGrammar } from 'node-llama-cpp';
import { BadRequest } from './prompt.ts';

/** What `response_format` asks for. */
export type StructuredFormat = { kind: 'text' } | { kind: 'json_object' } | { kind: 'json_schema'; schema: Record<string, unknown>; key: string };

/**
 * Read `response_format`.
 * @throws BadRequest for an unknown type or a missing/invalid schema
 */
export function parseResponseFormat(raw: unknown): StructuredFormat {
  if (raw === undefined || raw === null) return { kind: 'text' };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new BadRequest('response_format: expected an object', 'response_format');
  const rf = raw as Record<string, unknown>;
  switch (rf['type']) {
    case undefined:
    case 'text':
      return { kind: 'text' };
    case 'json_object':
      return { kind: 'json_object' };
    case 'json_schema': {
      const js = rf['json_schema'] as Record<string, unknown> | undefined;
      const schema = js && typeof js === 'object' ? js['schema'] : undefined;
      if (!schema || typeof schema !== 'object' || Array.isArray(schema))
        throw new BadRequest('response_format.json_schema.schema: expected a JSON Schema object', 'response_format');
      return { kind: 'json_schema', schema: schema as Record<string, unknown>, key: JSON.stringify(schema) };
    }
    default:
      throw new BadRequest(`response_format: type "${String(rf['type'])}" is not supported by the embedded engine`, 'response_format');
  }
}

/** Compiles and caches grammars (by schema text) for one llama instance. */
export class GrammarCache {
  private readonly cache = new Map<string, Promise<LlamaGrammar>>();
  constructor(
    private readonly llama: Llama,
    private readonly max = 64,
  ) {}

  /**
   * The grammar for a format, or undefined for plain text.
   * @throws BadRequest when node-llama-cpp cannot compile the schema
   */
  async get(f: StructuredFormat): Promise<LlamaGrammar | undefined> {
    if (f.kind === 'text') return undefined;
    const key = f.kind === 'json_object' ? 'json' : f.key;
    let p = this.cache.get(key);
    if (!p) {
      p = f.kind === 'json_object' ? this.llama.getGrammarFor('json') : this.llama.createGrammarForJsonSchema(f.schema as never);
      this.cache.set(key, p);
      if (this.cache.size > this.max) this.cache.delete(this.cache.keys().next().value!);
      p.catch(() => this.cache.delete(key));
    }
    try {
      return await p;
    } catch (e) {
      throw new BadRequest(`response_format: the schema cannot be turned into a grammar: ${(e as Error).message}`, 'response_format');
    }
  }
}

/**
 * Check generated text against the requested format after generation.
 * @returns null when it conforms, else a short reason (never the text itself)
 */
export function checkStructuredOutput(f: StructuredFormat, text: string): string | null {
  if (f.kind === 'text') return null;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'the output is not valid JSON';
  }
  if (f.kind === 'json_object') return v !== null && typeof v === 'object' && !Array.isArray(v) ? null : 'the output is not a JSON object';
  return checkAgainstSchema(f.schema, v, '$');
}

/**
 * A small JSON Schema check for the constraints a grammar cannot enforce: `type` (integer vs
 * number included), `enum`, `const`, `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`,
 * `minLength`/`maxLength`, `minItems`/`maxItems`, `required`, `properties`, `additionalProperties:
 * false`, `items`, `anyOf`/`oneOf`. Local `$ref`s are not followed.
 * @returns null when `v` conforms, else the first violation as `path: reason`
 */
export function checkAgainstSchema(schema: Record<string, unknown>, v: unknown, path: string): string | null {
  const anyOf = (schema['anyOf'] ?? schema['oneOf']) as Record<string, unknown>[] | undefined;
  if (Array.isArray(anyOf)) {
    const errs = anyOf.map((s) => checkAgainstSchema(s, v, path));
    if (errs.every((e) => e !== null)) return errs[0]!;
  }
  if (Array.isArray(schema['enum']) && !(schema['enum'] as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(v))) return `${path}: not one of the allowed values`;
  if ('const' in schema && JSON.stringify(schema['const']) !== JSON.stringify(v)) return `${path}: not the required constant`;
  const type = schema['type'];
  const types = Array.isArray(type) ? (type as string[]) : typeof type === 'string' ? [type] : [];
  if (types.length > 0 && !types.some((t) => isType(t, v))) return `${path}: expected ${types.join(' or ')}`;
  if (typeof v === 'number') {
    const n = v;
    if (typeof schema['minimum'] === 'number' && n < (schema['minimum'] as number)) return `${path}: below the minimum`;
    if (typeof schema['maximum'] === 'number' && n > (schema['maximum'] as number)) return `${path}: above the maximum`;
    if (typeof schema['exclusiveMinimum'] === 'number' && n <= (schema['exclusiveMinimum'] as number)) return `${path}: not above the exclusive minimum`;
    if (typeof schema['exclusiveMaximum'] === 'number' && n >= (schema['exclusiveMaximum'] as number)) return `${path}: not below the exclusive maximum`;
  }
  if (typeof v === 'string') {
    const len = [...v].length;
    if (typeof schema['minLength'] === 'number' && len < (schema['minLength'] as number)) return `${path}: shorter than minLength`;
    if (typeof schema['maxLength'] === 'number' && len > (schema['maxLength'] as number)) return `${path}: longer than maxLength`;
  }
  if (Array.isArray(v)) {
    if (typeof schema['minItems'] === 'number' && v.length < (schema['minItems'] as number)) return `${path}: fewer than minItems`;
    if (typeof schema['maxItems'] === 'number' && v.length > (schema['maxItems'] as number)) return `${path}: more than maxItems`;
    const items = schema['items'];
    if (items && typeof items === 'object' && !Array.isArray(items)) {
      for (let i = 0; i < v.length; i++) {
        const e = checkAgainstSchema(items as Record<string, unknown>, v[i], `${path}[${i}]`);
        if (e) return e;
      }
    }
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const obj = v as Record<string, unknown>;
    const props = (schema['properties'] ?? {}) as Record<string, Record<string, unknown>>;
    for (const r of (schema['required'] as string[] | undefined) ?? []) if (!(r in obj)) return `${path}: missing required property "${r}"`;
    for (const [k, val] of Object.entries(obj)) {
      const ps = props[k];
      if (ps) {
        const e = checkAgainstSchema(ps, val, `${path}.${k}`);
        if (e) return e;
      } else if (schema['additionalProperties'] === false) return `${path}: unexpected property "${k}"`;
    }
  }
  return null;
}

function isType(t: string, v: unknown): boolean {
  switch (t) {
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'array':
      return Array.isArray(v);
    case 'object':
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    default:
      return true;
  }
}
