/**
 * The admin API under `/admin/v1/…`: tenants, API keys, rate limits, budgets, usage, `whoami`, and
 * the OpenAPI document of all of it at `GET /admin/v1/openapi.json` (no key needed: it holds no data).
 *
 * - **Authentication**: `Authorization: Bearer sk-sovra-admin-…` (an admin key, created offline with
 *   `sovra admins create`). Checked in `onRequest`, before any body is read. A data-plane key is
 *   never an admin key: 401 `invalid_admin_key`.
 * - **Authorization** (src/tenancy/roles.ts): `platform-admin` everything; `tenant-admin` its own
 *   tenant's keys, limits, budgets, usage (other tenants' objects answer 404, not 403); `auditor`
 *   read-only (403 `insufficient_role` on every write).
 * - **Secrets**: no response ever contains a stored key digest, an admin key digest or an upstream
 *   credential. Response schemas list every field explicitly and the serializer drops anything
 *   else, as a second line of defence. A created or rotated key is returned exactly once, in the
 *   create / rotate response (`key`).
 * - **Audit**: every change is one `admin` entry (`actor` = `admin:<admin id>`) written before the
 *   change (src/tenancy/audited.ts); if it cannot be written: 503 `audit_unavailable`, nothing changed.
 * - **Errors**: OpenAI's shape `{"error":{"message","type","param","code"}}`; 400 (schema or value,
 *   `param` names the field; unknown fields are rejected with `unknown_parameter`), 401, 403, 404,
 *   409, 413, 415, 503.
 * - **Times** are RFC 3339 / ISO 8601 strings in UTC (`2025-01-31T12:00:00.000Z`); usage `from`/`to`
 *   also accept ms since the epoch.
 *
 * The routes live in one encapsulated plugin with its own JSON body parser, error handler and
 * `@fastify/swagger` instance: the data-plane routes (`/v1/*`, raw bodies, hijacked replies) are
 * untouched.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import type { Journal } from '../../audit/journal.ts';
import type { BackendReport, ReloadSummary } from '../../routing/service.ts';
import { ConfigError } from '../../config/load.ts';
import type { Store } from '../../store/db.ts';
import { GatewayError } from '../errors.ts';
import {
  AdminAuthenticator,
  auditedChange,
  auditedCreate,
  canSeeTenant,
  createApiKey,
  createTenant,
  getApiKey,
  getTenant,
  invalidParam,
  keyState,
  listApiKeys,
  listTenants,
  notFound,
  requirePlatformAdmin,
  requireWriter,
  revokeApiKey,
  rotateApiKey,
  tenantScope,
  unauthorizedAdmin,
  updateApiKey,
  updateTenant,
  type AdminPrincipal,
  type ApiKey,
  type ChangeContext,
  type Tenant,
} from '../../tenancy/index.ts';
import {
  createBudget,
  deleteBudget,
  getLimits,
  listBudgets,
  listLimits,
  parseUsageBound,
  RFC3339,
  queryUsage,
  setLimits,
  usageCsv,
  type Budget,
  type BudgetState,
  type LimitSpec,
  type Scope,
  type UsageRow,
} from '../../metering/index.ts';

/** What the admin API needs from the gateway. */
export interface AdminApiDeps {
  /** The open, migrated store; null while starting (then 503 `not_ready`). */
  store(): Store | null;
  /** The journal; null while starting. */
  journal(): Journal | null;
  /** True when the audit log is on (then every change needs its entry). */
  audited: boolean;
  /** Makes the data-plane caches (keys, limits, budgets) forget everything (called after every change). */
  invalidateKeys(): void;
  /**
   * Writes this process's settled budget usage and gives back its unused allotments, so that the
   * budgets read next show exact `used` / `reserved` for this process (omitted: nothing to flush).
   */
  flushBudgets?(): Promise<void>;
  /** Clock, ms since epoch (tests). Default `Date.now`. */
  now?: () => number;
  /** Routing: backends' state and hot reload (omitted: those routes answer 404). */
  routing?: {
    report(): BackendReport[];
    generation(): number;
    /** Runs one round of active health checks. */
    checkNow(): Promise<void>;
    /** @throws ConfigError when the configuration file is invalid */
    reload(actor: string): Promise<ReloadSummary>;
  };
}

/** Every admin path (OpenAPI style), for tests and documentation. */
export const ADMIN_PATHS = [
  '/admin/v1/whoami',
  '/admin/v1/tenants',
  '/admin/v1/tenants/{tenant_id}',
  '/admin/v1/tenants/{tenant_id}/limits',
  '/admin/v1/keys',
  '/admin/v1/keys/{key_id}',
  '/admin/v1/keys/{key_id}/rotate',
  '/admin/v1/keys/{key_id}/revoke',
  '/admin/v1/keys/{key_id}/limits',
  '/admin/v1/limits',
  '/admin/v1/budgets',
  '/admin/v1/budgets/{budget_id}',
  '/admin/v1/usage',
  '/admin/v1/backends',
  '/admin/v1/backends/check',
  '/admin/v1/config/reload',
] as const;

// ------------------------------------------------------------------------------------------------
// JSON schemas
// ------------------------------------------------------------------------------------------------

