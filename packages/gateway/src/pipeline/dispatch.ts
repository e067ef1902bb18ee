/**
 * Dispatch stage: attempts, retries and fallback over a request's {@link RoutePlan}.
 *
 *   for each attempt the plan allows:  pick (policy + health) → prepare → forward
 *
 * Retries happen only while nothing has gone to the client: on connect errors and on HTTP 5xx / 429
 * answers (see `forward`'s `retryable`). A stream that has started is never retried; a backend that
 * fails mid-stream ends that stream with an error event (forward) and counts against its breaker.
 * Between attempts the stage waits `base_ms × 2^(n-1)` capped at `max_ms`, with full jitter (AWS
 * Architecture Blog, "Exponential Backoff and Jitter"), or the upstream's `retry-after` when it is
 * shorter than that cap. Metering admitted the request once (before the first attempt) and settles it
 * once when it ends, so a retry never charges a budget twice.
 *
 * Every attempt is counted by the chosen backend's health (latency EWMA, breaker) and held in its
 * in-flight count for as long as it runs (streams: to the last byte).
 */
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatewayError } from '../http/errors.ts';
import { replan, type RoutePlan, type RoutingTable } from '../routing/router.ts';
const TIMEOUT_HEADER = 'x-sovra-timeout-ms';
import type { FailureKind } from '../routing/types.ts';
import type { RequestContext } from './context.ts';
import { forward, type ForwardOptions } from './forward.ts';
import { prepareUpstreamBody } from './prepare.ts';

/** What dispatch needs besides the plan. */
export interface DispatchOptions extends Omit<ForwardOptions, 'retryable' | 'forwarded'> {
  /** Serialises an upstream body (exact bytes; keeps the client's big integers). */
  serialize(body: Record<string, unknown>): string;
  /** Per-request deadline from `x-sovra-timeout-ms`, ms from the request's start (0 = none); covers every attempt. */
  deadlineMs: number;
  /** The current routing table (a reload replaces it; the plan follows before each attempt). */
  table(): RoutingTable;
  /** Tokenized identifiers to restore in the answer (placeholder → original), if any. */
  restore?: ReadonlyMap<string, string>;
  /** Client headers to pass through, by backend (`forward_headers`). */
  forwardedFor(backend: { provider: string } & Partial<{ forward_headers: string[] }>): Record<string, string> | undefined;
}

/**
 * Runs the request's attempts until one answers (relayed to `res`) or none is left.
 * @throws GatewayError when no attempt was possible (451 / 503 from the plan) or the last attempt's
 *   failure must be reported (502 / 504 / the upstream's own error answer is relayed instead when it had one)
 */
export async function dispatch(ctx: RequestContext, plan: RoutePlan, body: Record<string, unknown>, res: ServerResponse, opts: DispatchOptions): Promise<void> {
  let pending: { replay(): Promise<void>; failure: FailureKind } | null = null;
  const deadlineAt = opts.deadlineMs > 0 ? ctx.t0 + opts.deadlineMs : 0;
  for (;;) {
    // A hot reload since the plan was made: plan again on the current table (its policy, its
    // backends), keeping what was tried. Synchronous up to `acquire`, so no swap slips in between.
    const current = opts.table();
    if (current !== plan.table) {
      plan = replan(current, plan);
      ctx.plan = plan;
    }
    const attempt = plan.next();
    if (!attempt) {
      if (pending) {
        // Allowed backends could not be reached while policy excluded others: say it is residency.
        const r = pending.failure === 'connect' ? plan.residencyFailure() : null;
        if (r) throw r;
        return pending.replay();
      }
      throw plan.unavailable();
    }
    let route = attempt.route;
    if (deadlineAt > 0) {
      // The client's deadline covers the whole request, retries included.
      const left = Math.floor(deadlineAt - performance.now());
      if (left <= 0) {
        if (pending) return pending.replay();
        ctx.outcome = 'upstream_timeout';
        throw new GatewayError(504, 'timeout', 'upstream_timeout', `The request's deadline (${TIMEOUT_HEADER}) passed before an attempt could be made.`);
      }
      route = { ...route, timeouts: ctx.stream ? { ...route.timeouts, streamTotalMs: left } : { ...route.timeouts, totalMs: left } };
    }
    ctx.route = route;
    const upstreamBody = prepareUpstreamBody(ctx, body, route);
    const fwd = opts.forwardedFor(route.backendConfig);
    const health = attempt.member.backend;
    const release = health.acquire();
    // The attempt's line; a failure appends its reason (the record's outcome is the last attempt's).
    const line = plan.decisions.length;
    plan.note(`attempt ${attempt.n} ${route.model.name}/${route.backendConfig.id}`, true);
    const mark = (what: string) => {
      if (plan.decisions[line]?.startsWith(`attempt ${attempt.n} `)) plan.decisions[line] += `: ${what}`;
    };
    const last = attempt.n >= plan.maxAttempts;
    try {
      const out = await forward(ctx, upstreamBody, opts.serialize(upstreamBody), res, {
        heartbeatMs: opts.heartbeatMs,
        ...(opts.finalize ? { finalize: opts.finalize } : {}),
        ...(fwd ? { forwarded: fwd } : {}),
        ...(opts.restore ? { restore: opts.restore } : {}),
        retryable: !last,
      });
      if (!out.retry) {
        countOutcome(health, out.failure, out.latencyMs);
        return;
      }
      health.onFailure(out.failure, out.retryAfterMs !== null ? { retryAfterMs: out.retryAfterMs } : undefined);
      mark(`${out.reason}, retrying`);
      pending = out;
      release(); // not in flight while waiting
      // The next attempt starts clean.
      ctx.outcome = 'ok';
      ctx.errorCode = null;
      ctx.status = 0;
      const cap = plan.primary.model.retry.max_ms;
      const exp = Math.min(cap, plan.primary.model.retry.base_ms * 2 ** (attempt.n - 1));
      const wait = out.retryAfterMs !== null && out.retryAfterMs <= cap ? Math.max(out.retryAfterMs, Math.random() * exp) : Math.random() * exp;
      if (wait >= 1) await sleep(wait, undefined, { signal: ctx.abort.signal }).catch(() => undefined);
      if (ctx.abort.signal.aborted) {
        ctx.status = 499;
        ctx.outcome = 'client_disconnected';
        return;
      }
    } catch (err) {
      const f = (err as { failure?: FailureKind }).failure;
      if (f) health.onFailure(f);
      if (err instanceof GatewayError && err.code) mark(err.code);
      // The last allowed backend could not be reached while policy excluded others: residency decides.
      if (f === 'connect' && !plan.hasUntried()) throw plan.residencyFailure() ?? err;
      throw err;
    } finally {
      release();
    }
  }
}

function countOutcome(health: { onSuccess(ms: number): void; onFailure(k: FailureKind): void }, failure: FailureKind | null, latencyMs: number | null): void {
  if (failure) health.onFailure(failure);
  else if (latencyMs !== null) health.onSuccess(latencyMs);
}
