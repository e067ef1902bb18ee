/**
 * Pieces shared by the HTTP engine adapters (openai-compatible/, anthropic/): response headers worth
 * passing back, and undici / socket errors turned into {@link UpstreamError}s whose messages carry
 * no secrets.
 */
import { errors as undiciErrors } from 'undici';
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
