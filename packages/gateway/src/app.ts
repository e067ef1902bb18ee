/**
 * Compose a gateway from a configuration: store, providers, route table, pipeline and HTTP server.
 *
 * Start-up order: the server listens first (so `/healthz` answers and `/readyz` reports progress),
 * then migrations run, then every backend starts (embedded models load). Data-plane requests get
 * 503 `not_ready` until migrations are done; a backend that is still loading or failed answers 503
 * for its models only, with the reason.
 *
 * With `audit.enabled` (the default), the transparency log opens after the migrations (origin and
 * signing key checked, stored tiles verified against the latest checkpoint — start-up fails if they
 * disagree), its integrator starts, and `/audit/*` serves the read API. Request records go through
 * the group-committing {@link Journal}.
 */
import type { FastifyInstance } from 'fastify';
import type { Config } from './config/schema.ts';
import { resolveConfigPath, resolveDatabaseUrl } from './config/load.ts';
import { buildServer } from './http/server.ts';
import { Pipeline } from './pipeline/index.ts';
import { RoutingService, unservableReport, type ReloadSummary } from './routing/service.ts';
import { parseConfig, ConfigError } from './config/load.ts';
import { readFileSync } from 'node:fs';
import { recordAdminAction } from './audit/admin.ts';
import { auditUnavailable } from './pipeline/audit-errors.ts';
import { openStore, type Store } from './store/db.ts';
import { KeyAuthenticator } from './keys/keys.ts';
import { Journal } from './audit/journal.ts';
import { AuditStorage } from './audit/storage.ts';
import { AuditLog } from './audit/integrator.ts';
import { StoreWorker, type RunningAuditLog } from './audit/store-worker.ts';
import { Metering } from './metering/index.ts';
import { createLedger } from './metering/ledger.ts';
import { createJournalSink, type SinkRetention } from './audit/sink.ts';
import { loadContentKeyring } from './audit/content.ts';

import { createLogger, type Logger } from './telemetry/logger.ts';
import { PrivacyGuard } from './privacy/guard.ts';

/** How often retained content past `audit.content_retention.max_age_days` is deleted, ms. */
const CONTENT_PURGE_INTERVAL_MS = 3_600_000;

/** Options for {@link createGateway}. */
export interface GatewayOptions {
  config: Config;
  /** Folder relative paths resolve against (the config file's folder). */
  configDir: string;
  logger?: Logger;
  env?: NodeJS.ProcessEnv;
  /** The configuration file, for {@link Gateway.reload} (hot reload); without it reload needs a config. */
  configPath?: string;
}

/** A running (or startable) gateway. */
export interface Gateway {
  readonly app: FastifyInstance;
  readonly logger: Logger;
  /** Available after {@link Gateway.start} resolved. */
  store(): Store;
  /**
   * The journal (request rows and log entries); `flush()` waits for everything written so far to be
   * committed. With the audit log on, a request's `requests` row reaches its table only when its
   * entry is integrated (`src/audit/queued-rows.ts`): use {@link Gateway.flush} to wait for that.
   */
  recorder(): Journal;
  /**
   * Resolves once everything recorded so far is committed and, with the audit log on, integrated:
   * every finished request's `requests` row is then in its table. Never rejects (a failed
   * integration round is logged and its rows stay queued).
   */
  flush(): Promise<void>;
  /** The transparency log, when `audit.enabled` (available after {@link Gateway.start}). */
  audit(): RunningAuditLog | undefined;
  /** Rate limits and budgets (available after {@link Gateway.start}). */
  metering(): Metering | undefined;
  /** Listen, migrate, start backends. Resolves with the base URL once migrations are done. */
  start(): Promise<string>;
  /** Resolves when every backend finished starting (successfully or not). */
  backendsSettled(): Promise<void>;
  /** Backends, health and the current routing table. */
  routing(): RoutingService;
  /**
   * Hot reload (docs/routing.md): re-reads the configuration file (or takes `config`), validates it
   * and swaps the routing (backends, models, residency) and the privacy policy atomically; in-flight requests finish on
   * what they started with. Each successful reload is an audit entry (`config.reload`).
   * Sections that need a restart (server, database, audit, metering) are ignored, with a warning.
   * @throws ConfigError when the file is invalid (the running configuration is kept)
   */
  reload(config?: Config, actor?: string): Promise<ReloadSummary>;
  /** Stop accepting, finish in-flight requests, flush records, close backends and store. */
  close(): Promise<void>;
}

