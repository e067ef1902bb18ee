/**
 * Routing-overhead benchmark: a gateway with one backend against a gateway with a pool of three
 * and a residency policy, on the same mock, runs interleaved. See bench/README.md.
 *
 *   node --import tsx bench/routing.bench.ts [--duration 10] [--warmup 2] [--connections 16,64]
 *        [--rounds 2] [--audit on|off|on,off] [--strategy p2c_ewma|weighted|least_in_flight]
 *        [--modes non-stream,stream] [--max-other-cpu 25] [--retries 3] [--control] [--cpu-prof] [--out bench/results]
 *
 * Reuses the load benchmark's harness (bench/gateway.bench.ts). Processes:
 * - one mock engine (bench/mock-upstream.ts) listening on three ports (`--instances 3`), so the
 *   upstream side costs the same whichever gateway sends to it;
 * - per audit setting, two gateways (bench/gateway-server.ts), both alive for the whole phase:
 *   `single` (`--routing single`: one backend on port 1, `backend:` alias, no residency section)
 *   and `pool` (`--routing pool`: backends my-1/my-2 (MY) and sg-1 (SG) on ports 1-3, a `pool:`
 *   alias with the chosen strategy, and a tenant policy allowing only MY with a default
 *   classification, so every request is policy-checked and sg-1 is excluded every time);
 * - this process, which runs the load generator (autocannon) and the orchestration.
 *
 * For each round, connection count and mode, the two gateways are measured back to back, the order
 * alternating between rounds (single→pool, then pool→single, …: drifts in background load cancel
 * out over two rounds). Reported per row: mean req/s, min-max and spread over the rounds, mean
 * p50/p99, gateway CPU per request (whole process and main thread), and the overhead of pool vs
 * single — from the means, and per round (paired, adjacent runs). The mock counts requests per
 * port, which shows how the pool spread them (sg-1 must get none).
 *
 * `--control` (an A/A test of the method): the "pool" gateway is configured exactly as the single one,
 * so the overheads reported are the method's own noise and bias on this machine.
 *
 * Interference: the machine's busy CPU is read from /proc/stat around every measured run, minus what
 * the benchmark's own processes used = "other" CPU. Before each run the benchmark waits (at most
 * 60 s) for the machine to be quiet; a run during which other CPU exceeded `--max-other-cpu` (% of
 * one core) is discarded (kept in the JSON) and made again, at most `--retries` times.
 *
 * Prints a markdown report and writes JSON to `<out>/routing-<timestamp>.json`. Every load loop is
 * bounded by `--duration`; child processes are stopped on exit, errors and Ctrl-C.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  cleanup,
  cpuMs,
  fmt,
  installExitHandlers,
  machineBusyPercent,
  measure,
  parseStrategy,
  sanityCheck,
  spawnChild,
  stopChild,
  type Child,
  type Endpoint,
  type LoadResult,
  type Mode,
  type Strategy,
} from './gateway.bench.ts';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));

/** Median of `xs` (mean of the middle two for an even count), rounded to 0.1; null when empty. */
function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return Math.round((a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2) * 10) / 10;
}

/** The issue's target: the pool (3 backends, policy on) serves at most 5 % fewer req/s than one backend. */
export const MAX_OVERHEAD_PCT = 5;
/** The metering issue's target: limits and budgets cost at most 10 % of req/s. */
export const METERING_MAX_OVERHEAD_PCT = 10;
/** The audit-log issue's target: the log costs at most 15 % of req/s. */
export const AUDIT_MAX_OVERHEAD_PCT = 15;

