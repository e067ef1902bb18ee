/**
 * Database schema shared by SQLite and PostgreSQL (Kysely table types).
 *
 * Conventions: ids are text (random, URL-safe); times are integer milliseconds since the Unix epoch
 * (BIGINT on PostgreSQL, parsed back to number); booleans are 0/1 integers.
 */
import type { Generated } from 'kysely';

/**
 * An agency (tenant). Created by `sovra tenants create`, the admin API, or implicitly by
 * `sovra keys create --tenant NAME`. Attribute columns come from migration `0003_tenancy`.
 */
export interface TenantsTable {
  id: string;
  /** Unique short name (the `--tenant NAME` of the CLI). */
  name: string;
  created_at: number;
  /** Human display name; null = use `name`. */
  display_name?: string | null;
  /** ISO 3166-1 alpha-2 code (upper case) of the agency's jurisdiction; null = unspecified. */
  jurisdiction?: string | null;
  /** Data-classification ceiling (a label such as `OFFICIAL`); null = unspecified. */
  classification?: string | null;
  /** Last attribute change, ms since epoch; null = never changed. */
  updated_at?: number | null;
}

/** A data-plane API key. Only the SHA-256 digest (hex) of the key is stored, never the key. */
export interface ApiKeysTable {
  id: string;
  tenant_id: string;
  /** Optional human label. */
  name: string | null;
  /** Lower-case hex SHA-256 of the full key string. Unique. */
  digest: string;
  /** First characters of the key (e.g. "sk-sovra-AbC1"), safe to display. */
  prefix: string;
  created_at: number;
  revoked_at: number | null;
  /** JSON array of allowed model aliases (text); null = every model (migration `0003_tenancy`). */
  model_allowlist?: string | null;
  /** The key stops working at this time (ms since epoch); null = never. */
  expires_at?: number | null;
  /** Id of the key this one replaced by rotation; null otherwise. */
  rotated_from?: string | null;
}

/**
 * An admin principal with its admin key (migration `0003_tenancy`). Only the key's SHA-256 digest is
 * stored. `role` is `platform-admin` | `tenant-admin` | `auditor`; `tenant_id` binds a tenant-admin
 * (required) or an auditor (optional) to one tenant.
 */
export interface AdminsTable {
  /** `adp_` + 16 base62 characters. */
  id: string;
  /** Optional human name. */
  name: string | null;
  role: string;
  tenant_id: string | null;
  /** Lower-case hex SHA-256 of the full admin key. Unique. */
  digest: string;
  /** First characters of the admin key, safe to display. */
  prefix: string;
  created_at: number;
  revoked_at: number | null;
}

/**
 * One row per data-plane request: the request record. Its transparency-log entry (src/audit/record.ts)
 * is written in the same transaction: it holds who/what/when/outcome, never content or keys.
 */
export interface RequestsTable {
  /** Gateway request id (also sent to the client and upstream as x-request-id). */
  id: string;
  /** Start time, ms since epoch. */
  ts: number;
  key_id: string | null;
  tenant_id: string | null;
  /** Operation, e.g. "chat.completions". */
  operation: string;
  /** Model alias the client asked for. */
  model: string | null;
  backend_id: string | null;
  upstream_model: string | null;
  stream: number;
  /** HTTP status sent to the client (499 when the client disconnected). */
  status: number;
  /** ok | upstream_error | gateway_error | client_disconnected | upstream_idle_timeout | upstream_timeout | ... */
  outcome: string;
  /** Machine-readable error code, if any (e.g. "insufficient_quota"). */
  error_code: string | null;
  /** Total latency in ms (request received → last byte sent or abandon). */
  latency_ms: number;
  /** Time to first byte sent to the client, ms; null when none. */
  ttfb_ms: number | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  total_tokens: number | null;
  /** upstream | estimate | none */
  usage_source: string;
  /**
   * The request's cost in micro-USD (integer; 1 USD = 1,000,000), from the metering price table
   * (migration `0004_metering`); null when unknown. Optional in this type so that rows built before
   * metering existed still type-check; {@link normalise} (store/requests.ts) always writes it (null
   * when absent).
   */
  cost_micros?: number | null;
}

/**
 * Transparency-log journal (migration `0002_audit`): entries durably queued but not yet integrated
 * into the tree. `seq` orders integration; rows are deleted by `seq` once integrated.
 */
export interface AuditQueueTable {
  seq: Generated<number>;
  /** Entry id (request id, or `adm_…` / `era_…`). */
  entry_id: string;
  /** The exact entry bytes (UTF-8 canonical JSON, ≤ 65 535 bytes). */
  entry: Uint8Array;
  /** ms since epoch. */
  created_at: number;
  /**
   * `LH(entry)` (spec §3, 32 bytes) as computed by the journal at commit time (migration
   * `0005_audit_leaf_hash`); null for rows queued without it (older versions, the CLI), which the
   * integrator hashes itself.
   */
  leaf_hash: Uint8Array | null;
  /** The entry's commitment salt (32 bytes) until the integrator moves it to `audit_secrets`, or null (none, or erased). */
  salt: Uint8Array | null;
  /*
   * The entry's `requests` row until the integrator moves it (migration `0007_audit_queue_rows`,
   * `src/audit/queued-rows.ts`): every column but `id` (= `entry_id`), null when the row carries none.
   */
  req_ts: number | null;
  req_key_id: string | null;
  req_tenant_id: string | null;
  req_operation: string | null;
  req_model: string | null;
  req_backend_id: string | null;
  req_upstream_model: string | null;
  req_stream: number | null;
  req_status: number | null;
  req_outcome: string | null;
  req_error_code: string | null;
  req_latency_ms: number | null;
  req_ttfb_ms: number | null;
  req_prompt_tokens: number | null;
  req_completion_tokens: number | null;
  req_total_tokens: number | null;
  req_usage_source: string | null;
  req_cost_micros: number | null;
}

