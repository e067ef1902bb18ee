/**
 * Tenants (agencies): a unique short name, a display name and the attributes residency routing uses
 * — jurisdiction (ISO 3166-1 alpha-2) and data-classification ceiling. Times are ms since the epoch.
 */
import type { Selectable } from 'kysely';
import { randomId } from '../keys/keys.ts';
import type { Store } from '../store/db.ts';
import type { TenantsTable } from '../store/schema.ts';
import { auditedChange, type ChangeContext } from './audited.ts';
import { conflict, invalidParam, notFound } from './errors.ts';

/** A tenant as the services and the admin API see it (never secrets: tenants have none). */
export interface Tenant {
  /** `ten_` + 16 base62 characters. */
  id: string;
  /** Unique short name, 1–200 characters (the CLI's `--tenant NAME`). */
  name: string;
  /** Human display name, or null. */
  displayName: string | null;
  /** ISO 3166-1 alpha-2, upper case, or null. */
  jurisdiction: string | null;
  /** Data-classification ceiling label, or null. */
  classification: string | null;
  /** ms since epoch. */
  createdAt: number;
  /** ms since epoch of the last attribute change, or null. */
  updatedAt: number | null;
}

/** Settable attributes. `undefined` = leave unchanged (patch) / unset (create); `null` = clear. */
export interface TenantAttributesInput {
  displayName?: string | null;
  jurisdiction?: string | null;
  classification?: string | null;
}

const MAX_NAME = 200;
const CLASSIFICATION_RE = /^[A-Za-z0-9][A-Za-z0-9 _.:\/-]{0,63}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

let regionNames: Intl.DisplayNames | null | undefined;

/**
 * Validates a jurisdiction: two letters (normalised to upper case) that are an ISO 3166-1 alpha-2
 * region known to the runtime's ICU data (`Intl.DisplayNames`; format only if ICU is unavailable).
 * @throws GatewayError 400 `invalid_parameter` (param `jurisdiction`)
 */
export function normaliseJurisdiction(v: string): string {
  const code = typeof v === 'string' ? v.trim().toUpperCase() : '';
  if (!/^[A-Z]{2}$/.test(code)) throw invalidParam('jurisdiction', 'jurisdiction must be an ISO 3166-1 alpha-2 country code, e.g. "SG".');
  if (regionNames === undefined) {
    try {
      regionNames = new Intl.DisplayNames(['en'], { type: 'region', fallback: 'none' });
    } catch {
      regionNames = null;
    }
  }
  if (regionNames && (code === 'ZZ' || regionNames.of(code) === undefined))
    throw invalidParam('jurisdiction', `"${code}" is not an ISO 3166-1 alpha-2 country code.`);
  return code;
}

/**
 * Validates a classification label: 1–64 characters of letters, digits, space and `_ . : / -`,
 * starting with a letter or digit (e.g. `OFFICIAL`, `SECRET`, `restricted`).
 * @throws GatewayError 400 `invalid_parameter` (param `classification`)
 */
export function validateClassification(v: string): string {
  const s = typeof v === 'string' ? v.trim() : '';
  if (!CLASSIFICATION_RE.test(s)) throw invalidParam('classification', 'classification must be 1-64 characters: letters, digits, space and _ . : / -');
  return s;
}

/**
 * Validates a tenant name (trimmed, 1–200 characters, no control characters).
 * @throws GatewayError 400 `invalid_parameter` (param `name`)
 */
export function validateTenantName(v: string): string {
  const s = typeof v === 'string' ? v.trim() : '';
  if (s === '' || s.length > MAX_NAME || CONTROL_RE.test(s)) throw invalidParam('name', `name must be 1-${MAX_NAME} characters without control characters.`);
  return s;
}

function validateDisplayName(v: string): string {
  const s = typeof v === 'string' ? v.trim() : '';
  if (s === '' || s.length > MAX_NAME || CONTROL_RE.test(s)) throw invalidParam('display_name', `display_name must be 1-${MAX_NAME} characters without control characters.`);
  return s;
}