const USAGE = `Usage: node --import tsx bench/routing.bench.ts [options]
  --duration S        measured seconds per load run (default 10)
  --warmup S          warm-up seconds before each run, discarded (default 2)
  --connections LIST  comma-separated connection counts (default 16,64)
  --modes LIST        non-stream,stream (default both)
  --rounds N          runs of each configuration per row, interleaved (default 2)
  --audit LIST        on, off, or on,off: one phase (a fresh pair of gateways) per setting (default on)
  --strategy S        the pool's balancing strategy: p2c_ewma (default), weighted, least_in_flight
  --max-other-cpu P   re-do a run during which other processes used more than P % of one core (default 25; 0 = never)
  --retries N         most re-dos per run (default 3)
  --control           A/A control: the second gateway is a single one too (measures the method's noise)
  --vary WHAT         routing (default): single vs pool; metering: both single, the second gateway with
                      RPM/TPM limits and token budgets on the bench key and tenant (--metering-mode on|limits);
                      audit: both single, the first with the transparency log off, the second with it on;
                      retention: both single with the log on, the second also with content retention
  --metering-mode M   with --vary metering: on (limits + budgets, default) or limits
  --pool-first        start the second gateway's process first (the A/A control shows a bias of the
                      process started second; run both orders and compare)
  --cpu-prof          CPU-profile both gateways; profiles go to <out>/profiles/routing-<time>-<audit>-<config>/
  --out DIR           where the JSON results go (default bench/results)
`;

type Config = 'single' | 'pool';
const CONFIGS: readonly Config[] = ['single', 'pool'];

export interface RoutingOptions {
  durationS: number;
  warmupS: number;
  connections: number[];
  modes: Mode[];
  rounds: number;
  audits: boolean[];
  strategy: Strategy;
  /** % of one core; 0 = never re-do a run. */
  maxOtherCpu: number;
  retries: number;
  /** A/A control: both gateways `single`. */
  control: boolean;
  /** Spawn the "pool" gateway's process before the "single" one. */
  poolFirst: boolean;
  /** What the second gateway changes: its routing (pool), or metering (`meteringMode`) on a single backend. */
  vary: 'routing' | 'metering' | 'audit' | 'retention';
  meteringMode: 'on' | 'limits';
  cpuProf: boolean;
  outDir: string;
}

