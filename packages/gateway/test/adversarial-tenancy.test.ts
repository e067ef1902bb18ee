/**
 * Adversarial probes of tenancy, the admin API and metering (reviewer tests): what a reviewer found
 * (n > 1 and batch overspend, rotation escaping limits, embeddings over-reserving, uncharged
 * answers, prototype-named fields, lone surrogates) is fixed and locked in here, with the behaviour
 * that held up under attack (cross-tenant isolation, roles, secrets, malformed input, leaks). The
 * one skipped test is a known, unfixed gap.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { jsonResponse, startMockUpstream, type MockUpstream, type RecordedRequest } from './helpers/mock-upstream.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { createAdmin, createTenant } from '../src/tenancy/index.ts';
import { countPromptTokens, listBudgets } from '../src/metering/index.ts';

interface Res {
  status: number;
  text: string;
  json: any;
  headers: Headers;
}

/** An upstream that behaves like OpenAI/vLLM: n choices, each up to max_tokens; usage sums them. */
function realisticUpstream(req: RecordedRequest) {
  const body = JSON.parse(req.body.toString('utf8'));
  const path = req.path;
  if (path.endsWith('/embeddings')) {
    return jsonResponse(200, { object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2] }], model: 'mock-llm', usage: { prompt_tokens: 2, total_tokens: 2 } });
  }
  const cap = body.max_completion_tokens ?? body.max_tokens ?? 50;
  const prompts = path.endsWith('/completions') && !path.endsWith('/chat/completions') && Array.isArray(body.prompt) && typeof body.prompt[0] === 'string' ? body.prompt.length : 1;
  const n = (body.n ?? 1) * prompts;
  const choices = Array.from({ length: n }, (_, i) =>
    path.endsWith('/chat/completions')
      ? { index: i, message: { role: 'assistant', content: 'x '.repeat(cap) }, finish_reason: 'length' }
      : { index: i, text: 'x '.repeat(cap), finish_reason: 'length' },
  );
  return jsonResponse(200, {
    id: 'cmpl-T',
    object: path.endsWith('/chat/completions') ? 'chat.completion' : 'text_completion',
    created: 1700000000,
    model: 'mock-llm',
    choices,
    usage: { prompt_tokens: 20, completion_tokens: cap * n, total_tokens: 20 + cap * n },
  });
}

