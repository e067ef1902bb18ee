/**
 * Pure translation between OpenAI Chat Completions and the Anthropic Messages API. No I/O.
 *
 * Sources:
 * - Anthropic Messages API, request and response: https://docs.anthropic.com/en/api/messages
 * - Anthropic streaming events: https://docs.anthropic.com/en/docs/build-with-claude/streaming
 * - Anthropic errors: https://docs.anthropic.com/en/api/errors
 * - Anthropic stop reasons: https://docs.anthropic.com/en/api/handling-stop-reasons
 * - OpenAI Chat Completions: https://platform.openai.com/docs/api-reference/chat
 *
 * The field-by-field mapping (what is translated, dropped or refused) is documented in the module
 * comment of `provider.ts`; each function below states the shapes it accepts and produces.
 */
import type { SseItem } from '../../sse/types.ts';
import { UpstreamError } from '../types.ts';

// ---------------------------------------------------------------------------------------------------
// Anthropic shapes (the subset this adapter produces and reads)
// ---------------------------------------------------------------------------------------------------

/** `{type:'text'}` content block. */
export interface AnthropicTextBlock {
  type: 'text';
  text: string;
}
/** `{type:'image'}` content block: inline base64 bytes or a public URL. */
export interface AnthropicImageBlock {
  type: 'image';
  source: { type: 'base64'; media_type: string; data: string } | { type: 'url'; url: string };
}
/** A tool call made by the assistant; `input` is the parsed arguments object. */
export interface AnthropicToolUseBlock {
  type: 'tool_use';
  id: string;
  name: string;
  input: Record<string, unknown>;
}
/** The result of a tool call, sent in a user turn. */
export interface AnthropicToolResultBlock {
  type: 'tool_result';
  tool_use_id: string;
  content: string | AnthropicTextBlock[];
}
export type AnthropicBlock = AnthropicTextBlock | AnthropicImageBlock | AnthropicToolUseBlock | AnthropicToolResultBlock;

/** One turn of `messages`; roles strictly alternate after translation. */
export interface AnthropicMessage {
  role: 'user' | 'assistant';
  content: string | AnthropicBlock[];
}

/** A client tool definition. */
export interface AnthropicTool {
  name: string;
  description?: string;
  input_schema: Record<string, unknown>;
}

/** `tool_choice` of the Messages API. */
export type AnthropicToolChoice =
  | { type: 'auto'; disable_parallel_tool_use?: boolean }
  | { type: 'any'; disable_parallel_tool_use?: boolean }
  | { type: 'tool'; name: string; disable_parallel_tool_use?: boolean }
  | { type: 'none' };

/** The body POSTed to `/v1/messages`. */
export interface AnthropicRequest {
  model: string;
  max_tokens: number;
  messages: AnthropicMessage[];
  system?: string | AnthropicTextBlock[];
  temperature?: number;
  top_p?: number;
  top_k?: number;
  stop_sequences?: string[];
  stream?: boolean;
  metadata?: { user_id: string };
  tools?: AnthropicTool[];
  tool_choice?: AnthropicToolChoice;
}

// ---------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------

/**
 * The OpenAI request cannot be expressed as an Anthropic request. The provider answers it with a 400
 * `invalid_request_error` whose `code` and `param` are these, and sends nothing upstream.
 * - `unsupported_parameter`: a valid OpenAI field whose meaning the Messages API cannot honour
 *   (e.g. `n: 2`, `logprobs: true`, `response_format` json_schema).
 * - `invalid_parameter`: a field whose value is malformed (e.g. tool-call `arguments` that are not a
 *   JSON object, an image URL that is neither `data:…;base64,` nor http(s)).
 */
export class AnthropicTranslationError extends Error {
  override readonly name = 'AnthropicTranslationError';
  constructor(
    readonly code: 'unsupported_parameter' | 'invalid_parameter',
    /** The offending field as a path, e.g. `messages[2].tool_calls[0].function.arguments`. */
    readonly param: string,
    message: string,
  ) {
    super(message);
  }
}

const unsupported = (param: string, why: string): AnthropicTranslationError =>
  new AnthropicTranslationError('unsupported_parameter', param, `The parameter '${param}' is not supported by this model's backend (Anthropic Messages API): ${why}.`);
const invalid = (param: string, why: string): AnthropicTranslationError =>
  new AnthropicTranslationError('invalid_parameter', param, `Invalid value for '${param}': ${why}.`);

// ---------------------------------------------------------------------------------------------------
// Request: OpenAI chat.completions → Anthropic Messages
// ---------------------------------------------------------------------------------------------------

