/**
 * Data-plane API-key lifecycle for the admin API and CLI: create (for a tenant, with label, model
 * allowlist and expiry), read, list, change label / allowlist / expiry, revoke, and rotate with an
 * overlap window. Every change is audited (see audited.ts). The plaintext key exists only in the
 * return value of {@link createApiKey} / {@link rotateApiKey}; only its SHA-256 digest is stored and
 * nothing here ever returns the digest. Times are ms since the epoch.
 */
import type { Selectable } from 'kysely';
import { DISPLAY_PREFIX_LENGTH, digestKey, generateKey, parseAllowlist, randomId } from '../keys/keys.ts';
import type { Store } from '../store/db.ts';
import type { ApiKeysTable } from '../store/schema.ts';
import { auditedChange, type ChangeContext } from './audited.ts';
import { conflict, invalidParam, notFound } from './errors.ts';

/** Largest number of aliases in an allowlist. */
export const MAX_ALLOWLIST = 256;
/** Longest rotation overlap: 30 days, in ms. */
export const MAX_OVERLAP_MS = 30 * 24 * 3600 * 1000;
const MAX_LABEL = 200;
const ALIAS_RE = /^[^\u0000-\u001f\u007f]{1,256}$/;

/** `active` (usable), `expired` (past `expiresAt`) or `revoked`. Revoked wins over expired. */
export type KeyState = 'active' | 'expired' | 'revoked';

/** A data-plane key as stored, without its digest (and of course without the key). */
export interface ApiKey {
  /** `key_` + 16 base62 characters. */
  id: string;
  tenantId: string;
  /** Optional human label (stored as the key's `name`). */
  label: string | null;
  /** First 13 characters of the key (`sk-sovra-AbCd`), safe to display. */
  prefix: string;
  /** Allowed model aliases; null = every model. */
  modelAllowlist: string[] | null;
  /** ms since epoch; null = never expires. */
  expiresAt: number | null;
  createdAt: number;
  revokedAt: number | null;
  /** The key this one replaced by rotation, or null. */
  rotatedFrom: string | null;
}

/** A created or rotated key: its record and the plaintext, to show once. */
export interface IssuedKey {
  apiKey: ApiKey;
  /** `sk-sovra-…` — returned exactly once; it cannot be recovered later. */
  secret: string;
}

/** The state of `k` at time `now` (ms). */
export function keyState(k: Pick<ApiKey, 'revokedAt' | 'expiresAt'>, now: number): KeyState {
  if (k.revokedAt !== null) return 'revoked';
  if (k.expiresAt !== null && k.expiresAt <= now) return 'expired';
  return 'active';
}

/**
 * Validates an allowlist: at most 256 distinct non-empty aliases (duplicates removed, order kept).
 * @throws GatewayError 400 (param `model_allowlist`)
 */
export function validateAllowlist(list: unknown): string[] {
  if (!Array.isArray(list)) throw invalidParam('model_allowlist', 'model_allowlist must be an array of model aliases or null.');
  const out: string[] = [];
  for (const a of list) {
    if (typeof a !== 'string' || !ALIAS_RE.test(a)) throw invalidParam('model_allowlist', 'every model_allowlist entry must be a model alias of 1-256 characters.');
    if (!out.includes(a)) out.push(a);
  }
  if (out.length > MAX_ALLOWLIST) throw invalidParam('model_allowlist', `model_allowlist may hold at most ${MAX_ALLOWLIST} aliases.`);
  return out;
}

/**
 * Validates a label (trimmed, 1–200 characters; empty = none).
 * @throws GatewayError 400 (param `label`)
 */
export function validateLabel(v: string | null): string | null {
  if (v === null) return null;
  const s = typeof v === 'string' ? v.trim() : '';
  if (s.length > MAX_LABEL || /[\u0000-\u001f\u007f]/.test(s)) throw invalidParam('label', `label must be at most ${MAX_LABEL} characters without control characters.`);
  return s === '' ? null : s;
}

function validateExpiry(v: number | null): number | null {
  if (v === null) return null;
  if (!Number.isSafeInteger(v) || v <= 0) throw invalidParam('expires_at', 'expires_at must be a date-time.');
  return v;
}

/** Maps a stored row to an {@link ApiKey} (drops the digest). */
export function apiKeyFromRow(r: Selectable<ApiKeysTable>): ApiKey {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    label: r.name,
    prefix: r.prefix,
    modelAllowlist: parseAllowlist(r.model_allowlist),
    expiresAt: r.expires_at === null || r.expires_at === undefined ? null : Number(r.expires_at),
    createdAt: Number(r.created_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    rotatedFrom: r.rotated_from ?? null,
  };
}

