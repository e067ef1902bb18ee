/**
 * Admin principals and their keys. An admin key looks like `sk-sovra-admin-` + 32 base62 characters
 * (≈190 bits) — a format distinct from data-plane keys (`sk-sovra-` + 32 base62), so neither kind is
 * ever accepted where the other is expected. Only the key's SHA-256 digest and a display prefix are
 * stored. Admins are created and revoked offline with the CLI (the root of trust); the admin API
 * only authenticates them. Times are ms since the epoch.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Selectable } from 'kysely';
import { digestKey, randomBase62, randomId } from '../keys/keys.ts';
import type { Store } from '../store/db.ts';
import type { AdminsTable } from '../store/schema.ts';
import { auditedChange, type ChangeContext } from './audited.ts';
import { conflict, invalidParam, notFound } from './errors.ts';
import { ADMIN_ROLES, type AdminRole } from './roles.ts';

/** Every admin key starts with this. */
export const ADMIN_KEY_PREFIX = 'sk-sovra-admin-';
/** Total admin key length (47). */
export const ADMIN_KEY_LENGTH = ADMIN_KEY_PREFIX.length + 32;
/** Stored, displayable prefix length (`sk-sovra-admin-AbCd`). */
export const ADMIN_DISPLAY_PREFIX_LENGTH = ADMIN_KEY_PREFIX.length + 4;
const ADMIN_KEY_RE = /^sk-sovra-admin-[0-9A-Za-z]{32}$/;

/** A new admin key: `sk-sovra-admin-` + 32 base62 characters. */
export function generateAdminKey(): string {
  return ADMIN_KEY_PREFIX + randomBase62(32);
}

/** True if `s` has the shape of an admin key (says nothing about validity). */
export function looksLikeAdminKey(s: string): boolean {
  return ADMIN_KEY_RE.test(s);
}

/** An admin principal (never its key or digest). */
export interface AdminPrincipal {
  /** `adp_` + 16 base62 characters; audit actor `admin:<id>`. */
  id: string;
  name: string | null;
  role: AdminRole;
  /** The tenant a `tenant-admin` (always) or an `auditor` (optionally) is confined to; null = all. */
  tenantId: string | null;
  /** First 19 characters of the admin key, safe to display. */
  prefix: string;
  createdAt: number;
  revokedAt: number | null;
}

