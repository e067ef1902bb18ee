/**
 * Adapter for the native Anthropic Messages API (`POST {baseUrl}/v1/messages`,
 * https://docs.anthropic.com/en/api/messages). Serves `chat.completions` only: the gateway's OpenAI
 * request is translated to a Messages request, and the answer back to an OpenAI `chat.completion`
 * or a stream of `chat.completion.chunk` events ending with `data: [DONE]` (translate.ts).
 *
 * ## Field mapping (OpenAI chat.completions → Anthropic Messages)
 * | OpenAI | Anthropic |
 * |---|---|
 * | `model` | `model` (the upstream model name the gateway put there) |
 * | `max_completion_tokens` ?? `max_tokens` | `max_tokens` (required upstream; `defaultMaxTokens`, 4096, when absent) |
 * | `system` / `developer` messages (anywhere) | top-level `system`: a string for one string message, else text blocks in order |
 * | `user` content string / `text` parts | user turn, string or `text` blocks |
 * | `image_url` part, `data:<type>;base64,…` | `{type:'image', source:{type:'base64', media_type, data}}` (`detail` ignored) |
 * | `image_url` part, http(s) URL | `{type:'image', source:{type:'url', url}}` |
 * | `assistant` content (text / refusal parts) | assistant turn text |
 * | `assistant.tool_calls[]` | `tool_use` blocks `{id, name, input: JSON.parse(arguments)}` ("" → `{}`; not a JSON object → 400) |
 * | `tool` messages | `tool_result` blocks `{tool_use_id, content}` in a user turn |
 * | consecutive same-role turns (incl. tool results followed by user text) | merged into one turn (Anthropic requires alternation) |
 * | `tools[]` (`type:'function'`) | `tools[]` `{name, description, input_schema: parameters ?? {type:'object',properties:{}}}` |
 * | `tool_choice` auto / none / required / {function:{name}} | `{type:'auto'}` / `{type:'none'}` / `{type:'any'}` / `{type:'tool', name}` |
 * | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
 * | `temperature`, `top_p`, `top_k` | same (not rescaled: Anthropic's temperature range is 0–1, it rejects more) |
 * | `stop` (string or array) | `stop_sequences` |
 * | `stream` | `stream` |
 * | `safety_identifier` ?? `user` | `metadata.user_id` |
 *
 * Dropped (no effect on what is generated): `stream_options` (only `include_usage` matters, and it is
 * honoured here: a usage-only chunk precedes `[DONE]`), `seed` (OpenAI documents it as best-effort;
 * the Messages API has no seed), `metadata` (OpenAI stored-completion tags), `service_tier`,
 * `prompt_cache_key`, `prediction` (latency hints), `name` and `annotations` on messages, `detail`
 * on images. Refused with 400 `unsupported_parameter` (naming the field) unless neutral: `n` ≠ 1,
 * `logprobs`, `top_logprobs`, `response_format` other than text, `frequency_penalty`,
 * `presence_penalty`, `logit_bias`, non-text `modalities`, `audio`, `store: true`, legacy
 * `functions`/`function_call`/`function` role, `web_search_options`, `reasoning_effort`,
 * `verbosity`, `tools[].function.strict`, non-function tools and tool choices, non-text/image content
 * parts (audio, files), and any other unknown top-level field. Malformed values → 400
 * `invalid_parameter`. Such requests never reach the upstream.
 *
 * Note: a trailing assistant message is sent as is; Anthropic treats it as a prefill that the reply
 * continues (OpenAI would start a new turn).
 *
 * ## Response mapping
 * See {@link fromAnthropicResponse} and {@link AnthropicStreamTranslator}: text → `content`, `tool_use`
 * → `tool_calls`, stop_reason → finish_reason, usage input (+ cache creation + cache read) →
 * prompt_tokens, output → completion_tokens. Upstream errors (`{type:'error', error:{type,
 * message}}`, https://docs.anthropic.com/en/api/errors) → OpenAI `{error:{message, type, code,
 * param:null}}` with the same status, except 529 → 503 `code: 'overloaded'`. The completion `id` is
 * `chatcmpl-<random>`, `model` is the upstream model name that was requested.
 *
 * ## Transport (as the openai-compatible adapter)
 * One undici Pool (keep-alive) per backend. Timeouts: connect (pool connector), first byte (until
 * response headers), idle between body chunks (streams), total (non-streaming; `streamTotalMs` for
 * streams). The call's AbortSignal aborts the upstream request at once.
 *
 * Headers sent: `x-api-key` (the backend credential; never logged, and scrubbed from anything the
 * upstream echoes), `anthropic-version` (https://docs.anthropic.com/en/api/versioning, default
 * 2023-06-01), `content-type`, `accept`, `x-request-id`, plus the backend's static headers (e.g.
 * `anthropic-beta`), which cannot override the former. Client headers are never forwarded. Passed
 * back: `retry-after` and `anthropic-ratelimit-*`. Health check: `GET <base_url>/v1/models`.
 */
