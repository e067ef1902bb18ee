/**
 * Start a Sovra gateway for the load benchmark, meant to run as its own process:
 *
 *   node --import tsx bench/gateway-server.ts --upstream http://127.0.0.1:PORT [--port 0] [--audit on|off|retain]
 *        [--metering on|limits|off] [--privacy on|off] [--routing single|pool] [--strategy p2c_ewma|weighted|least_in_flight]
 *
 * `--audit off` turns the transparency log off (request rows only, written after the response, as
 * before the log existed); the default `on` is the production path (row + entry committed before the
 * last byte, integrator signing a checkpoint every second); `--audit retain` is `on` with content
 * retention (every request's bodies sealed and kept in `audit_content`).
 *
 * Configuration (`--routing single`, the default): one `openai-compatible` backend `mock` at
 * `<upstream>/v1` (the bench mock engine) and the alias `bench-model` → upstream model `mock-llm`
 * (`backend: mock`), no `residency` section.
 *
 * `--routing pool [--strategy p2c_ewma|weighted|least_in_flight]` (the routing benchmark,
 * bench/routing.bench.ts): three `openai-compatible` backends `my-1`, `my-2` (jurisdiction `MY`) and
 * `sg-1` (`SG`), each with `max_classification: confidential`, at the three URLs of
 * `--upstream URL1,URL2,URL3` (one URL: all three at it); `bench-model` is a `pool:` of all three
 * with that strategy (default p2c_ewma); and a `residency` section (classifications public <
 * internal < confidential < secret, home jurisdiction MY, default policy `*`) whose policy for the
 * bench tenant allows only `MY` with default classification `internal`. So every request goes
 * through the policy check, `sg-1` is excluded (`jurisdiction_not_allowed`, noted in the audit
 * entry) and the balancer picks between `my-1` and `my-2`.
 *
 * Both: a fresh SQLite database in a temp folder;
 * logging at `info` (one access line per request, as in production) to `gateway.log` in that folder
 * through pino's default asynchronous SonicBoom destination (what `sovra serve` uses for stdout).
 * One API key is created (tenant `bench`). Once ready it prints one JSON line on stdout:
 * `{"url":"http://127.0.0.1:N","key":"sk-sovra-…","dir":"…","logFile":"…","pid":N}`.
 *
 * Stops on SIGINT/SIGTERM (or, with `--exit-on-stdin-end`, when the parent closes its stdin): closes
 * the gateway (flushes request records) and deletes the temp folder unless `--keep`.
 *
 * Environment:
 * - `SOVRA_BENCH_CPU_PROF=<dir>`: CPU-profile the whole process (V8 sampling profiler through
 *   `node:inspector`); on shutdown a `gateway-<timestamp>.cpuprofile` is written to `<dir>` with the
 *   positions of TypeScript functions mapped back to their `.ts` source (via tsx's source maps), so
 *   it opens correctly in Chrome DevTools and `bench/profile-summary.ts` can print file:line hot spots.
 *   `SOVRA_BENCH_CPU_PROF_INTERVAL_US` sets the sampling interval (default 200 µs);
 *   `SOVRA_BENCH_CPU_PROF_DELAY_MS` starts the profiler that many ms after start-up instead (so the
 *   profile leaves out start-up, lazy module loads and the warm-up).
 * - `SOVRA_BENCH_GC_STATS=<file>`: count and sum the main thread's garbage-collection pauses by kind
 *   (minor, major, incremental, weak callbacks); one JSON line is appended to `<file>` at exit.
 * - `SOVRA_BENCH_LOG_SYNC=1`: write the log synchronously instead.
 */
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { PerformanceObserver, constants as perfConstants, type PerformanceEntry } from 'node:perf_hooks';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { findSourceMap } from 'node:module';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { stringify } from 'yaml';
import { createGateway } from '../packages/gateway/src/app.ts';
import { parseConfig } from '../packages/gateway/src/config/load.ts';
import { createBudget, setLimits } from '../packages/gateway/src/metering/index.ts';
import { createKey } from '../packages/gateway/src/keys/keys.ts';
import { createLogger } from '../packages/gateway/src/telemetry/logger.ts';