/** Options of {@link toAnthropicRequest}. */
export interface ToAnthropicOptions {
  /** `max_tokens` to send when the request has no cap (Anthropic requires one). Default 4096. */
  defaultMaxTokens?: number;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
/** Absent or JSON null (OpenAI clients send explicit nulls for unset fields). */
const isNil = (v: unknown): v is null | undefined => v === undefined || v === null;

/** Top-level fields accepted and dropped: they have no effect on what the Messages API generates. */
const DROPPED = new Set(['stream_options', 'seed', 'metadata', 'service_tier', 'prompt_cache_key', 'prediction']);

/**
 * Top-level fields refused when set to anything but their neutral value (null/absent always passes).
 * Each entry returns the reason when the value is not neutral, else null.
 */
const REFUSED: Record<string, (v: unknown) => string | null> = {
  n: (v) => (v === 1 ? null : 'only one choice (n = 1) can be generated'),
  logprobs: (v) => (v === false ? null : 'token log probabilities are not available'),
  top_logprobs: (v) => (v === 0 ? null : 'token log probabilities are not available'),
  response_format: (v) => (isObj(v) && v['type'] === 'text' ? null : 'only response_format {"type":"text"} is supported'),
  frequency_penalty: (v) => (v === 0 ? null : 'frequency penalties are not available'),
  presence_penalty: (v) => (v === 0 ? null : 'presence penalties are not available'),
  logit_bias: (v) => (isObj(v) && Object.keys(v).length === 0 ? null : 'logit bias is not available'),
  modalities: (v) => (Array.isArray(v) && v.every((m) => m === 'text') ? null : 'only text output is available'),
  audio: () => 'audio output is not available',
  store: (v) => (v === false ? null : 'completions cannot be stored'),
  functions: () => "the legacy 'functions' field is not supported; use 'tools'",
  function_call: () => "the legacy 'function_call' field is not supported; use 'tool_choice'",
  web_search_options: () => 'web search is not available',
  reasoning_effort: () => 'reasoning effort is not available',
  verbosity: () => 'verbosity is not available',
};

/** Fields translated by {@link toAnthropicRequest}. */
const TRANSLATED = new Set([
  'model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'stop', 'stream',
  'user', 'safety_identifier', 'tools', 'tool_choice', 'parallel_tool_calls',
]);

/**
 * Translate an OpenAI chat.completions request body into an Anthropic Messages request body.
 * Does not mutate `body`.
 *
 * Shapes: `body` is an OpenAI `CreateChatCompletionRequest` (already rewritten by the gateway:
 * `model` is the upstream model); the result is a Messages API `POST /v1/messages` body.
 * `max_tokens` is `max_completion_tokens` ?? `max_tokens` ?? `opts.defaultMaxTokens` (4096).
 *
 * @throws AnthropicTranslationError for unknown fields, fields with a non-neutral value the Messages
 *   API cannot honour (`unsupported_parameter`), and malformed values (`invalid_parameter`); `param`
 *   names the field.
 */
export function toAnthropicRequest(body: Obj, opts: ToAnthropicOptions = {}): AnthropicRequest {
  for (const key of Object.keys(body)) {
    const v = body[key];
    if (TRANSLATED.has(key) || DROPPED.has(key) || isNil(v)) continue;
    const refuse = REFUSED[key];
    if (refuse) {
      const why = refuse(v);
      if (why !== null) throw unsupported(key, why);
      continue;
    }
    throw unsupported(key, 'the field is unknown to this adapter');
  }

  const model = body['model'];
  if (typeof model !== 'string' || model === '') throw invalid('model', 'must be a non-empty string');

  const out: AnthropicRequest = { model, max_tokens: maxTokens(body, opts.defaultMaxTokens ?? 4096), messages: [] };
  const { system, messages } = translateMessages(body['messages']);
  out.messages = messages;
  if (system !== undefined) out.system = system;

  for (const k of ['temperature', 'top_p', 'top_k'] as const) {
    const v = body[k];
    if (isNil(v)) continue;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(k, 'must be a number');
    out[k] = v;
  }

  const stop = body['stop'];
  if (!isNil(stop)) {
    const list = typeof stop === 'string' ? [stop] : stop;
    if (!Array.isArray(list)) throw invalid('stop', 'must be a string or an array of strings');
    list.forEach((s, i) => {
      if (typeof s !== 'string') throw invalid(`stop[${i}]`, 'must be a string');
    });
    if (list.length > 0) out.stop_sequences = [...(list as string[])];
  }

  const stream = body['stream'];
  if (!isNil(stream)) {
    if (typeof stream !== 'boolean') throw invalid('stream', 'must be a boolean');
    if (stream) out.stream = true;
  }

  // `safety_identifier` is OpenAI's successor to `user`; both identify the end user.
  for (const k of ['safety_identifier', 'user'] as const) {
    const v = body[k];
    if (isNil(v)) continue;
    if (typeof v !== 'string') throw invalid(k, 'must be a string');
    if (!out.metadata) out.metadata = { user_id: v };
  }

  translateTools(body, out);
  return out;
}

function maxTokens(body: Obj, fallback: number): number {
  for (const k of ['max_completion_tokens', 'max_tokens'] as const) {
    const v = body[k];
    if (isNil(v)) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalid(k, 'must be a positive integer');
    return v;
  }
  return fallback;
}

/** Text of a system/developer/tool message: a string, or an array of `text` parts. */
function textParts(content: unknown, param: string): AnthropicTextBlock[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  if (!Array.isArray(content)) throw invalid(param, 'must be a string or an array of content parts');
  const out: AnthropicTextBlock[] = [];
  content.forEach((p, j) => {
    if (!isObj(p) || p['type'] !== 'text' || typeof p['text'] !== 'string')
      throw invalid(`${param}[${j}]`, 'only text parts are allowed here');
    if (p['text'] !== '') out.push({ type: 'text', text: p['text'] });
  });
  return out;
}

function translateMessages(raw: unknown): { system: string | AnthropicTextBlock[] | undefined; messages: AnthropicMessage[] } {
  if (!Array.isArray(raw)) throw invalid('messages', 'must be an array');
  const system: AnthropicTextBlock[] = [];
  let systemIsOneString = true;
  const turns: AnthropicMessage[] = [];

  const push = (role: 'user' | 'assistant', content: string | AnthropicBlock[]): void => {
    const last = turns[turns.length - 1];
    if (last && last.role === role) {
      // Anthropic requires alternating roles: merge consecutive same-role turns.
      last.content = [...asBlocks(last.content), ...asBlocks(content)];
    } else {
      turns.push({ role, content });
    }
  };

  raw.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (!isObj(m)) throw invalid(at, 'must be an object');
    const role = m['role'];
    for (const k of ['audio', 'function_call'] as const) {
      if (!isNil(m[k])) throw unsupported(`${at}.${k}`, k === 'audio' ? 'audio is not available' : "use 'tool_calls'");
    }
    switch (role) {
      case 'system':
      case 'developer': {
        if (typeof m['content'] !== 'string' || system.length > 0) systemIsOneString = false;
        system.push(...textParts(m['content'], `${at}.content`));
        return;
      }
      case 'user':
        push('user', userContent(m['content'], `${at}.content`));
        return;
      case 'assistant':
        push('assistant', assistantContent(m, at));
        return;
      case 'tool': {
        const id = m['tool_call_id'];
        if (typeof id !== 'string' || id === '') throw invalid(`${at}.tool_call_id`, 'must be a non-empty string');
        const c = m['content'];
        const content = typeof c === 'string' ? c : textParts(c, `${at}.content`);
        push('user', [{ type: 'tool_result', tool_use_id: id, content }]);
        return;
      }
      case 'function':
        throw unsupported(`${at}.role`, "the legacy 'function' role is not supported; use 'tool'");
      default:
        throw invalid(`${at}.role`, "must be one of 'system', 'developer', 'user', 'assistant', 'tool'");
    }
  });

  let sys: string | AnthropicTextBlock[] | undefined;
  if (system.length === 1 && systemIsOneString) sys = system[0]!.text;
  else if (system.length > 0) sys = system;
  return { system: sys, messages: turns };
}

