/**
 * Sovereign routing, end to end: several scripted upstreams in different jurisdictions behind one
 * model alias; tenants with residency policies. What reached which engine is read from the
 * upstreams' own request logs, not from Sovra's records; why is read from the audit entries.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { scriptedUpstream, type ScriptedUpstream } from './helpers/upstreams.ts';
import { auditEntry } from './helpers/audit.ts';
import { createKey } from '../src/keys/keys.ts';

interface Entry {
  type: string;
  id: string;
  status: number;
  backend: string | null;
  error_code: string | null;
  policy: { residency: string[]; pii: string[] };
}

const entryOf = (g: TestGateway, id: string): Promise<Entry> => auditEntry<Entry>(g.origin, g.gw.audit()!.vkey, id);

async function chat(g: TestGateway, key: string, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}) {
  const r = await fetch(`${g.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: 'hi' }], ...extra }),
  });
  const text = await r.text();
  return { status: r.status, text, json: (text.startsWith('{') ? JSON.parse(text) : null) as Record<string, any> | null, id: r.headers.get('x-request-id')! };
}

describe('residency: a tenant limited to MY never reaches the SG backend', () => {
  let g: TestGateway;
  let myA: ScriptedUpstream;
  let myB: ScriptedUpstream;
  let sg: ScriptedUpstream;
  const keys: Record<string, string> = {};

  before(async () => {
    myA = await scriptedUpstream('my-a');
    myB = await scriptedUpstream('my-b');
    sg = await scriptedUpstream('sg-1');
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        residency: {
          classifications: ['public', 'internal', 'confidential', 'secret'],
          home_jurisdiction: 'MY',
          tenants: {
            moh: { allowed_jurisdictions: ['MY'], default_classification: 'confidential' },
            trade: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG', basis: 'ASEAN model contractual clauses, agreement 2026/17', expires: '2099-12-31' }] },
            lapsed: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG', basis: 'old agreement', expires: '2020-01-01' }] },
            kenya: { allowed_jurisdictions: ['KE'] },
          },
        },
        backends: [
          { id: 'my-a', provider: 'openai-compatible', base_url: myA.url, jurisdiction: 'MY', hosting: 'on_premises', max_classification: 'confidential', breaker: { failures: 2, open_ms: 300 } },
          { id: 'my-b', provider: 'openai-compatible', base_url: myB.url, jurisdiction: 'MY-14', hosting: 'national_cloud', max_classification: 'secret', breaker: { failures: 2, open_ms: 300 } },
          { id: 'sg-1', provider: 'openai-compatible', base_url: sg.url, jurisdiction: 'SG', hosting: 'foreign_hosted', max_classification: 'secret' },
        ],
        models: [{ name: 'chat', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'my-a' }, { backend: 'my-b' }, { backend: 'sg-1' }] }],
      },
    });
    for (const t of ['moh', 'trade', 'lapsed', 'kenya']) keys[t] = (await createKey(g.gw.store(), { tenant: t, name: `${t}-key` })).key;
  });
  after(async () => {
    await g.close();
    await Promise.all([myA.stop(), myB.stop(), sg.stop()]);
  });

  it('spreads the MY tenant over the MY backends only; a tenant without policy may use all three', async () => {
    for (let i = 0; i < 12; i++) assert.equal((await chat(g, keys['moh']!)).status, 200);
    assert.equal(sg.completions().length, 0, 'the SG upstream saw none of the MY tenant requests');
    assert.ok(myA.completions().length > 0 && myB.completions().length > 0, 'both MY backends served');
    for (let i = 0; i < 6; i++) assert.equal((await chat(g, g.key)).status, 200);
    assert.ok(sg.completions().length > 0, 'an unrestricted tenant reaches SG too');
  });

  it('a request may raise its classification, never lower it; an unknown one is a 400', async () => {
    const a0 = myA.completions().length;
    for (let i = 0; i < 4; i++) {
      const r = await chat(g, keys['moh']!, { 'x-sovra-data-class': 'secret' });
      assert.equal(r.status, 200);
    }
    assert.equal(myA.completions().length, a0, 'my-a (cleared to confidential) received no secret data');
    const low = await chat(g, keys['moh']!, { 'x-sovra-data-class': 'public' });
    assert.equal(low.status, 200);
    const e = await entryOf(g, low.id);
    assert.equal(e.policy.residency[0], 'class=confidential', 'the tenant default holds');
    const bad = await chat(g, keys['moh']!, { 'x-sovra-data-class': 'top-secret' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json!['error'].code, 'invalid_data_class');
    assert.equal(bad.json!['error'].param, 'x-sovra-data-class');
  });

  it('every MY backend down → 451 with the reasons in the audit entry; SG still untouched', async () => {
    const sg0 = sg.completions().length;
    await myA.stop();
    await myB.stop();
    for (let i = 0; i < 4; i++) {
      const r = await chat(g, keys['moh']!);
      assert.equal(r.status, 451, r.text);
      assert.equal(r.json!['error'].code, 'residency_allowed_backends_unavailable');
      const e = await entryOf(g, r.id);
      assert.equal(e.status, 451);
      assert.ok(e.policy.residency.some((l) => /^exclude chat\/sg-1: jurisdiction_not_allowed/.test(l)), JSON.stringify(e.policy.residency));
      if (i === 0) assert.ok(e.policy.residency.some((l) => /^attempt 1 chat\/my-[ab]: connect, retrying$/.test(l)), JSON.stringify(e.policy.residency));
    }
    // Breakers are open by now: the MY backends are skipped, and still nothing goes abroad.
    const r = await chat(g, keys['moh']!, {}, { stream: true });
    assert.equal(r.status, 451);
    const e = await entryOf(g, r.id);
    assert.ok(e.policy.residency.some((l) => /breaker_open|panic|attempt/.test(l)), JSON.stringify(e.policy.residency));
    assert.equal(sg.completions().length, sg0, 'the SG upstream received nothing from the MY tenant');
  });

  it('a valid transfer basis allows SG and is recorded; an expired one does not', async () => {
    const sg0 = sg.completions().length;
    const ok = await chat(g, keys['trade']!);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(sg.completions().length, sg0 + 1);
    const e = await entryOf(g, ok.id);
    assert.equal(e.backend, 'sg-1');
    assert.ok(e.policy.residency.some((l) => l.startsWith('transfer sg-1 (SG): ASEAN model contractual clauses')), JSON.stringify(e.policy.residency));

    const lapsed = await chat(g, keys['lapsed']!);
    assert.equal(lapsed.status, 451);
    const le = await entryOf(g, lapsed.id);
    assert.ok(le.policy.residency.some((l) => /sg-1: transfer_basis_expired/.test(l)), JSON.stringify(le.policy.residency));
    assert.equal(sg.completions().length, sg0 + 1);
  });

  it('a tenant whose policy no backend satisfies gets 451 residency_no_allowed_backend, and was reported at start-up', async () => {
    const before = myA.seen.length + myB.seen.length + sg.seen.length;
    const r = await chat(g, keys['kenya']!);
    assert.equal(r.status, 451);
    assert.equal(r.json!['error'].code, 'residency_no_allowed_backend');
    const e = await entryOf(g, r.id);
    assert.equal(e.policy.residency.filter((l) => l.includes('jurisdiction_not_allowed')).length, 3);
    assert.equal(myA.seen.length + myB.seen.length + sg.seen.length, before);
    assert.ok(g.logs().some((l) => l.includes('tenant \\"kenya\\": no model has a backend')), 'load-time report names the tenant');
  });

  it('MY backends back: the breakers readmit them after their open time', async () => {
    await myA.start();
    await myB.start();
    await new Promise((r) => setTimeout(r, 700));
    const a0 = myA.completions().length + myB.completions().length;
    for (let i = 0; i < 6; i++) assert.equal((await chat(g, keys['moh']!)).status, 200);
    assert.equal(myA.completions().length + myB.completions().length, a0 + 6);
    const list = (await (await fetch(`${g.origin}/healthz`)).status);
    assert.equal(list, 200);
  });
});
