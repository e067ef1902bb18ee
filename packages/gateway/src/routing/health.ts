/**
 * Per-backend health: in-flight accounting, latency EWMA, a circuit breaker fed by passive outcomes
 * (each attempt's success or failure), `429` cool-down, and active health checks.
 *
 * Model (after Envoy's outlier detection, `envoy.config.cluster.v3.OutlierDetection`: consecutive
 * errors, failure-percentage ejection, ejection time growing with repeated ejections up to a cap;
 * and the classic closed / open / half-open breaker of Nygard's "Release It!"):
 *
 *  - `closed`: requests flow. `failureThreshold` consecutive counted failures, a failure rate above
 *    the optional `failureRateWindow` threshold, or `checkFailureThreshold` failed active checks in a
 *    row open the breaker.
 *  - `open`: no request is admitted for the current open time (base `openMs`). Checked lazily: the
 *    first `admit()` / `state()` / `acquire()` after it elapsed moves the breaker to `half_open`.
 *  - `half_open`: at most `halfOpenProbes` requests at once are admitted as trials. `successesToClose`
 *    successes close the breaker (and reset the open time to `openMs`); a failure reopens it with
 *    the open time doubled, capped at `maxOpenMs`.
 *  - A `status_429` carrying a retry-after marks the backend cooling until then (not admitted) and
 *    counts as a consecutive failure, but never opens the breaker by itself: the engine said when to
 *    come back, which is better information than our backoff. Any other counted failure afterwards
 *    (including a 429 without retry-after) opens it once the count reaches the threshold.
 *  - Active checks: `checkFailureThreshold` failures in a row mark the backend `unhealthy` (never
 *    admitted, whatever the breaker timer says) and open the breaker; the next passing check clears
 *    `unhealthy` and, when the checks opened the breaker, moves it straight to `half_open` so live
 *    traffic confirms recovery. A breaker opened by live traffic keeps its timer even if checks pass
 *    (unlike Envoy's default `successful_active_health_check_uneject_host: true`): a cheap probe
 *    endpoint answering says little about inference working.
 *
 * Monotonic times (`now`, default `performance.now()`) drive every decision; epoch times appear
 * only in {@link BackendHealth.snapshot}. `admit()`, `acquire()` and the release it returns are
 * per-request hot-path calls: no allocation except the release closure itself.
 */
import { request } from 'undici';
import type { BackendView, BreakerState, FailureKind } from './types.ts';

/** Why a backend is not admitted right now (machine code; see {@link BackendHealth.ejectedReason}). */
export type EjectedReason = 'breaker_open' | 'half_open_busy' | 'cooling_down' | 'at_capacity' | 'unhealthy';

/** Failure-rate rule of the breaker (Envoy's "failure percentage" ejection, per backend). */
export interface FailureRateWindow {
  /** Length of the sliding window, ms (kept as 10 buckets of windowMs/10). */
  windowMs: number;
  /** Fewest outcomes (successes + counted failures) in the window before the rate is judged. */
  minRequests: number;
  /** Failure fraction, 0 < threshold ≤ 1, at or above which the breaker opens (e.g. 0.5). */
  threshold: number;
}

/** Options of {@link BackendHealth}. Durations in ms. */
export interface BackendHealthOptions {
  /** Backend id (config `backends[].id`). */
  id: string;
  /** Most concurrent requests (0 = no limit). */
  maxInFlight: number;
  /** Monotonic clock, ms (default `performance.now`). Tests inject a fake one. */
  now?: () => number;
  /** Wall clock, epoch ms, used only to report times in `snapshot()` (default `Date.now`). */
  wallClock?: () => number;
  /** Consecutive counted failures that open the breaker (default 5). */
  failureThreshold?: number;
  /** Optional failure-rate rule; off by default. */
  failureRateWindow?: FailureRateWindow;
  /** Base open time (default 10 000 ms). */
  openMs?: number;
  /** Cap of the open time, which doubles on each reopen from half-open (default 300 000 ms). Also caps a 429's retry-after. */
  maxOpenMs?: number;
  /** Concurrent trial requests admitted in half-open (default 1). */
  halfOpenProbes?: number;
  /** Successes in half-open that close the breaker (default 2). */
  successesToClose?: number;
  /** EWMA smoothing factor of latency, 0 < α ≤ 1: ewma = α·sample + (1−α)·ewma (default 0.3). */
  ewmaAlpha?: number;
  /** Failed active checks in a row that mark the backend unhealthy and open the breaker (default 2). */
  checkFailureThreshold?: number;
}