function asBlocks(c: string | AnthropicBlock[]): AnthropicBlock[] {
  if (typeof c !== 'string') return c;
  return c === '' ? [] : [{ type: 'text', text: c }];
}

function userContent(content: unknown, at: string): string | AnthropicBlock[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(at, 'must be a string or an array of content parts');
  const out: AnthropicBlock[] = [];
  content.forEach((p, j) => {
    const pat = `${at}[${j}]`;
    if (!isObj(p)) throw invalid(pat, 'must be an object');
    switch (p['type']) {
      case 'text':
        if (typeof p['text'] !== 'string') throw invalid(`${pat}.text`, 'must be a string');
        if (p['text'] !== '') out.push({ type: 'text', text: p['text'] });
        return;
      case 'image_url':
        out.push(imageBlock(p['image_url'], `${pat}.image_url`));
        return;
      default:
        throw unsupported(`${pat}.type`, `content parts of type '${String(p['type'])}' are not supported (text and image_url are)`);
    }
  });
  return out;
}

/**
 * An OpenAI `image_url` part → an Anthropic image block. `data:<media type>;base64,<data>` URLs
 * become base64 sources; http(s) URLs become URL sources (fetched by Anthropic). `detail` is ignored.
 */
function imageBlock(v: unknown, at: string): AnthropicImageBlock {
  const url = typeof v === 'string' ? v : isObj(v) ? v['url'] : undefined;
  if (typeof url !== 'string') throw invalid(`${at}.url`, 'must be a string');
  if (/^https?:\/\//i.test(url)) return { type: 'image', source: { type: 'url', url } };
  if (url.startsWith('data:')) {
    const comma = url.indexOf(',');
    const meta = comma === -1 ? [] : url.slice(5, comma).split(';');
    const mediaType = meta[0]?.trim().toLowerCase() ?? '';
    if (comma === -1 || !meta.slice(1).some((x) => x.trim().toLowerCase() === 'base64') || !mediaType.includes('/'))
      throw invalid(`${at}.url`, 'a data URL must have the form data:<media type>;base64,<data>');
    return { type: 'image', source: { type: 'base64', media_type: mediaType, data: url.slice(comma + 1) } };
  }
  throw invalid(`${at}.url`, 'must be an http(s) URL or a base64 data URL');
}

function assistantContent(m: Obj, at: string): string | AnthropicBlock[] {
  const c = m['content'];
  const blocks: AnthropicBlock[] = [];
  let text: string | undefined;
  if (typeof c === 'string') text = c;
  else if (Array.isArray(c)) {
    c.forEach((p, j) => {
      const pat = `${at}.content[${j}]`;
      if (!isObj(p)) throw invalid(pat, 'must be an object');
      // OpenAI assistant parts are `text` and `refusal`; both are prior assistant output text.
      const s = p['type'] === 'text' ? p['text'] : p['type'] === 'refusal' ? p['refusal'] : undefined;
      if (typeof s !== 'string') throw invalid(pat, "only 'text' and 'refusal' parts are allowed in assistant messages");
      if (s !== '') blocks.push({ type: 'text', text: s });
    });
  } else if (!isNil(c)) throw invalid(`${at}.content`, 'must be a string, an array of content parts, or null');
  else if (typeof m['refusal'] === 'string') text = m['refusal'];

  const calls = m['tool_calls'];
  if (isNil(calls) || (Array.isArray(calls) && calls.length === 0)) {
    if (text !== undefined) return text;
    return blocks;
  }
  if (!Array.isArray(calls)) throw invalid(`${at}.tool_calls`, 'must be an array');
  if (text) blocks.push({ type: 'text', text });
  calls.forEach((tc, k) => {
    const tat = `${at}.tool_calls[${k}]`;
    if (!isObj(tc)) throw invalid(tat, 'must be an object');
    if (tc['type'] !== undefined && tc['type'] !== 'function') throw unsupported(`${tat}.type`, "only 'function' tool calls are supported");
    const id = tc['id'];
    if (typeof id !== 'string' || id === '') throw invalid(`${tat}.id`, 'must be a non-empty string');
    const fn = tc['function'];
    if (!isObj(fn) || typeof fn['name'] !== 'string' || fn['name'] === '') throw invalid(`${tat}.function.name`, 'must be a non-empty string');
    blocks.push({ type: 'tool_use', id, name: fn['name'], input: parseArguments(fn['arguments'], `${tat}.function.arguments`) });
  });
  return blocks;
}

/** Tool-call `arguments` (a JSON text) → the `input` object. Empty text means no arguments. */
function parseArguments(v: unknown, at: string): Record<string, unknown> {
  if (isNil(v) || v === '') return {};
  if (typeof v !== 'string') throw invalid(at, 'must be a string holding a JSON object');
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    throw invalid(at, 'is not valid JSON');
  }
  if (!isObj(parsed)) throw invalid(at, 'must be a JSON object');
  return parsed;
}

