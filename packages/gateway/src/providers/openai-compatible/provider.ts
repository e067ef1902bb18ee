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
import { Pool, errors as undiciErrors, type Dispatcher } from 'undici';
import { SseParser } from '../../sse/parser.ts';
import type { SseItem } from '../../sse/types.ts';
import {
  UpstreamError,
  type Operation,
  type Provider,
  type ProviderCall,
  type ProviderResult,
  type ProviderState,
  type ResponseHeaders,
  type UpstreamErrorKind,
} from '../types.ts';

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

  constructor(private readonly opts: OpenAiCompatibleOptions) {
    this.id = opts.id;
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
    const payload = JSON.stringify(c.body);
    const headers: Record<string, string> = {
      ...(c.forwarded ?? {}),
      ...this.staticHeaders,
      'content-type': 'application/json',
      accept: c.stream ? 'text/event-stream' : 'application/json',
      'x-request-id': c.requestId,
    };
    const t = c.timeouts;
    // One controller for this exchange: client abort, total timeout and stream cap all end it.
    const ac = new AbortController();
    let abortKind: UpstreamErrorKind | null = null;
    const onClientAbort = () => {
      abortKind ??= 'aborted';
      ac.abort();
    };
    if (c.signal.aborted) throw new UpstreamError('aborted', 'client went away before the upstream call');
    c.signal.addEventListener('abort', onClientAbort, { once: true });
    const total = c.stream ? t.streamTotalMs : t.totalMs;
    let timer: NodeJS.Timeout | undefined;
    if (total > 0) {
      timer = setTimeout(() => {
        abortKind ??= 'total_timeout';
        ac.abort();
      }, total);
    }
    const cleanup = () => {
      if (timer) clearTimeout(timer);
      c.signal.removeEventListener('abort', onClientAbort);
    };

    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool.request({
        method: 'POST',
        path: this.basePath + PATHS[c.operation],
        headers,
        body: payload,
        signal: ac.signal,
        headersTimeout: t.firstByteMs,
        // Streams get our own precise idle timer below (undici's timers are coarse, ~1 s).
        bodyTimeout: c.stream ? 0 : t.totalMs > 0 ? t.totalMs : 0,
      });
    } catch (err) {
      cleanup();
      throw mapError(err, abortKind, t);
    }

    const outHeaders = passBackHeaders(res.headers);
    const ctype = headerValue(res.headers['content-type']) ?? '';
    outHeaders['content-type'] = ctype || 'application/json';
    const isStream = c.stream && res.statusCode >= 200 && res.statusCode < 300 && ctype.startsWith('text/event-stream');

    if (!isStream) {
      try {
        const chunks: Buffer[] = [];
        for await (const chunk of res.body) chunks.push(chunk as Buffer);
        return { kind: 'json', status: res.statusCode, headers: outHeaders, body: Buffer.concat(chunks) };
      } catch (err) {
        throw mapError(err, abortKind, t);
      } finally {
        cleanup();
      }
    }

    const body = res.body;
    // Idle timer: the longest gap between two body chunks (any bytes, comments included, count).
    const idle =
      t.idleMs > 0
        ? setTimeout(() => {
            abortKind ??= 'idle_timeout';
            body.destroy(new UpstreamError('idle_timeout', `upstream sent nothing for ${t.idleMs} ms`));
          }, t.idleMs)
        : undefined;
    async function* items(): AsyncGenerator<SseItem> {
      const parser = new SseParser();
      try {
        for await (const chunk of body) {
          idle?.refresh();
          const out = parser.push(chunk as Buffer);
          for (let i = 0; i < out.length; i++) yield out[i]!;
        }
        const rest = parser.end();
        for (let i = 0; i < rest.length; i++) yield rest[i]!;
      } catch (err) {
        throw mapError(err, abortKind, t);
      } finally {
        if (idle) clearTimeout(idle);
        cleanup();
        if (!body.destroyed) body.destroy();
      }
    }
    return { kind: 'stream', status: res.statusCode, headers: outHeaders, items: items() };
  }

  async close(): Promise<void> {
    await this.pool.close().catch(() => this.pool.destroy());
  }
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function passBackHeaders(h: Record<string, string | string[] | undefined>): ResponseHeaders {
  const out: ResponseHeaders = {};
  for (const k in h) {
    if (PASS_BACK.test(k)) {
      const v = headerValue(h[k]);
      if (v !== undefined) out[k] = v;
    }
  }
  return out;
}

/** Translate undici / socket errors into {@link UpstreamError}; messages carry no secrets. */
function mapError(err: unknown, abortKind: UpstreamErrorKind | null, t: ProviderCall['timeouts']): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (abortKind === 'aborted') return new UpstreamError('aborted', 'client disconnected', { cause: err });
  if (abortKind === 'total_timeout') return new UpstreamError('total_timeout', 'upstream did not finish in time', { cause: err });
  if (err instanceof undiciErrors.ConnectTimeoutError)
    return new UpstreamError('connect_timeout', `could not connect to upstream within ${t.connectMs} ms`, { cause: err });
  if (err instanceof undiciErrors.HeadersTimeoutError)
    return new UpstreamError('first_byte_timeout', `upstream sent no response headers within ${t.firstByteMs} ms`, { cause: err });
  if (err instanceof undiciErrors.BodyTimeoutError)
    return new UpstreamError('idle_timeout', `upstream sent nothing for ${t.idleMs} ms`, { cause: err });
  const code = (err as { code?: string })?.code ?? '';
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EAI_AGAIN')
    return new UpstreamError('connect', `upstream connection failed (${code})`, { cause: err });
  return new UpstreamError('protocol', `upstream exchange failed (${code || (err as Error)?.name || 'error'})`, { cause: err });
}
