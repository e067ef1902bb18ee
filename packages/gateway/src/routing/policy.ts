/**
 * Residency policy: may this request's data go to that backend? (docs/routing.md)
 *
 * Pure functions over three facts:
 * - the **backend**: its jurisdiction (ISO 3166-1 alpha-2, optionally a region: "MY", "MY-14"; unset =
 *   unknown) and its clearance (the highest data classification it may receive);
 * - the **tenant's policy** ({@link EffectivePolicy}): allowed jurisdictions, default classification
 *   and transfer bases (exceptions for one destination on a recorded legal basis, until an expiry);
 * - the **request's classification**: the tenant's default, raised (never lowered) by the
 *   `x-sovra-data-class` header.
 *
 * Everything fails closed: an unknown backend jurisdiction is allowed only to a tenant allowed
 * everywhere (`*`); an unknown classification on a tenant is taken as the highest level; an expired
 * transfer basis allows nothing.
 */
import type { ResidencyConfig, ResidencyPolicyConfig } from '../config/schema.ts';
import { GatewayError } from '../http/errors.ts';

/** The request header with which a client raises its request's classification. */
export const DATA_CLASS_HEADER = 'x-sovra-data-class';

/** The ordered classification names (lowest first) of a configuration. */
export class ClassificationLadder {
  private readonly ranks: Map<string, number>;
  /** @param names lowest first, unique (config `residency.classifications`) */
  constructor(readonly names: readonly string[]) {
    this.ranks = new Map(names.map((n, i) => [n, i]));
  }
  /** Rank of a name (0 = lowest), or -1 when unknown. */
  rank(name: string): number {
    return this.ranks.get(name) ?? -1;
  }
  get highest(): number {
    return this.names.length - 1;
  }
  name(rank: number): string {
    return this.names[rank]!;
  }
}

/** A transfer basis, resolved. */
export interface TransferBasis {
  /** Destination jurisdiction ("SG", or a region "SG-01"). */
  destination: string;
  /** The legal basis, as configured. */
  basis: string;
  /** Expiry, ms since epoch; null = none. */
  expiresAt: number | null;
  /** Highest classification rank this basis covers. */
  maxClass: number;
}

/** A tenant's residency policy with every default resolved. */
export interface EffectivePolicy {
  /** Jurisdictions its data may go to; `'*'` = anywhere. */
  allowed: readonly string[] | '*';
  /** Rank of its default classification. */
  defaultClass: number;
  transfers: readonly TransferBasis[];
  /** Where each part came from (for `/admin/v1/routing` and the audit entry): e.g. `config:tenants.moh`. */
  source: string;
}

/** What residency needs of a backend. */
export interface BackendResidency {
  id: string;
  /** ISO 3166-1 alpha-2, optionally with a region; null = unknown. */
  jurisdiction: string | null;
  /** Rank of the highest classification it may receive. */
  clearance: number;
}

/** Why residency excludes a backend (machine codes, stable: they appear in audit entries). */
export type ResidencyExclusion =
  | 'jurisdiction_not_allowed'
  | 'jurisdiction_unknown'
  | 'transfer_basis_expired'
  | 'classification_exceeds_transfer_basis'
  | 'classification_exceeds_clearance';

/** The verdict on one backend. */
export type ResidencyVerdict =
  | { ok: true; transfer: TransferBasis | null }
  | { ok: false; code: ResidencyExclusion; detail: string };

/** True when `allowed` (a country "MY" or a region "MY-14") covers `jurisdiction` ("MY" covers "MY-14"). */
export function jurisdictionCovers(allowed: string, jurisdiction: string): boolean {
  if (allowed === jurisdiction) return true;
  return allowed.length === 2 && jurisdiction.length > 3 && jurisdiction.charCodeAt(2) === 45 /* - */ && jurisdiction.startsWith(allowed);
}

/**
 * Resolves a tenant's policy: the tenant's own entry in `residency.tenants` first, then its
 * attributes (jurisdiction → allowed list, classification → default class), then `residency.default`.
 * @param tenantName the tenant's name (null for requests without a tenant)
 * @param attrs the tenant's stored attributes (jurisdiction ISO code, classification name), null when unset
 */
