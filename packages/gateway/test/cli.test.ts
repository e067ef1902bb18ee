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
import OpenAI from 'openai';

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
    assert.equal(sovra(dir, ['keys', 'create', '--config', 'sovra.yaml']).code, 2, 'create needs --tenant: bad usage');
    assert.equal(sovra(dir, ['tenants', 'frobnicate', '--config', 'sovra.yaml']).code, 2, 'an unknown subcommand: bad usage');
    assert.equal(sovra(dir, ['admins', 'create', '--role', 'superuser', '--name', 'x', '--config', 'sovra.yaml']).code, 2, 'an invalid role: bad usage');
    assert.equal(sovra(dir, ['tenants', 'create', 'bad', '--jurisdiction', 'XX', '--config', 'sovra.yaml']).code, 2, 'an invalid jurisdiction: bad usage');
    const badVkey = sovra(dir, ['audit', 'verify', 'http://127.0.0.1:9', '--vkey', 'bogus', '--config', 'sovra.yaml']);
    assert.equal(badVkey.code, 2, `a malformed vkey: bad usage (${badVkey.err})`);
    // a rotated key shows when it stops working, and that it has once the overlap is over
    const k2 = /Created key (key_[0-9A-Za-z]+)/.exec(sovra(dir, ['keys', 'create', '--tenant', 'ministry-of-health', '--config', 'sovra.yaml']).out)?.[1];
    const k3 = /Created key (key_[0-9A-Za-z]+)/.exec(sovra(dir, ['keys', 'create', '--tenant', 'ministry-of-health', '--config', 'sovra.yaml']).out)?.[1];
    assert.ok(k2 && k3);
    assert.equal(sovra(dir, ['keys', 'rotate', k2, '--overlap', '24h', '--config', 'sovra.yaml']).code, 0);
    assert.equal(sovra(dir, ['keys', 'rotate', k3, '--overlap', '0s', '--config', 'sovra.yaml']).code, 0);
    const listed = sovra(dir, ['keys', 'list', '--config', 'sovra.yaml']).out.split('\n');
    assert.match(listed.find((l) => l.startsWith(k2))!, /\tactive until \d{4}-/);
    assert.match(listed.find((l) => l.startsWith(k3))!, /\texpired \d{4}-/);
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

