/**
 * Data-plane API keys: generation, storage (digest only), listing, revocation and authentication.
 *
 * A key looks like `sk-sovra-` + 32 base62 characters (≈190.5 bits from `crypto.randomBytes`). Only
 * its lower-case hex SHA-256 digest and its first 13 characters (the display prefix) are stored.
 * Key strings are never logged nor put into Error messages by this module.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/db.ts';

/** Every key starts with this. */
export const KEY_PREFIX = 'sk-sovra-';
/** Number of random base62 characters after {@link KEY_PREFIX}. */
export const KEY_RANDOM_CHARS = 32;
/** Total key length (41). */
export const KEY_LENGTH = KEY_PREFIX.length + KEY_RANDOM_CHARS;
/** Length of the stored, displayable prefix (e.g. `sk-sovra-AbCd`). */
export const DISPLAY_PREFIX_LENGTH = 13;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_RE = /^sk-sovra-[0-9A-Za-z]{32}$/;
const MAX_TENANT_NAME = 200;
const MAX_KEY_NAME = 200;

/**
 * `n` characters drawn uniformly from [0-9A-Za-z] using `crypto.randomBytes`. Bytes ≥ 248 (= 4·62)
 * are rejected, so `byte % 62` has no modulo bias.
 */
export function randomBase62(n: number): string {
  let out = '';
  while (out.length < n) {
    const bytes = randomBytes(Math.ceil((n - out.length) * 1.1) + 4);
    for (const b of bytes) {
      if (b >= 248) continue;
      out += BASE62[b % 62];
      if (out.length === n) break;
    }
  }
  return out;
}

/** A random URL-safe id: `prefix` + `_` + 16 base62 characters (≈95 bits), e.g. `key_3fZ…`. */
export function randomId(prefix: string): string {
  return `${prefix}_${randomBase62(16)}`;
}

/** A new key: `sk-sovra-` + 32 base62 characters (41 characters in total). */
export function generateKey(): string {
  return KEY_PREFIX + randomBase62(KEY_RANDOM_CHARS);
}

/** Lower-case hex SHA-256 of the key string (64 characters). */
export function digestKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** True if `s` has the shape of a Sovra key (prefix, length, charset); says nothing about validity. */
export function looksLikeKey(s: string): boolean {
  return KEY_RE.test(s);
}

/** Result of {@link createKey}. `key` is the only time the plaintext key is available. */
export interface CreatedKey {
  id: string;
  tenantId: string;
  tenant: string;
  name: string | null;
  /** First 13 characters of the key, safe to display. */
  prefix: string;
  /** The plaintext key. Show it once; it cannot be recovered later. */
  key: string;
  /** ms since epoch. */
  createdAt: number;
}

/**
 * Creates a key for tenant `tenant` (by name), creating the tenant if missing (race-safe:
 * insert-or-ignore on the unique name, then select). Stores only the digest and display prefix.
 *
 * @param opts.modelAllowlist model aliases the key may use (validated by the caller, see
 *   `src/tenancy/api-keys.ts`); omitted or null = every model
 * @param opts.expiresAt when the key stops working, ms since epoch; omitted or null = never
 * @throws Error if the tenant name is empty / longer than 200 characters, the key name is longer
 *   than 200 characters, or the database fails.
 */
export async function createKey(
  store: Store,
  opts: { tenant: string; name?: string; modelAllowlist?: string[] | null; expiresAt?: number | null },
): Promise<CreatedKey> {
  const tenantName = typeof opts.tenant === 'string' ? opts.tenant.trim() : '';
  if (tenantName === '' || tenantName.length > MAX_TENANT_NAME) {
    throw new Error(`Tenant name must be 1-${MAX_TENANT_NAME} characters`);
  }
  const name = opts.name === undefined || opts.name.trim() === '' ? null : opts.name.trim();
  if (name !== null && name.length > MAX_KEY_NAME) throw new Error(`Key name must be at most ${MAX_KEY_NAME} characters`);

  const now = Date.now();
  await store.db
    .insertInto('tenants')
    .values({ id: randomId('ten'), name: tenantName, created_at: now })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
  const tenant = await store.db
    .selectFrom('tenants')
    .select(['id', 'name'])
    .where('name', '=', tenantName)
    .executeTakeFirstOrThrow(() => new Error(`Tenant "${tenantName}" vanished while creating a key`));

  const key = generateKey();
  const row = {
    id: randomId('key'),
    tenant_id: tenant.id,
    name,
    digest: digestKey(key),
    prefix: key.slice(0, DISPLAY_PREFIX_LENGTH),
    created_at: now,
    revoked_at: null,
    ...(opts.modelAllowlist ? { model_allowlist: JSON.stringify(opts.modelAllowlist) } : {}),
    ...(opts.expiresAt !== undefined && opts.expiresAt !== null ? { expires_at: opts.expiresAt } : {}),
  };
  await store.db.insertInto('api_keys').values(row).execute();
  return { id: row.id, tenantId: tenant.id, tenant: tenant.name, name, prefix: row.prefix, key, createdAt: now };
}

