/**
 * The configuration schema (one YAML file, `SOVRA_CONFIG`, default `./sovra.yaml`).
 *
 * All durations are milliseconds, all sizes bytes. Field names are snake_case as written in YAML.
 * Validation errors name the path (e.g. `backends[0].base_url`) and the problem.
 */
import { z } from 'zod';
import { PII_TYPES as PII_TYPE_NAMES } from '../privacy/types.ts';

/** Headers `forward_headers` may not name: credentials for Sovra itself, cookies, framing and hop-by-hop headers. */
const NEVER_FORWARDED = new Set([
  'authorization', 'cookie', 'set-cookie', 'host', 'content-length', 'content-type', 'content-encoding',
  'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'expect', 'accept',
  'x-request-id',
]);

function isHttpUrl(u: string): boolean {
  try {
    const p = new URL(u).protocol;
    return p === 'http:' || p === 'https:';
  } catch {
    return false;
  }
}

const ms = (def: number) => z.number().int().min(0).default(def);

/** ISO 3166-1 alpha-2 country code, optionally with a region suffix ("MY", "MY-14"). */
const jurisdiction = z
  .string()
  .regex(/^[A-Z]{2}(-[A-Z0-9]{1,3})?$/, 'must be an ISO 3166-1 alpha-2 code such as "MY" (optionally "MY-14")');

/**
 * Per-backend timeouts (ms; 0 disables one). Streams are governed by `idle_ms` (longest gap between
 * upstream bytes; SSE comments count as liveness) and the optional `stream_total_ms`; `total_ms` only
 * applies to non-streaming exchanges.
 */
export const timeoutsSchema = z
  .object({
    connect_ms: ms(5_000),
    first_byte_ms: ms(60_000),
    idle_ms: ms(60_000),
    total_ms: ms(600_000),
    stream_total_ms: ms(0),
  })
  .strict();

/**
 * How the backend understands completion-length fields. The rule, applied to every request:
 * the effective cap is `max_completion_tokens` if present, else `max_tokens` (the newer field wins).
 * - `passthrough` (default): fields are sent as the client sent them, except that when both are
 *   present `max_tokens` is removed (so the backend never sees two different values).
 * - `max_tokens`: the cap is sent as `max_tokens` only (Ollama, older llama.cpp/TGI).
 * - `max_completion_tokens`: the cap is sent as `max_completion_tokens` only (OpenAI reasoning models).
 */
export const tokenFieldSchema = z.enum(['passthrough', 'max_tokens', 'max_completion_tokens']);

/** Data-plane operations a backend may be given (config names). */
export const OPERATIONS = ['chat.completions', 'completions', 'embeddings', 'responses'] as const;

/**
 * What a backend can do. Routing never sends a request to a backend lacking what it needs
 * (exclusion reason `capability_missing:<what>`), so a pool may mix engines of different abilities.
 * - `operations`: the operations it serves (default: all its adapter supports);
 * - `tools`: accepts `tools` / `tool_choice` (default true); `vision`: accepts image content parts
 *   (default true);
 * - `max_context`: context window in tokens; a request whose prompt (estimated at 4 characters per
 *   token) plus its completion cap exceeds it is not sent there (`context_too_long`); default none.
 */
const capabilitiesSchema = z
  .object({
    token_field: tokenFieldSchema.default('passthrough'),
    /** Whether the backend accepts `stream_options.include_usage` (true for vLLM, SGLang, llama.cpp, OpenAI). */
    stream_usage: z.boolean().default(true),
    operations: z.array(z.enum(OPERATIONS)).min(1).optional(),
    tools: z.boolean().default(true),
    vision: z.boolean().default(true),
    max_context: z.number().int().min(1).optional(),
  })
  .strict();

/** Where and how a backend is hosted (residency routing, docs/routing.md). */
export const HOSTING_KINDS = ['on_premises', 'national_cloud', 'foreign_hosted'] as const;

/**
 * Active health checks of a backend (off unless `enabled`, as in Envoy: passive outlier detection
 * from real traffic is always on): a cheap request (`GET <base_url>/models` by default, never a paid
 * completion) every `interval_ms`; a check that fails or takes longer than `timeout_ms` counts
 * against the backend (ejected while failing, readmitted after a success).
 */
const healthCheckSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** Path relative to `base_url` (e.g. `models`, `/health`); absolute paths start at the host. */
    path: z.string().min(1).optional(),
    interval_ms: z.number().int().min(100).max(3_600_000).default(10_000),
    timeout_ms: z.number().int().min(10).max(60_000).default(2_000),
  })
  .strict();

/**
 * Circuit breaker of a backend (passive outlier detection from real traffic): `failures` counted
 * failures in a row (connect errors, timeouts, 5xx, broken streams) open it for `open_ms`, doubling
 * on each reopening up to `max_open_ms`; then `half_open_probes` trial requests decide.
 */
const breakerSchema = z
  .object({
    failures: z.number().int().min(1).max(1000).default(5),
    open_ms: z.number().int().min(10).max(3_600_000).default(10_000),
    max_open_ms: z.number().int().min(10).max(86_400_000).default(300_000),
    half_open_probes: z.number().int().min(1).max(100).default(1),
  })
  .strict()
  .refine((b) => b.open_ms <= b.max_open_ms, { message: 'open_ms must not exceed max_open_ms (default 300000)', path: ['open_ms'] });

const baseBackend = {
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 characters of letters, digits, ".", "_" or "-"'),
  /** Where the backend runs: ISO 3166-1 alpha-2, optionally a region ("MY", "MY-14"). Embedded backends default to `residency.home_jurisdiction`. */
  jurisdiction: jurisdiction.optional(),
  /** Who runs it (free text, shown to operators and in `/admin/v1/backends`). */
  operator: z.string().min(1).max(200).optional(),
  /** `on_premises`, `national_cloud` or `foreign_hosted` (default: `on_premises` for embedded, else unset). */
  hosting: z.enum(HOSTING_KINDS).optional(),
  /** Highest data classification (a name from `residency.classifications`) this backend may receive. Default: the lowest; embedded: the highest. */
  max_classification: z.string().min(1).max(64).optional(),
  /** Most concurrent requests sent to this backend (0 = no limit); beyond it the balancer picks another. */
  max_in_flight: z.number().int().min(0).max(1_000_000).default(0),
  timeouts: timeoutsSchema.default({}),
  capabilities: capabilitiesSchema.default({}),
  health_check: healthCheckSchema.default({}),
  breaker: breakerSchema.default({}),
};

const openAiCompatibleBackend = z
  .object({
    ...baseBackend,
    provider: z.literal('openai-compatible'),
    base_url: z.string().refine(isHttpUrl, 'must be an http:// or https:// URL'),
    /** Name of the environment variable that holds the backend's API key (never the key itself). */
    api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
    /** Static extra headers sent to this backend (not secrets: use api_key_env for those). */
    headers: z.record(z.string()).default({}),
    /** Client request headers passed through to this backend by name (bring-your-own-key). Default none. */
    forward_headers: z
      .array(
        z
          .string()
          .toLowerCase()
          .refine((h) => /^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(h), 'must be an HTTP header name')
          .refine((h) => !NEVER_FORWARDED.has(h) && !h.startsWith('proxy-'), (h) => ({
            message: `"${h}" can never be forwarded (it carries the client's Sovra key, cookies, framing or hop-by-hop data)`,
          })),
      )
      .default([]),
    /** Keep-alive connections in the undici pool for this backend. */
    max_connections: z.number().int().min(1).max(4096).default(128),
  })
  .strict();

const embeddedBackend = z
  .object({
    ...baseBackend,
    provider: z.literal('embedded'),
    /** Path to a GGUF model file (relative paths resolve against the config file's folder). */
    model_path: z.string().min(1),
    /** CPU threads for generation. 1 is fastest for tiny models on small machines. */
    threads: z.number().int().min(1).max(256).default(1),
    /** Context size in tokens (clamped to the model's training context). */
    context_size: z.number().int().min(64).max(1_048_576).default(2048),
    /** Concurrent generations; further requests queue FIFO. */
    contexts: z.number().int().min(1).max(64).default(1),
    /** Most requests waiting for a free context; beyond it, 503 `engine_overloaded` with retry-after. */
    max_queue: z.number().int().min(0).max(100_000).default(256),
  })
  .strict();