/** Where each integrated entry sits in the tree. */
export interface AuditIndexTable {
  entry_id: string;
  /** Leaf index (0-based). Unique. */
  idx: number;
}

/**
 * The leaf-hash lookup (migration `0006_audit_leaf_lookup`, format in `src/audit/leaf-lookup.ts`):
 * one row per integrated entry, primary key (epoch, prefix, idx). Before that migration the leaf hash
 * was a column of `audit_index` (hex text until `0005`, then 32 bytes) with a B-tree index.
 */
export interface AuditLeafLookupTable {
  /** `floor(idx / 16384)`. */
  epoch: number;
  /** First 6 bytes of `LH(entry)`, unsigned big-endian (< 2^48). */
  prefix: number;
  /** Leaf index. */
  idx: number;
}

/** Hash tiles (spec §9.2), written once per (level, idx, width), never rewritten. */
export interface AuditTilesTable {
  level: number;
  idx: number;
  /** 1–256 (256 = full tile). */
  width: number;
  data: Uint8Array;
}

/** Entry bundles (spec §9.4), written once per (idx, width). */
export interface AuditBundlesTable {
  idx: number;
  width: number;
  data: Uint8Array;
}

/** Every signed checkpoint, by tree size (the largest is the latest published one). */
export interface AuditCheckpointsTable {
  size: number;
  /** The complete signed note (spec §8). */
  note: string;
  created_at: number;
}

/** Log metadata: `origin`, `vkey`, `integrated_size` (decimal). */
export interface AuditMetaTable {
  key: string;
  value: string;
}

/**
 * Per-entry random salts of the request/response commitments (HMAC-SHA-256 keys). Deleting a row
 * (erasure) makes the entry's commitments impossible to open; the log itself is untouched.
 */
export interface AuditSecretsTable {
  entry_id: string;
  salt: Uint8Array;
  created_at: number;
}

/**
 * Retained request and response bytes of one entry (migration `0008_audit_content`, content
 * retention, `src/audit/content.ts`): AES-256-GCM sealed; erasable.
 */
export interface AuditContentTable {
  entry_id: string;
  /** 8 hex digits naming the content key that sealed `data`. */
  key_id: string;
  /** 12-byte GCM nonce. */
  nonce: Uint8Array;
  /** Ciphertext ‖ 16-byte tag of the framed bodies. */
  data: Uint8Array;
  /** ms since epoch. */
  created_at: number;
}

/**
 * Rate limits of one scope (migration `0004_metering`, src/metering/). At most one row per scope;
 * a scope without a row is unlimited.
 */
export interface RateLimitsTable {
  /** `tenant` | `key`. */
  scope_kind: string;
  /** Tenant id or API key id. */
  scope_id: string;
  /** Requests per minute; null = unlimited. */
  rpm: number | null;
  /** Tokens (prompt + completion) per minute; null = unlimited. */
  tpm: number | null;
  /** ms since epoch. */
  updated_at: number;
}

/** A budget of one scope (migration `0004_metering`). */
export interface BudgetsTable {
  /** `bud_` + 16 base62 characters. */
  id: string;
  /** `tenant` | `key`. */
  scope_kind: string;
  scope_id: string;
  /** `tokens` | `usd_micros`. */
  unit: string;
  /** Limit per period, in `unit` (integer ≥ 0). */
  amount: number;
  /** `day` | `month` (UTC calendar) | `fixed` (never resets). */
  period: string;
  /** ms since epoch. */
  created_at: number;
}

/**
 * Consumption of one budget in one period (migration `0004_metering`). Invariant kept by the
 * conditional reservation: `used + reserved <= amount` except when settled usage exceeded what was
 * reserved (an upstream producing more than max_tokens): the truth is recorded, nothing is clamped.
 */
export interface BudgetUsageTable {
  budget_id: string;
  /** Start of the period, ms since epoch (UTC midnight / first of month; 0 for `fixed`). */
  period_start: number;
  /** Settled consumption, in the budget's unit. */
  used: number;
  /** Admitted but not yet settled worst cases, in the budget's unit. */
  reserved: number;
}

export interface Database {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  admins: AdminsTable;
  requests: RequestsTable;
  audit_queue: AuditQueueTable;
  audit_index: AuditIndexTable;
  audit_leaf_lookup: AuditLeafLookupTable;
  audit_tiles: AuditTilesTable;
  audit_bundles: AuditBundlesTable;
  audit_checkpoints: AuditCheckpointsTable;
  audit_meta: AuditMetaTable;
  audit_secrets: AuditSecretsTable;
  audit_content: AuditContentTable;
  rate_limits: RateLimitsTable;
  budgets: BudgetsTable;
  budget_usage: BudgetUsageTable;
}

export type { Generated };
