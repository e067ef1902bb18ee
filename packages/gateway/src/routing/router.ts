/**
 * The router: model alias → pool of backends → one attempt at a time, each filtered by the tenant's
 * residency policy, the backend's capabilities and its live health (docs/routing.md).
 *
 * A {@link RoutingTable} is built once per configuration generation (start-up and each hot reload)
 * and never changes; swapping the whole table is how a reload takes effect atomically. Per request,
 * {@link RoutingTable.plan} applies everything static (policy, capabilities) once and returns a
 * {@link RoutePlan}; {@link RoutePlan.next} then applies what is live (breakers, health checks,
 * concurrency limits) before every attempt — the first choice, every retry and every fallback.
 *
 * The plan also keeps the decisions for the audit entry (`policy.residency`): the request's
 * classification, each candidate excluded and why, each attempt and its result.
 */
import type { BackendConfig, Config, ModelConfig } from '../config/schema.ts';
import { GatewayError } from '../http/errors.ts';
import type { Principal, Route } from '../pipeline/context.ts';
import type { Operation, Provider, Timeouts } from '../providers/types.ts';
import { createBalancer, type Balancer } from './balancer.ts';
import type { BackendHealth } from './health.ts';
import { checkResidency, ClassificationLadder, requestClass, resolvePolicy, type BackendResidency, type EffectivePolicy } from './policy.ts';
import type { PoolMember } from './types.ts';

/** Most decision lines kept for one request's audit entry (the record keeps up to 64). */
export const MAX_DECISIONS = 62;
/** Most routine lines (exclusions, skips); further ones are counted in one summary line. */
export const MAX_ROUTINE_DECISIONS = 36;

/** One backend of an alias's pool, with everything an attempt needs. */
export interface Member extends PoolMember {
  readonly backend: BackendHealth;
  readonly config: BackendConfig;
  readonly provider: Provider;
  readonly upstreamModel: string;
  readonly timeouts: Timeouts;
  readonly residency: BackendResidency;
}

/** A model alias, resolved. */
export interface AliasRoute {
  readonly model: ModelConfig;
  readonly members: readonly Member[];
  readonly balancer: Balancer;
}

/** What routing needs to know of a request's body (computed once, see {@link requestNeeds}). */
export interface RequestNeeds {
  readonly operation: Operation;
  /** The request defines tools (or carries tool calls / results). */
  readonly tools: boolean;
  /** The request carries image parts. */
  readonly vision: boolean;
  /** Estimated prompt + completion tokens (4 characters per token; completion = the request's cap, 0 if none). */
  readonly contextTokens: number;
  /** Top-level fields the client sent (for fallback aliases' `forbid_params`). */
  readonly body: Record<string, unknown>;
}

/**
 * Reads what routing needs from a validated request body.
 * @param body the parsed body; never modified
 */
export function requestNeeds(operation: Operation, body: Record<string, unknown>): RequestNeeds {
  let tools = Array.isArray(body['tools']) && body['tools'].length > 0;
  let vision = false;
  let chars = 0;
  const messages = body['messages'];
  if (Array.isArray(messages)) {
    for (const m of messages) {
      if (!m || typeof m !== 'object') continue;
      const msg = m as Record<string, unknown>;
      if (msg['role'] === 'tool' || msg['tool_calls'] !== undefined) tools = true;
      const c = msg['content'];
      if (typeof c === 'string') chars += c.length;
      else if (Array.isArray(c))
        for (const p of c) {
          const part = p as Record<string, unknown> | null;
          if (!part || typeof part !== 'object') continue;
          if (part['type'] === 'image_url' || part['type'] === 'input_image') vision = true;
          else if (typeof part['text'] === 'string') chars += (part['text'] as string).length;
        }
    }
  } else {
    const src = body['prompt'] ?? body['input'];
    if (typeof src === 'string') chars = src.length;
    else if (Array.isArray(src)) for (const s of src) chars += typeof s === 'string' ? s.length : Array.isArray(s) ? s.length * 4 : 0;
  }
  const cap = body['max_completion_tokens'] ?? body['max_tokens'];
  const contextTokens = Math.ceil(chars / 4) + (typeof cap === 'number' && cap > 0 ? cap : 0);
  return { operation, tools, vision, contextTokens, body };
}

/** A backend's clearance rank (its `max_classification`; default: embedded → highest, else lowest). */
function clearanceOf(b: BackendConfig, ladder: ClassificationLadder): number {
  if (b.max_classification !== undefined) return ladder.rank(b.max_classification);
  return b.provider === 'embedded' ? ladder.highest : 0;
}

