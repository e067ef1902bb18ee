/**
 * Audit records: the application-layer content of transparency-log entries (spec §2).
 *
 * Each entry is the UTF-8 RFC 8785 canonical JSON ({@link canonicalize}) of one versioned record,
 * with no trailing newline, at most 65 535 bytes. Three record types (`v: 1`):
 *
 * - `request`: one per data-plane request — who (tenant, key id, never the key), what (operation,
 *   model, backend), when (`time`, RFC 3339 UTC with milliseconds, when the request was received),
 *   outcome (status, outcome, error code, latency, usage) and **commitments** to the exact request and
 *   response bytes: hex HMAC-SHA-256 under a per-record random 32-byte salt kept outside the log
 *   (`audit_secrets`). No prompt, completion or credential is ever in a record.
 * - `admin`: one per administrative action (`keys.create`, `keys.revoke`, …) with SHA-256 digests of
 *   the canonical JSON of the target's state before and after.
 * - `erasure`: records that the salt of entry `target` was deleted (its commitments can no longer
 *   be opened; the entry itself stays, the log is append-only).
 *
 * Free-text fields are capped at {@link MAX_FIELD_CHARS} characters; a capped field is named in the
 * record's `truncated` list, so nothing is ever shortened silently. Encoding fails rather than
 * produce an entry over 65 535 bytes.
 */
import { createHash, createHmac, type Hmac } from 'node:crypto';
import { randomSlice } from '../random.ts';
import { canonicalize } from './jcs.ts';
import type { RequestsTable } from '../store/schema.ts';

/** Record format version. */
export const AUDIT_RECORD_VERSION = 1;
/** Largest entry, bytes (16-bit length prefix in entry bundles, spec §2, §9.4). */
export const MAX_ENTRY_BYTES = 65_535;
/** Longest free-text field (UTF-16 code units) before it is capped and listed in `truncated`. */
export const MAX_FIELD_CHARS = 512;
/** Bytes of a commitment salt. */
export const SALT_BYTES = 32;

/** Token usage as recorded (tokens), with where the figures came from. */
export interface RecordUsage {
  prompt_tokens: number | null;
  completion_tokens: number | null;
  total_tokens: number | null;
  /** `upstream` | `estimate` */
  source: string;
}

/** Commitments of a request record: lowercase-hex HMAC-SHA-256 under the record's salt. */
export interface RecordCommitments {
  alg: 'hmac-sha256';
  /** HMAC of the exact request body bytes Sovra received; null when the body was never read (e.g. a 401 before the upload). */
  request: string | null;
  /** HMAC of the exact response body bytes Sovra sent (streams: every relayed event/comment as written, excluding heartbeats and the audit comment). */
  response: string;
}

/**
 * Policy decisions of a request, as short lines (no content, no identifiers):
 * - `residency`: the request's classification (`class=…`), each candidate backend excluded and why
 *   (`exclude <alias>/<backend>: <code> (<detail>)`), backends skipped for health (`skip …`), transfer
 *   bases used, and each attempt with its result (`attempt <n> <alias>/<backend>: served|<failure>`);
 *   at most {@link MAX_POLICY_LINES};
 * - `pii`: counts per identifier type and action (filled by the privacy guard).
 */
export interface RecordPolicy {
  residency: string[];
  pii: string[];
}

/** Most lines kept per policy list. */
export const MAX_POLICY_LINES = 64;

/** A `request` record (v1). */
export interface RequestRecord {
  v: 1;
  type: 'request';
  id: string;
  time: string;
  tenant: string | null;
  tenant_id: string | null;
  key_id: string | null;
  operation: string;
  model: string | null;
  backend: string | null;
  upstream_model: string | null;
  stream: boolean;
  status: number;
  outcome: string;
  error_code: string | null;
  latency_ms: number;
  usage: RecordUsage | null;
  policy: RecordPolicy;
  commitments: RecordCommitments;
  /** Names of fields capped at {@link MAX_FIELD_CHARS}; absent when none was. */
  truncated?: string[];
}

/** An `admin` record (v1). */
export interface AdminRecord {
  v: 1;
  type: 'admin';
  id: string;
  time: string;
  /** Who acted, e.g. `cli:alice` or `server:bootstrap`. */
  actor: string;
  /** e.g. `keys.create`, `keys.revoke`. */
  action: string;
  /** Id of the object acted on (e.g. the key id). */
  target: string;
  /** Lowercase-hex SHA-256 of the canonical JSON of the target's state before; null if it did not exist. */
  before: string | null;
  /** Same, after; null if it no longer exists. */
  after: string | null;
  truncated?: string[];
}

/** An `erasure` record (v1). */
export interface ErasureRecord {
  v: 1;
  type: 'erasure';
  id: string;
  time: string;
  /** Id of the entry whose salt (and any retained content) was deleted. */
  target: string;
  truncated?: string[];
}

