/**
 * Adversarial tests of sovereign routing (src/routing/, src/pipeline/dispatch.ts, hot reload).
 *
 * Ground truth is what the scripted upstreams themselves received (each request carries a unique
 * marker in its prompt, so a leak is a marker in the wrong upstream's log), plus the audit entries'
 * `policy.residency` lines. Every server listens on 127.0.0.1; every load loop is bounded; waits are
 * bounded polls, never timing assertions.
 *
 * Tests marked `{ skip: 'BUG: …' }` reproduce a defect found here; they assert the expected
 * behaviour and fail on the current code. Run them with SOVRA_RUN_BUGS=1 to see them fail.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { startGateway, type TestGateway } from './helpers/gateway.ts';
import { advUpstream, type AdvUpstream } from './helpers/adversarial-upstream.ts';
import { allEntries, until, auditEntry } from './helpers/audit.ts';
import { createKey } from '../src/keys/keys.ts';
import { createAdmin, createTenant } from '../src/tenancy/index.ts';
import { createBudget, listBudgets } from '../src/metering/index.ts';
import { ConfigError, parseConfig } from '../src/config/load.ts';

// ------------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------------

interface Entry {
  type: string;
  id: string;
  status: number;
  backend: string | null;
  error_code: string | null;
  usage: { total_tokens: number | null } | null;
  policy: { residency: string[]; pii: string[] };
  action?: string;
}

interface Reply {
  status: number;
  text: string;
  json: Record<string, any> | null;
  id: string;
  headers: Headers;
  marker: string;
}

/** Set SOVRA_RUN_BUGS=1 to run the tests that reproduce known bugs (they fail until fixed). */
const RUN_BUGS = process.env['SOVRA_RUN_BUGS'] === '1';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A unique marker, put in the prompt: the upstream logs are searched for it. */
const newMarker = (tag: string) => `m-${tag}-${randomBytes(6).toString('hex')}`;