/** The last active check of a backend, as reported by {@link BackendHealth.snapshot}. */
export interface CheckSnapshot {
  ok: boolean;
  /** Epoch ms. */
  at: number;
  /** Why it failed (short text), or null. */
  reason: string | null;
}

/** JSON shape of one backend in `GET /admin/v1/backends`. Times are epoch ms. */
export interface BackendSnapshot {
  id: string;
  state: BreakerState;
  /** Machine code of why the backend is not admitted now, or null when it is. */
  ejected: EjectedReason | null;
  /** Human text: why it is open / half-open / cooling / unhealthy / at capacity; null when healthy. */
  reason: string | null;
  in_flight: number;
  max_in_flight: number;
  /** Latency EWMA (ms, one decimal), null before the first success. */
  ewma_ms: number | null;
  consecutive_failures: number;
  /** When the breaker last opened (while open or half-open), else null. */
  opened_at: number | null;
  /** When requests will be tried again (end of open time or of a 429 cool-down), else null. */
  retry_at: number | null;
  last_check: CheckSnapshot | null;
  totals: { successes: number; failures: number };
}

const BUCKETS = 10;

interface RateWindowState {
  readonly bucketMs: number;
  readonly minRequests: number;
  readonly threshold: number;
  readonly total: Uint32Array;
  readonly failed: Uint32Array;
  /** Absolute number (floor(now / bucketMs)) of the current bucket. */
  current: number;
}