/** The alias the benchmark asks for. */
export const BENCH_MODEL = 'bench-model';
/** The tenant of the bench key (the pool configuration's residency policy names it). */
export const BENCH_TENANT = 'bench';

export type RoutingMode = 'single' | 'pool';
export type Strategy = 'p2c_ewma' | 'weighted' | 'least_in_flight';
export const STRATEGIES: readonly Strategy[] = ['p2c_ewma', 'weighted', 'least_in_flight'];

/** The pool's backends: id and jurisdiction (the bench tenant may use MY only, so `sg-1` is always excluded). */
export const POOL_BACKENDS = [
  { id: 'my-1', jurisdiction: 'MY' },
  { id: 'my-2', jurisdiction: 'MY' },
  { id: 'sg-1', jurisdiction: 'SG' },
] as const;

/** `http://host:port` or `http://host:port/v1` → the backend's base URL (`…/v1`). */
function baseUrlOf(u: string): string {
  const up = new URL(u);
  return up.pathname === '/' ? `${up.origin}/v1` : u;
}

/**
 * The `backends`, `models` and `residency` sections of the bench configuration (see the module doc).
 * @param upstreams the mock's URL(s): one for `single`; one or three for `pool`
 */
export function routingConfig(routing: RoutingMode, upstreams: string[], strategy: Strategy, maxConnections: number): Record<string, unknown> {
  if (routing === 'single') {
    return {
      backends: [
        {
          id: 'mock',
          provider: 'openai-compatible',
          base_url: baseUrlOf(upstreams[0]!),
          api_key_env: 'SOVRA_BENCH_UPSTREAM_KEY',
          jurisdiction: 'MY',
          max_connections: maxConnections,
        },
      ],
      models: [{ name: BENCH_MODEL, backend: 'mock', upstream_model: 'mock-llm' }],
    };
  }
  if (upstreams.length !== 1 && upstreams.length !== POOL_BACKENDS.length)
    throw new Error(`--routing pool needs 1 or ${POOL_BACKENDS.length} upstream URLs, got ${upstreams.length}`);
  return {
    residency: {
      classifications: ['public', 'internal', 'confidential', 'secret'],
      home_jurisdiction: 'MY',
      default: { allowed_jurisdictions: ['*'] },
      tenants: { [BENCH_TENANT]: { allowed_jurisdictions: ['MY'], default_classification: 'internal' } },
    },
    backends: POOL_BACKENDS.map((b, i) => ({
      id: b.id,
      provider: 'openai-compatible',
      base_url: baseUrlOf(upstreams[upstreams.length === 1 ? 0 : i]!),
      api_key_env: 'SOVRA_BENCH_UPSTREAM_KEY',
      jurisdiction: b.jurisdiction,
      hosting: 'on_premises',
      max_classification: 'confidential',
      max_connections: maxConnections,
    })),
    models: [{ name: BENCH_MODEL, pool: POOL_BACKENDS.map((b) => ({ backend: b.id })), strategy, upstream_model: 'mock-llm' }],
  };
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; scriptId: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
  positionTicks?: { line: number; ticks: number }[];
}
interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** Rewrite generated (tsx-transpiled) positions of `.ts` frames to their source positions. */
function remapProfile(profile: CpuProfile): number {
  let mapped = 0;
  for (const n of profile.nodes) {
    const cf = n.callFrame;
    if (!cf.url || !/\.m?tsx?$/.test(cf.url) || cf.lineNumber < 0) continue;
    const sm = findSourceMap(cf.url) ?? (cf.url.startsWith('file:') ? findSourceMap(new URL(cf.url).pathname) : undefined);
    if (!sm) continue;
    const e = sm.findEntry(cf.lineNumber, Math.max(0, cf.columnNumber)) as { originalLine?: number; originalColumn?: number };
    if (typeof e.originalLine === 'number') {
      cf.lineNumber = e.originalLine;
      cf.columnNumber = e.originalColumn ?? 0;
      mapped++;
    }
    if (n.positionTicks) {
      // tsx emits each module on one line (whitespace minified), so line-level ticks of .ts frames
      // carry no information: drop them. Otherwise map each 1-based generated line to its source line.
      if (!(sm.payload as { mappings?: string }).mappings?.includes(';')) {
        delete n.positionTicks;
        continue;
      }
      const byLine = new Map<number, number>();
      for (const pt of n.positionTicks) {
        const pe = sm.findEntry(pt.line - 1, 0) as { originalLine?: number };
        const line = typeof pe.originalLine === 'number' ? pe.originalLine + 1 : pt.line;
        byLine.set(line, (byLine.get(line) ?? 0) + pt.ticks);
      }
      n.positionTicks = [...byLine].map(([line, ticks]) => ({ line, ticks }));
    }
  }
  return mapped;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      upstream: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'log-level': { type: 'string', default: 'info' },
      'max-connections': { type: 'string', default: '128' },
      keep: { type: 'boolean', default: false },
      'exit-on-stdin-end': { type: 'boolean', default: false },
      audit: { type: 'string', default: 'on' },
      metering: { type: 'string', default: 'off' },
      privacy: { type: 'string', default: 'on' },
      routing: { type: 'string', default: 'single' },
      strategy: { type: 'string', default: 'p2c_ewma' },
    },
  });
  if (!values.upstream) throw new Error('--upstream http://127.0.0.1:PORT[,…] is required (the mock engine)');
  const routing = values.routing;
  if (routing !== 'single' && routing !== 'pool') throw new Error(`--routing must be single or pool, got "${routing}"`);
  const strategy = values.strategy as Strategy;
  if (!STRATEGIES.includes(strategy)) throw new Error(`--strategy must be one of ${STRATEGIES.join(', ')}, got "${values.strategy}"`);
  const upstreams = values.upstream.split(',').map((u) => u.trim()).filter((u) => u !== '');

  // Profiling starts first, so start-up is in the profile too (it is short next to the load),
  // unless SOVRA_BENCH_CPU_PROF_DELAY_MS defers it (to leave out start-up, lazy loads and warm-up).
  const profDir = process.env['SOVRA_BENCH_CPU_PROF'];
  let session: Session | undefined;
  if (profDir) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: Number(process.env['SOVRA_BENCH_CPU_PROF_INTERVAL_US'] ?? 200) });
    const delay = Number(process.env['SOVRA_BENCH_CPU_PROF_DELAY_MS'] ?? 0);
    const s = session;
    if (delay > 0) setTimeout(() => void s.post('Profiler.start'), delay).unref();
    else await session.post('Profiler.start');
  }

  // Garbage-collection pauses by kind (main thread), appended as one JSON line to this file at exit.
  const gcFile = process.env['SOVRA_BENCH_GC_STATS'];
  const gc = { minor: { n: 0, ms: 0 }, major: { n: 0, ms: 0 }, incremental: { n: 0, ms: 0 }, weakcb: { n: 0, ms: 0 } };
  if (gcFile) {
    const kinds: Record<number, keyof typeof gc> = {
      [perfConstants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
      [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
      [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
      [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
    };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const k = kinds[((e as PerformanceEntry & { detail?: { kind?: number } }).detail)?.kind ?? -1];
        if (k) {
          gc[k].n++;
          gc[k].ms += e.duration;
        }
      }
    }).observe({ entryTypes: ['gc'] });
  }

  const dir = mkdtempSync(join(tmpdir(), 'sovra-bench-'));
  const logFile = join(dir, 'gateway.log');
  const cfgObj = {
    server: { host: values.host, port: Number(values.port) },
    database: { url: `sqlite:${join(dir, 'sovra.db')}` },
    logging: { level: values['log-level'] },
    // `--audit retain`: the log on, with content retention (every request's bodies sealed and kept).
    audit: { enabled: values.audit !== 'off', ...(values.audit === 'retain' ? { content_retention: { enabled: true } } : {}) },
    // The privacy guard (on by default, as in a real deployment): scans every prompt; logs scrubbed.
    privacy: { enabled: values.privacy !== 'off', scrub_logs: values.privacy !== 'off' },
    ...routingConfig(routing, upstreams, strategy, Number(values['max-connections'])),
  };
  const config = parseConfig(stringify(cfgObj), 'bench-config', {});
  const dest = pino.destination({ dest: logFile, sync: process.env['SOVRA_BENCH_LOG_SYNC'] === '1', mkdir: true });
  const logger = createLogger(config.logging.level, dest as unknown as NodeJS.WritableStream, { scrub: config.privacy.scrub_logs });
  const gw = await createGateway({
    config,
    configDir: dir,
    logger,
    env: { ...process.env, SOVRA_BENCH_UPSTREAM_KEY: 'up-cred-BENCH-0000' },
  });

  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(1), 20_000);
    force.unref();
    logger.info({ why }, 'bench gateway stopping');
    await gw.close().catch((err: unknown) => process.stderr.write(`gateway-server: close failed: ${String(err)}\n`));
    if (session && profDir) {
      try {
        const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
        const mapped = remapProfile(profile);
        mkdirSync(profDir, { recursive: true });
        const file = resolve(profDir, `gateway-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
        writeFileSync(file, JSON.stringify(profile));
        process.stderr.write(`gateway-server: CPU profile written to ${file} (${mapped} TypeScript frames mapped to source)\n`);
      } catch (err) {
        process.stderr.write(`gateway-server: writing the CPU profile failed: ${String(err)}\n`);
      }
      session.disconnect();
    }
    if (gcFile) {
      const heap = process.memoryUsage();
      // The live heap: after a full collection (gc() exposed at run time for this one call).
      v8.setFlagsFromString('--expose-gc');
      (runInNewContext('gc') as () => void)();
      const live = process.memoryUsage();
      appendFileSync(
        gcFile,
        JSON.stringify({ pid: process.pid, metering: values.metering, audit: values.audit, routing: values.routing, heapUsedMB: Math.round(heap.heapUsed / 1e6), liveHeapMB: Math.round(live.heapUsed / 1e6), gc }) + '\n',
      );
    }
    try {
      dest.flushSync();
    } catch {
      /* not open yet or already closed */
    }
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  if (values['exit-on-stdin-end']) {
    process.stdin.on('end', () => void stop('stdin closed'));
    process.stdin.on('error', () => void stop('stdin error'));
    process.stdin.resume();
  }

  const url = await gw.start();
  const k = await createKey(gw.store(), { tenant: BENCH_TENANT, name: 'bench-key' });
  if (values.metering === 'on' || values.metering === 'limits') {
    // Limits and budgets that apply to every request but never refuse one: the cost of checking
    // RPM and TPM (key and tenant), counting prompt tokens, reserving and settling two budgets.
    const big = 1_000_000_000;
    await setLimits(gw.store(), { kind: 'key', id: k.id }, { rpm: big, tpm: big });
    await setLimits(gw.store(), { kind: 'tenant', id: k.tenantId }, { rpm: big, tpm: big });
    if (values.metering === 'on') {
      await createBudget(gw.store(), { scope: { kind: 'key', id: k.id }, unit: 'tokens', amount: 1e15, period: 'month' });
      await createBudget(gw.store(), { scope: { kind: 'tenant', id: k.tenantId }, unit: 'tokens', amount: 1e15, period: 'month' });
    }
  }
  await gw.backendsSettled();
  process.stdout.write(JSON.stringify({ url, key: k.key, dir, logFile, pid: process.pid, routing, strategy: routing === 'pool' ? strategy : null }) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`gateway-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
