/**
 * Parse and validate data-plane request bodies. Checks only what Sovra relies on and what OpenAI
 * itself rejects by type; every other field passes through to the upstream untouched.
 *
 * Errors: {@link GatewayError} 400 `invalid_request_error` naming the field in `param`.
 */
import { isUtf8 } from 'node:buffer';
import type { Operation } from '../providers/types.ts';
import { invalidRequest } from '../http/errors.ts';

/** A parsed body, and how to serialise a (rewritten) copy of it without losing what JSON.parse would. */
export interface ParsedBody {
  body: Record<string, unknown>;
  /** JSON.stringify, then put back integer literals beyond 2^53 exactly as the client wrote them. */
  serialize(value: unknown): string;
}

/**
 * Decode a raw request body: must be valid UTF-8 and valid JSON with an object at the top.
 *
 * Integer literals beyond ±(2^53−1) (e.g. an int64 `seed`) would be rounded by JSON.parse; they are
 * parsed as opaque placeholders instead and restored digit for digit by `serialize`, so that fields
 * reach the engine untouched.
 * @throws GatewayError 400 (`invalid_utf8`, `invalid_json`)
 */
export function parseJsonBody(raw: Buffer): ParsedBody {
  if (raw.length === 0) throw invalidRequest('The request body is empty; expected a JSON object.', null, 'invalid_json');
  if (!isUtf8(raw)) throw invalidRequest('The request body is not valid UTF-8.', null, 'invalid_utf8');
  let text = raw.toString('utf8');
  const big = LONG_DIGITS.test(text) ? protectBigIntegers(text) : null;
  if (big) text = big.text;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw invalidRequest(`We could not parse the JSON body of your request: ${(e as Error).message}`, null, 'invalid_json');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw invalidRequest('The request body must be a JSON object.', null, 'invalid_json');
  return {
    body: v as Record<string, unknown>,
    serialize(value: unknown): string {
      let out: string;
      try {
        out = JSON.stringify(value);
      } catch (e) {
        if (e instanceof RangeError) throw invalidRequest('The JSON body is nested too deeply.', null, 'invalid_json');
        throw e;
      }
      return big ? big.restore(out) : out;
    },
  };
}

const LONG_DIGITS = /\d{16}/;

/**
 * Replace integer literals outside strings whose magnitude exceeds Number.MAX_SAFE_INTEGER with
 * placeholder strings (`"\u0000bigint:<nonce>:<n>"`), and return how to put them back.
 */
function protectBigIntegers(text: string): { text: string; restore(s: string): string } | null {
  const nonce = Math.random().toString(36).slice(2, 10);
  const found: string[] = [];
  let out = '';
  let last = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // skip a string literal
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i += 2;
        else if (d === 0x22) break;
        else i++;
      }
      i++;
      continue;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      if (c === 0x2d) i++;
      while (i < n && text.charCodeAt(i) >= 0x30 && text.charCodeAt(i) <= 0x39) i++;
      const intEnd = i;
      const next = text.charCodeAt(i);
      if (next === 0x2e || next === 0x65 || next === 0x45) {
        // a fraction or exponent: a float, left to JSON.parse
        while (i < n && /[0-9eE+\-.]/.test(text[i]!)) i++;
        continue;
      }
      const lit = text.slice(start, intEnd);
      if (lit.replace('-', '').length >= 16 && !Number.isSafeInteger(Number(lit))) {
        out += text.slice(last, start) + JSON.stringify(`\u0000bigint:${nonce}:${found.length}`);
        found.push(lit);
        last = intEnd;
      }
      continue;
    }
    i++;
  }
  if (found.length === 0) return null;
  out += text.slice(last);
  const pattern = new RegExp(`"\\\\u0000bigint:${nonce}:(\\d+)"`, 'g');
  return { text: out, restore: (s) => s.replace(pattern, (_m, k: string) => found[Number(k)]!) };
}

/** Longest model alias accepted, characters (aliases are configuration names; this bounds records and logs). */
export const MAX_MODEL_NAME = 256;