function positiveInt(name: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer ≥ ${min}, got ${v}`);
  return v;
}

function positiveNumber(name: string, v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`${name} must be a finite number > 0, got ${v}`);
  return v;
}

/** Time constant of the latency EWMA's decay while a backend is not picked, ms. */
export const EWMA_DECAY_MS = 10_000;

/**
 * Live health of one backend: what the router admits and the balancers read.
 * @throws {RangeError} from the constructor on invalid options
 */
export class BackendHealth implements BackendView {
  readonly id: string;
  maxInFlight: number;

  readonly #now: () => number;
  readonly #wall: () => number;
  #failureThreshold: number;
  #baseOpenMs: number;
  #maxOpenMs: number;
  #halfOpenProbes: number;
  readonly #successesToClose: number;
  readonly #alpha: number;
  readonly #checkThreshold: number;
  readonly #window: RateWindowState | null;

  #inFlight = 0;
  #ewma: number | null = null;
  #lastSampleAt = 0;
  #state: BreakerState = 'closed';
  /** Bumped on every breaker transition; a release only frees a half-open slot of its own generation. */
  #gen = 0;
  #consecutiveFailures = 0;
  #openMs: number;
  #openedAt: number | null = null;
  #openUntil = 0;
  #openReason: string | null = null;
  #openedByCheck = false;
  #probes = 0;
  #halfOpenSuccesses = 0;
  #coolUntil = Number.NEGATIVE_INFINITY;
  #checkFailures = 0;
  #unhealthy = false;
  #lastCheck: { ok: boolean; at: number; reason: string | null } | null = null;
  #successes = 0;
  #failures = 0;

  constructor(opts: BackendHealthOptions) {
    if (typeof opts.id !== 'string' || opts.id === '') throw new RangeError('id must be a non-empty string');
    this.id = opts.id;
    this.maxInFlight = positiveInt('maxInFlight', opts.maxInFlight, 0);
    this.#now = opts.now ?? (() => performance.now());
    this.#wall = opts.wallClock ?? Date.now;
    this.#failureThreshold = positiveInt('failureThreshold', opts.failureThreshold ?? 5, 1);
    this.#baseOpenMs = positiveNumber('openMs', opts.openMs ?? 10_000);
    this.#maxOpenMs = positiveNumber('maxOpenMs', opts.maxOpenMs ?? 300_000);
    if (this.#maxOpenMs < this.#baseOpenMs) throw new RangeError('maxOpenMs must be ≥ openMs');
    this.#openMs = this.#baseOpenMs;
    this.#halfOpenProbes = positiveInt('halfOpenProbes', opts.halfOpenProbes ?? 1, 1);
    this.#successesToClose = positiveInt('successesToClose', opts.successesToClose ?? 2, 1);
    const alpha = opts.ewmaAlpha ?? 0.3;
    if (!(alpha > 0 && alpha <= 1)) throw new RangeError(`ewmaAlpha must be in (0, 1], got ${alpha}`);
    this.#alpha = alpha;
    this.#checkThreshold = positiveInt('checkFailureThreshold', opts.checkFailureThreshold ?? 2, 1);
    const w = opts.failureRateWindow;
    if (w) {
      positiveNumber('failureRateWindow.windowMs', w.windowMs);
      positiveInt('failureRateWindow.minRequests', w.minRequests, 1);
      if (!(w.threshold > 0 && w.threshold <= 1)) throw new RangeError(`failureRateWindow.threshold must be in (0, 1], got ${w.threshold}`);
      this.#window = {
        bucketMs: w.windowMs / BUCKETS,
        minRequests: w.minRequests,
        threshold: w.threshold,
        total: new Uint32Array(BUCKETS),
        failed: new Uint32Array(BUCKETS),
        current: Math.floor(this.#now() / (w.windowMs / BUCKETS)),
      };
    } else {
      this.#window = null;
    }
  }

  /**
   * Applies new limits from a reloaded configuration in place, so that requests still running keep
   * counting against the same in-flight total and the breaker keeps its state.
   * @param opts as in the constructor (only these fields)
   * @param resetBreaker true when the backend now points at another engine: its history no longer applies
   * @throws {RangeError} on invalid options (nothing is changed)
   */
  reconfigure(opts: Pick<BackendHealthOptions, 'maxInFlight' | 'failureThreshold' | 'openMs' | 'maxOpenMs' | 'halfOpenProbes'>, resetBreaker = false): void {
    const maxInFlight = positiveInt('maxInFlight', opts.maxInFlight, 0);
    const failureThreshold = positiveInt('failureThreshold', opts.failureThreshold ?? 5, 1);
    const openMs = positiveNumber('openMs', opts.openMs ?? 10_000);
    const maxOpenMs = positiveNumber('maxOpenMs', opts.maxOpenMs ?? 300_000);
    if (maxOpenMs < openMs) throw new RangeError('maxOpenMs must be ≥ openMs');
    const halfOpenProbes = positiveInt('halfOpenProbes', opts.halfOpenProbes ?? 1, 1);
    this.maxInFlight = maxInFlight;
    this.#failureThreshold = failureThreshold;
    this.#baseOpenMs = openMs;
    this.#maxOpenMs = maxOpenMs;
    this.#openMs = Math.min(Math.max(this.#openMs, openMs), maxOpenMs);
    this.#halfOpenProbes = halfOpenProbes;
    if (resetBreaker) {
      this.#gen++;
      this.#state = 'closed';
      this.#consecutiveFailures = 0;
      this.#openMs = openMs;
      this.#openedAt = null;
      this.#openUntil = 0;
      this.#openReason = null;
      this.#openedByCheck = false;
      this.#probes = 0;
      this.#halfOpenSuccesses = 0;
      this.#coolUntil = Number.NEGATIVE_INFINITY;
      this.#checkFailures = 0;
      this.#unhealthy = false;
      this.#lastCheck = null;
      this.#ewma = null;
    }
  }

  /** Requests currently in flight (acquired and not yet released). */
  inFlight(): number {
    return this.#inFlight;
  }

  /** Latency EWMA of successful attempts (ms), or null before the first success. */
  ewmaMs(): number | null {
    if (this.#ewma === null) return null;
    // Decays while the backend is not picked (as Finagle's peak EWMA), so one slow sample — a
    // connection set up, a cold cache — does not keep an idle backend out of power-of-two choices
    // forever: after EWMA_DECAY_MS unused its cost has fallen to 1/e and it gets tried again.
    const age = this.#now() - this.#lastSampleAt;
    return age > 0 ? this.#ewma * Math.exp(-age / EWMA_DECAY_MS) : this.#ewma;
  }

  /** Breaker state now (moves `open` → `half_open` when the open time has elapsed). */
  state(): BreakerState {
    if (this.#state === 'open') this.#refresh(this.#now());
    return this.#state;
  }

  /**
   * May this backend take a request now? False when the breaker is open, its half-open trial slots
   * are taken, it is cooling down after a 429, it is at capacity, or active checks fail.
   * Does not reserve anything: call {@link acquire} right after (no `await` in between).
   */
  admit(): boolean {
    return this.ejectedReason() === null;
  }

  /**
   * Why the backend is not admitted now, or null when it is. Precedence: `unhealthy`,
   * `breaker_open`, `cooling_down`, `at_capacity`, `half_open_busy`.
   */
  ejectedReason(): EjectedReason | null {
    const now = this.#now();
    if (this.#state === 'open') this.#refresh(now);
    if (this.#unhealthy) return 'unhealthy';
    if (this.#state === 'open') return 'breaker_open';
    if (now < this.#coolUntil) return 'cooling_down';
    if (this.maxInFlight > 0 && this.#inFlight >= this.maxInFlight) return 'at_capacity';
    if (this.#state === 'half_open' && this.#probes >= this.#halfOpenProbes) return 'half_open_busy';
    return null;
  }

  /**
   * Count one request in flight; in half-open it also takes a trial slot. Never refuses (check
   * {@link admit} first). Returns the release function: call it when the attempt ends, whatever the
   * outcome; calling it again does nothing.
   */
  acquire(): () => void {
    this.#inFlight++;
    let probe = false;
    if (this.#state !== 'closed') {
      if (this.#state === 'open') this.#refresh(this.#now());
      if (this.#state === 'half_open') {
        probe = true;
        this.#probes++;
      }
    }
    const gen = this.#gen;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      if (probe && gen === this.#gen) this.#probes--;
    };
  }

  /**
   * Record a successful attempt.
   * @param latencyMs latency to first byte, ms; folded into the EWMA when finite and ≥ 0
   */
  onSuccess(latencyMs: number): void {
    this.#successes++;
    if (latencyMs >= 0 && Number.isFinite(latencyMs)) {
      this.#ewma = this.#ewma === null ? latencyMs : this.#alpha * latencyMs + (1 - this.#alpha) * this.#ewma;
      this.#lastSampleAt = this.#now();
    }
    this.#consecutiveFailures = 0;
    const now = this.#now();
    if (this.#window !== null) this.#record(now, false);
    if (this.#state === 'open') this.#refresh(now);
    if (this.#state === 'half_open' && ++this.#halfOpenSuccesses >= this.#successesToClose) this.#close();
  }

  /**
   * Record a failed attempt. Every {@link FailureKind} counts towards the breaker.
   * @param kind what failed
   * @param opts.retryAfterMs for `status_429`: the engine's retry-after, ms; when > 0 the backend
   *   cools down until then (capped at `maxOpenMs`) instead of the failure opening the breaker
   */
  onFailure(kind: FailureKind, opts?: { retryAfterMs?: number }): void {
    this.#failures++;
    this.#consecutiveFailures++;
    const now = this.#now();
    if (this.#window !== null) this.#record(now, true);
    if (this.#state === 'open') this.#refresh(now);
    const ra = opts?.retryAfterMs;
    if (kind === 'status_429' && ra !== undefined && ra > 0 && Number.isFinite(ra)) {
      const until = now + Math.min(ra, this.#maxOpenMs);
      if (until > this.#coolUntil) this.#coolUntil = until;
      if (this.#state === 'half_open') this.#halfOpenSuccesses = 0;
      return;
    }
    if (this.#state === 'half_open') {
      this.#open(now, `trial request failed while half-open (${kind})`, false, true);
    } else if (this.#state === 'closed') {
      if (this.#consecutiveFailures >= this.#failureThreshold) {
        this.#open(now, `${this.#consecutiveFailures} consecutive failures (last: ${kind})`, false, false);
      } else if (this.#window !== null) {
        const reason = this.#rateExceeded(kind);
        if (reason !== null) this.#open(now, reason, false, false);
      }
    }
  }

  /**
   * Record the outcome of an active health check.
   * @param ok whether the probe passed
   * @param reason short text of why it failed (shown in the snapshot; must not contain secrets)
   */
  onActiveCheck(ok: boolean, reason?: string): void {
    const now = this.#now();
    this.#lastCheck = { ok, at: now, reason: ok ? null : (reason ?? 'failed') };
    if (ok) {
      this.#checkFailures = 0;
      if (this.#unhealthy) {
        this.#unhealthy = false;
        if (this.#state === 'open' && this.#openedByCheck) this.#toHalfOpen();
      }
      return;
    }
    this.#checkFailures++;
    if (this.#checkFailures < this.#checkThreshold || this.#unhealthy) return;
    this.#unhealthy = true;
    if (this.#state !== 'open') {
      const text = `${this.#checkFailures} consecutive failed health checks (last: ${reason ?? 'failed'})`;
      this.#open(now, text, true, this.#state === 'half_open');
    }
  }

  /** A plain JSON object for `GET /admin/v1/backends` (see {@link BackendSnapshot}). */
  snapshot(): BackendSnapshot {
    const now = this.#now();
    const wall = this.#wall();
    const epoch = (t: number): number => Math.round(wall - (now - t));
    const ejected = this.ejectedReason();
    const state = this.#state;
    let reason: string | null = null;
    switch (ejected) {
      case 'unhealthy':
        reason = `${this.#checkFailures} consecutive failed health checks (last: ${this.#lastCheck?.reason ?? 'failed'})`;
        break;
      case 'breaker_open':
        reason = this.#openReason;
        break;
      case 'cooling_down':
        reason = 'rate limited by the engine (429 with retry-after): cooling down';
        break;
      case 'at_capacity':
        reason = `at capacity (${this.#inFlight}/${this.maxInFlight} in flight)`;
        break;
      case 'half_open_busy':
      case null:
        if (state === 'half_open') reason = `half-open, trial requests only; opened after: ${this.#openReason ?? 'failures'}`;
        break;
    }
    let retryAt: number | null = null;
    if (state === 'open' && !this.#unhealthy) retryAt = this.#openUntil;
    if (now < this.#coolUntil && (retryAt === null || this.#coolUntil > retryAt)) retryAt = this.#coolUntil;
    const lc = this.#lastCheck;
    return {
      id: this.id,
      state,
      ejected,
      reason,
      in_flight: this.#inFlight,
      max_in_flight: this.maxInFlight,
      ewma_ms: this.#ewma === null ? null : Math.round(this.#ewma * 10) / 10,
      consecutive_failures: this.#consecutiveFailures,
      opened_at: state !== 'closed' && this.#openedAt !== null ? epoch(this.#openedAt) : null,
      retry_at: retryAt === null ? null : epoch(retryAt),
      last_check: lc === null ? null : { ok: lc.ok, at: epoch(lc.at), reason: lc.reason },
      totals: { successes: this.#successes, failures: this.#failures },
    };
  }

  /** Open → half-open once the open time has elapsed (and active checks do not hold it open). */
  #refresh(now: number): void {
    if (this.#state === 'open' && !this.#unhealthy && now >= this.#openUntil) this.#toHalfOpen();
  }

  #open(now: number, reason: string, byCheck: boolean, escalate: boolean): void {
    this.#openMs = escalate ? Math.min(this.#openMs * 2, this.#maxOpenMs) : this.#baseOpenMs;
    this.#state = 'open';
    this.#gen++;
    this.#openedAt = now;
    this.#openUntil = now + this.#openMs;
    this.#openReason = reason;
    this.#openedByCheck = byCheck;
    this.#probes = 0;
    this.#halfOpenSuccesses = 0;
  }

  #toHalfOpen(): void {
    this.#state = 'half_open';
    this.#gen++;
    this.#probes = 0;
    this.#halfOpenSuccesses = 0;
  }

  #close(): void {
    this.#state = 'closed';
    this.#gen++;
    this.#openMs = this.#baseOpenMs;
    this.#openedAt = null;
    this.#openReason = null;
    this.#openedByCheck = false;
    this.#consecutiveFailures = 0;
    this.#probes = 0;
    this.#halfOpenSuccesses = 0;
  }

  /** Count an outcome in the failure-rate window, rotating out buckets older than the window. */
  #record(now: number, failed: boolean): void {
    const w = this.#window!;
    const b = Math.floor(now / w.bucketMs);
    if (b > w.current) {
      const steps = Math.min(b - w.current, BUCKETS);
      for (let k = 1; k <= steps; k++) {
        const j = (((w.current + k) % BUCKETS) + BUCKETS) % BUCKETS;
        w.total[j] = 0;
        w.failed[j] = 0;
      }
      w.current = b;
    }
    const j = ((w.current % BUCKETS) + BUCKETS) % BUCKETS;
    w.total[j]!++;
    if (failed) w.failed[j]!++;
  }

  /** The open reason when the window's failure rate reaches the threshold, else null. */
  #rateExceeded(kind: FailureKind): string | null {
    const w = this.#window!;
    let total = 0;
    let failed = 0;
    for (let j = 0; j < BUCKETS; j++) {
      total += w.total[j]!;
      failed += w.failed[j]!;
    }
    if (total < w.minRequests || failed < w.threshold * total) return null;
    const pct = Math.round((failed / total) * 100);
    return `failure rate ${pct}% (${failed}/${total}) over the last ${Math.round(w.bucketMs * BUCKETS)} ms (last: ${kind})`;
  }
}

