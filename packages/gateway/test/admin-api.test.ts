/**
 * The admin API end to end on a real gateway (SQLite, audit log on): bootstrap of the first
 * platform-admin with the CLI, the role matrix (platform-admin / tenant-admin / auditor / data-plane
 * key), tenants, key lifecycle (allowlist 403 and rotation overlap through the real data plane),
 * limits, budgets, usage, the OpenAPI document, one audit entry per change, no digest in any
 * response, and 503 `audit_unavailable` leaving nothing changed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chatCompletion, jsonResponse, startMockUpstream, type MockUpstream } from './helpers/mock-upstream.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { allEntries, runSovra, writeCliConfig } from './helpers/audit.ts';
import { decodeRecord, type AdminRecord } from '../src/audit/record.ts';
import { createAdmin, createTenant } from '../src/tenancy/index.ts';
import { ADMIN_PATHS } from '../src/http/routes/admin.ts';

interface Res {
  status: number;
  text: string;
  json: any;
  headers: Headers;
}

describe('admin API', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  let work: string;
  let cliCfg: string;
  let root: string; // platform-admin key (from the CLI)
  let rootId: string;
  let tadm: string; // tenant-admin of tenant A
  let tadmId: string;
  let aud: string; // auditor
  let audId: string;
  let tenantA: string;
  let tenantB: string;
  const bodies: string[] = [];
  /** Successful admin-API changes: [actor, action, target]. */
  const changes: Array<[string, string, string]> = [];

  const api = async (method: string, path: string, key: string | null, body?: unknown): Promise<Res> => {
    const headers: Record<string, string> = {};
    if (key !== null) headers['authorization'] = `Bearer ${key}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(`${g.origin}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await r.text();
    bodies.push(text);
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {
      /* csv */
    }
    return { status: r.status, text, json, headers: r.headers };
  };
  const expectError = (r: Res, status: number, code: string) => {
    assert.equal(r.status, status, r.text);
    assert.deepEqual(Object.keys(r.json.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(r.json.error.code, code, r.text);
  };
  const models = (key: string) => fetch(`${g.baseURL}/models`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status);
  const chat = async (key: string) => {
    const r = await fetch(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }] }),
    });
    return { status: r.status, json: (await r.json()) as any };
  };

  before(async () => {
    mock = await startMockUpstream();
    // agency-a (jurisdiction SG, classification OFFICIAL) is served by the MY mock on a recorded basis.
    const residency = {
      classifications: ['OFFICIAL', 'RESTRICTED'],
      tenants: { 'agency-a': { allowed_jurisdictions: ['SG'], transfer_bases: [{ destination: 'MY', basis: 'test agreement' }] } },
    };
    g = await startGateway({ config: { ...mockConfig(mock.url, { max_classification: 'RESTRICTED' }, { residency }), audit: { checkpoint_interval_ms: 100 } }, env: MOCK_ENV });
    work = mkdtempSync(join(g.dir, 'work-'));
    cliCfg = writeCliConfig(g.dir, g.database);
    // The offline root of trust: the first platform-admin comes from the CLI.
    const c = await runSovra(work, ['admins', 'create', '--role', 'platform-admin', '--name', 'root', '--config', cliCfg]);
    assert.equal(c.code, 0, c.err);
    root = /(sk-sovra-admin-[0-9A-Za-z]{32})/.exec(c.out)![1]!;
    rootId = /(adp_[0-9A-Za-z]{16})/.exec(c.out)![1]!;
  });
  after(async () => {
    await g?.close();
    await mock?.close();
  });

  test('authentication: no key, data-plane key and malformed header get 401; admin keys are not data-plane keys', async () => {
    expectError(await api('GET', '/admin/v1/whoami', null), 401, 'missing_admin_key');
    expectError(await api('GET', '/admin/v1/whoami', g.key), 401, 'invalid_admin_key');
    expectError(await api('GET', '/admin/v1/tenants', g.key), 401, 'invalid_admin_key');
    expectError(await api('POST', '/admin/v1/keys', g.key, { tenant_id: 'x' }), 401, 'invalid_admin_key');
    expectError(await api('GET', '/admin/v1/whoami', root.slice(0, -1) + (root.endsWith('a') ? 'b' : 'a')), 401, 'invalid_admin_key');
    assert.equal(await models(root), 401, 'an admin key is not accepted on /v1');
    assert.equal(await models(g.key), 200);
    const w = await api('GET', '/admin/v1/whoami', root);
    assert.equal(w.status, 200, w.text);
    assert.equal(w.json.role, 'platform-admin');
    assert.equal(w.json.id, rootId);
    assert.equal(w.json.name, 'root');
  });

  test('tenants: create with attributes, validation, conflicts, patch', async () => {
    const a = await api('POST', '/admin/v1/tenants', root, { name: 'agency-a', display_name: 'Agency A', jurisdiction: 'sg', classification: 'OFFICIAL' });
    assert.equal(a.status, 201, a.text);
    assert.equal(a.json.jurisdiction, 'SG');
    assert.equal(a.json.classification, 'OFFICIAL');
    tenantA = a.json.id;
    changes.push([`admin:${rootId}`, 'tenants.create', tenantA]);
    const b = await api('POST', '/admin/v1/tenants', root, { name: 'agency-b' });
    assert.equal(b.status, 201, b.text);
    tenantB = b.json.id;
    changes.push([`admin:${rootId}`, 'tenants.create', tenantB]);

    expectError(await api('POST', '/admin/v1/tenants', root, { name: 'agency-a' }), 409, 'tenant_exists');
    const badJ = await api('POST', '/admin/v1/tenants', root, { name: 'x1', jurisdiction: 'XX' });
    expectError(badJ, 400, 'invalid_parameter');
    assert.equal(badJ.json.error.param, 'jurisdiction');
    const unk = await api('POST', '/admin/v1/tenants', root, { name: 'x2', jurisdictoin: 'SG' });
    expectError(unk, 400, 'unknown_parameter');
    assert.equal(unk.json.error.param, 'jurisdictoin');
    const miss = await api('POST', '/admin/v1/tenants', root, {});
    expectError(miss, 400, 'invalid_parameter');
    assert.equal(miss.json.error.param, 'name');
    const badJson = await fetch(`${g.origin}/admin/v1/tenants`, { method: 'POST', headers: { authorization: `Bearer ${root}`, 'content-type': 'application/json' }, body: '{nope' });
    assert.equal(badJson.status, 400);

    const p = await api('PATCH', `/admin/v1/tenants/${tenantB}`, root, { jurisdiction: 'MY', classification: 'RESTRICTED' });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.jurisdiction, 'MY');
    changes.push([`admin:${rootId}`, 'tenants.update', tenantB]);
    expectError(await api('GET', '/admin/v1/tenants/ten_nope', root), 404, 'tenant_not_found');
    const l = await api('GET', '/admin/v1/tenants', root);
    assert.ok(l.json.data.some((t: any) => t.id === tenantA) && l.json.data.some((t: any) => t.id === tenantB));

    // tenant-admin of A and an auditor, made with the service (as the CLI does)
    const cc = { store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' };
    const ta = await createAdmin(cc, { role: 'tenant-admin', tenantId: tenantA, name: 'ta' });
    tadm = ta.secret;
    tadmId = ta.admin.id;
    const au = await createAdmin(cc, { role: 'auditor', name: 'aud' });
    aud = au.secret;
    audId = au.admin.id;
  });

  test('role matrix: tenant-admin sees only its tenant (others 404); auditor is read-only (403)', async () => {
    // tenant-admin
    const w = await api('GET', '/admin/v1/whoami', tadm);
    assert.equal(w.json.role, 'tenant-admin');
    assert.equal(w.json.tenant_id, tenantA);
    const lt = await api('GET', '/admin/v1/tenants', tadm);
    assert.deepEqual(lt.json.data.map((t: any) => t.id), [tenantA]);
    expectError(await api('GET', `/admin/v1/tenants/${tenantB}`, tadm), 404, 'tenant_not_found');
    expectError(await api('GET', `/admin/v1/keys?tenant_id=${tenantB}`, tadm), 404, 'tenant_not_found');
    expectError(await api('POST', '/admin/v1/keys', tadm, { tenant_id: tenantB }), 404, 'tenant_not_found');
    expectError(await api('PATCH', `/admin/v1/tenants/${tenantA}`, tadm, { jurisdiction: 'FR' }), 403, 'insufficient_role');
    expectError(await api('POST', '/admin/v1/tenants', tadm, { name: 'sneaky' }), 403, 'insufficient_role');
    expectError(await api('GET', `/admin/v1/keys/${g.keyId}`, tadm), 404, 'api_key_not_found'); // tenant "test"
    expectError(await api('POST', `/admin/v1/keys/${g.keyId}/revoke`, tadm), 404, 'api_key_not_found');
    expectError(await api('GET', `/admin/v1/usage?key_id=${g.keyId}`, tadm), 404, 'api_key_not_found');
    expectError(await api('GET', `/admin/v1/usage?tenant_id=${tenantB}`, tadm), 404, 'tenant_not_found');
    expectError(await api('PUT', `/admin/v1/tenants/${tenantB}/limits`, tadm, { rpm: 1, tpm: null }), 404, 'tenant_not_found');

    const k = await api('POST', '/admin/v1/keys', tadm, { label: 'ta-key' });
    assert.equal(k.status, 201, k.text);
    assert.equal(k.json.tenant_id, tenantA, "a tenant-admin's key defaults to its own tenant");
    changes.push([`admin:${tadmId}`, 'keys.create', k.json.id]);
    const lk = await api('GET', '/admin/v1/keys', tadm);
    assert.ok(lk.json.data.every((x: any) => x.tenant_id === tenantA));
    assert.ok(lk.json.data.every((x: any) => !('key' in x)), 'listing never includes the key');

    // auditor
    const aw = await api('GET', '/admin/v1/whoami', aud);
    assert.equal(aw.json.role, 'auditor');
    expectError(await api('POST', '/admin/v1/keys', aud, { tenant_id: tenantA }), 403, 'insufficient_role');
    expectError(await api('POST', '/admin/v1/tenants', aud, { name: 'nope' }), 403, 'insufficient_role');
    expectError(await api('PATCH', `/admin/v1/tenants/${tenantA}`, aud, { jurisdiction: 'FR' }), 403, 'insufficient_role');
    expectError(await api('POST', `/admin/v1/keys/${k.json.id}/rotate`, aud, {}), 403, 'insufficient_role');
    expectError(await api('POST', `/admin/v1/keys/${k.json.id}/revoke`, aud), 403, 'insufficient_role');
    expectError(await api('PATCH', `/admin/v1/keys/${k.json.id}`, aud, { label: 'x' }), 403, 'insufficient_role');
    expectError(await api('PUT', `/admin/v1/tenants/${tenantA}/limits`, aud, { rpm: 1, tpm: 1 }), 403, 'insufficient_role');
    expectError(await api('POST', '/admin/v1/budgets', aud, { scope: { kind: 'tenant', id: tenantA }, unit: 'tokens', amount: 1, period: 'day' }), 403, 'insufficient_role');
    expectError(await api('DELETE', '/admin/v1/budgets/bud_x', aud), 403, 'insufficient_role');
    // … but reads everything (metadata only)
    const all = await api('GET', '/admin/v1/keys', aud);
    assert.equal(all.status, 200);
    assert.ok(all.json.data.length >= 2);
    assert.ok(all.json.data.every((x: any) => !('key' in x) && !('digest' in x)));
    assert.equal((await api('GET', `/admin/v1/tenants/${tenantB}`, aud)).status, 200);
    assert.equal((await api('GET', '/admin/v1/usage', aud)).status, 200);
    assert.equal((await api('GET', '/admin/v1/budgets', aud)).status, 200);
  });

  test('model allowlist: 403 model_not_allowed through the data plane; patching it applies at once', async () => {
    const k = await api('POST', '/admin/v1/keys', root, { tenant_id: tenantA, label: 'restricted', model_allowlist: ['other-model'] });
    assert.equal(k.status, 201, k.text);
    assert.match(k.json.key, /^sk-sovra-[0-9A-Za-z]{32}$/);
    assert.deepEqual(k.json.model_allowlist, ['other-model']);
    changes.push([`admin:${rootId}`, 'keys.create', k.json.id]);
    const denied = await chat(k.json.key);
    assert.equal(denied.status, 403, 'the route stage must get the principal: src/pipeline/index.ts has to call routes().resolve(model, op, ctx.principal)');
    assert.equal(denied.json.error.code, 'model_not_allowed');
    assert.equal(denied.json.error.param, 'model');
    const listed = async () => {
      const r = await fetch(`${g.baseURL}/models`, { headers: { authorization: `Bearer ${k.json.key}` } });
      return ((await r.json()) as { data: Array<{ id: string }> }).data.map((m) => m.id);
    };
    assert.deepEqual(await listed(), [], '/v1/models lists only the models the key may use');
    const one = await fetch(`${g.baseURL}/models/test-model`, { headers: { authorization: `Bearer ${k.json.key}` } });
    assert.equal(one.status, 404);

    const p = await api('PATCH', `/admin/v1/keys/${k.json.id}`, root, { model_allowlist: ['test-model'] });
    assert.equal(p.status, 200, p.text);
    changes.push([`admin:${rootId}`, 'keys.update', k.json.id]);
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'ok' })));
    assert.equal((await chat(k.json.key)).status, 200, 'the same process sees the change at once (cache invalidated)');
    assert.deepEqual(await listed(), ['test-model']);

    const g2 = await api('GET', `/admin/v1/keys/${k.json.id}`, root);
    assert.equal(g2.json.state, 'active');
    assert.ok(!('key' in g2.json), 'the key is returned only once');
  });

  test('rotation: the old key works during the overlap, then 401; the new key keeps the settings', async () => {
    const k = await api('POST', '/admin/v1/keys', tadm, { label: 'rot', model_allowlist: ['test-model'] });
    assert.equal(k.status, 201, k.text);
    changes.push([`admin:${tadmId}`, 'keys.create', k.json.id]);
    assert.equal(await models(k.json.key), 200);
    const r = await api('POST', `/admin/v1/keys/${k.json.id}/rotate`, tadm, { overlap_seconds: 1 });
    assert.equal(r.status, 201, r.text);
    changes.push([`admin:${tadmId}`, 'keys.rotate', k.json.id]);
    const nk = r.json.new_key;
    assert.match(nk.key, /^sk-sovra-[0-9A-Za-z]{32}$/);
    assert.notEqual(nk.key, k.json.key);
    assert.equal(nk.label, 'rot');
    assert.deepEqual(nk.model_allowlist, ['test-model']);
    assert.equal(nk.rotated_from, k.json.id);
    assert.equal(nk.tenant_id, tenantA);
    assert.ok(!('key' in r.json.previous_key));
    assert.equal(await models(k.json.key), 200, 'old key works during the overlap');
    assert.equal(await models(nk.key), 200);
    await new Promise((res) => setTimeout(res, 1200));
    assert.equal(await models(k.json.key), 401, 'old key stops after the overlap');
    assert.equal(await models(nk.key), 200);
    assert.equal((await api('GET', `/admin/v1/keys/${k.json.id}`, tadm)).json.state, 'expired');
    expectError(await api('POST', `/admin/v1/keys/${k.json.id}/rotate`, tadm, {}), 409, 'key_expired');

    // revoke: at once
    const v = await api('POST', `/admin/v1/keys/${nk.id}/revoke`, tadm);
    assert.equal(v.status, 200, v.text);
    assert.equal(v.json.state, 'revoked');
    changes.push([`admin:${tadmId}`, 'keys.revoke', nk.id]);
    assert.equal(await models(nk.key), 401);
    expectError(await api('POST', `/admin/v1/keys/${nk.id}/revoke`, tadm), 409, 'key_revoked');

    // expiry set by PATCH
    const e = await api('POST', '/admin/v1/keys', root, { tenant_id: tenantB, expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    assert.equal(e.status, 201, e.text);
    changes.push([`admin:${rootId}`, 'keys.create', e.json.id]);
    assert.equal(await models(e.json.key), 200);
    const pe = await api('PATCH', `/admin/v1/keys/${e.json.id}`, root, { expires_at: new Date(Date.now() - 1000).toISOString() });
    assert.equal(pe.status, 200, pe.text);
    changes.push([`admin:${rootId}`, 'keys.update', e.json.id]);
    assert.equal(await models(e.json.key), 401, 'an expired key is refused like an unknown one');
    expectError(await api('POST', '/admin/v1/keys', root, { tenant_id: tenantB, expires_at: 'tomorrow' }), 400, 'invalid_parameter');
  });

  test('limits, budgets and usage (JSON and CSV), scoped for the tenant-admin', async () => {
    const put = await api('PUT', `/admin/v1/tenants/${tenantA}/limits`, tadm, { rpm: 600, tpm: null });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(put.json, { object: 'limits', scope: { kind: 'tenant', id: tenantA }, rpm: 600, tpm: null });
    changes.push([`admin:${tadmId}`, 'limits.set', tenantA]);
    assert.deepEqual((await api('GET', `/admin/v1/tenants/${tenantA}/limits`, aud)).json.rpm, 600);
    const kput = await api('PUT', `/admin/v1/keys/${g.keyId}/limits`, root, { rpm: null, tpm: 100000 });
    assert.equal(kput.status, 200, kput.text);
    changes.push([`admin:${rootId}`, 'limits.set', g.keyId]);
    expectError(await api('PUT', `/admin/v1/keys/${g.keyId}/limits`, root, { rpm: -1, tpm: null }), 400, 'invalid_parameter');
    const ll = await api('GET', '/admin/v1/limits', tadm);
    assert.deepEqual(ll.json.data.map((x: any) => x.scope.id), [tenantA]);

    const b = await api('POST', '/admin/v1/budgets', tadm, { scope: { kind: 'tenant', id: tenantA }, unit: 'tokens', amount: 1_000_000, period: 'month' });
    assert.equal(b.status, 201, b.text);
    assert.equal(b.json.used, 0);
    changes.push([`admin:${tadmId}`, 'budgets.create', b.json.id]);
    const other = await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'tenant', id: tenantB }, unit: 'usd_micros', amount: 5_000_000, period: 'day' });
    assert.equal(other.status, 201, other.text);
    changes.push([`admin:${rootId}`, 'budgets.create', other.json.id]);
    expectError(await api('POST', '/admin/v1/budgets', tadm, { scope: { kind: 'tenant', id: tenantB }, unit: 'tokens', amount: 1, period: 'day' }), 404, 'tenant_not_found');
    const lb = await api('GET', '/admin/v1/budgets', tadm);
    assert.deepEqual(lb.json.data.map((x: any) => x.id), [b.json.id]);
    expectError(await api('DELETE', `/admin/v1/budgets/${other.json.id}`, tadm), 404, 'budget_not_found');
    const d = await api('DELETE', `/admin/v1/budgets/${b.json.id}`, tadm);
    assert.equal(d.status, 200, d.text);
    changes.push([`admin:${tadmId}`, 'budgets.delete', b.json.id]);
    expectError(await api('DELETE', `/admin/v1/budgets/${b.json.id}`, tadm), 404, 'budget_not_found');

    await g.gw.flush(); // rows reach `requests` when their entries are integrated
    const u = await api('GET', `/admin/v1/usage?group_by=day&from=2000-01-01T00:00:00Z`, root);
    assert.equal(u.status, 200, u.text);
    assert.ok(u.json.data.length > 0);
    assert.ok(u.json.data.some((r: any) => r.tenant_id === tenantA && r.requests >= 1));
    const ut = await api('GET', '/admin/v1/usage', tadm);
    assert.ok(ut.json.data.every((r: any) => r.tenant_id === tenantA), 'a tenant-admin sees only its own usage');
    const csv = await api('GET', `/admin/v1/usage?format=csv&tenant_id=${tenantA}`, aud);
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    assert.match(csv.text, /tenant_id/);
    expectError(await api('GET', '/admin/v1/usage?group_by=week', root), 400, 'invalid_parameter');
    expectError(await api('GET', '/admin/v1/usage?from=yesterday', root), 400, 'invalid_parameter');
  });

  test('OpenAPI document: valid JSON with every admin path, and no data-plane path', async () => {
    const r = await fetch(`${g.origin}/admin/v1/openapi.json`);
    assert.equal(r.status, 200);
    const doc = JSON.parse(await r.text());
    assert.match(doc.openapi, /^3\./);
    for (const p of ADMIN_PATHS) assert.ok(doc.paths[p], `missing ${p}`);
    assert.ok(!Object.keys(doc.paths).some((p) => p.startsWith('/v1') || p.startsWith('/audit')));
    assert.ok(doc.paths['/admin/v1/keys'].post.requestBody, 'bodies are described');
    assert.ok(doc.paths['/admin/v1/keys'].post.responses['201'], 'responses are described');
    // the data plane is unchanged
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'still fine' })));
    assert.equal((await chat(g.key)).status, 200);
  });

  test('CLI verbs: tenants, keys create/rotate, admins list/revoke', async () => {
    const cli = (args: string[]) => runSovra(work, [...args, '--config', cliCfg]);
    const t = await cli(['tenants', 'create', 'cli-agency', '--jurisdiction', 'de', '--classification', 'VS-NfD', '--display-name', 'CLI Agency']);
    assert.equal(t.code, 0, t.err);
    const tid = /(ten_[0-9A-Za-z]{16})/.exec(t.out)![1]!;
    const show = await cli(['tenants', 'show', 'cli-agency', '--json']);
    assert.equal(JSON.parse(show.out).jurisdiction, 'DE');
    const up = await cli(['tenants', 'update', tid, '--classification', '']);
    assert.equal(up.code, 0, up.err);
    assert.match((await cli(['tenants', 'list'])).out, /cli-agency/);
    const k = await cli(['keys', 'create', '--tenant', 'cli-agency', '--label', 'bot', '--models', 'test-model,x', '--expires', '2099-01-01T00:00:00Z']);
    assert.equal(k.code, 0, k.err);
    const key = /(sk-sovra-[0-9A-Za-z]{32})/.exec(k.out)![1]!;
    const kid = /Created key (key_[0-9A-Za-z]+)/.exec(k.out)![1]!;
    const gk = await api('GET', `/admin/v1/keys/${kid}`, root);
    assert.deepEqual(gk.json.model_allowlist, ['test-model', 'x']);
    assert.equal(gk.json.expires_at, '2099-01-01T00:00:00.000Z');
    const rot = await cli(['keys', 'rotate', kid, '--overlap', '0s']);
    assert.equal(rot.code, 0, rot.err);
    const nkey = /(sk-sovra-[0-9A-Za-z]{32})/.exec(rot.out)![1]!;
    await new Promise((res) => setTimeout(res, 5));
    assert.equal(await models(key), 401);
    assert.equal(await models(nkey), 200);
    const bad = await cli(['admins', 'create', '--role', 'tenant-admin']);
    assert.equal(bad.code, 2, 'a tenant-admin without a tenant: bad usage');
    assert.match(bad.err, /tenant-admin needs a tenant/);
    const al = await cli(['admins', 'list']);
    assert.match(al.out, new RegExp(audId));
    assert.ok(!/sk-sovra-admin-[0-9A-Za-z]{32}/.test(al.out), 'admins list never prints a key');
    const rv = await cli(['admins', 'revoke', audId]);
    assert.equal(rv.code, 0, rv.err);
    expectError(await api('GET', '/admin/v1/whoami', aud), 401, 'invalid_admin_key');
  });

  test('no admin response ever contains a stored digest, an admin digest, or the upstream credential', async () => {
    const store = g.gw.store();
    const digests = [
      ...(await store.db.selectFrom('api_keys').select('digest').execute()).map((r) => r.digest),
      ...(await store.db.selectFrom('admins').select('digest').execute()).map((r) => r.digest),
    ];
    assert.ok(digests.length >= 8);
    assert.ok(bodies.length > 50);
    for (const b of bodies) {
      for (const d of digests) assert.ok(!b.toLowerCase().includes(d), 'a response contains a stored digest');
      assert.ok(!b.includes('up-cred-TEST-9999'), 'a response contains the upstream credential');
      assert.ok(!/"digest"/.test(b));
    }
  });

  test('each admin change is exactly one audit entry (actor admin:<id>, action, target)', async () => {
    await g.gw.recorder().flush();
    await g.gw.audit()!.drain();
    const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
    const admins = entries.map((e) => decodeRecord(e)).filter((r): r is AdminRecord => r.type === 'admin' && r.actor.startsWith('admin:'));
    const got = admins.map((r) => [r.actor, r.action, r.target].join(' ')).sort();
    const want = changes.map((c) => c.join(' ')).sort();
    assert.deepEqual(got, want);
    for (const r of admins) assert.match(r.after ?? r.before ?? '', /^[0-9a-f]{64}$/);
  });

  test('a change whose audit entry cannot be written fails with 503 audit_unavailable and changes nothing', async () => {
    const before = (await api('GET', '/admin/v1/tenants', root)).json.data.length;
    await g.gw.recorder().close(); // the journal refuses writes from now on
    expectError(await api('POST', '/admin/v1/tenants', root, { name: 'unaudited' }), 503, 'audit_unavailable');
    expectError(await api('POST', '/admin/v1/keys', root, { tenant_id: tenantA }), 503, 'audit_unavailable');
    expectError(await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'tenant', id: tenantA }, unit: 'tokens', amount: 5, period: 'day' }), 503, 'audit_unavailable');
    assert.equal((await api('GET', '/admin/v1/tenants', root)).json.data.length, before);
    assert.equal((await api('GET', `/admin/v1/budgets?tenant_id=${tenantA}`, root)).json.data.length, 0);
  });
});