export function resolvePolicy(
  residency: ResidencyConfig,
  ladder: ClassificationLadder,
  tenantName: string | null,
  attrs: { jurisdiction: string | null; classification: string | null } | undefined,
): EffectivePolicy {
  const own: ResidencyPolicyConfig | undefined = tenantName !== null ? residency.tenants[tenantName] : undefined;
  const def = residency.default;
  const sources: string[] = [];
  let allowed: readonly string[] | '*';
  if (own?.allowed_jurisdictions) {
    allowed = own.allowed_jurisdictions.includes('*') ? '*' : own.allowed_jurisdictions;
    sources.push(`allowed=config:tenants.${tenantName}`);
  } else if (attrs?.jurisdiction) {
    allowed = [attrs.jurisdiction];
    sources.push('allowed=tenant.jurisdiction');
  } else if (def.allowed_jurisdictions) {
    allowed = def.allowed_jurisdictions.includes('*') ? '*' : def.allowed_jurisdictions;
    sources.push('allowed=config:default');
  } else {
    allowed = '*';
    sources.push('allowed=unrestricted');
  }
  let defaultClass: number;
  const named = own?.default_classification ?? attrs?.classification ?? def.default_classification;
  if (named === undefined || named === null) defaultClass = 0;
  else {
    const r = ladder.rank(named);
    // An attribute naming a level this configuration does not know: fail closed (highest).
    defaultClass = r >= 0 ? r : ladder.highest;
  }
  const transfers = (own?.transfer_bases ?? (own ? [] : def.transfer_bases)).map((t) => ({
    destination: t.destination,
    basis: t.basis,
    expiresAt: t.expires ?? null,
    maxClass: t.max_classification !== undefined ? ladder.rank(t.max_classification) : defaultClass,
  }));
  return { allowed, defaultClass, transfers, source: sources.join(',') };
}

/**
 * The request's classification rank: the tenant's default, raised by the header (never lowered:
 * a lower value leaves the default).
 * @param header the `x-sovra-data-class` value, if sent
 * @throws GatewayError 400 `invalid_data_class` (param `x-sovra-data-class`) for a name not configured
 */
export function requestClass(ladder: ClassificationLadder, policy: EffectivePolicy, header: string | string[] | undefined): number {
  if (header === undefined) return policy.defaultClass;
  const v = (Array.isArray(header) ? header[0]! : header).trim();
  const r = ladder.rank(v);
  if (r < 0)
    throw new GatewayError(400, 'invalid_request_error', 'invalid_data_class', `The ${DATA_CLASS_HEADER} header must be one of: ${ladder.names.join(', ')}.`, DATA_CLASS_HEADER);
  return Math.max(r, policy.defaultClass);
}

/**
 * Decides whether data of classification `dataClass` under `policy` may go to `backend`.
 * Order: jurisdiction (allowed list, then transfer bases), then the backend's clearance.
 * @param now ms since epoch (transfer-basis expiry)
 */
export function checkResidency(policy: EffectivePolicy, backend: BackendResidency, dataClass: number, ladder: ClassificationLadder, now: number): ResidencyVerdict {
  let transfer: TransferBasis | null = null;
  const j = backend.jurisdiction;
  if (policy.allowed !== '*') {
    if (j === null) return { ok: false, code: 'jurisdiction_unknown', detail: 'the backend has no jurisdiction configured' };
    let inside = false;
    for (const a of policy.allowed)
      if (jurisdictionCovers(a, j)) {
        inside = true;
        break;
      }
    if (!inside) {
      let expired: TransferBasis | null = null;
      let tooHigh: TransferBasis | null = null;
      for (const t of policy.transfers) {
        if (!jurisdictionCovers(t.destination, j)) continue;
        if (t.expiresAt !== null && t.expiresAt < now) {
          expired = t;
          continue;
        }
        if (dataClass > t.maxClass) {
          tooHigh = t;
          continue;
        }
        transfer = t;
        break;
      }
      if (!transfer) {
        if (tooHigh)
          return { ok: false, code: 'classification_exceeds_transfer_basis', detail: `${ladder.name(dataClass)} data may not go to ${j} on the basis recorded (covers up to ${ladder.name(tooHigh.maxClass)})` };
        if (expired) return { ok: false, code: 'transfer_basis_expired', detail: `the transfer basis for ${j} expired ${new Date(expired.expiresAt!).toISOString()}` };
        return { ok: false, code: 'jurisdiction_not_allowed', detail: `${j} is not in the allowed jurisdictions (${policy.allowed.join(', ')})` };
      }
    }
  }
  if (dataClass > backend.clearance)
    return { ok: false, code: 'classification_exceeds_clearance', detail: `${ladder.name(dataClass)} data exceeds the backend's clearance (${ladder.name(backend.clearance)})` };
  return { ok: true, transfer };
}
