/**
 * Adversarial reproductions for the transparency log (each test fails on the current code).
 *
 * 1. Client-supplied and upstream-supplied free text is written verbatim into the public,
 *    never-redactable log (`model` of an unknown-model request; `error_code` relayed from upstream).
 *    docs/audit.md promises "No content" and spec §2 forbids personal data in entries; erasure
 *    cannot remove it.
 * 2. Two gateway processes on one SQLite database both start (no guard), and one keeps serving a
 *    stale checkpoint indefinitely, so the same log URL shows a shrinking tree (a rollback view).
 * 3. Percent-encoded `/` in a tile path is decoded and the tile is served (200, immutable) at a
 *    non-canonical URL instead of 404.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { MOCK_ENV, mockConfig, startGateway, type TestGateway } from './helpers/gateway.ts';
import { startMockUpstream, jsonResponse, chatCompletion, type MockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { allEntries, fetchCheckpoint } from './helpers/audit.ts';
import { parseConfig } from '../src/config/load.ts';
import { createGateway } from '../src/app.ts';
import { createLogger } from '../src/telemetry/logger.ts';

const SECRET = 'Patient Jane Roe DOB 1980-01-01 HIV positive';

function rawGet(origin: string, path: string): Promise<number> {
  return new Promise((res, rej) => {
    const u = new URL(origin);
    const req = http.request({ host: u.hostname, port: u.port, path, method: 'GET' }, (r) => {
      r.resume();
      r.on('end', () => res(r.statusCode!));
    });
    req.on('error', rej);
    req.end();
  });
}

describe('adversarial: audit log', () => {
  let mock: MockUpstream;
  let g: TestGateway;
  before(async () => {
    mock = await startMockUpstream();
    g = await startGateway({ config: { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 100 } }, env: MOCK_ENV });
  });
  after(async () => {
    await g?.close();
    await mock?.close();
  });
  const post = (model: string) =>
    rawRequest(`${g.baseURL}/chat/completions`, {
      headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
      json: { model, messages: [{ role: 'user', content: 'hi' }] },
    });

  test('a client-chosen model name never reaches the public log verbatim', async () => {
    const r = await post(SECRET);
    assert.equal(r.status, 404);
    await g.gw.recorder().flush();
    await g.gw.audit()!.drain();
    const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
    const all = Buffer.concat(entries).toString('utf8');
    assert.ok(!all.includes(SECRET), 'the request body\'s "model" string is readable by anyone at /audit/tile/entries and can never be erased');
  });

  test('an upstream-chosen error code never reaches the public log verbatim', async () => {
    mock.enqueue(jsonResponse(400, { error: { message: 'm', type: 't', param: null, code: `X ${SECRET}` } }));
    const r = await post('test-model');
    assert.equal(r.status, 400);
    await g.gw.recorder().flush();
    await g.gw.audit()!.drain();
    const { entries } = await allEntries(g.origin, g.gw.audit()!.vkey);
    assert.ok(!Buffer.concat(entries).toString('utf8').includes(SECRET), 'upstream error.code text is copied verbatim into error_code');
  });

  test('a tile is not served under a percent-encoded slash', async () => {
    mock.enqueue(jsonResponse(200, chatCompletion({ content: 'x' })));
    await post('test-model');
    await g.gw.recorder().flush();
    const cp = await g.gw.audit()!.drain();
    const w = Number(cp.size % 256n);
    assert.ok(cp.size < 256n && w > 0);
    assert.equal(await rawGet(g.origin, `/audit/tile/0/000.p/${w}`), 200);
    assert.equal(await rawGet(g.origin, `/audit/tile/0%2F000.p/${w}`), 404);
    assert.equal(await rawGet(g.origin, `/audit/tile/0/000.p%2F${w}`), 404);
  });

  test('a second gateway on the same database either refuses to start or never serves an older checkpoint', async () => {
    const cfg = { ...mockConfig(mock.url), audit: { checkpoint_interval_ms: 50 } };
    const config = parseConfig(stringify({ ...cfg, server: { host: '127.0.0.1', port: 0 }, database: g.database, logging: { level: 'silent' } }), 'second', {});
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    let B;
    try {
      B = await createGateway({ config, configDir: g.dir, logger: createLogger('silent', sink), env: MOCK_ENV });
      await B.start();
    } catch {
      return; // refusing to run a second integrator is the fix
    }
    try {
      mock.setHandler(() => jsonResponse(200, chatCompletion({ content: 'x' })));
      for (let i = 0; i < 40; i++) await post('test-model'); // all through the first gateway
      await new Promise((r) => setTimeout(r, 1500)); // idle: both processes have had many rounds
      const vkey = g.gw.audit()!.vkey;
      const a = (await fetchCheckpoint(g.origin, vkey)).checkpoint.size;
      const b = B.audit()!.latest().size;
      assert.equal(b, a, `same log, same database: gateway A serves size ${a} but gateway B keeps serving size ${b}`);
    } finally {
      mock.setHandler(undefined);
      await B.close();
    }
  });
});
