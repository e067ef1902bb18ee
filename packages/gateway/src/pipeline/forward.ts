/**
 * Forward stage: call the provider and relay its answer to the client.
 *
 * Non-streaming: the upstream body is sent back byte-exact with its status (upstream errors keep
 * their status, body and `retry-after`; an upstream 401/403 becomes a 502 so the backend's credential
 * problem is never confused with the client's).
 *
 * Streaming: each SSE item is written as soon as it is complete (never buffered to the end);
 * comments are forwarded (liveness); usage is read from whichever chunk carries it (the last running
 * total wins, counted once); the usage-only chunk Sovra asked for on the client's behalf is removed;
 * a usage chunk whose `choices` is missing or null is normalised to `"choices":[]`; upstream error
 * events pass through unchanged and no success ending is invented; an idle upstream ends the stream
 * with an OpenAI-shaped `timeout` error event.
 *
 * Audit: every byte of the response body written to the client (heartbeats and the audit comment
 * excepted) is fed to `ctx.commitments`; `opts.finalize` (the durable commit of the request's record)
 * runs before the last byte: before the non-stream answer is sent (its leaf hash goes into the
 * headers), and before a stream's held `[DONE]` (the leaf hash goes into a final
 * `: sovra-audit leaf_hash=…` comment). If it fails, a non-stream answer is replaced by a 503
 * `audit_unavailable` and a stream ends with an `audit_unavailable` error event and no `[DONE]`.
 */
import type { ServerResponse } from 'node:http';
import { once } from 'node:events';
import { UpstreamError, type ProviderResult } from '../providers/types.ts';
import type { SseEvent } from '../sse/types.ts';
import { formatComment, formatEvent } from '../sse/writer.ts';
import { errorJson, GatewayError } from '../http/errors.ts';
import { auditUnavailable, auditUnavailableMessage } from './audit-errors.ts';
import type { RequestContext, Usage } from './context.ts';
import type { FailureKind } from '../routing/types.ts';
import { restoreAnswer, StreamRestorer } from '../privacy/restore.ts';
import { scrubText } from '../privacy/scrub.ts';

/** Options for {@link forward}. */
export interface ForwardOptions {
  /** Send `: keep-alive` to a streaming client after this many ms without output; 0 = off. */
  heartbeatMs: number;
  /** Client headers to pass through (already filtered to the backend's `forward_headers`). */
  forwarded?: Record<string, string>;
  /**
   * Commits the request's record; called once the outcome is known and before the last byte is sent.
   * Resolves with the base64 leaf hash (null when not audited); rejects when the journal failed.
   * Default: nothing to commit.
   */
  finalize?: () => Promise<string | null>;
  /**
   * When true, a failure that may be retried elsewhere (connect errors; HTTP 5xx and 429 answers)
   * is not relayed: {@link forward} resolves with `retry: true` and nothing has reached the client.
   */
  retryable?: boolean;
  /**
   * Tokenized identifiers to put back into the answer (placeholder → original; privacy guard's
   * `tokenize` action): generated text of 2xx JSON answers and stream chunks is rewritten before it is
   * sent (and so before it is committed). Never logged.
   */
  restore?: ReadonlyMap<string, string>;
}

/**
 * How one attempt went, for health accounting and retries.
 * - `retry: false`: the attempt's answer (or error) went to the client (or the client left);
 *   `failure` is what the backend's health should count (null = the backend did its job), and
 *   `latencyMs` the time to the upstream's response headers (null when none came).
 * - `retry: true`: a retryable failure, nothing sent; `replay()` relays it (or throws its
 *   GatewayError) when no other attempt is possible. `retryAfterMs` is the upstream's hint, if any.
 */
export type AttemptOutcome =
  | { readonly retry: false; readonly failure: FailureKind | null; readonly latencyMs: number | null }
  | { readonly retry: true; readonly failure: FailureKind; readonly retryAfterMs: number | null; readonly reason: string; replay(): Promise<void> };

const RETRYABLE_ERRORS = new Set(['connect', 'connect_timeout']);

