/**
 * The `sovra` command as a user runs it: first start writes a commented sovra.yaml and prints a
 * bootstrap key; keys create / list / revoke; configuration errors name the path and the problem.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = resolve(fileURLToPath(import.meta.url), '../../bin/sovra.mjs');

function sovra(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, ...env, SOVRA_CONFIG: '' }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const MOCK_CONFIG = `server: { host: 127.0.0.1, port: 0 }
database: { url: "sqlite:./data/sovra.db" }
backends:
  - id: engine-1
    provider: openai-compatible
    base_url: http://127.0.0.1:9/v1
    jurisdiction: MY
models:
  - name: test-model
    backend: engine-1
    upstream_model: mock-llm
`;

test('keys create prints a key once; list never shows it; revoke works', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-'));
  try {
    writeFileSync(join(dir, 'sovra.yaml'), MOCK_CONFIG);
    const c = sovra(dir, ['keys', 'create', '--tenant', 'ministry-of-health', '--name', 'triage', '--config', 'sovra.yaml']);
    assert.equal(c.code, 0, c.err);
    const key = /(sk-sovra-[0-9A-Za-z]{32})/.exec(c.out)?.[1];
    assert.ok(key, c.out);
    const id = /Created key (key_[0-9A-Za-z]+)/.exec(c.out)?.[1];
    assert.ok(id);
    const l = sovra(dir, ['keys', 'list', '--config', 'sovra.yaml']);
    assert.equal(l.code, 0);
    assert.match(l.out, /ministry-of-health/);
    assert.ok(!l.out.includes(key), 'list never prints the key');
    assert.ok(l.out.includes(key.slice(0, 13)), 'list shows the prefix');
    const db = readFileSync(join(dir, 'data', 'sovra.db'));
    assert.ok(!db.includes(key), 'the key is not stored in the database');
    assert.equal(sovra(dir, ['keys', 'revoke', id, '--config', 'sovra.yaml']).code, 0);
    assert.match(sovra(dir, ['keys', 'list', '--config', 'sovra.yaml']).out, /revoked/);
    const again = sovra(dir, ['keys', 'revoke', id, '--config', 'sovra.yaml']);
    assert.equal(again.code, 1);
    assert.equal(sovra(dir, ['keys', 'create', '--config', 'sovra.yaml']).code, 1, 'create needs --tenant');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('config errors name the path and the problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-'));
  try {
    writeFileSync(
      join(dir, 'bad.yaml'),
      `backends:\n  - id: e1\n    provider: openai-compatible\n    base_url: not-a-url\n    jurisdiction: Malaysia\nmodels:\n  - name: m\n    backend: nope\nserver: { port: "eighty", colour: blue }\n`,
    );
    const r = sovra(dir, ['config', 'check', 'bad.yaml']);
    assert.equal(r.code, 1);
    assert.match(r.err, /backends\[0\]\.base_url/);
    assert.match(r.err, /backends\[0\]\.jurisdiction: must be an ISO 3166-1 alpha-2 code/);
    assert.match(r.err, /models\[0\]\.backend: unknown backend "nope"/);
    assert.match(r.err, /server\.port/);
    assert.match(r.err, /server: unknown field\(s\) "colour"/);
    writeFileSync(join(dir, 'syntax.yaml'), 'server: { port: 8080\n');
    assert.equal(sovra(dir, ['config', 'check', 'syntax.yaml']).code, 1);
    writeFileSync(join(dir, 'good.yaml'), MOCK_CONFIG);
    assert.equal(sovra(dir, ['config', 'check', 'good.yaml']).code, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('first start writes a commented sovra.yaml, prints a bootstrap key, and serves; a missing model is reported, not fatal', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-'));
  const child = spawn(process.execPath, [BIN, 'serve'], { cwd: dir, env: { ...process.env, SOVRA_CONFIG: '', SOVRA_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  try {
    const deadline = Date.now() + 60_000;
    let url: string | undefined;
    let key: string | undefined;
    while (Date.now() < deadline && !(url && key && /backend embedded failed to start|backend ready/.test(out))) {
      await new Promise((r) => setTimeout(r, 100));
      url ??= /Sovra listening on (http:\/\/[0-9.:]+)/.exec(out)?.[1];
      key ??= /(sk-sovra-[0-9A-Za-z]{32})/.exec(err)?.[1];
      assert.equal(child.exitCode, null, `sovra exited early:\n${out}\n${err}`);
    }
    assert.ok(url && key, `no URL or key:\n${out}\n${err}`);
    assert.ok(existsSync(join(dir, 'sovra.yaml')));
    assert.match(readFileSync(join(dir, 'sovra.yaml'), 'utf8'), /^# Sovra configuration/);
    assert.ok(existsSync(join(dir, 'data', 'sovra.db')));
    assert.ok(!out.includes(key), 'the bootstrap key is not in the JSON log');
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    // In this temp folder the default model file does not exist: start-up says how to fix it and
    // requests for the model get a clear 503 while the server keeps serving.
    if (!existsSync(join(dir, 'models'))) {
      assert.match(out, /model_path/);
      const r = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'sovra-austen', messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 503);
      const body = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'backend_not_ready');
      assert.match(body.error.message, /model_path|does not exist|not found/i);
      const ready = await fetch(`${url}/readyz`);
      assert.equal(ready.status, 503);
    }
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
