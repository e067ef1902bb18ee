/**
 * The request-path side of metering: rate limits (RPM/TPM) and budget reservations before a request
 * is forwarded, settlement of actual usage afterwards.
 */
import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Store } from '../store/db.ts';
import { MeteringError, formatReset, retryAfterSeconds } from './errors.ts';
import { createLedger, type Ledger } from './ledger.ts';
import { Allotments, type AllotmentHold, type Taken } from './allotments.ts';
import { nextPeriodStart, periodStart } from './periods.ts';
import { costMicros, type PriceTable } from './prices.ts';
import { loadBudgets, loadLimits } from './storage.ts';
import { scopeKey, type Budget, type LimitSpec, type Scope, type ScopeKind } from './types.ts';

/** How long limit and budget definitions are cached (ms). */
export const DEFINITIONS_TTL_MS = 2000;
/** The two rate-limit metrics, in header order. */
const METRICS = ['rpm', 'tpm'] as const;
/** OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` header names per metric. */
const HEADER_NAMES = {
  rpm: ['x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-reset-requests'],
  tpm: ['x-ratelimit-limit-tokens', 'x-ratelimit-remaining-tokens', 'x-ratelimit-reset-tokens'],
} as const;
/** Rate-limit window (s): limits are per minute. */
const WINDOW_S = 60;

/**
 * A request admitted by {@link Metering.admit}. `headers` are the `x-ratelimit-*` headers to send
 * with the response (empty when no rate limit applies). Pass it to {@link Metering.settle} exactly
 * when the request ends; the reservation it carries is kept privately.
 */
export interface Admission {
  readonly headers: Record<string, string>;
  /**
   * Completion tokens this admission reserved (the request's `maxTokens`, or `defaultMaxTokens`
   * when it set none) when a budget or TPM limit applied; null when nothing was reserved. A caller
   * may write it into an uncapped upstream request so the upstream cannot exceed the reservation.
   */
  readonly reservedCompletionTokens: number | null;
}

/** Options of {@link Metering}. */
export interface MeteringOptions {
  /** `redis://…` / `rediss://…`: rate-limit counters in Redis (cluster-wide); default in memory (per process). */
  redisUrl?: string;
  /** Prices by model alias, for costs and micro-USD budgets. */
  prices: PriceTable;
  /** Completion tokens reserved when a request sets no cap (tokens, ≥ 0). */
  defaultMaxTokens: number;
  /** Prefix of rate-limit counter keys (Redis keys `<prefix>:rpm:<kind>:<id>` / `…:tpm:…`). Default `sovra:rl`. */
  keyPrefix?: string;
  /** Clock for budget periods and the definitions cache (ms since epoch). Default `Date.now`. */
  now?: () => number;
  /** Called when a background write of settled usage fails (it is retried); default: ignored. */
  onError?: (err: unknown) => void;
  /**
   * Where allotments are granted and written back (default: `createLedger(store)`, on the store's
   * connection). The gateway on a SQLite file passes the store worker's (`StoreWorker.ledger`).
   */
  ledger?: Ledger;
}

/**
 * A counter consumed by a request: what to give back (refusals) or correct (TPM, at settlement),
 * and what the `x-ratelimit-*` headers are made of.
 */
interface Consumed {
  check: Check;
  points: number;
  res: RateLimiterRes;
  /** The limiter refused (its points were still counted: they are given back). */
  rejected: boolean;
  /** When the counter's current window ends (ms since epoch). */
  windowEnd: number;
}

/** A budget reservation of a request (its `AllotmentHold`, `reserve` in the budget's unit). */
interface BudgetHold extends AllotmentHold {
  budget: Budget;
}

interface AdmissionState {
  /** The instance that made the admission (another instance's admission settles to 0). */
  owner: Metering;
  model: string;
  /** The counters consumed (the TPM ones are corrected at settlement). */
  consumed: Consumed[];
  holds: BudgetHold[];
  /** The allotment reservations behind `holds` (same order). */
  taken: Taken[];
  settled: Promise<{ costMicros: number }> | null;
}

