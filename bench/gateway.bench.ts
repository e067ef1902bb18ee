/**
 * Gateway load benchmark (orchestrator). See bench/README.md.
 *
 *   node --import tsx bench/gateway.bench.ts [--duration 10] [--warmup 2] [--connections 16,64]
 *        [--ttfe-requests 300] [--ttfe-warmup 50] [--no-ttfe] [--cpu-prof] [--out bench/results]
 *        [--audit on|off] [--metering on|limits|off] [--routing single|pool] [--strategy S]
 *
 * Spawns the mock engine (bench/mock-upstream.ts) and a Sovra gateway (bench/gateway-server.ts) as
 * two separate processes, then from this process:
 *
 * 1. Throughput/latency with autocannon (programmatic API): for each connection count, four
 *    scenarios — direct-to-mock non-stream, via-gateway non-stream, direct stream, via-gateway
 *    stream — each a warm-up run (discarded) then a measured run. Latency is the time to the *end* of
 *    the response (whole SSE stream for streams), taken per request from autocannon's `response`
 *    event with sub-millisecond resolution (autocannon's own histogram only has 1 ms resolution).
 *    The gateway's added latency is via − direct at p50 and at p99.
 * 2. Unloaded added time-to-first-event for streams: sequential requests with undici (one
 *    keep-alive connection per target), direct and via the gateway interleaved, timing from just
 *    before the request is issued to the arrival of the first bytes of the first `data:` event.
 *
 * The pieces (child processes, load runs, CPU accounting, sanity check) are exported for
 * bench/routing.bench.ts, which compares two gateway configurations run side by side.
 *
 * Prints a markdown report and writes JSON to `<out>/gateway-<timestamp>.json`. Every loop is
 * bounded (time or count). Child processes are killed on exit, on errors and on SIGINT/SIGTERM (and
 * exit by themselves if this process dies, since they watch their stdin).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { Pool } from 'undici';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(BENCH_DIR, '..');

/** Targets stated in bench/README.md. */
export const TARGETS = { viaNonStreamRpsAt16: 5_000, addedTtfeMedianMs: 1 } as const;

const MESSAGES = [{ role: 'user', content: 'Say hello to the benchmark in one short sentence, please.' }];
const NON_STREAM_BODY = JSON.stringify({ model: 'bench-model', messages: MESSAGES, max_tokens: 64 });
/** Both targets get include_usage, so the mock sends identical bytes direct and via the gateway. */
const STREAM_BODY = JSON.stringify({ model: 'bench-model', messages: MESSAGES, max_tokens: 64, stream: true, stream_options: { include_usage: true } });
/** data: events per stream: 20 content + finish + usage + [DONE]. */
const EXPECTED_STREAM_EVENTS = 23;

const USAGE = `Usage: node --import tsx bench/gateway.bench.ts [options]   (or: npm run bench -- [options])
  --duration S        measured seconds per load row (default 10)
  --warmup S          warm-up seconds before each load row, discarded (default 2)
  --connections LIST  comma-separated connection counts (default 16,64)
  --ttfe-requests N   sequential time-to-first-event requests per target (default 300)
  --ttfe-warmup N     warm-up requests per target before those (default 50)
  --no-ttfe           skip the time-to-first-event measurement
  --cpu-prof          CPU-profile the gateway process; the .cpuprofile goes to <out>/profiles
                      (summarise it with: node --import tsx bench/profile-summary.ts FILE)
  --out DIR           where the JSON results go (default bench/results)
  --audit on|off      the gateway's transparency log (default on; off = request rows only)
  --privacy on|off           the privacy guard: every prompt scanned, logs scrubbed (default on)
  --metering on|limits|off   RPM/TPM limits (and with on, token budgets) on the bench key and tenant, set so high they never refuse (default off)
  --routing single|pool      single: one backend (default); pool: three backends (MY, MY, SG) on three ports of the
                      mock, a residency policy allowing only MY for the bench tenant (see bench/gateway-server.ts)
  --strategy S        balancing strategy of the pool: p2c_ewma (default), weighted, least_in_flight
`;

// ---------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------