function translateTools(body: Obj, out: AnthropicRequest): void {
  const tools = body['tools'];
  if (!isNil(tools)) {
    if (!Array.isArray(tools)) throw invalid('tools', 'must be an array');
    const list: AnthropicTool[] = tools.map((t, i) => {
      const at = `tools[${i}]`;
      if (!isObj(t)) throw invalid(at, 'must be an object');
      if (t['type'] !== 'function') throw unsupported(`${at}.type`, "only 'function' tools are supported");
      const fn = t['function'];
      if (!isObj(fn) || typeof fn['name'] !== 'string' || fn['name'] === '') throw invalid(`${at}.function.name`, 'must be a non-empty string');
      if (!isNil(fn['strict']) && fn['strict'] !== false) throw unsupported(`${at}.function.strict`, 'strict schema adherence is not available');
      const params = fn['parameters'];
      if (!isNil(params) && !isObj(params)) throw invalid(`${at}.function.parameters`, 'must be a JSON Schema object');
      const tool: AnthropicTool = { name: fn['name'], input_schema: isObj(params) ? params : { type: 'object', properties: {} } };
      const d = fn['description'];
      if (typeof d === 'string' && d !== '') tool.description = d;
      return tool;
    });
    if (list.length > 0) out.tools = list;
  }

  const parallel = body['parallel_tool_calls'];
  if (!isNil(parallel) && typeof parallel !== 'boolean') throw invalid('parallel_tool_calls', 'must be a boolean');
  const noParallel = parallel === false;
  const tc = body['tool_choice'];
  let choice: AnthropicToolChoice | undefined;
  if (isNil(tc)) choice = undefined;
  else if (tc === 'auto') choice = { type: 'auto' };
  else if (tc === 'none') choice = { type: 'none' };
  else if (tc === 'required') choice = { type: 'any' };
  else if (isObj(tc) && tc['type'] === 'function') {
    const fn = tc['function'];
    if (!isObj(fn) || typeof fn['name'] !== 'string' || fn['name'] === '') throw invalid('tool_choice.function.name', 'must be a non-empty string');
    choice = { type: 'tool', name: fn['name'] };
  } else if (isObj(tc)) throw unsupported('tool_choice.type', "only 'function' tool choices are supported");
  else throw invalid('tool_choice', "must be 'auto', 'none', 'required' or {type:'function', function:{name}}");

  if (!out.tools) {
    // Without tools, 'auto'/'none' and parallel_tool_calls mean nothing; forcing a tool is an error.
    if (choice && choice.type !== 'auto' && choice.type !== 'none') throw invalid('tool_choice', 'a tool is required but no tools were given');
    return;
  }
  if (noParallel && (!choice || choice.type !== 'none')) choice = { ...(choice ?? { type: 'auto' }), disable_parallel_tool_use: true } as AnthropicToolChoice;
  if (choice) out.tool_choice = choice;
}