/**
 * Where an admission's state lives: a property under a module-private symbol of the admission
 * object itself (invisible to JSON, unreachable from outside this module). A WeakMap keyed by
 * admissions did the same, but every request then added an ephemeron for the garbage collector to
 * trace (measured: a few µs of GC per request under load).
 */
const STATE: unique symbol = Symbol('sovra.metering.admission');
type Stateful = Admission & { [STATE]?: AdmissionState };

/** Shared empty lists of an admission without limits or budgets (never mutated). */
const NONE: never[] = [];

/** A scope's definitions as loaded (cached for {@link DEFINITIONS_TTL_MS}). */
interface ScopeDefs {
  limits: LimitSpec | null;
  budgets: Budget[];
  /** The rate-limit checks the limits make (RPM first), limiters resolved. */
  checks: Check[];
  /** When loaded (ms since epoch, the instance's clock). */
  at: number;
}

/** One rate-limit check of a scope (resolved once per definitions load, not per request). */
interface Check {
  metric: 'rpm' | 'tpm';
  scope: Scope;
  limit: number;
  /** `String(limit)`, the `x-ratelimit-limit-*` header value. */
  limitText: string;
  /**
   * The counter's whole key, `<keyPrefix>:<metric>:<kind>:<id>` (the limiters have an empty
   * prefix): built once per definitions load, so no key string is made and hashed per call.
   */
  key: string;
  limiter: RateLimiterAbstract;
}

/**
 * The options argument of every limiter call: shared, so the library's default `options = {}` is not
 * allocated per call (rate-limiter-flexible only reads it).
 */
const CALL_OPTS = Object.freeze({});

/**
 * Rate limits and budgets of the request path.
 *
 * Rate limits are fixed 60 s windows per scope (key and tenant), counted with rate-limiter-flexible:
 * in memory (`RateLimiterMemory`, per process) or in Redis (`RateLimiterRedis` over ioredis, shared by
 * every process using the same Redis and `keyPrefix`; when Redis fails, a per-process memory
 * limiter stands in). A change of a scope's limit value starts a fresh in-memory window.
 *
 * Budgets are reserved from allotments this process takes from the database (see `allotments.ts`
 * and `ledger.ts`): never overspent, also across processes; the database is only visited when an
 * allotment runs out.
 *
 * Limit and budget definitions are cached per scope for at most {@link DEFINITIONS_TTL_MS};
 * {@link invalidate} drops the cache at once.
 */
export class Metering {
  readonly #store: Store;
  readonly #opts: MeteringOptions;
  readonly #allotments: Allotments;
  readonly #prices: PriceTable;
  readonly #defaultMaxTokens: number;
  readonly #prefix: string;
  readonly #now: () => number;
  readonly #redis: Redis | null;
  /** Resolves once the first Redis connection attempt ended (ready, failed or 2 s passed). */
  readonly #redisStartup: Promise<void> | null;
  readonly #limiters = new Map<string, RateLimiterAbstract>();
  /** Cached definitions by scope kind, then id (no key string is built per request). */
  readonly #defs: Record<ScopeKind, Map<string, ScopeDefs>> = { key: new Map(), tenant: new Map() };
  readonly #loading = new Map<string, Promise<ScopeDefs>>();
  #generation = 0;
  #closed = false;

