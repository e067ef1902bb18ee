/**
 * Body of the store worker thread (see `store-worker.ts` for the protocol): its own connection to
 * the SQLite file, the journal's batch commits, and the audit log's integrator.
 *
 * Group commit: a `commit` message starts a transaction at once when none started in the last
 * {@link COMMIT_FLOOR_MS} (now 0: at once whenever the thread is free), else when that floor has passed. Either way every
 * message already waiting on the port is then taken at once (`receiveMessageOnPort`); all the
 * commits among them go into one transaction (per-item retry on failure), then the other messages
 * are handled in order. Integration rounds (async, one transaction per tile's worth of entries)
 * interleave between transactions; they take the entries this thread just committed from a
 * {@link QueueTail} instead of reading them back.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { openStore } from '../store/db.ts';
import type { Logger } from '../telemetry/logger.ts';
import { commitBatch, prepareJournalTx, type JournalItem, type JournalTx } from './journal.ts';
import { AuditLog, type PublishedCheckpoint } from './integrator.ts';
import type { WorkerAuditOptions } from './store-worker.ts';
import { QueueTail } from './queue-tail.ts';
import { createSqliteLedger, type Adjustment, type GrantRequest, type Ledger } from '../metering/ledger.ts';

const port = parentPort as MessagePort;
const { file } = workerData as { file: string };
const store = await openStore(`sqlite:${file}`);
const native = store.sqlite!;
let tx: JournalTx | undefined;
let audit: AuditLog | undefined;
/** The rows this thread's commits queued, for the integrator on the same connection (`queue-tail.ts`). */
const tail = new QueueTail();
/** The budget ledger on this thread's connection (see `StoreWorker.ledger`). */
let ledger: Ledger | undefined;

type Msg =
  | { t: 'commit'; b: number; items: JournalItem[]; now: number }
  | { t: 'audit-open'; id: number; opts: WorkerAuditOptions }
  | { t: 'audit-start' }
  | { t: 'audit-drain'; id: number }
  | { t: 'audit-close'; id: number }
  | { t: 'ledger-grant'; id: number; g: GrantRequest }
  | { t: 'ledger-adjust'; id: number; ops: Adjustment[] }
  | { t: 'exit' };

const wire = (e: unknown) => {
  const err = (e instanceof Error ? e : new Error(String(e))) as Error & { code?: unknown };
  return { name: err.name, message: err.message, ...(typeof err.code === 'string' ? { code: err.code } : {}) };
};

/** A Logger that forwards to the main thread's logger (errors as name/message/stack). */
function forwardingLogger(): Logger {
  const send = (level: 'info' | 'warn' | 'error') => (obj: unknown, msg?: string) => {
    const o: Record<string, unknown> = {};
    if (obj && typeof obj === 'object') {
      for (const [k, v] of Object.entries(obj)) o[k] = v instanceof Error ? { type: v.name, message: v.message, stack: v.stack } : v;
    }
    port.postMessage({ t: 'log', level, obj: o, msg: typeof obj === 'string' ? obj : (msg ?? '') });
  };
  const noop = () => undefined;
  return { info: send('info'), warn: send('warn'), error: send('error'), debug: noop, trace: noop, fatal: send('error') } as unknown as Logger;
}
const logger = forwardingLogger();

function commitAll(batches: Array<Extract<Msg, { t: 'commit' }>>): void {
  const items = batches.flatMap((m) => m.items);
  let results: Array<Error | string | null>;
  try {
    tx ??= prepareJournalTx(native);
    results = commitBatch(tx, items, batches[0]!.now, audit ? tail : undefined);
  } catch (err) {
    results = items.map(() => err as Error);
  }
  let k = 0;
  for (const m of batches) {
    const errors: Array<[number, ReturnType<typeof wire>]> = [];
    const leaves: Array<string | null> = [];
    for (let i = 0; i < m.items.length; i++, k++) {
      const r = results[k] ?? null;
      if (r instanceof Error) errors.push([i, wire(r)]);
      leaves.push(r instanceof Error ? null : r);
    }
    port.postMessage({ t: 'committed', b: m.b, errors: errors.length ? errors : null, leaves });
  }
}

async function reply(id: number, f: () => Promise<unknown>): Promise<void> {
  try {
    port.postMessage({ t: 'reply', id, ok: true, value: await f() });
  } catch (err) {
    port.postMessage({ t: 'reply', id, ok: false, error: wire(err) });
  }
}

const publish = (cp: PublishedCheckpoint) => port.postMessage({ t: 'checkpoint', size: String(cp.size), rootHash: cp.rootHash, note: cp.note });

function handle(m: Msg): void {
  switch (m.t) {
    case 'commit':
      commitAll([m]);
      return;
    case 'audit-open':
      void reply(m.id, async () => {
        audit = await AuditLog.open(store, { ...m.opts, env: m.opts.env as NodeJS.ProcessEnv, logger, onPublish: publish, tail });
        const cp = audit.latest();
        return { origin: audit.origin, vkey: audit.vkey, size: String(cp.size), rootHash: cp.rootHash, note: cp.note };
      });
      return;
    case 'audit-start':
      audit?.start();
      return;
    case 'audit-drain':
      void reply(m.id, async () => {
        await audit?.drain();
        return null;
      });
      return;
    case 'audit-close':
      void reply(m.id, async () => {
        await audit?.close();
        return null;
      });
      return;
    case 'ledger-grant':
      void reply(m.id, () => (ledger ??= createSqliteLedger(native)).grant(m.g));
      return;
    case 'ledger-adjust':
      void reply(m.id, async () => {
        await (ledger ??= createSqliteLedger(native)).adjust(m.ops);
        return null;
      });
      return;
    case 'exit':
      void (async () => {
        await audit?.close();
        await store.close();
        port.close();
      })();
      return;
  }
}

/**
 * Least time between the starts of two journal transactions, ms. 0: a commit starts as soon as the
 * thread is free, with every commit message that arrived meanwhile (group commit grows with load by
 * itself). A floor of 2 ms made batches bigger but added about 1 ms to every response under load,
 * which closed-loop clients pay in throughput (audit on vs off at 16 connections: −33 % with the
 * floor, −24 % without, `bench/routing.bench.ts --vary audit`), for no measurable CPU saving.
 */
const COMMIT_FLOOR_MS = 0;
let lastCommit = -Infinity;
let waiting: Array<Extract<Msg, { t: 'commit' }>> = [];
let timer: NodeJS.Timeout | undefined;

function gatherAndCommit(): void {
  timer = undefined;
  const commits = waiting;
  waiting = [];
  const others: Msg[] = [];
  for (let r = receiveMessageOnPort(port); r; r = receiveMessageOnPort(port)) {
    const m = r.message as Msg;
    if (m.t === 'commit') commits.push(m);
    else others.push(m);
  }
  if (commits.length > 0) {
    lastCommit = performance.now();
    commitAll(commits);
  }
  for (const m of others) handle(m);
}

port.on('message', (m: Msg) => {
  if (m.t !== 'commit') return handle(m);
  waiting.push(m);
  if (timer) return;
  const wait = lastCommit + COMMIT_FLOOR_MS - performance.now();
  if (wait <= 0) gatherAndCommit();
  else timer = setTimeout(gatherAndCommit, wait);
});