const nullable = (t: string, extra: Record<string, unknown> = {}) => ({ type: [t, 'null'], ...extra });
const dateTime = { type: 'string', format: 'date-time' };
const ERROR = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['message', 'type', 'param', 'code'],
      properties: { message: { type: 'string' }, type: { type: 'string' }, param: nullable('string'), code: nullable('string') },
    },
  },
};
const TENANT = {
  type: 'object',
  required: ['object', 'id', 'name', 'display_name', 'jurisdiction', 'classification', 'created_at', 'updated_at'],
  properties: {
    object: { type: 'string', enum: ['tenant'] },
    id: { type: 'string' },
    name: { type: 'string' },
    display_name: nullable('string'),
    jurisdiction: nullable('string', { description: 'ISO 3166-1 alpha-2' }),
    classification: nullable('string', { description: 'data-classification ceiling' }),
    created_at: dateTime,
    updated_at: nullable('string', { format: 'date-time' }),
  },
};
const API_KEY_PROPS = {
  object: { type: 'string', enum: ['api_key'] },
  id: { type: 'string' },
  tenant_id: { type: 'string' },
  label: nullable('string'),
  prefix: { type: 'string', description: 'first 13 characters of the key' },
  model_allowlist: { type: ['array', 'null'], items: { type: 'string' }, description: 'null = every model' },
  expires_at: nullable('string', { format: 'date-time' }),
  created_at: dateTime,
  revoked_at: nullable('string', { format: 'date-time' }),
  rotated_from: nullable('string'),
  state: { type: 'string', enum: ['active', 'expired', 'revoked'] },
};
const API_KEY_REQUIRED = Object.keys(API_KEY_PROPS);
const API_KEY = { type: 'object', required: API_KEY_REQUIRED, properties: API_KEY_PROPS };
const ISSUED_KEY = {
  type: 'object',
  required: [...API_KEY_REQUIRED, 'key'],
  properties: { ...API_KEY_PROPS, key: { type: 'string', description: 'the API key; shown only in this response' } },
};
const SCOPE = {
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'id'],
  properties: { kind: { type: 'string', enum: ['tenant', 'key'] }, id: { type: 'string', minLength: 1, maxLength: 256 } },
};
const LIMITS = {
  type: 'object',
  required: ['object', 'scope', 'rpm', 'tpm'],
  properties: {
    object: { type: 'string', enum: ['limits'] },
    scope: SCOPE,
    rpm: nullable('integer', { description: 'requests per minute; null = unlimited' }),
    tpm: nullable('integer', { description: 'tokens per minute; null = unlimited' }),
  },
};
const BUDGET = {
  type: 'object',
  required: ['object', 'id', 'scope', 'unit', 'amount', 'period', 'created_at', 'period_start', 'used', 'reserved'],
  properties: {
    object: { type: 'string', enum: ['budget'] },
    id: { type: 'string' },
    scope: SCOPE,
    unit: { type: 'string', enum: ['tokens', 'usd_micros'] },
    amount: { type: 'integer', description: 'allowance per period, in unit' },
    period: { type: 'string', enum: ['day', 'month', 'fixed'] },
    created_at: dateTime,
    period_start: nullable('string', { format: 'date-time' }),
    used: { type: 'integer' },
    reserved: { type: 'integer' },
  },
};
const USAGE_ROW = {
  type: 'object',
  required: ['bucket', 'tenant_id', 'key_id', 'model', 'requests', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cost_micros', 'errors'],
  properties: {
    bucket: nullable('string', { format: 'date-time' }),
    tenant_id: nullable('string'),
    key_id: nullable('string'),
    model: nullable('string'),
    requests: { type: 'integer' },
    prompt_tokens: { type: 'integer' },
    completion_tokens: { type: 'integer' },
    total_tokens: { type: 'integer' },
    cost_micros: { type: 'integer', description: 'micro-USD (1 USD = 1,000,000)' },
    errors: { type: 'integer' },
  },
};
const list = (item: object) => ({ type: 'object', required: ['object', 'data'], properties: { object: { type: 'string', enum: ['list'] }, data: { type: 'array', items: item } } });
const WHOAMI = {
  type: 'object',
  required: ['object', 'id', 'name', 'role', 'tenant_id', 'prefix', 'created_at'],
  properties: {
    object: { type: 'string', enum: ['admin'] },
    id: { type: 'string' },
    name: nullable('string'),
    role: { type: 'string', enum: ['platform-admin', 'tenant-admin', 'auditor'] },
    tenant_id: nullable('string'),
    prefix: { type: 'string' },
    created_at: dateTime,
  },
};
const ROTATION = {
  type: 'object',
  required: ['object', 'new_key', 'previous_key'],
  properties: { object: { type: 'string', enum: ['api_key.rotation'] }, new_key: ISSUED_KEY, previous_key: API_KEY },
};
const DELETED = {
  type: 'object',
  required: ['object', 'id', 'deleted'],
  properties: { object: { type: 'string', enum: ['budget'] }, id: { type: 'string' }, deleted: { type: 'boolean' } },
};

const epochOrNull = nullable('number', { description: 'ms since the epoch' });
const BACKEND = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    provider: { type: 'string' },
    jurisdiction: nullable('string'),
    hosting: nullable('string'),
    operator: nullable('string'),
    max_classification: { type: 'string' },
    ready: { type: 'boolean' },
    not_ready_reason: nullable('string'),
    models: { type: 'array', items: { type: 'string' } },
    health: {
      type: 'object',
      properties: {
        id: { type: 'string' },
        state: { type: 'string', enum: ['closed', 'open', 'half_open'] },
        ejected: nullable('string', { description: 'why the backend takes no traffic now (breaker_open, cooling_down, unhealthy, at_capacity, half_open_busy), null when it does' }),
        reason: nullable('string'),
        in_flight: { type: 'integer' },
        max_in_flight: { type: 'integer' },
        ewma_ms: nullable('number'),
        consecutive_failures: { type: 'integer' },
        opened_at: epochOrNull,
        retry_at: epochOrNull,
        last_check: { type: ['object', 'null'], properties: { ok: { type: 'boolean' }, at: { type: 'number' }, reason: nullable('string') } },
        totals: { type: 'object', properties: { successes: { type: 'integer' }, failures: { type: 'integer' } } },
      },
    },
  },
};
const RELOAD = {
  type: 'object',
  properties: {
    object: { type: 'string', enum: ['config.reload'] },
    generation: { type: 'integer' },
    added: { type: 'array', items: { type: 'string' } },
    changed: { type: 'array', items: { type: 'string' } },
    removed: { type: 'array', items: { type: 'string' } },
    warnings: { type: 'array', items: { type: 'string' } },
  },
};
const idParam = (name: string) => ({ type: 'object', additionalProperties: false, required: [name], properties: { [name]: { type: 'string', minLength: 1, maxLength: 256 } } });
const responses = (ok: object, code = 200) => ({ [code]: ok, '4xx': ERROR, '5xx': ERROR });
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', additionalProperties: false, required, properties });
const ALLOWLIST_IN = { type: ['array', 'null'], maxItems: 256, items: { type: 'string', minLength: 1, maxLength: 256 }, description: 'model aliases; null = every model' };
const TENANT_ATTRS_IN = {
  display_name: nullable('string', { maxLength: 200 }),
  jurisdiction: nullable('string', { minLength: 2, maxLength: 2, description: 'ISO 3166-1 alpha-2' }),
  classification: nullable('string', { maxLength: 64 }),
};
const LIMITS_IN = obj({ rpm: nullable('integer', { minimum: 0 }), tpm: nullable('integer', { minimum: 0 }) }, ['rpm', 'tpm']);