// ---------------------------------------------------------------------------------------------------
// Response: Anthropic Message → OpenAI chat.completion
// ---------------------------------------------------------------------------------------------------

/** Identity of the OpenAI object being produced. */
export interface CompletionMeta {
  /** `id` of the completion / every chunk, e.g. `chatcmpl-…`. */
  id: string;
  /** Model name reported to the client. */
  model: string;
  /** Unix time in seconds. */
  created: number;
}

/** OpenAI `finish_reason`. */
export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter';

/**
 * Anthropic `stop_reason` → OpenAI `finish_reason`: end_turn, stop_sequence, pause_turn (and
 * null/unknown) → `stop`; max_tokens, model_context_window_exceeded → `length`; tool_use →
 * `tool_calls`; refusal → `content_filter`.
 */
export function finishReason(stopReason: unknown): FinishReason {
  switch (stopReason) {
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return 'length';
    case 'tool_use':
      return 'tool_calls';
    case 'refusal':
      return 'content_filter';
    default:
      return 'stop';
  }
}

/** OpenAI `usage` object. */
export interface OpenAiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Present when Anthropic reported prompt-cache reads: `cached_tokens` = cache_read_input_tokens. */
  prompt_tokens_details?: { cached_tokens: number };
}

const count = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined);

/** Token counts as Anthropic reports them (each undefined until seen). */
interface AnthropicUsageState {
  input?: number;
  output?: number;
  cacheCreation?: number;
  cacheRead?: number;
}

function mergeUsage(state: AnthropicUsageState, u: unknown): void {
  if (!isObj(u)) return;
  state.input = count(u['input_tokens']) ?? state.input;
  state.output = count(u['output_tokens']) ?? state.output;
  state.cacheCreation = count(u['cache_creation_input_tokens']) ?? state.cacheCreation;
  state.cacheRead = count(u['cache_read_input_tokens']) ?? state.cacheRead;
}