/** A logger the checker can use (pino's `Logger` fits). */
export interface HealthCheckLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** One backend the {@link HealthChecker} probes. */
export interface HealthCheckTarget {
  health: BackendHealth;
  /**
   * The check: resolve when healthy, reject otherwise (the rejection's message becomes the check's
   * reason: keep it short and free of secrets). Must honour `signal` (aborted on timeout and stop).
   */
  probe: (signal: AbortSignal) => Promise<void>;
}

/** Options of {@link HealthChecker}. Durations in ms. */
export interface HealthCheckerOptions {
  /** Time between two checks of a backend, ±10 % jitter. */
  intervalMs: number;
  /** A probe that has not settled after this long fails ("timeout after N ms") and is aborted. */
  timeoutMs: number;
  targets: HealthCheckTarget[];
  /** Logs a warning when a backend's check starts failing and info when it passes again. */
  log?: HealthCheckLog;
  /** Random source in [0, 1) for the jitter (default `Math.random`). */
  random?: () => number;
}

const MAX_REASON_CHARS = 200;

function errorText(err: unknown): string {
  const raw = err instanceof Error ? err.message || err.name : String(err);
  const oneLine = raw.replace(/\s+/g, ' ').trim() || 'failed';
  return oneLine.length > MAX_REASON_CHARS ? `${oneLine.slice(0, MAX_REASON_CHARS - 1)}…` : oneLine;
}