/** A backend's jurisdiction (embedded engines run where the gateway runs). */
export function jurisdictionOf(b: BackendConfig, home: string | undefined): string | null {
  return b.jurisdiction ?? (b.provider === 'embedded' ? (home ?? null) : null);
}

/** Static reasons a member cannot serve a request, or null. */
function capabilityGap(m: Member, needs: RequestNeeds): string | null {
  if (!m.provider.supports(needs.operation)) return `capability_missing:${needs.operation}`;
  const caps = m.config.capabilities;
  if (caps.operations && !caps.operations.includes(needs.operation)) return `capability_missing:${needs.operation}`;
  if (needs.tools && !caps.tools) return 'capability_missing:tools';
  if (needs.vision && !caps.vision) return 'capability_missing:vision';
  if (caps.max_context !== undefined && needs.contextTokens > caps.max_context) return 'context_too_long';
  return null;
}

/** Convert configured timeouts (snake_case ms) to the provider's shape. */
export function timeoutsOf(b: BackendConfig): Timeouts {
  const t = b.timeouts;
  return { connectMs: t.connect_ms, firstByteMs: t.first_byte_ms, idleMs: t.idle_ms, totalMs: t.total_ms, streamTotalMs: t.stream_total_ms };
}

/**
 * Enforces a key's model allowlist.
 * @param principal the authenticated key (`modelAllowlist` null = every model)
 * @param alias the configured model alias the request resolved to
 * @throws GatewayError 403 `model_not_allowed` (param `model`) when the alias is not on the allowlist
 */
export function assertModelAllowed(principal: Pick<Principal, 'modelAllowlist'> | undefined, alias: string): void {
  const list = principal?.modelAllowlist;
  if (list === null || list === undefined) return;
  if (!list.includes(alias))
    throw new GatewayError(403, 'invalid_request_error', 'model_not_allowed', `This API key is not allowed to use the model '${alias}'.`, 'model');
}

/** One attempt chosen by a plan. */
export interface Attempt {
  readonly route: Route;
  readonly member: Member;
  /** 1-based attempt number. */
  readonly n: number;
}

/** One generation of routing tables (immutable; replaced whole on reload). */
export class RoutingTable {
  readonly ladder: ClassificationLadder;
  private readonly aliases = new Map<string, AliasRoute>();
  private readonly policies = new Map<string, EffectivePolicy>();

  /**
   * @param config validated configuration
   * @param providers backend id → provider
   * @param health backend id → live health (shared across generations for unchanged backends)
   * @param generation counter shown in `/admin/v1/routing` and reload entries
   */
  constructor(
    readonly config: Config,
    readonly providers: ReadonlyMap<string, Provider>,
    readonly health: ReadonlyMap<string, BackendHealth>,
    readonly generation = 1,
  ) {
    this.ladder = new ClassificationLadder(config.residency.classifications);
    const backends = new Map<string, BackendConfig>(config.backends.map((b) => [b.id, b]));
    const home = config.residency.home_jurisdiction;
    for (const m of config.models) {
      const pool = m.pool ?? [{ backend: m.backend!, weight: 1 }];
      const members: Member[] = pool.map((p) => {
        const b = backends.get(p.backend)!;
        return {
          backend: health.get(b.id)!,
          weight: p.weight,
          config: b,
          provider: providers.get(b.id)!,
          upstreamModel: p.upstream_model ?? m.upstream_model ?? m.name,
          timeouts: timeoutsOf(b),
          residency: { id: b.id, jurisdiction: jurisdictionOf(b, home), clearance: clearanceOf(b, this.ladder) },
        };
      });
      this.aliases.set(m.name, { model: m, members, balancer: createBalancer(m.strategy) });
    }
  }

  /** All model aliases, in configuration order. */
  models(): ModelConfig[] {
    return [...this.aliases.values()].map((a) => a.model);
  }

  /** An alias's resolved route, or undefined. */
  alias(name: string): AliasRoute | undefined {
    return this.aliases.get(name);
  }