async function chat(
  g: TestGateway,
  key: string,
  model: string,
  opts: { headers?: Record<string, string>; extra?: Record<string, unknown>; marker?: string } = {},
): Promise<Reply> {
  const marker = opts.marker ?? newMarker('req');
  const r = await fetch(`${g.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...(opts.headers ?? {}) },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: `hi ${marker}` }], ...(opts.extra ?? {}) }),
  });
  const text = await r.text();
  let json: Record<string, any> | null = null;
  try {
    json = JSON.parse(text) as Record<string, any>;
  } catch {
    /* stream or non-JSON */
  }
  return { status: r.status, text, json, id: r.headers.get('x-request-id')!, headers: r.headers, marker };
}

/** POST with raw node:http so that a header can be sent on several lines (fetch would join them). */
function rawChat(g: TestGateway, key: string, model: string, headers: http.OutgoingHttpHeaders, marker: string): Promise<{ status: number; json: Record<string, any> | null; id: string }> {
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: `hi ${marker}` }] });
  const u = new URL(`${g.baseURL}/chat/completions`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: Number(u.port), path: u.pathname, method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          let json: Record<string, any> | null = null;
          try {
            json = JSON.parse(text) as Record<string, any>;
          } catch {
            /* */
          }
          resolve({ status: res.statusCode ?? 0, json, id: String(res.headers['x-request-id']) });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Counts how many of `ps` have settled. */
function tracked<T>(ps: Array<Promise<T>>): { settled(): number; all(): Promise<T[]> } {
  let n = 0;
  for (const p of ps) void p.then(() => n++, () => n++);
  return { settled: () => n, all: () => Promise.all(ps) };
}

/** Requests carrying `marker` that `u` received. */
const got = (u: AdvUpstream, marker: string) => u.seen.filter((s) => s.body.includes(marker)).length;
/** Requests whose marker starts with `prefix` that `u` received. */
const gotPrefix = (u: AdvUpstream, prefix: string) => u.seen.filter((s) => s.body.includes(prefix)).length;

const entryOf = (g: TestGateway, id: string): Promise<Entry> => auditEntry<Entry>(g.origin, g.gw.audit()!.vkey, id);

async function adminEntries(g: TestGateway, action: string): Promise<Entry[]> {
  await g.gw.audit()!.drain();
  const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
  return entries.map((e) => JSON.parse(e.toString('utf8')) as Entry).filter((e) => e.type === 'admin' && e.action === action);
}

/** Asserts an OpenAI-shaped error with this status and code. */
function expectError(r: { status: number; json: Record<string, any> | null }, status: number, code: string): void {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.ok(r.json && typeof r.json['error'] === 'object', `OpenAI-shaped error body: ${JSON.stringify(r.json)}`);
  assert.equal(r.json!['error'].code, code);
  assert.equal(typeof r.json!['error'].message, 'string');
  assert.equal(typeof r.json!['error'].type, 'string');
}

/** Reads the running YAML file, lets `edit` change it, writes it back. */
function editConfig(g: TestGateway, edit: (cfg: Record<string, any>) => void): void {
  const cfg = parse(readFileSync(g.configPath, 'utf8')) as Record<string, any>;
  edit(cfg);
  writeFileSync(g.configPath, stringify(cfg));
}

const backend = (id: string, u: AdvUpstream, extra: Record<string, unknown> = {}) => ({ id, provider: 'openai-compatible', base_url: u.url, ...extra });

async function stopAll(...us: AdvUpstream[]) {
  for (const u of us) u.openGate();
  await Promise.all(us.map((u) => u.stop()));
}

// ------------------------------------------------------------------------------------------------
// 1. residency: headers, regions, unknown jurisdictions, transfer bases, classifications
// ------------------------------------------------------------------------------------------------

describe('residency edge cases (no failures involved)', () => {
  let g: TestGateway;
  let myA: AdvUpstream; // MY, cleared to confidential
  let my14: AdvUpstream; // MY-14, secret
  let sg: AdvUpstream; // SG, secret
  let sg01: AdvUpstream; // SG-01, secret
  let nojur: AdvUpstream; // no jurisdiction, secret
  let all: AdvUpstream[];
  const keys: Record<string, string> = {};

  before(async () => {
    myA = await advUpstream('my-a');
    my14 = await advUpstream('my-14');
    sg = await advUpstream('sg');
    sg01 = await advUpstream('sg-01');
    nojur = await advUpstream('nojur');
    all = [myA, my14, sg, sg01, nojur];
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        residency: {
          classifications: ['public', 'internal', 'confidential', 'secret'],
          home_jurisdiction: 'MY',
          tenants: {
            moh: { allowed_jurisdictions: ['MY'], default_classification: 'confidential' },
            region: { allowed_jurisdictions: ['MY-14'] },
            trade: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG', basis: 'SCC 2026/1', expires: '2099-12-31', max_classification: 'internal' }] },
            lapsed: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG', basis: 'old', expires: '2020-01-01T00:00:00Z' }] },
            sgregion: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG-01', basis: 'regional DPA', expires: '2099-12-31' }] },
            kenya: { allowed_jurisdictions: ['KE'] },
            everywhere: { allowed_jurisdictions: ['*'], default_classification: 'public' },
          },
        },
        backends: [
          backend('my-a', myA, { jurisdiction: 'MY', max_classification: 'confidential' }),
          backend('my-14', my14, { jurisdiction: 'MY-14', max_classification: 'secret' }),
          backend('sg', sg, { jurisdiction: 'SG', max_classification: 'secret' }),
          backend('sg-01', sg01, { jurisdiction: 'SG-01', max_classification: 'secret' }),
          backend('nojur', nojur, { max_classification: 'secret' }),
        ],
        models: [
          {
            name: 'all',
            strategy: 'weighted',
            retry: { attempts: 5, base_ms: 0, max_ms: 0 },
            pool: [{ backend: 'my-a' }, { backend: 'my-14' }, { backend: 'sg' }, { backend: 'sg-01' }, { backend: 'nojur' }],
          },
        ],
      },
    });
    for (const t of ['moh', 'region', 'trade', 'lapsed', 'sgregion', 'kenya', 'everywhere']) keys[t] = (await createKey(g.gw.store(), { tenant: t, name: `${t}-key` })).key;
    const cc = { store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' };
    // Tenants known only by their stored attributes (no residency entry in the configuration).
    await createTenant(cc, { name: 'attr-my', jurisdiction: 'my' });
    await createTenant(cc, { name: 'attr-label', classification: 'TOP SECRET' });
    keys['attr-my'] = (await createKey(g.gw.store(), { tenant: 'attr-my', name: 'k' })).key;
    keys['attr-label'] = (await createKey(g.gw.store(), { tenant: 'attr-label', name: 'k' })).key;
  });
  after(async () => {
    await g.close();
    await stopAll(...all);
  });

  it('x-sovra-data-class sent twice, empty, in another case or as a list: 400 invalid_data_class, nothing forwarded', async () => {
    const cases: Array<[string, http.OutgoingHttpHeaders]> = [
      ['two lines (public, secret)', { 'x-sovra-data-class': ['public', 'secret'] }],
      ['two lines (secret, public)', { 'x-sovra-data-class': ['secret', 'public'] }],
      ['two equal lines', { 'x-sovra-data-class': ['secret', 'secret'] }],
      ['one line with a list', { 'x-sovra-data-class': 'public, secret' }],
      ['empty', { 'x-sovra-data-class': '' }],
      ['upper case value', { 'x-sovra-data-class': 'SECRET' }],
      ['unknown name', { 'x-sovra-data-class': 'top-secret' }],
      ['trailing junk', { 'x-sovra-data-class': 'secret;q=1' }],
    ];
    for (const [what, headers] of cases) {
      const marker = newMarker('hdr');
      const r = await rawChat(g, keys['moh']!, 'all', headers, marker);
      expectError(r, 400, 'invalid_data_class');
      assert.equal(r.json!['error'].param, 'x-sovra-data-class', what);
      for (const u of all) assert.equal(got(u, marker), 0, `${what}: ${u.name} received nothing`);
      if (what === 'empty') {
        const e = await entryOf(g, r.id);
        assert.equal(e.status, 400);
        assert.equal(e.error_code, 'invalid_data_class');
      }
    }
  });

  it('header name in another case and value padded with white space still raise the class', async () => {
    // moh may use MY only; at "secret" only my-14 (MY-14, cleared secret) qualifies.
    const prefix = newMarker('pad');
    for (let i = 0; i < 8; i++) {
      const r = await rawChat(g, keys['moh']!, 'all', { 'X-SOVRA-DATA-CLASS': ' \tsecret\t ' }, `${prefix}-${i}`);
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
    assert.equal(gotPrefix(my14, prefix), 8);
    for (const u of [myA, sg, sg01, nojur]) assert.equal(gotPrefix(u, prefix), 0, u.name);
  });

  it('a lower header never lowers the tenant default (confidential stays; public-only backends excluded)', async () => {
    const prefix = newMarker('low');
    for (let i = 0; i < 8; i++) assert.equal((await chat(g, keys['moh']!, 'all', { headers: { 'x-sovra-data-class': 'public' }, marker: `${prefix}-${i}` })).status, 200);
    assert.ok(gotPrefix(myA, prefix) > 0 && gotPrefix(my14, prefix) > 0, 'both MY backends served');
    for (const u of [sg, sg01, nojur]) assert.equal(gotPrefix(u, prefix), 0, u.name);
  });

  it('regions: "MY" covers "MY-14"; "MY-14" does not cover "MY"; SG-01 is not SG', async () => {
    const p1 = newMarker('region');
    for (let i = 0; i < 10; i++) assert.equal((await chat(g, keys['region']!, 'all', { marker: `${p1}-${i}` })).status, 200);
    assert.equal(gotPrefix(my14, p1), 10, 'only the MY-14 backend serves a tenant limited to MY-14');
    for (const u of [myA, sg, sg01, nojur]) assert.equal(gotPrefix(u, p1), 0, u.name);

    const p2 = newMarker('sgregion');
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await chat(g, keys['sgregion']!, 'all', { marker: `${p2}-${i}` });
      assert.equal(r.status, 200);
      ids.push(r.id);
    }
    assert.ok(gotPrefix(sg01, p2) > 0, 'a basis for SG-01 allows the SG-01 backend');
    assert.equal(gotPrefix(sg, p2), 0, 'a basis for SG-01 does not allow the country-level SG backend');
    assert.equal(gotPrefix(nojur, p2), 0);
    const e = await entryOf(g, ids[0]!);
    assert.ok(e.policy.residency.some((l) => /^exclude all\/sg: jurisdiction_not_allowed/.test(l)), JSON.stringify(e.policy.residency));
    assert.ok(e.policy.residency.some((l) => /^exclude all\/nojur: jurisdiction_unknown/.test(l)), JSON.stringify(e.policy.residency));
  });

  it('a backend without a jurisdiction gets no restricted tenant\'s data, whatever the class; only "*" reaches it', async () => {
    const p = newMarker('nojur');
    for (const t of ['moh', 'region', 'trade', 'sgregion', 'attr-my']) for (let i = 0; i < 5; i++) await chat(g, keys[t]!, 'all', { marker: `${p}-${t}-${i}` });
    assert.equal(gotPrefix(nojur, p), 0);
    const q = newMarker('star');
    for (let i = 0; i < 10; i++) assert.equal((await chat(g, keys['everywhere']!, 'all', { marker: `${q}-${i}` })).status, 200);
    assert.ok(gotPrefix(nojur, q) > 0, 'a tenant allowed "*" may use it');
  });

  it('tenant attribute "my" (normalised MY) limits that tenant to MY backends', async () => {
    const p = newMarker('attr');
    for (let i = 0; i < 10; i++) assert.equal((await chat(g, keys['attr-my']!, 'all', { marker: `${p}-${i}` })).status, 200);
    assert.equal(gotPrefix(myA, p) + gotPrefix(my14, p), 10);
  });

  it('other operations (completions, embeddings, responses) obey the same policy', async () => {
    const p = newMarker('ops');
    for (const [path, body] of [
      ['completions', { prompt: `x ${p}` }],
      ['embeddings', { input: `x ${p}` }],
      ['responses', { input: `x ${p}` }],
    ] as const)
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`${g.baseURL}/${path}`, { method: 'POST', headers: { authorization: `Bearer ${keys['region']}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'all', ...body }) });
        await r.text();
        assert.equal(r.status, 200, path);
      }
    assert.equal(gotPrefix(my14, p), 15);
    for (const u of [myA, sg, sg01, nojur]) assert.equal(gotPrefix(u, p), 0, u.name);
  });

  it('tenant jurisdiction attributes: "MYS" and regions are refused by the tenancy layer', async () => {
    const cc = { store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' };
    for (const bad of ['MYS', 'MY-14', 'M', 'XX'])
      await assert.rejects(createTenant(cc, { name: `bad-${bad}`, jurisdiction: bad }), (e: unknown) => (e as { code?: string }).code === 'invalid_parameter', bad);
  });

  it('a tenant classification label the configuration does not know is taken as the highest', async () => {
    const p = newMarker('label');
    const r0 = await chat(g, keys['attr-label']!, 'all', { marker: `${p}-0` });
    assert.equal(r0.status, 200);
    for (let i = 1; i < 10; i++) assert.equal((await chat(g, keys['attr-label']!, 'all', { marker: `${p}-${i}` })).status, 200);
    assert.equal(gotPrefix(myA, p), 0, 'my-a is only cleared to confidential');
    const e = await entryOf(g, r0.id);
    assert.equal(e.policy.residency[0], 'class=secret');
  });

  it('transfer bases: valid one used within its class; too-high class and expired basis exclude SG, with the reason audited', async () => {
    const p = newMarker('trade');
    const ok: Reply[] = [];
    for (let i = 0; i < 10; i++) ok.push(await chat(g, keys['trade']!, 'all', { marker: `${p}-ok-${i}` }));
    assert.ok(ok.every((r) => r.status === 200));
    assert.ok(gotPrefix(sg, `${p}-ok`) > 0, 'public data goes to SG on the recorded basis');
    const served = ok.find((r) => sg.seen.some((s) => s.body.includes(r.marker)))!;
    const e0 = await entryOf(g, served.id);
    assert.ok(e0.policy.residency.includes('transfer sg (SG): SCC 2026/1'), JSON.stringify(e0.policy.residency));

    const hi: Reply[] = [];
    for (let i = 0; i < 10; i++) hi.push(await chat(g, keys['trade']!, 'all', { marker: `${p}-conf-${i}`, headers: { 'x-sovra-data-class': 'confidential' } }));
    assert.ok(hi.every((r) => r.status === 200));
    assert.equal(gotPrefix(sg, `${p}-conf`), 0, 'confidential exceeds the basis (internal)');
    const e1 = await entryOf(g, hi[0]!.id);
    assert.ok(e1.policy.residency.some((l) => l.startsWith('exclude all/sg: classification_exceeds_transfer_basis')), JSON.stringify(e1.policy.residency));

    const old: Reply[] = [];
    for (let i = 0; i < 10; i++) old.push(await chat(g, keys['lapsed']!, 'all', { marker: `${p}-lapsed-${i}` }));
    assert.equal(gotPrefix(sg, `${p}-lapsed`), 0);
    const e2 = await entryOf(g, old[0]!.id);
    assert.ok(e2.policy.residency.some((l) => l.startsWith('exclude all/sg: transfer_basis_expired')), JSON.stringify(e2.policy.residency));
  });

  it('no backend allowed at all: 451 residency_no_allowed_backend, OpenAI-shaped, every exclusion in the audit entry', async () => {
    const m = newMarker('ke');
    const r = await chat(g, keys['kenya']!, 'all', { marker: m });
    expectError(r, 451, 'residency_no_allowed_backend');
    for (const u of all) assert.equal(got(u, m), 0);
    const e = await entryOf(g, r.id);
    assert.equal(e.status, 451);
    assert.equal(e.error_code, 'residency_no_allowed_backend');
    const ex = e.policy.residency.filter((l) => l.startsWith('exclude all/'));
    assert.equal(ex.length, 5, JSON.stringify(e.policy.residency));
    assert.ok(ex.some((l) => l.startsWith('exclude all/nojur: jurisdiction_unknown')));
    // Also with a streaming request and a raised class.
    const s = await chat(g, keys['kenya']!, 'all', { extra: { stream: true }, headers: { 'x-sovra-data-class': 'secret' } });
    expectError(s, 451, 'residency_no_allowed_backend');
  });
});