/**
 * Runs active health checks: each target is probed every `intervalMs` (±10 % jitter, so backends
 * sharing an engine host are not probed in lockstep), one probe per target at a time, and the result
 * is reported with {@link BackendHealth.onActiveCheck}. A probe that rejects, throws or exceeds
 * `timeoutMs` is a failed check. Timers are unref'd: the checker never keeps the process alive.
 * @throws {RangeError} from the constructor when `intervalMs` or `timeoutMs` is not a number > 0
 */
export class HealthChecker {
  readonly #intervalMs: number;
  readonly #timeoutMs: number;
  readonly #targets: readonly HealthCheckTarget[];
  readonly #log: HealthCheckLog | undefined;
  readonly #random: () => number;
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #controllers = new Set<AbortController>();
  /** Last reported result per target, to log transitions only. */
  readonly #lastOk = new Map<HealthCheckTarget, boolean>();
  /** Bumped by stop(): results of probes started before are dropped. */
  #epoch = 0;
  #running = false;

  constructor(opts: HealthCheckerOptions) {
    this.#intervalMs = positiveNumber('intervalMs', opts.intervalMs);
    this.#timeoutMs = positiveNumber('timeoutMs', opts.timeoutMs);
    this.#targets = [...opts.targets];
    this.#log = opts.log;
    this.#random = opts.random ?? Math.random;
  }

