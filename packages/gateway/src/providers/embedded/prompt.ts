/**
 * Request parsing for the embedded engine: OpenAI chat messages and completion prompts, sampling
 * parameters, and the prompt templates.
 *
 * Chat template, in order of preference:
 * 1. the GGUF's own `tokenizer.chat_template`, applied by node-llama-cpp (`resolveChatWrapper`, which
 *    uses an equivalent built-in wrapper when it recognises the template, else evaluates the Jinja);
 * 2. otherwise this plain fallback, one line per message then the assistant cue:
 *
 *        System: <system or developer message>
 *        User: <user message>
 *        Assistant: <assistant message>
 *        Tool: <tool message>
 *        Assistant:
 *
 *    preceded by BOS when the model wants one. With the fallback, "\nUser:" is an implicit stop
 *    string (so a base model does not write the user's next turn), and one leading space is removed
 *    from the reply (the model continues "Assistant:" with " text").
 */
import type { ChatHistoryItem } from 'node-llama-cpp';

/** A 400 answer: message, offending field, optional code. */
export class BadRequest extends Error {
  override readonly name = 'BadRequest';
  constructor(
    message: string,
    readonly param: string | null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export type Role = 'system' | 'user' | 'assistant' | 'tool';

export interface ChatMessage {
  readonly role: Role;
  readonly content: string;
}

/** Implicit stop strings with the fallback template. */
export const FALLBACK_STOPS: readonly string[] = ['\nUser:'];

const LABELS: Record<Role, string> = { system: 'System', user: 'User', assistant: 'Assistant', tool: 'Tool' };

const ROLE_MAP: Record<string, Role> = {
  system: 'system',
  developer: 'system',
  user: 'user',
  assistant: 'assistant',
  tool: 'tool',
  function: 'tool',
};

/** Text of an OpenAI message `content`: a string, null, or an array of text parts (joined by "\n"). */
function contentText(content: unknown, param: string): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const parts: string[] = [];
    content.forEach((part: unknown, i) => {
      const p = part as Record<string, unknown> | null;
      if (p && typeof p === 'object' && (p['type'] === 'text' || p['type'] === 'input_text') && typeof p['text'] === 'string') {
        parts.push(p['text']);
      } else if (p && typeof p === 'object' && p['type'] === 'refusal' && typeof p['refusal'] === 'string') {
        parts.push(p['refusal']);
      } else {
        const type = p && typeof p === 'object' ? String(p['type']) : typeof p;
        throw new BadRequest(`${param}[${i}]: content parts of type "${type}" are not supported by the embedded engine (text only)`, `${param}[${i}]`);
      }
    });
    return parts.join('\n');
  }
  throw new BadRequest(`${param}: expected a string or an array of content parts`, param);
}

/** Validates and normalises `messages`. */
export function parseMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new BadRequest('messages: expected a non-empty array', 'messages');
  return raw.map((m: unknown, i) => {
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw new BadRequest(`messages[${i}]: expected an object`, `messages[${i}]`);
    const rec = m as Record<string, unknown>;
    const role = typeof rec['role'] === 'string' ? ROLE_MAP[rec['role']] : undefined;
    if (!role) throw new BadRequest(`messages[${i}].role: unsupported role ${JSON.stringify(rec['role'])}`, `messages[${i}].role`);
    return { role, content: contentText(rec['content'], `messages[${i}].content`) };
  });
}

/** Renders messages with the plain fallback template (see module doc); BOS is not included. */
export function renderFallback(messages: readonly ChatMessage[]): string {
  let out = '';
  for (const m of messages) out += `${LABELS[m.role]}: ${m.content}\n`;
  return out + 'Assistant:';
}

/**
 * Messages as node-llama-cpp chat history, ending with an empty model turn to be completed.
 * Tool results become user turns (function calling is not supported by this engine yet).
 */
export function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const out: ChatHistoryItem[] = [];
  for (const m of messages) {
    switch (m.role) {
      case 'system':
        out.push({ type: 'system', text: m.content });
        break;
      case 'user':
        out.push({ type: 'user', text: m.content });
        break;
      case 'tool':
        out.push({ type: 'user', text: m.content });
        break;
      case 'assistant':
        out.push({ type: 'model', response: [m.content] });
        break;
    }
  }
  out.push({ type: 'model', response: [] });
  return out;
}