// ------------------------------------------------------------------------------------------------
// 2. residency under failure: retries, fallback aliases, panic mode
// ------------------------------------------------------------------------------------------------

describe('residency under failure: retry, fallback alias, panic', () => {
  let g: TestGateway;
  let fm: AdvUpstream; // MY
  let fsg: AdvUpstream; // SG
  let pm: AdvUpstream; // MY (panic test)
  let psg: AdvUpstream; // SG (panic test)
  let cm: AdvUpstream; // MY (connect failures)
  let csg: AdvUpstream; // SG
  const keys: Record<string, string> = {};

  before(async () => {
    fm = await advUpstream('fm');
    fsg = await advUpstream('fsg');
    pm = await advUpstream('pm');
    psg = await advUpstream('psg');
    cm = await advUpstream('cm');
    csg = await advUpstream('csg');
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        residency: { tenants: { moh: { allowed_jurisdictions: ['MY'] } } },
        backends: [
          backend('fm', fm, { jurisdiction: 'MY', breaker: { failures: 100 } }),
          backend('fsg', fsg, { jurisdiction: 'SG' }),
          backend('pm', pm, { jurisdiction: 'MY', breaker: { failures: 2, open_ms: 60_000, max_open_ms: 60_000 } }),
          backend('psg', psg, { jurisdiction: 'SG' }),
          backend('cm', cm, { jurisdiction: 'MY', breaker: { failures: 100 } }),
          backend('csg', csg, { jurisdiction: 'SG' }),
        ],
        models: [
          { name: 'pair', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'fm' }, { backend: 'fsg' }] },
          { name: 'solo-my', backend: 'cm', fallbacks: ['solo-sg'], retry: { attempts: 3, base_ms: 0, max_ms: 0 } },
          { name: 'solo-sg', backend: 'csg' },
          { name: 'panic-pair', strategy: 'weighted', retry: { attempts: 2, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'pm' }, { backend: 'psg' }] },
        ],
      },
    });
    keys['moh'] = (await createKey(g.gw.store(), { tenant: 'moh', name: 'k' })).key;
  });
  after(async () => {
    await g.close();
    await stopAll(fm, fsg, pm, psg, cm, csg);
  });

  it('5xx / 429 from the only allowed backend: retries never go abroad; the upstream error is relayed', async () => {
    for (const mode of [{ kind: 'status', status: 503 }, { kind: 'status', status: 429, headers: { 'retry-after-ms': '1' } }, { kind: 'status', status: 500 }] as const) {
      fm.mode = mode;
      const p = newMarker('r5');
      for (let i = 0; i < 4; i++) {
        const r = await chat(g, keys['moh']!, 'pair', { marker: `${p}-${i}` });
        assert.equal(r.status, mode.status, r.text);
        assert.equal(r.json!['error'].code, `status_${mode.status}`);
      }
      assert.equal(gotPrefix(fsg, p), 0, `SG untouched (${mode.status})`);
      assert.equal(gotPrefix(fm, p), 4, 'each request reached the MY backend exactly once');
    }
    // The unrestricted tenant is retried onto SG.
    fm.mode = { kind: 'status', status: 503 };
    const u = await chat(g, g.key, 'pair');
    assert.equal(u.status, 200, u.text);
    fm.mode = { kind: 'ok' };
  });

  it('connect errors: the fallback alias abroad is never used for the MY tenant (451 residency_allowed_backends_unavailable)', async () => {
    await cm.stop();
    try {
      for (let i = 0; i < 3; i++) {
        const r = await chat(g, keys['moh']!, 'solo-my', { extra: i === 2 ? { stream: true } : {} });
        expectError(r, 451, 'residency_allowed_backends_unavailable');
        assert.equal(got(csg, r.marker), 0);
        const e = await entryOf(g, r.id);
        assert.ok(e.policy.residency.some((l) => l.startsWith('exclude solo-sg/csg: jurisdiction_not_allowed')), JSON.stringify(e.policy.residency));
        assert.ok(e.policy.residency.some((l) => l === 'attempt 1 solo-my/cm: connect, retrying' || l.startsWith('attempt 1 solo-my/cm')), JSON.stringify(e.policy.residency));
      }
      const u = await chat(g, g.key, 'solo-my');
      assert.equal(u.status, 200, 'an unrestricted tenant falls back abroad');
      assert.equal(got(csg, u.marker), 1);
    } finally {
      await cm.start();
    }
  });

  it('panic mode (every allowed candidate ejected) tries the ejected MY backend, never the healthy SG one', async () => {
    await pm.stop();
    // Open pm's breaker (2 failures) with the unrestricted tenant: those are retried onto psg.
    for (let i = 0; i < 4; i++) assert.equal((await chat(g, g.key, 'panic-pair')).status, 200);
    const snap = g.gw.routing().report().find((b) => b.id === 'pm')!;
    assert.equal(snap.health.state, 'open');
    await pm.start();
    for (let i = 0; i < 3; i++) {
      const r = await chat(g, keys['moh']!, 'panic-pair');
      assert.equal(r.status, 200, r.text);
      assert.equal(got(pm, r.marker), 1, 'served by the ejected MY backend (panic)');
      assert.equal(got(psg, r.marker), 0, 'never by the admissible SG backend');
      const e = await entryOf(g, r.id);
      assert.ok(e.policy.residency.some((l) => l.startsWith('panic: every candidate is ejected; trying pm anyway')), JSON.stringify(e.policy.residency));
    }
    // Panic happens only for the first attempt: pm down again → 451, SG still untouched.
    await pm.stop();
    const r = await chat(g, keys['moh']!, 'panic-pair');
    expectError(r, 451, 'residency_allowed_backends_unavailable');
    assert.equal(got(psg, r.marker), 0);
    await pm.start();
  });
});