/** Build a gateway (nothing is started). */
export async function createGateway(opts: GatewayOptions): Promise<Gateway> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger(config.logging.level, undefined, { scrub: config.privacy.scrub_logs });
  const env = opts.env ?? process.env;
  const routing = await RoutingService.create(config, { configDir: opts.configDir, env, log: (level, msg) => logger[level](msg) });
  for (const w of unservableReport(routing.table())) logger.warn(`residency: ${w}`);
  let running = config; // the configuration routing runs on (replaced by reloads)
  let privacy: PrivacyGuard | undefined = config.privacy.enabled ? new PrivacyGuard(config.privacy) : undefined;

  let store: Store | undefined;
  let journal: Journal | undefined;
  let auditLog: RunningAuditLog | undefined;
  let storeWorker: StoreWorker | undefined;
  let metering: Metering | undefined;
  const audited = config.audit.enabled;
  let auth: KeyAuthenticator | undefined;
  let phase: string | null = 'database migrations are running';
  let settled: Promise<void> = Promise.resolve();

  // Content retention: the keys are loaded (or created) now, so that a bad key stops the start.
  const cr = config.audit.content_retention;
  let retention: SinkRetention | undefined;
  if (audited && cr.enabled) {
    const keyring = loadContentKeyring(resolveConfigPath(cr.key_file, opts.configDir), env, { create: true });
    if (keyring!.warning) logger.warn(keyring!.warning);
    if (keyring!.created) logger.warn({ key_file: keyring!.source }, 'created a new audit content key; back it up and keep it secret (without it retained content cannot be opened)');
    retention = { keyring: keyring!, maxBodyBytes: cr.max_body_bytes, tenants: cr.tenants ? new Set(cr.tenants) : null };
    logger.info({ key_id: keyring!.current.id, max_body_bytes: cr.max_body_bytes, max_age_days: cr.max_age_days, tenants: cr.tenants ?? 'all' }, 'audit content retention is on');
  } else if (cr.enabled) {
    logger.warn('audit.content_retention.enabled is ignored: the audit log is off');
  }
  let purgeTimer: NodeJS.Timeout | undefined;

  const pipeline = new Pipeline({
    auth: { authenticate: (k) => auth!.authenticate(k) },
    routes: () => routing.table(),
    privacy: () => privacy,
    sink: createJournalSink(() => journal, audited, logger, retention),
    logger,
    heartbeatMs: config.server.sse_heartbeat_ms,
    maxRequestTimeoutMs: config.server.max_request_timeout_ms,
    notReady: () => phase,
    meter: () => (metering ? { metering, prices: config.metering.prices, defaultMaxTokens: config.metering.default_max_tokens } : undefined),
  });

  const app = buildServer({
    logger,
    bodyLimit: config.server.body_limit_bytes,
    requestTimeoutMs: config.server.request_timeout_ms,
    dataPlane: pipeline,
    admin: { store: () => (phase ? null : (store ?? null)), journal: () => journal ?? null, audited, invalidateKeys: () => (auth?.invalidate(), metering?.invalidate()),
      flushBudgets: async () => metering?.flush(),
      routing: {
        report: () => routing.report(),
        generation: () => routing.table().generation,
        checkNow: () => routing.checkNow(),
        reload: (actor) => reload(undefined, actor),
      },
    },
    ...(audited
      ? {
          audit: {
            latest: () => auditLog?.latest() ?? null,
            vkey: () => auditLog?.vkey ?? null,
            storage: () => auditLog?.storage ?? null,
          },
        }
      : {}),
    readiness: {
      ready() {
        const reasons: string[] = [];
        if (phase) reasons.push(phase);
        for (const p of routing.providers()) {
          const s = p.state();
          if (!s.ready) reasons.push(`backend ${p.id}: ${s.reason}`);
        }
        return { ok: reasons.length === 0, reasons };
      },
    },
  });

  /** Start-up after the server listens: store, migrations, audit log, journal, backends. */
  async function startAfterListen(url: string): Promise<string> {
    store = await openStore(resolveDatabaseUrl(config.database.url, opts.configDir), config.database.schema ? { pgSchema: config.database.schema } : {});
    await store.migrate();
    // SQLite file: commits and integration run on the store worker thread, off the event loop.
    storeWorker = StoreWorker.for(store, logger);
    if (audited) {
      phase = 'the audit log is opening';
      const keyFile = resolveConfigPath(config.audit.key_file, opts.configDir);
      const auditOpts = {
        ...(config.audit.origin ? { origin: config.audit.origin } : {}),
        keyFile,
        intervalMs: config.audit.checkpoint_interval_ms,
        batchMax: config.audit.batch_max,
      };
      const signingKey = env['SOVRA_AUDIT_SIGNING_KEY'];
      auditLog = storeWorker
        ? await storeWorker.openAudit(store, { ...auditOpts, env: signingKey === undefined ? {} : { SOVRA_AUDIT_SIGNING_KEY: signingKey } })
        : await AuditLog.open(store, { ...auditOpts, env, logger });
      logger.info({ origin: auditLog.origin, vkey: auditLog.vkey, size: String(auditLog.latest().size) }, 'audit log open');
      auditLog.start();
    } else {
      // Rows and salts queued with entries while the log was on would wait for an integrator that
      // does not run: move them to their tables now (the entries stay queued for the log).
      const released = await new AuditStorage(store).releaseQueuedRows();
      if (released > 0) logger.info({ rows: released }, 'audit log off: moved the request rows queued with log entries to the usage ledger');
    }
    journal = new Journal(store, storeWorker ? { committer: storeWorker } : {});
    metering = new Metering(store, {
      ...(config.metering.redis_url ? { redisUrl: config.metering.redis_url } : {}),
      prices: config.metering.prices,
      defaultMaxTokens: config.metering.default_max_tokens,
      onError: (err) => logger.error({ err }, 'writing settled budget usage to the database failed; it is kept and retried'),
      // SQLite file: allotments are granted and written back on the store worker (see StoreWorker.ledger).
      ...(storeWorker ? { ledger: storeWorker.ledger(createLedger(store)) } : {}),
    });
    auth = new KeyAuthenticator(store);
    // The purge runs whenever an age is set — also with retention (or the audit log) turned off since,
    // so that content kept earlier does not outlive its retention period.
    if (cr.max_age_days > 0) {
      void purgeContent();
      purgeTimer = setInterval(() => void purgeContent(), CONTENT_PURGE_INTERVAL_MS);
      purgeTimer.unref();
    }
    phase = null;
    settled = routing.startBackends(onBackendSettled);
    // Tenants in the database that the residency configuration can never serve: say so now.
    void reportUnservableTenants();
    return url;
  }

  /** Deletes retained content older than `max_age_days` (salts stay; see AuditStorage.purgeContent). */
  async function purgeContent(): Promise<void> {
    if (!store) return;
    try {
      const { rows } = await new AuditStorage(store).purgeContent(Date.now() - cr.max_age_days * 86_400_000);
      if (rows > 0) logger.info({ rows, max_age_days: cr.max_age_days }, 'audit content retention: deleted content past its retention period');
    } catch (err) {
      logger.error({ err }, 'audit content retention: deleting content past its retention period failed; retried within the hour');
    }
  }

  function onBackendSettled(p: { id: string; kind: string }, err?: Error): void {
    if (err) logger.error({ backend: p.id, kind: p.kind }, `backend ${p.id} failed to start: ${err.message}`);
    else logger.info({ backend: p.id, kind: p.kind }, 'backend ready');
  }

  async function reportUnservableTenants(): Promise<void> {
    try {
      const rows = await store!.db.selectFrom('tenants').select(['name', 'jurisdiction', 'classification']).execute();
      for (const w of unservableReport(routing.table(), rows.map((r) => ({ name: r.name, jurisdiction: r.jurisdiction ?? null, classification: r.classification ?? null })))) logger.warn(`residency: ${w}`);
      // Content retention for named tenants: a name that matches no tenant retains nothing; say so.
      const known = new Set(rows.map((r) => r.name));
      for (const t of retention?.tenants ?? []) if (!known.has(t)) logger.warn({ tenant: t }, 'audit.content_retention.tenants names a tenant that does not exist (yet): none of its requests can be retained until it is created');
    } catch (err) {
      logger.warn({ err }, 'could not check tenants against the residency configuration');
    }
  }

  /** Serialises reloads (a SIGHUP during a file-watch reload waits for it). */
  let reloading: Promise<unknown> = Promise.resolve();

  async function reload(next?: Config, actor = 'server:reload'): Promise<ReloadSummary> {
    const run = async (): Promise<ReloadSummary> => {
      let cfg = next;
      if (!cfg) {
        if (!opts.configPath) throw new ConfigError('<none>', ['this gateway was started without a configuration file to reload']);
        let text: string;
        try {
          text = readFileSync(opts.configPath, 'utf8');
        } catch (err) {
          throw new ConfigError(opts.configPath, [`(file): cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`]);
        }
        cfg = parseConfig(text, opts.configPath, env);
      }
      const ignored = (['server', 'database', 'logging', 'audit', 'metering'] as const).filter((k) => JSON.stringify(cfg![k]) !== JSON.stringify(running[k]));
      const before = { backends: running.backends, models: running.models, residency: running.residency, privacy: running.privacy };
      const after = { backends: cfg.backends, models: cfg.models, residency: cfg.residency, privacy: cfg.privacy };
      const nextPrivacy = cfg.privacy.enabled ? new PrivacyGuard(cfg.privacy) : undefined;
      // Build first (nothing changes yet), then the entry (write-ahead), then the swap.
      const prepared = await routing.prepare({ ...running, backends: cfg.backends, models: cfg.models, residency: cfg.residency });
      if (journal && audited && JSON.stringify(before) !== JSON.stringify(after)) {
        try {
          await recordAdminAction(journal, { actor, action: 'config.reload', target: 'routing', before, after });
        } catch (err) {
          await routing.abort(prepared);
          logger.error({ err }, 'the reload could not be recorded in the audit log; the running configuration is kept');
          throw auditUnavailable();
        }
      }
      const summary = routing.commit(prepared, onBackendSettled);
      if (JSON.stringify(cfg.privacy) !== JSON.stringify(running.privacy)) privacy = nextPrivacy;
      running = { ...running, backends: cfg.backends, models: cfg.models, residency: cfg.residency, privacy: cfg.privacy };
      for (const k of ignored) summary.warnings.push(`the "${k}" section changed; it takes effect at the next restart`);
      logger.info({ generation: summary.generation, added: summary.added, changed: summary.changed, removed: summary.removed }, 'configuration reloaded');
      for (const w of summary.warnings) logger.warn(`reload: ${w}`);
      if (store && !phase) void reportUnservableTenants();
      return summary;
    };
    const p = reloading.then(run, run);
    reloading = p.catch(() => undefined);
    return p;
  }

  return {
    app,
    routing: () => routing,
    reload,
    logger,
    store: () => store!,
    recorder: () => journal!,
    async flush() {
      await journal?.flush();
      await auditLog?.drain().catch(() => undefined);
    },
    metering: () => metering,
    audit: () => auditLog,
    backendsSettled: () => settled,
    async start() {
      const url = await app.listen({ host: config.server.host, port: config.server.port });
      try {
        return await startAfterListen(url);
      } catch (err) {
        // A start that fails (database, audit log integrity…) leaves nothing running behind it.
        await app.close().catch(() => undefined);
        await storeWorker?.close();
        await store?.close().catch(() => undefined);
        throw err;
      }
    },
    async close() {
      clearInterval(purgeTimer);
      await app.close();
      await journal?.close();
      // Metering first: its last write-back of budget usage goes through the store worker.
      await metering?.close();
      await auditLog?.close();
      await storeWorker?.close();
      await routing.close();
      await store?.close();
    },
  };
}
