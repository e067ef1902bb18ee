/**
 * Prompt token counting with gpt-tokenizer's `o200k_base` encoding (GPT-4o family). Engines with
 * other tokenizers differ by some percent; the count is used for reservations (worst cases) and
 * TPM limits, and is corrected by the upstream's reported usage when the request settles.
 *
 * The encoding (≈0.5 s to load) is loaded on first use, not when this module is imported.
 */
import { createRequire } from 'node:module';

interface Encoder {
  countTokens(text: string, opts?: { allowedSpecial?: Set<string>; disallowedSpecial?: Set<string> }): number;
}

let encoder: Encoder | null = null;
function enc(): Encoder {
  if (encoder === null) {
    const require = createRequire(import.meta.url);
    encoder = require('gpt-tokenizer/cjs/encoding/o200k_base') as Encoder;
  }
  return encoder;
}

/** Special-token strings (e.g. `<|endoftext|>`) in client text are counted as ordinary text, never rejected. */
const AS_TEXT = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };

/** Tokens added per chat message / responses input item (role and separators), as OpenAI documents (~3). */
export const TOKENS_PER_MESSAGE = 3;
/** Tokens priming the assistant's reply of a chat request. */
export const TOKENS_PER_REPLY = 3;
/** Tokens counted for one image / audio / file content part (OpenAI's low-detail image cost). */
export const TOKENS_PER_MEDIA_PART = 85;
/**
 * Characters tokenised exactly per request. Beyond this, the remaining text is estimated with the
 * tokens-per-character ratio of the part counted exactly, so a 20 MiB body cannot block the event loop.
 */
export const EXACT_CHARS = 1_000_000;

/** Most strings the count cache holds. */
export const COUNT_CACHE_ENTRIES = 4096;
/** Longest string (characters) the count cache holds; longer ones are always counted. */
export const COUNT_CACHE_MAX_CHARS = 16_384;
/**
 * Token counts of recently seen strings (least recently used out first), so that the text a
 * client sends again — the system prompt, few-shot examples, and in a chat every earlier turn,
 * which is re-sent with each new one — is tokenised once. At most {@link COUNT_CACHE_ENTRIES}
 * strings of at most {@link COUNT_CACHE_MAX_CHARS} characters (≤ 128 MiB of UTF-16 in the worst
 * case, in practice far less). It holds counts and the strings themselves, in this process's memory
 * only (like the request bodies it came from; never logged or written anywhere).
 */
const countCache = new Map<string, number>();

/** Tokens in `s` (special-token strings counted as text), through the count cache. */
function countText(s: string): number {
  if (s.length > COUNT_CACHE_MAX_CHARS) return enc().countTokens(s, AS_TEXT);
  const hit = countCache.get(s);
  if (hit !== undefined) {
    countCache.delete(s);
    countCache.set(s, hit);
    return hit;
  }
  const n = enc().countTokens(s, AS_TEXT);
  if (countCache.size >= COUNT_CACHE_ENTRIES) countCache.delete(countCache.keys().next().value!);
  countCache.set(s, n);
  return n;
}

/** Accumulates text and fixed token counts. */
class Tally {
  fixed = 0;
  exactTokens = 0;
  exactChars = 0;
  restChars = 0;
  text(s: unknown): void {
    if (typeof s !== 'string' || s.length === 0) return;
    const room = EXACT_CHARS - this.exactChars;
    if (room >= s.length) {
      this.exactTokens += countText(s);
      this.exactChars += s.length;
    } else {
      if (room > 0) {
        this.exactTokens += enc().countTokens(s.slice(0, room), AS_TEXT);
        this.exactChars += room;
      }
      this.restChars += s.length - Math.max(0, room);
    }
  }
  /** Token-id arrays (`prompt: [1, 2, 3]`) are already tokens. */
  tokens(n: number): void {
    this.fixed += n;
  }
  total(): number {
    const rest = this.restChars > 0 ? Math.ceil((this.restChars * this.exactTokens) / Math.max(1, this.exactChars)) : 0;
    return this.fixed + this.exactTokens + rest;
  }
}