/** The upstream's retry hint in ms (`retry-after-ms`, then `retry-after` seconds or HTTP date), or null. */
export function retryAfterMs(h: Record<string, string>, now = Date.now()): number | null {
  const ms = h['retry-after-ms'];
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms)) return Math.ceil(Number(ms));
  const ra = h['retry-after'];
  if (ra === undefined) return null;
  if (/^\d+$/.test(ra.trim())) return Number(ra.trim()) * 1000;
  const t = Date.parse(ra);
  return Number.isFinite(t) ? Math.max(0, t - now) : null;
}

function failureOfError(kind: string): FailureKind {
  if (kind === 'connect') return 'connect';
  if (kind.endsWith('timeout')) return 'timeout';
  return 'protocol';
}

/** Prefix of the SSE comment that carries the entry's leaf hash at the end of a stream. */
export const AUDIT_COMMENT_PREFIX = ': sovra-audit leaf_hash=';

const USAGE_NULL = /"usage"\s*:\s*null/;

/**
 * Map a provider failure (no usable HTTP answer) to the client-facing error.
 * Timeouts → 504, connection and protocol failures → 502.
 */
export function upstreamFailure(err: UpstreamError, backendId: string): GatewayError {
  switch (err.kind) {
    case 'connect_timeout':
    case 'first_byte_timeout':
    case 'total_timeout':
    case 'idle_timeout':
      return new GatewayError(504, 'timeout', 'upstream_timeout', `Backend '${backendId}' timed out: ${err.message}.`);
    case 'engine':
      return new GatewayError(502, 'api_error', 'engine_error', `Backend '${backendId}' failed: ${err.message}.`);
    default:
      return new GatewayError(502, 'api_error', 'upstream_unavailable', `Backend '${backendId}' could not be reached: ${err.message}.`);
  }
}

/**
 * Call the route's provider and relay the answer onto `res`. `upstreamText` is `upstreamBody`
 * serialised (exact bytes for HTTP providers). Never throws for upstream problems
 * after headers are sent; before that it throws {@link GatewayError} for the caller to send.
 * Sets ctx.status/outcome/errorCode/usage/ttfbMs.
 */
export async function forward(
  ctx: RequestContext,
  upstreamBody: Record<string, unknown>,
  upstreamText: string,
  res: ServerResponse,
  opts: ForwardOptions,
): Promise<AttemptOutcome> {
  const route = ctx.route!;
  let result: ProviderResult;
  const t0 = performance.now();
  try {
    ctx.forwarded = true;
    result = await route.provider.call({
      operation: ctx.operation,
      body: upstreamBody,
      bodyText: upstreamText,
      stream: ctx.stream,
      requestId: ctx.id,
      signal: ctx.abort.signal,
      timeouts: route.timeouts,
      ...(opts.forwarded ? { forwarded: opts.forwarded } : {}),
    } as Parameters<typeof route.provider.call>[0]);
  } catch (err) {
    if (err instanceof UpstreamError) {
      if (err.kind === 'aborted' || ctx.abort.signal.aborted) {
        markDisconnected(ctx);
        return { retry: false, failure: null, latencyMs: null };
      }
      const fail = (): never => {
        ctx.outcome = err.kind.endsWith('timeout') ? 'upstream_timeout' : 'upstream_unavailable';
        throw upstreamFailure(err, route.backendConfig.id);
      };
      if (opts.retryable && RETRYABLE_ERRORS.has(err.kind))
        return { retry: true, failure: failureOfError(err.kind), retryAfterMs: null, reason: err.kind, replay: async () => fail() };
      // Count it against the backend's health, then fail the request.
      const failure = failureOfError(err.kind);
      try {
        fail();
      } catch (ge) {
        (ge as { failure?: FailureKind }).failure = failure;
        throw ge;
      }
    }
    throw err;
  }
  const latencyMs = performance.now() - t0;
  if (result.kind === 'json') {
    const st = result.status;
    const failure: FailureKind | null = st === 429 ? 'status_429' : st >= 500 ? 'status_5xx' : null;
    if (failure && opts.retryable && !ctx.abort.signal.aborted) {
      const r = result;
      return { retry: true, failure, retryAfterMs: retryAfterMs(r.headers), reason: `http_${st}`, replay: () => relayJson(ctx, r, res, opts) };
    }
    await relayJson(ctx, result, res, opts);
    return { retry: false, failure, latencyMs };
  }
  await relayStream(ctx, result, res, opts);
  const broken = ctx.outcome === 'upstream_error' || ctx.outcome === 'upstream_idle_timeout' || ctx.outcome === 'upstream_timeout';
  return { retry: false, failure: broken ? 'stream' : null, latencyMs };
}