// ------------------------------------------------------------------------------------------------
// 3. retries: only before the first byte, never twice to one backend, charged once
// ------------------------------------------------------------------------------------------------

describe('retries: before the first byte only, one backend once, one record, one charge', () => {
  let g: TestGateway;
  let r1: AdvUpstream;
  let r2: AdvUpstream;
  let r3: AdvUpstream;
  const brk = { failures: 1000 };

  before(async () => {
    r1 = await advUpstream('r1');
    r2 = await advUpstream('r2');
    r3 = await advUpstream('r3');
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        backends: [backend('r1', r1, { jurisdiction: 'MY', breaker: brk }), backend('r2', r2, { jurisdiction: 'MY', breaker: brk }), backend('r3', r3, { jurisdiction: 'MY', breaker: brk })],
        models: [
          { name: 'two', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'r1' }, { backend: 'r2' }] },
          { name: 'three', strategy: 'least_in_flight', retry: { attempts: 10, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'r1' }, { backend: 'r2' }, { backend: 'r3' }] },
          { name: 'prim', backend: 'r1', fallbacks: ['shared'], retry: { attempts: 5, base_ms: 0, max_ms: 0 } },
          { name: 'shared', strategy: 'weighted', pool: [{ backend: 'r1' }, { backend: 'r2' }] },
        ],
      },
    });
  });
  after(async () => {
    await g.close();
    await stopAll(r1, r2, r3);
  });

  const reset = () => {
    for (const u of [r1, r2, r3]) u.mode = { kind: 'ok' };
  };

  it('a 5xx then a success: one request record, budget charged exactly one request\'s usage', async () => {
    const k = await createKey(g.gw.store(), { tenant: 'payer', name: 'payer' });
    await createBudget(g.gw.store(), { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1_000_000, period: 'month' });
    r1.mode = { kind: 'status', status: 502 };
    r2.mode = { kind: 'ok' };
    const served: Reply[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await chat(g, k.key, 'three', { extra: { max_tokens: 50 } });
      assert.equal(r.status, 200, r.text);
      served.push(r);
      assert.ok(got(r1, r.marker) <= 1 && got(r2, r.marker) <= 1 && got(r3, r.marker) <= 1, 'no backend saw it twice');
    }
    for (const s of [{ stream: true }, { stream: true, stream_options: { include_usage: true } }]) {
      const r = await chat(g, k.key, 'three', { extra: { max_tokens: 50, ...s } });
      assert.equal(r.status, 200);
      assert.match(r.text, /\[DONE\]/);
      served.push(r);
    }
    const rows = (await g.records()).filter((x) => x.key_id === k.id);
    assert.equal(rows.length, served.length, 'exactly one record per request, retries included');
    assert.ok(rows.every((x) => x.status === 200 && x.total_tokens === 8), JSON.stringify(rows.map((x) => [x.status, x.total_tokens])));
    await g.gw.metering()?.flush(); // this process's allotments: write usage, give back the rest
    const [state] = await listBudgets(g.gw.store(), { scopes: [{ kind: 'key', id: k.id }] });
    assert.equal(state!.used, 8 * served.length, 'charged once per request');
    assert.equal(state!.reserved, 0, 'no reservation left behind by a retry');
    reset();
  });

  it('every backend failing: each is tried exactly once (attempts > pool size), the last upstream error is relayed', async () => {
    for (const u of [r1, r2, r3]) u.mode = { kind: 'status', status: 503 };
    const r = await chat(g, g.key, 'three');
    assert.equal(r.status, 503);
    assert.equal(r.json!['error'].code, 'status_503');
    assert.deepEqual([got(r1, r.marker), got(r2, r.marker), got(r3, r.marker)], [1, 1, 1]);
    const e = await entryOf(g, r.id);
    assert.equal(e.policy.residency.filter((l) => l.startsWith('attempt ')).length, 3, JSON.stringify(e.policy.residency));
    const rows = (await g.records()).filter((x) => x.id === r.id);
    assert.equal(rows.length, 1);
    reset();
  });

  it('a backend shared by the primary pool and a fallback alias is not sent the request twice', async () => {
    r1.mode = { kind: 'status', status: 500 };
    for (let i = 0; i < 3; i++) {
      const r = await chat(g, g.key, 'prim');
      assert.equal(r.status, 200, r.text);
      assert.equal(got(r1, r.marker), 1);
      assert.equal(got(r2, r.marker), 1);
    }
    reset();
  });

  it('connection reset after the request was sent: retried elsewhere, never on the same backend', async () => {
    r1.mode = { kind: 'reset' };
    for (let i = 0; i < 4; i++) {
      const r = await chat(g, g.key, 'two');
      assert.equal(r.status, 200, r.text);
      assert.ok(got(r1, r.marker) <= 1);
      assert.equal(got(r2, r.marker), 1);
    }
    reset();
  });

  it('4xx answers are not retried', async () => {
    r1.mode = { kind: 'status', status: 400 };
    r2.mode = { kind: 'status', status: 400 };
    r3.mode = { kind: 'status', status: 400 };
    const r = await chat(g, g.key, 'three');
    assert.equal(r.status, 400);
    assert.equal(got(r1, r.marker) + got(r2, r.marker) + got(r3, r.marker), 1);
    reset();
  });

  it('a stream is never retried once it started: not after a mid-stream break, not after bare SSE headers', async () => {
    for (const u of [r1, r2, r3]) u.mode = { kind: 'stream_reset_after_headers' };
    for (let i = 0; i < 3; i++) {
      const r = await chat(g, g.key, 'three', { extra: { stream: true } });
      assert.equal(r.status, 200);
      assert.doesNotMatch(r.text, /\[DONE\]/);
      assert.match(r.text, /"code":"(upstream_stream_interrupted|upstream_empty_stream)"/);
      assert.equal(got(r1, r.marker) + got(r2, r.marker) + got(r3, r.marker), 1, 'exactly one backend saw it');
      const rows = (await g.records()).filter((x) => x.id === r.id);
      assert.equal(rows.length, 1);
    }
    reset();
  });
});