  /** The effective residency policy of a tenant (memoised per tenant and attributes). */
  policyFor(tenant: string | null, attrs: Principal['tenantAttributes'] | undefined): EffectivePolicy {
    const k = `${tenant ?? ''}\u0000${attrs?.jurisdiction ?? ''}\u0000${attrs?.classification ?? ''}`;
    let p = this.policies.get(k);
    if (!p) {
      p = resolvePolicy(this.config.residency, this.ladder, tenant, attrs);
      if (this.policies.size > 10_000) this.policies.clear();
      this.policies.set(k, p);
    }
    return p;
  }

  /**
   * Plans a request: resolves the alias (and its fallbacks), applies the residency policy and the
   * capabilities to every pool member once.
   * @param dataClassHeader the `x-sovra-data-class` request header, if sent
   * @param minClass a classification name the request must be treated as at least (the privacy
   *   guard's `allow_classification` when identifiers were let through); unknown = the highest
   * @throws GatewayError 404 `model_not_found`; 403 `model_not_allowed`; 400 `unsupported_operation`,
   *   `invalid_data_class`; 451 `residency_no_allowed_backend` when policy leaves no candidate at all
   *   (the plan's decisions are attached to the error as `decisions`)
   */
  plan(name: string, needs: RequestNeeds, principal: Principal | undefined, dataClassHeader?: string | string[], now = Date.now(), minClass?: string): RoutePlan {
    const primary = this.aliases.get(name);
    if (!primary) throw new GatewayError(404, 'invalid_request_error', 'model_not_found', `The model '${name}' does not exist or you do not have access to it.`, 'model');
    assertModelAllowed(principal, primary.model.name);
    const policy = this.policyFor(principal?.tenant ?? null, principal?.tenantAttributes);
    let dataClass = requestClass(this.ladder, policy, dataClassHeader);
    // The privacy guard let identifiers through (`allow`): at least its classification.
    if (minClass !== undefined) dataClass = Math.max(dataClass, this.ladder.rank(minClass) >= 0 ? this.ladder.rank(minClass) : this.ladder.highest);
    const plan = new RoutePlan(this, primary, dataClass, { needs, principal, dataClassHeader, minClass });
    plan.note(`class=${this.ladder.name(dataClass)}`);
    let capable = 0;
    let residencyExcluded = 0;
    const chain: AliasRoute[] = [primary];
    for (const f of primary.model.fallbacks) {
      const a = this.aliases.get(f);
      if (a && !chain.includes(a)) chain.push(a);
    }
    for (const alias of chain) {
      if (alias !== primary) {
        // A fallback is another model: the key must be allowed to use it too.
        const list = principal?.modelAllowlist;
        if (list && !list.includes(alias.model.name)) {
          plan.note(`exclude ${alias.model.name}: model_not_allowed`);
          continue;
        }
        const forbidden = alias.model.forbid_params.find((p) => needs.body[p] !== undefined);
        if (forbidden !== undefined) {
          plan.note(`exclude ${alias.model.name}: forbidden_parameter ${forbidden}`);
          continue;
        }
      }
      const allowed: Member[] = [];
      for (const m of alias.members) {
        const gap = capabilityGap(m, needs);
        if (gap) {
          plan.note(`exclude ${alias.model.name}/${m.config.id}: ${gap}`);
          continue;
        }
        capable++;
        const v = checkResidency(policy, m.residency, dataClass, this.ladder, now);
        if (!v.ok) {
          residencyExcluded++;
          plan.note(`exclude ${alias.model.name}/${m.config.id}: ${v.code} (${v.detail})`);
          continue;
        }
        if (v.transfer) plan.transfers.set(m.config.id, v.transfer.basis);
        allowed.push(m);
      }
      if (allowed.length > 0) plan.addStage(alias, allowed);
    }
    if (plan.empty()) {
      if (capable === 0)
        throw withDecisions(
          new GatewayError(400, 'invalid_request_error', 'unsupported_operation', `The model '${name}' has no backend that can serve this request (${needs.operation}${needs.tools ? ', tools' : ''}${needs.vision ? ', images' : ''}).`, 'model'),
          plan.decisions,
        );
      if (residencyExcluded > 0)
        throw withDecisions(
          new GatewayError(451, 'invalid_request_error', 'residency_no_allowed_backend', `No backend of model '${name}' may receive this tenant's ${this.ladder.name(dataClass)} data under its residency policy.`, 'model'),
          plan.decisions,
        );
      throw withDecisions(new GatewayError(400, 'invalid_request_error', 'forbidden_parameter', `The model '${name}' cannot serve this request.`, 'model'), plan.decisions);
    }
    return plan;
  }
}