/** Statuses relayed to clients: 2xx with a body, and 4xx/5xx. Redirects, 1xx, 204/205 and others become 502. */
export function usableStatus(status: number): boolean {
  return (status >= 200 && status < 300 && status !== 204 && status !== 205) || (status >= 400 && status < 600);
}

function markDisconnected(ctx: RequestContext): void {
  ctx.outcome = 'client_disconnected';
  ctx.status = 499;
}

async function relayJson(ctx: RequestContext, r: Extract<ProviderResult, { kind: 'json' }>, res: ServerResponse, opts: ForwardOptions): Promise<void> {
  if (ctx.abort.signal.aborted) return markDisconnected(ctx);
  const backendId = ctx.route!.backendConfig.id;
  if (r.status === 401 || r.status === 403) {
    // Never pass on the upstream's words: they may quote the backend's credential.
    ctx.outcome = 'upstream_error';
    ctx.errorCode = 'upstream_auth_failed';
    throw new GatewayError(502, 'api_error', 'upstream_auth_failed', `Backend '${backendId}' rejected the gateway's credential (status ${r.status}); check its api_key_env.`);
  }
  if (!usableStatus(r.status)) {
    ctx.outcome = 'upstream_error';
    ctx.errorCode = 'upstream_bad_status';
    throw new GatewayError(502, 'api_error', 'upstream_bad_status', `Backend '${backendId}' answered with HTTP status ${r.status}, which Sovra does not relay.`);
  }
  let parsed: Record<string, unknown> | undefined;
  try {
    const v = JSON.parse(r.body.toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) parsed = v as Record<string, unknown>;
  } catch {
    /* non-JSON body: relayed as is */
  }
  // Tokenized identifiers back into the answer (re-serialised only when something was restored).
  if (opts.restore && parsed && r.status >= 200 && r.status < 300 && restoreAnswer(parsed, opts.restore))
    r = { ...r, body: Buffer.from(JSON.stringify(parsed), 'utf8') };
  if (r.status >= 200 && r.status < 300) {
    const u = parsed ? readUsage(parsed) : null;
    if (u) {
      ctx.usage = u;
      ctx.usageSource = 'upstream';
    } else ctx.responseChars = r.body.length;
  } else {
    ctx.outcome = 'upstream_error';
    const e = parsed?.['error'] as Record<string, unknown> | undefined;
    ctx.errorCode = safeCode(e?.['code']) ?? safeCode(e?.['type']) ?? `http_${r.status}`;
  }
  ctx.status = r.status;
  ctx.commitments?.response(r.body);
  let leaf: string | null = null;
  if (opts.finalize) {
    try {
      leaf = await opts.finalize();
    } catch {
      throw auditUnavailable();
    }
  }
  if (res.destroyed) return; // the client left while the record was committed: nothing to send
  const headers: Record<string, string | number> = { ...r.headers, ...ctx.responseHeaders, 'content-length': r.body.length, 'x-request-id': ctx.id };
  if (leaf) {
    headers['x-sovra-audit-leaf-hash'] = leaf;
    headers['x-audit-leaf-hash'] = leaf;
  }
  res.writeHead(r.status, headers);
  ctx.ttfbMs = performance.now() - ctx.t0;
  res.end(r.body);
}

/** Largest token count accepted from an upstream for one request (larger values are ignored as bogus). */
export const MAX_REPORTED_TOKENS = 2_000_000_000;

const tokenCount = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_REPORTED_TOKENS ? v : undefined;

