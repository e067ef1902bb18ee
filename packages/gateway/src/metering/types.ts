/**
 * Metering vocabulary: scopes, limits and budgets. Units: times in ms since the Unix epoch, token
 * counts in tokens, money as integer micro-USD (1 USD = 1,000,000 micro-USD).
 */

/** What a limit or budget applies to: a whole tenant or one API key. */
export type ScopeKind = 'tenant' | 'key';

/** A limit/budget owner: `id` is the tenant id (kind `tenant`) or the API key id (kind `key`), never a key. */
export interface Scope {
  kind: ScopeKind;
  id: string;
}

/** Rate limits of a scope, counted over fixed 60 s windows. null = unlimited. */
export interface LimitSpec {
  /** Requests per minute (integer ≥ 0; 0 blocks every request), or null. */
  rpm: number | null;
  /** Tokens per minute, prompt + completion (integer ≥ 0), or null. */
  tpm: number | null;
}

/** What a budget counts: tokens (prompt + completion) or money in integer micro-USD. */
export type BudgetUnit = 'tokens' | 'usd_micros';

/** Budget period: UTC calendar day, UTC calendar month, or `fixed` (one allowance, never resets). */
export type BudgetPeriod = 'day' | 'month' | 'fixed';

/** A budget definition. */
export interface Budget {
  /** `bud_` + 16 base62 characters. */
  id: string;
  scope: Scope;
  unit: BudgetUnit;
  /** Allowance per period, in `unit` (integer ≥ 0). */
  amount: number;
  period: BudgetPeriod;
  /** ms since epoch. */
  createdAt: number;
}

/** A budget with its consumption in the current period. */
export interface BudgetState extends Budget {
  /** Start of the current period, ms since epoch (0 for `fixed`). */
  periodStart: number;
  /** Settled consumption this period, in `unit`. */
  used: number;
  /** Worst cases of admitted, not yet settled requests, in `unit`. */
  reserved: number;
}

/** Every {@link ScopeKind}. */
export const SCOPE_KINDS: readonly ScopeKind[] = ['tenant', 'key'];
/** Every {@link BudgetUnit}. */
export const BUDGET_UNITS: readonly BudgetUnit[] = ['tokens', 'usd_micros'];
/** Every {@link BudgetPeriod}. */
export const BUDGET_PERIODS: readonly BudgetPeriod[] = ['day', 'month', 'fixed'];

/** `kind:id`, the map/limiter key of a scope. */
export function scopeKey(s: Scope): string {
  return `${s.kind}:${s.id}`;
}

/**
 * @throws TypeError when `s` is not a scope with kind `tenant`/`key` and a non-empty id (≤ 256 chars)
 */
export function assertScope(s: Scope): void {
  if (!s || !SCOPE_KINDS.includes(s.kind)) throw new TypeError(`scope.kind must be one of ${SCOPE_KINDS.join(', ')}`);
  if (typeof s.id !== 'string' || s.id.length === 0 || s.id.length > 256) throw new TypeError('scope.id must be a non-empty string of at most 256 characters');
}
