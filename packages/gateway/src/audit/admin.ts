/**
 * Admin actions in the transparency log: `admin` records (see record.ts) appended to the journal
 * queue, e.g. by `sovra keys create` / `sovra keys revoke` and the server's bootstrap key.
 */
import { userInfo } from 'node:os';
import type { Store } from '../store/db.ts';
import { randomId } from '../keys/keys.ts';
import { adminRecord, encodeRecord, stateDigest } from './record.ts';
import type { Journal } from './journal.ts';

/** The state of an API key as hashed into admin records (the stored row: digest, never the key), or null if absent. */
export async function apiKeyState(store: Store, id: string): Promise<Record<string, unknown> | null> {
  const r = await store.db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirst();
  if (!r) return null;
  return {
    id: r.id,
    tenant_id: r.tenant_id,
    name: r.name,
    digest: r.digest,
    prefix: r.prefix,
    created_at: Number(r.created_at),
    revoked_at: r.revoked_at === null ? null : Number(r.revoked_at),
  };
}

/** `cli:<OS user>` (or `cli` when the user cannot be determined). */
export function cliActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/**
 * Appends one `admin` entry and waits until it is durably queued.
 * @param a.before / a.after the target's state before / after (hashed: SHA-256 of its canonical JSON), null if absent
 * @returns the entry id (`adm_…`)
 * @throws the journal's error
 */
export async function recordAdminAction(
  journal: Journal,
  a: { actor: string; action: string; target: string; before: unknown | null; after: unknown | null; timeMs?: number },
): Promise<string> {
  const id = randomId('adm');
  const rec = adminRecord({
    id,
    timeMs: a.timeMs ?? Date.now(),
    actor: a.actor,
    action: a.action,
    target: a.target,
    before: a.before === null ? null : stateDigest(a.before),
    after: a.after === null ? null : stateDigest(a.after),
  });
  await journal.write({ entry: { id, bytes: encodeRecord(rec) } });
  return id;
}
