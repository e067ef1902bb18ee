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
 * One row per data-plane request: the request record. Designed so that the transparency log
 * (next issue) can turn each row into one leaf: it holds who/what/when/outcome, never content or keys.
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

export interface Database {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  requests: RequestsTable;
}

export type { Generated };
