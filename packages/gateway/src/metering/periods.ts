/** Budget periods on UTC calendar boundaries. All times are ms since the Unix epoch. */
import type { BudgetPeriod } from './types.ts';

/** The last period computed per kind: `[start, next start)` (most calls fall in the same period). */
const last = { day: [0, 0], month: [0, 0] } as Record<'day' | 'month', [number, number]>;

/** Start of the period containing `now`: UTC midnight (`day`), the 1st of the UTC month 00:00 (`month`), 0 (`fixed`). */
export function periodStart(period: BudgetPeriod, now: number): number {
  if (period === 'fixed') return 0;
  const memo = last[period];
  if (now >= memo[0] && now < memo[1]) return memo[0];
  const start = computeStart(period, now);
  last[period] = [start, nextPeriodStart(period, now)!];
  return start;
}

function computeStart(period: 'day' | 'month', now: number): number {
  const d = new Date(now);
  if (period === 'day') return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Start of the period after the one containing `now`; null for `fixed` (it never resets). */
export function nextPeriodStart(period: BudgetPeriod, now: number): number | null {
  if (period === 'fixed') return null;
  const d = new Date(now);
  if (period === 'day') return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}
