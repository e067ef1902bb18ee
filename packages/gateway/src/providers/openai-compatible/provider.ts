/**
 * Adapter for OpenAI-compatible HTTP engines: vLLM, SGLang, llama.cpp server, Ollama, TGI, LM Studio
 * and hosted OpenAI-style APIs.
 *
 * One undici Pool (keep-alive) per backend. Timeouts: connect (pool connector), first byte
 * (undici `headersTimeout`), idle between body chunks (undici `bodyTimeout`, streams only), total
 * (our own timer; non-streaming only unless `streamTotalMs` is set). The call's AbortSignal aborts the
 * upstream request at once (client disconnect).
 *
 * Only these headers reach the upstream: content-type, accept, the backend's own credential
 * (`authorization: Bearer <env var value>`), `x-request-id` (the gateway's request id), the backend's
 * configured static headers, and client headers explicitly listed in `forward_headers`. The client's
 * gateway key and hop-by-hop headers therefore never reach the upstream.
 */
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

/** Options for {@link OpenAiCompatibleProvider}. */
export interface OpenAiCompatibleOptions {
  id: string;
  /** Base URL including the version prefix, e.g. `http://127.0.0.1:8000/v1`. */
  baseUrl: string;
  /** The backend's credential (already resolved from its env var), or undefined. Never logged. */
  apiKey?: string | undefined;
  /** Static extra headers. */
  headers?: Record<string, string>;
  /** Keep-alive connections in the pool. */
  maxConnections?: number;
  /** Connect timeout, ms. */
  connectTimeoutMs?: number;
  /** Largest non-streaming upstream body, bytes (default 64 MiB); larger → UpstreamError('protocol'). */
  maxResponseBytes?: number;
  /** Largest single SSE event, bytes (default 16 MiB); larger → the stream ends with an error. */
  maxEventBytes?: number;
}

/** Per-call extra: client headers to pass through (only those named in `forward_headers`). */
export interface ForwardedHeaders {
  readonly forwarded?: Record<string, string>;
}

const PATHS: Record<Operation, string> = {
  'chat.completions': '/chat/completions',
  completions: '/completions',
  embeddings: '/embeddings',
  responses: '/responses',
};

/** Upstream response headers passed back to the client (rate limits and retry hints). */
const PASS_BACK = /^(retry-after|retry-after-ms|x-ratelimit-[a-z-]+|openai-processing-ms)$/;

/** See module doc. */
export class OpenAiCompatibleProvider implements Provider {
  readonly kind = 'openai-compatible';
  readonly id: string;
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly staticHeaders: Record<string, string>;

  /** The credential as bytes (for scrubbing echoes); undefined when none or too short to matter. */
  private readonly secret: Buffer | undefined;
  private readonly maxResponseBytes: number;
  private readonly maxEventChars: number;

