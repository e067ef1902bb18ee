/**
 * Pieces shared by the HTTP engine adapters (openai-compatible/, anthropic/): response headers worth
 * passing back, and undici / socket errors turned into {@link UpstreamError}s whose messages carry
 * no secrets.
 */
import { errors as undiciErrors, type Dispatcher } from 'undici';
import { UpstreamError, type ProviderCall, type ResponseHeaders, type UpstreamErrorKind } from './types.ts';

/** The first value of a response header. */
export function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The response headers whose (lower-case) names match `passBack`, first value each.
 * @param passBack e.g. `/^(retry-after|x-ratelimit-[a-z-]+)$/`
 */
export function passBackHeaders(h: Record<string, string | string[] | undefined>, passBack: RegExp): ResponseHeaders {
  const out: ResponseHeaders = {};
  for (const k in h) {
    if (passBack.test(k)) {
      const v = headerValue(h[k]);
      if (v !== undefined) out[k] = v;
    }
  }
  return out;
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNRESET', 'UND_ERR_SOCKET', 'EAI_AGAIN']);

/**
 * Translates an undici / socket error into an {@link UpstreamError}.
 * @param abortKind why the exchange's own controller aborted it (our timers, the client), or null
 * @param t the call's timeouts (ms), named in the messages
 */
export function mapError(err: unknown, abortKind: UpstreamErrorKind | null, t: ProviderCall['timeouts']): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (abortKind === 'aborted') return new UpstreamError('aborted', 'client disconnected', { cause: err });
  if (abortKind === 'total_timeout') return new UpstreamError('total_timeout', 'upstream did not finish in time', { cause: err });
  if (abortKind === 'first_byte_timeout')
    return new UpstreamError('first_byte_timeout', `upstream sent no response headers within ${t.firstByteMs} ms`, { cause: err });
  if (abortKind === 'idle_timeout') return new UpstreamError('idle_timeout', `upstream sent nothing for ${t.idleMs} ms`, { cause: err });
  if (err instanceof undiciErrors.ConnectTimeoutError)
    return new UpstreamError('connect_timeout', `could not connect to upstream within ${t.connectMs} ms`, { cause: err });
  if (err instanceof undiciErrors.HeadersTimeoutError)
    return new UpstreamError('first_byte_timeout', `upstream sent no response headers within ${t.firstByteMs} ms`, { cause: err });
  if (err instanceof undiciErrors.BodyTimeoutError) return new UpstreamError('idle_timeout', `upstream sent nothing for ${t.idleMs} ms`, { cause: err });
  const code = (err as { code?: string })?.code ?? '';
  if (CONNECT_CODES.has(code)) return new UpstreamError('connect', `upstream connection failed (${code})`, { cause: err });
  return new UpstreamError('protocol', `upstream exchange failed (${code || (err as Error)?.name || 'error'})`, { cause: err });
}

/**
 * The timing and cancellation of one HTTP exchange with an engine, shared by the HTTP adapters:
 * one AbortController that the client's signal and every timer end, remembering why (`kind`);
 * the total timer (`totalMs`, or `streamTotalMs` for streams; 0 = none) and the first-byte timer
 * (from now — pool queueing included — until response headers), and an idle timer between body
 * chunks that runs only while we wait for the upstream (never while the client is slow to read).
 * All times are ms.
 */
export class Exchange {
  readonly #ac = new AbortController();
  #kind: UpstreamErrorKind | null = null;
  readonly #onClientAbort = () => this.abort('aborted');
  readonly #totalTimer: NodeJS.Timeout | undefined;
  #firstByteTimer: NodeJS.Timeout | undefined;
  #idle: NodeJS.Timeout | undefined;
  #waiting = false;

  constructor(private readonly c: ProviderCall) {
    const t = c.timeouts;
    c.signal.addEventListener('abort', this.#onClientAbort, { once: true });
    const total = c.stream ? t.streamTotalMs : t.totalMs;
    this.#totalTimer = total > 0 ? setTimeout(() => this.abort('total_timeout'), total) : undefined;
    this.#firstByteTimer = t.firstByteMs > 0 ? setTimeout(() => this.abort('first_byte_timeout'), t.firstByteMs) : undefined;
  }

  /** Aborts the exchange; the first reason given is the one reported. */
  abort(kind: UpstreamErrorKind): void {
    this.#kind ??= kind;
    this.#ac.abort();
  }

  /** The exchange's signal (for undici). */
  get signal(): AbortSignal {
    return this.#ac.signal;
  }

  /** Why the exchange was aborted, or null. */
  get kind(): UpstreamErrorKind | null {
    return this.#kind;
  }

  /**
   * Sends the request and waits for the response headers. undici notices the abort of a request
   * queued behind a busy pool only at dispatch, so the abort is raced here.
   * @throws UpstreamError (mapped with {@link mapError}); the exchange is then cleaned up
   */
  async headers(pool: Dispatcher, opts: Omit<Dispatcher.RequestOptions, 'signal' | 'headersTimeout' | 'bodyTimeout'>): Promise<Dispatcher.ResponseData> {
    let onAbortRace: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbortRace = () => reject(new Error('aborted'));
      this.#ac.signal.addEventListener('abort', onAbortRace, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      // Body gaps are timed by our own idle timer (undici's timers are coarse, ~1 s).
      const pending = pool.request({ ...opts, signal: this.#ac.signal, headersTimeout: this.c.timeouts.firstByteMs, bodyTimeout: 0 });
      pending.catch(() => undefined);
      return await Promise.race([pending, aborted]);
    } catch (err) {
      this.cleanup();
      throw mapError(err, this.#kind, this.c.timeouts);
    } finally {
      if (this.#firstByteTimer) clearTimeout(this.#firstByteTimer);
      this.#firstByteTimer = undefined;
      this.#ac.signal.removeEventListener('abort', onAbortRace!);
    }
  }

  /**
   * Reads `body` chunk by chunk; for streaming calls a gap longer than `idleMs` while waiting
   * aborts the exchange with `idle_timeout`.
   */
  reader(body: AsyncIterable<Buffer>): () => Promise<IteratorResult<Buffer>> {
    const idleMs = this.c.stream ? this.c.timeouts.idleMs : 0;
    this.#idle =
      idleMs > 0
        ? setTimeout(() => {
            if (this.#waiting) this.abort('idle_timeout');
          }, idleMs)
        : undefined;
    const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    return async () => {
      this.#waiting = true;
      this.#idle?.refresh(); // (re)starts the countdown, also after it fired while we were not waiting
      try {
        return await it.next();
      } finally {
        this.#waiting = false;
      }
    };
  }

  /** Clears every timer and the client-abort listener (idempotent). */
  cleanup(): void {
    if (this.#totalTimer) clearTimeout(this.#totalTimer);
    if (this.#firstByteTimer) clearTimeout(this.#firstByteTimer);
    if (this.#idle) clearTimeout(this.#idle);
    this.c.signal.removeEventListener('abort', this.#onClientAbort);
  }
}
