/**
 * The metering step alone, in-process: `Metering.admit` + `Metering.settle` per request against a
 * SQLite file, with RPM/TPM limits and token budgets on the key and its tenant (set so high they never
 * refuse), as the gateway's meter stage runs them. Reports CPU µs per request for each
 * configuration (no limits, limits only, limits + budgets), at concurrency 1 and 64.
 *
 *   node --import tsx bench/metering-micro.bench.ts [--requests 20000] [--rounds 3]
 *
 * Every loop is bounded by `--requests`. Nothing is written outside a temp folder (deleted at the end).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from '../packages/gateway/src/store/db.ts';
import { Metering, countPromptTokens, createBudget, setLimits } from '../packages/gateway/src/metering/index.ts';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '3' } } });
const N = Math.max(100, Number(values.requests));
const ROUNDS = Math.max(1, Number(values.rounds));
const BODY = { model: 'bench-model', messages: [{ role: 'user', content: 'Say hello to the benchmark in one short sentence, please.' }], max_tokens: 64 };

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function run(config: 'off' | 'limits' | 'on', concurrency: number, dir: string): Promise<number> {
  const store = await openStore(`sqlite:${join(dir, `${config}-${concurrency}-${Math.random().toString(36).slice(2)}.db`)}`);
  await store.migrate();
  const m = new Metering(store, { prices: {}, defaultMaxTokens: 256 });
  const tenantId = 'ten_bench';
  const keyId = 'key_bench';
  if (config !== 'off') {
    await setLimits(store, { kind: 'key', id: keyId }, { rpm: 1e9, tpm: 1e12 });
    await setLimits(store, { kind: 'tenant', id: tenantId }, { rpm: 1e9, tpm: 1e12 });
  }
  if (config === 'on') {
    await createBudget(store, { scope: { kind: 'key', id: keyId }, unit: 'tokens', amount: 1e13, period: 'month' });
    await createBudget(store, { scope: { kind: 'tenant', id: tenantId }, unit: 'tokens', amount: 1e13, period: 'month' });
  }
  const one = async () => {
    const a = await m.admit({ tenantId, keyId, model: 'bench-model', promptTokens: () => countPromptTokens(BODY, 'chat.completions'), maxTokens: 64 });
    await m.settle(a, { prompt_tokens: 17, completion_tokens: 12 });
  };
  for (let i = 0; i < 500; i++) await one(); // warm-up (tokenizer load, JIT)
  const c0 = cpuUs();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < N) {
        next++;
        await one();
      }
    }),
  );
  const us = (cpuUs() - c0) / N;
  await m.close();
  await store.close();
  return us;
}

const dir = mkdtempSync(join(os.tmpdir(), 'sovra-metering-micro-'));
try {
  const rows: string[] = [];
  for (const concurrency of [1, 64]) {
    const per: Record<string, number[]> = { off: [], limits: [], on: [] };
    for (let r = 0; r < ROUNDS; r++) for (const c of ['off', 'limits', 'on'] as const) per[c]!.push(await run(c, concurrency, dir));
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    rows.push(`| ${concurrency} | ${med(per['off']!).toFixed(1)} | ${med(per['limits']!).toFixed(1)} | ${med(per['on']!).toFixed(1)} |`);
  }
  process.stdout.write(
    `## Metering step, CPU µs per request (admit + settle), median of ${ROUNDS} rounds of ${N} requests — Node ${process.version}, ${os.cpus()[0]?.model.trim()}\n\n` +
      '| concurrency | no limits or budgets | RPM/TPM limits | limits + token budgets |\n|---:|---:|---:|---:|\n' +
      rows.join('\n') +
      '\n',
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