/**
 * The Anthropic Messages API upstream (src/providers/anthropic/): chat completions translated to
 * `/v1/messages` and back, streaming and tool use included.
 */
const anthropicBackend = z
  .object({
    ...baseBackend,
    provider: z.literal('anthropic'),
    base_url: z.string().refine(isHttpUrl, 'must be an http:// or https:// URL').default('https://api.anthropic.com'),
    /** Name of the environment variable that holds the Anthropic API key (never the key itself). */
    api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
    /** `anthropic-version` header (https://docs.anthropic.com/en/api/versioning). */
    anthropic_version: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date such as "2023-06-01"').default('2023-06-01'),
    /** Static extra headers (e.g. anthropic-beta); not secrets. */
    headers: z.record(z.string()).default({}),
    max_connections: z.number().int().min(1).max(4096).default(128),
  })
  .strict();

/** A backend: one engine endpoint or in-process model. */
export const backendSchema = z.discriminatedUnion('provider', [openAiCompatibleBackend, embeddedBackend, anthropicBackend]);

/** One backend of a model alias's pool. */
export const poolMemberSchema = z
  .object({
    backend: z.string(),
    /** Relative share for the `weighted` strategy. */
    weight: z.number().int().min(1).max(1000).default(1),
    /** The model name sent to this backend; defaults to the alias's `upstream_model`, then its `name`. */
    upstream_model: z.string().min(1).optional(),
  })
  .strict();

/**
 * Retries of one request (only before any byte went to the client; on connection errors and connect
 * timeouts, and on HTTP 5xx and 429 answers — never on a timeout after the request was sent, which
 * the engine may be processing): at most `attempts` attempts in all (1 = no retry), waiting
 * `base_ms × 2^(n-1)` (capped at `max_ms`, with full jitter) between them. Each attempt goes to a
 * backend not tried yet for this request.
 */
export const retrySchema = z
  .object({
    attempts: z.number().int().min(1).max(10).default(3),
    base_ms: z.number().int().min(0).max(60_000).default(100),
    max_ms: z.number().int().min(0).max(60_000).default(2_000),
  })
  .strict();

/**
 * A model alias clients ask for, routed to one backend (`backend`) or a pool (`pool`) with a
 * balancing `strategy`; `fallbacks` are other aliases tried, in order, when the pool cannot serve.
 */
export const modelSchema = z
  .object({
    name: z.string().min(1).max(256),
    backend: z.string().optional(),
    pool: z.array(poolMemberSchema).min(1).max(64).optional(),
    /** `weighted` (smooth weighted round-robin), `least_in_flight`, or `p2c_ewma` (power of two choices on latency EWMA × load). */
    strategy: z.enum(['weighted', 'least_in_flight', 'p2c_ewma']).default('p2c_ewma'),
    fallbacks: z.array(z.string().min(1)).max(8).default([]),
    retry: retrySchema.default({}),
    /** The model name sent to the backend; defaults to `name`. */
    upstream_model: z.string().min(1).optional(),
    /** Request fields this route refuses with a 400 naming the field (never stripped silently). */
    forbid_params: z.array(z.string()).default([]),
  })
  .strict()
  .refine((m) => (m.backend === undefined) !== (m.pool === undefined), { message: 'give exactly one of "backend" or "pool"' });

/** A recorded legal basis for sending a tenant's data to a jurisdiction outside its allowed list. */
export const transferBasisSchema = z
  .object({
    destination: jurisdiction,
    /** The legal basis, as text (recorded in the audit entry of each request that uses it). */
    basis: z.string().min(1).max(400),
    /** Last day (or instant) the basis is valid: an ISO 8601 date or date-time. Past it, the transfer is refused. */
    expires: z.union([z.string(), z.date()]).transform((v, c) => {
      const t = v instanceof Date ? v.getTime() : Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(v) ? `${v}T23:59:59.999Z` : v);
      if (!Number.isFinite(t)) {
        c.addIssue({ code: z.ZodIssueCode.custom, message: 'must be an ISO 8601 date such as "2027-06-30"' });
        return z.NEVER;
      }
      return t;
    }).optional(),
    /** Highest classification this basis covers (default: the tenant's default classification). */
    max_classification: z.string().min(1).max(64).optional(),
  })
  .strict();

