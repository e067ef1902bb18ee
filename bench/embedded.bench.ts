/**
 * The shipped model through the gateway: time to first token, tokens/s and the gateway's RSS.
 *
 * Starts `sovra serve` with its default configuration in a temp folder (the embedded engine serving
 * models/sovra-austen-1m.Q8_0.gguf), then sends N sequential streamed chat requests with the openai
 * SDK (bounded: --requests, default 30) and a burst of --concurrent parallel ones (default 4,
 * queued onto the default single context).
 *
 *   node --import tsx bench/embedded.bench.ts [--requests 30] [--concurrent 4] [--max-tokens 200]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '30' }, concurrent: { type: 'string', default: '4' }, 'max-tokens': { type: 'string', default: '200' } } });
const N = Math.min(1000, Number(values.requests));
const C = Math.min(64, Number(values.concurrent));
const MAX = Number(values['max-tokens']);
const BIN = resolve(fileURLToPath(import.meta.url), '../../packages/gateway/bin/sovra.mjs');
const PROMPTS = [
  'It was a fine morning, and Elizabeth resolved to walk to Netherfield.',
  'What do you think of Mr. Darcy?',
  'The ball at Mansfield Park was the talk of the county.',
  'He shook his head, and said nothing more.',
];

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const pct = (a: number[], p: number) => a.slice().sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor((p / 100) * a.length))]!;

const dir = mkdtempSync(join(tmpdir(), 'sovra-embedded-bench-'));
const child = spawn(process.execPath, [BIN, 'serve'], { cwd: dir, env: { ...process.env, SOVRA_CONFIG: '', SOVRA_PORT: '0', SOVRA_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
let err = '';
child.stdout.on('data', (d: Buffer) => (out += d));
child.stderr.on('data', (d: Buffer) => (err += d));
const stop = () => {
  if (child.exitCode === null) child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', stop);
try {
  let url: string | undefined;
  let key: string | undefined;
  for (let i = 0; i < 600 && !(url && key); i++) {
    await new Promise((r) => setTimeout(r, 100));
    url ??= /curl (http:\/\/[0-9.:]+)\/v1/.exec(err)?.[1];
    key ??= /(sk-sovra-[0-9A-Za-z]{32})/.exec(err)?.[1];
  }
  if (!url || !key) throw new Error(`gateway did not start:\n${out}\n${err}`);
  for (let i = 0; i < 100 && (await fetch(`${url}/readyz`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
  const rssIdle = rssKb(child.pid!);
  const client = new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0 });

  async function one(i: number) {
    const t0 = performance.now();
    let tFirst = 0;
    let usage: OpenAI.CompletionUsage | null | undefined;
    const stream = await client.chat.completions.create({ model: 'sovra-austen', stream: true, stream_options: { include_usage: true }, max_tokens: MAX, seed: i, messages: [{ role: 'user', content: PROMPTS[i % PROMPTS.length]! }] });
    for await (const c of stream) {
      if (!tFirst && c.choices[0]?.delta?.content) tFirst = performance.now();
      if (c.usage) usage = c.usage;
    }
    const tEnd = performance.now();
    const gen = usage!.completion_tokens;
    return { ttftMs: tFirst - t0, totalMs: tEnd - t0, tokens: gen, tps: gen > 1 ? (gen - 1) / ((tEnd - tFirst) / 1000) : 0 };
  }

  await one(999); // warm-up
  const seq = [];
  let rssPeak = 0;
  for (let i = 0; i < N; i++) {
    seq.push(await one(i));
    rssPeak = Math.max(rssPeak, rssKb(child.pid!));
  }
  const t0 = performance.now();
  const par = await Promise.all(Array.from({ length: C }, (_, i) => one(100 + i)));
  const wall = performance.now() - t0;
  rssPeak = Math.max(rssPeak, rssKb(child.pid!));
  const ttft = seq.map((r) => r.ttftMs);
  const tps = seq.map((r) => r.tps);
  const toks = seq.reduce((a, r) => a + r.tokens, 0);
  console.log(`sovra-austen through the gateway (embedded engine, threads 1, contexts 1), ${N} sequential streamed requests, max_tokens ${MAX}`);
  console.log(`  completion tokens: ${toks} (mean ${(toks / N).toFixed(1)} per reply)`);
  console.log(`  time to first token: p50 ${pct(ttft, 50).toFixed(2)} ms, p90 ${pct(ttft, 90).toFixed(2)} ms, max ${Math.max(...ttft).toFixed(2)} ms`);
  console.log(`  generation speed:   p50 ${pct(tps, 50).toFixed(0)} tokens/s, p10 ${pct(tps, 10).toFixed(0)} tokens/s`);
  console.log(`  ${C} concurrent requests (queued FIFO onto 1 context): ${wall.toFixed(0)} ms wall, ${(par.reduce((a, r) => a + r.tokens, 0) / (wall / 1000)).toFixed(0)} tokens/s aggregate, TTFT max ${Math.max(...par.map((r) => r.ttftMs)).toFixed(1)} ms`);
  console.log(`  gateway RSS: ${(rssIdle / 1024).toFixed(0)} MiB after start, ${(rssPeak / 1024).toFixed(0)} MiB peak`);
} finally {
  stop();
}
