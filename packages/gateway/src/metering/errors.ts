/** The 429 metering error and OpenAI-style rate-limit header formatting. */

/** Machine-readable code of a {@link MeteringError}. */
export type MeteringErrorCode = 'rate_limit_exceeded' | 'tokens_rate_limit_exceeded' | 'budget_exceeded';

/**
 * A request refused by metering: HTTP 429 with OpenAI's error `code` and the headers to send.
 * - `rate_limit_exceeded`: the requests-per-minute limit of the key or tenant;
 * - `tokens_rate_limit_exceeded`: the tokens-per-minute limit (the request's worst case,
 *   prompt + max tokens, did not fit);
 * - `budget_exceeded`: a token or micro-USD budget of the key or tenant for the current period.
 *
 * `headers` holds the `x-ratelimit-*` headers (when limits apply) and `retry-after` in whole
 * seconds (≥ 1) for rate limits and for budgets that reset (seconds to the next UTC day / month);
 * a `fixed` budget sends no `retry-after`. The message names the scope kind (`key` / `tenant`) and
 * the limit, never an id or a key.
 */
export class MeteringError extends Error {
  readonly status = 429 as const;
  readonly code: MeteringErrorCode;
  readonly headers: Record<string, string>;
  /** OpenAI error type of the response body. */
  readonly type: 'requests' | 'tokens' | 'insufficient_quota';
  constructor(code: MeteringErrorCode, message: string, headers: Record<string, string>) {
    super(message);
    this.name = 'MeteringError';
    this.code = code;
    this.headers = headers;
    this.type = code === 'rate_limit_exceeded' ? 'requests' : code === 'tokens_rate_limit_exceeded' ? 'tokens' : 'insufficient_quota';
  }
}

/**
 * A duration as OpenAI writes `x-ratelimit-reset-*`: `250ms` below one second, else hours, minutes
 * and seconds with at most one decimal on the seconds, largest unit first and zero parts kept
 * after the first: `1s`, `59.5s`, `6m0s`, `1h0m0s`. Rounded up to the next 100 ms (≥ 1 s) or ms,
 * so a client waiting that long is never early. Negative or non-finite input gives `0s`.
 */
export function formatReset(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return '0s';
  // What the text depends on: whole ms below 1 s (as a negative key), else tenths of a second.
  const key = ms < 1000 ? -Math.ceil(ms) : Math.ceil(ms / 100);
  if (key === resetMemo.key0) return resetMemo.text0;
  if (key === resetMemo.key1) return resetMemo.text1;
  const text = key < 0 ? `${-key}ms` : resetText(key);
  resetMemo.key1 = resetMemo.key0;
  resetMemo.text1 = resetMemo.text0;
  resetMemo.key0 = key;
  resetMemo.text0 = text;
  return text;
}

/**
 * The last two texts {@link formatReset} made (one per `x-ratelimit-reset-*` header of a request):
 * a text changes at most every 100 ms, so responses under load reuse them.
 */
const resetMemo = { key0: NaN, text0: '', key1: NaN, text1: '' };

/** `formatReset` of `tenths` × 100 ms (≥ 1 s). */
function resetText(tenths: number): string {
  const h = Math.floor(tenths / 36_000);
  const m = Math.floor((tenths % 36_000) / 600);
  const st = tenths % 600;
  const s = st % 10 === 0 ? String(st / 10) : (st / 10).toFixed(1);
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** Whole seconds for `retry-after`: ms rounded up, at least 1. */
export function retryAfterSeconds(ms: number): string {
  return String(Math.max(1, Math.ceil((Number.isFinite(ms) ? ms : 0) / 1000)));
}