/** Maps a stored row to an {@link AdminPrincipal} (drops the digest). */
export function adminFromRow(r: Omit<Selectable<AdminsTable>, 'digest'>): AdminPrincipal {
  return {
    id: r.id,
    name: r.name,
    role: r.role as AdminRole,
    tenantId: r.tenant_id,
    prefix: r.prefix,
    createdAt: Number(r.created_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
  };
}

const COLUMNS = ['id', 'name', 'role', 'tenant_id', 'prefix', 'created_at', 'revoked_at'] as const;

/** The admin with id `id`, or null. */
export async function getAdmin(store: Store, id: string): Promise<AdminPrincipal | null> {
  const r = await store.db.selectFrom('admins').select(COLUMNS).where('id', '=', id).executeTakeFirst();
  return r ? adminFromRow(r) : null;
}

/** Every admin, revoked ones included, oldest first. */
export async function listAdmins(store: Store): Promise<AdminPrincipal[]> {
  const rows = await store.db.selectFrom('admins').select(COLUMNS).orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
  return rows.map(adminFromRow);
}

/**
 * Creates an admin principal and its key (audited as `admins.create`).
 * @param input.role `platform-admin` (no tenant), `tenant-admin` (tenant required) or `auditor`
 *   (tenant optional: confines it to that tenant)
 * @returns the admin and the plaintext admin key (show it once)
 * @throws GatewayError 400 (role / tenant combination, name), 404 `tenant_not_found`, 503 `audit_unavailable`
 */
export function createAdmin(cc: ChangeContext, input: { role: string; tenantId?: string | null; name?: string | null }): Promise<{ admin: AdminPrincipal; secret: string }> {
  return auditedChange(cc, async () => {
    if (!(ADMIN_ROLES as readonly string[]).includes(input.role)) throw invalidParam('role', `role must be one of ${ADMIN_ROLES.join(', ')}.`);
    const role = input.role as AdminRole;
    const tenantId = input.tenantId ?? null;
    if (role === 'tenant-admin' && tenantId === null) throw invalidParam('tenant', 'a tenant-admin needs a tenant.');
    if (role === 'platform-admin' && tenantId !== null) throw invalidParam('tenant', 'a platform-admin is not bound to a tenant.');
    if (tenantId !== null && !(await cc.store.db.selectFrom('tenants').select('id').where('id', '=', tenantId).executeTakeFirst())) throw notFound('tenant', tenantId);
    const name = input.name === undefined || input.name === null || input.name.trim() === '' ? null : input.name.trim();
    if (name !== null && (name.length > 200 || /[\u0000-\u001f\u007f]/.test(name))) throw invalidParam('name', 'name must be at most 200 characters without control characters.');
    const secret = generateAdminKey();
    const admin: AdminPrincipal = {
      id: randomId('adp'),
      name,
      role,
      tenantId,
      prefix: secret.slice(0, ADMIN_DISPLAY_PREFIX_LENGTH),
      createdAt: (cc.now ?? Date.now)(),
      revokedAt: null,
    };
    return {
      action: 'admins.create',
      target: admin.id,
      before: null,
      after: admin,
      current: () => getAdmin(cc.store, admin.id),
      apply: async () => {
        await cc.store.db
          .insertInto('admins')
          .values({ id: admin.id, name, role, tenant_id: tenantId, digest: digestKey(secret), prefix: admin.prefix, created_at: admin.createdAt, revoked_at: null })
          .execute();
        return { admin, secret };
      },
    };
  });
}

/**
 * Revokes an admin (audited as `admins.revoke`); its key stops working at once (admin keys are not
 * cached).
 * @throws GatewayError 404 `admin_not_found`, 409 `admin_revoked`, 503 `audit_unavailable`
 */
export function revokeAdmin(cc: ChangeContext, id: string): Promise<AdminPrincipal> {
  return auditedChange(cc, async () => {
    const before = await getAdmin(cc.store, id);
    if (!before) throw notFound('admin', id);
    if (before.revokedAt !== null) throw conflict('admin_revoked', `Admin ${id} is already revoked.`);
    const after = { ...before, revokedAt: (cc.now ?? Date.now)() };
    return {
      action: 'admins.revoke',
      target: id,
      before,
      after,
      current: () => getAdmin(cc.store, id),
      apply: async () => {
        await cc.store.db.updateTable('admins').set({ revoked_at: after.revokedAt }).where('id', '=', id).where('revoked_at', 'is', null).execute();
        return after;
      },
    };
  });
}

/**
 * Authenticates admin keys against the store. No cache: admin calls are rare and a revocation must
 * take effect at once. Digests are compared in constant time; the key is never logged or kept.
 */
export class AdminAuthenticator {
  constructor(private readonly store: Store) {}

  /**
   * The admin behind `presented`, or null if it is not an admin key, unknown or revoked.
   * @throws the database error (never containing the key)
   */
  async authenticate(presented: string): Promise<AdminPrincipal | null> {
    if (typeof presented !== 'string' || !ADMIN_KEY_RE.test(presented)) return null;
    const digest = digestKey(presented);
    const row = await this.store.db.selectFrom('admins').select([...COLUMNS, 'digest']).where('digest', '=', digest).executeTakeFirst();
    if (!row) return null;
    const a = Buffer.from(digest, 'hex');
    const b = Buffer.from(row.digest, 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b)) return null;
    if (row.revoked_at !== null) return null;
    if (!(ADMIN_ROLES as readonly string[]).includes(row.role)) return null;
    return adminFromRow(row);
  }
}
