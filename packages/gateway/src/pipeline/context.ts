/**
 * The typed context one data-plane request carries through the pipeline stages
 * (authenticate → parse → route → prepare → forward → record). Each stage reads what earlier
 * stages set and may end the request with a {@link GatewayError}.
 */
import type { Admission } from '../metering/index.ts';
import type { Operation, Provider, Timeouts } from '../providers/types.ts';
import type { BackendConfig, ModelConfig } from '../config/schema.ts';
import type { Commitments } from '../audit/record.ts';
import type { RequestsTable } from '../store/schema.ts';
import type { BackendHealth } from '../routing/health.ts';
import type { RoutePlan } from '../routing/router.ts';

/** Token usage as OpenAI reports it (tokens). */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** The authenticated principal (never the key itself). */
export interface Principal {
  keyId: string;
  /** The key whose limits and budgets apply (after a rotation, the newest successor); default `keyId`. */
  meteringKeyId?: string;
  tenantId: string;
  tenant: string;
  /** Model aliases this key may use; null = every configured model (403 `model_not_allowed` otherwise). */
  modelAllowlist: string[] | null;
  /** The tenant's attributes (used by residency routing): ISO 3166-1 alpha-2 jurisdiction and data-classification ceiling, null when unset. */
  tenantAttributes: { jurisdiction: string | null; classification: string | null };
}

/** The chosen route for a request. */
export interface Route {
  model: ModelConfig;
  backendConfig: BackendConfig;
  provider: Provider;
  upstreamModel: string;
  timeouts: Timeouts;
  /** The backend's live health (breaker, in-flight, latency), when routed through a routing table. */
  health?: BackendHealth;
}

/**
 * Outcome vocabulary of the request record:
 * ok, upstream_error, gateway_error, client_disconnected, upstream_idle_timeout, upstream_timeout,
 * upstream_unavailable, rejected (auth / validation).
 */
export type Outcome =
  | 'ok'
  | 'upstream_error'
  | 'gateway_error'
  | 'client_disconnected'
  | 'upstream_idle_timeout'
  | 'upstream_timeout'
  | 'upstream_unavailable'
  | 'rejected';

/** Mutable per-request state. */
export interface RequestContext {
  /** Gateway request id (x-request-id). */
  readonly id: string;
  readonly operation: Operation;
  /** Wall-clock start, ms since epoch. */
  readonly startedAt: number;
  /** Monotonic start, ms (performance.now()). */
  readonly t0: number;
  principal?: Principal;
  /** The parsed request body (after validation). */
  body?: Record<string, unknown>;
  /** Alias requested by the client. */
  modelName?: string;
  route?: Route;
  /** The routing plan (candidates after policy, attempts made, decisions for the audit entry). */
  plan?: RoutePlan;
  /**
   * What the privacy guard did: audit lines (`TYPE action count`), the tokenize restore map
   * (placeholder → original; never logged) and the classification to raise the request to.
   */
  pii?: { lines: string[]; restore: ReadonlyMap<string, string>; raiseTo: string | null };
  /** Routing decisions of a request refused before it had a plan (451 and the like). */
  decisions?: string[];
  stream: boolean;
  /** The client asked for `stream_options.include_usage`. */
  clientWantsUsage: boolean;
  /** Aborted when the client disconnects. */
  readonly abort: AbortController;
  // --- outcome, filled by forward ---
  status: number;
  outcome: Outcome;
  errorCode: string | null;
  usage: Usage | null;
  usageSource: 'upstream' | 'estimate' | 'none';
  /** ms from t0 to the first byte written to the client. */
  ttfbMs: number | null;
  /** Number of content-bearing stream chunks relayed (for usage estimates). */
  relayedDeltas: number;
  /** The request's cost in micro-USD (set by metering when it settles; null/absent when unknown). */
  costMicros?: number | null;
  /** The meter stage's admission (rate limits passed, budgets reserved), settled when the request ends. */
  admission?: Admission;
  /** True once the request was handed to the upstream (its prompt may have been processed). */
  forwarded?: boolean;
  /** Size of a successful non-stream answer that carried no usage (chars), for the estimate. */
  responseChars?: number;
  /** Extra headers for the response, whatever its status (e.g. `x-ratelimit-*`). */
  responseHeaders: Record<string, string>;
  // --- audit ---
  /** HMAC commitments to the request and response bytes (only when the audit log is on). */
  commitments?: Commitments;
  /** The request's commit (row + log entry), started at most once; resolves with the base64 leaf hash (null when not audited). */
  committed?: Promise<string | null>;
  /** The request row, once built by the commit. */
  row?: RequestsTable;
}

/** Create a fresh context. */
export function newContext(id: string, operation: Operation): RequestContext {
  return {
    id,
    operation,
    startedAt: Date.now(),
    t0: performance.now(),
    stream: false,
    clientWantsUsage: false,
    abort: new AbortController(),
    status: 0,
    outcome: 'ok',
    errorCode: null,
    usage: null,
    usageSource: 'none',
    ttfbMs: null,
    relayedDeltas: 0,
    responseHeaders: {},
  };
}