/**
 * Plans `old`'s request again on this table (after a hot reload): the same request, principal
 * and classification header, with the attempts already made and their decisions carried over; a
 * backend already tried is not tried again.
 * @throws GatewayError as {@link RoutingTable.plan} (e.g. 451 when the new policy allows nothing)
 */
export function replan(table: RoutingTable, old: RoutePlan): RoutePlan {
  let next: RoutePlan;
  try {
    next = table.plan(old.primary.model.name, old.args.needs, old.args.principal, old.args.dataClassHeader, Date.now(), old.args.minClass);
  } catch (e) {
    const d = (e as RoutingError).decisions;
    if (d) (e as RoutingError).decisions = [...old.decisions, `reload: generation ${table.generation}`, ...d];
    throw e;
  }
  next.inherit(old, `reload: generation ${table.generation}`);
  return next;
}

/** A GatewayError that carries a plan's decisions for the audit entry. */
export type RoutingError = GatewayError & { decisions?: string[] };

function withDecisions(e: GatewayError, decisions: string[]): RoutingError {
  (e as RoutingError).decisions = decisions;
  return e;
}

/**
 * The candidates of one request, in stages (the alias's pool, then each fallback alias's), and
 * what happened to them. Not shared between requests.
 */
export class RoutePlan {
  /** Audit decision lines (see module doc). */
  readonly decisions: string[] = [];
  /** Backend id → transfer basis used to allow it (recorded when that backend serves). */
  readonly transfers = new Map<string, string>();
  private readonly stages: Array<{ alias: AliasRoute; members: Member[] }> = [];
  private readonly tried = new Set<string>();
  private attempts = 0;
  private dropped = 0;

  private routine = 0;
  private droppedAt = -1;

  constructor(
    readonly table: RoutingTable,
    readonly primary: AliasRoute,
    /** Rank of the request's classification. */
    readonly dataClass: number,
    /** What the plan was made from (for {@link replan}). */
    readonly args: { needs: RequestNeeds; principal: Principal | undefined; dataClassHeader: string | string[] | undefined; minClass: string | undefined },
  ) {}

  /**
   * Records one decision line. Routine lines (exclusions, skips) are capped at
   * {@link MAX_ROUTINE_DECISIONS}, the rest counted in one summary line; `key` lines (attempts,
   * transfer bases used, panic, reloads) are always kept, so the record says where the data went.
   */
  note(line: string, key = false): void {
    if (key || this.routine < MAX_ROUTINE_DECISIONS) {
      if (!key) this.routine++;
      if (this.decisions.length < MAX_DECISIONS) this.decisions.push(line);
      return;
    }
    this.dropped++;
    const summary = `… ${this.dropped} more exclusion(s) not listed`;
    if (this.droppedAt < 0) {
      this.droppedAt = this.decisions.length;
      this.decisions.push(summary);
    } else this.decisions[this.droppedAt] = summary;
  }

  /** @internal Carries attempts, tried backends and decisions over from a plan made on an older table. */
  inherit(old: RoutePlan, line: string): void {
    const mine = this.decisions.splice(0);
    this.decisions.push(...old.decisions, line, ...mine);
    for (const t of old.tried) this.tried.add(t);
    this.attempts = old.attempts;
  }

  /** True when an admissible-by-policy candidate has not been tried yet (health not considered). */
  hasUntried(): boolean {
    return this.stages.some((s) => s.members.some((m) => !this.tried.has(m.config.id)));
  }

  /** @internal */
  addStage(alias: AliasRoute, members: Member[]): void {
    this.stages.push({ alias, members });
  }

  /** True when policy and capabilities left no candidate. */
  empty(): boolean {
    return this.stages.length === 0;
  }

  /** Attempts made so far. */
  get attemptCount(): number {
    return this.attempts;
  }

  /** Most attempts for this request (the primary alias's `retry.attempts`). */
  get maxAttempts(): number {
    return this.primary.model.retry.attempts;
  }