/**
 * A tenant's residency policy (docs/routing.md).
 * - `allowed_jurisdictions`: where its data may be processed: country codes ("MY" also allows
 *   "MY-14"), or `"*"` for anywhere. Unset: the tenant's own jurisdiction (its attribute) if it has
 *   one, else `residency.default.allowed_jurisdictions`.
 * - `default_classification`: the classification of its requests unless a request raises it with
 *   `x-sovra-data-class` (never lower). Unset: the tenant's classification attribute, else the default policy's, else the lowest.
 * - `transfer_bases`: exceptions to the allowed list, each for one destination with its legal basis.
 */
export const residencyPolicySchema = z
  .object({
    allowed_jurisdictions: z.array(z.union([z.literal('*'), jurisdiction])).optional(),
    default_classification: z.string().min(1).max(64).optional(),
    transfer_bases: z.array(transferBasisSchema).max(64).default([]),
  })
  .strict();

/**
 * Residency: classification names, where the gateway itself runs, and per-tenant policies.
 * - `classifications`: ordered from lowest to highest.
 * - `home_jurisdiction`: where this gateway (and so every embedded engine) runs.
 * - `default`: the policy of tenants not listed in `tenants`.
 * - `tenants`: policies by tenant name.
 */
export const residencySchema = z
  .object({
    classifications: z.array(z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1-64 letters, digits or _ . : -')).min(1).max(32).default(['public', 'internal', 'confidential', 'secret']),
    home_jurisdiction: jurisdiction.optional(),
    default: residencyPolicySchema.default({}),
    tenants: z.record(z.string().min(1), residencyPolicySchema).default({}),
  })
  .strict()
  .default({});

/** Origin / key-name rule of the transparency log (spec §7): non-empty, no white space, no `+`, no control character. */
const ORIGIN_RE = /^[^\s+\x00-\x1f\x7f]{1,200}$/u;

/**
 * `audit.content_retention` (docs/audit.md, "Content retention"; `src/audit/content.ts`):
 * - `enabled`: keep each audited request's exact request and response bytes (default false);
 * - `key_file`: the AES-256 content keys, base64, one per line, the first sealing new records; created
 *   with mode 0600 if missing; relative to the config file's folder. `SOVRA_AUDIT_CONTENT_KEY` may hold
 *   the keys instead (comma- or space-separated);
 * - `max_body_bytes`: most bytes kept per body (default 1 MiB); a larger body is not kept at all;
 * - `max_age_days`: delete content older than this (checked at start and hourly); 0 = keep until
 *   erased (`sovra audit erase`);
 * - `tenants`: tenant names whose requests are retained; null (default) = every request.
 */
export const contentRetentionSchema = z
  .object({
    enabled: z.boolean().default(false),
    key_file: z.string().min(1).default('./data/audit-content.key'),
    max_body_bytes: z.number().int().min(1).max(64 * 1024 * 1024).default(1024 * 1024),
    max_age_days: z.number().min(0).max(36_500).default(0),
    tenants: z.array(z.string().min(1)).nullable().default(null),
  })
  .strict()
  .default({});

/**
 * The transparency log (docs/audit.md, spec `shared/spec/transparency-log.md`).
 * - `enabled`: write one log entry per data-plane request and admin action (default true). When
 *   false only the request row is written (after the response, as a best-effort batch).
 * - `origin`: the log's name (spec §7), e.g. `gw.example.com/audit`. Default: generated once as
 *   `sovra-<8 hex>.invalid/audit` and kept in the database; it can never change afterwards.
 * - `key_file`: the Ed25519 signing key (`PRIVATE+KEY+<origin>+…`), created with mode 0600 if
 *   missing; relative to the config file's folder. `SOVRA_AUDIT_SIGNING_KEY` may hold the key instead.
 * - `checkpoint_interval_ms`: how often queued entries are integrated and a checkpoint signed.
 * - `batch_max`: most entries integrated per round.
 * - `content_retention`: keep the exact request and response bytes that each entry commits to,
 *   sealed (AES-256-GCM), in the erasable store beside the salts (default off; see
 *   {@link contentRetentionSchema}).
 */
export const auditSchema = z
  .object({
    enabled: z.boolean().default(true),
    origin: z.string().regex(ORIGIN_RE, 'must be 1-200 characters with no white space, "+" or control characters').optional(),
    key_file: z.string().min(1).default('./data/audit-signing.key'),
    checkpoint_interval_ms: z.number().int().min(10).max(60_000).default(1000),
    batch_max: z.number().int().min(1).max(1_048_576).default(65_536),
    content_retention: contentRetentionSchema,
  })
  .strict()
  .default({});

/**
 * The price of one model alias, used for request costs (`requests.cost_micros`) and micro-USD budgets.
 * Either per token, as hosted APIs bill:
 * - `input_per_1m_usd`: USD per 1,000,000 prompt tokens;
 * - `output_per_1m_usd`: USD per 1,000,000 completion tokens;
 * or from the hardware it runs on (self-hosted engines):
 * - `gpu_hour_usd`: what one GPU hour costs, in USD;
 * - `tokens_per_gpu_hour`: tokens (prompt + completion) the deployment serves per GPU hour.
 */
export const modelPriceSchema = z.union([
  z
    .object({
      input_per_1m_usd: z.number().finite().min(0),
      output_per_1m_usd: z.number().finite().min(0),
    })
    .strict(),
  z
    .object({
      gpu_hour_usd: z.number().finite().min(0),
      tokens_per_gpu_hour: z.number().int().min(1),
    })
    .strict(),
]);

/**
 * Metering: rate limits, budgets and prices (src/metering/). Limits and budgets themselves are set
 * per tenant / key through the admin API and stored in the database; this section holds what is
 * per deployment.
 * - `redis_url`: `redis://…` or `rediss://…`. When set, rate-limit counters live in Redis, so the
 *   limits hold across every gateway process sharing it; otherwise they are per process (memory).
 * - `default_max_tokens`: completion tokens reserved against budgets and TPM limits for a request
 *   that sets no `max_tokens` / `max_completion_tokens` (the real usage is settled afterwards).
 * - `prices`: by model alias (as in `models[].name`); models without a price cost 0.
 */
export const meteringSchema = z
  .object({
    redis_url: z
      .string()
      .refine((u) => /^rediss?:\/\//i.test(u), 'must be a redis:// or rediss:// URL')
      .optional(),
    default_max_tokens: z.number().int().min(1).default(4096),
    prices: z.record(z.string().min(1), modelPriceSchema).default({}),
  })
  .strict()
  .default({});

/** What the privacy guard does with an identifier of one type (docs/privacy.md). */
export const PII_ACTIONS = ['block', 'redact', 'mask', 'tokenize', 'allow'] as const;

/**
 * One privacy policy (the default, a tenant's, or a key's).
 * - `action`: for every enabled type without an override: `block` (400 naming the types, never the
 *   values), `redact` (typed placeholders `[MY_NRIC_1]`), `mask` (keep the last 4 characters),
 *   `tokenize` (placeholders to the model, originals restored in the answer for the caller only) or
 *   `allow` (sent as is; see `allow_classification`).
 * - `types`: per identifier type (spec names, e.g. `MY_NRIC`, `PAYMENT_CARD`): an action, or `off`
 *   to not look for it.
 * - `strict`: also act on low-confidence findings that have a context word (spec §4.5).
 * - `allow_classification`: a request whose identifiers go to the model as is (`allow`) is raised
 *   to at least this classification, so routing only picks backends cleared for it.
 * A tenant's or key's policy replaces the default's fields it sets (a key's, the tenant's).
 */
export const privacyPolicySchema = z
  .object({
    action: z.enum(PII_ACTIONS).optional(),
    types: z.record(z.string().regex(/^[A-Z][A-Z_]{1,40}$/, 'must be an identifier type such as MY_NRIC'), z.enum([...PII_ACTIONS, 'off'])).optional(),
    strict: z.boolean().optional(),
    allow_classification: z.string().min(1).max(64).optional(),
  })
  .strict();

/**
 * The privacy guard (src/privacy/, docs/privacy.md): local-format personal identifiers found and
 * handled before routing, so no model and no log sees them.
 * - `enabled` (default true); `time_budget_ms`: most time one request's scan may take, else the
 *   request is refused (fail closed, 503 `privacy_guard_unavailable`); `max_chars`: largest text
 *   scanned per request (UTF-16 code units), larger requests are refused (413 `privacy_scan_too_large`).
 * - `default`, `tenants.<name>`, `keys.<key id>`: policies (see {@link privacyPolicySchema}).
 * - `extra_keywords`: more context words per type (local languages, jargon).
 * - `scrub_logs` (default true): every log line passes the detector; identifiers become `[TYPE]`.
 */
export const privacySchema = z
  .object({
    enabled: z.boolean().default(true),
    time_budget_ms: z.number().int().min(1).max(60_000).default(250),
    max_chars: z.number().int().min(1000).max(20_000_000).default(2_000_000),
    default: privacyPolicySchema.default({}),
    tenants: z.record(z.string().min(1), privacyPolicySchema).default({}),
    keys: z.record(z.string().min(1), privacyPolicySchema).default({}),
    extra_keywords: z.record(z.string(), z.array(z.string().min(2).max(64)).max(200)).default({}),
    scrub_logs: z.boolean().default(true),
  })
  .strict()
  .default({});

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
        /** Largest accepted request body in bytes (default 20 MiB, so base64 images pass). */
        body_limit_bytes: z.number().int().min(1024).default(20 * 1024 * 1024),
        /** Send an SSE `: keep-alive` comment when nothing was sent to a streaming client for this long; 0 = off. */
        sse_heartbeat_ms: ms(15_000),
        /** Upper bound for the per-request `x-sovra-timeout-ms` override header. */
        max_request_timeout_ms: ms(600_000),
        /** Longest time a client may take to send a whole request (headers and body); 0 = none. */
        request_timeout_ms: ms(120_000),
      })
      .strict()
      .default({}),
    database: z
      .object({
        /** `sqlite:./data/sovra.db` (default) or `postgres://user@host:5432/db`. */
        url: z.string().default('sqlite:./data/sovra.db'),
        /** PostgreSQL only: the schema Sovra's tables live in (created if missing); default: the server's search_path. */
        schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier').optional(),
      })
      .strict()
      .default({}),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .default({}),
    audit: auditSchema,
    metering: meteringSchema,
    residency: residencySchema,
    privacy: privacySchema,
    backends: z.array(backendSchema).default([]),
    models: z.array(modelSchema).default([]),
  })
  .strict();

