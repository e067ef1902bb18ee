/**
 * Shared shapes of the routing layer (src/routing/): pool members, breaker states and the
 * per-backend health view that balancers and the router read.
 *
 * Times are milliseconds (monotonic `performance.now()` unless named `*At`, which are ms since the
 * epoch); latencies are ms.
 */

/** Circuit-breaker state of one backend. */
export type BreakerState = 'closed' | 'open' | 'half_open';

/** Why an attempt on a backend failed, as the health layer counts it. */
export type FailureKind =
  | 'connect'        // connection refused / reset / DNS: nothing reached the engine
  | 'timeout'        // connect, first-byte, idle or total timeout
  | 'status_5xx'     // the engine answered 500–599
  | 'status_429'     // the engine is overloaded / rate limited
  | 'stream'         // the stream broke after it had started
  | 'protocol';      // malformed answer

/**
 * What the router and the balancers may read of a backend's live state.
 * Implemented by `BackendHealth` (health.ts).
 */
export interface BackendView {
  readonly id: string;
  /** Requests currently in flight on this backend (all aliases). */
  inFlight(): number;
  /** Most concurrent requests allowed (0 = no limit). */
  readonly maxInFlight: number;
  /** Exponentially weighted moving average of successful attempts' latency to first byte (ms), or null before the first sample. */
  ewmaMs(): number | null;
}

/** One backend in a model alias's pool, as balancers see it. */
export interface PoolMember {
  readonly backend: BackendView;
  /** Relative weight for the `weighted` strategy (≥ 1). */
  readonly weight: number;
}

/** Balancing strategies of a pool (config `models[].strategy`). */
export type Strategy = 'weighted' | 'least_in_flight' | 'p2c_ewma';