// ------------------------------------------------------------------------------------------------
// 4. breakers, half-open probes, max_in_flight
// ------------------------------------------------------------------------------------------------

describe('breakers and concurrency limits, counted at the upstreams', () => {
  let g: TestGateway;
  let h1: AdvUpstream;
  let h2: AdvUpstream;
  let c1: AdvUpstream;
  let c2: AdvUpstream;

  before(async () => {
    h1 = await advUpstream('h1');
    h2 = await advUpstream('h2');
    c1 = await advUpstream('c1');
    c2 = await advUpstream('c2');
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        backends: [
          backend('h1', h1, { jurisdiction: 'MY', breaker: { failures: 1, open_ms: 300, max_open_ms: 1000, half_open_probes: 2 } }),
          backend('h2', h2, { jurisdiction: 'MY' }),
          backend('c1', c1, { jurisdiction: 'MY', max_in_flight: 2 }),
          backend('c2', c2, { jurisdiction: 'MY', max_in_flight: 3 }),
        ],
        models: [
          { name: 'hp', strategy: 'weighted', retry: { attempts: 2, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'h1' }, { backend: 'h2' }] },
          { name: 'cap', strategy: 'least_in_flight', retry: { attempts: 2, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'c1' }, { backend: 'c2' }] },
        ],
      },
    });
  });
  after(async () => {
    await g.close();
    await stopAll(h1, h2, c1, c2);
  });

  const state = (id: string) => g.gw.routing().report().find((b) => b.id === id)!.health;

  it('ejection → half-open admits at most half_open_probes concurrent trials → readmission', async () => {
    h1.mode = { kind: 'status', status: 503 };
    const first = await chat(g, g.key, 'hp');
    assert.equal(first.status, 200, 'retried on h2');
    assert.equal(state('h1').state, 'open');
    // While open: nothing reaches h1.
    const seenOpen = h1.seen.length;
    for (let i = 0; i < 4; i++) assert.equal((await chat(g, g.key, 'hp')).status, 200);
    assert.equal(h1.seen.length, seenOpen, 'no request to an open backend while another is healthy');
    await until(() => state('h1').state === 'half_open', 5000, 'half-open');
    h1.mode = { kind: 'ok' };
    h1.closeGate();
    h1.resetMax();
    const pending: Array<Promise<Reply>> = [];
    for (let i = 0; i < 10; i++) pending.push(chat(g, g.key, 'hp'));
    const t = tracked(pending);
    // Every request either waits at h1 (a trial) or was served by h2.
    await until(() => h1.current() + t.settled() === 10, 5000, 'all routed');
    assert.ok(h1.current() >= 1, 'h1 got trial traffic');
    assert.ok(h1.max() <= 2, `at most 2 concurrent trial requests at h1, saw ${h1.max()}`);
    h1.openGate();
    const rs = await t.all();
    assert.ok(rs.every((r) => r.status === 200));
    await until(() => state('h1').state === 'closed', 5000, 'closed after successful trials');
  });

  it('max_in_flight holds under a burst: never more at an upstream than its limit; the rest get 503 backend_unavailable', async () => {
    c1.closeGate();
    c2.closeGate();
    c1.resetMax();
    c2.resetMax();
    const pending: Array<Promise<Reply>> = [];
    for (let i = 0; i < 12; i++) pending.push(chat(g, g.key, 'cap'));
    const t = tracked(pending);
    await c1.waitCurrent(2);
    await c2.waitCurrent(3);
    // The 7 others are refused at once (nothing is admissible; at_capacity is never panicked into).
    await until(() => t.settled() === 7, 5000, 'refusals');
    const refused = (await Promise.all(pending.map((p) => Promise.race([p, sleep(20).then(() => null)])))).filter((x): x is Reply => x !== null);
    assert.equal(refused.length, 7);
    for (const r of refused) expectError(r, 503, 'backend_unavailable');
    assert.ok(refused.every((r) => r.headers.get('retry-after') !== null));
    assert.equal(c1.max(), 2);
    assert.equal(c2.max(), 3);
    c1.openGate();
    c2.openGate();
    const rs = await t.all();
    assert.equal(rs.filter((r) => r.status === 200).length, 5);
    assert.equal(c1.current() + c2.current(), 0);
    await until(() => state('c1').in_flight === 0 && state('c2').in_flight === 0, 2000, 'in-flight released');
  });
});

// ------------------------------------------------------------------------------------------------
// 5. hot reload
// ------------------------------------------------------------------------------------------------