/** A key as listed (never its digest). Times are ms since epoch. */
export interface KeyInfo {
  id: string;
  tenant: string;
  name: string | null;
  prefix: string;
  createdAt: number;
  revokedAt: number | null;
  /** When the key stops working (ms since epoch; a rotated key's overlap end), or null. */
  expiresAt: number | null;
}

/** All keys, revoked and expired ones included, oldest first. */
export async function listKeys(store: Store): Promise<KeyInfo[]> {
  const rows = await store.db
    .selectFrom('api_keys as k')
    .innerJoin('tenants as t', 't.id', 'k.tenant_id')
    .select(['k.id', 't.name as tenant', 'k.name', 'k.prefix', 'k.created_at', 'k.revoked_at', 'k.expires_at'])
    .orderBy('k.created_at', 'asc')
    .orderBy('k.id', 'asc')
    .execute();
  return rows.map((r) => ({
    id: r.id,
    tenant: r.tenant,
    name: r.name,
    prefix: r.prefix,
    createdAt: Number(r.created_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    expiresAt: r.expires_at === null || r.expires_at === undefined ? null : Number(r.expires_at),
  }));
}

/**
 * Revokes key `id` (sets `revoked_at` to now). Resolves false if there is no such key or it was
 * already revoked. Running {@link KeyAuthenticator}s notice within their cache TTL, or at once after
 * `invalidate()`.
 */
export async function revokeKey(store: Store, id: string): Promise<boolean> {
  const r = await store.db
    .updateTable('api_keys')
    .set({ revoked_at: Date.now() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Tenant attributes carried by an accepted key (for residency routing). */
export interface TenantAttributes {
  /** ISO 3166-1 alpha-2 code (upper case), or null when the tenant has none. */
  readonly jurisdiction: string | null;
  /** Data-classification ceiling label, or null when the tenant has none. */
  readonly classification: string | null;
}

/** The identity behind an accepted key (frozen). */
export interface AuthenticatedKey {
  readonly keyId: string;
  /** The key whose limits and budgets apply: this key, or after rotation its newest successor. */
  readonly meteringKeyId: string;
  readonly tenantId: string;
  readonly tenant: string;
  /** Model aliases the key may use; null = every model. */
  readonly modelAllowlist: string[] | null;
  readonly tenantAttributes: TenantAttributes;
  /** When the key stops working, ms since epoch; null = never. */
  readonly expiresAt: number | null;
}

/**
 * Parses the stored `model_allowlist` column (JSON array of strings, or null).
 * @returns the aliases, or null for "every model"; a malformed value yields `[]` (fail closed)
 */
export function parseAllowlist(text: string | null | undefined): string[] | null {
  if (text === null || text === undefined) return null;
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : [];
  } catch {
    return [];
  }
}

/** Builds a frozen {@link AuthenticatedKey} (the allowlist and attributes frozen too). */
export function authenticatedKey(v: {
  keyId: string;
  meteringKeyId?: string;
  tenantId: string;
  tenant: string;
  modelAllowlist: string[] | null;
  tenantAttributes: TenantAttributes;
  expiresAt: number | null;
}): AuthenticatedKey {
  return Object.freeze({
    keyId: v.keyId,
    meteringKeyId: v.meteringKeyId ?? v.keyId,
    tenantId: v.tenantId,
    tenant: v.tenant,
    modelAllowlist: v.modelAllowlist === null ? null : (Object.freeze([...v.modelAllowlist]) as string[]),
    tenantAttributes: Object.freeze({ ...v.tenantAttributes }),
    expiresAt: v.expiresAt,
  });
}

/** Options of {@link KeyAuthenticator}. */
export interface KeyAuthenticatorOptions {
  /** How long (ms) a lookup result, positive or negative, is reused. 0 disables the cache. Default 5000. */
  cacheTtlMs?: number;
  /** Cache capacity; the oldest entry is evicted when full. Default 10,000. */
  maxCacheEntries?: number;
  /** Clock, ms (for tests). Default `Date.now`. */
  now?: () => number;
}

interface CacheEntry {
  value: AuthenticatedKey | null;
  expiresAt: number;
}

/**
 * Authenticates presented keys against the store, caching results (positive and negative) by
 * digest for `cacheTtlMs` so the hot path stays off the database. Concurrent lookups of the same
 * key share one query. A revocation made elsewhere takes effect within `cacheTtlMs`, or at once
 * after `invalidate()`. The plaintext key is never kept (the cache is keyed by digest).
 */
export class KeyAuthenticator {
  readonly #store: Store;
  readonly #ttl: number;
  readonly #max: number;
  readonly #now: () => number;
  #cache = new Map<string, CacheEntry>();
  #inflight = new Map<string, Promise<AuthenticatedKey | null>>();
  /** Bumped by invalidate(); lookups started before it must not populate the cache. */
  #generation = 0;

  constructor(store: Store, opts: KeyAuthenticatorOptions = {}) {
    this.#store = store;
    this.#ttl = Math.max(0, opts.cacheTtlMs ?? 5000);
    this.#max = Math.max(1, opts.maxCacheEntries ?? 10_000);
    this.#now = opts.now ?? Date.now;
  }

  /** Number of cached results (for tests and metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  /**
   * Resolves the key's identity, or null if the key is malformed, unknown, revoked or expired
   * (`expires_at` ≤ now; checked on every call against the clock, so a cached result never outlives
   * the key's expiry).
   * @throws the database error if the lookup fails (the message never contains the key).
   */
  async authenticate(presented: string): Promise<AuthenticatedKey | null> {
    const v = await this.#authenticate(presented);
    if (v !== null && v.expiresAt !== null && v.expiresAt <= this.#now()) return null;
    return v;
  }

  async #authenticate(presented: string): Promise<AuthenticatedKey | null> {
    if (typeof presented !== 'string' || !KEY_RE.test(presented)) return null;
    const digest = digestKey(presented);

    if (this.#ttl > 0) {
      const hit = this.#cache.get(digest);
      if (hit !== undefined) {
        if (hit.expiresAt > this.#now()) return hit.value;
        this.#cache.delete(digest);
      }
    }
    const pending = this.#inflight.get(digest);
    if (pending !== undefined) return pending;

    const generation = this.#generation;
    const lookup = this.#lookup(digest).then(
      (value) => {
        if (this.#inflight.get(digest) === lookup) this.#inflight.delete(digest);
        if (this.#ttl > 0 && generation === this.#generation) this.#remember(digest, value);
        return value;
      },
      (err: unknown) => {
        if (this.#inflight.get(digest) === lookup) this.#inflight.delete(digest);
        throw err;
      },
    );
    this.#inflight.set(digest, lookup);
    return lookup;
  }

  /** Forgets every cached result and in-flight lookup (call after creating, changing or revoking keys). */
  invalidate(): void {
    this.#generation++;
    this.#cache.clear();
    this.#inflight.clear();
  }

  async #lookup(digest: string): Promise<AuthenticatedKey | null> {
    const row = await this.#store.db
      .selectFrom('api_keys as k')
      .innerJoin('tenants as t', 't.id', 'k.tenant_id')
      .select(['k.id', 'k.tenant_id', 'k.digest', 'k.revoked_at', 'k.model_allowlist', 'k.expires_at', 't.name as tenant', 't.jurisdiction', 't.classification'])
      .where('k.digest', '=', digest)
      .executeTakeFirst();
    if (row === undefined) return null;
    const a = Buffer.from(digest, 'hex');
    const b = Buffer.from(row.digest, 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b)) return null;
    if (row.revoked_at !== null) return null;
    // A rotated key is metered as its newest successor: rotation moves key-scoped limits and budgets
    // to the new key, and the old one (during its overlap) must not escape them.
    let meteringKeyId = row.id;
    for (let i = 0; i < 32; i++) {
      const next = await this.#store.db.selectFrom('api_keys').select('id').where('rotated_from', '=', meteringKeyId).orderBy('created_at', 'desc').executeTakeFirst();
      if (!next) break;
      meteringKeyId = next.id;
    }
    return authenticatedKey({
      keyId: row.id,
      meteringKeyId,
      tenantId: row.tenant_id,
      tenant: row.tenant,
      modelAllowlist: parseAllowlist(row.model_allowlist),
      tenantAttributes: { jurisdiction: row.jurisdiction ?? null, classification: row.classification ?? null },
      expiresAt: row.expires_at === null || row.expires_at === undefined ? null : Number(row.expires_at),
    });
  }

  #remember(digest: string, value: AuthenticatedKey | null): void {
    this.#cache.delete(digest);
    while (this.#cache.size >= this.#max) {
      const oldest = this.#cache.keys().next();
      if (oldest.done) break;
      this.#cache.delete(oldest.value);
    }
    this.#cache.set(digest, { value, expiresAt: this.#now() + this.#ttl });
  }
}
