/** Budget periods on UTC calendar boundaries. All times are ms since the Unix epoch. */
import type { BudgetPeriod } from './types.ts';

/** Start of the period containing `now`: UTC midnight (`day`), the 1st of the UTC month 00:00 (`month`), 0 (`fixed`). */
export function periodStart(period: BudgetPeriod, now: number): number {
  if (period === 'fixed') return 0;
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