  /** Start checking: each target's first check runs within 10 % of `intervalMs`. Idempotent. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const t of this.#targets) this.#schedule(t, this.#intervalMs * 0.1 * this.#random());
  }

  /** Stop: clears the timers and aborts probes in flight; their results are not reported. */
  stop(): void {
    this.#running = false;
    this.#epoch++;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const ac of this.#controllers) ac.abort(new Error('health checker stopped'));
    this.#controllers.clear();
  }

  /** Check every target once, now (in parallel); resolves when all results are reported. Never rejects. */
  async checkNow(): Promise<void> {
    const epoch = this.#epoch;
    await Promise.all(this.#targets.map((t) => this.#check(t, epoch)));
  }

  #schedule(t: HealthCheckTarget, delayMs: number): void {
    const epoch = this.#epoch;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void this.#check(t, epoch).then(() => {
        if (this.#running && epoch === this.#epoch) this.#schedule(t, this.#intervalMs * (0.9 + 0.2 * this.#random()));
      });
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }

  async #check(t: HealthCheckTarget, epoch: number): Promise<void> {
    const ac = new AbortController();
    this.#controllers.add(ac);
    let timer: NodeJS.Timeout | undefined;
    let ok = true;
    let reason: string | undefined;
    try {
      // Settles (rejects) on timeout or stop(), even when the probe ignores its signal.
      const cutoff = new Promise<never>((_, reject) => {
        ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true });
        timer = setTimeout(() => ac.abort(new Error(`timeout after ${this.#timeoutMs} ms`)), this.#timeoutMs);
        timer.unref();
      });
      // The abort listener above is registered first, so on timeout the race settles with the
      // timeout error rather than whatever the probe rejects with when aborted.
      await Promise.race([cutoff, t.probe(ac.signal)]);
    } catch (err) {
      ok = false;
      reason = errorText(err);
    } finally {
      clearTimeout(timer);
      this.#controllers.delete(ac);
    }
    if (epoch !== this.#epoch) return;
    t.health.onActiveCheck(ok, reason);
    const was = this.#lastOk.get(t);
    this.#lastOk.set(t, ok);
    if (this.#log && was !== ok && !(was === undefined && ok)) {
      if (ok) this.#log.info({ backend: t.health.id }, 'backend health check passes again');
      else this.#log.warn({ backend: t.health.id, reason }, 'backend health check failed');
    }
  }
}