/**
 * Anthropic usage → OpenAI usage. prompt_tokens = input_tokens + cache_creation_input_tokens +
 * cache_read_input_tokens (Anthropic's `input_tokens` excludes cached tokens; OpenAI's prompt count
 * includes them); completion_tokens = output_tokens; total = their sum.
 */
function openAiUsage(s: AnthropicUsageState): OpenAiUsage {
  const prompt = (s.input ?? 0) + (s.cacheCreation ?? 0) + (s.cacheRead ?? 0);
  const completion = s.output ?? 0;
  const u: OpenAiUsage = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  if (s.cacheRead !== undefined) u.prompt_tokens_details = { cached_tokens: s.cacheRead };
  return u;
}

/** OpenAI tool call in a completion message. */
export interface OpenAiToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** The `chat.completion` object produced by {@link fromAnthropicResponse}. */
export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: [
    {
      index: 0;
      message: { role: 'assistant'; content: string | null; refusal: null; tool_calls?: OpenAiToolCall[] };
      logprobs: null;
      finish_reason: FinishReason;
    },
  ];
  usage: OpenAiUsage;
}

/**
 * Translate a Messages API response (`{type:'message', content:[…], stop_reason, usage}`) into an
 * OpenAI `chat.completion`. Text blocks are concatenated into `message.content` (null when there are
 * none); `tool_use` blocks become `message.tool_calls` (`arguments` = JSON.stringify(input)); other
 * block types (thinking, server tools: never requested by this adapter) are ignored.
 * @throws UpstreamError('protocol') when `msg` is not a Message object
 */
export function fromAnthropicResponse(msg: unknown, meta: CompletionMeta): ChatCompletion {
  if (!isObj(msg) || msg['type'] !== 'message' || !Array.isArray(msg['content']))
    throw new UpstreamError('protocol', 'upstream answered with something other than an Anthropic Message');
  let text: string | null = null;
  const calls: OpenAiToolCall[] = [];
  for (const b of msg['content']) {
    if (!isObj(b)) continue;
    if (b['type'] === 'text' && typeof b['text'] === 'string') text = (text ?? '') + b['text'];
    else if (b['type'] === 'tool_use' && typeof b['id'] === 'string' && typeof b['name'] === 'string')
      calls.push({ id: b['id'], type: 'function', function: { name: b['name'], arguments: JSON.stringify(b['input'] ?? {}) } });
  }
  const usage: AnthropicUsageState = {};
  mergeUsage(usage, msg['usage']);
  const message: ChatCompletion['choices'][0]['message'] = { role: 'assistant', content: text, refusal: null };
  if (calls.length > 0) message.tool_calls = calls;
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason(msg['stop_reason']) }],
    usage: openAiUsage(usage),
  };
}

// ---------------------------------------------------------------------------------------------------
// Errors: Anthropic error body → OpenAI error body
// ---------------------------------------------------------------------------------------------------

/** OpenAI-shaped error body. */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Anthropic error `type` → OpenAI `type` and `code` (https://docs.anthropic.com/en/api/errors). */
const ERROR_MAP: Record<string, { type: string; code: string }> = {
  invalid_request_error: { type: 'invalid_request_error', code: 'invalid_request' },
  authentication_error: { type: 'authentication_error', code: 'invalid_api_key' },
  permission_error: { type: 'permission_error', code: 'permission_denied' },
  not_found_error: { type: 'invalid_request_error', code: 'not_found' },
  request_too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  rate_limit_error: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  billing_error: { type: 'invalid_request_error', code: 'billing_error' },
  timeout_error: { type: 'timeout', code: 'upstream_timeout' },
  api_error: { type: 'api_error', code: 'upstream_error' },
  overloaded_error: { type: 'api_error', code: 'overloaded' },
};

/** Translate an Anthropic `{type:'error', error:{type, message}}` object to an OpenAI error object. */
function openAiError(anthropicType: unknown, message: unknown, status: number): OpenAiErrorBody['error'] {
  const mapped = typeof anthropicType === 'string' ? ERROR_MAP[anthropicType] : undefined;
  const fallbackType = status >= 500 || status === 0 ? 'api_error' : 'invalid_request_error';
  const code = mapped?.code ?? (typeof anthropicType === 'string' && /^[a-z0-9_]{1,64}$/.test(anthropicType) ? anthropicType : 'upstream_error');
  return {
    message: typeof message === 'string' && message !== '' ? message : `The Anthropic API returned an error${status ? ` (HTTP ${status})` : ''}.`,
    type: mapped?.type ?? fallbackType,
    param: null,
    code,
  };
}

/**
 * Translate an upstream error answer into the OpenAI shape, keeping the status except that 529
 * (Anthropic's "overloaded") becomes 503 with `code: 'overloaded'`.
 * @param status upstream HTTP status
 * @param text upstream body; an Anthropic error object is translated, anything else (HTML from a
 *   proxy, empty body) gives a generic message naming the status (its text is not echoed).
 * @returns the status to answer with and the OpenAI error body
 */
export function fromAnthropicError(status: number, text: string): { status: number; body: OpenAiErrorBody } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const e = isObj(parsed) && isObj(parsed['error']) ? parsed['error'] : undefined;
  const outStatus = status === 529 ? 503 : status;
  const type = e?.['type'] ?? (status === 529 ? 'overloaded_error' : undefined);
  return { status: outStatus, body: { error: openAiError(type, e?.['message'], status) } };
}