/** Spawn `sovra serve` in `cwd`; resolves once it listens (URL) and its backends settled. */
async function serveIn(cwd: string, env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [BIN, 'serve'], { cwd, env: { ...process.env, SOVRA_CONFIG: '', SOVRA_PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const deadline = Date.now() + 60_000;
  let url: string | undefined;
  while (Date.now() < deadline) {
    url ??= /Sovra listening on (http:\/\/[0-9.:]+)/.exec(out)?.[1];
    if (url && /failed to start|backend ready/.test(out)) break;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    url,
    out: () => out,
    err: () => err,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}

test('first start: writes a commented sovra.yaml, prints a bootstrap key once, and streams the shipped model through the openai SDK with usage', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-'));
  const s = await serveIn(dir);
  try {
    assert.ok(s.url, `not listening:\n${s.out()}\n${s.err()}`);
    const key = /(sk-sovra-[0-9A-Za-z]{32})/.exec(s.err())?.[1];
    assert.ok(key, s.err());
    assert.match(readFileSync(join(dir, 'sovra.yaml'), 'utf8'), /^# Sovra configuration/);
    assert.ok(existsSync(join(dir, 'data', 'sovra.db')));
    assert.ok(!s.out().includes(key), 'the bootstrap key is not in the JSON log');
    assert.match(s.out(), /backend ready/, s.out());
    assert.equal((await fetch(`${s.url}/readyz`)).status, 200);
    const client = new OpenAI({ apiKey: key, baseURL: `${s.url}/v1`, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'sovra-austen',
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 48,
      messages: [{ role: 'user', content: 'Tell me about Mr. Darcy.' }],
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.delta?.content ?? '';
      if (c.usage) usage = c.usage;
    }
    assert.ok(text.trim().length > 0, 'some prose');
    assert.ok(usage && usage.completion_tokens > 0 && usage.completion_tokens <= 48 && usage.prompt_tokens > 0);
    // A second start reuses the file and the keys: no new bootstrap key.
    await s.stop();
    const again = await serveIn(dir);
    try {
      assert.ok(again.url);
      assert.ok(!/sk-sovra-/.test(again.err()), 'no second bootstrap key');
    } finally {
      await again.stop();
    }
  } finally {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing or corrupt model file is reported clearly at start; the server keeps serving and answers 503 for that model', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-'));
  writeFileSync(join(dir, 'garbage.gguf'), 'GGUF' + 'x'.repeat(200));
  writeFileSync(
    join(dir, 'sovra.yaml'),
    `server: { host: 127.0.0.1, port: 0 }\nbackends:\n  - { id: missing, provider: embedded, model_path: ./nope.gguf }\n  - { id: corrupt, provider: embedded, model_path: ./garbage.gguf }\nmodels:\n  - { name: m1, backend: missing }\n  - { name: m2, backend: corrupt }\n`,
  );
  const s = await serveIn(dir);
  try {
    assert.ok(s.url, s.out() + s.err());
    await new Promise((r) => setTimeout(r, 1500)); // both backends settle
    assert.match(s.out(), /nope\.gguf does not exist\. Point model_path/);
    assert.match(s.out(), /could not load the GGUF model|not a GGUF model file/);
    const key = /(sk-sovra-[0-9A-Za-z]{32})/.exec(s.err())?.[1];
    for (const model of ['m1', 'm2']) {
      const r = await fetch(`${s.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 503);
      const body = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'backend_not_ready');
    }
    assert.equal((await fetch(`${s.url}/readyz`)).status, 503);
    assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
    assert.equal(s.child.exitCode, null, 'still running');
  } finally {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hot reload of a running `sovra serve`: an edited file and SIGHUP swap the models; an invalid file is rejected and the old one kept', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-'));
  const file = join(dir, 'sovra.yaml');
  writeFileSync(file, MOCK_CONFIG);
  const s = await serveIn(dir);
  try {
    assert.ok(s.url, `not listening:\n${s.out()}\n${s.err()}`);
    const keyEnd = Date.now() + 15_000;
    while (!/sk-sovra-[0-9A-Za-z]{32}/.test(s.err()) && Date.now() < keyEnd) await new Promise((r) => setTimeout(r, 50));
    const key = /(sk-sovra-[0-9A-Za-z]{32})/.exec(s.err())?.[1];
    assert.ok(key, `no bootstrap key on stderr: ${s.err()}`);
    const models = async () => {
      const r = await fetch(`${s.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      return ((await r.json()) as { data: Array<{ id: string }> }).data.map((m) => m.id);
    };
    const waitFor = async (want: string[], what: string) => {
      const end = Date.now() + 15_000;
      for (;;) {
        const got = await models();
        if (JSON.stringify(got) === JSON.stringify(want)) return;
        if (Date.now() > end) assert.fail(`${what}: models ${JSON.stringify(got)}, wanted ${JSON.stringify(want)}\n${s.out()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    assert.deepEqual(await models(), ['test-model']);
    // 1. the file changes: watched
    writeFileSync(file, MOCK_CONFIG.replace('models:\n', 'models:\n  - name: added-by-edit\n    backend: engine-1\n'));
    await waitFor(['added-by-edit', 'test-model'], 'after editing the file');
    // 2. an invalid file: rejected, the running configuration kept
    writeFileSync(file, MOCK_CONFIG + 'bogus_section: 1\n');
    const end = Date.now() + 15_000;
    while (!/reload \(file-change\) rejected/.test(s.out()) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    assert.match(s.out(), /reload \(file-change\) rejected; the running configuration is kept: invalid configuration/);
    assert.deepEqual(await models(), ['added-by-edit', 'test-model']);
    // 3. SIGHUP re-reads the file (valid again, with another alias)
    writeFileSync(file, MOCK_CONFIG.replace('models:\n', 'models:\n  - name: added-by-hup\n    backend: engine-1\n'));
    s.child.kill('SIGHUP');
    await waitFor(['added-by-hup', 'test-model'], 'after SIGHUP');
    assert.equal(s.child.exitCode, null, 'SIGHUP does not stop the server');
    assert.match(s.out(), /configuration reloaded/);
  } finally {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