/**
 * Read OpenAI usage from a completion body or chunk (also the Responses API's `response.usage`, with
 * `input_tokens`/`output_tokens`). Returns null when there is no usage, when it carries no count, or
 * when any count is not a whole number in 0…{@link MAX_REPORTED_TOKENS} (a bogus report is ignored
 * rather than recorded, and never wipes an earlier valid one).
 */
export function readUsage(obj: Record<string, unknown>): Usage | null {
  let u = obj['usage'] as Record<string, unknown> | null | undefined;
  if (!u || typeof u !== 'object') {
    const resp = obj['response'] as Record<string, unknown> | undefined;
    u = resp && typeof resp === 'object' ? (resp['usage'] as Record<string, unknown> | undefined) : undefined;
    if (!u || typeof u !== 'object') return null;
  }
  const rawP = u['prompt_tokens'] ?? u['input_tokens'];
  const rawC = u['completion_tokens'] ?? u['output_tokens'];
  const rawT = u['total_tokens'];
  if (rawP === undefined && rawC === undefined && rawT === undefined) return null;
  const p = rawP === undefined || rawP === null ? 0 : tokenCount(rawP);
  const c = rawC === undefined || rawC === null ? 0 : tokenCount(rawC);
  if (p === undefined || c === undefined) return null;
  const t = rawT === undefined || rawT === null ? p + c : tokenCount(rawT);
  if (t === undefined || t > MAX_REPORTED_TOKENS) return null; // (a sum of two valid counts can exceed it)
  return { prompt_tokens: p, completion_tokens: c, total_tokens: t };
}