describe('hot reload', () => {
  let g: TestGateway;
  let a: AdvUpstream; // MY
  let b: AdvUpstream; // MY
  let s: AdvUpstream; // SG
  let x: AdvUpstream; // MY, removed by a reload
  let adminKey: string;
  const keys: Record<string, string> = {};

  before(async () => {
    a = await advUpstream('a');
    b = await advUpstream('b');
    s = await advUpstream('s');
    x = await advUpstream('x');
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        residency: { tenants: { moh: { allowed_jurisdictions: ['MY', 'SG'] }, other: { allowed_jurisdictions: ['MY'] } } },
        backends: [
          backend('a', a, { jurisdiction: 'MY', breaker: { failures: 1000 } }),
          backend('b', b, { jurisdiction: 'MY', breaker: { failures: 1000 } }),
          backend('s', s, { jurisdiction: 'SG', breaker: { failures: 1000 } }),
          backend('x', x, { jurisdiction: 'MY', breaker: { failures: 1000 } }),
        ],
        models: [
          { name: 'mix', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'a' }, { backend: 'b' }, { backend: 's' }] },
          { name: 'xs', backend: 'x' },
        ],
      },
    });
    keys['moh'] = (await createKey(g.gw.store(), { tenant: 'moh', name: 'k' })).key;
    keys['other'] = (await createKey(g.gw.store(), { tenant: 'other', name: 'k' })).key;
    adminKey = (await createAdmin({ store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' }, { role: 'platform-admin' })).secret;
  });
  after(async () => {
    await g.close();
    await stopAll(a, b, s, x);
  });

  const reloadApi = async () => {
    const r = await fetch(`${g.origin}/admin/v1/config/reload`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}` } });
    const text = await r.text();
    return { status: r.status, json: (text.startsWith('{') ? JSON.parse(text) : null) as Record<string, any> | null };
  };

  it('a reload that tightens a tenant\'s policy applies to every request planned after it', async () => {
    editConfig(g, (c) => (c['residency']['tenants']['moh']['allowed_jurisdictions'] = ['MY']));
    await g.gw.reload();
    const p = newMarker('tight');
    for (let i = 0; i < 9; i++) assert.equal((await chat(g, keys['moh']!, 'mix', { marker: `${p}-${i}` })).status, 200);
    assert.equal(gotPrefix(s, p), 0);
    editConfig(g, (c) => (c['residency']['tenants']['moh']['allowed_jurisdictions'] = ['MY', 'SG']));
    await g.gw.reload();
  });

  it('concurrent reloads are serialised: distinct increasing generations, the last one wins, one audit entry each', async () => {
    const gen0 = g.gw.routing().table().generation;
    const entries0 = (await adminEntries(g, 'config.reload')).length;
    const base = parse(readFileSync(g.configPath, 'utf8')) as Record<string, any>;
    const cfgs = [1, 2, 3, 4, 5, 6].map((n) => {
      const c = structuredClone(base);
      c['models'].push({ name: `gen-${n}`, backend: 'a' });
      return parseConfig(stringify(c), 'inline', {});
    });
    const sums = await Promise.all(cfgs.map((c) => g.gw.reload(c)));
    const gens = sums.map((x) => x.generation);
    assert.deepEqual(gens, [1, 2, 3, 4, 5, 6].map((n) => gen0 + n));
    assert.equal(g.gw.routing().table().generation, gen0 + 6);
    assert.equal((await chat(g, g.key, 'gen-6')).status, 200);
    assert.equal((await chat(g, g.key, 'gen-5')).status, 404);
    await until(async () => (await adminEntries(g, 'config.reload')).length === entries0 + 6, 10_000, 'six reload entries');
    // Back to the file; several admin reloads at once all succeed.
    const rs = await Promise.all([reloadApi(), reloadApi(), reloadApi()]);
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
    assert.equal((await chat(g, g.key, 'gen-6')).status, 404);
  });

  it('reload during traffic (bounded): every request answered 200, restricted traffic never abroad', async () => {
    const p = newMarker('load');
    let i = 0;
    const results: number[] = [];
    const worker = async () => {
      while (i < 240) {
        const n = i++;
        const r = await chat(g, keys['other']!, 'mix', { marker: `${p}-${n}` });
        results.push(r.status);
      }
    };
    const reloader = async () => {
      for (let k = 0; k < 12; k++) {
        editConfig(g, (c) => (c['residency']['tenants']['moh']['allowed_jurisdictions'] = k % 2 ? ['MY'] : ['MY', 'SG']));
        await g.gw.reload();
        await sleep(5);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker(), worker(), worker(), worker(), worker(), reloader()]);
    assert.equal(results.length, 240);
    assert.deepEqual([...new Set(results)], [200]);
    assert.equal(gotPrefix(s, p), 0);
  });

  it('a reload that removes a backend lets its in-flight streams finish', async () => {
    x.mode = { kind: 'slow_stream', chunks: 6, intervalMs: 80 };
    const streams = [chat(g, g.key, 'xs', { extra: { stream: true } }), chat(g, g.key, 'xs', { extra: { stream: true } })];
    await x.waitCurrent(2);
    const saved = readFileSync(g.configPath, 'utf8');
    editConfig(g, (c) => {
      c['backends'] = c['backends'].filter((bk: { id: string }) => bk.id !== 'x');
      c['models'] = c['models'].filter((m: { name: string }) => m.name !== 'xs');
    });
    const sum = await g.gw.reload();
    assert.deepEqual(sum.removed, ['x']);
    assert.equal((await chat(g, g.key, 'xs')).status, 404, 'new requests no longer see the alias');
    for (const r of await Promise.all(streams)) {
      assert.equal(r.status, 200);
      assert.match(r.text, /part5 from x/);
      assert.match(r.text, /\[DONE\]/);
      assert.doesNotMatch(r.text, /"error"/);
    }
    writeFileSync(g.configPath, saved);
    await g.gw.reload();
    x.mode = { kind: 'ok' };
    assert.equal((await chat(g, g.key, 'xs')).status, 200);
  });

  it('an invalid file is refused (400 naming the path) and the running configuration is kept', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    const gen = g.gw.routing().table().generation;
    editConfig(g, (c) => c['models'].push({ name: 'bad', pool: [{ backend: 'a' }, { backend: 'nope' }] }));
    const r = await reloadApi();
    expectError(r, 400, 'invalid_configuration');
    assert.match(r.json!['error'].message, /models\[2\]\.pool\[1\]\.backend: unknown backend "nope"/);
    assert.equal(g.gw.routing().table().generation, gen);
    assert.equal((await chat(g, g.key, 'mix')).status, 200);
    writeFileSync(g.configPath, saved);
  });

  it('a reload whose audit entry cannot be written: 503 audit_unavailable, nothing changes', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    const gen = g.gw.routing().table().generation;
    editConfig(g, (c) => (c['residency']['tenants']['moh']['allowed_jurisdictions'] = ['KE']));
    const journal = g.gw.recorder() as unknown as { write: (...a: unknown[]) => Promise<unknown> };
    const orig = journal.write;
    journal.write = async () => {
      throw new Error('disk full');
    };
    try {
      const r = await reloadApi();
      expectError(r, 503, 'audit_unavailable');
      await assert.rejects(g.gw.reload(), (e: unknown) => (e as { code?: string }).code === 'audit_unavailable');
    } finally {
      journal.write = orig;
    }
    assert.equal(g.gw.routing().table().generation, gen);
    assert.equal((await chat(g, keys['moh']!, 'mix')).status, 200, 'the old policy (MY, SG) still applies');
    writeFileSync(g.configPath, saved);
  });
});

// ------------------------------------------------------------------------------------------------
// 6. configuration validation
// ------------------------------------------------------------------------------------------------

describe('configuration validation names the path', () => {
  const base = () => ({
    backends: [
      { id: 'a', provider: 'openai-compatible', base_url: 'http://127.0.0.1:9/v1', jurisdiction: 'MY' },
      { id: 'b', provider: 'openai-compatible', base_url: 'http://127.0.0.1:9/v1', jurisdiction: 'SG' },
    ],
    models: [{ name: 'm', backend: 'a' }] as Array<Record<string, unknown>>,
  });
  const issues = (cfg: Record<string, unknown>): string[] => {
    try {
      parseConfig(stringify(cfg), 'test.yaml', {});
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e.issues;
    }
    return [];
  };
  const expectIssue = (cfg: Record<string, unknown>, re: RegExp) => {
    const list = issues(cfg);
    assert.ok(list.some((l) => re.test(l)), `expected ${re} in ${JSON.stringify(list)}`);
  };

  it('pool naming an unknown backend', () => {
    const c = base();
    c.models = [{ name: 'm', pool: [{ backend: 'a' }, { backend: 'ghost' }] }];
    expectIssue(c, /^models\[0\]\.pool\[1\]\.backend: unknown backend "ghost"/);
  });

  it('duplicate pool members', () => {
    const c = base();
    c.models = [{ name: 'm', pool: [{ backend: 'a' }, { backend: 'b' }, { backend: 'a', weight: 3 }] }];
    expectIssue(c, /^models\[0\]\.pool\[2\]\.backend: backend "a" is already in this pool/);
  });

  it('backend and pool both, or neither', () => {
    const c = base();
    c.models = [{ name: 'both', backend: 'a', pool: [{ backend: 'b' }] }, { name: 'neither' }];
    const list = issues(c);
    assert.ok(list.some((l) => /^models\[0\]: give exactly one of "backend" or "pool"/.test(l)), JSON.stringify(list));
    assert.ok(list.some((l) => /^models\[1\]: give exactly one of "backend" or "pool"/.test(l)), JSON.stringify(list));
  });

  it('unknown classification names (backend ceiling, tenant default, transfer basis)', () => {
    const c: Record<string, any> = base();
    c['backends'][0].max_classification = 'top';
    c['residency'] = {
      classifications: ['public', 'secret'],
      default: { default_classification: 'internal' },
      tenants: { t: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG', basis: 'x', max_classification: 'Secret' }] } },
    };
    const list = issues(c);
    for (const re of [/^backends\[0\]\.max_classification: unknown classification "top"/, /^residency\.default\.default_classification: unknown classification "internal"/, /^residency\.tenants\.t\.transfer_bases\[0\]\.max_classification: unknown classification "Secret"/])
      assert.ok(list.some((l) => re.test(l)), `${re} in ${JSON.stringify(list)}`);
  });

  it('jurisdiction codes: "MYS", "my", "MY-" are refused; "MY-14" is accepted', () => {
    for (const bad of ['MYS', 'my', 'MY-', 'M', 'MY-1234']) {
      const c: Record<string, any> = base();
      c['backends'][0].jurisdiction = bad;
      expectIssue(c, /^backends\[0\]\.jurisdiction: must be an ISO 3166-1 alpha-2 code/);
      const d: Record<string, any> = base();
      d['residency'] = { tenants: { t: { allowed_jurisdictions: [bad] } } };
      expectIssue(d, /^residency\.tenants\.t\.allowed_jurisdictions\[0\]/);
    }
    const ok: Record<string, any> = base();
    ok['backends'][0].jurisdiction = 'MY-14';
    assert.deepEqual(issues(ok), []);
  });

  it('a fallback to itself and to an unknown model', () => {
    const c = base();
    c.models = [{ name: 'm', backend: 'a', fallbacks: ['m', 'zz'] }];
    const list = issues(c);
    assert.ok(list.some((l) => /^models\[0\]\.fallbacks\[0\]: a model cannot fall back to itself/.test(l)), JSON.stringify(list));
    assert.ok(list.some((l) => /^models\[0\]\.fallbacks\[1\]: unknown model "zz"/.test(l)), JSON.stringify(list));
  });

  it('a fallback cycle a→b→a is refused', { skip: !RUN_BUGS && 'DESIGN (kept): fallbacks are not followed transitively, so a cycle is harmless and allowed (docs/routing.md); was: crossCheck only rejects a model falling back to itself; a→b→a is accepted silently (harmless at run time because fallbacks are not followed transitively, but the promised validation is missing)' }, () => {
    const c = base();
    c.models = [
      { name: 'x', backend: 'a', fallbacks: ['y'] },
      { name: 'y', backend: 'b', fallbacks: ['x'] },
    ];
    expectIssue(c, /^models\[\d\]\.fallbacks\[0\]: .*cycle/);
  });

  it('breaker open_ms above max_open_ms is refused at validation', () => {
    const c: Record<string, any> = base();
    c['backends'][0].breaker = { open_ms: 600_000 };
    expectIssue(c, /^backends\[0\]\.breaker/);
  });
});

// ------------------------------------------------------------------------------------------------
// 7. defects found (each test asserts the expected behaviour; skipped while the bug stands)
// ------------------------------------------------------------------------------------------------

describe('defects', () => {
  let g: TestGateway;
  let ly: AdvUpstream; // MY, slow 503
  let ls: AdvUpstream; // SG
  let cy: AdvUpstream; // MY, slow 503
  let cx: AdvUpstream; // MY
  let mz: AdvUpstream; // MY, max_in_flight 2
  let hs: AdvUpstream; // MY, single backend with a breaker
  let ta: AdvUpstream; // MY, hangs (first-byte timeout)
  let tb: AdvUpstream; // MY
  let tsg: AdvUpstream; // SG
  let sgt: AdvUpstream; // SG, reached on a transfer basis from a 60-member pool
  let oa: AdvUpstream; // alias 'onprem' (falls back to 'cloud')
  let ob: AdvUpstream; // alias 'cloud'
  let d1: AdvUpstream; // slow 503
  let d2: AdvUpstream; // slow 200
  let adminKey: string;
  const keys: Record<string, string> = {};
  const KE = 59;

  before(async () => {
    ly = await advUpstream('ly');
    ls = await advUpstream('ls');
    cy = await advUpstream('cy');
    cx = await advUpstream('cx');
    mz = await advUpstream('mz');
    hs = await advUpstream('hs');
    ta = await advUpstream('ta', { kind: 'hang' });
    tb = await advUpstream('tb');
    tsg = await advUpstream('tsg');
    sgt = await advUpstream('sgt');
    oa = await advUpstream('oa');
    ob = await advUpstream('ob');
    d1 = await advUpstream('d1', { kind: 'status', status: 503, delayMs: 800 });
    d2 = await advUpstream('d2', { kind: 'ok', delayMs: 800 });
    const nf = { failures: 1000 };
    const ke = Array.from({ length: KE }, (_, i) => ({ id: `ke${i}`, provider: 'openai-compatible', base_url: 'http://127.0.0.1:9/v1', jurisdiction: 'KE' }));
    g = await startGateway({
      config: {
        audit: { checkpoint_interval_ms: 20 },
        residency: {
          tenants: {
            flex: { allowed_jurisdictions: ['MY', 'SG'] },
            moh: { allowed_jurisdictions: ['MY'] },
            trade: { allowed_jurisdictions: ['MY'], transfer_bases: [{ destination: 'SG', basis: 'SCC-X', expires: '2099-12-31' }] },
          },
        },
        backends: [
          backend('ly', ly, { jurisdiction: 'MY', breaker: nf }),
          backend('ls', ls, { jurisdiction: 'SG', breaker: nf }),
          backend('cy', cy, { jurisdiction: 'MY', breaker: nf }),
          backend('cx', cx, { jurisdiction: 'MY', breaker: nf }),
          backend('mz', mz, { jurisdiction: 'MY', max_in_flight: 2 }),
          backend('hs', hs, { jurisdiction: 'MY', breaker: { failures: 1, open_ms: 200, max_open_ms: 1000, half_open_probes: 1 } }),
          backend('ta', ta, { jurisdiction: 'MY', timeouts: { first_byte_ms: 300 }, breaker: nf }),
          backend('tb', tb, { jurisdiction: 'MY', breaker: nf }),
          backend('tsg', tsg, { jurisdiction: 'SG', breaker: nf }),
          ...ke,
          backend('sgt', sgt, { jurisdiction: 'SG' }),
          backend('oa', oa, { jurisdiction: 'MY', breaker: nf }),
          backend('ob', ob, { jurisdiction: 'MY', breaker: nf }),
          backend('d1', d1, { jurisdiction: 'MY', breaker: nf }),
          backend('d2', d2, { jurisdiction: 'MY', breaker: nf }),
        ],
        models: [
          { name: 'flex', strategy: 'weighted', retry: { attempts: 2, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'ly' }, { backend: 'ls' }] },
          { name: 'closed', strategy: 'weighted', retry: { attempts: 2, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'cy' }, { backend: 'cx' }] },
          { name: 'mz', backend: 'mz', retry: { attempts: 1 } },
          { name: 'hs', backend: 'hs', retry: { attempts: 1 } },
          { name: 'tmo', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'ta' }, { backend: 'tb' }, { backend: 'tsg' }] },
          { name: 'tmo2', strategy: 'weighted', retry: { attempts: 3, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'ta' }, { backend: 'tb' }, { backend: 'tsg' }] },
          { name: 'big', strategy: 'weighted', pool: [...ke.map((k) => ({ backend: k.id })), { backend: 'sgt' }] },
          { name: 'onprem', backend: 'oa', fallbacks: ['cloud'] },
          { name: 'cloud', backend: 'ob' },
          { name: 'deadline', strategy: 'weighted', retry: { attempts: 2, base_ms: 0, max_ms: 0 }, pool: [{ backend: 'd1' }, { backend: 'd2' }] },
        ],
      },
    });
    for (const t of ['flex', 'moh', 'trade']) keys[t] = (await createKey(g.gw.store(), { tenant: t, name: 'k' })).key;
    adminKey = (await createAdmin({ store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' }, { role: 'platform-admin' })).secret;
  });
  after(async () => {
    await g.close();
    await stopAll(ly, ls, cy, cx, mz, hs, ta, tb, tsg, sgt, oa, ob, d1, d2);
  });

  const reloadApi = async () => {
    const r = await fetch(`${g.origin}/admin/v1/config/reload`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}` } });
    const text = await r.text();
    return { status: r.status, json: (text.startsWith('{') ? JSON.parse(text) : null) as Record<string, any> | null };
  };

  it('LEAK: a retry after a hot reload that excludes SG still goes to SG (plan of the old table)', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    ly.mode = { kind: 'status', status: 503, delayMs: 1000 };
    const pending = chat(g, keys['flex']!, 'flex');
    await ly.waitCurrent(1); // attempt 1 is at the MY backend
    editConfig(g, (c) => (c['residency']['tenants']['flex']['allowed_jurisdictions'] = ['MY']));
    await g.gw.reload();
    const reloadedAt = performance.now();
    const r = await pending;
    ly.mode = { kind: 'ok' };
    writeFileSync(g.configPath, saved);
    await g.gw.reload();
    const leaked = ls.seen.filter((s) => s.body.includes(r.marker) && s.at > reloadedAt);
    assert.equal(leaked.length, 0, `the SG backend received the request ${leaked.length ? (leaked[0]!.at - reloadedAt).toFixed(0) : '?'} ms after the reload that forbids SG had completed (status ${r.status})`);
  });

  it('a retry planned before a reload that changed the other pool member fails with 502 (closed provider)', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    cy.mode = { kind: 'status', status: 503, delayMs: 1000 };
    const pending = chat(g, g.key, 'closed');
    await cy.waitCurrent(1);
    editConfig(g, (c) => (c['backends'].find((bk: { id: string }) => bk.id === 'cx').operator = 'new operator text'));
    const sum = await g.gw.reload();
    assert.deepEqual(sum.changed, ['cx']);
    const r = await pending;
    cy.mode = { kind: 'ok' };
    writeFileSync(g.configPath, saved);
    await g.gw.reload();
    assert.equal(r.status, 200, `expected the retry to be served by cx; got ${r.status} ${r.text}`);
  });

  it('max_in_flight is exceeded after a reload that changes the backend\'s configuration', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    mz.closeGate();
    mz.resetMax();
    const first = [chat(g, g.key, 'mz'), chat(g, g.key, 'mz')];
    await mz.waitCurrent(2);
    expectError(await chat(g, g.key, 'mz'), 503, 'backend_unavailable');
    editConfig(g, (c) => (c['backends'].find((bk: { id: string }) => bk.id === 'mz').operator = 'renamed'));
    await g.gw.reload();
    const more = [chat(g, g.key, 'mz'), chat(g, g.key, 'mz')];
    // Bounded wait: either both are refused, or they reach the upstream.
    const t = tracked(more);
    await until(() => mz.current() + t.settled() >= 4, 3000, 'the two new requests routed');
    const maxSeen = mz.max();
    mz.openGate();
    await Promise.all([...first, ...more]);
    writeFileSync(g.configPath, saved);
    await g.gw.reload();
    assert.ok(maxSeen <= 2, `the upstream saw ${maxSeen} concurrent requests with max_in_flight 2`);
  });

  it('half-open admits more than half_open_probes concurrent trials when the backend is the only candidate (panic)', { skip: !RUN_BUGS && 'DESIGN (kept): panic mode ignores health for a request\'s first attempt, half-open limits included (docs/routing.md); was: RoutePlan.admissible(panic) (routing/router.ts) admits `half_open_busy` members; with a single-backend alias every request past the trial limit is panicked in, so half_open_probes never limits a recovering single backend' }, async () => {
    hs.mode = { kind: 'status', status: 503 };
    assert.equal((await chat(g, g.key, 'hs')).status, 503);
    const st = () => g.gw.routing().report().find((b) => b.id === 'hs')!.health;
    assert.equal(st().state, 'open');
    await until(() => st().state === 'half_open', 3000, 'half-open');
    hs.mode = { kind: 'ok' };
    hs.closeGate();
    hs.resetMax();
    const pending = [chat(g, g.key, 'hs'), chat(g, g.key, 'hs'), chat(g, g.key, 'hs')];
    const t = tracked(pending);
    await hs.waitCurrent(1);
    await until(() => hs.current() + t.settled() === 3, 3000, 'all routed');
    const maxSeen = hs.max();
    hs.openGate();
    await Promise.all(pending);
    assert.ok(maxSeen <= 1, `${maxSeen} concurrent trial requests reached a half-open backend with half_open_probes: 1`);
  });

  it('the audit entry of a cross-border request always records the transfer basis used', async () => {
    const r = await chat(g, keys['trade']!, 'big');
    assert.equal(r.status, 200, r.text);
    assert.equal(got(sgt, r.marker), 1);
    const e = await entryOf(g, r.id);
    assert.equal(e.backend, 'sgt');
    assert.ok(e.policy.residency.includes('transfer sgt (SG): SCC-X'), `no transfer line in ${e.policy.residency.length} lines; last: ${JSON.stringify(e.policy.residency.slice(-2))}`);
  });

  it('a first-byte timeout on one allowed backend is not reported as "every allowed backend failed" (451)', async () => {
    const control = await chat(g, g.key, 'tmo2');
    assert.equal(control.status, 504, `unrestricted tenant: ${control.text}`);
    const r = await chat(g, keys['moh']!, 'tmo');
    assert.equal(got(tb, r.marker), 0, 'the other allowed backend was never tried');
    assert.equal(r.status, 504, `restricted tenant gets ${r.status} ${r.json?.['error']?.code}: ${r.json?.['error']?.message}`);
  });

  it('a reload with an invalid breaker (open_ms > max_open_ms) is refused as invalid, and no reload entry is logged', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    const before = (await adminEntries(g, 'config.reload')).length;
    const gen = g.gw.routing().table().generation;
    editConfig(g, (c) => c['backends'].push({ id: 'slowbrk', provider: 'openai-compatible', base_url: 'http://127.0.0.1:9/v1', breaker: { open_ms: 600_000 } }));
    const r = await reloadApi();
    writeFileSync(g.configPath, saved);
    const afterN = (await adminEntries(g, 'config.reload')).length;
    assert.equal(g.gw.routing().table().generation, gen, 'not applied');
    assert.equal(afterN, before, `a config.reload audit entry was written for a reload that was not applied (status ${r.status})`);
    expectError(r, 400, 'invalid_configuration');
  });

  it('deleted configuration file: reload answers a clear 4xx, not 500', async () => {
    const saved = readFileSync(g.configPath, 'utf8');
    rmSync(g.configPath);
    try {
      const r = await reloadApi();
      assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}: ${JSON.stringify(r.json)}`);
    } finally {
      writeFileSync(g.configPath, saved);
    }
  });
  it('a key\'s model allowlist also bounds the fallback aliases it can be served by', async () => {
    const k = await createKey(g.gw.store(), { tenant: 'narrow', name: 'k', modelAllowlist: ['onprem'] });
    expectError(await chat(g, k.key, 'cloud'), 403, 'model_not_allowed');
    await oa.stop();
    try {
      const r = await chat(g, k.key, 'onprem');
      assert.equal(got(ob, r.marker), 0, `served through the fallback alias 'cloud', which the key may not use (status ${r.status})`);
    } finally {
      await oa.start();
    }
  });
  it('x-sovra-timeout-ms bounds the whole request, not each attempt', async () => {
    // d1 answers 503 after 800 ms, d2 answers 200 after 800 ms: with a 1000 ms deadline the retry
    // has 200 ms left and cannot succeed; a per-attempt deadline lets it run to 1600 ms.
    const r = await chat(g, g.key, 'deadline', { headers: { 'x-sovra-timeout-ms': '1000' } });
    assert.equal(got(d1, r.marker), 1);
    assert.notEqual(r.status, 200, `the client asked for 1000 ms; the answer came from the second attempt (d2 saw it: ${got(d2, r.marker)})`);
  });
});
