/**
 * Limits and budgets through the real gateway: budgets never overspent under 200 concurrent
 * streams, streamed usage charged exactly once (with and without the client's include_usage), a
 * client that disconnects mid-stream charged for what was produced, OpenAI's rate-limit headers.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CH, EV, DONE, chatCompletion, jsonResponse, sseScript, startMockUpstream, type MockUpstream, type RecordedRequest } from './helpers/mock-upstream.ts';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { createKey } from '../src/keys/keys.ts';
import { countPromptTokens, createBudget, listBudgets, setLimits } from '../src/metering/index.ts';

const PROMPT = 'Summarise the annual report of the ministry in three sentences.';
const usageOf = (req: RecordedRequest) => {
  const body = JSON.parse(req.body.toString('utf8')) as { stream_options?: { include_usage?: boolean } };
  return body.stream_options?.include_usage === true;
};

/** A stream of `n` one-token chunks, then (if asked) a usage chunk of prompt 11 / completion n. */
function stream(req: RecordedRequest, n = 5, headersAfter = 0) {
  const ev = [EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]'))];
  for (let i = 0; i < n; i++) ev.push(EV(CH(`"choices":[{"index":0,"delta":{"content":"t${i} "},"finish_reason":null}]`)));
  ev.push(EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]')));
  if (usageOf(req)) ev.push(EV(CH(`"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":${n},"total_tokens":${11 + n}}`)));
  ev.push(DONE);
  return sseScript(ev, headersAfter ? { headersAfter } : {});
}

