/**
 * The routing service: owns the providers, each backend's live health, the active health checker
 * and the current {@link RoutingTable}, and swaps the table atomically on reload.
 *
 * ## Hot reload
 * {@link RoutingService.reload} takes an already validated configuration (an invalid file never
 * gets here: the caller keeps the old one). Backends whose configuration is unchanged keep their
 * provider (connection pool, loaded model) and their health (breaker, EWMA); new or changed ones get
 * a fresh provider, started in the background (its models answer 503 `not_ready`-style skips until
 * it is ready). Then the new table replaces the old in one assignment: a request planned before the
 * swap finishes on the old table's providers; providers no longer used are closed once their
 * in-flight requests have drained (at most `drainMs`).
 */
import type { BackendConfig, Config } from '../config/schema.ts';
import { buildProviders, type ProviderLog } from '../providers/registry.ts';
import type { Provider } from '../providers/types.ts';
import { BackendHealth, HealthChecker } from './health.ts';
import { checkResidency, type EffectivePolicy } from './policy.ts';
import { jurisdictionOf, RoutingTable } from './router.ts';

/** What one reload changed. */
export interface ReloadSummary {
  generation: number;
  added: string[];
  changed: string[];
  removed: string[];
  /** Configuration problems that do not stop the reload (e.g. a tenant no model can serve). */
  warnings: string[];
}

/** A reload built by {@link RoutingService.prepare}, not applied yet. */
export interface PreparedReload {
  readonly table: RoutingTable;
  readonly summary: ReloadSummary;
  /** @internal providers built for new or changed backends */
  readonly fresh: Provider[];
  /** @internal in-place limit changes of kept health trackers */
  readonly reconfigure: Array<() => void>;
  /** @internal the table this reload was prepared against */
  readonly base: RoutingTable;
}

/** A backend as `GET /admin/v1/backends` shows it (no credential, no header value). */
export interface BackendReport {
  id: string;
  provider: string;
  jurisdiction: string | null;
  hosting: string | null;
  operator: string | null;
  max_classification: string;
  ready: boolean;
  not_ready_reason: string | null;
  health: ReturnType<BackendHealth['snapshot']>;
  models: string[];
}

/** Options of {@link RoutingService.create}. */
export interface RoutingServiceOptions {
  configDir: string;
  env: NodeJS.ProcessEnv;
  log: ProviderLog;
  /** Most time old providers get to finish in-flight requests after a reload, ms (default 10 min). */
  drainMs?: number;
}

const same = (a: BackendConfig, b: BackendConfig) => JSON.stringify(a) === JSON.stringify(b);

/** See module doc. */
export class RoutingService {
  private current: RoutingTable;
  private checker: HealthChecker | null = null;
  private started = false;
  private readonly draining = new Set<Promise<void>>();
  private closed = false;

  private constructor(
    private readonly opts: RoutingServiceOptions,
    table: RoutingTable,
  ) {
    this.current = table;
  }

  /** Builds providers and health for a configuration (nothing is started). */
  static async create(config: Config, opts: RoutingServiceOptions): Promise<RoutingService> {
    const providers = await buildProviders(config.backends, opts.configDir, opts.env, opts.log);
    const health = new Map<string, BackendHealth>();
    for (const b of config.backends) health.set(b.id, healthFor(b));
    return new RoutingService(opts, new RoutingTable(config, providers, health, 1));
  }

  /** The current routing table (one atomic read per request). */
  table(): RoutingTable {
    return this.current;
  }

  /** Every provider of the current generation. */
  providers(): Provider[] {
    return [...this.current.providers.values()];
  }

  /**
   * Starts every provider (resolves when all settled, successfully or not) and the health checker.
   * @param onSettled called per provider with its error (undefined on success)
   */
  startBackends(onSettled: (p: Provider, err?: Error) => void): Promise<void> {
    this.started = true;
    this.restartChecker();
    return Promise.all(this.providers().map((p) => p.start().then(() => onSettled(p), (err: Error) => onSettled(p, err)))).then(() => undefined);
  }

