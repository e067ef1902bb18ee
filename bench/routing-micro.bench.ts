/**
 * Micro-benchmark of the routing step alone, in-process, for the two configurations of
 * bench/routing.bench.ts (`single`: one backend; `pool`: three backends, MY/MY/SG, with the bench
 * tenant's residency policy allowing only MY). See bench/README.md.
 *
 *   node --import tsx bench/routing-micro.bench.ts [--iterations 200000] [--rounds 7] [--strategy p2c_ewma]
 *
 * The load benchmark's req/s move by 10-20 % between runs on a shared 2-core machine; this measures
 * the per-request CPU cost of what routing adds on the gateway's event loop, without the noise. One
 * "request" is what the pipeline does for routing (pipeline/index.ts and pipeline/dispatch.ts):
 *
 *   needs     `requestNeeds('chat.completions', body)`
 *   plan      `table.plan(alias, needs, principal)` (alias, allowlist, tenant policy, request class,
 *             capabilities and residency of every pool member, decision lines)
 *   next      `plan.next()` (health admission of each candidate, the balancer's pick, the Attempt)
 *   dispatch  dispatch's bookkeeping around the attempt: `acquire()`, the attempt's decision line,
 *             `onSuccess(latency)` (EWMA), `release()`
 *   audit     what the decision lines cost the audit path: `structuredClone(decisions)` (the journal
 *             posts them to the store worker) + `canonicalize({ policy })` (the worker's entry encoding)
 *
 * Each stage is timed cumulatively (needs; needs+plan; …), `--iterations` per batch, batches of the
 * two configurations interleaved for `--rounds` rounds; the report gives the median ns per request of
 * each stage (by difference) and the pool's extra cost. Everything is bounded by the iteration count.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { parseConfig } from '../packages/gateway/src/config/load.ts';
import { canonicalize } from '../packages/gateway/src/audit/jcs.ts';
import type { Principal } from '../packages/gateway/src/pipeline/context.ts';
import { requestNeeds, type RoutingTable } from '../packages/gateway/src/routing/router.ts';
import { RoutingService } from '../packages/gateway/src/routing/service.ts';
import { BENCH_MODEL, BENCH_TENANT, routingConfig, type RoutingMode } from './gateway-server.ts';
import { parseStrategy } from './gateway.bench.ts';

const BODY: Record<string, unknown> = {
  model: BENCH_MODEL,
  messages: [{ role: 'user', content: 'Say hello to the benchmark in one short sentence, please.' }],
  max_tokens: 64,
};

const PRINCIPAL: Principal = {
  keyId: 'key_bench',
  tenantId: 'ten_bench',
  tenant: BENCH_TENANT,
  modelAllowlist: null,
  tenantAttributes: { jurisdiction: null, classification: null },
};

const STAGES = ['needs', 'plan', 'next', 'dispatch', 'audit'] as const;
type Stage = (typeof STAGES)[number];

let sink = 0;

/** Runs `n` requests through the stages up to `upTo` (inclusive); returns ns per request. */
function batch(table: RoutingTable, upTo: number, n: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const needs = requestNeeds('chat.completions', BODY);
    if (upTo === 0) {
      sink += needs.contextTokens;
      continue;
    }
    const plan = table.plan(BENCH_MODEL, needs, PRINCIPAL, undefined);
    if (upTo === 1) {
      sink += plan.decisions.length;
      continue;
    }
    const a = plan.next()!;
    if (upTo === 2) {
      sink += a.n;
      continue;
    }
    const health = a.member.backend;
    const release = health.acquire();
    plan.note(`attempt ${a.n} ${a.route.model.name}/${a.route.backendConfig.id}`);
    health.onSuccess(1 + (i & 7) * 0.125);
    release();
    if (upTo === 3) {
      sink += plan.decisions.length;
      continue;
    }
    const cloned = structuredClone(plan.decisions);
    sink += canonicalize({ policy: { residency: cloned, pii: [] } }).length;
  }
  return Number(process.hrtime.bigint() - t0) / n;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string', default: '200000' },
      rounds: { type: 'string', default: '7' },
      strategy: { type: 'string', default: 'p2c_ewma' },
    },
    strict: true,
  });
  const n = Number(values.iterations);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(n) || n < 1000 || n > 10_000_000) throw new Error('--iterations must be an integer in [1000, 10000000]');
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50) throw new Error('--rounds must be an integer in [1, 50]');
  const strategy = parseStrategy(values.strategy);
  const dir = mkdtempSync(join(tmpdir(), 'sovra-routing-micro-'));
  const tables = new Map<RoutingMode, RoutingTable>();
  const services: RoutingService[] = [];
  try {
    for (const mode of ['single', 'pool'] as const) {
      const urls = ['http://127.0.0.1:9/v1', 'http://127.0.0.1:10/v1', 'http://127.0.0.1:11/v1'];
      const cfg = { database: { url: `sqlite:${join(dir, 'x.db')}` }, ...routingConfig(mode, mode === 'single' ? urls.slice(0, 1) : urls, strategy, 128) };
      const config = parseConfig(stringify(cfg), `bench-${mode}`, {});
      const svc = await RoutingService.create(config, { configDir: dir, env: { SOVRA_BENCH_UPSTREAM_KEY: 'x' }, log: () => {} });
      services.push(svc);
      tables.set(mode, svc.table());
    }
    // Show what one request decides, per configuration.
    for (const [mode, t] of tables) {
      const p = t.plan(BENCH_MODEL, requestNeeds('chat.completions', BODY), PRINCIPAL, undefined);
      const a = p.next()!;
      p.note(`attempt ${a.n} ${a.route.model.name}/${a.route.backendConfig.id}`);
      process.stdout.write(`${mode.padEnd(6)} decisions: ${JSON.stringify(p.decisions)}\n`);
    }
    // Warm-up (JIT), then interleaved measured rounds.
    for (const t of tables.values()) for (let s = 0; s < STAGES.length; s++) batch(t, s, Math.min(n, 50_000));
    const ns = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      const order: RoutingMode[] = r % 2 === 0 ? ['single', 'pool'] : ['pool', 'single'];
      for (let s = 0; s < STAGES.length; s++)
        for (const mode of order) {
          const k = `${mode}:${s}`;
          if (!ns.has(k)) ns.set(k, []);
          ns.get(k)!.push(batch(tables.get(mode)!, s, n));
        }
    }
    const cum = (mode: RoutingMode, s: number) => median(ns.get(`${mode}:${s}`)!);
    const stageNs = (mode: RoutingMode, s: number) => cum(mode, s) - (s === 0 ? 0 : cum(mode, s - 1));
    process.stdout.write(`\n## Routing step, ns per request (median of ${rounds} interleaved rounds × ${n.toLocaleString('en-US')} requests; pool strategy ${strategy})\n\n`);
    process.stdout.write('| stage | single ns | pool ns | pool − single ns |\n|---|---:|---:|---:|\n');
    for (let s = 0; s < STAGES.length; s++) {
      const a = stageNs('single', s);
      const b = stageNs('pool', s);
      process.stdout.write(`| ${STAGES[s] as Stage} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(b - a >= 0 ? '+' : '') + (b - a).toFixed(0)} |\n`);
    }
    const ts = cum('single', STAGES.length - 1);
    const tp = cum('pool', STAGES.length - 1);
    process.stdout.write(`| **total** | **${ts.toFixed(0)}** | **${tp.toFixed(0)}** | **${(tp - ts >= 0 ? '+' : '') + (tp - ts).toFixed(0)}** |\n`);
    process.stdout.write(`\n(sink ${sink % 7})\n`);
  } finally {
    await Promise.all(services.map((s) => (s as unknown as { close?: () => Promise<void> }).close?.()));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`routing micro-benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
