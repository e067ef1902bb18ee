/**
 * Transparency-log benchmark (docs/audit.md):
 *
 *   node --import tsx bench/audit.bench.ts [--entries 300000] [--proof-size 10000000] [--proofs 2000]
 *        [--skip-proofs] [--out bench/results]
 *
 * 1. **Journal and integration throughput** (SQLite file in a temp folder, one process, one thread):
 *    `--entries` realistic requests are written through the journal as the gateway writes them with
 *    the log on (group commit, batches of 4096): the journal builds each `request` record (≈ 730
 *    bytes, the gateway's own record code) and queues it with its request row and salt in one queue
 *    row. Then the integrator runs until the queue is empty: read the queue, hash, build tiles and
 *    bundles, insert tiles / bundles / index rows, move the request rows and salts to `requests` and
 *    `audit_secrets` (src/audit/queued-rows.ts), delete the queue rows, recompute the root from the stored tiles, check consistency with the
 *    previous checkpoint, sign and store the checkpoint. Reported: entries per second for each phase
 *    (wall clock, store included) and the CPU time used. Run twice, on two fresh stores: entries read
 *    back from `audit_queue` (a backlog after a restart, or rows queued by another process), and
 *    entries taken from the journal's in-memory `QueueTail` (what the gateway's store worker does,
 *    src/audit/queue-tail.ts).
 * 2. **Proofs at 10 million entries from the store.** Pushing 10 M requests through a gateway would
 *    take hours, so the stored state of a 10 M-entry log is synthesised directly: 10 M random 32-byte
 *    leaf hashes are appended to a `TileIntegrator` without entry bundles (`bundles: false`), and the
 *    resulting hash tiles (every level, full and partial, exactly what the integrator writes) are
 *    inserted into `audit_tiles` of a fresh SQLite store. Proofs never read bundles, so they see the
 *    same rows a real 10 M log has. Then inclusion proofs (random index, at the full size) and
 *    consistency proofs (random old size) are generated with the gateway's `AuditStorage` tile reader
 *    (one SQLite query per tile), and every 50th is verified against the root: first with no cache
 *    (every tile crossed is read and its sibling subtrees hashed), then as the read API serves them,
 *    with the storage's shared `TileHashCache` of upper tiles (starting empty). Reported: median /
 *    p99 / max time per proof, for both.
 *
 *    After the drain, 200 `leaf_hash=` lookups of random entries are timed (and checked).
 *
 * The gateway's request throughput with the log on vs off is measured by the interleaved A/B:
 *   node --import tsx bench/routing.bench.ts --vary audit --rounds 4 --duration 6 --connections 16,64
 *
 * Every loop is bounded by a count. Results are printed and written to `<out>/audit-<timestamp>.json`.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { newRequestId } from '../packages/gateway/src/http/request-id.ts';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TileHashCache, TileIntegrator, consistencyProofFromTiles, inclusionProofFromTiles, rootHashFromTiles, verifyConsistency, verifyInclusion, readHashesFromTiles, bytesEqual } from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import { openStore, type Store } from '../packages/gateway/src/store/db.ts';
import { Journal } from '../packages/gateway/src/audit/journal.ts';
import { AuditLog } from '../packages/gateway/src/audit/integrator.ts';
import { AuditStorage } from '../packages/gateway/src/audit/storage.ts';
import { QueueTail } from '../packages/gateway/src/audit/queue-tail.ts';
import { Commitments, encodeRecord, requestRecord } from '../packages/gateway/src/audit/record.ts';
import { createLogger } from '../packages/gateway/src/telemetry/logger.ts';
import type { RequestsTable } from '../packages/gateway/src/store/schema.ts';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));

/** Targets stated in the task: ≥ 50 000 entries/s integrated, ≤ 1 ms per proof at 10 M entries. */
export const TARGETS = { integratedPerSecond: 50_000, proofMsAt10M: 1 } as const;

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/**
 * With `SOVRA_BENCH_CPU_PROF=<dir>`, a V8 CPU profile of the integration phase alone (journal
 * writes excluded) is written there as `<name>.cpuprofile`; summarise it with
 * `node --import tsx bench/profile-summary.ts FILE`.
 */
