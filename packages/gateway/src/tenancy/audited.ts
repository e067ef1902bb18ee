/**
 * Audited admin changes: every change to tenants, keys, admins, limits and budgets is exactly one
 * `admin` entry in the transparency log (via {@link recordAdminAction}) when the audit log is on.
 *
 * ## Ordering: the entry is written first (write-ahead)
 * The journal commits on its own connection (the store worker thread in the server), so a change
 * and its entry cannot share one database transaction. We therefore:
 * 1. read the object's current state and compute the complete new state in memory — every random id,
 *    key digest and timestamp is decided here, and every validation that can fail is done here;
 * 2. write the entry (`before` / `after` = those two states, without secrets; recordAdminAction
 *    digests them) and wait until it is durably queued. **If that fails, nothing has been changed**
 *    and the caller gets 503 `audit_unavailable`;
 * 3. apply exactly the planned state.
 * Changes are serialised per store in this process (a promise chain), so no other admin change of
 * this process can slip between steps 1 and 3. The only way the log and the database can then
 * disagree is the database failing in step 3 (or a concurrent change from another process — the
 * CLI — in that window): the error is returned (500) and a second entry `<action>.failed` is
 * attempted, whose `after` is the state actually found, so the log stays honest.
 *
 * Why not "change, then entry, undo on failure": an undo can itself fail or overwrite a concurrent
 * change, and in between an unaudited state is visible (a revoked key would briefly stop working).
 *
 * Exception — objects whose id another module assigns (metering budgets): there the change comes
 * first, then the entry; if the entry fails the change is undone (the new budget is deleted) before
 * anyone has seen its id, and the caller gets 503. See {@link auditedCreate}.
 *
 * With the audit log off (`journal` null) the change is simply applied.
 */
import type { Journal } from '../audit/journal.ts';
import { recordAdminAction } from '../audit/admin.ts';
import type { Store } from '../store/db.ts';
import { auditUnavailable } from '../pipeline/audit-errors.ts';

/** Who changes what, and where the change is logged. */
export interface ChangeContext {
  store: Store;
  /** The journal, or null when the audit log is off (then nothing is logged). */
  journal: Journal | null;
  /** Actor recorded in the entry: `admin:<principal id>` (HTTP) or `cli:<OS user>` (CLI). */
  actor: string;
  /** Clock, ms since epoch (default `Date.now`). */
  now?: () => number;
  /** Called once after every applied change (e.g. `KeyAuthenticator.invalidate`). */
  onChanged?: () => void;
  /** Receives failures that are not returned to the caller (the `.failed` entry). */
  warn?: (msg: string, err: unknown) => void;
}

/** A change fully planned before anything is written. */
export interface PlannedChange<T> {
  /** e.g. `tenants.create`, `keys.rotate`. */
  action: string;
  /** Id of the object changed. */
  target: string;
  /** State before (no secrets), null if it did not exist. */
  before: unknown | null;
  /** State after (no secrets), null if it no longer exists. */
  after: unknown | null;
  /** Applies exactly the planned state. */
  apply(): Promise<T>;
  /** Reads the state actually stored (for the `.failed` entry); default: none (null). */
  current?(): Promise<unknown | null>;
}

const chains = new WeakMap<Store, Promise<unknown>>();

/** Runs `fn` after every earlier serialised change on `store` (in this process) has finished. */
export function serialised<T>(store: Store, fn: () => Promise<T>): Promise<T> {
  const prev = chains.get(store) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  chains.set(store, run.catch(() => undefined));
  return run;
}

/**
 * Plans, logs (write-ahead, see the module documentation) and applies one change.
 * @param plan reads current state and returns the planned change; may throw (400/404/409…) — then
 *   nothing is written
 * @throws whatever `plan` throws; GatewayError 503 `audit_unavailable` when the entry cannot be
 *   written (nothing changed); the database error when applying fails
 */
export function auditedChange<T>(cc: ChangeContext, plan: () => Promise<PlannedChange<T>>): Promise<T> {
  return serialised(cc.store, async () => {
    const p = await plan();
    const timeMs = (cc.now ?? Date.now)();
    if (cc.journal) {
      try {
        await recordAdminAction(cc.journal, { actor: cc.actor, action: p.action, target: p.target, before: p.before, after: p.after, timeMs });
      } catch (err) {
        cc.warn?.(`audit entry for ${p.action} ${p.target} could not be written; nothing was changed`, err);
        throw auditUnavailable();
      }
    }
    let result: T;
    try {
      result = await p.apply();
    } catch (err) {
      if (cc.journal) {
        const actual = await (p.current?.() ?? Promise.resolve(null)).catch(() => null);
        await recordAdminAction(cc.journal, { actor: cc.actor, action: `${p.action}.failed`, target: p.target, before: p.after, after: actual }).catch((e: unknown) =>
          cc.warn?.(`could not log ${p.action}.failed for ${p.target}`, e),
        );
      }
      throw err;
    }
    cc.onChanged?.();
    return result;
  });
}

/**
 * Change-first variant for objects whose id is assigned by `create` (metering budgets): creates,
 * writes the entry, and on entry failure undoes the creation before anyone saw the object.
 * @throws GatewayError 503 `audit_unavailable` (the object was deleted again), or `create`'s error
 */
export function auditedCreate<T>(
  cc: ChangeContext,
  a: { action: string; create: () => Promise<T>; target: (t: T) => string; state: (t: T) => unknown; undo: (t: T) => Promise<unknown> },
): Promise<T> {
  return serialised(cc.store, async () => {
    const made = await a.create();
    if (cc.journal) {
      try {
        await recordAdminAction(cc.journal, { actor: cc.actor, action: a.action, target: a.target(made), before: null, after: a.state(made) });
      } catch (err) {
        cc.warn?.(`audit entry for ${a.action} could not be written; undoing`, err);
        await a.undo(made).catch((e: unknown) => cc.warn?.(`undo of unaudited ${a.action} ${a.target(made)} failed`, e));
        throw auditUnavailable();
      }
    }
    cc.onChanged?.();
    return made;
  });
}