const typeName = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function expect(cond: boolean, param: string, what: string, v: unknown): void {
  if (!cond) throw invalidRequest(`Invalid type for '${param}': expected ${what}, but got ${typeName(v)}.`, param, 'invalid_type');
}

function optionalInt(body: Record<string, unknown>, key: string, min: number): void {
  const v = body[key];
  if (v === undefined || v === null) return;
  expect(typeof v === 'number' && Number.isInteger(v), key, 'an integer', v);
  if ((v as number) < min) throw invalidRequest(`Invalid '${key}': must be >= ${min}.`, key, 'invalid_value');
}

function optionalNumber(body: Record<string, unknown>, key: string): void {
  const v = body[key];
  if (v === undefined || v === null) return;
  expect(typeof v === 'number' && Number.isFinite(v), key, 'a number', v);
}

function optionalBool(body: Record<string, unknown>, key: string): void {
  const v = body[key];
  if (v === undefined || v === null) return;
  expect(typeof v === 'boolean', key, 'a boolean', v);
}

/**
 * Validate the fields Sovra interprets for one operation.
 * @throws GatewayError 400 naming the offending field
 */
export function validateBody(op: Operation, body: Record<string, unknown>): void {
  const model = body['model'];
  if (model === undefined) throw invalidRequest("Missing required parameter: 'model'.", 'model', 'missing_required_parameter');
  expect(typeof model === 'string' && model.length > 0, 'model', 'a non-empty string', model);
  if ((model as string).length > MAX_MODEL_NAME)
    throw invalidRequest(`Invalid 'model': longer than ${MAX_MODEL_NAME} characters.`, 'model', 'invalid_value');
  optionalBool(body, 'stream');
  const so = body['stream_options'];
  if (so !== undefined && so !== null) {
    expect(typeof so === 'object' && !Array.isArray(so), 'stream_options', 'an object', so);
    const iu = (so as Record<string, unknown>)['include_usage'];
    if (iu !== undefined && iu !== null) expect(typeof iu === 'boolean', 'stream_options.include_usage', 'a boolean', iu);
  }
  optionalInt(body, 'max_tokens', 0);
  optionalInt(body, 'max_completion_tokens', 0);
  optionalInt(body, 'n', 1);
  optionalNumber(body, 'temperature');
  optionalNumber(body, 'top_p');
  switch (op) {
    case 'chat.completions': {
      const m = body['messages'];
      if (m === undefined) throw invalidRequest("Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter');
      expect(Array.isArray(m), 'messages', 'an array', m);
      const arr = m as unknown[];
      if (arr.length === 0) throw invalidRequest("Invalid 'messages': empty array. Expected an array with minimum length 1.", 'messages', 'empty_array');
      for (let i = 0; i < arr.length; i++) {
        const msg = arr[i];
        expect(msg !== null && typeof msg === 'object' && !Array.isArray(msg), `messages[${i}]`, 'an object', msg);
        const role = (msg as Record<string, unknown>)['role'];
        expect(typeof role === 'string', `messages[${i}].role`, 'a string', role);
        const content = (msg as Record<string, unknown>)['content'];
        if (content !== undefined && content !== null)
          expect(typeof content === 'string' || Array.isArray(content), `messages[${i}].content`, 'a string or an array of content parts', content);
      }
      break;
    }
    case 'completions': {
      const p = body['prompt'];
      if (p === undefined) throw invalidRequest("Missing required parameter: 'prompt'.", 'prompt', 'missing_required_parameter');
      expect(typeof p === 'string' || Array.isArray(p), 'prompt', 'a string or an array', p);
      break;
    }
    case 'embeddings': {
      const input = body['input'];
      if (input === undefined) throw invalidRequest("Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
      expect(typeof input === 'string' || Array.isArray(input), 'input', 'a string or an array', input);
      if (body['stream'] === true) throw invalidRequest('Embeddings cannot be streamed.', 'stream', 'invalid_value');
      break;
    }
    case 'responses': {
      if (body['input'] === undefined && body['previous_response_id'] === undefined)
        throw invalidRequest("Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
      break;
    }
  }
}