import { randomBytes } from 'node:crypto';
import { Pool, type Dispatcher } from 'undici';
import { DEFAULT_MAX_EVENT_CHARS, SseLimitError, SseParser } from '../../sse/parser.ts';
import type { SseItem } from '../../sse/types.ts';
import {
  UpstreamError,
  type Operation,
  type Provider,
  type ProviderCall,
  type ProviderResult,
  type ProviderState,
  type ResponseHeaders,
} from '../types.ts';
import { Exchange, headerValue, mapError, passBackHeaders } from '../http-common.ts';
import {
  AnthropicStreamTranslator,
  AnthropicTranslationError,
  fromAnthropicError,
  fromAnthropicResponse,
  toAnthropicRequest,
  type AnthropicRequest,
} from './translate.ts';

/** Options for {@link AnthropicProvider}. */
export interface AnthropicProviderOptions {
  /** Backend id from configuration. */
  id: string;
  /** Origin (and optional path prefix) of the API, e.g. `https://api.anthropic.com`; `/v1/messages` is appended. */
  baseUrl: string;
  /** The API key (already resolved from its env var), sent as `x-api-key`; undefined sends none. Never logged. */
  apiKey?: string | undefined;
  /** Static extra headers (e.g. `anthropic-beta`); cannot override x-api-key, anthropic-version, content-type, accept, x-request-id. */
  headers?: Record<string, string> | undefined;
  /** Keep-alive connections in the pool (default 128). */
  maxConnections?: number | undefined;
  /** Connect timeout, ms (default 5000). */
  connectTimeoutMs?: number | undefined;
  /** `anthropic-version` header (default `2023-06-01`). */
  anthropicVersion?: string | undefined;
  /** `max_tokens` sent when the request sets no cap (default 4096). */
  defaultMaxTokens?: number | undefined;
  /** Largest non-streaming upstream body, bytes (default 64 MiB); larger → UpstreamError('protocol'). */
  maxResponseBytes?: number | undefined;
  /** Largest single SSE event, characters (default 16 Mi); larger → the stream fails with UpstreamError('protocol'). */
  maxEventBytes?: number | undefined;
}

/** Upstream response headers passed back to the client (rate limits and retry hints). */
const PASS_BACK = /^(retry-after|anthropic-ratelimit-[a-z-]+)$/;

const MESSAGES_PATH = '/v1/messages';

const ignore = (): void => {};

/** After the last event, how long (ms) and how much (bytes) to read on, to end the body cleanly (keep-alive). */
const DRAIN_MS = 250;
const DRAIN_BYTES = 64 * 1024;

/** See module doc. */
export class AnthropicProvider implements Provider {
  readonly kind = 'anthropic';
  readonly id: string;
  private readonly pool: Pool;
  /** Path prefix of the base URL ('' for https://api.anthropic.com). */
  private readonly prefix: string;
  private readonly path: string;
  private readonly staticHeaders: Record<string, string>;
  private readonly apiKey: string | undefined;
  private readonly defaultMaxTokens: number;
  private readonly maxResponseBytes: number;
  private readonly maxEventChars: number;