const COLUMNS = ['id', 'tenant_id', 'name', 'prefix', 'model_allowlist', 'expires_at', 'created_at', 'revoked_at', 'rotated_from'] as const;

/** The key with id `id` (no digest), or null. */
export async function getApiKey(store: Store, id: string): Promise<ApiKey | null> {
  const r = await store.db.selectFrom('api_keys').select(COLUMNS).where('id', '=', id).executeTakeFirst();
  return r ? apiKeyFromRow({ ...r, digest: '' }) : null;
}

/**
 * Keys, oldest first, revoked and expired ones included.
 * @param filter.tenantId only this tenant's keys
 */
export async function listApiKeys(store: Store, filter: { tenantId?: string } = {}): Promise<ApiKey[]> {
  let q = store.db.selectFrom('api_keys').select(COLUMNS);
  if (filter.tenantId !== undefined) q = q.where('tenant_id', '=', filter.tenantId);
  const rows = await q.orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
  return rows.map((r) => apiKeyFromRow({ ...r, digest: '' }));
}

function newKeyRow(k: ApiKey, digest: string) {
  return {
    id: k.id,
    tenant_id: k.tenantId,
    name: k.label,
    digest,
    prefix: k.prefix,
    created_at: k.createdAt,
    revoked_at: k.revokedAt,
    model_allowlist: k.modelAllowlist === null ? null : JSON.stringify(k.modelAllowlist),
    expires_at: k.expiresAt,
    rotated_from: k.rotatedFrom,
  };
}

/**
 * Creates a key for an existing tenant (audited as `keys.create`).
 * @param input.expiresAt ms since epoch, must be in the future; null/omitted = never
 * @throws GatewayError 404 `tenant_not_found`, 400 (label, allowlist, expiry), 503 `audit_unavailable`
 */
export function createApiKey(
  cc: ChangeContext,
  input: { tenantId: string; label?: string | null; modelAllowlist?: string[] | null; expiresAt?: number | null },
): Promise<IssuedKey> {
  return auditedChange(cc, async () => {
    const now = (cc.now ?? Date.now)();
    const tenant = await cc.store.db.selectFrom('tenants').select('id').where('id', '=', input.tenantId).executeTakeFirst();
    if (!tenant) throw notFound('tenant', input.tenantId);
    const expiresAt = validateExpiry(input.expiresAt ?? null);
    if (expiresAt !== null && expiresAt <= now) throw invalidParam('expires_at', 'expires_at must be in the future.');
    const secret = generateKey();
    const apiKey: ApiKey = {
      id: randomId('key'),
      tenantId: tenant.id,
      label: validateLabel(input.label ?? null),
      prefix: secret.slice(0, DISPLAY_PREFIX_LENGTH),
      modelAllowlist: input.modelAllowlist === undefined || input.modelAllowlist === null ? null : validateAllowlist(input.modelAllowlist),
      expiresAt,
      createdAt: now,
      revokedAt: null,
      rotatedFrom: null,
    };
    return {
      action: 'keys.create',
      target: apiKey.id,
      before: null,
      after: apiKey,
      current: () => getApiKey(cc.store, apiKey.id),
      apply: async () => {
        await cc.store.db.insertInto('api_keys').values(newKeyRow(apiKey, digestKey(secret))).execute();
        return { apiKey, secret };
      },
    };
  });
}

/**
 * Changes a key's label, allowlist and/or expiry (audited as `keys.update`). `undefined` leaves a
 * field unchanged; `null` clears it (no label / every model / never expires).
 * @throws GatewayError 404 `api_key_not_found`, 409 `key_revoked`, 400 (invalid values), 503 `audit_unavailable`
 */
export function updateApiKey(
  cc: ChangeContext,
  id: string,
  patch: { label?: string | null; modelAllowlist?: string[] | null; expiresAt?: number | null },
): Promise<ApiKey> {
  return auditedChange(cc, async () => {
    const before = await getApiKey(cc.store, id);
    if (!before) throw notFound('api_key', id);
    if (before.revokedAt !== null) throw conflict('key_revoked', `Key ${id} is revoked; it cannot be changed.`);
    const after: ApiKey = { ...before };
    if (patch.label !== undefined) after.label = validateLabel(patch.label);
    if (patch.modelAllowlist !== undefined) after.modelAllowlist = patch.modelAllowlist === null ? null : validateAllowlist(patch.modelAllowlist);
    if (patch.expiresAt !== undefined) after.expiresAt = validateExpiry(patch.expiresAt);
    return {
      action: 'keys.update',
      target: id,
      before,
      after,
      current: () => getApiKey(cc.store, id),
      apply: async () => {
        await cc.store.db
          .updateTable('api_keys')
          .set({ name: after.label, model_allowlist: after.modelAllowlist === null ? null : JSON.stringify(after.modelAllowlist), expires_at: after.expiresAt })
          .where('id', '=', id)
          .execute();
        return after;
      },
    };
  });
}

