/**
 * Journal commit micro-benchmark: the cost of the transaction a response waits for, per layout.
 *
 *   node --import tsx bench/journal-commit.bench.ts [--batch 5] [--commits 4000] [--rounds 2]
 *
 * On a fresh SQLite file (WAL, `synchronous=NORMAL`, the gateway's own `openStore` and migrations),
 * `--commits` transactions of `--batch` items each are written with the journal's own
 * `prepareJournalTx` / `commitBatch` (one thread, no worker), for three kinds of item:
 * - `queued`: a data-plane item as the gateway writes it with the audit log on (`requestEntry`): one
 *   `audit_queue` row carrying the entry, the request row and the salt (src/audit/queued-rows.ts);
 * - `separate`: the same row, entry and salt written to `requests`, `audit_queue` and
 *   `audit_secrets` (the layout before migration 0007; the journal still writes items given as
 *   `request` + `entry` + `salt` that way);
 * - `rows`: a request row only (the audit log off).
 * Every 50 commits the queue is emptied, as the integrator does. The first 500 commits are not
 * timed. Reported per kind and round: mean wall time per commit (µs), including building the record
 * and its leaf hash. Kinds alternate within each round. Every loop is bounded by `--commits`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from '../packages/gateway/src/store/db.ts';
import { commitBatch, prepareJournalTx, type JournalItem } from '../packages/gateway/src/audit/journal.ts';
import { Commitments, encodeRecord, requestRecord } from '../packages/gateway/src/audit/record.ts';
import { newRequestId } from '../packages/gateway/src/http/request-id.ts';
import type { RequestsTable } from '../packages/gateway/src/store/schema.ts';

const { values } = parseArgs({ options: { batch: { type: 'string', default: '5' }, commits: { type: 'string', default: '4000' }, rounds: { type: 'string', default: '2' } } });
const BATCH = Number(values.batch);
const COMMITS = Number(values.commits);
const ROUNDS = Number(values.rounds);
const WARM = Math.min(500, Math.floor(COMMITS / 4));

function row(): RequestsTable {
  return {
    id: newRequestId(), ts: Date.now(), key_id: 'key_3fZk2Qw8Lr0PaXy1', tenant_id: 'ten_Hq2mVx9Kd0Lz7Ap4', operation: 'chat.completions',
    model: 'llama-3.1-8b-instruct', backend_id: 'vllm-kl-1', upstream_model: 'meta-llama/Llama-3.1-8B-Instruct', stream: 0, status: 200,
    outcome: 'ok', error_code: null, latency_ms: 350, ttfb_ms: 40, prompt_tokens: 120, completion_tokens: 256, total_tokens: 376,
    usage_source: 'upstream', cost_micros: 0,
  };
}

type Kind = 'queued' | 'separate' | 'rows';
function item(kind: Kind): JournalItem {
  const r = row();
  if (kind === 'rows') return { request: r };
  const c = new Commitments();
  c.request(Buffer.from('{"model":"llama-3.1-8b-instruct","messages":[{"role":"user","content":"hi"}]}'));
  c.response(Buffer.from('{"id":"chatcmpl-1","choices":[]}'));
  const commitments = c.digests();
  if (kind === 'queued') return { request: r, requestEntry: { tenant: 'ministry-of-health', commitments }, salt: { id: r.id, salt: c.salt } };
  // the same record, built here as the journal would, written to the three tables
  return { request: r, entry: { id: r.id, bytes: encodeRecord(requestRecord(r, { tenant: 'ministry-of-health', commitments })) }, salt: { id: r.id, salt: c.salt } };
}

const dir = mkdtempSync(join(tmpdir(), 'sovra-journal-commit-'));
try {
  console.log(`journal commit cost, ${BATCH} items per transaction, ${COMMITS - WARM} timed commits per kind and round (Node ${process.version})`);
  const results: Record<Kind, number[]> = { queued: [], separate: [], rows: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const kind of ['queued', 'separate', 'rows'] as const) {
      const store = await openStore(`sqlite:${join(dir, `${kind}-${round}.db`)}`);
      await store.migrate();
      const native = store.sqlite!;
      const tx = prepareJournalTx(native);
      const drain = native.prepare('DELETE FROM audit_queue');
      let ms = 0;
      for (let i = 0; i < COMMITS; i++) {
        const items = Array.from({ length: BATCH }, () => item(kind));
        const t0 = performance.now();
        const out = commitBatch(tx, items, Date.now());
        if (i >= WARM) ms += performance.now() - t0;
        if (out.some((o) => o instanceof Error)) throw new Error(`commit failed: ${String(out.find((o) => o instanceof Error))}`);
        if (i % 50 === 49) drain.run();
      }
      await store.close();
      const us = (ms * 1000) / (COMMITS - WARM);
      results[kind].push(us);
      console.log(`  round ${round + 1} ${kind.padEnd(8)} ${us.toFixed(1)} µs/commit`);
    }
  }
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  console.log(`\n| kind | µs per commit of ${BATCH} (mean of ${ROUNDS} rounds) |\n|---|---:|`);
  for (const k of ['queued', 'separate', 'rows'] as const) console.log(`| ${k} | ${mean(results[k]).toFixed(1)} |`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
