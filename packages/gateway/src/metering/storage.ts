/**
 * Limit and budget definitions in the store (tables `rate_limits`, `budgets`, `budget_usage`,
 * migration `0004_metering`), through Kysely on SQLite and PostgreSQL. These are the admin-side
 * reads and writes; the request path (reserve / settle) lives in `ledger.ts`.
 *
 * Changes take effect on a running {@link Metering} after `invalidate()` (same process) or within
 * its cache lifetime (2 s, other processes).
 */
import { randomId } from '../keys/keys.ts';
import type { Store } from '../store/db.ts';
import type { BudgetsTable } from '../store/schema.ts';
import { periodStart } from './periods.ts';
import {
  BUDGET_PERIODS, BUDGET_UNITS, assertScope, scopeKey,
  type Budget, type BudgetPeriod, type BudgetState, type BudgetUnit, type LimitSpec, type Scope, type ScopeKind,
} from './types.ts';

const NO_LIMITS: LimitSpec = Object.freeze({ rpm: null, tpm: null }) as LimitSpec;

function checkLimit(name: string, v: number | null): void {
  if (v === null) return;
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be null or an integer >= 0`);
}

/**
 * Sets (replaces) the rate limits of a scope. `{ rpm: null, tpm: null }` removes them (unlimited).
 * @returns the limits before and after the change
 * @throws TypeError for a malformed scope; RangeError when rpm/tpm is neither null nor an integer ≥ 0
 */
export async function setLimits(store: Store, scope: Scope, spec: LimitSpec): Promise<{ before: LimitSpec; after: LimitSpec }> {
  assertScope(scope);
  checkLimit('rpm', spec.rpm);
  checkLimit('tpm', spec.tpm);
  const after: LimitSpec = { rpm: spec.rpm, tpm: spec.tpm };
  return store.db.transaction().execute(async (trx) => {
    const row = await trx
      .selectFrom('rate_limits')
      .select(['rpm', 'tpm'])
      .where('scope_kind', '=', scope.kind)
      .where('scope_id', '=', scope.id)
      .executeTakeFirst();
    const before: LimitSpec = row ? { rpm: num(row.rpm), tpm: num(row.tpm) } : { ...NO_LIMITS };
    if (after.rpm === null && after.tpm === null) {
      await trx.deleteFrom('rate_limits').where('scope_kind', '=', scope.kind).where('scope_id', '=', scope.id).execute();
    } else {
      await trx
        .insertInto('rate_limits')
        .values({ scope_kind: scope.kind, scope_id: scope.id, rpm: after.rpm, tpm: after.tpm, updated_at: Date.now() })
        .onConflict((oc) => oc.columns(['scope_kind', 'scope_id']).doUpdateSet({ rpm: after.rpm, tpm: after.tpm, updated_at: Date.now() }))
        .execute();
    }
    return { before, after };
  });
}

/** The rate limits of a scope (`{ rpm: null, tpm: null }` when none are set). @throws TypeError for a malformed scope */
export async function getLimits(store: Store, scope: Scope): Promise<LimitSpec> {
  assertScope(scope);
  const row = await store.db
    .selectFrom('rate_limits')
    .select(['rpm', 'tpm'])
    .where('scope_kind', '=', scope.kind)
    .where('scope_id', '=', scope.id)
    .executeTakeFirst();
  return row ? { rpm: num(row.rpm), tpm: num(row.tpm) } : { ...NO_LIMITS };
}

/**
 * Scopes that have limits, ordered by kind then id.
 * - no filter: all of them;
 * - `tenantId`: that tenant's own limits and those of every key of the tenant (by `api_keys.tenant_id`);
 * - `keyIds`: the limits of these keys;
 * - both: the union (what applies to that tenant and those keys).
 */
export async function listLimits(
  store: Store,
  filter: { tenantId?: string; keyIds?: string[] } = {},
): Promise<Array<{ scope: Scope } & LimitSpec>> {
  let q = store.db.selectFrom('rate_limits').select(['scope_kind', 'scope_id', 'rpm', 'tpm']);
  const { tenantId, keyIds } = filter;
  if (tenantId !== undefined || keyIds !== undefined) {
    q = q.where((eb) => {
      const ors = [];
      if (tenantId !== undefined) {
        ors.push(eb.and([eb('scope_kind', '=', 'tenant'), eb('scope_id', '=', tenantId)]));
        ors.push(
          eb.and([
            eb('scope_kind', '=', 'key'),
            eb('scope_id', 'in', eb.selectFrom('api_keys').select('api_keys.id').where('api_keys.tenant_id', '=', tenantId)),
          ]),
        );
      }
      if (keyIds !== undefined && keyIds.length > 0) {
        ors.push(eb.and([eb('scope_kind', '=', 'key'), eb('scope_id', 'in', keyIds)]));
      }
      return ors.length > 0 ? eb.or(ors) : eb.lit(false);
    });
  }
  const rows = await q.orderBy('scope_kind').orderBy('scope_id').execute();
  return rows.map((r) => ({ scope: { kind: r.scope_kind as ScopeKind, id: r.scope_id }, rpm: num(r.rpm), tpm: num(r.tpm) }));
}

/**
 * Creates a budget (it starts from zero in the current period).
 * @param b `amount` in `unit` (tokens, or micro-USD for `usd_micros`), an integer ≥ 0 (0 blocks every request)
 * @throws TypeError for a malformed scope, unit or period; RangeError for a bad amount
 */
export async function createBudget(
  store: Store,
  b: { scope: Scope; unit: BudgetUnit; amount: number; period: BudgetPeriod },
): Promise<Budget> {
  assertScope(b.scope);
  if (!BUDGET_UNITS.includes(b.unit)) throw new TypeError(`unit must be one of ${BUDGET_UNITS.join(', ')}`);
  if (!BUDGET_PERIODS.includes(b.period)) throw new TypeError(`period must be one of ${BUDGET_PERIODS.join(', ')}`);
  if (!Number.isSafeInteger(b.amount) || b.amount < 0) throw new RangeError('amount must be an integer >= 0');
  const budget: Budget = {
    id: randomId('bud'),
    scope: { kind: b.scope.kind, id: b.scope.id },
    unit: b.unit,
    amount: b.amount,
    period: b.period,
    createdAt: Date.now(),
  };
  await store.db
    .insertInto('budgets')
    .values({
      id: budget.id, scope_kind: budget.scope.kind, scope_id: budget.scope.id, unit: budget.unit,
      amount: budget.amount, period: budget.period, created_at: budget.createdAt,
    })
    .execute();
  return budget;
}

/**
 * Deletes a budget and its usage rows. Requests admitted against it settle harmlessly (no row left).
 * @returns the deleted budget, or null when there was none with this id
 */
export async function deleteBudget(store: Store, id: string): Promise<Budget | null> {
  return store.db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom('budgets').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) return null;
    await trx.deleteFrom('budget_usage').where('budget_id', '=', id).execute();
    await trx.deleteFrom('budgets').where('id', '=', id).execute();
    return toBudget(row);
  });
}

/**
 * Budgets with their consumption in the period containing `now` (ms since epoch, default
 * `Date.now()`), ordered by scope kind, scope id, then id. `filter.scopes`: only budgets of these
 * scopes (an empty array gives none).
 */
export async function listBudgets(store: Store, filter: { scopes?: Scope[] } = {}, now: number = Date.now()): Promise<BudgetState[]> {
  const budgets = await loadBudgets(store, filter.scopes);
  if (budgets.length === 0) return [];
  const starts = [...new Set(budgets.map((b) => periodStart(b.period, now)))];
  const usage = new Map<string, { used: number; reserved: number }>();
  const ids = budgets.map((b) => b.id);
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await store.db
      .selectFrom('budget_usage')
      .select(['budget_id', 'period_start', 'used', 'reserved'])
      .where('budget_id', 'in', ids.slice(i, i + 500))
      .where('period_start', 'in', starts)
      .execute();
    for (const r of rows) usage.set(`${r.budget_id}@${Number(r.period_start)}`, { used: Number(r.used), reserved: Number(r.reserved) });
  }
  return budgets.map((b) => {
    const start = periodStart(b.period, now);
    const u = usage.get(`${b.id}@${start}`);
    return { ...b, periodStart: start, used: u?.used ?? 0, reserved: u?.reserved ?? 0 };
  });
}

/** Budget definitions, optionally of some scopes only; ordered by scope kind, scope id, id. */
export async function loadBudgets(store: Store, scopes?: Scope[]): Promise<Budget[]> {
  if (scopes !== undefined && scopes.length === 0) return [];
  let q = store.db.selectFrom('budgets').selectAll();
  if (scopes !== undefined) {
    const uniq = [...new Map(scopes.map((s) => [scopeKey(s), s])).values()];
    q = q.where((eb) => eb.or(uniq.map((s) => eb.and([eb('scope_kind', '=', s.kind), eb('scope_id', '=', s.id)]))));
  }
  const rows = await q.orderBy('scope_kind').orderBy('scope_id').orderBy('id').execute();
  return rows.map(toBudget);
}

/** Rate limits of several scopes at once (scopes without a row are absent from the map). */
export async function loadLimits(store: Store, scopes: Scope[]): Promise<Map<string, LimitSpec>> {
  const out = new Map<string, LimitSpec>();
  if (scopes.length === 0) return out;
  const rows = await store.db
    .selectFrom('rate_limits')
    .select(['scope_kind', 'scope_id', 'rpm', 'tpm'])
    .where((eb) => eb.or(scopes.map((s) => eb.and([eb('scope_kind', '=', s.kind), eb('scope_id', '=', s.id)]))))
    .execute();
  for (const r of rows) out.set(`${r.scope_kind}:${r.scope_id}`, { rpm: num(r.rpm), tpm: num(r.tpm) });
  return out;
}

function toBudget(r: BudgetsTable): Budget {
  return {
    id: r.id,
    scope: { kind: r.scope_kind as ScopeKind, id: r.scope_id },
    unit: r.unit as BudgetUnit,
    amount: Number(r.amount),
    period: r.period as BudgetPeriod,
    createdAt: Number(r.created_at),
  };
}

const num = (v: number | string | null): number | null => (v === null ? null : Number(v));