// ---------------------------------------------------------------------------------------------------
// Streaming: Anthropic events → OpenAI chat.completion.chunk events
// ---------------------------------------------------------------------------------------------------

/** Options of {@link AnthropicStreamTranslator}. */
export interface StreamTranslatorOptions extends CompletionMeta {
  /** Emit a usage-only chunk (`choices: []`) before `[DONE]` (the request's `stream_options.include_usage`). */
  includeUsage: boolean;
}

/** The parts of an Anthropic stream event this translator consumes. */
export interface AnthropicStreamEvent {
  /** The SSE `event:` name (Anthropic repeats it as `type` in the data). */
  readonly event?: string | undefined;
  /** The SSE data: one JSON object. */
  readonly data: string;
}

const sse = (data: string): SseItem => ({ type: 'event', event: undefined, id: undefined, data });

/**
 * Stateful translator of one Anthropic Messages stream into OpenAI `chat.completion.chunk` events.
 *
 * Input (https://docs.anthropic.com/en/docs/build-with-claude/streaming): `message_start`, then per
 * content block `content_block_start` / `content_block_delta`* / `content_block_stop`, then
 * `message_delta` (stop_reason, cumulative usage) and `message_stop`; `ping` anywhere; `error` may
 * end the stream. Unknown event types and delta types (thinking, signatures, citations) are ignored,
 * as the Anthropic documentation asks of clients.
 *
 * Output, every chunk with the same `id`, `object:'chat.completion.chunk'`, `created` and `model`:
 * - at `message_start`: `delta: {role:'assistant', content:''}`;
 * - `text_delta` → `delta.content`;
 * - a `tool_use` block start → `delta.tool_calls: [{index: i, id, type:'function', function:{name,
 *   arguments:''}}]`, where i counts the tool calls of the message from 0;
 * - `input_json_delta` → `delta.tool_calls: [{index: i, function:{arguments: partial_json}}]` (a
 *   tool block that ends without any delta gets one with its start `input`, usually `{}`);
 * - the first `message_delta` with a stop_reason → `delta: {}` and `finish_reason`;
 * - `message_stop` → (finish chunk if still missing), a usage-only chunk when `includeUsage`
 *   (`choices: []`, `usage` per {@link fromAnthropicResponse}), then `data: [DONE]`;
 * - `error` → `data: {"error":{"message","type","code","param":null}}` and nothing more (no `[DONE]`);
 * - `ping` → nothing.
 * A stream that ends without `message_stop` simply ends: no `[DONE]` is invented.
 */
export class AnthropicStreamTranslator {
  private readonly head: { id: string; object: 'chat.completion.chunk'; created: number; model: string };
  private readonly includeUsage: boolean;
  private started = false;
  private finishSent = false;
  private state: 'open' | 'completed' | 'failed' = 'open';
  private stopReason: unknown = null;
  private readonly usage: AnthropicUsageState = {};
  /** Anthropic content-block index → tool call state. */
  private readonly tools = new Map<number, { index: number; sentArgs: boolean; input: unknown }>();
  private toolCount = 0;

  constructor(opts: StreamTranslatorOptions) {
    this.head = { id: opts.id, object: 'chat.completion.chunk', created: opts.created, model: opts.model };
    this.includeUsage = opts.includeUsage;
  }

  /** True once `message_stop` was translated (`[DONE]` emitted). */
  get completed(): boolean {
    return this.state === 'completed';
  }

  /** True once an `error` event was translated (the stream must end, without `[DONE]`). */
  get failed(): boolean {
    return this.state === 'failed';
  }

  /** True when nothing more will be emitted; the caller should stop reading the upstream. */
  get ended(): boolean {
    return this.state !== 'open';
  }