async function chat(g: TestGateway, key: string, body: Record<string, unknown>, signal?: AbortSignal) {
  return fetch(`${g.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: PROMPT }], ...body }),
    ...(signal ? { signal } : {}),
  });
}

describe('budgets and limits through the gateway', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  before(async () => {
    mock = await startMockUpstream({ handler: (req) => (JSON.parse(req.body.toString('utf8')).stream ? stream(req) : jsonResponse(200, chatCompletion({ content: 'ok' }))) });
    g = await startGateway({ config: mockConfig(mock.url), env: MOCK_ENV });
  });
  after(async () => {
    await g?.close();
    await mock?.close();
  });

  test('200 concurrent streams against a token budget that allows 50: 50 served, 150 get 429 budget_exceeded, the ledger stays within the budget', { timeout: 60_000 }, async () => {
    const k = await createKey(g.gw.store(), { tenant: 'race', name: 'race' });
    const body = { stream: true, max_tokens: 20 };
    const worst = countPromptTokens({ model: 'test-model', messages: [{ role: 'user', content: PROMPT }], ...body }, 'chat.completions') + 20;
    const budget = await createBudget(g.gw.store(), { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 50 * worst, period: 'fixed' });
    // Answers come 1.5 s late, so every admission races before any settlement frees budget.
    mock.setHandler((req) => stream(req, 5, 1500));
    try {
      const res = await Promise.all(Array.from({ length: 200 }, () => chat(g, k.key, body)));
      const texts = await Promise.all(res.map((r) => r.text()));
      const ok = res.filter((r) => r.status === 200).length;
      const rejected = res.map((r, i) => [r, texts[i]!] as const).filter(([r]) => r.status === 429);
      assert.equal(ok, 50, 'exactly the 50 the budget allows');
      assert.equal(rejected.length, 150);
      for (const [r, t] of rejected) {
        assert.equal(JSON.parse(t).error.code, 'budget_exceeded');
        assert.equal(r.headers.get('content-type')?.startsWith('application/json'), true);
      }
      const rows = (await g.records()).filter((r) => r.key_id === k.id);
      const charged = rows.reduce((s, r) => s + (r.total_tokens ?? 0), 0);
      assert.ok(charged <= budget.amount, `ledger ${charged} ≤ budget ${budget.amount}`);
      await g.gw.metering()?.flush(); // this process's allotments: write usage, give back the rest
      const [state] = await listBudgets(g.gw.store(), { scopes: [{ kind: 'key', id: k.id }] });
      assert.equal(state!.reserved, 0, 'every reservation settled');
      assert.equal(state!.used, charged, 'the budget is charged what the ledger says');
      assert.ok(state!.used <= state!.amount);
    } finally {
      mock.setHandler((req) => (JSON.parse(req.body.toString('utf8')).stream ? stream(req) : jsonResponse(200, chatCompletion({ content: 'ok' }))));
    }
  });

  test('streamed usage is charged exactly once, with and without include_usage from the client', async () => {
    const k = await createKey(g.gw.store(), { tenant: 'once', name: 'once' });
    await createBudget(g.gw.store(), { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1_000_000, period: 'month' });
    const a = await chat(g, k.key, { stream: true, stream_options: { include_usage: true } });
    const ta = await a.text();
    assert.equal(a.status, 200);
    assert.match(ta, /"usage":\{"prompt_tokens":11,"completion_tokens":5/, 'the client asked for usage and got it');
    const b = await chat(g, k.key, { stream: true });
    const tb = await b.text();
    assert.equal(b.status, 200);
    assert.doesNotMatch(tb, /"usage"/, 'usage was requested upstream but not shown to a client that did not ask');
    const rows = (await g.records()).filter((r) => r.key_id === k.id);
    assert.deepEqual(rows.map((r) => r.total_tokens), [16, 16]);
    await g.gw.metering()?.flush(); // this process's allotments: write usage, give back the rest
    const [state] = await listBudgets(g.gw.store(), { scopes: [{ kind: 'key', id: k.id }] });
    assert.equal(state!.used, 32, 'charged once per request');
    assert.equal(state!.reserved, 0);
  });

  test('a client that disconnects mid-stream is charged for what the upstream produced', async () => {
    const k = await createKey(g.gw.store(), { tenant: 'gone', name: 'gone' });
    await createBudget(g.gw.store(), { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1_000_000, period: 'day' });
    // 3 chunks, then the upstream stalls: the client leaves.
    mock.enqueue(
      sseScript(
        [
          EV(CH('"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]')),
          EV(CH('"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}]')),
          EV(CH('"choices":[{"index":0,"delta":{"content":"c"},"finish_reason":null}]')),
        ],
        { close: 'hang' },
      ),
    );
    const ac = new AbortController();
    const r = await chat(g, k.key, { stream: true }, ac.signal);
    const reader = r.body!.getReader();
    let seen = '';
    while (!seen.includes('"c"')) seen += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    const until = Date.now() + 5000;
    let state;
    for (;;) {
      await g.gw.metering()?.flush(); // this process's allotments: write usage, give back the rest
      [state] = await listBudgets(g.gw.store(), { scopes: [{ kind: 'key', id: k.id }] });
      if ((state && state.used > 0 && state.reserved === 0) || Date.now() > until) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    const row = (await g.records()).find((x) => x.key_id === k.id)!;
    assert.equal(row.status, 499);
    assert.equal(row.completion_tokens, 3, 'the three chunks produced');
    assert.ok((row.prompt_tokens ?? 0) > 0);
    assert.equal(state!.used, row.total_tokens, 'charged what was produced');
    assert.equal(state!.reserved, 0, 'the rest of the reservation was released');
  });

  test('RPM per key: OpenAI rate-limit headers on success, 429 with retry-after when exhausted', async () => {
    const k = await createKey(g.gw.store(), { tenant: 'rpm', name: 'rpm' });
    await setLimits(g.gw.store(), { kind: 'key', id: k.id }, { rpm: 3, tpm: null });
    g.gw.metering?.()?.invalidate();
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 4; i++) {
      last = await chat(g, k.key, {});
      statuses.push(last.status);
      if (i === 0) {
        assert.equal(last.headers.get('x-ratelimit-limit-requests'), '3');
        assert.equal(last.headers.get('x-ratelimit-remaining-requests'), '2');
        assert.ok(last.headers.get('x-ratelimit-reset-requests'));
      }
      const text = await last.text();
      if (last.status === 429) assert.equal(JSON.parse(text).error.code, 'rate_limit_exceeded');
    }
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    assert.ok(Number(last!.headers.get('retry-after')) >= 1);
    assert.equal(last!.headers.get('x-ratelimit-remaining-requests'), '0');
    // the rejected request is in the ledger too, with no tokens
    const rows = (await g.records()).filter((r) => r.key_id === k.id);
    assert.equal(rows.length, 4);
    assert.equal(rows[3]!.status, 429);
  });
});
