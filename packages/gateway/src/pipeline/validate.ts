/**
 * Parse and validate data-plane request bodies. Checks only what Sovra relies on and what OpenAI
 * itself rejects by type; every other field passes through to the upstream untouched.
 *
 * Errors: {@link GatewayError} 400 `invalid_request_error` naming the field in `param`.
 */
import { isUtf8 } from 'node:buffer';
import type { Operation } from '../providers/types.ts';
import { invalidRequest } from '../http/errors.ts';

/**
 * Decode a raw request body: must be valid UTF-8 and valid JSON with an object at the top.
 * @throws GatewayError 400 (`invalid_utf8`, `invalid_json`)
 */
export function parseJsonBody(raw: Buffer): Record<string, unknown> {
  if (raw.length === 0) throw invalidRequest('The request body is empty; expected a JSON object.', null, 'invalid_json');
  if (!isUtf8(raw)) throw invalidRequest('The request body is not valid UTF-8.', null, 'invalid_utf8');
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw invalidRequest(`We could not parse the JSON body of your request: ${(e as Error).message}`, null, 'invalid_json');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw invalidRequest('The request body must be a JSON object.', null, 'invalid_json');
  return v as Record<string, unknown>;
}

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
