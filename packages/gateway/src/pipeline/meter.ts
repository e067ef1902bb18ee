/**
 * Meter stage (after route, before prepare): rate limits and budget reservation for the request's
 * worst case, and — when the request ends, whatever the outcome — settlement to the actual usage.
 *
 * Worst case = prompt tokens (counted with a tokenizer, see `countPromptTokens`) + the request's
 * completion cap (`max_completion_tokens`, else `max_tokens`, else `max_output_tokens` for
 * `/v1/responses`; 0 for embeddings), or the configured `metering.default_max_tokens` when it sets
 * none, times the completions one request can produce (`n`, a batch of prompts, `best_of`). When a budget
 * holds a reservation for a request without a cap, that default cap is written into the upstream
 * request (`max_tokens` / `max_output_tokens`), so the upstream cannot produce more than was reserved.
 */
import { GatewayError } from '../http/errors.ts';
import type { Operation } from '../providers/types.ts';
import { MeteringError, countPromptTokens, costMicros, type Admission, type Metering, type PriceTable } from '../metering/index.ts';
import type { RequestContext } from './context.ts';

/** What the pipeline needs of metering (absent: no limits, no budgets, no costs). */
export interface MeterDeps {
  metering: Metering;
  prices: PriceTable;
  defaultMaxTokens: number;
}

/**
 * How many completions one request can produce: `n` for chat; for legacy completions, the number
 * of prompts (a batch) × `max(n, best_of)`. The worst case reserves the cap for each of them.
 */
export function completionsPerRequest(body: Record<string, unknown>, op: Operation): number {
  const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v >= 1 ? v : 1);
  if (op === 'chat.completions') return int(body['n']);
  if (op !== 'completions') return 1;
  const prompt = body['prompt'];
  // A batch: an array of strings or of token arrays (an array of numbers is ONE prompt).
  const prompts = Array.isArray(prompt) && prompt.length > 0 && typeof prompt[0] !== 'number' ? prompt.length : 1;
  return prompts * Math.max(int(body['n']), int(body['best_of']));
}

/** The completion cap a request sets (tokens), or null. Non-integers and negatives count as unset. */
export function requestedMaxTokens(body: Record<string, unknown>, op: Operation): number | null {
  const fields = op === 'responses' ? ['max_output_tokens'] : ['max_completion_tokens', 'max_tokens'];
  for (const f of fields) {
    const v = body[f];
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  }
  return null;
}

/**
 * Admits the request (rate limits, budget reservation) or throws the 429.
 * @throws GatewayError 429 `rate_limit_exceeded` / `tokens_rate_limit_exceeded` / `budget_exceeded`
 *   with OpenAI's `x-ratelimit-*` headers and `retry-after`
 */
export async function admit(ctx: RequestContext, body: Record<string, unknown>, deps: MeterDeps): Promise<void> {
  const p = ctx.principal;
  if (!p || !ctx.modelName) return;
  // Embeddings produce no completion; otherwise the cap (or the default) for every completion.
  const cap = ctx.operation === 'embeddings' ? 0 : requestedMaxTokens(body, ctx.operation);
  const per = cap ?? deps.defaultMaxTokens;
  let adm: Admission;
  try {
    adm = await deps.metering.admit({
      tenantId: p.tenantId,
      keyId: p.meteringKeyId ?? p.keyId,
      model: ctx.modelName,
      promptTokens: () => countPromptTokens(body, ctx.operation),
      maxTokens: per * completionsPerRequest(body, ctx.operation),
    });
  } catch (err) {
    if (err instanceof MeteringError) throw new GatewayError(429, err.type, err.code, err.message, null, err.headers);
    throw err;
  }
  ctx.admission = adm;
  Object.assign(ctx.responseHeaders, adm.headers);
  if (cap === null && adm.reservedCompletionTokens !== null) {
    // The reservation assumed the default cap: make it the upstream's cap too.
    body[ctx.operation === 'responses' ? 'max_output_tokens' : 'max_tokens'] = per;
  }
}

/** Sets `ctx.costMicros` from the price table when the request had no admission (synchronous). */
export function priceOnly(ctx: RequestContext, deps: MeterDeps): void {
  if (ctx.usage && ctx.modelName) {
    ctx.costMicros = costMicros(deps.prices, ctx.modelName, { prompt_tokens: ctx.usage.prompt_tokens ?? 0, completion_tokens: ctx.usage.completion_tokens ?? 0 });
  }
}

/**
 * Settles the request's admission to its actual usage and sets `ctx.costMicros` (requests without an
 * admission are priced by {@link priceOnly}). Never throws: a failure is returned for logging, and
 * the reservation then stays held (never under-charged) until an operator fixes it.
 */
export async function settle(ctx: RequestContext, deps: MeterDeps): Promise<Error | null> {
  if (!ctx.admission) return null;
  const usage = ctx.usage ? { prompt_tokens: ctx.usage.prompt_tokens ?? 0, completion_tokens: ctx.usage.completion_tokens ?? 0 } : null;
  try {
    ctx.costMicros = (await deps.metering.settle(ctx.admission, usage)).costMicros;
    return null;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}