  /**
   * Builds the routing of a new configuration without using it yet: new providers for new or
   * changed backends (not started), the new table. Nothing observable changes until
   * {@link commit}; {@link abort} releases what was built.
   * @param config a validated configuration
   * @throws Error when the configuration cannot be built (nothing is changed)
   */
  async prepare(config: Config): Promise<PreparedReload> {
    const old = this.current;
    const oldById = new Map(old.config.backends.map((b) => [b.id, b]));
    const keep = config.backends.filter((b) => oldById.has(b.id) && same(oldById.get(b.id)!, b));
    const fresh = config.backends.filter((b) => !keep.includes(b));
    const built = await buildProviders(fresh, this.opts.configDir, this.opts.env, this.opts.log);
    try {
      const providers = new Map<string, Provider>();
      const health = new Map<string, BackendHealth>();
      const reconfigure: Array<() => void> = [];
      for (const b of config.backends) {
        if (keep.includes(b)) {
          providers.set(b.id, old.providers.get(b.id)!);
          health.set(b.id, old.health.get(b.id)!);
          continue;
        }
        providers.set(b.id, built.get(b.id)!);
        const prev = old.health.get(b.id);
        if (prev) {
          // Same backend id: keep its health object (running requests keep counting against its
          // in-flight limit); limits change in place at commit, history resets if the engine moved.
          const was = oldById.get(b.id)!;
          const moved = was.provider !== b.provider || endpointOf(was) !== endpointOf(b);
          healthFor(b); // validates the new limits now (throws before anything changes)
          reconfigure.push(() => prev.reconfigure(healthOptions(b), moved));
          health.set(b.id, prev);
        } else health.set(b.id, healthFor(b));
      }
      const table = new RoutingTable(config, providers, health, old.generation + 1);
      return {
        table,
        summary: {
          generation: table.generation,
          added: fresh.filter((b) => !oldById.has(b.id)).map((b) => b.id),
          changed: fresh.filter((b) => oldById.has(b.id)).map((b) => b.id),
          removed: old.config.backends.filter((b) => !config.backends.some((n) => n.id === b.id)).map((b) => b.id),
          warnings: unservableReport(table),
        },
        fresh: fresh.map((b) => providers.get(b.id)!),
        reconfigure,
        base: old,
      };
    } catch (err) {
      await Promise.all([...built.values()].map((p) => p.close().catch(() => undefined)));
      throw err;
    }
  }

  /** Releases what {@link prepare} built (the reload is not applied). */
  async abort(p: PreparedReload): Promise<void> {
    await Promise.all(p.fresh.map((x) => x.close().catch(() => undefined)));
  }

  /**
   * Swaps in a prepared reload (see module doc).
   * @param onSettled as in {@link startBackends}, for the new providers
   * @throws Error when another reload was committed since `p` was prepared
   */
  commit(p: PreparedReload, onSettled: (p: Provider, err?: Error) => void): ReloadSummary {
    const old = this.current;
    if (old !== p.base) throw new Error('the routing changed while this reload was prepared');
    for (const r of p.reconfigure) r();
    this.current = p.table; // the swap
    if (this.started) {
      this.restartChecker();
      for (const prov of p.fresh) void prov.start().then(() => onSettled(prov), (err: Error) => onSettled(prov, err));
    }
    // Retire the providers the new generation no longer uses, once drained. (Requests planned on the
    // old table re-plan on the current one before each attempt, so only running attempts use them.)
    for (const [id, prov] of old.providers) {
      if (p.table.providers.get(id) === prov) continue;
      const h = old.health.get(id)!;
      const d = this.drain(prov, h).finally(() => this.draining.delete(d));
      this.draining.add(d);
    }
    return p.summary;
  }

  /** {@link prepare} then {@link commit}. */
  async reload(config: Config, onSettled: (p: Provider, err?: Error) => void): Promise<ReloadSummary> {
    const p = await this.prepare(config);
    return this.commit(p, onSettled);
  }

  private async drain(p: Provider, h: BackendHealth): Promise<void> {
    const deadline = performance.now() + (this.opts.drainMs ?? 600_000);
    while (h.inFlight() > 0 && performance.now() < deadline && !this.closed) await new Promise((r) => setTimeout(r, 100).unref());
    await p.close().catch(() => undefined);
  }

