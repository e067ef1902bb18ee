/**
 * Micro-benchmark of the incremental SSE parser on a synthetic ~10 MB OpenAI-style chat stream
 * (≈200-byte `data:` events, some multi-byte UTF-8, a keep-alive comment every 50 events).
 *
 * Run: node --import tsx bench/sse-parser.bench.ts
 * Prints MB/s (and ns/byte) for one-shot feeding (one push of the whole stream) and for 64-byte
 * chunks; bounded: a warm-up round and ROUNDS measured rounds per mode, the best and median shown.
 */
import { SseParser } from '../packages/gateway/src/sse/index.ts';

const TARGET_BYTES = 10 * 1024 * 1024;
const ROUNDS = 7;
const WORDS = ['Hello', ' world', ',', ' the', ' quick', ' brown', ' fox', ' héllo', ' 世界', ' 🙂', ' jumps', '.\n'];

function buildStream(): { bytes: Uint8Array; events: number } {
  const parts: string[] = [];
  let size = 0;
  let events = 0;
  const created = 1767225600;
  while (size < TARGET_BYTES) {
    const content = WORDS[events % WORDS.length]!;
    const chunk = {
      id: 'chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012',
      object: 'chat.completion.chunk',
      created,
      model: 'gpt-4o-mini-2024-07-18',
      choices: [{ index: 0, delta: { content }, finish_reason: null }],
    };
    let block = 'data: ' + JSON.stringify(chunk) + '\n\n';
    if (events % 50 === 49) block += ': keep-alive\n\n';
    parts.push(block);
    size += Buffer.byteLength(block);
    events++;
  }
  parts.push('data: [DONE]\n\n');
  return { bytes: new TextEncoder().encode(parts.join('')), events: events + 1 };
}

function run(bytes: Uint8Array, chunkSize: number): { ms: number; events: number; sink: number } {
  const parser = new SseParser();
  let events = 0;
  let sink = 0;
  const t0 = performance.now();
  for (let off = 0; off < bytes.length; off += chunkSize) {
    const items = parser.push(bytes.subarray(off, off + chunkSize));
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (it.type === 'event') {
        events++;
        sink += it.data.length;
      }
    }
  }
  parser.end();
  return { ms: performance.now() - t0, events, sink };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

const { bytes, events } = buildStream();
const mb = bytes.length / (1024 * 1024);
console.log(`SSE parser benchmark: ${mb.toFixed(2)} MiB, ${events} events (avg ${(bytes.length / events).toFixed(0)} B/event), node ${process.version}`);

for (const [label, chunkSize] of [['one-shot', bytes.length], ['64-byte chunks', 64]] as const) {
  run(bytes, chunkSize); // warm-up
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const res = run(bytes, chunkSize);
    if (res.events !== events) throw new Error(`expected ${events} events, parsed ${res.events}`);
    times.push(res.ms);
  }
  const best = Math.min(...times);
  const med = median(times);
  console.log(
    `${label.padEnd(15)} best ${(mb / (best / 1000)).toFixed(1).padStart(7)} MiB/s (${((best * 1e6) / bytes.length).toFixed(2)} ns/byte)` +
      `   median ${(mb / (med / 1000)).toFixed(1).padStart(7)} MiB/s (${((med * 1e6) / bytes.length).toFixed(2)} ns/byte)`,
  );
}