/** Maps a stored row to a {@link Tenant}. */
export function tenantFromRow(r: Selectable<TenantsTable>): Tenant {
  return {
    id: r.id,
    name: r.name,
    displayName: r.display_name ?? null,
    jurisdiction: r.jurisdiction ?? null,
    classification: r.classification ?? null,
    createdAt: Number(r.created_at),
    updatedAt: r.updated_at === null || r.updated_at === undefined ? null : Number(r.updated_at),
  };
}

/** The tenant with id `id`, or null. */
export async function getTenant(store: Store, id: string): Promise<Tenant | null> {
  const r = await store.db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst();
  return r ? tenantFromRow(r) : null;
}

/** The tenant whose id or (else) unique name is `ref`, or null (for the CLI). */
export async function findTenant(store: Store, ref: string): Promise<Tenant | null> {
  return (await getTenant(store, ref)) ?? (await (async () => {
    const r = await store.db.selectFrom('tenants').selectAll().where('name', '=', ref.trim()).executeTakeFirst();
    return r ? tenantFromRow(r) : null;
  })());
}

/**
 * Tenants, oldest first.
 * @param filter.ids only these ids (a tenant-scoped admin's own tenant)
 */
export async function listTenants(store: Store, filter: { ids?: string[] } = {}): Promise<Tenant[]> {
  if (filter.ids && filter.ids.length === 0) return [];
  let q = store.db.selectFrom('tenants').selectAll();
  if (filter.ids) q = q.where('id', 'in', filter.ids);
  const rows = await q.orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
  return rows.map(tenantFromRow);
}

function applyAttrs(t: Tenant, a: TenantAttributesInput): Tenant {
  const out = { ...t };
  if (a.displayName !== undefined) out.displayName = a.displayName === null ? null : validateDisplayName(a.displayName);
  if (a.jurisdiction !== undefined) out.jurisdiction = a.jurisdiction === null ? null : normaliseJurisdiction(a.jurisdiction);
  if (a.classification !== undefined) out.classification = a.classification === null ? null : validateClassification(a.classification);
  return out;
}

/**
 * Creates a tenant (audited as `tenants.create`).
 * @throws GatewayError 400 (invalid name/attributes), 409 `tenant_exists` (name taken), 503 `audit_unavailable`
 */
export function createTenant(cc: ChangeContext, input: { name: string } & TenantAttributesInput): Promise<Tenant> {
  return auditedChange(cc, async () => {
    const name = validateTenantName(input.name);
    const now = (cc.now ?? Date.now)();
    const t = applyAttrs({ id: randomId('ten'), name, displayName: null, jurisdiction: null, classification: null, createdAt: now, updatedAt: null }, input);
    const taken = await cc.store.db.selectFrom('tenants').select('id').where('name', '=', name).executeTakeFirst();
    if (taken) throw conflict('tenant_exists', `A tenant named "${name}" already exists.`);
    return {
      action: 'tenants.create',
      target: t.id,
      before: null,
      after: t,
      current: () => getTenant(cc.store, t.id),
      apply: async () => {
        await cc.store.db
          .insertInto('tenants')
          .values({ id: t.id, name: t.name, created_at: t.createdAt, display_name: t.displayName, jurisdiction: t.jurisdiction, classification: t.classification, updated_at: null })
          .execute();
        return t;
      },
    };
  });
}

/**
 * Changes a tenant's attributes (audited as `tenants.update`). The name is immutable.
 * @throws GatewayError 404 `tenant_not_found`, 400 (invalid attributes), 503 `audit_unavailable`
 */
export function updateTenant(cc: ChangeContext, id: string, patch: TenantAttributesInput): Promise<Tenant> {
  return auditedChange(cc, async () => {
    const before = await getTenant(cc.store, id);
    if (!before) throw notFound('tenant', id);
    const after = { ...applyAttrs(before, patch), updatedAt: (cc.now ?? Date.now)() };
    return {
      action: 'tenants.update',
      target: id,
      before,
      after,
      current: () => getTenant(cc.store, id),
      apply: async () => {
        await cc.store.db
          .updateTable('tenants')
          .set({ display_name: after.displayName, jurisdiction: after.jurisdiction, classification: after.classification, updated_at: after.updatedAt })
          .where('id', '=', id)
          .execute();
        return after;
      },
    };
  });
}
