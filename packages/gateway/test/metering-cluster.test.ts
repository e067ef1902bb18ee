/**
 * Cluster-wide limits: two `sovra serve` processes sharing one database and one Redis
 * (SOVRA_TEST_REDIS_URL; `.ci/run` starts the local server) hold a tenant's requests-per-minute
 * limit together, not per replica. Skipped when SOVRA_TEST_REDIS_URL is unset.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chatCompletion, jsonResponse, startMockUpstream } from './helpers/mock-upstream.ts';
import { SOVRA_BIN, runSovra } from './helpers/audit.ts';
import { openStore } from '../src/store/db.ts';
import { setLimits } from '../src/metering/index.ts';

const REDIS = process.env['SOVRA_TEST_REDIS_URL'];

function startServer(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [SOVRA_BIN, 'serve', '--config', 'sovra.yaml'], {
    cwd: dir,
    env: { ...process.env, SOVRA_CONFIG: '', SOVRA_BOOTSTRAP_KEY: '0', MOCK_UPSTREAM_KEY: 'mock-secret' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s: ${stderr}`)), 30_000);
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (!line.includes('Sovra listening on')) return;
      clearTimeout(timer);
      resolve({ proc, url: (JSON.parse(line) as { url: string }).url });
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${stderr}`));
    });
  });
}

test('a tenant RPM limit holds across two gateway processes sharing one database and Redis', { skip: REDIS ? false : 'SOVRA_TEST_REDIS_URL not set', timeout: 90_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cluster-'));
  const mock = await startMockUpstream({ handler: () => jsonResponse(200, chatCompletion({ content: 'ok' })) });
  const procs: ChildProcess[] = [];
  try {
    writeFileSync(
      join(dir, 'sovra.yaml'),
      [
        'server: { host: 127.0.0.1, port: 0 }',
        'database: { url: "sqlite:./data/sovra.db" }',
        'logging: { level: info }',
        // Both replicas run the audit log: one integrates (it holds the lease), the other is a standby.
        `metering: { redis_url: "${REDIS}" }`,
        'backends:',
        `  - { id: mock, provider: openai-compatible, base_url: "${mock.url}", api_key_env: MOCK_UPSTREAM_KEY, jurisdiction: MY }`,
        'models:',
        '  - { name: test-model, backend: mock, upstream_model: mock-llm }',
        '',
      ].join('\n'),
    );
    const created = await runSovra(dir, ['keys', 'create', '--tenant', 'cluster', '--json', '--config', 'sovra.yaml']);
    assert.equal(created.code, 0, created.err);
    const k = JSON.parse(created.out) as { key: string };
    const store = await openStore(`sqlite:${join(dir, 'data', 'sovra.db')}`);
    const tenant = await store.db.selectFrom('tenants').select('id').where('name', '=', 'cluster').executeTakeFirstOrThrow();
    await setLimits(store, { kind: 'tenant', id: tenant.id }, { rpm: 6, tpm: null });
    await store.close();

    const a = await startServer(dir);
    procs.push(a.proc);
    const b = await startServer(dir);
    procs.push(b.proc);
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) {
      const url = i % 2 === 0 ? a.url : b.url;
      const r = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'hi' }] }),
      });
      await r.text();
      statuses.push(r.status);
    }
    assert.equal(statuses.filter((s) => s === 200).length, 6, `6 of 10 across both replicas, not 6 each: ${statuses.join(',')}`);
    assert.equal(statuses.filter((s) => s === 429).length, 4);
    assert.ok(mock.requests.length === 6, 'the upstream saw exactly the admitted requests');
    // Both replicas answer the audit read API; the standby serves what the integrating one signed.
    const sizes: number[] = [];
    for (const u of [a.url, b.url]) {
      const until = Date.now() + 10_000;
      for (;;) {
        const note = await (await fetch(`${u}/audit/checkpoint`)).text();
        const size = Number(note.split('\n')[1]);
        if (size >= 11 || Date.now() > until) {
          sizes.push(size);
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    // 10 requests + 1 admin entry (the key) at least, seen from both replicas
    assert.ok(sizes.every((n) => n >= 11), `checkpoint sizes ${sizes.join(', ')}`);
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => new Promise<void>((r) => (p.exitCode !== null ? r() : p.once('exit', () => r())))));
    await mock.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