async function relayStream(ctx: RequestContext, r: Extract<ProviderResult, { kind: 'stream' }>, res: ServerResponse, opts: ForwardOptions): Promise<void> {
  const iterator = r.items[Symbol.asyncIterator]();
  if (ctx.abort.signal.aborted) {
    await iterator.return?.();
    return markDisconnected(ctx);
  }
  ctx.status = r.status;
  res.writeHead(r.status, {
    ...r.headers,
    ...ctx.responseHeaders,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
    'x-request-id': ctx.id,
  });
  res.flushHeaders();
  let lastWrite = performance.now();
  ctx.ttfbMs = lastWrite - ctx.t0;

  /** Writes body bytes that count for the response commitment (everything but heartbeats and the audit comment). */
  const send = (s: string): boolean => {
    ctx.commitments?.response(s);
    return res.write(s);
  };
  const write = async (s: string): Promise<void> => {
    lastWrite = performance.now();
    if (!send(s)) {
      // Backpressure: wait for the client to drain, or for its departure (which aborts the signal).
      await once(res, 'drain', { signal: ctx.abort.signal }).catch(() => undefined);
    }
  };

  let heartbeat: NodeJS.Timeout | undefined;
  if (opts.heartbeatMs > 0) {
    heartbeat = setInterval(() => {
      if (performance.now() - lastWrite >= opts.heartbeatMs && !res.writableEnded) {
        lastWrite = performance.now();
        res.write(': keep-alive\n\n');
      }
    }, Math.max(10, Math.floor(opts.heartbeatMs / 2)));
    heartbeat.unref();
  }

  const isChatLike = ctx.operation === 'chat.completions' || ctx.operation === 'completions';
  const restorer = opts.restore && opts.restore.size > 0 ? new StreamRestorer(opts.restore) : null;
  let held: string | null = null;
  let events = 0;
  let ended = false; // the upstream closed the stream normally
  try {
    for (;;) {
      const step = await iterator.next();
      if (step.done) {
        ended = true;
        break;
      }
      if (ctx.abort.signal.aborted) break;
      let item = step.value;
      if (restorer && item.type === 'event') {
        if (item.data === '[DONE]') {
          // Release anything still held before the end (a stream without a finish chunk).
          const tail = restorer.end();
          if (tail) {
            const out = inspectEvent(ctx, { type: 'event', event: undefined, id: undefined, data: JSON.stringify(tail) }, isChatLike);
            if (out !== null) await write(out);
          }
        } else {
          item = restoreEvent(item, restorer);
          for (const extra of restorer.takeBefore()) {
            const ev = { type: 'event' as const, event: typeof extra['type'] === 'string' ? (extra['type'] as string) : undefined, id: undefined, data: JSON.stringify(extra) };
            const out = inspectEvent(ctx, ev, isChatLike);
            if (out !== null) await write(out);
          }
        }
      }
      if (item.type === 'event') events++;
      if (item.type === 'comment') {
        if (held !== null) {
          await write(held);
          held = null;
        }
        await write(formatComment(item.text));
        continue;
      }
      const out = inspectEvent(ctx, item, isChatLike);
      if (out === null) continue;
      if (held !== null) {
        await write(held);
        held = null;
      }
      // `[DONE]` is normally the last event: hold it so it leaves with the end of the response
      // (one socket write instead of two).
      if (item.data === '[DONE]') held = out;
      else await write(out);
    }
  } catch (err) {
    if (ctx.abort.signal.aborted || (err instanceof UpstreamError && err.kind === 'aborted')) {
      // client went away; handled below
    } else if (held !== null) {
      // [DONE] had arrived: the stream was complete; a failure while closing changes nothing.
    } else if (err instanceof UpstreamError && (err.kind === 'idle_timeout' || err.kind === 'total_timeout')) {
      const code = err.kind === 'idle_timeout' ? 'upstream_idle_timeout' : 'upstream_timeout';
      ctx.outcome = err.kind === 'idle_timeout' ? 'upstream_idle_timeout' : 'upstream_timeout';
      ctx.errorCode = code;
      if (!res.writableEnded) send(formatEvent({ data: errorJson(`The upstream stream stopped: ${err.message}.`, 'timeout', code) }));
    } else {
      ctx.outcome = 'upstream_error';
      ctx.errorCode = 'upstream_stream_interrupted';
      const msg = err instanceof UpstreamError ? err.message : 'the upstream stream failed';
      if (!res.writableEnded) send(formatEvent({ data: errorJson(`The upstream stream was interrupted: ${msg}.`, 'api_error', 'upstream_stream_interrupted') }));
    }
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    await iterator.return?.().catch(() => undefined);
  }
  if (ctx.abort.signal.aborted) markDisconnected(ctx);
  else if (ended && ctx.outcome === 'ok' && (events === 0 || (isChatLike && held === null))) {
    // The upstream closed without a single event, or a chat/completions stream without `[DONE]`:
    // say so rather than let the client take a cut stream for a complete answer.
    const code = events === 0 ? 'upstream_empty_stream' : 'upstream_stream_truncated';
    ctx.outcome = 'upstream_error';
    ctx.errorCode = code;
    if (!res.writableEnded && !res.destroyed)
      send(formatEvent({ data: errorJson(events === 0 ? 'The upstream sent no events.' : 'The upstream ended the stream before [DONE].', 'api_error', code) }));
  }
  if (ctx.abort.signal.aborted || res.writableEnded || res.destroyed) return; // the pipeline commits the record
  // The held `[DONE]` is part of the committed response; the record is committed before it leaves.
  if (held !== null) ctx.commitments?.response(held);
  let leaf: string | null = null;
  if (opts.finalize) {
    try {
      leaf = await opts.finalize();
    } catch {
      if (!res.writableEnded && !res.destroyed) res.end(formatEvent({ data: errorJson(auditUnavailableMessage, 'api_error', 'audit_unavailable') }));
      return;
    }
  }
  if (res.writableEnded || res.destroyed) return;
  res.end((leaf ? `${AUDIT_COMMENT_PREFIX}${leaf}\n\n` : '') + (held ?? ''));
}

/**
 * Inspect one event: account usage and errors; decide what (if anything) the client gets.
 * @returns the framed text to write, or null to drop the event
 */