  private restartChecker(): void {
    this.checker?.stop();
    this.checker = null;
    const t = this.current;
    const targets: Array<{ health: BackendHealth; probe: (signal: AbortSignal) => Promise<void> }> = [];
    let interval = Infinity;
    let timeout = 0;
    for (const b of t.config.backends) {
      const p = t.providers.get(b.id)!;
      if (!b.health_check.enabled || !p.healthCheck) continue;
      const path = b.health_check.path;
      targets.push({ health: t.health.get(b.id)!, probe: (signal) => p.healthCheck!(path, signal) });
      interval = Math.min(interval, b.health_check.interval_ms);
      timeout = Math.max(timeout, b.health_check.timeout_ms);
    }
    if (targets.length === 0) return;
    this.checker = new HealthChecker({ intervalMs: interval, timeoutMs: timeout, targets, log: {
        info: (o, m) => this.opts.log('info', `${m} ${JSON.stringify(o)}`),
        warn: (o, m) => this.opts.log('warn', `${m} ${JSON.stringify(o)}`),
      },
    });
    this.checker.start();
  }

  /** Runs one round of active checks now (tests, `POST /admin/v1/backends/check`). */
  async checkNow(): Promise<void> {
    await this.checker?.checkNow();
  }

  /** Every backend with its attributes, readiness and health (for `GET /admin/v1/backends`). */
  report(): BackendReport[] {
    const t = this.current;
    const home = t.config.residency.home_jurisdiction;
    return t.config.backends.map((b) => {
      const p = t.providers.get(b.id)!;
      const st = p.state();
      const h = t.health.get(b.id)!;
      return {
        id: b.id,
        provider: b.provider,
        jurisdiction: jurisdictionOf(b, home),
        hosting: b.hosting ?? (b.provider === 'embedded' ? 'on_premises' : null),
        operator: b.operator ?? null,
        max_classification: t.ladder.name(b.max_classification !== undefined ? t.ladder.rank(b.max_classification) : b.provider === 'embedded' ? t.ladder.highest : 0),
        ready: st.ready,
        not_ready_reason: st.ready ? null : st.reason,
        health: h.snapshot(),
        models: t.models().filter((m) => (m.pool ? m.pool.some((x) => x.backend === b.id) : m.backend === b.id)).map((m) => m.name),
      };
    });
  }

  /** Stops checks, waits for drains, closes every provider. */
  async close(): Promise<void> {
    this.closed = true;
    this.checker?.stop();
    await Promise.all(this.draining);
    await Promise.all(this.providers().map((p) => p.close().catch(() => undefined)));
  }
}

/** A backend's health limits, from its configuration. */
function healthOptions(b: BackendConfig) {
  return {
    maxInFlight: b.max_in_flight,
    failureThreshold: b.breaker.failures,
    openMs: b.breaker.open_ms,
    maxOpenMs: b.breaker.max_open_ms,
    halfOpenProbes: b.breaker.half_open_probes,
  };
}

/** A backend's health tracker, from its configuration. */
function healthFor(b: BackendConfig): BackendHealth {
  return new BackendHealth({ id: b.id, ...healthOptions(b) });
}

/** Where a backend's engine is (a different value = another engine). */
function endpointOf(b: BackendConfig): string {
  return b.provider === 'embedded' ? b.model_path : b.base_url;
}

/**
 * Tenants (as the configuration names them, plus the default policy) whose data no model of this
 * table may ever receive at their default classification: each is a line to report at load time.
 * @param extra further tenants to check (e.g. from the database: name and attributes)
 */
export function unservableReport(table: RoutingTable, extra: Array<{ name: string; jurisdiction: string | null; classification: string | null }> = []): string[] {
  const out: string[] = [];
  const check = (label: string, p: EffectivePolicy) => {
    const servable: string[] = [];
    for (const m of table.models()) {
      const a = table.alias(m.name)!;
      if (a.members.some((mem) => checkResidency(p, mem.residency, p.defaultClass, table.ladder, Date.now()).ok)) servable.push(m.name);
    }
    if (servable.length === 0 && table.models().length > 0)
      out.push(`${label}: no model has a backend that may receive its ${table.ladder.name(p.defaultClass)} data (allowed: ${p.allowed === '*' ? 'anywhere' : p.allowed.join(', ')}); its requests will all be refused with 451`);
  };
  const cfg = table.config.residency;
  check('default residency policy', table.policyFor(null, undefined));
  for (const name of Object.keys(cfg.tenants)) check(`tenant "${name}"`, table.policyFor(name, undefined));
  for (const t of extra) if (!(t.name in cfg.tenants)) check(`tenant "${t.name}"`, table.policyFor(t.name, { jurisdiction: t.jurisdiction, classification: t.classification }));
  return out;
}