// ------------------------------------------------------------------------------------------------
// Representations (snake_case, ISO times; never digests)
// ------------------------------------------------------------------------------------------------

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function tenantOut(t: Tenant) {
  return {
    object: 'tenant',
    id: t.id,
    name: t.name,
    display_name: t.displayName,
    jurisdiction: t.jurisdiction,
    classification: t.classification,
    created_at: iso(t.createdAt),
    updated_at: iso(t.updatedAt),
  };
}

function keyOut(k: ApiKey, now: number) {
  return {
    object: 'api_key',
    id: k.id,
    tenant_id: k.tenantId,
    label: k.label,
    prefix: k.prefix,
    model_allowlist: k.modelAllowlist,
    expires_at: iso(k.expiresAt),
    created_at: iso(k.createdAt),
    revoked_at: iso(k.revokedAt),
    rotated_from: k.rotatedFrom,
    state: keyState(k, now),
  };
}

const limitsOut = (scope: Scope, l: LimitSpec) => ({ object: 'limits', scope: { kind: scope.kind, id: scope.id }, rpm: l.rpm, tpm: l.tpm });

function budgetOut(b: BudgetState | Budget) {
  const s = b as Partial<BudgetState>;
  return {
    object: 'budget',
    id: b.id,
    scope: { kind: b.scope.kind, id: b.scope.id },
    unit: b.unit,
    amount: b.amount,
    period: b.period,
    created_at: iso(b.createdAt),
    period_start: s.periodStart === undefined ? null : iso(s.periodStart),
    used: s.used ?? 0,
    reserved: s.reserved ?? 0,
  };
}

const usageOut = (r: UsageRow) => ({ ...r, bucket: iso(r.bucket) });

// ------------------------------------------------------------------------------------------------
// Input helpers
// ------------------------------------------------------------------------------------------------


/** A date-time string → ms; null stays null. @throws 400 */
function parseTime(v: string | null, param: string): number | null {
  if (v === null) return null;
  const ms = RFC3339.test(v) ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw invalidParam(param, `${param} must be an RFC 3339 date-time, e.g. 2030-01-31T00:00:00Z.`);
  return ms;
}

/** Usage bounds: a date-time or ms since epoch. @throws 400 */
function parseBound(v: string | undefined, param: string): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseUsageBound(v);
  if (!Number.isFinite(ms)) throw invalidParam(param, `${param} must be an RFC 3339 date-time, e.g. 2030-01-31T00:00:00Z.`);
  return ms;
}

/** True when every string (values and member names) in `v` is well-formed UTF-16 (iterative walk). */
function wellFormedStrings(v: unknown): boolean {
  const ok = (s: string) => (s as string & { isWellFormed(): boolean }).isWellFormed();
  const stack: unknown[] = [v];
  while (stack.length > 0) {
    const x = stack.pop();
    if (typeof x === 'string') {
      if (!ok(x)) return false;
    } else if (Array.isArray(x)) for (const y of x) stack.push(y);
    else if (x !== null && typeof x === 'object') {
      for (const [k, y] of Object.entries(x)) {
        if (!ok(k)) return false;
        stack.push(y);
      }
    }
  }
  return true;
}

