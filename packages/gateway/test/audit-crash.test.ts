/**
 * Crash test: a `sovra serve` child process (SQLite) under concurrent load (8 clients, at most 300
 * requests each, mixed stream / non-stream, against an in-process mock upstream) is killed with
 * SIGKILL. After a restart, every request a client saw complete (it got the last byte) has an entry,
 * the leaf indexes are contiguous (0…n−1), and the new checkpoint is consistent with the last one
 * published before the kill (checked by `sovra audit verify --prev`, a separate process).
 * Entries the CLI queued while no server was running (`keys create`) are integrated at start-up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import BetterSqlite3 from 'better-sqlite3';
import { CH, EV, DONE, chatCompletion, jsonResponse, sseScript, startMockUpstream } from './helpers/mock-upstream.ts';
import { rawRequest } from './helpers/raw-client.ts';
import { SOVRA_BIN, allEntries, fetchCheckpoint, runSovra, until } from './helpers/audit.ts';

const CLIENTS = 8;
const PER_CLIENT = 300;
const KILL_AFTER_COMPLETED = 400;
const KILL_AFTER_MS = 8_000;

interface Server {
  proc: ChildProcess;
  url: string;
}

/** Starts `sovra serve` and resolves with its URL once it logs that it listens. */
function startServer(dir: string): Promise<Server> {
  const proc = spawn(process.execPath, [SOVRA_BIN, 'serve', '--config', 'sovra.yaml'], {
    cwd: dir,
    env: { ...process.env, SOVRA_CONFIG: '', SOVRA_BOOTSTRAP_KEY: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s: ${stderr}`)), 30_000);
    const lines = createInterface({ input: proc.stdout! });
    lines.on('line', (line) => {
      if (!line.includes('Sovra listening on')) return;
      clearTimeout(timer);
      resolveStart({ proc, url: (JSON.parse(line) as { url: string }).url });
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${stderr}`));
    });
  });
}

const exited = (p: ChildProcess) => new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));

test('SIGKILL under load loses no completed request and never forks the log', { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-crash-'));
  let n = 0;
  const mock = await startMockUpstream({
    handler: () =>
      n++ % 2 === 0
        ? jsonResponse(200, chatCompletion({ content: 'ok' }))
        : sseScript([EV(CH('"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]')), EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]')), DONE]),
  });
  const servers: ChildProcess[] = [];
  try {
    writeFileSync(
      join(dir, 'sovra.yaml'),
      `server: { host: 127.0.0.1, port: 0 }\ndatabase: { url: "sqlite:./data/sovra.db" }\nlogging: { level: info }\n` +
        `audit: { checkpoint_interval_ms: 100 }\n` +
        `backends:\n  - { id: mock, provider: openai-compatible, base_url: "${mock.url}" }\nmodels:\n  - { name: test-model, backend: mock, upstream_model: mock-llm }\n`,
    );
    // A key made while no server runs: its admin entry waits in the queue.
    const k = await runSovra(dir, ['keys', 'create', '--tenant', 'crash', '--json', '--config', 'sovra.yaml']);
    assert.equal(k.code, 0, k.err);
    const { key, id: keyId } = JSON.parse(k.out) as { key: string; id: string };

    const s1 = await startServer(dir);
    servers.push(s1.proc);
    const v = await runSovra(dir, ['audit', 'vkey', '--config', 'sovra.yaml']);
    assert.equal(v.code, 0, v.err);
    const vkey = v.out.trim();

    // Load, while saving the latest published checkpoint.
    const completed = new Set<string>();
    let lastNote: string | undefined;
    let stop = false;
    const watcher = (async () => {
      while (!stop) {
        try {
          lastNote = (await fetchCheckpoint(s1.url, vkey)).note;
        } catch {
          /* server gone */
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const client = async (c: number) => {
      for (let i = 0; i < PER_CLIENT && !stop; i++) {
        const stream = (c + i) % 2 === 1;
        const r = await rawRequest(`${s1.url}/v1/chat/completions`, {
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          json: { model: 'test-model', stream, messages: [{ role: 'user', content: `load ${c}/${i}` }] },
          timeoutMs: 10_000,
        });
        if (r.status === 0 || r.error) return; // the server is gone
        const done = r.status === 200 && r.complete && (!stream || r.events.at(-1)?.data === '[DONE]');
        if (done) completed.add(String(r.headers['x-request-id']));
      }
    };
    const clients = Array.from({ length: CLIENTS }, (_, c) => client(c));
    await until(() => completed.size >= KILL_AFTER_COMPLETED, KILL_AFTER_MS, 'load').catch(() => undefined);
    const savedNote = lastNote;
    s1.proc.kill('SIGKILL');
    await exited(s1.proc);
    await Promise.all(clients);
    stop = true;
    await watcher;
    assert.ok(completed.size > 50, `only ${completed.size} requests completed before the kill`);
    assert.ok(savedNote, 'a checkpoint was published during the load');
    writeFileSync(join(dir, 'saved.checkpoint'), savedNote);

    // Restart: the stored tiles must reproduce the last checkpoint; everything queued gets integrated.
    const s2 = await startServer(dir);
    servers.push(s2.proc);
    const { checkpoint, entries } = await until(
      async () => {
        const r = await allEntries(s2.url, vkey);
        const ids = new Set(r.entries.map((e) => (JSON.parse(e.toString('utf8')) as { id: string }).id));
        return [...completed].every((id) => ids.has(id)) ? r : undefined;
      },
      20_000,
      'every completed request in the log',
    );
    t.diagnostic(`completed before SIGKILL: ${completed.size}; saved checkpoint size ${savedNote.split('\n')[1]}; after restart: size ${checkpoint.size}`);
    const recs = entries.map((e) => JSON.parse(e.toString('utf8')) as { id: string; type: string; action?: string; target?: string });
    assert.equal(new Set(recs.map((r) => r.id)).size, recs.length, 'no entry twice');
    assert.ok(recs.some((r) => r.type === 'admin' && r.action === 'keys.create' && r.target === keyId), 'the CLI admin entry was integrated');

    const verify = await runSovra(dir, ['audit', 'verify', s2.url, '--vkey', vkey, '--prev', 'saved.checkpoint', '--full']);
    assert.equal(verify.code, 0, verify.out + verify.err);
    assert.match(verify.out, /consistent with the saved checkpoint/);

    s2.proc.kill('SIGTERM');
    await exited(s2.proc);
    const db = new BetterSqlite3(join(dir, 'data', 'sovra.db'), { readonly: true });
    try {
      const idx = db.prepare('SELECT count(*) AS n, min(idx) AS lo, max(idx) AS hi FROM audit_index').get() as { n: number; lo: number; hi: number };
      assert.equal(idx.lo, 0);
      assert.equal(idx.hi, idx.n - 1, 'indexes are contiguous');
      assert.ok(BigInt(idx.n) >= checkpoint.size);
      const rows = db.prepare('SELECT count(*) AS n FROM requests').get() as { n: number };
      const reqEntries = db.prepare("SELECT count(*) AS n FROM audit_index WHERE entry_id NOT LIKE 'adm\\_%' ESCAPE '\\'").get() as { n: number };
      assert.equal(reqEntries.n, rows.n, 'one entry per request row');
      assert.equal((db.prepare('SELECT count(*) AS n FROM audit_queue').get() as { n: number }).n, 0, 'nothing left in the queue after a clean stop');
    } finally {
      db.close();
    }
  } finally {
    for (const p of servers) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await Promise.all(servers.map(exited));
    await mock.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