/**
 * Cross-reference checks (duplicate ids and names, models naming unknown backends). They run on the
 * raw document so that they are reported together with schema errors.
 * @returns issues as `{ path, message }`
 */
export function crossCheck(raw: Record<string, unknown>): Array<{ path: Array<string | number>; message: string }> {
  const out: Array<{ path: Array<string | number>; message: string }> = [];
  const backends = Array.isArray(raw['backends']) ? (raw['backends'] as unknown[]) : [];
  const models = Array.isArray(raw['models']) ? (raw['models'] as unknown[]) : [];
  const ids = new Set<string>();
  backends.forEach((b, i) => {
    const id = (b as Record<string, unknown> | null)?.['id'];
    if (typeof id !== 'string') return;
    if (ids.has(id)) out.push({ path: ['backends', i, 'id'], message: `duplicate backend id "${id}"` });
    ids.add(id);
  });
  const names = new Set<string>();
  models.forEach((m, i) => {
    const rec = m as Record<string, unknown> | null;
    const name = rec?.['name'];
    if (typeof name === 'string') {
      if (names.has(name)) out.push({ path: ['models', i, 'name'], message: `duplicate model name "${name}"` });
      names.add(name);
    }
    const backend = rec?.['backend'];
    if (typeof backend === 'string' && !ids.has(backend))
      out.push({ path: ['models', i, 'backend'], message: `unknown backend "${backend}" (known: ${[...ids].join(', ') || 'none'})` });
    const pool = rec?.['pool'];
    if (Array.isArray(pool)) {
      const seen = new Set<string>();
      pool.forEach((p, j) => {
        const b = (p as Record<string, unknown> | null)?.['backend'];
        if (typeof b !== 'string') return;
        if (!ids.has(b)) out.push({ path: ['models', i, 'pool', j, 'backend'], message: `unknown backend "${b}" (known: ${[...ids].join(', ') || 'none'})` });
        if (seen.has(b)) out.push({ path: ['models', i, 'pool', j, 'backend'], message: `backend "${b}" is already in this pool` });
        seen.add(b);
      });
    }
  });
  models.forEach((m, i) => {
    const rec = m as Record<string, unknown> | null;
    const fb = rec?.['fallbacks'];
    if (!Array.isArray(fb)) return;
    fb.forEach((f, j) => {
      if (typeof f !== 'string') return;
      if (!names.has(f)) out.push({ path: ['models', i, 'fallbacks', j], message: `unknown model "${f}"` });
      else if (f === rec?.['name']) out.push({ path: ['models', i, 'fallbacks', j], message: 'a model cannot fall back to itself' });
    });
  });
  return out;
}

