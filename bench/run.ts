/**
 * `npm run bench`: the gateway load benchmark (bench/gateway.bench.ts); arguments pass through,
 * e.g. `npm run bench -- --duration 5 --connections 16`.
 * The SSE parser micro-benchmark runs on its own: `node --import tsx bench/sse-parser.bench.ts`.
 */
import { main } from './gateway.bench.ts';

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`gateway benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