/** Any audit record. */
export type AuditRecord = RequestRecord | AdminRecord | ErasureRecord;

/** RFC 3339 UTC with milliseconds, e.g. `2025-01-01T00:00:00.000Z`. */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString();
}

/** Caps `s` at {@link MAX_FIELD_CHARS} (never splitting a surrogate pair), noting `field` in `truncated`. */
function cap(s: string | null, field: string, truncated: string[]): string | null {
  if (s === null || s.length <= MAX_FIELD_CHARS) return s;
  truncated.push(field);
  let end = MAX_FIELD_CHARS;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return s.slice(0, end);
}

/** Lowercase-hex SHA-256 of the canonical JSON of `state` (admin records' `before` / `after`). */
export function stateDigest(state: unknown): string {
  return createHash('sha256').update(canonicalize(state), 'utf8').digest('hex');
}

/**
 * Builds the `request` record of a finished request from its request row.
 * @param row the request row (as written to `requests`)
 * @param extra tenant name, commitments, and the policy decisions (empty lists when no policy ran)
 */
export function requestRecord(
  row: RequestsTable,
  extra: { tenant: string | null; commitments: RecordCommitments; policy?: RecordPolicy | undefined },
): RequestRecord {
  const truncated: string[] = [];
  const usage: RecordUsage | null =
    row.usage_source === 'none' && row.total_tokens === null
      ? null
      : { prompt_tokens: row.prompt_tokens, completion_tokens: row.completion_tokens, total_tokens: row.total_tokens, source: row.usage_source };
  const rec: RequestRecord = {
    v: 1,
    type: 'request',
    id: cap(row.id, 'id', truncated)!,
    time: rfc3339(row.ts),
    tenant: cap(extra.tenant, 'tenant', truncated),
    tenant_id: cap(row.tenant_id, 'tenant_id', truncated),
    key_id: cap(row.key_id, 'key_id', truncated),
    operation: cap(row.operation, 'operation', truncated)!,
    model: cap(row.model, 'model', truncated),
    backend: cap(row.backend_id, 'backend', truncated),
    upstream_model: cap(row.upstream_model, 'upstream_model', truncated),
    stream: row.stream === 1,
    status: row.status,
    outcome: cap(row.outcome, 'outcome', truncated)!,
    error_code: cap(row.error_code, 'error_code', truncated),
    latency_ms: Math.max(0, Math.round(row.latency_ms)),
    usage,
    policy: {
      residency: (extra.policy?.residency ?? []).slice(0, MAX_POLICY_LINES).map((s, i) => cap(s, `policy.residency[${i}]`, truncated)!),
      pii: (extra.policy?.pii ?? []).slice(0, MAX_POLICY_LINES).map((s, i) => cap(s, `policy.pii[${i}]`, truncated)!),
    },
    commitments: extra.commitments,
  };
  if (truncated.length > 0) rec.truncated = truncated;
  return rec;
}

/** Builds an `admin` record (fields capped as described in the module doc). */
export function adminRecord(r: { id: string; timeMs: number; actor: string; action: string; target: string; before: string | null; after: string | null }): AdminRecord {
  const truncated: string[] = [];
  const rec: AdminRecord = {
    v: 1,
    type: 'admin',
    id: cap(r.id, 'id', truncated)!,
    time: rfc3339(r.timeMs),
    actor: cap(r.actor, 'actor', truncated)!,
    action: cap(r.action, 'action', truncated)!,
    target: cap(r.target, 'target', truncated)!,
    before: r.before,
    after: r.after,
  };
  if (truncated.length > 0) rec.truncated = truncated;
  return rec;
}

/** Builds an `erasure` record. */
export function erasureRecord(r: { id: string; timeMs: number; target: string }): ErasureRecord {
  const truncated: string[] = [];
  const rec: ErasureRecord = { v: 1, type: 'erasure', id: cap(r.id, 'id', truncated)!, time: rfc3339(r.timeMs), target: cap(r.target, 'target', truncated)! };
  if (truncated.length > 0) rec.truncated = truncated;
  return rec;
}

/**
 * The entry bytes of a record: UTF-8 of its RFC 8785 canonical JSON (spec §2). Serialise once and
 * store these exact bytes; never re-serialise to recompute a hash.
 * @throws RangeError if the entry would exceed 65 535 bytes (cannot happen for records built by this
 *   module, whose fields are bounded), TypeError for values JCS cannot represent
 */
export function encodeRecord(rec: AuditRecord): Buffer {
  const bytes = Buffer.from(canonicalize(rec), 'utf8');
  if (bytes.length > MAX_ENTRY_BYTES) throw new RangeError(`audit record ${rec.id} is ${bytes.length} bytes; the limit is ${MAX_ENTRY_BYTES}`);
  return bytes;
}

/** Parses entry bytes back into a record (for tools and tests; no schema validation beyond JSON). */
export function decodeRecord(entry: Uint8Array): AuditRecord {
  return JSON.parse(Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength).toString('utf8')) as AuditRecord;
}