/**
 * Revokes a key at once (audited as `keys.revoke`).
 * @throws GatewayError 404 `api_key_not_found`, 409 `key_revoked` (already revoked), 503 `audit_unavailable`
 */
export function revokeApiKey(cc: ChangeContext, id: string): Promise<ApiKey> {
  return auditedChange(cc, async () => {
    const before = await getApiKey(cc.store, id);
    if (!before) throw notFound('api_key', id);
    if (before.revokedAt !== null) throw conflict('key_revoked', `Key ${id} is already revoked.`);
    const after: ApiKey = { ...before, revokedAt: (cc.now ?? Date.now)() };
    return {
      action: 'keys.revoke',
      target: id,
      before,
      after,
      current: () => getApiKey(cc.store, id),
      apply: async () => {
        await cc.store.db.updateTable('api_keys').set({ revoked_at: after.revokedAt }).where('id', '=', id).where('revoked_at', 'is', null).execute();
        return after;
      },
    };
  });
}

/**
 * Rotates a key (audited as one `keys.rotate` entry, target = the old key): a new key for the same
 * tenant with the same label, allowlist and expiry, and the old key's expiry set to
 * `min(its expiry, now + overlapMs)` — the old key keeps working during the overlap, then stops.
 * @param overlapMs 0 … 30 days (ms); 0 = the old key stops at once
 * @returns the new key (plaintext once) and the old key as changed
 * @throws GatewayError 404 `api_key_not_found`, 409 `key_revoked` / `key_expired`, 400 `overlap`, 503 `audit_unavailable`
 */
export function rotateApiKey(cc: ChangeContext, id: string, overlapMs: number): Promise<IssuedKey & { previous: ApiKey }> {
  return auditedChange(cc, async () => {
    if (!Number.isSafeInteger(overlapMs) || overlapMs < 0 || overlapMs > MAX_OVERLAP_MS)
      throw invalidParam('overlap_seconds', `the overlap must be between 0 and ${MAX_OVERLAP_MS / 1000} seconds.`);
    const now = (cc.now ?? Date.now)();
    const old = await getApiKey(cc.store, id);
    if (!old) throw notFound('api_key', id);
    const st = keyState(old, now);
    if (st !== 'active') throw conflict(`key_${st}`, `Key ${id} is ${st}; only an active key can be rotated.`);
    const oldAfter: ApiKey = { ...old, expiresAt: Math.min(old.expiresAt ?? Infinity, now + overlapMs) };
    const secret = generateKey();
    const next: ApiKey = {
      id: randomId('key'),
      tenantId: old.tenantId,
      label: old.label,
      prefix: secret.slice(0, DISPLAY_PREFIX_LENGTH),
      modelAllowlist: old.modelAllowlist,
      expiresAt: old.expiresAt,
      createdAt: now,
      revokedAt: null,
      rotatedFrom: old.id,
    };
    return {
      action: 'keys.rotate',
      target: id,
      before: { key: old, successor: null },
      after: { key: oldAfter, successor: next },
      current: async () => ({ key: await getApiKey(cc.store, id), successor: await getApiKey(cc.store, next.id) }),
      apply: async () => {
        await cc.store.db.transaction().execute(async (trx) => {
          await trx.insertInto('api_keys').values(newKeyRow(next, digestKey(secret))).execute();
          await trx.updateTable('api_keys').set({ expires_at: oldAfter.expiresAt }).where('id', '=', id).execute();
          // Key-scoped limits and budgets move to the successor (the old key is metered as its
          // successor during the overlap, see KeyAuthenticator): rotating never escapes them.
          await trx.updateTable('rate_limits').set({ scope_id: next.id }).where('scope_kind', '=', 'key').where('scope_id', '=', id).execute();
          await trx.updateTable('budgets').set({ scope_id: next.id }).where('scope_kind', '=', 'key').where('scope_id', '=', id).execute();
        });
        return { apiKey: next, secret, previous: oldAfter };
      },
    };
  });
}
