/**
 * Prices and request costs. Money is integer micro-USD (1 USD = 1,000,000 micro-USD). Note that a
 * price of X USD per 1M tokens is exactly X micro-USD per token.
 */

/** Per-token price of a model (USD per 1,000,000 tokens, ≥ 0). */
export interface TokenPrice {
  input_per_1m_usd: number;
  output_per_1m_usd: number;
}

/** Hardware-based price: what a GPU hour costs (USD ≥ 0) and how many tokens (prompt + completion, > 0) it serves. */
export interface GpuHourPrice {
  gpu_hour_usd: number;
  tokens_per_gpu_hour: number;
}

/** The price of one model alias: either kind (as in the config's `metering.prices`). */
export type ModelPrice = TokenPrice | GpuHourPrice;

/** Prices by model alias (the name clients send). */
export type PriceTable = Readonly<Record<string, ModelPrice>>;

/**
 * The cost of a request in integer micro-USD (rounded to the nearest micro-USD).
 * - token price: `prompt_tokens × input_per_1m_usd + completion_tokens × output_per_1m_usd`;
 * - GPU-hour price: `(prompt_tokens + completion_tokens) × gpu_hour_usd × 1e6 / tokens_per_gpu_hour`.
 * A model that is null or absent from `prices` costs 0. Negative or non-finite token counts count as 0.
 * Monotonic in both token counts, so the cost of a worst case is never below the cost of what was used.
 */
export function costMicros(
  prices: PriceTable,
  model: string | null,
  usage: { prompt_tokens: number; completion_tokens: number },
): number {
  if (model === null || !Object.prototype.hasOwnProperty.call(prices, model)) return 0;
  const p = prices[model]!;
  const pt = clean(usage.prompt_tokens);
  const ct = clean(usage.completion_tokens);
  let micros: number;
  if ('gpu_hour_usd' in p) {
    micros = p.tokens_per_gpu_hour > 0 ? ((pt + ct) * p.gpu_hour_usd * 1e6) / p.tokens_per_gpu_hour : 0;
  } else {
    micros = pt * p.input_per_1m_usd + ct * p.output_per_1m_usd;
  }
  return Number.isFinite(micros) && micros > 0 ? Math.round(micros) : 0;
}

const clean = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
