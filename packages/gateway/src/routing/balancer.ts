/**
 * Balancers: choose one member of a model alias's pool for an attempt.
 *
 * The router hands a balancer the members that policy and health already admit; the balancer only
 * skips members whose backend id is in `exclude` (backends this request already tried) and members
 * whose backend is at capacity (`maxInFlight > 0 && inFlight() >= maxInFlight`). Balancers never
 * throw on an empty or fully excluded pool; they return null and the router decides what to answer.
 *
 * `pick()` runs once per attempt, so it allocates nothing in the steady state: no arrays, closures
 * or iterators; only a balancer's first sight of a backend id creates its bookkeeping entry.
 *
 * Strategies (config `models[].strategy`):
 *  - `weighted`        — {@link WeightedBalancer}: nginx's smooth weighted round-robin.
 *  - `least_in_flight` — {@link LeastInFlightBalancer}: fewest in-flight requests per unit of weight.
 *  - `p2c_ewma`        — {@link P2cEwmaBalancer}: power of two choices over EWMA latency × load.
 */
import type { PoolMember, Strategy } from './types.ts';

/** Chooses the member of a pool that takes the next attempt. */
export interface Balancer {
  /**
   * Choose a member.
   * @param members candidates, already filtered by policy and health (admission); not modified
   * @param exclude backend ids this request already tried; never picked
   * @returns the chosen member (the same object, typed as the caller's member type), or null when no
   *   member is pickable (empty pool, all excluded, or all at capacity). Never throws.
   */
  pick<M extends PoolMember>(members: readonly M[], exclude?: ReadonlySet<string>): M | null;
}

/** Options of {@link createBalancer}. */
export interface BalancerOptions {
  /** Random source in [0, 1) for `p2c_ewma` (default `Math.random`); tests inject a seeded one. */
  random?: () => number;
  /** Cost latency (ms) for `p2c_ewma` when no backend has an EWMA yet (default 1). */
  defaultEwmaMs?: number;
}

/** True when `m` may be picked: not excluded and its backend below its concurrency limit. */
function pickable(m: PoolMember, exclude: ReadonlySet<string> | undefined): boolean {
  const b = m.backend;
  if (exclude !== undefined && exclude.size > 0 && exclude.has(b.id)) return false;
  return !(b.maxInFlight > 0 && b.inFlight() >= b.maxInFlight);
}

/** A member's effective weight: `weight` when a finite number > 0, otherwise 1. */
function weightOf(m: PoolMember): number {
  const w = m.weight;
  return w > 0 && Number.isFinite(w) ? w : 1;
}

/** Per-backend running state of the smooth weighted round-robin (mutated in place). */
interface WrrSlot {
  current: number;
}

/**
 * Smooth weighted round-robin, the algorithm of nginx's upstream module
 * (nginx `ngx_http_upstream_round_robin.c`, `ngx_http_upstream_get_peer`; introduced in nginx
 * 1.3.1, commit "Upstream: smooth weighted round-robin balancing"):
 * on every pick each candidate's `current` grows by its weight, the candidate with the largest
 * `current` wins (the first such in `members` order on ties) and its `current` drops by the sum of the
 * candidates' weights.
 *
 * Over any run of `W` picks (W = the sum of weights) starting from a fresh balancer, each member is
 * picked exactly `weight` times, and picks of a heavy member are interleaved with the others rather
 * than sent in a burst (weights 5,1,1 give a a b a c a a, not a a a a a b c).
 *
 * State is kept per balancer instance, keyed by backend id, so one instance per pool (alias).
 * When the candidate subset changes (a member excluded on a retry, ejected, at capacity), only the
 * candidates of that call take part, exactly as nginx skips down peers: the sum of all stored
 * `current` values stays 0, a member that leaves keeps its position and resumes it when it returns,
 * and the long-run proportions among the members present stay their weight ratios.
 */
export class WeightedBalancer implements Balancer {
  readonly #slots = new Map<string, WrrSlot>();

  pick<M extends PoolMember>(members: readonly M[], exclude?: ReadonlySet<string>): M | null {
    let best: M | null = null;
    let bestSlot: WrrSlot | null = null;
    let total = 0;
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!;
      if (!pickable(m, exclude)) continue;
      const w = weightOf(m);
      let slot = this.#slots.get(m.backend.id);
      if (slot === undefined) {
        slot = { current: 0 };
        this.#slots.set(m.backend.id, slot);
      }
      slot.current += w;
      total += w;
      if (bestSlot === null || slot.current > bestSlot.current) {
        best = m;
        bestSlot = slot;
      }
    }
    if (bestSlot !== null) bestSlot.current -= total;
    return best;
  }

  /** Forget the state of backends no longer in the pool (config reload). Not needed per request. */
  retain(ids: ReadonlySet<string>): void {
    for (const id of this.#slots.keys()) if (!ids.has(id)) this.#slots.delete(id);
  }
}

/**
 * Least in-flight per unit of weight: picks the pickable member with the smallest
 * `inFlight() / weight` (compared by cross-multiplication, exact for integer counts). Ties are broken
 * round-robin: the scan starts just after the position picked last time and the first strictly
 * smaller score wins, so equally loaded members take turns instead of the first one always winning.
 */