/** The completion prompt: a string, or an array of exactly one string, or an array of token ids. */
export function parsePrompt(raw: unknown): { text: string } | { tokens: number[] } {
  if (typeof raw === 'string') return { text: raw };
  if (Array.isArray(raw)) {
    if (raw.length === 1 && typeof raw[0] === 'string') return { text: raw[0] };
    if (raw.length > 0 && raw.every((t) => Number.isInteger(t) && (t as number) >= 0)) return { tokens: raw as number[] };
    if (raw.length > 1 && raw.every((t) => typeof t === 'string')) {
      throw new BadRequest('prompt: the embedded engine accepts one prompt per request', 'prompt');
    }
  }
  throw new BadRequest('prompt: expected a string, an array of one string, or an array of token ids', 'prompt');
}

/** Sampling and limits for one generation. */
export interface GenerationParams {
  /** Cap on generated tokens from the request; undefined = up to the context size. */
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number;
  /** 0 = disabled. Not an OpenAI field; accepted as llama.cpp servers do. */
  readonly topK: number;
  /** 0 = disabled. Not an OpenAI field; accepted as llama.cpp servers do. */
  readonly minP: number;
  readonly seed: number | undefined;
  readonly stop: readonly string[];
}

function num(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new BadRequest(`${key}: expected a number between ${min} and ${max}`, key);
  }
  return v;
}

function int(body: Record<string, unknown>, key: string, min: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new BadRequest(`${key}: expected an integer ≥ ${min}`, key);
  return v;
}

/**
 * Reads sampling parameters with OpenAI semantics and defaults (temperature 1, top_p 1, no top-k,
 * no min-p). `max_completion_tokens` wins over `max_tokens` when both are set.
 * Rejects what this engine cannot honour: n ≠ 1, logprobs, tools, echo, suffix, best_of > 1.
 */
export function parseParams(body: Record<string, unknown>, chat: boolean): GenerationParams {
  const n = body['n'];
  if (n !== undefined && n !== null && n !== 1) throw new BadRequest('n: the embedded engine supports only n = 1', 'n');
  const bestOf = body['best_of'];
  if (!chat && bestOf !== undefined && bestOf !== null && bestOf !== 1) throw new BadRequest('best_of: the embedded engine supports only best_of = 1', 'best_of');
  const logprobs = body['logprobs'];
  if (logprobs !== undefined && logprobs !== null && logprobs !== false) throw new BadRequest('logprobs: not supported by the embedded engine', 'logprobs');
  const topLogprobs = body['top_logprobs'];
  if (topLogprobs !== undefined && topLogprobs !== null && topLogprobs !== 0) throw new BadRequest('top_logprobs: not supported by the embedded engine', 'top_logprobs');
  if (chat) {
    const tools = body['tools'];
    if (Array.isArray(tools) && tools.length > 0) throw new BadRequest('tools: function calling is not supported by the embedded engine', 'tools');
    const functions = body['functions'];
    if (Array.isArray(functions) && functions.length > 0) throw new BadRequest('functions: function calling is not supported by the embedded engine', 'functions');
    // response_format is handled by structured.ts (grammars).
  } else {
    if (body['echo'] === true) throw new BadRequest('echo: not supported by the embedded engine', 'echo');
    const suffix = body['suffix'];
    if (typeof suffix === 'string' && suffix.length > 0) throw new BadRequest('suffix: not supported by the embedded engine', 'suffix');
  }

  const mct = int(body, 'max_completion_tokens', 0);
  const mt = int(body, 'max_tokens', 0);
  const maxTokens = mct ?? mt;

  const stopRaw = body['stop'];
  let stop: string[] = [];
  if (typeof stopRaw === 'string') stop = [stopRaw];
  else if (Array.isArray(stopRaw)) {
    stopRaw.forEach((s, i) => {
      if (typeof s !== 'string') throw new BadRequest(`stop[${i}]: expected a string`, 'stop');
    });
    stop = stopRaw as string[];
  } else if (stopRaw !== undefined && stopRaw !== null) throw new BadRequest('stop: expected a string or an array of strings', 'stop');

  const seedRaw = body['seed'];
  if (seedRaw !== undefined && seedRaw !== null && (typeof seedRaw !== 'number' || !Number.isSafeInteger(seedRaw))) {
    throw new BadRequest('seed: expected an integer', 'seed');
  }

  return {
    maxTokens,
    temperature: num(body, 'temperature', 0, 2) ?? 1,
    topP: num(body, 'top_p', 0, 1) ?? 1,
    topK: int(body, 'top_k', 0) ?? 0,
    minP: num(body, 'min_p', 0, 1) ?? 0,
    seed: typeof seedRaw === 'number' ? seedRaw : undefined,
    stop: stop.filter((s) => s.length > 0),
  };
}