  constructor(opts: AnthropicProviderOptions) {
    this.id = opts.id;
    // Keys shorter than this are too short to scrub without mangling unrelated text.
    this.apiKey = opts.apiKey && opts.apiKey.length >= 6 ? opts.apiKey : undefined;
    this.defaultMaxTokens = opts.defaultMaxTokens ?? 4096;
    this.maxResponseBytes = opts.maxResponseBytes ?? 64 * 1024 * 1024;
    this.maxEventChars = opts.maxEventBytes ?? DEFAULT_MAX_EVENT_CHARS;
    const url = new URL(opts.baseUrl);
    this.prefix = url.pathname.replace(/\/+$/, '');
    this.path = this.prefix + MESSAGES_PATH;
    this.pool = new Pool(url.origin, {
      connections: opts.maxConnections ?? 128,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: { timeout: opts.connectTimeoutMs ?? 5_000 },
    });
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) h[k.toLowerCase()] = v;
    delete h['authorization']; // the credential travels only as x-api-key
    if (opts.apiKey) h['x-api-key'] = opts.apiKey;
    h['anthropic-version'] = opts.anthropicVersion ?? '2023-06-01';
    this.staticHeaders = h;
  }

  supports(op: Operation): boolean {
    return op === 'chat.completions';
  }

  async start(): Promise<void> {}

  state(): ProviderState {
    return { ready: true };
  }

  async call(c: ProviderCall): Promise<ProviderResult> {
    if (c.signal.aborted) throw new UpstreamError('aborted', 'client went away before the upstream call');
    if (c.operation !== 'chat.completions')
      return jsonResult(404, { error: { message: `The Anthropic backend '${this.id}' serves chat.completions only.`, type: 'invalid_request_error', param: null, code: 'unsupported_operation' } });

    let request: AnthropicRequest;
    try {
      request = toAnthropicRequest(c.body, { defaultMaxTokens: this.defaultMaxTokens });
    } catch (err) {
      if (err instanceof AnthropicTranslationError)
        return jsonResult(400, { error: { message: err.message, type: 'invalid_request_error', param: err.param, code: err.code } });
      throw err;
    }
    if (c.stream) request.stream = true;
    else delete request.stream;

    const so = c.body['stream_options'] as Record<string, unknown> | null | undefined;
    const meta = {
      id: 'chatcmpl-' + randomBytes(12).toString('hex'),
      model: request.model,
      created: Math.floor(Date.now() / 1000),
    };

    const headers: Record<string, string> = {
      ...this.staticHeaders,
      'content-type': 'application/json',
      accept: c.stream ? 'text/event-stream' : 'application/json',
      'x-request-id': c.requestId,
    };
    const x = new Exchange(c);
    const res = await x.headers(this.pool, { method: 'POST', path: this.path, headers, body: JSON.stringify(request) });

    const outHeaders = passBackHeaders(res.headers, PASS_BACK);
    const status = res.statusCode;
    const ctype = headerValue(res.headers['content-type']) ?? '';
    const ok = status >= 200 && status < 300;
    const body = res.body;

    const nextChunk = x.reader(body);
    const release = () => {
      x.cleanup();
      if (!body.destroyed) {
        body.on('error', ignore); // undici reports an early destroy as an 'error' event (RequestAbortedError)
        body.destroy();
      }
    };

    if (!(c.stream && ok)) {
      try {
        const chunks: Buffer[] = [];
        let size = 0;
        for (;;) {
          const r = await nextChunk();
          if (r.done) break;
          size += r.value.length;
          if (size > this.maxResponseBytes) throw new UpstreamError('protocol', `upstream response body exceeded ${this.maxResponseBytes} bytes`);
          chunks.push(r.value);
        }
        const text = Buffer.concat(chunks, size).toString('utf8');
        if (!ok) {
          const e = fromAnthropicError(status, text);
          return jsonResult(e.status, e.body, outHeaders, this.apiKey);
        }
        let msg: unknown;
        try {
          msg = JSON.parse(text);
        } catch {
          throw new UpstreamError('protocol', 'upstream answered with a body that is not JSON');
        }
        return jsonResult(200, fromAnthropicResponse(msg, meta), outHeaders, this.apiKey);
      } catch (err) {
        throw mapError(err, x.kind, c.timeouts);
      } finally {
        release();
      }
    }

    if (!ctype.startsWith('text/event-stream')) {
      release();
      throw new UpstreamError('protocol', `upstream answered a streaming request with content-type '${ctype.slice(0, 64)}'`);
    }
    const translator = new AnthropicStreamTranslator({ ...meta, includeUsage: so?.['include_usage'] === true });
    const maxEventChars = this.maxEventChars;
    const key = this.apiKey;
    /** Reads what is left of the body for at most DRAIN_MS and DRAIN_BYTES; never throws. */
    const drain = async (): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<null>((r) => (timer = setTimeout(() => r(null), DRAIN_MS)));
      try {
        for (let left = DRAIN_BYTES; left > 0; ) {
          const next = nextChunk();
          next.catch(ignore);
          const r = await Promise.race([next, expired]);
          if (r === null || r.done) return;
          left -= r.value.length;
        }
      } catch {
        // aborted or reset: the connection is dropped anyway
      } finally {
        clearTimeout(timer);
      }
    };
    async function* items(): AsyncGenerator<SseItem> {
      const parser = new SseParser({ maxEventChars });
      try {
        for (;;) {
          const r = await nextChunk();
          if (r.done) break;
          for (const ev of parser.push(r.value)) {
            if (ev.type !== 'event') continue; // Anthropic sends no comments; liveness is judged on bytes
            for (const out of translator.push(ev)) yield scrubItem(out, key);
            if (translator.ended) {
              // message_stop or error: nothing more to relay. Read the end of the body (normally
              // already in flight) so that the keep-alive connection can be reused.
              await drain();
              return;
            }
          }
        }
        for (const ev of parser.end()) {
          if (ev.type === 'event') for (const out of translator.push(ev)) yield scrubItem(out, key);
        }
        // An upstream that closes without message_stop gets no invented [DONE]: the stream just ends.
      } catch (err) {
        if (err instanceof SseLimitError) throw new UpstreamError('protocol', `upstream sent an event larger than ${err.limit} characters`);
        throw mapError(err, x.kind, c.timeouts);
      } finally {
        release();
      }
    }
    return { kind: 'stream', status, headers: { ...outHeaders, 'content-type': 'text/event-stream' }, items: items() };
  }

  /**
   * Active health check: `GET <base_url>/v1/models` (Anthropic's Models API,
   * https://docs.anthropic.com/en/api/models-list: authenticated, free), or `path` (relative to the
   * base URL, or absolute from the host when it starts with `/`), with the backend's headers; 2xx = healthy.
   * @throws Error with the status or the connection problem (never a header value)
   */
  async healthCheck(path: string | undefined, signal: AbortSignal): Promise<void> {
    const p = path === undefined ? `${this.prefix}/v1/models` : path.startsWith('/') ? path : `${this.prefix}/${path}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool.request({ method: 'GET', path: p, headers: { ...this.staticHeaders, accept: 'application/json' }, signal, headersTimeout: 0, bodyTimeout: 0 });
    } catch (err) {
      throw new Error(signal.aborted ? 'health check timed out' : `health check could not connect (${(err as { code?: string }).code ?? 'error'})`);
    }
    await res.body.dump().catch(ignore);
    if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`health check answered HTTP ${res.statusCode}`);
  }

  async close(): Promise<void> {
    await this.pool.close().catch(() => this.pool.destroy());
  }
}

/** A JSON answer; the credential is replaced wherever the (translated) body quotes it. */
function jsonResult(status: number, body: unknown, headers: ResponseHeaders = {}, key?: string): ProviderResult {
  return { kind: 'json', status, headers: { ...headers, 'content-type': 'application/json' }, body: Buffer.from(scrub(JSON.stringify(body), key), 'utf8') };
}

function scrub(s: string, key: string | undefined): string {
  return key && s.includes(key) ? s.split(key).join('[redacted]') : s;
}

function scrubItem(ev: SseItem, key: string | undefined): SseItem {
  if (!key || ev.type !== 'event' || !ev.data.includes(key)) return ev;
  return { ...ev, data: scrub(ev.data, key) };
}