  constructor(private readonly opts: OpenAiCompatibleOptions) {
    this.id = opts.id;
    this.secret = opts.apiKey && opts.apiKey.length >= 6 ? Buffer.from(opts.apiKey, 'utf8') : undefined;
    this.maxResponseBytes = opts.maxResponseBytes ?? 64 * 1024 * 1024;
    this.maxEventChars = opts.maxEventBytes ?? DEFAULT_MAX_EVENT_CHARS;
    const url = new URL(opts.baseUrl);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(url.origin, {
      connections: opts.maxConnections ?? 128,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: { timeout: opts.connectTimeoutMs ?? 5_000 },
      // headersTimeout/bodyTimeout are set per request
    });
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) h[k.toLowerCase()] = v;
    if (opts.apiKey) h['authorization'] = `Bearer ${opts.apiKey}`;
    this.staticHeaders = h;
  }

  supports(op: Operation): boolean {
    return op in PATHS;
  }

  async start(): Promise<void> {}

  state(): ProviderState {
    return { ready: true };
  }

  async call(c: ProviderCall & ForwardedHeaders): Promise<ProviderResult> {
    const payload = c.bodyText ?? JSON.stringify(c.body);
    const headers: Record<string, string> = {
      ...(c.forwarded ?? {}),
      ...this.staticHeaders,
      'content-type': 'application/json',
      accept: c.stream ? 'text/event-stream' : 'application/json',
      'x-request-id': c.requestId,
    };
    if (c.signal.aborted) throw new UpstreamError('aborted', 'client went away before the upstream call');
    const x = new Exchange(c);
    const res = await x.headers(this.pool, { method: 'POST', path: this.basePath + PATHS[c.operation], headers, body: payload });

    const outHeaders = passBackHeaders(res.headers, PASS_BACK);
    const ctype = headerValue(res.headers['content-type']) ?? '';
    outHeaders['content-type'] = ctype || 'application/json';
    const isStream = c.stream && res.statusCode >= 200 && res.statusCode < 300 && ctype.startsWith('text/event-stream');
    const body = res.body;

    const nextChunk = x.reader(body);

    if (!isStream) {
      try {
        const chunks: Buffer[] = [];
        let size = 0;
        for (;;) {
          const r = await nextChunk();
          if (r.done) break;
          size += r.value.length;
          if (size > this.maxResponseBytes) {
            throw new UpstreamError('protocol', `upstream response body exceeded ${this.maxResponseBytes} bytes`);
          }
          chunks.push(r.value);
        }
        return { kind: 'json', status: res.statusCode, headers: outHeaders, body: this.scrubBuffer(Buffer.concat(chunks, size)) };
      } catch (err) {
        throw mapError(err, x.kind, c.timeouts);
      } finally {
        x.cleanup();
        if (!body.destroyed) body.destroy();
      }
    }

    const maxEventChars = this.maxEventChars;
    const scrub = (ev: SseItem): SseItem => this.scrubItem(ev);
    async function* items(): AsyncGenerator<SseItem> {
      const parser = new SseParser({ maxEventChars });
      try {
        for (;;) {
          const r = await nextChunk();
          if (r.done) break;
          const out = parser.push(r.value);
          for (let i = 0; i < out.length; i++) yield scrub(out[i]!);
        }
        const rest = parser.end();
        for (let i = 0; i < rest.length; i++) yield scrub(rest[i]!);
      } catch (err) {
        if (err instanceof SseLimitError) throw new UpstreamError('protocol', `upstream sent an event larger than ${err.limit} characters`);
        throw mapError(err, x.kind, c.timeouts);
      } finally {
        x.cleanup();
        if (!body.destroyed) body.destroy();
      }
    }
    return { kind: 'stream', status: res.statusCode, headers: outHeaders, items: items() };
  }

  /** Replace the backend's own credential wherever an upstream body echoes it. */
  private scrubBuffer(b: Buffer): Buffer {
    const secret = this.secret;
    if (!secret || b.indexOf(secret) === -1) return b;
    return Buffer.from(b.toString('latin1').split(secret.toString('latin1')).join('[redacted]'), 'latin1');
  }

  private scrubItem(ev: SseItem): SseItem {
    const key = this.opts.apiKey;
    if (!this.secret || !key) return ev;
    if (ev.type === 'comment') return ev.text.includes(key) ? { type: 'comment', text: ev.text.split(key).join('[redacted]') } : ev;
    return ev.data.includes(key) ? { ...ev, data: ev.data.split(key).join('[redacted]') } : ev;
  }

  /**
   * Active health check: `GET <base_url>/models` (or `path`: relative to the base URL, or absolute
   * from the host when it starts with `/`), with the backend's credential; 2xx = healthy.
   * @throws Error with the status or the connection problem (never a header value)
   */
  async healthCheck(path: string | undefined, signal: AbortSignal): Promise<void> {
    const p = path === undefined ? `${this.basePath}/models` : path.startsWith('/') ? path : `${this.basePath}/${path}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool.request({ method: 'GET', path: p, headers: { ...this.staticHeaders, accept: 'application/json' }, signal, headersTimeout: 0, bodyTimeout: 0 });
    } catch (err) {
      throw new Error(signal.aborted ? 'health check timed out' : `health check could not connect (${(err as { code?: string }).code ?? 'error'})`);
    }
    await res.body.dump().catch(() => undefined);
    if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`health check answered HTTP ${res.statusCode}`);
  }

  async close(): Promise<void> {
    await this.pool.close().catch(() => this.pool.destroy());
  }
}