async function startProfile(): Promise<{ stop(name: string): Promise<void> } | undefined> {
  const dir = process.env.SOVRA_BENCH_CPU_PROF;
  if (!dir) return undefined;
  const { Session } = await import('node:inspector/promises');
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  return {
    async stop(name) {
      const { profile } = await session.post('Profiler.stop');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function sampleRow(i: number): RequestsTable {
  return {
    id: newRequestId(),
    ts: Date.now(),
    key_id: 'key_3fZk2Qw8Lr0PaXy1',
    tenant_id: 'ten_Hq2mVx9Kd0Lz7Ap4',
    operation: 'chat.completions',
    model: 'llama-3.1-8b-instruct',
    backend_id: 'vllm-kl-1',
    upstream_model: 'meta-llama/Llama-3.1-8B-Instruct',
    stream: i % 2,
    status: 200,
    outcome: 'ok',
    error_code: null,
    latency_ms: 350 + (i % 100),
    ttfb_ms: 40,
    prompt_tokens: 120,
    completion_tokens: 256,
    total_tokens: 376,
    usage_source: 'upstream',
  };
}

async function integrationBench(entries: number, dir: string, withTail: boolean) {
  const store = await openStore(`sqlite:${join(dir, `integrate-${withTail ? 'tail' : 'table'}.db`)}`);
  await store.migrate();
  const logger = createLogger('silent');
  // With the tail, as on the gateway's store worker: the journal and the integrator share one
  // connection, and the integrator takes the rows the journal just committed from memory. Sized to
  // hold the whole backlog here (the gateway's holds 32,768 rows; rounds there come every second).
  const tail = withTail ? new QueueTail(entries) : undefined;
  const log = await AuditLog.open(store, { keyFile: join(dir, `audit-${withTail}.key`), env: {}, intervalMs: 3_600_000, batchMax: 65_536, logger, ...(tail ? { tail } : {}) });
  const journal = new Journal(store, tail ? { tail } : {});
  // Items as the gateway writes them with the log on (`requestEntry`): the journal builds each record
  // and queues it with its request row and salt in one queue row; integration moves row and salt to
  // `requests` / `audit_secrets` (src/audit/queued-rows.ts). The same record is built here too, for
  // its size and the lookups below (same inputs, same bytes).
  const items = [];
  const entryBytes: Uint8Array[] = [];
  let bytes = 0;
  for (let i = 0; i < entries; i++) {
    const row = sampleRow(i);
    const c = new Commitments();
    c.request(Buffer.from(`{"model":"x","messages":[{"role":"user","content":"${i}"}]}`));
    c.response(Buffer.from(`{"id":"chatcmpl-${i}"}`));
    const requestEntry = { tenant: 'ministry-of-health', commitments: c.digests() };
    const entry = encodeRecord(requestRecord(row, requestEntry));
    bytes += entry.length;
    entryBytes.push(entry);
    items.push({ request: row, requestEntry, salt: { id: row.id, salt: c.salt } });
  }
  let t0 = performance.now();
  let c0 = cpuMs();
  const CHUNK = 4096;
  for (let i = 0; i < items.length; i += CHUNK) await Promise.all(items.slice(i, i + CHUNK).map((it) => journal.write(it)));
  const journalMs = performance.now() - t0;
  const journalCpu = cpuMs() - c0;
  const profiler = await startProfile();
  t0 = performance.now();
  c0 = cpuMs();
  const cp = await log.drain(10_000);
  const integrateMs = performance.now() - t0;
  const integrateCpu = cpuMs() - c0;
  await profiler?.stop(`integrate-${withTail ? 'tail' : 'table'}`);
  if (cp.size !== BigInt(entries)) throw new Error(`integrated ${cp.size} of ${entries}`);
  // leaf_hash= lookups (spec §10.1; one probe per 16,384-entry epoch, see src/audit/leaf-lookup.ts)
  const storage = new AuditStorage(store);
  const lookups: number[] = [];
  for (let k = 0; k < 200; k++) {
    const i = Math.floor(Math.random() * entries);
    const leafHex = Buffer.from(nodeTreeHasher.hashLeaf(entryBytes[i]!)).toString('hex');
    const t1 = performance.now();
    const found = await storage.indexOfLeafHash(leafHex);
    lookups.push(performance.now() - t1);
    if (found !== BigInt(i)) throw new Error(`leaf_hash lookup of entry ${i} gave ${found}`);
  }
  lookups.sort((a, b) => a - b);
  await journal.close();
  await log.close();
  const moved = store.sqlite!.prepare('SELECT (SELECT count(*) FROM requests) AS r, (SELECT count(*) FROM audit_secrets) AS s').get() as { r: number; s: number };
  if (moved.r !== entries || moved.s !== entries) throw new Error(`integration moved ${moved.r} rows and ${moved.s} salts of ${entries}`);
  await store.close();
  return {
    entries,
    avgEntryBytes: Math.round(bytes / entries),
    journal: { ms: journalMs, perSecond: (entries / journalMs) * 1000, cpuMs: journalCpu, note: 'one queue row per item (record built by the journal, with its request row and salt), group-committed 4096 per transaction' },
    integrate: { ms: integrateMs, perSecond: (entries / integrateMs) * 1000, cpuMs: integrateCpu, rounds: Math.ceil(entries / 65_536) },
    leafHashLookup: { count: lookups.length, medianMs: pct(lookups, 50), p99Ms: pct(lookups, 99), maxMs: lookups[lookups.length - 1]! },
  };
}

async function synthesise(store: Store, size: number): Promise<{ root: Uint8Array; ms: number }> {
  const native = store.sqlite!;
  const ins = native.prepare('INSERT INTO audit_tiles (level, idx, width, data) VALUES (?, ?, ?, ?)');
  const write = native.transaction((tiles: readonly { level: number; index: bigint; width: number; data: Uint8Array }[]) => {
    for (const t of tiles) ins.run(t.level, t.index, t.width, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  });
  const t0 = performance.now();
  const ti = new TileIntegrator({ hasher: nodeTreeHasher, bundles: false });
  const BLOCK = 256 * 1024;
  for (let done = 0; done < size; ) {
    const n = Math.min(BLOCK, size - done);
    const rnd = randomBytes(n * 32);
    for (let j = 0; j < n; j++) ti.appendLeafHash(new Uint8Array(rnd.buffer, rnd.byteOffset + j * 32, 32));
    done += n;
    write(ti.flush().tiles);
  }
  native.prepare("INSERT INTO audit_meta (key, value) VALUES ('integrated_size', ?)").run(String(size));
  return { root: ti.rootHash(), ms: performance.now() - t0 };
}

async function proofBench(size: number, proofs: number, dir: string) {
  const store = await openStore(`sqlite:${join(dir, 'proofs.db')}`);
  await store.migrate();
  const syn = await synthesise(store, size);
  const storage = new AuditStorage(store);
  const N = BigInt(size);
  const root = await rootHashFromTiles(N, storage, nodeTreeHasher);
  if (!bytesEqual(root, syn.root)) throw new Error('root from stored tiles differs');
  const rnd = (max: bigint) => BigInt(Math.floor(Math.random() * Number(max)));
  // warm-up (statement caches, page cache)
  for (let i = 0; i < 50; i++) await inclusionProofFromTiles(rnd(N), N, storage, nodeTreeHasher);
  /** Times `proofs` inclusion and ≤ 500 consistency proofs at random, with or without the shared cache. */
  const timeProofs = async (cache: TileHashCache | undefined) => {
    const incl: number[] = [];
    for (let i = 0; i < proofs; i++) {
      const idx = rnd(N);
      const t0 = performance.now();
      const proof = await inclusionProofFromTiles(idx, N, storage, nodeTreeHasher, cache);
      incl.push(performance.now() - t0);
      if (i % 50 === 0) {
        const [leaf] = await readHashesFromTiles(N, [{ level: 0, index: idx }], storage, nodeTreeHasher);
        if (!verifyInclusion(idx, N, leaf!, proof, root, nodeTreeHasher)) throw new Error(`inclusion proof ${idx} does not verify`);
      }
    }
    const cons: number[] = [];
    for (let i = 0; i < Math.min(proofs, 500); i++) {
      const old = rnd(N) + 1n;
      const t0 = performance.now();
      const proof = await consistencyProofFromTiles(old, N, storage, nodeTreeHasher, cache);
      cons.push(performance.now() - t0);
      if (i % 50 === 0) {
        const oldRoot = await rootHashFromTiles(old, storage, nodeTreeHasher);
        if (!verifyConsistency(old, N, oldRoot, root, proof, nodeTreeHasher)) throw new Error(`consistency proof ${old} does not verify`);
      }
    }
    return { inclusion: stat(incl), consistency: stat(cons) };
  };
  const stat = (a: number[]) => {
    a.sort((x, y) => x - y);
    return { count: a.length, medianMs: pct(a, 50), p99Ms: pct(a, 99), maxMs: a[a.length - 1]! };
  };
  // Cold first: every proof reads and hashes its tiles. Then as the read API serves them: the
  // storage's shared TileHashCache, starting empty (its misses are part of the figures).
  const cold = await timeProofs(undefined);
  const served = await timeProofs(storage.tileHashes);
  const tiles = (native => (native.prepare('SELECT count(*) AS n, sum(length(data)) AS b FROM audit_tiles').get() as { n: number; b: number }))(store.sqlite!);
  await store.close();
  return { size, synthesiseMs: syn.ms, storedTiles: tiles.n, storedTileBytes: tiles.b, ...served, cold, cache: { tiles: storage.tileHashes.size, hits: storage.tileHashes.hits, misses: storage.tileHashes.misses } };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      entries: { type: 'string', default: '300000' },
      'proof-size': { type: 'string', default: '10000000' },
      proofs: { type: 'string', default: '2000' },
      'skip-proofs': { type: 'boolean', default: false },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  const dir = mkdtempSync(join(os.tmpdir(), 'sovra-audit-bench-'));
  try {
    const entries = Math.max(1, Math.min(5_000_000, Number(values.entries)));
    process.stderr.write(`integration: ${entries} entries, read back from the queue table…\n`);
    const integration = await integrationBench(entries, dir, false);
    process.stderr.write(`integration: ${entries} entries, from the journal's in-memory tail…\n`);
    const integrationTail = await integrationBench(entries, dir, true);
    let proofs: Awaited<ReturnType<typeof proofBench>> | undefined;
    if (!values['skip-proofs']) {
      const size = Math.max(2, Math.min(100_000_000, Number(values['proof-size'])));
      process.stderr.write(`proofs: synthesising the tiles of a ${size}-entry log…\n`);
      proofs = await proofBench(size, Math.max(1, Math.min(100_000, Number(values.proofs))), dir);
    }
    const report = {
      startedAt: new Date().toISOString(),
      machine: { node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '?', loadavg: os.loadavg() },
      integration,
      integrationTail,
      proofs,
      targets: [
        { name: 'entries integrated per second (store included), read back from the queue', actual: Math.round(integration.integrate.perSecond), target: `≥ ${TARGETS.integratedPerSecond}`, pass: integration.integrate.perSecond >= TARGETS.integratedPerSecond },
        { name: 'entries integrated per second (store included), from the in-memory tail', actual: Math.round(integrationTail.integrate.perSecond), target: `≥ ${TARGETS.integratedPerSecond}`, pass: integrationTail.integrate.perSecond >= TARGETS.integratedPerSecond },
        ...(proofs
          ? [{ name: `inclusion proof p50 at ${proofs.size} entries (ms)`, actual: Number(proofs.inclusion.medianMs.toFixed(3)), target: `≤ ${TARGETS.proofMsAt10M}`, pass: proofs.inclusion.medianMs <= TARGETS.proofMsAt10M }]
          : []),
      ],
    };
    const f = (x: number) => x.toLocaleString('en-US', { maximumFractionDigits: 3 });
    const lines = [
      `## Sovra audit log benchmark — ${report.startedAt}`,
      '',
      `Node ${report.machine.node}, ${report.machine.cpus}× ${report.machine.cpuModel}, load ${report.machine.loadavg.map((x) => x.toFixed(2)).join(' / ')}`,
      '',
      `| phase | entries | wall ms | entries/s | CPU ms |`,
      `|---|---|---|---|---|`,
      `| journal (row + entry + salt, group commit) | ${integration.entries} | ${f(integration.journal.ms)} | ${f(Math.round(integration.journal.perSecond))} | ${f(integration.journal.cpuMs)} |`,
      `| integrate (tiles, bundles, index, checkpoint), entries read back from the queue | ${integration.entries} | ${f(integration.integrate.ms)} | ${f(Math.round(integration.integrate.perSecond))} | ${f(integration.integrate.cpuMs)} |`,
      `| integrate, entries from the journal's in-memory tail (the gateway's steady state) | ${integrationTail.entries} | ${f(integrationTail.integrate.ms)} | ${f(Math.round(integrationTail.integrate.perSecond))} | ${f(integrationTail.integrate.cpuMs)} |`,
      '',
      `Average entry: ${integration.avgEntryBytes} bytes. \`leaf_hash=\` lookups at ${integration.entries} entries: median ${f(integration.leafHashLookup.medianMs)} ms, p99 ${f(integration.leafHashLookup.p99Ms)} ms (${integration.leafHashLookup.count} random entries).`,
    ];
    if (proofs) {
      lines.push(
        '',
        `Proofs from the store at ${f(proofs.size)} entries (${f(proofs.storedTiles)} stored tiles, ${f(Math.round(proofs.storedTileBytes / 1e6))} MB; synthesised in ${f(Math.round(proofs.synthesiseMs))} ms):`,
        '',
        `| proof | count | median ms | p99 ms | max ms |`,
        `|---|---|---|---|---|`,
        `| inclusion, as the read API serves it (shared tile-hash cache, starting empty) | ${proofs.inclusion.count} | ${f(proofs.inclusion.medianMs)} | ${f(proofs.inclusion.p99Ms)} | ${f(proofs.inclusion.maxMs)} |`,
        `| consistency, same | ${proofs.consistency.count} | ${f(proofs.consistency.medianMs)} | ${f(proofs.consistency.p99Ms)} | ${f(proofs.consistency.maxMs)} |`,
        `| inclusion, no cache (every tile read and hashed) | ${proofs.cold.inclusion.count} | ${f(proofs.cold.inclusion.medianMs)} | ${f(proofs.cold.inclusion.p99Ms)} | ${f(proofs.cold.inclusion.maxMs)} |`,
        `| consistency, no cache | ${proofs.cold.consistency.count} | ${f(proofs.cold.consistency.medianMs)} | ${f(proofs.cold.consistency.p99Ms)} | ${f(proofs.cold.consistency.maxMs)} |`,
        '',
        `Tile-hash cache after the run: ${proofs.cache.tiles} tiles, ${proofs.cache.hits} hits, ${proofs.cache.misses} misses.`,
      );
    }
    lines.push('', ...report.targets.map((t) => `- ${t.pass ? 'PASS' : 'MISS'}: ${t.name}: ${t.actual} (target ${t.target})`));
    process.stdout.write(lines.join('\n') + '\n');
    const outDir = resolve(values.out);
    mkdirSync(outDir, { recursive: true });
    const file = join(outDir, `audit-${report.startedAt.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
    process.stderr.write(`results written to ${file}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`audit bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