describe('adversarial tenancy / metering', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  let root: string;
  let tadmA: string;
  let aud: string;
  let tenantA: string;
  let tenantB: string;
  const seen: string[] = [];
  const secrets: string[] = [];

  const api = async (method: string, path: string, key: string | null, body?: unknown, rawBody?: string, ct = 'application/json'): Promise<Res> => {
    const headers: Record<string, string> = {};
    if (key !== null) headers['authorization'] = `Bearer ${key}`;
    if (body !== undefined || rawBody !== undefined) headers['content-type'] = ct;
    const r = await fetch(`${g.origin}${path}`, { method, headers, ...(rawBody !== undefined ? { body: rawBody } : body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await r.text();
    seen.push(text, JSON.stringify([...r.headers]));
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {
      /* csv */
    }
    return { status: r.status, text, json, headers: r.headers };
  };
  const post = (path: string, key: string, body: Record<string, unknown>) =>
    fetch(`${g.baseURL}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'test-model', ...body }) });
  const chat = (key: string, body: Record<string, unknown> = {}) => post('/chat/completions', key, { messages: [{ role: 'user', content: 'hi' }], ...body });
  const newKey = async (tenant: string, by = root) => {
    const r = await api('POST', '/admin/v1/keys', by, { tenant_id: tenant });
    assert.equal(r.status, 201, r.text);
    secrets.push(r.json.key);
    return { id: r.json.id as string, key: r.json.key as string };
  };
  const budgetState = async (scope: { kind: 'key' | 'tenant'; id: string }) => {
    await g.gw.metering()?.flush(); // this process's allotments: write usage, give back the rest
    return (await listBudgets(g.gw.store(), { scopes: [scope] }))[0]!;
  };

  before(async () => {
    mock = await startMockUpstream({ handler: realisticUpstream });
    g = await startGateway({ config: { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100 }, metering: { default_max_tokens: 4096 } }, env: MOCK_ENV });
    const cc = { store: g.gw.store(), journal: g.gw.recorder(), actor: 'test' };
    const rootAdm = await createAdmin(cc, { role: 'platform-admin', name: 'root' });
    root = rootAdm.secret;
    tenantA = (await createTenant(cc, { name: 'adv-a' })).id;
    tenantB = (await createTenant(cc, { name: 'adv-b' })).id;
    tadmA = (await createAdmin(cc, { role: 'tenant-admin', tenantId: tenantA, name: 'ta' })).secret;
    aud = (await createAdmin(cc, { role: 'auditor', tenantId: tenantA, name: 'aud' })).secret;
  });
  after(async () => {
    await g?.close();
    await mock?.close();
  });

  // ------------------------------------------------------------------------------------------------
  // Budget overspend
  // ------------------------------------------------------------------------------------------------

  test('chat n>1 reserves the cap for every choice: a budget for ~2 single-choice requests refuses n=16', async () => {
    const k = await newKey(tenantA);
    const body = { messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 };
    const worst = countPromptTokens({ model: 'test-model', ...body }, 'chat.completions') + 100;
    // A budget that fits ~2 single-choice requests.
    const b = await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: worst * 2, period: 'fixed' });
    assert.equal(b.status, 201, b.text);
    const r = await chat(k.key, { max_tokens: 100, n: 16 });
    assert.equal(r.status, 429);
    assert.equal(JSON.parse(await r.text()).error.code, 'budget_exceeded');
    assert.equal((await chat(k.key, { max_tokens: 100 })).status, 200, 'one choice still fits');
    const st = await budgetState({ kind: 'key', id: k.id });
    assert.equal(st.reserved, 0);
    assert.ok(st.used <= st.amount, `budget overspent: used ${st.used} > amount ${st.amount} (one n=16 request admitted against a reservation for n=1)`);
  });

  test('legacy completions: a batch of prompts reserves the cap for every prompt', async () => {
    const k = await newKey(tenantA);
    const b = await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 500, period: 'fixed' });
    assert.equal(b.status, 201, b.text);
    const r = await post('/completions', k.key, { prompt: Array.from({ length: 20 }, () => 'hi'), max_tokens: 100 });
    assert.equal(r.status, 429, 'a 20-prompt batch needs 20 × 100 completion tokens');
    await r.text();
    const st = await budgetState({ kind: 'key', id: k.id });
    assert.ok(st.used <= st.amount, `budget overspent: used ${st.used} > amount ${st.amount}`);
  });

  // ------------------------------------------------------------------------------------------------
  // Key rotation and admin changes vs. metering
  // ------------------------------------------------------------------------------------------------

  test('rotating a key keeps its key-scoped rate limits and budgets (they move to the successor)', async () => {
    const k = await newKey(tenantA);
    assert.equal((await api('PUT', `/admin/v1/keys/${k.id}/limits`, root, { rpm: 1, tpm: null })).status, 200);
    assert.equal((await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 0, period: 'fixed' })).status, 201);
    assert.equal((await chat(k.key)).status, 429, 'the old key is blocked by its zero budget');
    // "Rotate: a new key with the same settings" -- e.g. the tenant-admin rotates its own key.
    const rot = await api('POST', `/admin/v1/keys/${k.id}/rotate`, tadmA, { overlap_seconds: 0 });
    assert.equal(rot.status, 201, rot.text);
    const nk = rot.json.new_key;
    const lim = await api('GET', `/admin/v1/keys/${nk.id}/limits`, root);
    const buds = await api('GET', `/admin/v1/budgets?key_id=${nk.id}`, root);
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await chat(nk.key)).status);
    assert.deepEqual(
      { rpm: lim.json.rpm, budgets: buds.json.data.length, statuses },
      { rpm: 1, budgets: 1, statuses: [429, 429, 429] },
      'the rotated key should inherit the limits and budget of the key it replaces',
    );
  });

  test('limits set through the admin API apply at once in the same process (metering cache invalidated)', async () => {
    const k = await newKey(tenantA);
    assert.equal((await chat(k.key)).status, 200); // primes the 2 s definitions cache
    const put = await api('PUT', `/admin/v1/keys/${k.id}/limits`, root, { rpm: 1, tpm: null });
    assert.equal(put.status, 200, put.text);
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await chat(k.key)).status);
    assert.deepEqual(statuses, [200, 429, 429], 'rpm 1 right after the PUT answered 200');
  });

  test('a budget created through the admin API is enforced at once in the same process', async () => {
    const k = await newKey(tenantA);
    assert.equal((await chat(k.key)).status, 200); // primes the cache
    const b = await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 0, period: 'fixed' });
    assert.equal(b.status, 201, b.text);
    const r = await chat(k.key, { max_tokens: 10 });
    assert.equal(r.status, 429, 'a zero budget created 1 ms ago still let a request through');
  });

  test('embeddings reserve no completion tokens (tpm 1000 admits a 1-word embedding)', async () => {
    const k = await newKey(tenantA);
    assert.equal((await api('PUT', `/admin/v1/keys/${k.id}/limits`, root, { rpm: null, tpm: 1000 })).status, 200);
    g.gw.metering?.()?.invalidate();
    const r = await post('/embeddings', k.key, { input: 'hello' });
    const t = await r.text();
    assert.equal(r.status, 200, t);
  });

  // ------------------------------------------------------------------------------------------------
  // Settlement on failures / disconnects
  // ------------------------------------------------------------------------------------------------

  test('reservations return to 0 after upstream errors, gateway 400s after admission and rate-limit refusals', async () => {
    const k = await newKey(tenantA);
    assert.equal((await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1_000_000, period: 'day' })).status, 201);
    assert.equal((await api('PUT', `/admin/v1/keys/${k.id}/limits`, root, { rpm: 5, tpm: 100_000 })).status, 200);
    g.gw.metering?.()?.invalidate();
    mock.enqueue(jsonResponse(500, { error: { message: 'boom', type: 'server_error', param: null, code: null } }));
    const a = await chat(k.key, { max_tokens: 10 });
    await a.text();
    assert.ok(a.status >= 500, String(a.status));
    // bad x-sovra-timeout-ms is checked after admission
    const b = await fetch(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json', 'x-sovra-timeout-ms': 'abc' },
      body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }] }),
    });
    await b.text();
    assert.equal(b.status, 400);
    const statuses = [];
    for (let i = 0; i < 6; i++) {
      const r = await chat(k.key, { max_tokens: 5 });
      await r.text();
      statuses.push(r.status);
    }
    assert.ok(statuses.includes(429));
    const st = await budgetState({ kind: 'key', id: k.id });
    assert.equal(st.reserved, 0);
  });

  test('an upstream answer without usage is charged an estimate against a token budget', async () => {
    const k = await newKey(tenantA);
    assert.equal((await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1_000_000, period: 'fixed' })).status, 201);
    mock.enqueue(jsonResponse(200, { id: 'x', object: 'chat.completion', created: 1, model: 'mock-llm', choices: [{ index: 0, message: { role: 'assistant', content: 'x '.repeat(500) }, finish_reason: 'stop' }] }));
    const r = await chat(k.key);
    assert.equal(r.status, 200, await r.text());
    const st = await budgetState({ kind: 'key', id: k.id });
    assert.equal(st.reserved, 0);
    assert.ok(st.used > 0, 'a 500-token answer without a usage object costs 0 tokens');
  });

  test('a stream abandoned before its first token is charged the prompt it sent', async () => {
    const k = await newKey(tenantA);
    assert.equal((await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1_000_000, period: 'fixed' })).status, 201);
    mock.reset();
    mock.enqueue({ status: 200, headersAfter: Infinity });
    const ac = new AbortController();
    const big = 'lorem ipsum '.repeat(5000);
    const r = fetch(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: big }], stream: true }),
      signal: ac.signal,
    }).catch(() => null);
    await mock.waitForRequests(1);
    await new Promise((res) => setTimeout(res, 200)); // the upstream is processing the prompt
    ac.abort();
    await r;
    const until = Date.now() + 6000;
    let st = await budgetState({ kind: 'key', id: k.id });
    while (Date.now() < until && st.reserved !== 0) {
      await new Promise((r) => setTimeout(r, 100));
      st = await budgetState({ kind: 'key', id: k.id });
    }
    assert.equal(st.reserved, 0, 'reservation released');
    assert.ok(st.used > 0, `a 10k-token prompt abandoned before the first token was charged ${st.used}`);
  });

  // ------------------------------------------------------------------------------------------------
  // Authorization
  // ------------------------------------------------------------------------------------------------

  test('tenant-admin cannot reach another tenant through ids in paths, bodies or query strings; auditor cannot write', async () => {
    const kb = await newKey(tenantB);
    const ka = await newKey(tenantA, tadmA);
    const bb = await api('POST', '/admin/v1/budgets', root, { scope: { kind: 'tenant', id: tenantB }, unit: 'tokens', amount: 10, period: 'day' });
    assert.equal(bb.status, 201);
    const cases: Array<[string, string, unknown?]> = [
      ['GET', `/admin/v1/tenants/${tenantB}`],
      ['GET', `/admin/v1/keys?tenant_id=${tenantB}`],
      ['GET', `/admin/v1/keys/${kb.id}`],
      ['PATCH', `/admin/v1/keys/${kb.id}`, { label: 'x' }],
      ['POST', `/admin/v1/keys/${kb.id}/rotate`, {}],
      ['POST', `/admin/v1/keys/${kb.id}/revoke`, {}],
      ['GET', `/admin/v1/keys/${kb.id}/limits`],
      ['PUT', `/admin/v1/keys/${kb.id}/limits`, { rpm: 1, tpm: 1 }],
      ['GET', `/admin/v1/tenants/${tenantB}/limits`],
      ['PUT', `/admin/v1/tenants/${tenantB}/limits`, { rpm: 1, tpm: 1 }],
      ['GET', `/admin/v1/limits?tenant_id=${tenantB}`],
      ['GET', `/admin/v1/budgets?tenant_id=${tenantB}`],
      ['GET', `/admin/v1/budgets?key_id=${kb.id}`],
      ['GET', `/admin/v1/budgets?key_id=${ka.id}&tenant_id=${tenantB}`],
      ['POST', '/admin/v1/budgets', { scope: { kind: 'key', id: kb.id }, unit: 'tokens', amount: 1, period: 'day' }],
      ['POST', '/admin/v1/budgets', { scope: { kind: 'tenant', id: tenantB }, unit: 'tokens', amount: 1, period: 'day' }],
      ['DELETE', `/admin/v1/budgets/${bb.json.id}`],
      ['POST', '/admin/v1/keys', { tenant_id: tenantB }],
      ['GET', `/admin/v1/usage?tenant_id=${tenantB}`],
      ['GET', `/admin/v1/usage?key_id=${kb.id}`],
      ['GET', `/admin/v1/usage?key_id=${kb.id}&tenant_id=${tenantA}&format=csv`],
    ];
    for (const [m, path, body] of cases) {
      const r = await api(m, path, tadmA, body);
      assert.equal(r.status, 404, `${m} ${path}: ${r.status} ${r.text}`);
    }
    // tenant-admin cannot create tenants or patch its own tenant's residency attributes
    assert.equal((await api('POST', '/admin/v1/tenants', tadmA, { name: 'evil' })).status, 403);
    assert.equal((await api('PATCH', `/admin/v1/tenants/${tenantA}`, tadmA, { jurisdiction: 'US' })).status, 403);
    // listings without a filter are confined
    const keys = await api('GET', '/admin/v1/keys', tadmA);
    assert.ok(keys.json.data.every((k: any) => k.tenant_id === tenantA));
    const lim = await api('GET', '/admin/v1/limits', tadmA);
    assert.ok(lim.json.data.every((l: any) => l.scope.id === tenantA || keys.json.data.some((k: any) => k.id === l.scope.id)));
    const buds = await api('GET', '/admin/v1/budgets', tadmA);
    assert.ok(!buds.json.data.some((b: any) => b.id === bb.json.id));
    const use = await api('GET', '/admin/v1/usage', tadmA);
    assert.ok(use.json.data.every((u: any) => u.tenant_id === tenantA));
    // the tenant-bound auditor: reads confined, every write 403 (even to its own tenant)
    assert.equal((await api('GET', `/admin/v1/keys/${kb.id}`, aud)).status, 404);
    assert.equal((await api('GET', `/admin/v1/keys/${ka.id}`, aud)).status, 200);
    for (const [m, path, body] of [
      ['POST', '/admin/v1/keys', { tenant_id: tenantA }],
      ['PATCH', `/admin/v1/keys/${ka.id}`, { label: 'x' }],
      ['POST', `/admin/v1/keys/${ka.id}/rotate`, {}],
      ['POST', `/admin/v1/keys/${ka.id}/revoke`, {}],
      ['PUT', `/admin/v1/keys/${ka.id}/limits`, { rpm: 1, tpm: 1 }],
      ['PUT', `/admin/v1/tenants/${tenantA}/limits`, { rpm: 1, tpm: 1 }],
      ['POST', '/admin/v1/budgets', { scope: { kind: 'tenant', id: tenantA }, unit: 'tokens', amount: 1, period: 'day' }],
      ['DELETE', `/admin/v1/budgets/${bb.json.id}`],
      ['POST', '/admin/v1/tenants', { name: 'x' }],
    ] as Array<[string, string, unknown?]>) {
      const r = await api(m, path, aud, body);
      assert.equal(r.status, 403, `${m} ${path}: ${r.status} ${r.text}`);
    }
    // nothing was changed by the refused calls
    const after = await api('GET', `/admin/v1/keys/${kb.id}`, root);
    assert.equal(after.json.state, 'active');
    assert.equal(after.json.label, null);
    assert.equal((await api('GET', `/admin/v1/keys/${kb.id}/limits`, root)).json.rpm, null);
    assert.equal((await api('GET', `/admin/v1/budgets?tenant_id=${tenantB}`, root)).json.data.length, 1);
  });

  test('data-plane keys on /admin and admin keys on /v1 are refused; revoked / rotated-with-0-overlap keys stop at once', async () => {
    const k = await newKey(tenantA);
    assert.equal((await api('GET', '/admin/v1/whoami', k.key)).status, 401);
    assert.equal((await chat(root)).status, 401);
    assert.equal((await chat(k.key)).status, 200); // cached now
    const rot = await api('POST', `/admin/v1/keys/${k.id}/rotate`, tadmA, { overlap_seconds: 0 });
    assert.equal(rot.status, 201);
    assert.equal((await chat(k.key)).status, 401, 'rotated with overlap 0');
    const nk = rot.json.new_key;
    assert.equal((await chat(nk.key)).status, 200);
    assert.equal((await api('POST', `/admin/v1/keys/${nk.id}/revoke`, tadmA)).status, 200);
    assert.equal((await chat(nk.key)).status, 401, 'revoked');
    // expiry set in the past via PATCH on an active key
    const k2 = await newKey(tenantA);
    assert.equal((await chat(k2.key)).status, 200);
    const p = await api('PATCH', `/admin/v1/keys/${k2.id}`, tadmA, { expires_at: '2001-01-01T00:00:00Z' });
    assert.equal(p.status, 200, p.text);
    assert.equal((await chat(k2.key)).status, 401, 'expired');
  });

  // ------------------------------------------------------------------------------------------------
  // Malformed admin input
  // ------------------------------------------------------------------------------------------------

  test('malformed admin input gets 4xx, never 500', async () => {
    const k = await newKey(tenantA);
    const raw: Array<[string, string, string, string?]> = [
      ['POST', '/admin/v1/budgets', '{"scope":'],
      ['POST', '/admin/v1/budgets', 'null'],
      ['POST', '/admin/v1/budgets', '[]'],
      ['POST', '/admin/v1/budgets', '"x"'],
      ['POST', '/admin/v1/budgets', '{"scope":{"kind":"key","id":"' + k.id + '"},"unit":"tokens","amount":1e300,"period":"day"}'],
      ['POST', '/admin/v1/budgets', '{"scope":{"kind":"key","id":"' + k.id + '"},"unit":"tokens","amount":9007199254740993,"period":"day"}'],
      ['POST', '/admin/v1/budgets', '{"scope":{"kind":"key","id":"' + k.id + '"},"unit":"tokens","amount":1e400,"period":"day"}'],
      ['POST', '/admin/v1/budgets', '{"scope":{"kind":"key","id":"' + k.id + '"},"unit":"tokens","amount":-1,"period":"day"}'],
      ['POST', '/admin/v1/budgets', '{"scope":{"kind":"constructor","id":"x"},"unit":"tokens","amount":5,"period":"day"}'],
      ['POST', '/admin/v1/budgets', '{"scope":{"kind":"key","id":"\\u0000"},"unit":"tokens","amount":5,"period":"day"}'],
      ['PUT', `/admin/v1/keys/${k.id}/limits`, '{"rpm":1e300,"tpm":null}'],
      ['PUT', `/admin/v1/keys/${k.id}/limits`, '{"rpm":1.5,"tpm":null}'],
      ['PUT', `/admin/v1/keys/${k.id}/limits`, '{"rpm":[1],"tpm":null}'],
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"expires_at":"2030-02-30T00:00:00Z"}'],
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"expires_at":"+275760-09-13T00:00:00Z"}'],
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"expires_at":"9999-12-31T23:59:60Z"}'],
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"model_allowlist":["a\\u0000b"]}'],
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"model_allowlist":{"0":"a"}}'],
      ['POST', `/admin/v1/keys/${k.id}/rotate`, '{"overlap_seconds":1e20}'],
      ['POST', `/admin/v1/keys/${k.id}/rotate`, '{"overlap_seconds":-1}'],
      ['POST', '/admin/v1/keys', '{"tenant_id":{"$ne":null}}'],
      ['POST', '/admin/v1/tenants', '{"name":"' + 'x'.repeat(300) + '"}'],
      ['POST', '/admin/v1/tenants', '{"name":"a\\nb"}'],
      ['POST', '/admin/v1/budgets', '{}', 'text/plain'],
      ['POST', '/admin/v1/budgets', '{"a":' + '['.repeat(100000) + ']'.repeat(100000) + '}'],
      ['POST', '/admin/v1/budgets', '{"x":"' + 'a'.repeat(2 << 20) + '"}'],
    ];
    const bad: string[] = [];
    for (const [m, path, body, ct] of raw) {
      const r = await api(m, path, root, undefined, body, ct);
      if (!(r.status >= 400 && r.status < 500) || r.json?.error?.message === undefined) bad.push(`${m} ${path} ${body.slice(0, 120)} -> ${r.status} ${r.text.slice(0, 300)}`);
    }
    const q = [
      '/admin/v1/usage?from=abc',
      '/admin/v1/usage?from=999999999999999',
      '/admin/v1/usage?to=-1',
      '/admin/v1/usage?group_by=week',
      '/admin/v1/usage?tenant_id=a&tenant_id=b',
      '/admin/v1/usage?tenant_id[x]=a',
      '/admin/v1/usage?format=xml',
      '/admin/v1/usage?from=2020-01-01T00:00:00%2B99:99',
      `/admin/v1/keys/${'k'.repeat(300)}`,
      '/admin/v1/keys/%00',
      '/admin/v1/keys/%ZZ',
    ];
    for (const path of q) {
      const r = await api('GET', path, root);
      if (r.status >= 500) bad.push(`${path} -> ${r.status} ${r.text.slice(0, 300)}`);
    }
    assert.deepEqual(bad, []);
  });

  test('body fields named like Object.prototype members (__proto__, constructor, toString) are unknown_parameter', async () => {
    const k = await newKey(tenantA);
    for (const f of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
      const r = await api('PATCH', `/admin/v1/keys/${k.id}`, root, undefined, `{"label":"x","${f}":{"a":1}}`);
      assert.equal(r.status, 400, `${f}: ${r.status} ${r.text}`);
    }
  });

  test('a lone surrogate in a label / name is a 400, not an audit failure', async () => {
    const k = await newKey(tenantA);
    const cases: Array<[string, string, string]> = [
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"label":"\\ud800"}'],
      ['PATCH', `/admin/v1/keys/${k.id}`, '{"model_allowlist":["\\udfff"]}'],
      ['POST', '/admin/v1/keys', `{"tenant_id":"${tenantA}","label":"\\ud800"}`],
      ['POST', '/admin/v1/tenants', '{"name":"\\ud800"}'],
    ];
    const got: string[] = [];
    for (const [m, path, body] of cases) {
      const r = await api(m, path, path.endsWith('/tenants') ? root : tadmA, undefined, body);
      got.push(`${m} ${path} ${r.status} ${r.json?.error?.code}`);
    }
    assert.ok(got.every((x) => / 400 /.test(x)), got.join('\n'));
  });

  test('admin bodies are type-coerced: "amount":"5" and "rpm":true are accepted as 5 and 1', { skip: 'known gap, not fixed yet: Fastify\'s default validator coerces types' }, async () => {
    const k = await newKey(tenantA);
    const a = await api('POST', '/admin/v1/budgets', root, undefined, `{"scope":{"kind":"key","id":"${k.id}"},"unit":"tokens","amount":"5","period":"day"}`);
    const b = await api('PUT', `/admin/v1/keys/${k.id}/limits`, root, undefined, '{"rpm":true,"tpm":null}');
    assert.deepEqual([a.status, b.status], [400, 400], `${a.text}\n${b.text}`);
  });

  test('no admin key, API key (beyond its one-time response), digest or upstream credential in any other response or log line', async () => {
    const { createHash } = await import('node:crypto');
    const all = [root, tadmA, aud, ...secrets];
    const needles = [...all.map((k) => createHash('sha256').update(k).digest('hex')), root, tadmA, aud, 'up-cred-TEST-9999'];
    // one-time key responses contain their own key: check digests + admin keys + upstream credential in responses,
    // and everything (keys included) in the logs
    const hay = seen.join('\n');
    for (const n of needles) assert.ok(!hay.includes(n), `response leaks ${n.slice(0, 20)}`);
    const logs = g.logs().join('\n');
    for (const n of [...needles, ...secrets]) assert.ok(!logs.includes(n), `log leaks ${n.slice(0, 20)}`);
    // usage CSV and JSON of a platform admin carry ids only
    const csv = await api('GET', '/admin/v1/usage?format=csv&group_by=hour', root);
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    for (const line of csv.text.trim().split('\n').slice(1)) assert.ok(!/(^|,)[=+\-@]/.test(line), line);
  });
});