/**
 * Checks that need the parsed configuration: every classification named (backends' ceilings,
 * policies, transfer bases) is one of `residency.classifications`, names are unique.
 * @returns issues as `{ path, message }`
 */
export function semanticCheck(c: Config): Array<{ path: Array<string | number>; message: string }> {
  const out: Array<{ path: Array<string | number>; message: string }> = [];
  const levels = c.residency.classifications;
  if (new Set(levels).size !== levels.length) out.push({ path: ['residency', 'classifications'], message: 'names must be unique' });
  const known = (v: string | undefined, path: Array<string | number>) => {
    if (v !== undefined && !levels.includes(v)) out.push({ path, message: `unknown classification "${v}" (known, lowest first: ${levels.join(', ')})` });
  };
  c.backends.forEach((b, i) => known(b.max_classification, ['backends', i, 'max_classification']));
  const policy = (p: ResidencyPolicyConfig, path: Array<string | number>) => {
    known(p.default_classification, [...path, 'default_classification']);
    p.transfer_bases.forEach((t, j) => known(t.max_classification, [...path, 'transfer_bases', j, 'max_classification']));
  };
  policy(c.residency.default, ['residency', 'default']);
  for (const [name, p] of Object.entries(c.residency.tenants)) policy(p, ['residency', 'tenants', name]);
  const types = new Set<string>([...PII_TYPE_NAMES, 'NATIONAL_ID']);
  const privacy = (p: PrivacyPolicyConfig, path: Array<string | number>) => {
    known(p.allow_classification, [...path, 'allow_classification']);
    for (const t of Object.keys(p.types ?? {}))
      if (!types.has(t)) out.push({ path: [...path, 'types', t], message: `unknown identifier type "${t}" (known: ${PII_TYPE_NAMES.join(', ')})` });
  };
  privacy(c.privacy.default, ['privacy', 'default']);
  for (const [name, p] of Object.entries(c.privacy.tenants)) privacy(p, ['privacy', 'tenants', name]);
  for (const [name, p] of Object.entries(c.privacy.keys)) privacy(p, ['privacy', 'keys', name]);
  for (const t of Object.keys(c.privacy.extra_keywords))
    if (!types.has(t)) out.push({ path: ['privacy', 'extra_keywords', t], message: `unknown identifier type "${t}"` });
  return out;
}

/** The validated configuration, with defaults filled in. */
export type Config = z.infer<typeof configSchema>;
export type BackendConfig = z.infer<typeof backendSchema>;
export type ModelConfig = z.infer<typeof modelSchema>;
export type TokenField = z.infer<typeof tokenFieldSchema>;
export type AuditConfig = z.infer<typeof auditSchema>;
export type MeteringConfig = z.infer<typeof meteringSchema>;
export type ModelPriceConfig = z.infer<typeof modelPriceSchema>;
export type ResidencyConfig = z.infer<typeof residencySchema>;
export type ResidencyPolicyConfig = z.infer<typeof residencyPolicySchema>;
export type PoolMemberConfig = z.infer<typeof poolMemberSchema>;
export type RetryConfig = z.infer<typeof retrySchema>;
export type PrivacyConfig = z.infer<typeof privacySchema>;
export type PrivacyPolicyConfig = z.infer<typeof privacyPolicySchema>;
export type PiiAction = (typeof PII_ACTIONS)[number];
