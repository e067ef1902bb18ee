/**
 * Routing through the gateway: retries and fallback (only before the first byte, never twice to one
 * backend), circuit breakers and active health checks (ejection and readmission), mid-stream
 * failures (an error event, no retry), `GET /admin/v1/backends`, and hot reload (atomic swap,
 * in-flight requests kept, invalid files rejected, an audit entry per reload).
 * The scripted upstreams' own request logs are the ground truth of where requests went.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { scriptedUpstream, type ScriptedUpstream } from './helpers/upstreams.ts';
import { allEntries, until } from './helpers/audit.ts';
import { createAdmin } from '../src/tenancy/index.ts';
import { ConfigError } from '../src/config/load.ts';

async function chat(g: TestGateway, model: string, extra: Record<string, unknown> = {}) {
  const r = await fetch(`${g.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], ...extra }),
  });
  const text = await r.text();
  return { status: r.status, text, json: (text.startsWith('{') ? JSON.parse(text) : null) as Record<string, any> | null, id: r.headers.get('x-request-id')! };
}

describe('routing: retries, fallback, breakers, health checks, admin view, hot reload', () => {
  let g: TestGateway;
  let a: ScriptedUpstream;
  let b: ScriptedUpstream;
  let c: ScriptedUpstream;
  let adminKey: string;
  let tenantAdminKey: string;

  before(async () => {
    a = await scriptedUpstream('up-a');
    b = await scriptedUpstream('up-b');
    c = await scriptedUpstream('up-c');
    const breaker = { failures: 2, open_ms: 400, max_open_ms: 2000 };
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        backends: [
          { id: 'a', provider: 'openai-compatible', base_url: a.url, jurisdiction: 'MY', breaker },
          { id: 'b', provider: 'openai-compatible', base_url: b.url, jurisdiction: 'MY', breaker },
          { id: 'c', provider: 'openai-compatible', base_url: c.url, jurisdiction: 'MY', breaker, health_check: { enabled: true, interval_ms: 60_000, timeout_ms: 500 } },
        ],
        models: [
          { name: 'pair', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'a' }, { backend: 'b' }] },
          { name: 'solo-a', backend: 'a', fallbacks: ['solo-b'], retry: { attempts: 2, base_ms: 0, max_ms: 0 } },
          { name: 'solo-b', backend: 'b' },
          { name: 'checked', strategy: 'least_in_flight', pool: [{ backend: 'c' }, { backend: 'b' }] },
        ],
      },
    });
    const cc = { store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' };
    adminKey = (await createAdmin(cc, { role: 'platform-admin' })).secret;
    const { createTenant } = await import('../src/tenancy/index.ts');
    const t = await createTenant(cc, { name: 'agency' });
    tenantAdminKey = (await createAdmin(cc, { role: 'tenant-admin', tenantId: t.id })).secret;
  });
  after(async () => {
    await g.close();
    await Promise.all([a.stop(), b.stop(), c.stop()]);
  });

  const backends = async (key = adminKey) => {
    const r = await fetch(`${g.origin}/admin/v1/backends`, { headers: { authorization: `Bearer ${key}` } });
    return { status: r.status, json: (await r.json()) as Record<string, any> };
  };
  const health = async (id: string) => (await backends()).json['data'].find((x: { id: string }) => x.id === id).health;

  it('a 5xx from one backend is retried on the other before any byte reaches the client, and each backend is tried once', async () => {
    a.mode = { kind: 'status', status: 503 };
    const a0 = a.completions().length;
    const b0 = b.completions().length;
    for (let i = 0; i < 4; i++) {
      const r = await chat(g, 'pair');
      assert.equal(r.status, 200, r.text);
      assert.match(r.json!['choices'][0].message.content, /up-b/);
    }
    // a was tried until its breaker opened (2 failures), then skipped; b served all four.
    assert.equal(a.completions().length - a0, 2);
    assert.equal(b.completions().length - b0, 4);
    const h = await health('a');
    assert.equal(h.state, 'open');
    assert.equal(h.ejected, 'breaker_open');
    assert.match(h.reason, /2 consecutive failures/);
    // Each request has exactly one record, on the backend that served it.
    const rows = await g.records();
    assert.equal(rows.filter((r) => r.model === 'pair').length, 4);
    assert.ok(rows.filter((r) => r.model === 'pair').every((r) => r.backend_id === 'b' && r.status === 200));
  });

  it('the ejected backend is readmitted through half-open once it recovers', async () => {
    a.mode = { kind: 'ok' };
    await new Promise((r) => setTimeout(r, 450));
    const a0 = a.completions().length;
    for (let i = 0; i < 6; i++) assert.equal((await chat(g, 'pair')).status, 200);
    assert.ok(a.completions().length - a0 >= 2, 'a takes traffic again');
    assert.equal((await health('a')).state, 'closed');
  });

  it('429 with retry-after: retried on the other backend; the first cools down for that long', async () => {
    a.mode = { kind: 'status', status: 429, headers: { 'retry-after': '1' } };
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const r = await chat(g, 'pair');
      assert.equal(r.status, 200, r.text);
      seen.add(r.json!['choices'][0].message.content);
    }
    assert.deepEqual([...seen], ['hello from up-b']);
    const h = await health('a');
    assert.equal(h.ejected, 'cooling_down');
    assert.ok(h.retry_at > Date.now() && h.retry_at <= Date.now() + 1100);
    a.mode = { kind: 'ok' };
  });

  it('connect failure → fallback alias; the audit entry lists the attempts', async () => {
    await until(async () => (await health('a')).ejected === null, 3000, 'a admissible');
    await a.stop();
    const b0 = b.completions().length;
    const r = await chat(g, 'solo-a');
    assert.equal(r.status, 200, r.text);
    assert.equal(b.completions().length, b0 + 1);
    const entry = await until(async () => {
      const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
      return entries.map((e) => JSON.parse(e.toString('utf8'))).find((e) => e.id === r.id);
    });
    assert.deepEqual(
      entry.policy.residency.filter((l: string) => l.startsWith('attempt')),
      ['attempt 1 solo-a/a: connect, retrying', 'attempt 2 solo-b/b'],
    );
    assert.equal(entry.backend, 'b');
    assert.equal(entry.model, 'solo-a', 'the record keeps the alias the client asked for');
    await a.start();
  });

  it('a backend that fails mid-stream ends that stream with an error event and is not retried', async () => {
    a.mode = { kind: 'break_mid_stream', events: 3 };
    // a's breaker may be open from the connect failure; wait for it to be admissible again.
    await until(async () => (await health('a')).ejected === null, 3000, 'a admissible');
    const b0 = b.completions().length;
    const r = await chat(g, 'solo-a', { stream: true });
    assert.equal(r.status, 200);
    assert.match(r.text, /w1 /);
    assert.match(r.text, /"code":"upstream_stream_interrupted"/);
    assert.doesNotMatch(r.text, /\[DONE\]/);
    assert.equal(b.completions().length, b0, 'no retry after the stream started');
    const rec = await g.record(r.id);
    assert.equal(rec.outcome, 'upstream_error');
    assert.equal(rec.error_code, 'upstream_stream_interrupted');
    a.mode = { kind: 'ok' };
  });

  it('active health checks eject a backend that fails them and readmit it when it passes', async () => {
    c.healthy = false;
    await g.gw.routing().checkNow();
    await g.gw.routing().checkNow();
    const h = await health('c');
    assert.equal(h.ejected, 'unhealthy');
    assert.equal(h.last_check.ok, false);
    assert.ok(c.seen.some((s) => s.method === 'GET' && s.path === '/v1/models'), 'the check is GET /v1/models, not a completion');
    const c0 = c.completions().length;
    for (let i = 0; i < 4; i++) assert.equal((await chat(g, 'checked')).status, 200);
    assert.equal(c.completions().length, c0, 'no traffic to the unhealthy backend');
    c.healthy = true;
    await g.gw.routing().checkNow();
    for (let i = 0; i < 6; i++) assert.equal((await chat(g, 'checked')).status, 200);
    assert.ok(c.completions().length > c0, 'readmitted');
  });

  it('GET /admin/v1/backends: platform-admin sees state and reason, tenant-admin is refused, no credential anywhere', async () => {
    const r = await backends();
    assert.equal(r.status, 200);
    assert.equal(r.json['object'], 'list');
    const ids = r.json['data'].map((x: { id: string }) => x.id);
    assert.deepEqual(ids, ['a', 'b', 'c']);
    const one = r.json['data'][0];
    assert.equal(one.jurisdiction, 'MY');
    assert.deepEqual(one.models, ['pair', 'solo-a']);
    assert.ok(!JSON.stringify(r.json).includes('base_url') && !JSON.stringify(r.json).includes('api_key'));
    const denied = await backends(tenantAdminKey);
    assert.equal(denied.status, 403);
    assert.equal(denied.json['error'].code, 'insufficient_role');
  });

  it('hot reload swaps routing atomically: in-flight requests finish, new ones use the new table, an invalid file is rejected', async () => {
    b.mode = { kind: 'ok', delayMs: 400 };
    const inflight = chat(g, 'solo-b');
    await new Promise((r) => setTimeout(r, 100));
    const cfg = parse(readFileSync(g.configPath, 'utf8')) as Record<string, any>;
    cfg['models'].push({ name: 'new-alias', backend: 'a' });
    cfg['models'] = cfg['models'].filter((m: { name: string }) => m.name !== 'checked');
    cfg['backends'] = cfg['backends'].filter((x: { id: string }) => x.id !== 'c');
    writeFileSync(g.configPath, stringify(cfg));
    const sum = await g.gw.reload();
    assert.deepEqual(sum.removed, ['c']);
    assert.equal(sum.generation, 2);
    const old = await inflight;
    assert.equal(old.status, 200, 'the in-flight request finished');
    b.mode = { kind: 'ok' };
    assert.equal((await chat(g, 'new-alias')).status, 200);
    assert.equal((await chat(g, 'checked')).status, 404);
    // Health of unchanged backends survives a reload.
    assert.ok((await health('a')).totals.successes > 0);

    writeFileSync(g.configPath, 'models: [ { name: 1 } ]\nbogus: true\n');
    await assert.rejects(g.gw.reload(), (e: unknown) => e instanceof ConfigError);
    assert.equal((await chat(g, 'new-alias')).status, 200, 'the old configuration is kept');
    const viaApi = await fetch(`${g.origin}/admin/v1/config/reload`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}` } });
    assert.equal(viaApi.status, 400);
    assert.equal(((await viaApi.json()) as any).error.code, 'invalid_configuration');

    const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
    const reloads = entries.map((e) => JSON.parse(e.toString('utf8'))).filter((e) => e.type === 'admin' && e.action === 'config.reload');
    assert.equal(reloads.length, 1, 'one entry per applied reload');
    assert.equal(reloads[0].actor, 'server:reload');
    assert.match(reloads[0].before, /^[0-9a-f]{64}$/);
  });
});