function parseOptions(argv: string[]): RoutingOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '16,64' },
      modes: { type: 'string', default: 'non-stream,stream' },
      rounds: { type: 'string', default: '2' },
      audit: { type: 'string', default: 'on' },
      strategy: { type: 'string', default: 'p2c_ewma' },
      'max-other-cpu': { type: 'string', default: '25' },
      retries: { type: 'string', default: '3' },
      control: { type: 'boolean', default: false },
      'pool-first': { type: 'boolean', default: false },
      vary: { type: 'string', default: 'routing' },
      'metering-mode': { type: 'string', default: 'on' },
      'cpu-prof': { type: 'boolean', default: false },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const num = (name: string, v: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number in [${min}, ${max}], got "${v}"`);
    return n;
  };
  const list = (v: string) => v.split(',').map((x) => x.trim()).filter((x) => x !== '');
  const modes = list(values.modes).map((m) => {
    if (m !== 'non-stream' && m !== 'stream') throw new Error(`--modes takes non-stream and/or stream, got "${m}"`);
    return m;
  });
  const audits = list(values.audit).map((a) => {
    if (a !== 'on' && a !== 'off') throw new Error(`--audit takes on and/or off, got "${a}"`);
    return a === 'on';
  });
  if (modes.length === 0 || audits.length === 0) throw new Error('--modes and --audit need at least one value');
  return {
    durationS: num('duration', values.duration, 1, 600),
    warmupS: num('warmup', values.warmup, 0, 60),
    connections: list(values.connections).map((c) => Math.round(num('connections', c, 1, 1024))),
    modes,
    rounds: Math.round(num('rounds', values.rounds, 1, 20)),
    audits,
    strategy: parseStrategy(values.strategy),
    maxOtherCpu: num('max-other-cpu', values['max-other-cpu'], 0, 1000),
    retries: Math.round(num('retries', values.retries, 0, 10)),
    control: values.control,
    poolFirst: values['pool-first'],
    vary: values.vary === 'metering' || values.vary === 'audit' || values.vary === 'routing' || values.vary === 'retention' ? values.vary : (() => { throw new Error(`--vary takes routing, metering, audit or retention, got "${values.vary}"`); })(),
    meteringMode: values['metering-mode'] === 'limits' ? 'limits' : values['metering-mode'] === 'on' ? 'on' : (() => { throw new Error(`--metering-mode takes on or limits, got "${values['metering-mode']}"`); })(),
    cpuProf: values['cpu-prof'],
    outDir: resolve(values.out),
  };
}

// ---------------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------------

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const r1 = (n: number) => Math.round(n * 10) / 10;
const r2 = (n: number) => Math.round(n * 100) / 100;

/** One measured run, with the gateway it went to and the requests each mock port answered meanwhile. */
export interface RoutingRun {
  audit: boolean;
  config: Config;
  round: number;
  /** 1 = measured first of the pair in its round. */
  position: 1 | 2;
  /** Chat requests answered per mock port during the run (warm-up included). */
  upstreamRequests: number[];
  /** Earlier tries of this run discarded for interference (their other CPU, % of one core). */
  discardedOtherCpu: number[];
  result: LoadResult;
}

export interface RowSummary {
  audit: boolean;
  mode: Mode;
  connections: number;
  single: ConfigSummary;
  pool: ConfigSummary;
  /** (single − pool) / single × 100, from the mean req/s. Positive = the pool is slower. */
  overheadPct: number;
  /** The same, per round (adjacent runs), and their mean, min and max. */
  pairedOverheadPct: number[];
  /**
   * Median of {@link pairedOverheadPct}: robust to one round disturbed by load from outside the VM
   * (which `--max-other-cpu` cannot see). Reported next to the mean-based overhead; PASS/MISS uses the mean.
   */
  medianPairedPct: number | null;
  /** (pool − single) / single × 100 of gateway CPU µs per request (whole process). */
  cpuOverheadPct: number | null;
  /** The same for the gateway's main thread. */
  mainCpuOverheadPct: number | null;
  /** Added p50 latency (pool − single), ms, from the means. */
  addedP50Ms: number;
  pass: boolean;
}

export interface ConfigSummary {
  rps: number[];
  rpsMean: number;
  rpsMin: number;
  rpsMax: number;
  /** (max − min) / mean × 100. */
  spreadPct: number;
  p50Mean: number;
  p99Mean: number;
  cpuUsPerReq: number | null;
  mainCpuUsPerReq: number | null;
  /** Highest other-process CPU during a kept run, % of one core. */
  maxOtherCpu: number | null;
  /** Runs discarded for interference and made again. */
  redone: number;
  errors: number;
  non2xx: number;
}

function summariseConfig(runs: RoutingRun[]): ConfigSummary {
  const rps = runs.map((r) => r.result.rps);
  const m = mean(rps);
  const cpu = runs.map((r) => r.result.gatewayCpuUsPerReq).filter((x): x is number => x !== null);
  const main = runs.map((r) => r.result.gatewayMainCpuUsPerReq).filter((x): x is number => x !== null);
  return {
    rps,
    rpsMean: Math.round(m),
    rpsMin: Math.min(...rps),
    rpsMax: Math.max(...rps),
    spreadPct: r1(((Math.max(...rps) - Math.min(...rps)) / m) * 100),
    p50Mean: r2(mean(runs.map((r) => r.result.p50Ms))),
    p99Mean: r2(mean(runs.map((r) => r.result.p99Ms))),
    cpuUsPerReq: cpu.length ? Math.round(mean(cpu)) : null,
    mainCpuUsPerReq: main.length ? Math.round(mean(main)) : null,
    maxOtherCpu: runs.some((r) => r.result.cpuPercent.other === null) ? null : Math.max(...runs.map((r) => r.result.cpuPercent.other!)),
    redone: runs.reduce((a, r) => a + r.discardedOtherCpu.length, 0),
    errors: runs.reduce((a, r) => a + r.result.errors + r.result.timeouts, 0),
    non2xx: runs.reduce((a, r) => a + r.result.non2xx, 0),
  };
}

export function summarise(runs: RoutingRun[], opts: RoutingOptions): RowSummary[] {
  const rows: RowSummary[] = [];
  for (const audit of opts.audits)
    for (const connections of opts.connections)
      for (const mode of opts.modes) {
        const of = (c: Config) => runs.filter((r) => r.audit === audit && r.config === c && r.result.mode === mode && r.result.connections === connections).sort((a, b) => a.round - b.round);
        const s = of('single');
        const p = of('pool');
        if (s.length === 0 || p.length === 0) continue;
        const single = summariseConfig(s);
        const pool = summariseConfig(p);
        const pct = (a: number | null, b: number | null) => (a === null || b === null || a === 0 ? null : r1(((b - a) / a) * 100));
        const paired = s.map((x, i) => (p[i] ? r1(((x.result.rps - p[i]!.result.rps) / x.result.rps) * 100) : NaN)).filter(Number.isFinite);
        const overheadPct = r1(((single.rpsMean - pool.rpsMean) / single.rpsMean) * 100);
        rows.push({
          audit,
          mode,
          connections,
          single,
          pool,
          overheadPct,
          pairedOverheadPct: paired,
          medianPairedPct: median(paired),
          cpuOverheadPct: pct(single.cpuUsPerReq, pool.cpuUsPerReq),
          mainCpuOverheadPct: pct(single.mainCpuUsPerReq, pool.mainCpuUsPerReq),
          addedP50Ms: r2(pool.p50Mean - single.p50Mean),
          pass: overheadPct <= (opts.vary === 'metering' ? METERING_MAX_OVERHEAD_PCT : opts.vary === 'audit' || opts.vary === 'retention' ? AUDIT_MAX_OVERHEAD_PCT : MAX_OVERHEAD_PCT) && single.errors + single.non2xx + pool.errors + pool.non2xx === 0,
        });
      }
  return rows;
}

// ---------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------

export interface RoutingReport {
  startedAt: string;
  finishedAt: string;
  options: RoutingOptions;
  machine: { node: string; platform: string; cpus: number; cpuModel: string; loadavgStart: number[]; loadavgEnd: number[] };
  /** Mock ports, in the order of the pool's backends (my-1, my-2, sg-1); `single` uses the first. */
  upstreams: string[];
  runs: RoutingRun[];
  rows: RowSummary[];
  /** Requests each mock port answered during the pool's runs, summed (sg-1 must be 0). */
  poolSpread: { audit: boolean; perBackend: Record<string, number> }[];
}

const POOL_IDS = ['my-1', 'my-2', 'sg-1'];

export function markdownReport(rep: RoutingReport): string {
  const out: string[] = [];
  const m = rep.machine;
  const o = rep.options;
  out.push(`## Sovra routing overhead — ${rep.startedAt}${o.control ? ' — A/A CONTROL (both gateways single)' : ''}`);
  out.push('');
  out.push(
    `Node ${m.node}, ${m.cpus}× ${m.cpuModel}, load average at start ${m.loadavgStart.map((x) => x.toFixed(2)).join(' / ')}, at end ${m.loadavgEnd.map((x) => x.toFixed(2)).join(' / ')}. ` +
      `${o.rounds} interleaved round(s) per row (order alternating), warm-up ${o.warmupS} s + measured ${o.durationS} s per run. ` +
      `**single**: one backend (\`backend:\`). **pool**: 3 backends (MY, MY, SG on three ports of the same mock), \`pool:\` with \`strategy: ${o.strategy}\`, ` +
      `tenant policy allowing only MY (default classification \`internal\`): every request is policy-checked and sg-1 excluded.` +
      (o.vary === 'audit' ? ` **This run varies the transparency log instead** (\`--vary audit\`): both gateways have one backend; **single** runs with the audit log off (request rows only), **pool** with it on (target: ≤ ${AUDIT_MAX_OVERHEAD_PCT} % fewer req/s).` : '') +
      (o.vary === 'retention' ? ` **This run varies content retention instead** (\`--vary retention\`): both gateways have one backend and the audit log on; **pool** also keeps every request's bodies, sealed (\`audit.content_retention\`). Target: the audit log's (≤ ${AUDIT_MAX_OVERHEAD_PCT} %), for reference.` : '') +
      (o.vary === 'metering' ? ` **This run varies metering instead** (\`--vary metering\`): both gateways have one backend; **single** has no limits or budgets, **pool** has RPM/TPM limits${o.meteringMode === 'on' ? ' and token budgets' : ''} on the bench key and tenant, set so high they never refuse (target: ≤ ${METERING_MAX_OVERHEAD_PCT} % fewer req/s).` : '') +
      (o.poolFirst ? ' The "pool" gateway\'s process was started first (`--pool-first`).' : '') +
      (o.control ? ' **Control run: the "pool" gateway is configured as single (one backend on port 1), so every difference below is noise or bias of the method.**' : ''),
  );
  out.push('');
  out.push('req/s: mean of the rounds [min–max] (spread = (max − min) / mean). Overhead = (single − pool) / single of the means (PASS/MISS uses it); paired = the same per round, and their median. CPU µs/req: gateway process (main thread).');
  out.push('');
  out.push(
    'Other CPU: the most other processes used during a kept run of the row (% of one core, single / pool); redone: runs discarded for interference and made again.',
  );
  out.push('');
  const target = o.vary === 'metering' ? METERING_MAX_OVERHEAD_PCT : o.vary === 'audit' || o.vary === 'retention' ? AUDIT_MAX_OVERHEAD_PCT : MAX_OVERHEAD_PCT;
  out.push(`| audit | mode | conns | single req/s | pool req/s | spread s / p | **overhead** | paired overheads | median paired | p50 ms s / p | p99 ms s / p | CPU µs/req single | CPU µs/req pool | CPU/req Δ | other CPU % | redone | errors | ≤ ${target} % |`);
  out.push('|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of rep.rows) {
    const s = r.single;
    const p = r.pool;
    const cpu = (c: ConfigSummary) => `${c.cpuUsPerReq ?? '–'} (${c.mainCpuUsPerReq ?? '–'})`;
    const delta = `${r.cpuOverheadPct === null ? '–' : (r.cpuOverheadPct >= 0 ? '+' : '') + r.cpuOverheadPct + ' %'} (${r.mainCpuOverheadPct === null ? '–' : (r.mainCpuOverheadPct >= 0 ? '+' : '') + r.mainCpuOverheadPct + ' %'})`;
    out.push(
      `| ${r.audit ? 'on' : 'off'} | ${r.mode} | ${r.connections} | ${s.rpsMean.toLocaleString('en-US')} [${s.rpsMin}–${s.rpsMax}] | ${p.rpsMean.toLocaleString('en-US')} [${p.rpsMin}–${p.rpsMax}] | ` +
        `${s.spreadPct} % / ${p.spreadPct} % | **${r.overheadPct.toFixed(1)} %** | ${r.pairedOverheadPct.map((x) => x.toFixed(1)).join(', ')} | ${r.medianPairedPct === null ? '–' : r.medianPairedPct.toFixed(1) + ' %'} | ` +
        `${fmt(s.p50Mean)} / ${fmt(p.p50Mean)} | ${fmt(s.p99Mean)} / ${fmt(p.p99Mean)} | ${cpu(s)} | ${cpu(p)} | ${delta} | ${s.maxOtherCpu ?? '–'} / ${p.maxOtherCpu ?? '–'} | ${s.redone + p.redone} | ${s.errors + s.non2xx + p.errors + p.non2xx} | ${r.pass ? 'PASS' : 'MISS'} |`,
    );
  }
  out.push('');
  for (const sp of o.control || o.vary !== 'routing' ? [] : rep.poolSpread) {
    const total = Object.values(sp.perBackend).reduce((a, b) => a + b, 0);
    out.push(
      `Pool spread (audit ${sp.audit ? 'on' : 'off'}, upstream requests during the pool's runs, warm-ups included): ` +
        POOL_IDS.map((id) => `${id} ${(sp.perBackend[id] ?? 0).toLocaleString('en-US')} (${total ? r1(((sp.perBackend[id] ?? 0) / total) * 100) : 0} %)`).join(', ') +
        '.',
    );
  }
  out.push('');
  const misses = rep.rows.filter((r) => !r.pass);
  out.push(
    misses.length === 0
      ? `**PASS**: the second gateway's req/s overhead is ≤ ${target} % on every row.`
      : `**MISS** on ${misses.length} of ${rep.rows.length} rows: ${misses.map((r) => `audit ${r.audit ? 'on' : 'off'} ${r.mode} ×${r.connections} ${r.overheadPct.toFixed(1)} %`).join('; ')}.`,
  );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------

/** CPU (% of one core) other processes than `ours` (and this one) used over the next `ms` milliseconds. */
async function otherCpuPercent(ms: number, ours: number[]): Promise<number | null> {
  const sum = () => {
    let t = 0;
    for (const p of ours) {
      const x = cpuMs(p);
      if (x === null) return null;
      t += x;
    }
    const u = process.cpuUsage();
    return t + (u.user + u.system) / 1000;
  };
  const a = sum();
  const t0 = performance.now();
  const busy = await machineBusyPercent(ms);
  const b = sum();
  return busy === null || a === null || b === null ? null : busy - ((b - a) / (performance.now() - t0)) * 100;
}

/** Waits (at most `maxWaitMs`) until other processes than the benchmark's use less than `maxPct` % of one core (over 1 s). */
async function waitQuiet(maxPct: number, maxWaitMs: number, ours: number[], log: (s: string) => void): Promise<void> {
  if (maxPct <= 0) return;
  const t0 = performance.now();
  let waited = false;
  for (;;) {
    const busy = await otherCpuPercent(1_000, ours);
    if (busy === null || busy < maxPct) break;
    if (performance.now() - t0 > maxWaitMs) {
      log(`    other processes still use ${Math.round(busy)} % of a core after ${Math.round(maxWaitMs / 1000)} s; measuring anyway`);
      return;
    }
    if (!waited) log(`    waiting for the machine to be quiet (other processes use ${Math.round(busy)} % of a core)…`);
    waited = true;
  }
  if (waited) log(`    quiet after ${Math.round((performance.now() - t0) / 1000)} s`);
}

async function upstreamCounts(urls: string[]): Promise<number[]> {
  return Promise.all(
    urls.map(async (u) => {
      const r = await fetch(`${u}/_bench/stats`);
      return ((await r.json()) as { requests: number }).requests;
    }),
  );
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<RoutingReport> {
  const opts = parseOptions(argv);
  installExitHandlers();
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const cpus = os.cpus();
  const machine = {
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    loadavgStart: os.loadavg().map(r2),
    loadavgEnd: [] as number[],
  };
  const log = (s: string) => process.stderr.write(s + '\n');
  const runs: RoutingRun[] = [];
  const poolSpread: RoutingReport['poolSpread'] = [];
  try {
    const mock = await spawnChild('mock', 'mock-upstream.ts', ['--port', '0', '--instances', '3']);
    const upstreams = mock.info['urls'] as string[];
    if (!Array.isArray(upstreams) || upstreams.length !== 3) throw new Error(`the mock did not report three URLs: ${JSON.stringify(mock.info)}`);
    log(`mock (pid ${mock.proc.pid}) on ${upstreams.join(', ')}; ${machine.cpus} CPUs, load average ${machine.loadavgStart.join(' ')}`);

    for (const audit of opts.audits) {
      const gws = new Map<Config, { child: Child; ep: Endpoint }>();
      for (const config of opts.poolFirst ? [...CONFIGS].reverse() : CONFIGS) {
        const env: NodeJS.ProcessEnv = { ...process.env };
        delete env['SOVRA_BENCH_CPU_PROF'];
        if (opts.cpuProf) env['SOVRA_BENCH_CPU_PROF'] = join(opts.outDir, 'profiles', `routing-${stamp}-audit-${audit ? 'on' : 'off'}-${config}`);
        const routing = opts.control || opts.vary !== 'routing' ? 'single' : config;
        // --vary audit: the first gateway runs without the log (the phase's audit setting is the second's).
        const auditOn = opts.vary === 'audit' && config === 'single' && !opts.control ? false : audit;
        // --vary retention: the second gateway also keeps the bodies.
        const auditArg = !auditOn ? 'off' : opts.vary === 'retention' && config === 'pool' && !opts.control ? 'retain' : 'on';
        const metering = opts.vary === 'metering' && config === 'pool' && !opts.control ? opts.meteringMode : 'off';
        const child = await spawnChild(
          `gateway-${config}`,
          'gateway-server.ts',
          ['--upstream', (routing === 'single' ? upstreams.slice(0, 1) : upstreams).join(','), '--audit', auditArg, '--routing', routing, '--strategy', opts.strategy, '--metering', metering],
          env,
        );
        const headers = { 'content-type': 'application/json', authorization: `Bearer ${String(child.info['key'])}` };
        gws.set(config, { child, ep: { url: `${String(child.info['url'])}/v1/chat/completions`, headers } });
        log(`gateway ${config} (audit ${auditArg}) ${String(child.info['url'])} (pid ${child.proc.pid})`);
      }
      await sanityCheck(CONFIGS.map((c) => [`gateway ${c}`, gws.get(c)!.ep] as const));
      // The pool must never send to sg-1 (policy) and must use both MY backends.
      const before = await upstreamCounts(upstreams);
      for (let i = 0; i < 20; i++) await sanityCheck([['gateway pool', gws.get('pool')!.ep]]);
      const after = await upstreamCounts(upstreams);
      const d = after.map((x, i) => x - before[i]!);
      if (opts.vary === 'routing' && d[2] !== 0) throw new Error(`the pool sent ${d[2]} requests to sg-1, which the policy excludes`);
      if (!opts.control && opts.vary === 'routing' && (d[0] === 0 || d[1] === 0)) log(`  note: 40 sanity requests went ${d[0]} to my-1 and ${d[1]} to my-2`);

      const spread: Record<string, number> = { 'my-1': 0, 'my-2': 0, 'sg-1': 0 };
      for (let round = 1; round <= opts.rounds; round++) {
        for (const c of opts.connections) {
          for (const mode of opts.modes) {
            const order: Config[] = round % 2 === 1 ? ['single', 'pool'] : ['pool', 'single'];
            for (const [i, config] of order.entries()) {
              const g = gws.get(config)!;
              const idle = [...gws.values()].filter((x) => x !== g).map((x) => x.child.proc.pid!);
              const discarded: number[] = [];
              for (;;) {
                log(`  audit ${audit ? 'on ' : 'off'} round ${round}/${opts.rounds} ${mode.padEnd(10)} ${String(c).padStart(3)} conns ${config.padEnd(6)}: ${opts.warmupS} s warm-up + ${opts.durationS} s…`);
                await waitQuiet(opts.maxOtherCpu, 60_000, [mock.proc.pid!, ...[...gws.values()].map((x) => x.child.proc.pid!)], log);
                const c0 = await upstreamCounts(upstreams);
                const result = await measure(g.ep, mode, 'gateway', c, opts, { mock: mock.proc.pid, gateway: g.child.proc.pid, others: idle });
                const c1 = await upstreamCounts(upstreams);
                const per = c1.map((x, k) => x - c0[k]!);
                const other = result.cpuPercent.other;
                log(
                  `    ${result.rps} req/s, p50 ${fmt(result.p50Ms)} ms, p99 ${fmt(result.p99Ms)} ms, gateway ${result.gatewayCpuUsPerReq ?? '–'} µs CPU/req (main ${result.gatewayMainCpuUsPerReq ?? '–'}), ` +
                    `other CPU ${other ?? '–'} %, idle gateway ${result.cpuPercent.idle ?? '–'} %, errors ${result.errors + result.timeouts}, non-2xx ${result.non2xx}, upstream ${per.join('/')}`,
                );
                await sleep(500);
                if (opts.maxOtherCpu > 0 && other !== null && other > opts.maxOtherCpu && discarded.length < opts.retries) {
                  discarded.push(other);
                  log(`    discarded: other processes used ${other} % of a core (limit ${opts.maxOtherCpu}); again`);
                  continue;
                }
                if (config === 'pool') per.forEach((n, k) => (spread[POOL_IDS[k]!]! += n));
                runs.push({ audit, config, round, position: (i + 1) as 1 | 2, upstreamRequests: per, discardedOtherCpu: discarded, result });
                break;
              }
            }
          }
        }
      }
      poolSpread.push({ audit, perBackend: spread });
      await Promise.all([...gws.values()].map((g) => stopChild(g.child, 30_000)));
      await sleep(1_000);
    }

    machine.loadavgEnd = os.loadavg().map(r2);
    const report: RoutingReport = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      options: opts,
      machine,
      upstreams,
      runs,
      rows: summarise(runs, opts),
      poolSpread,
    };
    process.stdout.write('\n' + markdownReport(report) + '\n\n');
    mkdirSync(opts.outDir, { recursive: true });
    const file = join(opts.outDir, `routing-${stamp}.json`);
    writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
    log(`results written to ${relative(process.cwd(), file) || file}`);
    return report;
  } finally {
    await cleanup();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`routing benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      void cleanup().finally(() => process.exit(1));
    },
  );
}
