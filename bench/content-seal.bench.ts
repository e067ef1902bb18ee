/**
 * Content retention's cost on the request path, in-process: CPU µs to seal a request's two bodies
 * (AES-256-GCM, `src/audit/content.ts`) at several sizes, and CPU µs of a stream's commitments
 * (40 SSE events) with and without keeping the bytes (`Commitments`, `retainBytes`).
 *
 *   node --import tsx bench/content-seal.bench.ts [--iterations 20000]
 *
 * Prints one line per case (median of 3 runs). No target: the figures go in the notes and
 * docs/audit.md ("Content retention").
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { contentKeyId, sealContent } from '../packages/gateway/src/audit/content.ts';
import { Commitments } from '../packages/gateway/src/audit/record.ts';

const { values } = parseArgs({ options: { iterations: { type: 'string', default: '20000' } } });
const n = Math.max(100, Math.min(1_000_000, Number(values.iterations) || 20_000));

/** CPU µs per call of `fn` (median of three runs of `n` calls, after a warm-up of n/10). */
function cpuPerCall(fn: () => void): number {
  for (let i = 0; i < n / 10; i++) fn();
  const runs: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t = process.cpuUsage();
    for (let i = 0; i < n; i++) fn();
    const u = process.cpuUsage(t);
    runs.push((u.user + u.system) / n);
  }
  return runs.sort((a, b) => a - b)[1]!;
}

const key = randomBytes(32);
const k = { id: contentKeyId(key), key };
for (const size of [1024, 8192, 65536]) {
  const request = randomBytes(size);
  const response = randomBytes(size);
  console.log(`seal request + response of ${size} B each: ${cpuPerCall(() => sealContent(k, '01a2-entry', { request, response })).toFixed(2)} µs CPU`);
}
const ev = 'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}\n\n';
const body = Buffer.from('{"model":"m","messages":[{"role":"user","content":"hi"}]}');
for (const retain of [0, 1 << 20]) {
  const us = cpuPerCall(() => {
    const c = new Commitments(undefined, retain);
    c.request(body);
    for (let j = 0; j < 40; j++) c.response(ev);
    c.digests();
    c.retained();
  });
  console.log(`commitments of a 40-event stream, ${retain ? 'bytes kept' : 'retention off'}: ${us.toFixed(2)} µs CPU`);
}