export interface BenchOptions {
  durationS: number;
  warmupS: number;
  connections: number[];
  ttfeRequests: number;
  ttfeWarmup: number;
  ttfe: boolean;
  cpuProf: boolean;
  outDir: string;
  /** The gateway's `audit.enabled`. */
  audit: boolean;
  /** Limits (`limits`), limits and budgets (`on`) on the bench key and tenant, or none (`off`). */
  metering: 'on' | 'limits' | 'off';
  /** The gateway's privacy guard (and log scrubbing), default on. */
  privacy: boolean;
  /** The gateway's routing configuration (see bench/gateway-server.ts). */
  routing: RoutingMode;
  /** The pool's balancing strategy (`routing: 'pool'` only). */
  strategy: Strategy;
}

export type RoutingMode = 'single' | 'pool';
export type Strategy = 'p2c_ewma' | 'weighted' | 'least_in_flight';
export const STRATEGIES: readonly Strategy[] = ['p2c_ewma', 'weighted', 'least_in_flight'];

/** Parses `--strategy`. */
export function parseStrategy(v: string): Strategy {
  if (!(STRATEGIES as readonly string[]).includes(v)) throw new Error(`--strategy must be one of ${STRATEGIES.join(', ')}, got "${v}"`);
  return v as Strategy;
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '16,64' },
      'ttfe-requests': { type: 'string', default: '300' },
      'ttfe-warmup': { type: 'string', default: '50' },
      'no-ttfe': { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
      audit: { type: 'string', default: 'on' },
      metering: { type: 'string', default: 'off' },
      privacy: { type: 'string', default: 'on' },
      routing: { type: 'string', default: 'single' },
      strategy: { type: 'string', default: 'p2c_ewma' },
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
  const connections = values.connections.split(',').map((c) => Math.round(num('connections', c.trim(), 1, 1024)));
  return {
    durationS: num('duration', values.duration, 1, 600),
    warmupS: num('warmup', values.warmup, 0, 60),
    connections,
    ttfeRequests: Math.round(num('ttfe-requests', values['ttfe-requests'], 1, 100_000)),
    ttfeWarmup: Math.round(num('ttfe-warmup', values['ttfe-warmup'], 0, 10_000)),
    ttfe: !values['no-ttfe'],
    cpuProf: values['cpu-prof'] || !!process.env['SOVRA_BENCH_CPU_PROF'],
    outDir: resolve(values.out),
    metering: (() => {
      const m = values.metering;
      if (m !== 'on' && m !== 'limits' && m !== 'off') throw new Error(`--metering must be on, limits or off, got "${m}"`);
      return m;
    })(),
    privacy: (() => {
      if (values.privacy !== 'on' && values.privacy !== 'off') throw new Error(`--privacy must be on or off, got "${values.privacy}"`);
      return values.privacy === 'on';
    })(),
    audit: (() => {
      if (values.audit !== 'on' && values.audit !== 'off') throw new Error(`--audit must be on or off, got "${values.audit}"`);
      return values.audit === 'on';
    })(),
    routing: (() => {
      const r = values.routing;
      if (r !== 'single' && r !== 'pool') throw new Error(`--routing must be single or pool, got "${r}"`);
      return r;
    })(),
    strategy: parseStrategy(values.strategy),
  };
}

// ---------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------

export interface Child {
  name: string;
  proc: ChildProcess;
  info: Record<string, unknown>;
}

const children: Child[] = [];

/** Spawn `node --import tsx <script> ...args`, wait for its one-line JSON on stdout. */
export async function spawnChild(name: string, script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Child> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(BENCH_DIR, script), ...args, '--exit-on-stdin-end'], {
    cwd: REPO_ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const child: Child = { name, proc, info: {} };
  children.push(child);
  const stderrTail: string[] = [];
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 50) stderrTail.shift();
    process.stderr.write(`[${name}] ${line}\n`);
  });
  const lines = createInterface({ input: proc.stdout! });
  const info = await new Promise<Record<string, unknown>>((resolveInfo, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not report ready within 60 s`)), 60_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolveInfo(JSON.parse(line) as Record<string, unknown>);
      } catch {
        reject(new Error(`${name} printed something other than JSON: ${line}`));
      }
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited early (code ${code}, signal ${signal})\n${stderrTail.join('\n')}`));
    });
  });
  // Keep draining stdout so the child never blocks on a full pipe.
  lines.on('line', (line) => process.stderr.write(`[${name}] ${line}\n`));
  child.info = info;
  return child;
}

