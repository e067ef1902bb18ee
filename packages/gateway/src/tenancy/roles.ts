/**
 * Admin roles and authorization.
 *
 * | role             | reads                                   | writes                               |
 * | ---------------- | --------------------------------------- | ------------------------------------ |
 * | `platform-admin` | everything                              | everything                           |
 * | `tenant-admin`   | its own tenant: tenant, keys, limits, budgets, usage | its tenant's keys, limits, budgets |
 * | `auditor`        | everything (or its tenant, if bound): usage, keys' metadata, limits, budgets | nothing |
 * | `member`         | — data plane only: an ordinary API key is never an admin key (401 on /admin) | — |
 *
 * No role can read a secret: no stored digest, admin digest or upstream credential is ever returned.
 * A tenant-scoped principal asking for another tenant's object gets 404 (not 403), so existence does
 * not leak; a read-only principal attempting a write gets 403 `insufficient_role` before any lookup.
 */
import { insufficientRole, notFound } from './errors.ts';

/** Admin roles (admin principals). `member` is the data-plane role and has no admin key. */
export const ADMIN_ROLES = ['platform-admin', 'tenant-admin', 'auditor'] as const;
/** One of {@link ADMIN_ROLES}. */
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** The part of an admin principal authorization looks at. */
export interface Actor {
  id: string;
  role: AdminRole;
  /** Tenant the principal is confined to; null = every tenant. */
  tenantId: string | null;
}

/** The tenant `a` is confined to, or null when it sees every tenant. */
export function tenantScope(a: Actor): string | null {
  return a.role === 'platform-admin' ? null : a.tenantId;
}

/** True when `a` may see objects of tenant `tenantId`. */
export function canSeeTenant(a: Actor, tenantId: string): boolean {
  const s = tenantScope(a);
  return s === null || s === tenantId;
}

/**
 * Throws unless `a` may see tenant `tenantId`'s objects.
 * @throws GatewayError 404 `<what>_not_found` (never 403: existence must not leak)
 */
export function requireTenantVisible(a: Actor, tenantId: string, what: string, id: string): void {
  if (!canSeeTenant(a, tenantId)) throw notFound(what, id);
}

/**
 * Throws unless `a` may make changes to tenant-level objects (keys, limits, budgets).
 * @throws GatewayError 403 `insufficient_role` (auditors)
 */
export function requireWriter(a: Actor): void {
  if (a.role !== 'platform-admin' && a.role !== 'tenant-admin') throw insufficientRole('Auditors have read-only access.');
}

/**
 * Throws unless `a` is a platform-admin (creating tenants, changing tenant attributes).
 * @throws GatewayError 403 `insufficient_role`
 */
export function requirePlatformAdmin(a: Actor): void {
  if (a.role !== 'platform-admin') throw insufficientRole('Only a platform-admin can do this.');
}