  /**
   * @throws Error when `redisUrl` is not a redis:// or rediss:// URL (the message never contains it)
   */
  constructor(store: Store, opts: MeteringOptions) {
    this.#store = store;
    this.#opts = opts;
    this.#allotments = new Allotments(opts.ledger ?? createLedger(store), { now: () => this.#now(), ...(opts.onError ? { onError: opts.onError } : {}) });
    this.#prices = opts.prices;
    this.#defaultMaxTokens = Math.max(0, Math.floor(opts.defaultMaxTokens));
    this.#prefix = opts.keyPrefix ?? 'sovra:rl';
    this.#now = opts.now ?? Date.now;
    if (opts.redisUrl !== undefined) {
      if (!/^rediss?:\/\//i.test(opts.redisUrl)) throw new Error('metering: redisUrl must be a redis:// or rediss:// URL');
      const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 1, connectTimeout: 2000 });
      // Without a listener, connection errors would be thrown as unhandled 'error' events.
      redis.on('error', () => undefined);
      this.#redis = redis;
      this.#redisStartup = new Promise<void>((resolve) => {
        const done = () => resolve();
        redis.once('ready', done);
        redis.once('error', done);
        redis.once('end', done);
        setTimeout(done, 2000).unref();
      });
    } else {
      this.#redis = null;
      this.#redisStartup = null;
    }
  }

  /**
   * Admits a request before it is forwarded, or refuses it.
   *
   * 1. Rate limits of the key and of its tenant: 1 request against `rpm`, and the worst case
   *    `promptTokens + maxTokens` (or `defaultMaxTokens` when `maxTokens` is null) against `tpm`.
   * 2. Budgets of the key and of the tenant for their current period: the worst case in tokens, or
   *    its cost in micro-USD (prompt at the input price, `maxTokens` at the output price), reserved
   *    atomically in the database.
   *
   * Pass `maxTokens: 0` for operations without completion tokens (embeddings).
   *
   * @param r `promptTokens` and `maxTokens` in tokens; `model` is the alias (for prices).
   *   `promptTokens` may be a function: it is then called only when a limit or budget applies
   *   (counting tokens is skipped for unmetered keys).
   * @returns the admission, with the `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers
   *   of the tightest applicable scope (empty without limits). Without limits and budgets for the
   *   key and tenant this costs no database write (definitions are cached).
   * @throws MeteringError (429) `rate_limit_exceeded`, `tokens_rate_limit_exceeded` or
   *   `budget_exceeded`; nothing stays consumed or reserved then
   * @throws Error on database failure (nothing stays reserved), or after {@link close}
   */
  async admit(r: {
    tenantId: string;
    keyId: string;
    model: string;
    promptTokens: number | (() => number);
    maxTokens: number | null;
  }): Promise<Admission> {
    if (this.#closed) throw new Error('metering is closed');
    // Cached definitions are used synchronously (no promise per request on the hot path).
    const kc = this.#cached('key', r.keyId);
    const tc = this.#cached('tenant', r.tenantId);
    const [kd, td] =
      kc && tc ? [kc, tc] : await Promise.all([kc ?? this.#definitions({ kind: 'key', id: r.keyId }), tc ?? this.#definitions({ kind: 'tenant', id: r.tenantId })]);
    if (kd.checks.length === 0 && td.checks.length === 0 && kd.budgets.length === 0 && td.budgets.length === 0) {
      const a: Stateful = { headers: {}, reservedCompletionTokens: null, [STATE]: { owner: this, model: r.model, consumed: NONE, holds: NONE, taken: NONE, settled: null } };
      return a;
    }
    // Tokens are only needed for TPM limits and budgets (an RPM-only key skips counting).
    const needTokens = kd.budgets.length + td.budgets.length > 0 || kd.limits?.tpm != null || td.limits?.tpm != null;
    const prompt = !needTokens ? 0 : tokens(typeof r.promptTokens === 'function' ? r.promptTokens() : r.promptTokens);
    const maxTokens = r.maxTokens === null ? this.#defaultMaxTokens : tokens(r.maxTokens);
    const worst = prompt + maxTokens;

    // 1. rate limits
    let consumed: Consumed[] = NONE;
    if (kd.checks.length + td.checks.length > 0) {
      // The first requests wait for the first connection attempt; afterwards, while Redis is not
      // ready, the limiters answer from their memory insurance at once (rejectIfRedisNotReady).
      if (this.#redisStartup) await this.#redisStartup;
      consumed = [];
      const failure = this.#redis ? await this.#consumeParallel(kd.checks, td.checks, worst, consumed) : await this.#consumeInMemory(kd.checks, td.checks, worst, consumed);
      if (failure !== null) {
        await this.#giveBack(consumed);
        throw failure;
      }
      for (let i = 0; i < consumed.length; i++) {
        if (consumed[i]!.rejected) {
          await this.#giveBack(consumed);
          throw this.#rateError(consumed);
        }
      }
    }

    // 2. budgets (fixed order: by budget id)
    let holds: BudgetHold[] = NONE;
    let taken: Taken[] = NONE;
    if (kd.budgets.length + td.budgets.length > 0) {
      const nowMs = this.#now();
      const budgets = byId(kd.budgets, td.budgets);
      holds = [];
      for (const b of budgets) {
        const reserve = b.unit === 'tokens' ? worst : costMicros(this.#prices, r.model, { prompt_tokens: prompt, completion_tokens: maxTokens });
        holds.push({ budget: b, budgetId: b.id, periodStart: periodStart(b.period, nowMs), amount: b.amount, reserve });
      }
      let misfit = -1;
      try {
        const fast = this.#allotments.tryReserve(holds);
        if (fast !== null) taken = fast;
        else ({ misfit, taken } = await this.#allotments.reserve(holds));
      } catch (err) {
        await this.#giveBack(consumed);
        throw err;
      }
      if (misfit >= 0) {
        await this.#giveBack(consumed);
        const b = holds[misfit]!.budget;
        const headers = this.#headers(consumed, true);
        const next = nextPeriodStart(b.period, nowMs);
        if (next !== null) headers['retry-after'] = retryAfterSeconds(next - nowMs);
        const what = b.unit === 'tokens' ? `${b.amount} tokens` : `${b.amount} micro-USD`;
        const per = b.period === 'fixed' ? '' : ` per ${b.period} (UTC)`;
        throw new MeteringError(
          'budget_exceeded',
          `Budget exceeded for ${b.scope.kind}: ${what}${per}. ${next === null ? 'This budget does not reset.' : 'It resets at the start of the next period.'}`,
          headers,
        );
      }
    }
    const reserves = holds.length > 0 || kd.limits?.tpm != null || td.limits?.tpm != null;
    const a: Stateful = {
      headers: this.#headers(consumed, false),
      reservedCompletionTokens: reserves ? maxTokens : null,
      [STATE]: { owner: this, model: r.model, consumed, holds, taken, settled: null },
    };
    return a;
  }

  /**
   * Consumes every check (the key's, then the tenant's) one after the other: in-memory limiters
   * answer at once, so this costs no promise combinator. Appends to `out` what was consumed.
   * @returns the first error that is not a refusal, or null
   */
  async #consumeInMemory(kc: readonly Check[], tc: readonly Check[], worst: number, out: Consumed[]): Promise<Error | null> {
    let failure: Error | null = null;
    for (let i = 0; i < kc.length + tc.length; i++) {
      const check = i < kc.length ? kc[i]! : tc[i - kc.length]!;
      const points = pointsOf(check, worst);
      // Read before the call: the window then ends no later than `windowEnd` (a surplus given back
      // after it never lands in the next window).
      const before = Date.now();
      try {
        out.push(consumedRecord(check, points, await check.limiter.consume(check.key, points, CALL_OPTS), false, before));
      } catch (err) {
        if (err instanceof RateLimiterRes) out.push(consumedRecord(check, points, err, true, before));
        else failure ??= asError(err);
      }
    }
    return failure;
  }

  /** As {@link #consumeInMemory}, all checks at once (one Redis round trip's wait instead of one per check). */
  async #consumeParallel(kc: readonly Check[], tc: readonly Check[], worst: number, out: Consumed[]): Promise<Error | null> {
    const checks = [...kc, ...tc];
    const now = Date.now();
    const settledAll = await Promise.allSettled(checks.map((c) => c.limiter.consume(c.key, pointsOf(c, worst), CALL_OPTS)));
    let failure: Error | null = null;
    for (let i = 0; i < settledAll.length; i++) {
      const s = settledAll[i]!;
      const check = checks[i]!;
      // A refused consume still counted its points: it is given back too.
      if (s.status === 'fulfilled') out.push(consumedRecord(check, pointsOf(check, worst), s.value, false, now));
      else if (s.reason instanceof RateLimiterRes) out.push(consumedRecord(check, pointsOf(check, worst), s.reason, true, now));
      else failure ??= asError(s.reason);
    }
    return failure;
  }

  /**
   * Settles an admission once the request ended (response complete, client disconnect or upstream
   * error): each budget reservation becomes the actual usage (`reserved -= reservation`,
   * `used += actual`; actual may exceed the reservation when the upstream produced more than
   * max_tokens: it is recorded, not clamped), and TPM counters are corrected by the difference
   * (only while their window is still the one charged).
   *
   * @param usage tokens actually used; null counts as 0 tokens
   * @returns the request's cost in micro-USD (0 for unpriced models or an admission this instance did not make)
   * Idempotent: later calls return the first call's result without touching anything. Budgets are
   * settled in this process's allotments (in memory); the database row follows within
   * `FLUSH_MS` (see `allotments.ts`), or at once with {@link flush}.
   */
  settle(a: Admission, usage: { prompt_tokens: number; completion_tokens: number } | null): Promise<{ costMicros: number }> {
    const st = (a as Stateful)[STATE];
    if (!st || st.owner !== this) return Promise.resolve({ costMicros: 0 });
    if (st.settled) return st.settled;
    let p: Promise<{ costMicros: number }>;
    try {
      p = this.#settle(st, usage);
    } catch (err) {
      return Promise.reject(err); // nothing was settled: a later call may try again
    }
    st.settled = p;
    return p;
  }

  /**
   * The work of {@link settle}, done synchronously; the promise waits only for Redis TPM
   * corrections (never rejects: a lost correction is ignored).
   */
  #settle(st: AdmissionState, usage: { prompt_tokens: number; completion_tokens: number } | null): Promise<{ costMicros: number }> {
    const u = { prompt_tokens: tokens(usage?.prompt_tokens ?? 0), completion_tokens: tokens(usage?.completion_tokens ?? 0) };
    const actualTokens = u.prompt_tokens + u.completion_tokens;
    const cost = costMicros(this.#prices, st.model, u);
    // In memory: the allotments write usage to the database in the background (see allotments.ts).
    if (st.taken.length > 0) {
      const actual: number[] = [];
      for (const h of st.holds) actual.push(h.budget.unit === 'tokens' ? actualTokens : cost);
      this.#allotments.settle(st.taken, actual);
    }
    if (st.consumed.length > 0) {
      const now = Date.now();
      const corrections: Promise<void>[] = [];
      for (const c of st.consumed) {
        if (c.check.metric !== 'tpm') continue;
        // An in-memory limiter has applied the correction when the call returns; Redis ones are awaited together.
        const p = correct(c, actualTokens - c.points, now);
        if (p !== null) corrections.push(p);
      }
      if (this.#redis && corrections.length > 0) return Promise.all(corrections).then(() => ({ costMicros: cost }));
    }
    return Promise.resolve({ costMicros: cost });
  }

  /** Drops cached limit and budget definitions (call after admin changes in this process). */
  invalidate(): void {
    this.#generation++;
    this.#defs.key.clear();
    this.#defs.tenant.clear();
    this.#loading.clear();
  }

  /**
   * Writes the usage settled in this process to the `budget_usage` rows and gives back the free
   * capacity of its allotments, so that the rows show exactly `used` = settled usage and
   * `reserved` = reservations in flight (of this process). Call before reading budgets for display.
   * @throws the database error (the writes are kept and retried later)
   */
  async flush(): Promise<void> {
    await this.#allotments.flush(true);
  }

  /**
   * Writes settled usage and gives back allotments (see {@link flush}; a failure is reported to
   * `onError`), then closes the Redis connection (if any). Idempotent; `admit` throws afterwards.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.invalidate();
    try {
      await this.#allotments.flush(true);
    } catch (err) {
      this.#opts.onError?.(err);
    }
    this.#allotments.close();
    if (this.#redis) {
      try {
        await this.#redis.quit();
      } catch {
        this.#redis.disconnect();
      }
    }
  }

  /** The cached definitions of scope (`kind`, `id`) while fresh, else null. */
  #cached(kind: ScopeKind, id: string): ScopeDefs | null {
    const hit = this.#defs[kind].get(id);
    if (!hit) return null;
    const now = this.#now();
    return now - hit.at < DEFINITIONS_TTL_MS && now >= hit.at ? hit : null;
  }

  async #definitions(scope: Scope): Promise<ScopeDefs> {
    const k = scopeKey(scope);
    const hit = this.#cached(scope.kind, scope.id);
    if (hit) return hit;
    const inflight = this.#loading.get(k);
    if (inflight) return inflight;
    const gen = this.#generation;
    const p = (async () => {
      const [limits, budgets] = await Promise.all([loadLimits(this.#store, [scope]), loadBudgets(this.#store, [scope])]);
      const l = limits.get(k) ?? null;
      const checks: Check[] = [];
      if (l?.rpm != null) checks.push({ metric: 'rpm', scope, limit: l.rpm, limitText: String(l.rpm), key: `${this.#prefix}:rpm:${k}`, limiter: this.#limiter('rpm', l.rpm) });
      if (l?.tpm != null) checks.push({ metric: 'tpm', scope, limit: l.tpm, limitText: String(l.tpm), key: `${this.#prefix}:tpm:${k}`, limiter: this.#limiter('tpm', l.tpm) });
      const defs: ScopeDefs = { limits: l, budgets, checks, at: this.#now() };
      if (gen === this.#generation) this.#defs[scope.kind].set(scope.id, defs);
      return defs;
    })();
    this.#loading.set(k, p);
    try {
      return await p;
    } finally {
      if (this.#loading.get(k) === p) this.#loading.delete(k);
    }
  }

  #limiter(metric: 'rpm' | 'tpm', points: number): RateLimiterAbstract {
    const last = metric === 'rpm' ? this.#lastRpm : this.#lastTpm;
    if (last !== null && last.points === points) return last.limiter;
    const l = this.#limiterFor(metric, points);
    if (metric === 'rpm') this.#lastRpm = { points, limiter: l };
    else this.#lastTpm = { points, limiter: l };
    return l;
  }

  /** The last limiter looked up per metric (most deployments use one or two limit values). */
  #lastRpm: { points: number; limiter: RateLimiterAbstract } | null = null;
  #lastTpm: { points: number; limiter: RateLimiterAbstract } | null = null;

  #limiterFor(metric: 'rpm' | 'tpm', points: number): RateLimiterAbstract {
    const k = `${metric}:${points}`;
    let l = this.#limiters.get(k);
    if (!l) {
      // Keys arrive whole (`Check.key`): the same Redis keys as a `<prefix>:<metric>` keyPrefix.
      const base = { keyPrefix: '', points, duration: WINDOW_S };
      l = this.#redis
        ? new RateLimiterRedis({ ...base, storeClient: this.#redis, rejectIfRedisNotReady: true, insuranceLimiter: new RateLimiterMemory(base) })
        : new RateLimiterMemory(base);
      this.#limiters.set(k, l);
    }
    return l;
  }

  /** Gives back what a refused admission consumed, to the windows still current (an ended window's points are gone with it). */
  async #giveBack(consumed: Consumed[]): Promise<void> {
    if (consumed.length === 0) return;
    const now = Date.now();
    await Promise.all(consumed.map((c) => (now < c.windowEnd ? c.check.limiter.reward(c.check.key, c.points, CALL_OPTS).catch(() => undefined) : undefined)));
  }

  /**
   * `x-ratelimit-*` headers of the tightest scope per metric (fewest remaining, then soonest reset).
   * `givenBack`: this request's consumption was returned after a refusal (remaining raised accordingly).
   */
  #headers(results: readonly Consumed[], givenBack: boolean): Record<string, string> {
    const h: Record<string, string> = {};
    if (results.length === 0) return h;
    for (const metric of METRICS) {
      let found = false;
      let limit = '';
      let remaining = 0;
      let reset = 0;
      for (const { check, res, points } of results) {
        if (check.metric !== metric) continue;
        const back = givenBack ? points : 0;
        const rem = Math.max(0, Math.min(check.limit, check.limit - res.consumedPoints + back));
        if (!found || rem < remaining || (rem === remaining && res.msBeforeNext < reset)) {
          found = true;
          limit = check.limitText;
          remaining = rem;
          reset = res.msBeforeNext;
        }
      }
      if (found) {
        const n = HEADER_NAMES[metric];
        h[n[0]] = limit;
        h[n[1]] = String(remaining);
        h[n[2]] = formatReset(reset);
      }
    }
    return h;
  }


  /** The 429 for refused rate limits: requests before tokens, key before tenant; retry-after until every refusing window resets. */
  #rateError(results: readonly Consumed[]): MeteringError {
    const rejected = results.filter((x) => x.rejected);
    const firstRes = rejected.find((x) => x.check.metric === 'rpm') ?? rejected[0]!;
    const first = firstRes.check;
    const headers = this.#headers(results, true);
    headers['retry-after'] = retryAfterSeconds(Math.max(...rejected.map((x) => x.res.msBeforeNext)));
    if (first.metric === 'rpm') {
      return new MeteringError('rate_limit_exceeded', `Rate limit reached for ${first.scope.kind}: ${first.limit} requests per minute. Retry after ${headers['retry-after']}s.`, headers);
    }
    const tooBig = firstRes.points > first.limit;
    return new MeteringError(
      'tokens_rate_limit_exceeded',
      `Rate limit reached for ${first.scope.kind}: ${first.limit} tokens per minute` +
        (tooBig ? `; this request needs up to ${firstRes.points} tokens (prompt + max tokens), more than the limit allows.` : `. Retry after ${headers['retry-after']}s.`),
      headers,
    );
  }
}

/** What one request counts against a check: 1 request, or its worst case in tokens. */
function pointsOf(check: Check, worst: number): number {
  return check.metric === 'rpm' ? 1 : worst;
}

/** The record of a consume that answered `res` (a refusal when `rejected`), asked at `before` (ms since epoch). */
function consumedRecord(check: Check, points: number, res: RateLimiterRes, rejected: boolean, before: number): Consumed {
  return { check, points, res, rejected, windowEnd: before + res.msBeforeNext };
}

/** The budgets of the key and of the tenant in one list ordered by id (the order reservations take). */
function byId(a: readonly Budget[], b: readonly Budget[]): readonly Budget[] {
  if (b.length === 0 && a.length <= 1) return a;
  if (a.length === 0 && b.length <= 1) return b;
  if (a.length === 1 && b.length === 1) return a[0]!.id <= b[0]!.id ? [a[0]!, b[0]!] : [b[0]!, a[0]!];
  return [...a, ...b].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
}

/**
 * Corrects a TPM counter by `diff` tokens (actual − reserved): gives back a surplus while the
 * window charged is still current, charges an excess. Best effort: a correction lost to a Redis
 * failure only shifts one window.
 * @returns the pending correction, or null when there is nothing to do
 */
function correct(c: Consumed, diff: number, now: number): Promise<void> | null {
  const { limiter, key } = c.check;
  let p: Promise<unknown>;
  if (diff < 0 && now < c.windowEnd) p = limiter.reward(key, -diff, CALL_OPTS);
  else if (diff > 0) p = limiter.penalty(key, diff, CALL_OPTS);
  else return null;
  return p.then(ignore, ignore);
}

function ignore(): void {}

/** `err` as an Error (a non-Error rejection becomes one with its string form). */
function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** A token count as a non-negative integer at most {@link MAX_TOKENS} (bogus values count 0). */
function tokens(n: number): number {
  return Number.isFinite(n) && n > 0 ? Math.min(MAX_TOKENS, Math.round(n)) : 0;
}

/**
 * Largest token count metering takes from one request (2^40 ≈ 1.1 × 10^12, far beyond any model's
 * context). A larger `max_tokens` counts as this: counters stay exact integers (sums of such counts
 * stay below 2^53), so a refused request's points given back leave a counter exactly as it was.
 */
export const MAX_TOKENS = 2 ** 40;