export class LeastInFlightBalancer implements Balancer {
  /** Position (in `members`) of the last pick; the next scan starts after it. */
  #last = -1;

  pick<M extends PoolMember>(members: readonly M[], exclude?: ReadonlySet<string>): M | null {
    const n = members.length;
    if (n === 0) return null;
    const start = (this.#last + 1) % n;
    let best: M | null = null;
    let bestIndex = -1;
    let bestLoad = 0;
    let bestWeight = 1;
    for (let k = 0; k < n; k++) {
      let i = start + k;
      if (i >= n) i -= n;
      const m = members[i]!;
      if (!pickable(m, exclude)) continue;
      const load = m.backend.inFlight();
      const w = weightOf(m);
      // load / w < bestLoad / bestWeight, without division
      if (best === null || load * bestWeight < bestLoad * w) {
        best = m;
        bestIndex = i;
        bestLoad = load;
        bestWeight = w;
      }
    }
    if (best !== null) this.#last = bestIndex;
    return best;
  }
}

/**
 * Power of two choices with an EWMA-latency cost (Mitzenmacher, "The Power of Two Choices in
 * Randomized Load Balancing", IEEE TPDS 12(10), 2001; the latency-weighted variant is Finagle's /
 * Linkerd's "P2C + peak EWMA" balancer).
 *
 * Two distinct pickable members are sampled uniformly at random and the one with the lower cost wins
 * (the first sampled on a tie), where
 *
 *     cost = max(ewmaMs, 0.001) × (inFlight + 1)
 *
 * and a member without an EWMA yet (`ewmaMs() === null`) is costed at the median EWMA of the members
 * that have one (so a new backend is treated as typical, neither starved nor flooded), or at
 * `defaultEwmaMs` (1) when none has. A single pickable member is returned without sampling.
 * Weights are not used by this strategy.
 *
 * Sampling uses two draws of `random` per pick. The median is only computed when a sampled member has
 * no EWMA, in a scratch array reused across calls.
 */
export class P2cEwmaBalancer implements Balancer {
  readonly #random: () => number;
  readonly #defaultEwmaMs: number;
  readonly #scratch: number[] = [];

  /**
   * @param opts.random random source in [0, 1) (default `Math.random`)
   * @param opts.defaultEwmaMs latency (ms) used when no member has an EWMA (default 1)
   */
  constructor(opts: BalancerOptions = {}) {
    this.#random = opts.random ?? Math.random;
    const d = opts.defaultEwmaMs ?? 1;
    this.#defaultEwmaMs = d > 0 && Number.isFinite(d) ? d : 1;
  }

  pick<M extends PoolMember>(members: readonly M[], exclude?: ReadonlySet<string>): M | null {
    let count = 0;
    let only: M | null = null;
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!;
      if (pickable(m, exclude)) {
        if (count === 0) only = m;
        count++;
      }
    }
    if (count <= 1) return only;

    // Two distinct ranks among the pickable members, uniformly.
    const a = Math.min(count - 1, Math.floor(this.#random() * count));
    let b = Math.min(count - 2, Math.floor(this.#random() * (count - 1)));
    if (b >= a) b++;

    let first: M | null = null;
    let second: M | null = null;
    let rank = 0;
    for (let i = 0; i < members.length && (first === null || second === null); i++) {
      const m = members[i]!;
      if (!pickable(m, exclude)) continue;
      if (rank === a) first = m;
      else if (rank === b) second = m;
      rank++;
    }
    if (first === null || second === null) return first ?? second; // unreachable: inFlight() is a pure read

    let ea = first.backend.ewmaMs();
    let eb = second.backend.ewmaMs();
    if (ea === null || eb === null) {
      const fallback = this.#medianEwma(members);
      if (ea === null) ea = fallback;
      if (eb === null) eb = fallback;
    }
    const costA = Math.max(ea, 0.001) * (first.backend.inFlight() + 1);
    const costB = Math.max(eb, 0.001) * (second.backend.inFlight() + 1);
    return costB < costA ? second : first;
  }

  /** Median of the known EWMAs of `members` (ms), or the default when none is known. */
  #medianEwma(members: readonly PoolMember[]): number {
    const s = this.#scratch;
    s.length = 0;
    for (let i = 0; i < members.length; i++) {
      const e = members[i]!.backend.ewmaMs();
      if (e === null || !Number.isFinite(e)) continue;
      // insertion sort: pools are small
      let j = s.length;
      s.push(e);
      while (j > 0 && s[j - 1]! > e) {
        s[j] = s[j - 1]!;
        j--;
      }
      s[j] = e;
    }
    const n = s.length;
    if (n === 0) return this.#defaultEwmaMs;
    const mid = n >> 1;
    return n % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  }
}

/**
 * Create the balancer of a strategy. Make one per pool (model alias): balancers keep state.
 * @throws {RangeError} on an unknown strategy (config validation should have caught it)
 */
export function createBalancer(strategy: Strategy, opts: BalancerOptions = {}): Balancer {
  switch (strategy) {
    case 'weighted':
      return new WeightedBalancer();
    case 'least_in_flight':
      return new LeastInFlightBalancer();
    case 'p2c_ewma':
      return new P2cEwmaBalancer(opts);
    default:
      throw new RangeError(`unknown balancing strategy: ${String(strategy as unknown)}`);
  }
}