  /**
   * Translate one upstream event.
   * @returns the OpenAI events to send, in order (often one, sometimes none)
   * @throws UpstreamError('protocol') when the data is not a JSON object, or a tool-input delta
   *   refers to a block that never started as `tool_use`
   */
  push(ev: AnthropicStreamEvent): SseItem[] {
    if (this.state !== 'open') return [];
    let obj: unknown;
    try {
      obj = JSON.parse(ev.data);
    } catch {
      throw new UpstreamError('protocol', 'upstream sent a stream event that is not JSON');
    }
    if (!isObj(obj)) throw new UpstreamError('protocol', 'upstream sent a stream event that is not a JSON object');
    const type = typeof obj['type'] === 'string' ? obj['type'] : ev.event;
    const out: SseItem[] = [];
    switch (type) {
      case 'ping':
        break;
      case 'message_start':
        mergeUsage(this.usage, isObj(obj['message']) ? obj['message']['usage'] : undefined);
        this.start(out);
        break;
      case 'content_block_start': {
        this.start(out);
        const block = obj['content_block'];
        if (!isObj(block)) break;
        if (block['type'] === 'text' && typeof block['text'] === 'string' && block['text'] !== '') out.push(this.delta({ content: block['text'] }));
        else if (block['type'] === 'tool_use') {
          const index = this.toolCount++;
          this.tools.set(Number(obj['index']), { index, sentArgs: false, input: block['input'] });
          out.push(
            this.delta({
              tool_calls: [{ index, id: String(block['id'] ?? ''), type: 'function', function: { name: String(block['name'] ?? ''), arguments: '' } }],
            }),
          );
        }
        break;
      }
      case 'content_block_delta': {
        this.start(out);
        const d = obj['delta'];
        if (!isObj(d)) break;
        if (d['type'] === 'text_delta') {
          if (typeof d['text'] === 'string' && d['text'] !== '') out.push(this.delta({ content: d['text'] }));
        } else if (d['type'] === 'input_json_delta') {
          const tool = this.tools.get(Number(obj['index']));
          if (!tool) throw new UpstreamError('protocol', 'upstream sent tool input for a block that is not a tool call');
          const part = d['partial_json'];
          if (typeof part === 'string' && part !== '') {
            tool.sentArgs = true;
            out.push(this.delta({ tool_calls: [{ index: tool.index, function: { arguments: part } }] }));
          }
        }
        break;
      }
      case 'content_block_stop': {
        const tool = this.tools.get(Number(obj['index']));
        if (tool && !tool.sentArgs) {
          tool.sentArgs = true;
          const args = JSON.stringify(isObj(tool.input) ? tool.input : {});
          out.push(this.delta({ tool_calls: [{ index: tool.index, function: { arguments: args } }] }));
        }
        break;
      }
      case 'message_delta': {
        this.start(out);
        mergeUsage(this.usage, obj['usage']);
        const d = obj['delta'];
        if (isObj(d) && !isNil(d['stop_reason'])) this.stopReason = d['stop_reason'];
        if (!isNil(this.stopReason) && !this.finishSent) out.push(this.finish());
        break;
      }
      case 'message_stop':
        this.start(out);
        if (!this.finishSent) out.push(this.finish());
        if (this.includeUsage) out.push(sse(JSON.stringify({ ...this.head, choices: [], usage: openAiUsage(this.usage) })));
        out.push(sse('[DONE]'));
        this.state = 'completed';
        break;
      case 'error': {
        const e = isObj(obj['error']) ? obj['error'] : {};
        const { message, type: t, code } = openAiError(e['type'], e['message'], 0);
        out.push(sse(JSON.stringify({ error: { message, type: t, code, param: null } })));
        this.state = 'failed';
        break;
      }
      default:
        break; // new event types are to be ignored (Anthropic versioning policy)
    }
    return out;
  }

  /** The usage reported so far, in OpenAI terms (for callers that meter partial streams). */
  currentUsage(): OpenAiUsage {
    return openAiUsage(this.usage);
  }

  private start(out: SseItem[]): void {
    if (this.started) return;
    this.started = true;
    out.push(this.delta({ role: 'assistant', content: '' }));
  }

  private delta(delta: Obj): SseItem {
    return sse(JSON.stringify({ ...this.head, choices: [{ index: 0, delta, logprobs: null, finish_reason: null }] }));
  }

  private finish(): SseItem {
    this.finishSent = true;
    return sse(JSON.stringify({ ...this.head, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason(this.stopReason) }] }));
  }
}