/** A string, a string array, a token array or an array of token arrays (completions `prompt`, embeddings `input`). */
function countPromptLike(t: Tally, v: unknown): void {
  if (typeof v === 'string') return t.text(v);
  if (!Array.isArray(v)) return;
  if (v.length > 0 && v.every((x) => typeof x === 'number')) return t.tokens(v.length);
  for (const x of v) {
    if (typeof x === 'string') t.text(x);
    else if (Array.isArray(x)) t.tokens(x.filter((y) => typeof y === 'number').length);
  }
}

/** Content as a string or an array of parts (`text`, `input_text`, `output_text`, `refusal`, media). */
function countContent(t: Tally, c: unknown): void {
  if (typeof c === 'string') return t.text(c);
  if (!Array.isArray(c)) return;
  for (const part of c) {
    if (typeof part === 'string') {
      t.text(part);
      continue;
    }
    if (!isObj(part)) continue;
    if (typeof part['text'] === 'string') t.text(part['text']);
    else if (typeof part['refusal'] === 'string') t.text(part['refusal']);
    else if (typeof part['type'] === 'string' && /image|audio|file/.test(part['type'])) t.tokens(TOKENS_PER_MEDIA_PART);
  }
}

/** A chat message or responses input item. */
function countMessage(t: Tally, m: unknown): void {
  if (typeof m === 'string') {
    t.tokens(TOKENS_PER_MESSAGE);
    return t.text(m);
  }
  if (!isObj(m)) return;
  t.tokens(TOKENS_PER_MESSAGE);
  countContent(t, m['content']);
  t.text(m['name']);
  // chat tool calls, legacy function_call, responses function_call items / outputs
  if (Array.isArray(m['tool_calls'])) {
    for (const tc of m['tool_calls']) {
      if (!isObj(tc)) continue;
      const fn = tc['function'];
      if (isObj(fn)) {
        t.text(fn['name']);
        t.text(fn['arguments']);
      }
    }
  }
  const fc = m['function_call'];
  if (isObj(fc)) {
    t.text(fc['name']);
    t.text(fc['arguments']);
  }
  if (m['type'] === 'function_call') t.text(m['arguments']);
  if (m['type'] === 'function_call_output') t.text(typeof m['output'] === 'string' ? m['output'] : undefined);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Tool / function definitions count as their JSON text (they reach the model's prompt). */
function countTools(t: Tally, v: unknown): void {
  if (Array.isArray(v) && v.length > 0) t.text(JSON.stringify(v));
}

/**
 * Counts the prompt tokens of a request body (an estimate with `o200k_base`, never negative).
 *
 * - `chat.completions`: every message's text (`content` string or text parts; image/audio/file parts
 *   count {@link TOKENS_PER_MEDIA_PART} each), `name`, tool-call / function-call names and
 *   arguments, plus {@link TOKENS_PER_MESSAGE} per message and {@link TOKENS_PER_REPLY}; `tools` /
 *   `functions` definitions as JSON text.
 * - `completions`: `prompt` (string, string array, token array or token arrays; token arrays count
 *   their length) and `suffix`.
 * - `embeddings`: `input` (same shapes as `prompt`).
 * - `responses`: `instructions`, `input` (string or items as chat messages, function calls and
 *   outputs), `tools`.
 *
 * Text beyond {@link EXACT_CHARS} characters is estimated rather than tokenised. Malformed shapes
 * are skipped (validation is not this function's job); it never throws on a JSON-parsed body.
 */
export function countPromptTokens(
  body: Record<string, unknown>,
  operation: 'chat.completions' | 'completions' | 'embeddings' | 'responses',
): number {
  const t = new Tally();
  switch (operation) {
    case 'chat.completions': {
      const msgs = body['messages'];
      if (Array.isArray(msgs)) for (const m of msgs) countMessage(t, m);
      t.tokens(TOKENS_PER_REPLY);
      countTools(t, body['tools']);
      countTools(t, body['functions']);
      break;
    }
    case 'completions':
      countPromptLike(t, body['prompt']);
      t.text(body['suffix']);
      break;
    case 'embeddings':
      countPromptLike(t, body['input']);
      break;
    case 'responses': {
      t.text(body['instructions']);
      const input = body['input'];
      if (typeof input === 'string') t.text(input);
      else if (Array.isArray(input)) for (const m of input) countMessage(t, m);
      countTools(t, body['tools']);
      break;
    }
  }
  return t.total();
}