export async function stopChild(c: Child, graceMs: number): Promise<void> {
  const p = c.proc;
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = sleep(graceMs).then(() => 'timeout' as const);
  if ((await Promise.race([exited.then(() => 'exited' as const), t])) === 'timeout') {
    p.kill('SIGKILL');
    await Promise.race([exited, sleep(2_000)]);
  }
}

let cleaning: Promise<void> | undefined;
/** Stops every child process started with {@link spawnChild} (once; later calls get the same promise). */
export function cleanup(): Promise<void> {
  cleaning ??= Promise.all(children.map((c) => stopChild(c, 30_000))).then(() => undefined);
  return cleaning;
}

export function installExitHandlers(): void {
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\n${sig}: stopping child processes…\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Last resort (synchronous): never leave a child behind.
  process.once('exit', () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });
}

/**
 * CPU time (ms, user + system) a process has used so far, from /proc (Linux); null elsewhere.
 * With `tid`, only that thread's (`tid === pid`: the main thread, i.e. the event loop).
 */
export function cpuMs(pid: number | undefined, tid?: number): number | null {
  if (!pid) return null;
  const f = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`;
  if (!existsSync(f)) return null;
  try {
    const s = readFileSync(f, 'utf8');
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

/**
 * CPU time (ms) the whole machine has spent busy (all CPUs: user, nice, system, irq, softirq, steal;
 * not idle or iowait) so far, from /proc/stat (Linux); null elsewhere.
 */
export function machineBusyMs(): number | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = f[0]! + f[1]! + f[2]! + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return (busy * 1000) / 100; // USER_HZ
  } catch {
    return null;
  }
}

/** Machine-wide busy CPU over the next `ms` milliseconds, % of one core. */
export async function machineBusyPercent(ms: number): Promise<number | null> {
  const a = machineBusyMs();
  const t0 = performance.now();
  await sleep(ms);
  const b = machineBusyMs();
  return a === null || b === null ? null : ((b - a) / (performance.now() - t0)) * 100;
}

// ---------------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------------

/** Nearest-rank percentile of an ascending-sorted array. */
export function pct(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

const r2 = (n: number) => Math.round(n * 100) / 100;
const r3 = (n: number) => Math.round(n * 1000) / 1000;

// ---------------------------------------------------------------------------------------------------
// Load runs (autocannon)
// ---------------------------------------------------------------------------------------------------

export type Mode = 'non-stream' | 'stream';
export type Target = 'direct' | 'gateway';

export interface LoadResult {
  mode: Mode;
  target: Target;
  connections: number;
  durationS: number;
  requests: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  resets: number;
  /** autocannon's own figures (1 ms histogram resolution), for reference. */
  autocannon: { rpsAverage: number; p50: number; p99: number; bytesPerSec: number };
  /**
   * CPU used during the measured run, % of one core (`gatewayMain`: the gateway's main thread only;
   * `machine`: all CPUs, from /proc/stat; `other`: machine − this benchmark's processes, i.e. what
   * anything else on the machine used meanwhile, plus kernel time not charged to a process).
   */
  cpuPercent: { mock: number | null; gateway: number | null; gatewayMain: number | null; loadgen: number | null; machine: number | null; other: number | null; idle?: number | null };
  /** Gateway CPU time per 2xx response during the measured run, µs (whole process; main thread only). */
  gatewayCpuUsPerReq: number | null;
  gatewayMainCpuUsPerReq: number | null;
  loadavg1: number;
}

export interface Endpoint {
  url: string;
  headers: Record<string, string>;
}

async function loadRun(ep: Endpoint, mode: Mode, connections: number, durationS: number, collect: boolean) {
  const latencies: number[] = [];
  let other = 0;
  const inst = autocannon({
    url: ep.url,
    method: 'POST',
    headers: ep.headers,
    body: mode === 'stream' ? STREAM_BODY : NON_STREAM_BODY,
    connections,
    pipelining: 1,
    duration: durationS,
    timeout: 10,
  });
  if (collect) {
    inst.on('response', (_c, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
      else other++;
    });
  }
  const result = await inst;
  return { result, latencies, other };
}

/** One load row: a warm-up run (discarded), then a measured run with CPU accounting. */
export async function measure(
  ep: Endpoint,
  mode: Mode,
  target: Target,
  connections: number,
  opts: Pick<BenchOptions, 'warmupS' | 'durationS'>,
  pids: { mock?: number | undefined; gateway?: number | undefined; others?: number[] | undefined },
): Promise<LoadResult> {
  if (opts.warmupS > 0) await loadRun(ep, mode, connections, opts.warmupS, false);
  await sleep(250);
  const gwMain = () => cpuMs(pids.gateway, pids.gateway);
  /** CPU of the benchmark's other processes (e.g. an idle second gateway), summed. */
  const othersMs = (): number | null => {
    let sum = 0;
    for (const p of pids.others ?? []) {
      const x = cpuMs(p);
      if (x === null) return null;
      sum += x;
    }
    return sum;
  };
  const c0 = { mock: cpuMs(pids.mock), gateway: cpuMs(pids.gateway), gatewayMain: gwMain(), loadgen: process.cpuUsage(), machine: machineBusyMs(), others: othersMs() };
  const t0 = performance.now();
  const { result, latencies } = await loadRun(ep, mode, connections, opts.durationS, true);
  const wallMs = performance.now() - t0;
  const c1 = { mock: cpuMs(pids.mock), gateway: cpuMs(pids.gateway), gatewayMain: gwMain(), loadgen: process.cpuUsage(c0.loadgen), machine: machineBusyMs(), others: othersMs() };
  const cpuPct = (a: number | null, b: number | null) => (a === null || b === null ? null : Math.round(((b - a) / wallMs) * 100));
  const loadgenPct = Math.round(((c1.loadgen.user + c1.loadgen.system) / 1000 / wallMs) * 100);
  const machinePct = cpuPct(c0.machine, c1.machine);
  const parts = [cpuPct(c0.mock, c1.mock), cpuPct(c0.gateway, c1.gateway), cpuPct(c0.others, c1.others)];
  const otherPct = machinePct === null || parts.some((x) => x === null) ? null : machinePct - loadgenPct - parts.reduce<number>((a, x) => a + x!, 0);
  latencies.sort((a, b) => a - b);
  const requests = result['2xx'];
  const perReq = (a: number | null, b: number | null) => (a === null || b === null || requests === 0 || target !== 'gateway' ? null : Math.round(((b - a) * 1000) / requests));
  return {
    mode,
    target,
    connections,
    durationS: result.duration,
    requests,
    rps: Math.round(requests / result.duration),
    p50Ms: r3(pct(latencies, 50)),
    p90Ms: r3(pct(latencies, 90)),
    p99Ms: r3(pct(latencies, 99)),
    maxMs: r3(latencies.length ? latencies[latencies.length - 1]! : NaN),
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    resets: result.resets,
    autocannon: { rpsAverage: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, bytesPerSec: result.throughput.average },
    cpuPercent: {
      mock: cpuPct(c0.mock, c1.mock),
      gateway: cpuPct(c0.gateway, c1.gateway),
      gatewayMain: cpuPct(c0.gatewayMain, c1.gatewayMain),
      loadgen: loadgenPct,
      machine: machinePct,
      other: otherPct,
      ...(pids.others?.length ? { idle: parts[2] } : {}),
    },
    gatewayCpuUsPerReq: perReq(c0.gateway, c1.gateway),
    gatewayMainCpuUsPerReq: perReq(c0.gatewayMain, c1.gatewayMain),
    loadavg1: r2(os.loadavg()[0]!),
  };
}

// ---------------------------------------------------------------------------------------------------
// Time to first event (undici, sequential)
// ---------------------------------------------------------------------------------------------------

export interface TtfeStats {
  n: number;
  medianMs: number;
  p90Ms: number;
  p99Ms: number;
  minMs: number;
  maxMs: number;
}

export interface TtfeResult {
  requests: number;
  warmup: number;
  direct: TtfeStats;
  gateway: TtfeStats;
  addedMedianMs: number;
  addedP99Ms: number;
}

/** One streaming request: ms from issuing it to the first `data:` bytes; the body is read to the end. */
async function ttfeOnce(pool: Pool, path: string, headers: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const res = await pool.request({ method: 'POST', path, headers, body: STREAM_BODY });
  let first = -1;
  let head = '';
  let events = 0;
  for await (const chunk of res.body) {
    const s = (chunk as Buffer).toString('latin1');
    if (first < 0) {
      head += s;
      if (head.includes('data:')) first = performance.now() - t0;
    }
    events += s.split('data:').length - 1;
  }
  if (res.statusCode !== 200) throw new Error(`time-to-first-event request got status ${res.statusCode}`);
  if (first < 0) throw new Error('time-to-first-event request got no data: event');
  if (events !== EXPECTED_STREAM_EVENTS) throw new Error(`time-to-first-event request got ${events} data: events, expected ${EXPECTED_STREAM_EVENTS}`);
  return first;
}

function ttfeStats(xs: number[]): TtfeStats {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, medianMs: r3(pct(s, 50)), p90Ms: r3(pct(s, 90)), p99Ms: r3(pct(s, 99)), minMs: r3(s[0]!), maxMs: r3(s[s.length - 1]!) };
}

async function measureTtfe(direct: Endpoint, gateway: Endpoint, opts: BenchOptions): Promise<TtfeResult> {
  const mk = (u: string) => new Pool(new URL(u).origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 });
  const dPool = mk(direct.url);
  const gPool = mk(gateway.url);
  const dPath = new URL(direct.url).pathname;
  const gPath = new URL(gateway.url).pathname;
  const d: number[] = [];
  const g: number[] = [];
  try {
    for (let i = 0; i < opts.ttfeWarmup; i++) {
      await ttfeOnce(dPool, dPath, direct.headers);
      await ttfeOnce(gPool, gPath, gateway.headers);
    }
    // Interleaved, so slow drifts of the machine's background load hit both sides alike.
    for (let i = 0; i < opts.ttfeRequests; i++) {
      d.push(await ttfeOnce(dPool, dPath, direct.headers));
      g.push(await ttfeOnce(gPool, gPath, gateway.headers));
    }
  } finally {
    await Promise.all([dPool.close(), gPool.close()]);
  }
  const ds = ttfeStats(d);
  const gs = ttfeStats(g);
  return {
    requests: opts.ttfeRequests,
    warmup: opts.ttfeWarmup,
    direct: ds,
    gateway: gs,
    addedMedianMs: r3(gs.medianMs - ds.medianMs),
    addedP99Ms: r3(gs.p99Ms - ds.p99Ms),
  };
}

// ---------------------------------------------------------------------------------------------------
// Sanity check
// ---------------------------------------------------------------------------------------------------

/** One non-stream and one stream request to each endpoint must succeed with the expected body. */
export async function sanityCheck(endpoints: ReadonlyArray<readonly [string, Endpoint]>): Promise<void> {
  for (const [name, ep] of endpoints) {
    const r = await fetch(ep.url, { method: 'POST', headers: ep.headers, body: NON_STREAM_BODY });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`${name} non-stream sanity request: status ${r.status}: ${text.slice(0, 300)}`);
    const j = JSON.parse(text) as { object?: string; usage?: unknown };
    if (j.object !== 'chat.completion' || !j.usage) throw new Error(`${name} non-stream sanity request: unexpected body ${text.slice(0, 300)}`);
    const s = await fetch(ep.url, { method: 'POST', headers: ep.headers, body: STREAM_BODY });
    const st = await s.text();
    const events = st.split('data:').length - 1;
    if (s.status !== 200 || events !== EXPECTED_STREAM_EVENTS || !st.includes('data: [DONE]'))
      throw new Error(`${name} stream sanity request: status ${s.status}, ${events} events (expected ${EXPECTED_STREAM_EVENTS})`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------

export function fmt(n: number | null | undefined, digits = 2): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return n.toFixed(digits);
}

export function signed(n: number, digits = 2): string {
  return (n >= 0 ? '+' : '') + fmt(n, digits);
}

export function markdownReport(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(`## Sovra gateway benchmark — ${report.startedAt}`);
  out.push('');
  out.push(
    `Node ${m.node}, ${m.cpus}× ${m.cpuModel}, load average at start ${m.loadavgStart.map((x) => x.toFixed(2)).join(' / ')}. ` +
      `Warm-up ${report.options.warmupS} s, measured ${report.options.durationS} s per row; latency = time to the end of the response. ` +
      `Audit log: ${report.options.audit === false ? 'off' : 'on'}. Limits and budgets: ${report.options.metering ?? 'off'}. ` +
      `Routing: ${report.options.routing === 'pool' ? `pool of 3 (MY, MY, SG; tenant policy MY only), ${report.options.strategy}` : 'single backend'}.`,
  );
  out.push('');
  out.push('| mode | conns | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors | non-2xx | CPU% mock / gw / loadgen / other | gw CPU µs/req (main thread) |');
  out.push('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|');
  for (const c of report.options.connections) {
    for (const mode of ['non-stream', 'stream'] as const) {
      const d = report.load.find((r) => r.mode === mode && r.connections === c && r.target === 'direct');
      const g = report.load.find((r) => r.mode === mode && r.connections === c && r.target === 'gateway');
      for (const r of [d, g]) {
        if (!r) continue;
        const added = r.target === 'gateway' && d ? [signed(r.p50Ms - d.p50Ms), signed(r.p99Ms - d.p99Ms)] : ['', ''];
        const cpu = `${r.cpuPercent.mock ?? '–'} / ${r.cpuPercent.gateway ?? '–'} / ${r.cpuPercent.loadgen ?? '–'} / ${r.cpuPercent.other ?? '–'}`;
        const perReq = r.gatewayCpuUsPerReq === null || r.gatewayCpuUsPerReq === undefined ? '' : `${r.gatewayCpuUsPerReq} (${r.gatewayMainCpuUsPerReq ?? '–'})`;
        out.push(
          `| ${mode} | ${c} | ${r.target === 'direct' ? 'direct' : 'via gateway'} | ${r.rps.toLocaleString('en-US')} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${added[0]} | ${added[1]} | ${r.errors + r.timeouts} | ${r.non2xx} | ${cpu} | ${perReq} |`,
        );
      }
    }
  }
  if (report.ttfe) {
    const t = report.ttfe;
    out.push('');
    out.push(`### Unloaded time to first event (stream), ${t.requests} sequential requests each (after ${t.warmup} warm-up), interleaved`);
    out.push('');
    out.push('| target | median ms | p90 ms | p99 ms | min ms | max ms |');
    out.push('|---|---:|---:|---:|---:|---:|');
    out.push(`| direct | ${fmt(t.direct.medianMs, 3)} | ${fmt(t.direct.p90Ms, 3)} | ${fmt(t.direct.p99Ms, 3)} | ${fmt(t.direct.minMs, 3)} | ${fmt(t.direct.maxMs, 3)} |`);
    out.push(`| via gateway | ${fmt(t.gateway.medianMs, 3)} | ${fmt(t.gateway.p90Ms, 3)} | ${fmt(t.gateway.p99Ms, 3)} | ${fmt(t.gateway.minMs, 3)} | ${fmt(t.gateway.maxMs, 3)} |`);
    out.push(`| **added** | **${signed(t.addedMedianMs, 3)}** |  | ${signed(t.addedP99Ms, 3)} |  |  |`);
  }
  out.push('');
  out.push('### Targets');
  out.push('');
  for (const t of report.targets) out.push(`- ${t.pass ? 'PASS' : 'MISS'}: ${t.name}: ${t.actual} (target ${t.target})`);
  return out.join('\n');
}