/** Rejects fields a closed (`additionalProperties: false`) schema does not name, recursively. */
function rejectUnknown(value: unknown, schema: Record<string, any> | undefined, path: string): void {
  if (!schema || typeof value !== 'object' || value === null || Array.isArray(value)) return;
  const props = (schema['properties'] ?? {}) as Record<string, Record<string, any>>;
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const p = path ? `${path}.${k}` : k;
    if (!Object.hasOwn(props, k)) {
      if (schema['additionalProperties'] === false) throw invalidParam(p, `Unknown parameter '${p.slice(0, 100)}'.`, 'unknown_parameter');
      continue;
    }
    rejectUnknown(v, props[k], p);
  }
}

// ------------------------------------------------------------------------------------------------
// The plugin
// ------------------------------------------------------------------------------------------------

const ADMIN = Symbol('sovra.admin');
type AdminRequest = FastifyRequest & { [ADMIN]?: AdminPrincipal };
const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/**
 * Registers the admin API (an encapsulated plugin) on `app`.
 * Resolves nothing; routes are available once the server is ready.
 */
export function registerAdminRoutes(app: FastifyInstance, deps: AdminApiDeps): void {
  void app.register(async (admin) => {
    await admin.register(fastifySwagger, {
      openapi: {
        openapi: '3.0.3',
        info: {
          title: 'Sovra admin API',
          version: '1',
          description:
            'Tenants, API keys, limits, budgets and usage. Authenticate with an admin key (`sovra admins create`). Errors: {"error":{"message","type","param","code"}}.',
        },
        components: { securitySchemes: { adminKey: { type: 'http', scheme: 'bearer', description: 'sk-sovra-admin-…' } } },
        security: [{ adminKey: [] }],
      },
    });

    const now = deps.now ?? Date.now;
    /** A failed flush only makes the figures read next less fresh: never fail the read for it. */
    const flushBudgets = async (): Promise<void> => {
      await deps.flushBudgets?.().catch(() => undefined);
    };
    const ready = (): { store: Store; journal: Journal | null } => {
      const store = deps.store();
      const journal = deps.journal();
      if (!store || (deps.audited && !journal))
        throw new GatewayError(503, 'service_unavailable', 'not_ready', 'Sovra is starting; try again shortly.', null, { 'retry-after': '2' });
      return { store, journal: deps.audited ? journal : null };
    };
    const principal = (req: FastifyRequest): AdminPrincipal => (req as AdminRequest)[ADMIN]!;
    const change = (req: FastifyRequest, _keysChanged = false): ChangeContext => {
      const { store, journal } = ready();
      return {
        store,
        journal,
        actor: `admin:${principal(req).id}`,
        now,
        // Any change may concern keys, limits or budgets: drop the in-process caches at once.
        onChanged: () => deps.invalidateKeys(),
        warn: (msg, err) => req.log.error({ err }, msg),
      };
    };

    // Bodies: JSON only, at most 1 MiB, parsed here (the root context takes raw buffers).
    admin.removeAllContentTypeParsers();
    admin.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 1 << 20 }, (_req, text, done) => {
      const s = String(text);
      if (s.trim() === '') return done(null, undefined);
      let v: unknown;
      try {
        v = JSON.parse(s);
      } catch {
        return done(invalidParam('body', 'The request body is not valid JSON.', 'invalid_json'));
      }
      // Strings must be valid Unicode (no lone surrogates): they end up in audit entries (RFC 8785).
      if (!wellFormedStrings(v)) return done(invalidParam('body', 'The request body contains a string with a lone UTF-16 surrogate.', 'invalid_string'));
      done(null, v);
    });

    admin.setErrorHandler((err: Error & { statusCode?: number; code?: string; validation?: Array<{ instancePath?: string; params?: Record<string, unknown>; message?: string }>; validationContext?: string }, req, reply) => {
      let ge: GatewayError;
      if (err instanceof GatewayError) ge = err;
      else if (err.validation && err.validation.length > 0) {
        const v = err.validation[0]!;
        const missing = v.params?.['missingProperty'];
        const path = [(v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.'), typeof missing === 'string' ? missing : ''].filter(Boolean).join('.');
        const param = path || (err.validationContext ?? 'body');
        ge = invalidParam(param, `Invalid ${err.validationContext ?? 'request'}: '${param}' ${v.message ?? 'is invalid'}.`);
      } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413)
        ge = new GatewayError(413, 'invalid_request_error', 'request_too_large', 'The request body is larger than 1 MiB.');
      else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.statusCode === 415)
        ge = new GatewayError(415, 'invalid_request_error', 'unsupported_media_type', 'Send JSON bodies with content-type: application/json.');
      else if (err instanceof TypeError || err instanceof RangeError) ge = invalidParam('body', err.message);
      else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) ge = new GatewayError(err.statusCode, 'invalid_request_error', err.code ?? null, err.message);
      else {
        req.log.error({ err }, 'admin API error');
        ge = new GatewayError(500, 'api_error', 'internal_error', 'The gateway hit an internal error.');
      }
      return reply
        .code(ge.status)
        .headers({ ...ge.headers, 'content-type': 'application/json', 'cache-control': 'no-store' })
        .send(ge.body());
    });

    // Authentication before the body is read; the OpenAPI document is public.
    admin.addHook('onRequest', async (req, reply) => {
      void reply.header('cache-control', 'no-store');
      if ((req.routeOptions.config as { public?: boolean } | undefined)?.public) return;
      const { store } = ready();
      const h = req.headers.authorization;
      if (!h) throw unauthorizedAdmin('missing_admin_key', "You didn't provide an admin key. Send it as 'Authorization: Bearer sk-sovra-admin-…'.");
      const m = BEARER.exec(h);
      if (!m) throw unauthorizedAdmin('invalid_admin_key', "Malformed Authorization header; expected 'Bearer <admin key>'.");
      const p = await new AdminAuthenticator(store).authenticate(m[1]!);
      if (!p) throw unauthorizedAdmin('invalid_admin_key', 'Incorrect admin key provided. Admin routes need an admin key (sk-sovra-admin-…), not an API key.');
      (req as AdminRequest)[ADMIN] = p;
    });
    admin.addHook('preValidation', async (req) => {
      const s = req.routeOptions.schema as FastifySchema | undefined;
      if (!s) return;
      // An absent body is an empty object where no field is required (rotate, revoke, patch).
      const body = s.body as { required?: string[] } | undefined;
      if (req.body === undefined && body && !(body.required?.length)) req.body = {};
      rejectUnknown(req.body, s.body as Record<string, any> | undefined, '');
      rejectUnknown(req.query, s.querystring as Record<string, any> | undefined, '');
    });

    /** The key `id` if `p` may see it, else 404. */
    const visibleKey = async (store: Store, p: AdminPrincipal, id: string): Promise<ApiKey> => {
      const k = await getApiKey(store, id);
      if (!k || !canSeeTenant(p, k.tenantId)) throw notFound('api_key', id);
      return k;
    };
    /** The tenant `id` if `p` may see it, else 404. */
    const visibleTenant = async (store: Store, p: AdminPrincipal, id: string): Promise<Tenant> => {
      const t = await getTenant(store, id);
      if (!t || !canSeeTenant(p, t.id)) throw notFound('tenant', id);
      return t;
    };
    /** Checks a limit/budget scope exists and `p` may see it. */
    const visibleScope = async (store: Store, p: AdminPrincipal, s: Scope): Promise<void> => {
      if (s.kind === 'tenant') await visibleTenant(store, p, s.id);
      else await visibleKey(store, p, s.id);
    };
    /** Scopes (tenant + its keys) of one tenant. */
    const tenantScopes = async (store: Store, tenantId: string): Promise<Scope[]> => [
      { kind: 'tenant', id: tenantId },
      ...(await listApiKeys(store, { tenantId })).map((k): Scope => ({ kind: 'key', id: k.id })),
    ];

    const tags = (t: string) => ({ tags: [t] });

    admin.get('/admin/v1/openapi.json', { config: { public: true }, schema: { hide: true } }, async (_req, reply) =>
      reply.header('content-type', 'application/json').send(JSON.stringify(admin.swagger())),
    );

    admin.get('/admin/v1/whoami', { schema: { ...tags('admin'), summary: 'The calling admin principal', response: responses(WHOAMI) } }, async (req) => {
      const p = principal(req);
      return { object: 'admin', id: p.id, name: p.name, role: p.role, tenant_id: p.tenantId, prefix: p.prefix, created_at: iso(p.createdAt) };
    });

    // --- tenants -------------------------------------------------------------------------------
    admin.get('/admin/v1/tenants', { schema: { ...tags('tenants'), summary: 'List tenants (a tenant-scoped admin sees its own)', response: responses(list(TENANT)) } }, async (req) => {
      const { store } = ready();
      const scope = tenantScope(principal(req));
      const ts = await listTenants(store, scope === null ? {} : { ids: [scope] });
      return { object: 'list', data: ts.map(tenantOut) };
    });

    admin.post(
      '/admin/v1/tenants',
      { schema: { ...tags('tenants'), summary: 'Create a tenant (platform-admin)', body: obj({ name: { type: 'string', minLength: 1, maxLength: 200 }, ...TENANT_ATTRS_IN }, ['name']), response: responses(TENANT, 201) } },
      async (req, reply) => {
        requirePlatformAdmin(principal(req));
        const b = req.body as { name: string; display_name?: string | null; jurisdiction?: string | null; classification?: string | null };
        const t = await createTenant(change(req), { name: b.name, displayName: b.display_name, jurisdiction: b.jurisdiction, classification: b.classification });
        return reply.code(201).send(tenantOut(t));
      },
    );

    admin.get('/admin/v1/tenants/:tenant_id', { schema: { ...tags('tenants'), summary: 'Get a tenant', params: idParam('tenant_id'), response: responses(TENANT) } }, async (req) => {
      const { store } = ready();
      return tenantOut(await visibleTenant(store, principal(req), (req.params as { tenant_id: string }).tenant_id));
    });

    admin.patch(
      '/admin/v1/tenants/:tenant_id',
      { schema: { ...tags('tenants'), summary: "Change a tenant's attributes (platform-admin); null clears one", params: idParam('tenant_id'), body: obj(TENANT_ATTRS_IN), response: responses(TENANT) } },
      async (req) => {
        requirePlatformAdmin(principal(req));
        const b = (req.body ?? {}) as { display_name?: string | null; jurisdiction?: string | null; classification?: string | null };
        const t = await updateTenant(change(req, true), (req.params as { tenant_id: string }).tenant_id, {
          displayName: b.display_name,
          jurisdiction: b.jurisdiction,
          classification: b.classification,
        });
        return tenantOut(t);
      },
    );

    // --- keys ----------------------------------------------------------------------------------
    admin.get(
      '/admin/v1/keys',
      { schema: { ...tags('keys'), summary: 'List API keys (never the key or its digest)', querystring: obj({ tenant_id: { type: 'string', minLength: 1 } }), response: responses(list(API_KEY)) } },
      async (req) => {
        const { store } = ready();
        const p = principal(req);
        const asked = (req.query as { tenant_id?: string }).tenant_id;
        const scope = tenantScope(p);
        if (asked !== undefined) await visibleTenant(store, p, asked);
        const tenantId = asked ?? scope ?? undefined;
        const ks = await listApiKeys(store, tenantId === undefined ? {} : { tenantId });
        const t = now();
        return { object: 'list', data: ks.map((k) => keyOut(k, t)) };
      },
    );

    admin.post(
      '/admin/v1/keys',
      {
        schema: {
          ...tags('keys'),
          summary: 'Create an API key; the key is in this response only',
          body: obj({ tenant_id: { type: 'string', minLength: 1, description: "default: a tenant-admin's own tenant" }, label: nullable('string', { maxLength: 200 }), model_allowlist: ALLOWLIST_IN, expires_at: nullable('string', { format: 'date-time' }) }),
          response: responses(ISSUED_KEY, 201),
        },
      },
      async (req, reply) => {
        const p = principal(req);
        requireWriter(p);
        const { store } = ready();
        const b = (req.body ?? {}) as { tenant_id?: string; label?: string | null; model_allowlist?: string[] | null; expires_at?: string | null };
        const tenantId = b.tenant_id ?? tenantScope(p);
        if (!tenantId) throw invalidParam('tenant_id', 'tenant_id is required.');
        await visibleTenant(store, p, tenantId);
        const issued = await createApiKey(change(req, true), {
          tenantId,
          label: b.label ?? null,
          modelAllowlist: b.model_allowlist ?? null,
          expiresAt: parseTime(b.expires_at ?? null, 'expires_at'),
        });
        return reply.code(201).send({ ...keyOut(issued.apiKey, now()), key: issued.secret });
      },
    );

    admin.get('/admin/v1/keys/:key_id', { schema: { ...tags('keys'), summary: 'Get an API key (metadata only)', params: idParam('key_id'), response: responses(API_KEY) } }, async (req) => {
      const { store } = ready();
      return keyOut(await visibleKey(store, principal(req), (req.params as { key_id: string }).key_id), now());
    });

    admin.patch(
      '/admin/v1/keys/:key_id',
      {
        schema: {
          ...tags('keys'),
          summary: "Change a key's label, model allowlist or expiry (null clears)",
          params: idParam('key_id'),
          body: obj({ label: nullable('string', { maxLength: 200 }), model_allowlist: ALLOWLIST_IN, expires_at: nullable('string', { format: 'date-time' }) }),
          response: responses(API_KEY),
        },
      },
      async (req) => {
        const p = principal(req);
        requireWriter(p);
        const { store } = ready();
        const id = (req.params as { key_id: string }).key_id;
        await visibleKey(store, p, id);
        const b = (req.body ?? {}) as { label?: string | null; model_allowlist?: string[] | null; expires_at?: string | null };
        const k = await updateApiKey(change(req, true), id, {
          ...(b.label !== undefined ? { label: b.label } : {}),
          ...(b.model_allowlist !== undefined ? { modelAllowlist: b.model_allowlist } : {}),
          ...(b.expires_at !== undefined ? { expiresAt: parseTime(b.expires_at, 'expires_at') } : {}),
        });
        return keyOut(k, now());
      },
    );

    admin.post(
      '/admin/v1/keys/:key_id/rotate',
      {
        schema: {
          ...tags('keys'),
          summary: 'Rotate: a new key with the same settings; the old one works for overlap_seconds more (default 86400)',
          params: idParam('key_id'),
          body: obj({ overlap_seconds: { type: 'integer', minimum: 0, maximum: 30 * 86400 } }),
          response: responses(ROTATION, 201),
        },
      },
      async (req, reply) => {
        const p = principal(req);
        requireWriter(p);
        const { store } = ready();
        const id = (req.params as { key_id: string }).key_id;
        await visibleKey(store, p, id);
        const overlap = (req.body as { overlap_seconds?: number } | undefined)?.overlap_seconds ?? 86_400;
        const r = await rotateApiKey(change(req, true), id, overlap * 1000);
        const t = now();
        return reply.code(201).send({ object: 'api_key.rotation', new_key: { ...keyOut(r.apiKey, t), key: r.secret }, previous_key: keyOut(r.previous, t) });
      },
    );

    admin.post(
      '/admin/v1/keys/:key_id/revoke',
      { schema: { ...tags('keys'), summary: 'Revoke an API key at once', params: idParam('key_id'), body: obj({}), response: responses(API_KEY) } },
      async (req) => {
        const p = principal(req);
        requireWriter(p);
        const { store } = ready();
        const id = (req.params as { key_id: string }).key_id;
        await visibleKey(store, p, id);
        return keyOut(await revokeApiKey(change(req, true), id), now());
      },
    );

    // --- limits --------------------------------------------------------------------------------
    const limitRoutes = (kind: 'tenant' | 'key') => {
      const param = kind === 'tenant' ? 'tenant_id' : 'key_id';
      const url = kind === 'tenant' ? '/admin/v1/tenants/:tenant_id/limits' : '/admin/v1/keys/:key_id/limits';
      const scopeOf = async (req: FastifyRequest): Promise<Scope> => {
        const { store } = ready();
        const scope: Scope = { kind, id: (req.params as Record<string, string>)[param]! };
        await visibleScope(store, principal(req), scope);
        return scope;
      };
      admin.get(url, { schema: { ...tags('limits'), summary: `Rate limits of a ${kind === 'tenant' ? 'tenant' : 'key'} (null = unlimited)`, params: idParam(param), response: responses(LIMITS) } }, async (req) => {
        const scope = await scopeOf(req);
        return limitsOut(scope, await getLimits(ready().store, scope));
      });
      admin.put(url, { schema: { ...tags('limits'), summary: `Set the rate limits of a ${kind === 'tenant' ? 'tenant' : 'key'}`, params: idParam(param), body: LIMITS_IN, response: responses(LIMITS) } }, async (req) => {
        requireWriter(principal(req));
        const scope = await scopeOf(req);
        const b = req.body as LimitSpec;
        const spec: LimitSpec = { rpm: b.rpm, tpm: b.tpm };
        const cc = change(req);
        const after = await auditedChange(cc, async () => {
          const before = await getLimits(cc.store, scope);
          return {
            action: 'limits.set',
            target: scope.id,
            before: { scope, ...before },
            after: { scope, ...spec },
            current: async () => ({ scope, ...(await getLimits(cc.store, scope)) }),
            apply: async () => (await setLimits(cc.store, scope, spec)).after,
          };
        });
        return limitsOut(scope, after);
      });
    };
    limitRoutes('tenant');
    limitRoutes('key');

    admin.get(
      '/admin/v1/limits',
      { schema: { ...tags('limits'), summary: 'List the limits that are set (a tenant-scoped admin: its tenant and keys)', querystring: obj({ tenant_id: { type: 'string', minLength: 1 } }), response: responses(list(LIMITS)) } },
      async (req) => {
        const { store } = ready();
        const p = principal(req);
        const asked = (req.query as { tenant_id?: string }).tenant_id;
        if (asked !== undefined) await visibleTenant(store, p, asked);
        const tenantId = asked ?? tenantScope(p) ?? undefined;
        const rows = await listLimits(store, tenantId === undefined ? {} : { tenantId });
        return { object: 'list', data: rows.map((r) => limitsOut(r.scope, r)) };
      },
    );

    // --- budgets -------------------------------------------------------------------------------
    admin.get(
      '/admin/v1/budgets',
      {
        schema: {
          ...tags('budgets'),
          summary: 'List budgets with their consumption this period',
          querystring: obj({ tenant_id: { type: 'string', minLength: 1 }, key_id: { type: 'string', minLength: 1 } }),
          response: responses(list(BUDGET)),
        },
      },
      async (req) => {
        const { store } = ready();
        const p = principal(req);
        const q = req.query as { tenant_id?: string; key_id?: string };
        let scopes: Scope[] | undefined;
        if (q.key_id !== undefined) {
          const k = await visibleKey(store, p, q.key_id);
          if (q.tenant_id !== undefined && q.tenant_id !== k.tenantId) throw notFound('api_key', q.key_id);
          scopes = [{ kind: 'key', id: k.id }];
        } else {
          if (q.tenant_id !== undefined) await visibleTenant(store, p, q.tenant_id);
          const tenantId = q.tenant_id ?? tenantScope(p);
          if (tenantId !== null) scopes = await tenantScopes(store, tenantId);
        }
        await flushBudgets();
        const bs = await listBudgets(store, scopes ? { scopes } : {}, now());
        return { object: 'list', data: bs.map(budgetOut) };
      },
    );

    admin.post(
      '/admin/v1/budgets',
      {
        schema: {
          ...tags('budgets'),
          summary: 'Create a budget for a tenant or a key',
          body: obj(
            {
              scope: SCOPE,
              unit: { type: 'string', enum: ['tokens', 'usd_micros'] },
              amount: { type: 'integer', minimum: 0, description: 'allowance per period, in unit (micro-USD for usd_micros)' },
              period: { type: 'string', enum: ['day', 'month', 'fixed'] },
            },
            ['scope', 'unit', 'amount', 'period'],
          ),
          response: responses(BUDGET, 201),
        },
      },
      async (req, reply) => {
        const p = principal(req);
        requireWriter(p);
        const { store } = ready();
        const b = req.body as { scope: Scope; unit: Budget['unit']; amount: number; period: Budget['period'] };
        const scope: Scope = { kind: b.scope.kind, id: b.scope.id };
        await visibleScope(store, p, scope);
        const made = await auditedCreate(change(req), {
          action: 'budgets.create',
          create: () => createBudget(store, { scope, unit: b.unit, amount: b.amount, period: b.period }),
          target: (x) => x.id,
          state: (x) => x,
          undo: (x) => deleteBudget(store, x.id),
        });
        await flushBudgets();
        const state = (await listBudgets(store, { scopes: [scope] }, now())).find((x) => x.id === made.id);
        return reply.code(201).send(budgetOut(state ?? made));
      },
    );

    admin.delete('/admin/v1/budgets/:budget_id', { schema: { ...tags('budgets'), summary: 'Delete a budget', params: idParam('budget_id'), response: responses(DELETED) } }, async (req) => {
      const p = principal(req);
      requireWriter(p);
      const { store } = ready();
      const id = (req.params as { budget_id: string }).budget_id;
      const scope = tenantScope(p);
      const candidates = await listBudgets(store, scope === null ? {} : { scopes: await tenantScopes(store, scope) }, now());
      const found = candidates.find((x) => x.id === id);
      if (!found) throw notFound('budget', id);
      const cc = change(req);
      await auditedChange(cc, async () => {
        const { periodStart: _ps, used: _u, reserved: _r, ...budget } = found;
        return {
          action: 'budgets.delete',
          target: id,
          before: budget,
          after: null,
          apply: async () => {
            if (!(await deleteBudget(cc.store, id))) throw notFound('budget', id);
          },
        };
      });
      return { object: 'budget', id, deleted: true };
    });

    // --- routing: backends and reload ----------------------------------------------------------
    const routing = () => {
      if (!deps.routing) throw new GatewayError(404, 'invalid_request_error', 'not_found', 'Routing administration is not available.');
      return deps.routing;
    };
    /** Backends are platform configuration: platform-admins and auditors (read-only) see them. */
    const requireConfigReader = (p: AdminPrincipal) => {
      if (p.role === 'tenant-admin') throw new GatewayError(403, 'permission_error', 'insufficient_role', 'Only a platform-admin or an auditor can read the platform configuration.');
    };
    admin.get(
      '/admin/v1/backends',
      { schema: { ...tags('routing'), summary: 'Backends: residency attributes, readiness, breaker state and its reason', response: responses({ ...list(BACKEND), properties: { ...list(BACKEND).properties, generation: { type: 'integer' } } }) } },
      async (req) => {
        ready();
        requireConfigReader(principal(req));
        const r = routing();
        return { object: 'list', generation: r.generation(), data: r.report() };
      },
    );
    admin.post(
      '/admin/v1/backends/check',
      { schema: { ...tags('routing'), summary: 'Run one round of active health checks now', response: responses({ ...list(BACKEND), properties: { ...list(BACKEND).properties, generation: { type: 'integer' } } }) } },
      async (req) => {
        ready();
        requirePlatformAdmin(principal(req));
        const r = routing();
        await r.checkNow();
        return { object: 'list', generation: r.generation(), data: r.report() };
      },
    );
    admin.post(
      '/admin/v1/config/reload',
      { schema: { ...tags('routing'), summary: 'Re-read the configuration file and swap routing atomically (invalid: 400, nothing changes)', response: responses(RELOAD) } },
      async (req) => {
        ready();
        const p = principal(req);
        requirePlatformAdmin(p);
        try {
          const sum = await routing().reload(`admin:${p.id}`);
          return { object: 'config.reload', ...sum };
        } catch (err) {
          if (err instanceof ConfigError)
            throw new GatewayError(400, 'invalid_request_error', 'invalid_configuration', `The configuration file is invalid; the running configuration is kept: ${err.issues.slice(0, 20).join('; ')}`);
          throw err;
        }
      },
    );

    // --- usage ---------------------------------------------------------------------------------
    admin.get(
      '/admin/v1/usage',
      {
        schema: {
          ...tags('usage'),
          summary: 'Usage rollups (JSON or CSV); times are [from, to)',
          querystring: obj({
            tenant_id: { type: 'string', minLength: 1 },
            key_id: { type: 'string', minLength: 1 },
            model: { type: 'string', minLength: 1 },
            from: { type: 'string', description: 'RFC 3339 date-time or ms since epoch (inclusive)' },
            to: { type: 'string', description: 'RFC 3339 date-time or ms since epoch (exclusive)' },
            group_by: { type: 'string', enum: ['hour', 'day', 'none'], default: 'none' },
            format: { type: 'string', enum: ['json', 'csv'], default: 'json' },
          }),
          response: responses(list(USAGE_ROW)),
        },
      },
      async (req, reply: FastifyReply) => {
        const { store } = ready();
        const p = principal(req);
        const q = req.query as { tenant_id?: string; key_id?: string; model?: string; from?: string; to?: string; group_by?: 'hour' | 'day' | 'none'; format?: 'json' | 'csv' };
        const scope = tenantScope(p);
        if (q.tenant_id !== undefined) await visibleTenant(store, p, q.tenant_id);
        if (q.key_id !== undefined) await visibleKey(store, p, q.key_id);
        const tenantId = q.tenant_id ?? scope ?? undefined;
        const from = parseBound(q.from, 'from');
        const to = parseBound(q.to, 'to');
        const rows = await queryUsage(store, {
          ...(tenantId !== undefined ? { tenantId } : {}),
          ...(q.key_id !== undefined ? { keyId: q.key_id } : {}),
          ...(q.model !== undefined ? { model: q.model } : {}),
          ...(from !== undefined ? { from } : {}),
          ...(to !== undefined ? { to } : {}),
          groupBy: q.group_by ?? 'none',
        });
        if (q.format === 'csv') return reply.header('content-type', 'text/csv; charset=utf-8').send(usageCsv(rows));
        return { object: 'list', data: rows.map(usageOut) };
      },
    );
  });
}
