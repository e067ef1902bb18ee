/**
 * Tenancy units on an in-memory store: key expiry in the authenticator (a cached result never
 * outlives the expiry), rotation with an injectable clock, the route stage's allowlist check,
 * tenant attribute validation, admin keys vs data-plane keys, and write-ahead audit semantics.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../src/store/db.ts';
import { KeyAuthenticator, looksLikeKey } from '../src/keys/keys.ts';
import { Journal } from '../src/audit/journal.ts';
import { GatewayError } from '../src/http/errors.ts';
import { assertModelAllowed } from '../src/routing/router.ts';
import {
  AdminAuthenticator,
  createAdmin,
  createApiKey,
  createTenant,
  getTenant,
  looksLikeAdminKey,
  normaliseJurisdiction,
  rotateApiKey,
  updateTenant,
  type ChangeContext,
} from '../src/tenancy/index.ts';

describe('tenancy units', () => {
  let store: Store;
  let now = 1_700_000_000_000;
  let cc: ChangeContext;
  before(async () => {
    store = await openStore('sqlite::memory:');
    await store.migrate();
    cc = { store, journal: null, actor: 'test', now: () => now };
  });
  after(async () => store.close());

  test('rotation with an injected clock: old key valid until now + overlap (even when cached), then rejected', async () => {
    const t = await createTenant(cc, { name: 'rot', jurisdiction: 'ke', classification: 'OFFICIAL' });
    const auth = new KeyAuthenticator(store, { cacheTtlMs: 60_000, now: () => now });
    const k = await createApiKey(cc, { tenantId: t.id, label: 'l', modelAllowlist: ['a'] });
    const p = await auth.authenticate(k.secret);
    assert.ok(p);
    assert.deepEqual(p.modelAllowlist, ['a']);
    assert.deepEqual(p.tenantAttributes, { jurisdiction: 'KE', classification: 'OFFICIAL' });
    const r = await rotateApiKey(cc, k.apiKey.id, 10_000);
    assert.equal(r.previous.expiresAt, now + 10_000);
    assert.equal(r.apiKey.rotatedFrom, k.apiKey.id);
    assert.ok(await auth.authenticate(k.secret), 'cached, within the overlap');
    auth.invalidate();
    now += 9_999;
    assert.ok(await auth.authenticate(k.secret), 'fresh lookup, within the overlap');
    now += 1;
    assert.equal(await auth.authenticate(k.secret), null, 'expired: the cached positive result is not used');
    assert.ok(await auth.authenticate(r.secret));
  });

  test('allowlist check of the route stage', () => {
    assert.doesNotThrow(() => assertModelAllowed({ modelAllowlist: null }, 'm'));
    assert.doesNotThrow(() => assertModelAllowed(undefined, 'm'));
    assert.doesNotThrow(() => assertModelAllowed({ modelAllowlist: ['m'] }, 'm'));
    assert.throws(
      () => assertModelAllowed({ modelAllowlist: ['x'] }, 'm'),
      (e: unknown) => e instanceof GatewayError && e.status === 403 && e.code === 'model_not_allowed' && e.param === 'model',
    );
    assert.throws(() => assertModelAllowed({ modelAllowlist: [] }, 'm'), /not allowed/);
  });

  test('jurisdiction validation and tenant updates', async () => {
    assert.equal(normaliseJurisdiction('sg'), 'SG');
    for (const bad of ['XX', 'ZZ', 'SGP', '1A', '']) assert.throws(() => normaliseJurisdiction(bad), /ISO 3166-1/);
    const t = await createTenant(cc, { name: 'upd' });
    const u = await updateTenant(cc, t.id, { jurisdiction: 'fr', displayName: 'Upd' });
    assert.equal(u.jurisdiction, 'FR');
    assert.equal((await getTenant(store, t.id))?.displayName, 'Upd');
    const c = await updateTenant(cc, t.id, { jurisdiction: null });
    assert.equal(c.jurisdiction, null);
    await assert.rejects(createTenant(cc, { name: 'upd' }), (e: unknown) => e instanceof GatewayError && e.status === 409);
  });

  test('admin keys and data-plane keys are distinct formats', async () => {
    const t = await createTenant(cc, { name: 'adm' });
    const a = await createAdmin(cc, { role: 'tenant-admin', tenantId: t.id });
    assert.ok(looksLikeAdminKey(a.secret) && !looksLikeKey(a.secret));
    const k = await createApiKey(cc, { tenantId: t.id });
    assert.ok(looksLikeKey(k.secret) && !looksLikeAdminKey(k.secret));
    const admins = new AdminAuthenticator(store);
    assert.equal((await admins.authenticate(a.secret))?.id, a.admin.id);
    assert.equal(await admins.authenticate(k.secret), null);
    assert.equal(await new KeyAuthenticator(store, { cacheTtlMs: 0 }).authenticate(a.secret), null);
    await assert.rejects(createAdmin(cc, { role: 'platform-admin', tenantId: t.id }), /not bound/);
    await assert.rejects(createAdmin(cc, { role: 'member' }), /role must be one of/);
  });

  test('write-ahead audit: when the entry cannot be written nothing changes (503 audit_unavailable)', async () => {
    const journal = new Journal(store);
    await journal.close();
    const broken: ChangeContext = { ...cc, journal };
    await assert.rejects(createTenant(broken, { name: 'never' }), (e: unknown) => e instanceof GatewayError && e.status === 503 && e.code === 'audit_unavailable');
    assert.equal(await store.db.selectFrom('tenants').select('id').where('name', '=', 'never').executeTakeFirst(), undefined);
    // with a working journal: one queued entry per change
    const j2 = new Journal(store);
    const n0 = (await store.db.selectFrom('audit_queue').select('seq').execute()).length;
    await createTenant({ ...cc, journal: j2 }, { name: 'logged' });
    await j2.close();
    assert.equal((await store.db.selectFrom('audit_queue').select('seq').execute()).length, n0 + 1);
  });
});
