/**
 * The one interface every engine adapter implements (openai-compatible, embedded, later anthropic).
 *
 * A provider receives an OpenAI-shaped request body that the pipeline has already rewritten for the
 * backend (model name replaced by the upstream model, token-limit fields normalised, usage requested),
 * and returns either a complete JSON body or a stream of SSE items in OpenAI's chunk format.
 */
import type { SseItem } from '../sse/types.ts';

/** Data-plane operations, named after their OpenAI routes. */
export type Operation = 'chat.completions' | 'completions' | 'embeddings' | 'responses';

/** Timeouts in milliseconds; 0 disables one. */
export interface Timeouts {
  /** TCP/TLS connect. */
  readonly connectMs: number;
  /** From request sent to response headers (and, for streams, nothing more). */
  readonly firstByteMs: number;
  /** Longest gap between two body chunks of a stream (comments count as liveness). */
  readonly idleMs: number;
  /** Whole non-streaming exchange, headers and body. Never applied to streams. */
  readonly totalMs: number;
  /** Optional cap on a whole stream; 0 = none. */
  readonly streamTotalMs: number;
}

/** One call to a provider. */
export interface ProviderCall {
  readonly operation: Operation;
  /** The request body to send, already rewritten for this backend. Providers must not mutate it. */
  readonly body: Record<string, unknown>;
  /**
   * The body already serialised by the pipeline (exact bytes to send; preserves integers beyond
   * 2^53 that the client sent). HTTP providers send this when present.
   */
  readonly bodyText?: string;
  /** True when the response must be a stream (body.stream === true). */
  readonly stream: boolean;
  /** Gateway request id, forwarded upstream as `x-request-id`. */
  readonly requestId: string;
  /** Aborted when the client goes away or the gateway gives up; providers must stop work at once. */
  readonly signal: AbortSignal;
  readonly timeouts: Timeouts;
}

/** Response headers worth passing back to the client (lower-case names). */
export type ResponseHeaders = Record<string, string>;

/**
 * What a provider returns.
 * - `json`: a complete body (success or upstream error), with the upstream status.
 * - `stream`: a 2xx event stream; iterating `items` may throw {@link UpstreamError} (idle timeout,
 *   connection reset). Breaking out of the iteration (return()) must release the upstream.
 */
export type ProviderResult =
  | { readonly kind: 'json'; readonly status: number; readonly headers: ResponseHeaders; readonly body: Buffer }
  | { readonly kind: 'stream'; readonly status: number; readonly headers: ResponseHeaders; readonly items: AsyncIterable<SseItem> };

/** Why an upstream exchange failed without a usable HTTP answer. */
export type UpstreamErrorKind =
  | 'connect'          // could not connect / connection refused / reset before headers
  | 'connect_timeout'
  | 'first_byte_timeout'
  | 'idle_timeout'     // gap between stream chunks exceeded idleMs
  | 'total_timeout'
  | 'aborted'          // the call's signal fired (client disconnect)
  | 'protocol'         // malformed upstream answer
  | 'engine';          // in-process engine failure

/** Thrown by providers (from `call` or while iterating a stream). Its message never holds secrets. */
export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  constructor(readonly kind: UpstreamErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Readiness of a provider: embedded engines load models, remote ones are ready at once. */
export type ProviderState = { readonly ready: true } | { readonly ready: false; readonly reason: string };

/** An engine adapter. One instance per configured backend. */
export interface Provider {
  /** The backend id from configuration. */
  readonly id: string;
  /** Adapter kind, e.g. "openai-compatible", "embedded". */
  readonly kind: string;
  /** Operations this backend serves. */
  supports(op: Operation): boolean;
  /** Start loading (models, pools). Resolves when ready; rejects with a clear message when it cannot be. */
  start(): Promise<void>;
  state(): ProviderState;
  /** Perform one call. Rejects with {@link UpstreamError} when no HTTP answer could be had. */
  call(call: ProviderCall): Promise<ProviderResult>;
  /**
   * Optional active health check: one cheap request (never a paid completion), e.g. `GET /models`.
   * Resolves when the engine answered 2xx; rejects with a short message (never a credential) otherwise.
   * @param path the configured check path (relative to the base URL), or undefined for the adapter's default
   * @param signal aborted when the check times out
   */
  healthCheck?(path: string | undefined, signal: AbortSignal): Promise<void>;
  /** Release pools, contexts and models. */
  close(): Promise<void>;
}
