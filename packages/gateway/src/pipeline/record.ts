/**
 * Record stage: when a request ends — completed, failed, rejected or abandoned by the client — turn
 * its context into exactly one request record (the future transparency-log leaf) and one log line.
 * No content, no keys: only who / what / when / outcome / usage.
 */
import type { RequestsTable } from '../store/schema.ts';
import type { RequestContext } from './context.ts';

/** Characters per token used for estimates when the upstream reported no usage. */
const CHARS_PER_TOKEN = 4;

/**
 * Fill in an estimate when the upstream was reached but reported no usage (a client that
 * disconnected, an engine that sends none): prompt tokens = prompt characters / 4 (the prompt was
 * sent, so it may have been processed); completion tokens = relayed content chunks for a stream
 * (each carries at least one token), the answer's characters / 4 for a non-stream answer. Never 0
 * when something was generated.
 */
export function estimateUsage(ctx: RequestContext): void {
  if (ctx.usage || !ctx.forwarded) return;
  // An upstream or gateway error: nothing was generated, and whether the prompt was processed is unknown.
  if (ctx.outcome !== 'ok' && ctx.outcome !== 'client_disconnected' && ctx.relayedDeltas === 0) return;
  const body = ctx.body;
  let chars = 0;
  if (body) {
    const src = body['messages'] ?? body['prompt'] ?? body['input'];
    chars = src === undefined ? 0 : JSON.stringify(src).length;
  }
  const prompt = Math.ceil(chars / CHARS_PER_TOKEN);
  const completion = ctx.stream ? ctx.relayedDeltas : Math.ceil((ctx.responseChars ?? 0) / CHARS_PER_TOKEN);
  if (prompt === 0 && completion === 0) return;
  ctx.usage = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  ctx.usageSource = 'estimate';
}

/** Build the request record row for a finished request. */
export function toRecord(ctx: RequestContext): RequestsTable {
  const route = ctx.route;
  return {
    id: ctx.id,
    ts: ctx.startedAt,
    key_id: ctx.principal?.keyId ?? null,
    tenant_id: ctx.principal?.tenantId ?? null,
    operation: ctx.operation,
    model: ctx.modelName ?? null,
    backend_id: route?.backendConfig.id ?? null,
    upstream_model: route?.upstreamModel ?? null,
    stream: ctx.stream ? 1 : 0,
    status: ctx.status,
    outcome: ctx.outcome,
    error_code: ctx.errorCode,
    latency_ms: Math.round(performance.now() - ctx.t0),
    ttfb_ms: ctx.ttfbMs === null ? null : Math.round(ctx.ttfbMs),
    prompt_tokens: ctx.usage?.prompt_tokens ?? null,
    completion_tokens: ctx.usage?.completion_tokens ?? null,
    total_tokens: ctx.usage?.total_tokens ?? null,
    usage_source: ctx.usageSource,
    cost_micros: ctx.costMicros ?? null,
  };
}