  /**
   * The next attempt: the first stage (the alias's pool, then each fallback) with an admissible
   * member not tried yet, chosen by that alias's balancer. A backend is never tried twice for one
   * request. Health exclusions are noted once per backend.
   *
   * Panic mode (as Envoy's panic threshold, at 100 %): when no candidate is admissible for the
   * first attempt only because health ejected all of them (breaker open, cooling down after a 429,
   * failing active checks), one is tried anyway rather than refusing every request — ejection steers
   * traffic to the healthy, it must not turn a single-backend model off. Residency is never relaxed;
   * candidates at capacity or not ready are never panicked into.
   * @returns null when no candidate is left, or the attempt budget is spent
   */
  next(): Attempt | null {
    if (this.attempts >= this.maxAttempts) return null;
    let pick: { alias: AliasRoute; member: Member } | null = null;
    for (const s of this.stages) {
      const open = this.admissible(s.members, false);
      const m = open.length > 0 ? s.alias.balancer.pick(open, this.tried) : null;
      if (m) {
        pick = { alias: s.alias, member: m as Member };
        break;
      }
    }
    if (!pick && this.attempts === 0) {
      for (const s of this.stages) {
        const open = this.admissible(s.members, true);
        const m = open.length > 0 ? s.alias.balancer.pick(open, this.tried) : null;
        if (m) {
          pick = { alias: s.alias, member: m as Member };
          this.note(`panic: every candidate is ejected; trying ${m.backend.id} anyway`, true);
          break;
        }
      }
    }
    if (!pick) return null;
    this.attempts++;
    this.tried.add(pick.member.config.id);
    const { alias, member } = pick;
    const transfer = this.transfers.get(member.config.id);
    if (transfer !== undefined) this.note(`transfer ${member.config.id} (${member.residency.jurisdiction}): ${transfer}`, true);
    return {
      n: this.attempts,
      member,
      route: {
        model: alias.model,
        backendConfig: member.config,
        provider: member.provider,
        upstreamModel: member.upstreamModel,
        timeouts: member.timeouts,
        health: member.backend,
      },
    };
  }

  private readonly healthNoted = new Set<string>();
  private notReadyOnly = true;

  /**
   * Members that may take an attempt now (not tried yet). With `panic`, members ejected only by
   * health count as admissible (see {@link next}).
   */
  private admissible(members: readonly Member[], panic: boolean): Member[] {
    const out: Member[] = [];
    for (const m of members) {
      if (this.tried.has(m.config.id)) continue;
      const st = m.provider.state();
      const why = !st.ready ? 'not_ready' : m.backend.ejectedReason();
      if (why === null || (panic && why !== 'not_ready' && why !== 'at_capacity')) out.push(m);
      else if (!panic && !this.healthNoted.has(m.config.id)) {
        this.healthNoted.add(m.config.id);
        if (why !== 'not_ready') this.notReadyOnly = false;
        this.note(`skip ${m.config.id}: ${why}`);
      }
    }
    return out;
  }

  /** True when policy excluded at least one candidate for residency. */
  residencyExcluded(): boolean {
    return this.decisions.some((d) => d.startsWith('exclude ') && /: (jurisdiction_|transfer_basis_|classification_exceeds)/.test(d));
  }

  /**
   * The error for a request whose allowed backends all failed to answer (connect errors, timeouts)
   * while policy had excluded others: 451 `residency_allowed_backends_unavailable` — the request was
   * not sent elsewhere. Null when policy excluded nothing (the caller reports the failure itself).
   */
  residencyFailure(): RoutingError | null {
    if (!this.residencyExcluded()) return null;
    const name = this.primary.model.name;
    return withDecisions(
      new GatewayError(451, 'service_unavailable', 'residency_allowed_backends_unavailable', `Every backend of model '${name}' that may receive this tenant's data under its residency policy failed or is unavailable; the request was not sent elsewhere.`, 'model', { 'retry-after': '5' }),
      this.decisions,
    );
  }

  /**
   * The error for a request no attempt could be made for (every allowed candidate down), or that
   * ran out of candidates after failures handled by the caller.
   * - 451 `residency_allowed_backends_unavailable` when policy excluded candidates and every allowed
   *   one is unavailable (a disallowed one might have been up: the law, not the outage, decides);
   * - 503 `backend_unavailable` (with `retry-after`) otherwise.
   */
  unavailable(): RoutingError {
    const name = this.primary.model.name;
    const residency = this.residencyFailure();
    if (residency) return residency;
    const e = this.notReadyOnly
      ? new GatewayError(503, 'service_unavailable', 'backend_not_ready', `The backend for model '${name}' is not ready; try again later (operators: see /readyz).`, null, { 'retry-after': '5' })
      : new GatewayError(503, 'service_unavailable', 'backend_unavailable', `No backend of model '${name}' is available; try again later (operators: see /admin/v1/backends).`, null, { 'retry-after': '5' });
    return withDecisions(e, this.decisions);
  }
}