export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  options: BenchOptions;
  machine: { node: string; platform: string; cpus: number; cpuModel: string; totalMemGiB: number; loadavgStart: number[]; loadavgEnd: number[] };
  processes: { mockPid: number | undefined; gatewayPid: number | undefined; gatewayLogBytes: number | null };
  load: LoadResult[];
  ttfe: TtfeResult | null;
  targets: { name: string; target: string; actual: string; pass: boolean }[];
}

// ---------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------

export async function main(argv: string[] = process.argv.slice(2)): Promise<BenchReport> {
  const opts = parseOptions(argv);
  installExitHandlers();
  const startedAt = new Date();
  const cpus = os.cpus();
  const machine = {
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    totalMemGiB: r2(os.totalmem() / 2 ** 30),
    loadavgStart: os.loadavg().map(r2),
    loadavgEnd: [] as number[],
  };
  const log = (s: string) => process.stderr.write(s + '\n');
  try {
    log(`starting mock upstream and gateway (${machine.cpus} CPUs, load average ${machine.loadavgStart.join(' ')})`);
    const pool = opts.routing === 'pool';
    const mock = await spawnChild('mock', 'mock-upstream.ts', ['--port', '0', '--instances', pool ? '3' : '1']);
    const upstreams = (mock.info['urls'] as string[] | undefined) ?? [String(mock.info['url'])];
    const gwEnv: NodeJS.ProcessEnv = { ...process.env };
    const profDir = process.env['SOVRA_BENCH_CPU_PROF'] ?? (opts.cpuProf ? join(opts.outDir, 'profiles') : undefined);
    if (profDir) gwEnv['SOVRA_BENCH_CPU_PROF'] = resolve(profDir);
    else delete gwEnv['SOVRA_BENCH_CPU_PROF'];
    const gw = await spawnChild(
      'gateway',
      'gateway-server.ts',
      ['--upstream', upstreams.join(','), '--audit', opts.audit ? 'on' : 'off', '--metering', opts.metering, '--privacy', opts.privacy ? 'on' : 'off', '--routing', opts.routing, '--strategy', opts.strategy],
      gwEnv,
    );
    const key = String(gw.info['key']);
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}` };
    const direct: Endpoint = { url: `${String(mock.info['url'])}/v1/chat/completions`, headers };
    const gateway: Endpoint = { url: `${String(gw.info['url'])}/v1/chat/completions`, headers };
    const pids = { mock: mock.proc.pid, gateway: gw.proc.pid };
    await sanityCheck([
      ['direct', direct],
      ['gateway', gateway],
    ]);
    log(`mock ${direct.url} (pid ${pids.mock}), gateway ${gateway.url} (pid ${pids.gateway})${profDir ? `, CPU profile → ${profDir}` : ''}`);

    const load: LoadResult[] = [];
    for (const c of opts.connections) {
      for (const mode of ['non-stream', 'stream'] as const) {
        for (const target of ['direct', 'gateway'] as const) {
          log(`  ${mode.padEnd(10)} ${target.padEnd(7)} ${String(c).padStart(3)} connections: ${opts.warmupS} s warm-up + ${opts.durationS} s…`);
          const r = await measure(target === 'direct' ? direct : gateway, mode, target, c, opts, pids);
          log(`    ${r.rps} req/s, p50 ${fmt(r.p50Ms)} ms, p99 ${fmt(r.p99Ms)} ms, errors ${r.errors + r.timeouts}, non-2xx ${r.non2xx}`);
          load.push(r);
        }
      }
    }

    let ttfe: TtfeResult | null = null;
    if (opts.ttfe) {
      await sleep(1_000);
      log(`  time to first event: ${opts.ttfeWarmup} warm-up + ${opts.ttfeRequests} measured sequential requests per target…`);
      ttfe = await measureTtfe(direct, gateway, opts);
    }

    const logFile = typeof gw.info['logFile'] === 'string' ? gw.info['logFile'] : null;
    const gatewayLogBytes = logFile && existsSync(logFile) ? statSync(logFile).size : null;

    const targets: BenchReport['targets'] = [];
    const via16 = load.find((r) => r.mode === 'non-stream' && r.target === 'gateway' && r.connections === 16);
    if (via16)
      targets.push({
        name: 'non-stream req/s through the gateway at 16 connections',
        target: `≥ ${TARGETS.viaNonStreamRpsAt16.toLocaleString('en-US')}`,
        actual: via16.rps.toLocaleString('en-US'),
        pass: via16.rps >= TARGETS.viaNonStreamRpsAt16 && via16.errors + via16.timeouts + via16.non2xx === 0,
      });
    if (ttfe)
      targets.push({
        name: 'added median time to first event, unloaded',
        target: `< ${TARGETS.addedTtfeMedianMs} ms`,
        actual: `${fmt(ttfe.addedMedianMs, 3)} ms`,
        pass: ttfe.addedMedianMs < TARGETS.addedTtfeMedianMs,
      });

    machine.loadavgEnd = os.loadavg().map(r2);
    const report: BenchReport = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      options: opts,
      machine,
      processes: { mockPid: pids.mock, gatewayPid: pids.gateway, gatewayLogBytes },
      load,
      ttfe,
      targets,
    };
    const md = markdownReport(report);
    process.stdout.write('\n' + md + '\n\n');
    mkdirSync(opts.outDir, { recursive: true });
    const file = join(opts.outDir, `gateway-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
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
      process.stderr.write(`gateway benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      void cleanup().finally(() => process.exit(1));
    },
  );
}