/**
 * Active check over HTTP: `GET url` with `headers` (undici `request`, global dispatcher).
 * Resolves on a 2xx status once the body is consumed (read and discarded; over 128 KiB the
 * connection is dropped instead). Rejects with a short Error otherwise: `HTTP <status>` for
 * other statuses (redirects are not followed), `request failed: <cause>` on network errors, or
 * the abort reason when `signal` aborts. Messages never include header values.
 */
export async function probeHttp(url: string, headers: Record<string, string>, signal: AbortSignal): Promise<void> {
  let status: number;
  try {
    const res = await request(url, { method: 'GET', headers, signal });
    status = res.statusCode;
    await res.body.dump({ limit: 128 * 1024, signal });
  } catch (err) {
    if (signal.aborted && signal.reason instanceof Error && err === signal.reason) throw err;
    const code = (err as { code?: unknown } | null)?.code;
    const text = `request failed: ${typeof code === 'string' && !errorText(err).includes(code) ? `${code} ` : ''}${errorText(err)}`;
    throw new Error(scrub(text, headers));
  }
  if (status < 200 || status >= 300) throw new Error(`HTTP ${status}`);
}

/** Remove any header value (and each long word of one, e.g. a bearer token) from `text`. */
function scrub(text: string, headers: Record<string, string>): string {
  let out = text;
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (typeof value !== 'string') continue;
    const parts = [value, ...value.split(/\s+/)];
    for (const p of parts) if (p.length >= 6) out = out.split(p).join('[redacted]');
  }
  return out;
}