function inspectEvent(ctx: RequestContext, ev: SseEvent, isChatLike: boolean): string | null {
  const data = ev.data;
  if (data === '[DONE]') return formatEvent(ev);
  const mayHaveUsage = data.includes('"usage"') && !USAGE_NULL.test(data);
  const mayBeError = ev.event === 'error' || ev.event === 'response.failed' || data.includes('"error"') || data.includes('"response.failed"');
  if (!mayHaveUsage && !mayBeError) {
    ctx.relayedDeltas++;
    return formatEvent(ev);
  }
  let obj: Record<string, unknown> | undefined;
  try {
    const v = JSON.parse(data);
    if (v && typeof v === 'object' && !Array.isArray(v)) obj = v as Record<string, unknown>;
  } catch {
    /* not JSON: relay as is */
  }
  if (!obj) {
    if (ev.event === 'error' || ev.event === 'response.failed') markUpstreamError(ctx, undefined);
    return formatEvent(ev);
  }
  const err = obj['error'];
  if (ev.event === 'error' || (err !== undefined && err !== null) || obj['type'] === 'error') {
    markUpstreamError(ctx, (err && typeof err === 'object' ? err : obj) as Record<string, unknown>);
    return formatEvent(ev);
  }
  if (ev.event === 'response.failed' || obj['type'] === 'response.failed') {
    const resp = obj['response'] as Record<string, unknown> | undefined;
    const re = resp && typeof resp === 'object' ? (resp['error'] as Record<string, unknown> | undefined) : undefined;
    markUpstreamError(ctx, re && typeof re === 'object' ? re : undefined, 'response_failed');
  }
  const usage = mayHaveUsage ? readUsage(obj) : null;
  if (!usage) {
    ctx.relayedDeltas++;
    return formatEvent(ev);
  }
  ctx.usage = usage; // running totals: the last one wins
  ctx.usageSource = 'upstream';
  if (!isChatLike) return formatEvent(ev);
  const choices = obj['choices'];
  const usageOnly = !Array.isArray(choices) || choices.length === 0;
  if (!usageOnly) {
    ctx.relayedDeltas++;
    return formatEvent(ev);
  }
  if (!ctx.clientWantsUsage) return null; // Sovra asked for it; the client did not
  if (!Array.isArray(choices)) {
    obj['choices'] = [];
    return formatEvent({ event: ev.event, id: ev.id, data: JSON.stringify(obj) });
  }
  return formatEvent(ev);
}

/** Mark the request as failed upstream, with the upstream's error code (or type) when it gave one; the first error wins. */
function markUpstreamError(ctx: RequestContext, e: Record<string, unknown> | undefined, fallback = 'upstream_error'): void {
  if (ctx.outcome === 'upstream_error' && ctx.errorCode) return; // the first error is the cause
  ctx.outcome = 'upstream_error';
  const code = e?.['code'];
  const type = e?.['type'];
  ctx.errorCode = safeCode(code) ?? (type !== 'error' ? safeCode(type) : undefined) ?? fallback;
}

/**
 * An upstream error code as recorded (records and audit entries are public and permanent): only a
 * short identifier (`insufficient_quota`, `rate_limit_exceeded`, …) is kept; anything else — free
 * text an upstream might put there, or a personal identifier (privacy scrubber) — is dropped (the
 * caller falls back to a generic code).
 */
export function safeCode(v: unknown): string | undefined {
  // A code that is (or may hold) a personal identifier is not a code: never recorded. Bare digit
  // runs are refused outright — a structure-only identifier (a 12-digit MyKad) needs context words
  // for the detector to be sure, and an error code never needs six digits in a row.
  return typeof v === 'string' && /^[A-Za-z0-9_.:-]{1,64}$/.test(v) && !/[0-9]{6}/.test(v) && scrubText(v) === v ? v : undefined;
}

/** An event with the tokenized identifiers of its chunk restored (unchanged when nothing was). */
function restoreEvent(ev: SseEvent, restorer: StreamRestorer): SseEvent {
  let obj: unknown;
  try {
    obj = JSON.parse(ev.data);
  } catch {
    return ev;
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return ev;
  if (!restorer.chunk(obj as Record<string, unknown>)) return ev;
  return { ...ev, data: JSON.stringify(obj) };
}
