/**
 * Database schema shared by SQLite and PostgreSQL (Kysely table types).
 *
 * Conventions: ids are text (random, URL-safe); times are integer milliseconds since the Unix epoch
 * (BIGINT on PostgreSQL, parsed back to number); booleans are 0/1 integers.
 */
import type { Generated } from 'kysely';

/** An agency (tenant). Created implicitly by `sovra keys create --tenant NAME`. */
export interface TenantsTable {
  id: string;
  name: string;
  created_at: number;
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
}

/** Where each integrated entry sits in the tree. */
export interface AuditIndexTable {
  entry_id: string;
  /** Leaf index (0-based). Unique. */
  idx: number;
  /** Lower-case hex `LH(entry)` (spec §3), indexed for `leaf_hash=` lookups. */
  leaf_hash: string;
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

export interface Database {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  requests: RequestsTable;
  audit_queue: AuditQueueTable;
  audit_index: AuditIndexTable;
  audit_tiles: AuditTilesTable;
  audit_bundles: AuditBundlesTable;
  audit_checkpoints: AuditCheckpointsTable;
  audit_meta: AuditMetaTable;
  audit_secrets: AuditSecretsTable;
}

export type { Generated };