/**
 * A fresh 32-byte salt from the CSPRNG, cut from the pooled output of `../random.ts` (the same
 * CSPRNG output at a fraction of the per-call cost; a salt is never handed out twice).
 */
export function freshSalt(): Buffer {
  return randomSlice(SALT_BYTES);
}

/** Response bytes buffered before one HMAC update (fewer native calls for streams of small events). */
const RESPONSE_BUFFER_CHARS = 16 * 1024;

/**
 * Accumulates the HMAC-SHA-256 commitments of one request under a fresh random 32-byte salt:
 * the request body (once) and the response bytes as they are written (any number of chunks, in order).
 * With `retainBytes` > 0 (content retention, `./content.ts`) it also keeps the exact bytes it commits
 * to — the very buffers fed to the HMAC, so they match by construction — each body up to
 * `retainBytes` bytes (a body over the cap is dropped, not cut).
 */
export class Commitments {
  /** The salt (HMAC key); stored in `audit_secrets`, never in the log. */
  readonly salt: Buffer;
  #request: string | null = null;
  readonly #response: Hmac;
  #responseDigest: string | undefined;
  /** Response strings not yet fed to the HMAC (concatenated; flushed at {@link RESPONSE_BUFFER_CHARS}). */
  #pending = '';
  /** Most bytes retained per body; 0 = retention off. */
  #retainBytes: number;
  #requestBody: Uint8Array | null = null;
  /** The response bytes fed to the HMAC so far (retention on, under the cap), else null. */
  #responseParts: Buffer[] | null;
  #responseBytes = 0;

  /**
   * @param salt 32 bytes (default: {@link freshSalt})
   * @param retainBytes keep each body up to this many bytes for {@link retained} (default 0: keep nothing)
   */
  constructor(salt: Buffer = freshSalt(), retainBytes = 0) {
    this.salt = salt;
    this.#response = createHmac('sha256', salt);
    this.#retainBytes = retainBytes;
    this.#responseParts = retainBytes > 0 ? [] : null;
  }

  /** Commits to the exact request body bytes (call once; a later call replaces the value). */
  request(body: Uint8Array): void {
    this.#request = createHmac('sha256', this.salt).update(body).digest('hex');
    if (this.#retainBytes > 0) this.#requestBody = body.byteLength <= this.#retainBytes ? body : null;
  }

  /** Adds bytes sent to the client (a string is taken as its UTF-8 bytes, as written on the wire). Ignored after {@link digests}. */
  response(chunk: string | Uint8Array): void {
    if (this.#responseDigest !== undefined) return;
    if (typeof chunk === 'string') {
      this.#pending += chunk;
      if (this.#pending.length >= RESPONSE_BUFFER_CHARS) this.#flush();
    } else {
      this.#flush();
      this.#response.update(chunk);
      if (this.#responseParts !== null) this.#keep(Buffer.from(chunk)); // a copy: the caller may reuse its buffer
    }
  }

  #flush(): void {
    if (this.#pending.length === 0) return;
    if (this.#responseParts !== null) {
      const bytes = Buffer.from(this.#pending, 'utf8');
      this.#response.update(bytes);
      this.#keep(bytes);
    } else {
      this.#response.update(this.#pending, 'utf8');
    }
    this.#pending = '';
  }

  /** Keeps response bytes while under the cap; past it, drops them all (and keeps nothing more). */
  #keep(bytes: Buffer): void {
    this.#responseBytes += bytes.length;
    if (this.#responseBytes > this.#retainBytes) this.#responseParts = null;
    else this.#responseParts!.push(bytes);
  }

  /** Keeps no more bytes and drops those kept (a request whose content is not to be retained). */
  stopRetaining(): void {
    this.#retainBytes = 0;
    this.#requestBody = null;
    this.#responseParts = null;
  }

  /** The final commitments (the response HMAC is closed on the first call). */
  digests(): RecordCommitments {
    if (this.#responseDigest === undefined) {
      this.#flush();
      this.#responseDigest = this.#response.digest('hex');
    }
    return { alg: 'hmac-sha256', request: this.#request, response: this.#responseDigest };
  }

  /**
   * The retained bytes (call after {@link digests}, when the response is complete): the request body
   * and the response, each null when not retained (retention off, no body, or over the cap).
   */
  retained(): { request: Uint8Array | null; response: Uint8Array | null } {
    this.#flush();
    const parts = this.#responseParts;
    return { request: this.#requestBody, response: parts === null ? null : parts.length === 1 ? parts[0]! : Buffer.concat(parts) };
  }
}

/** Recomputes a commitment (hex HMAC-SHA-256 of `bytes` under `salt`), e.g. to open one for an auditor. */
export function commitment(salt: Uint8Array, bytes: Uint8Array): string {
  return createHmac('sha256', salt).update(bytes).digest('hex');
}
