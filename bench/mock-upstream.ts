/**
 * A fast OpenAI-compatible mock engine for the gateway load benchmark (not the scripted conformance
 * mock of the tests: this one exists to be as cheap as possible, so that the benchmark measures the
 * gateway and not the upstream).
 *
 * Plain `node:http` on 127.0.0.1, keep-alive, Nagle off. Every answer is pre-serialised at start-up:
 * - `POST /v1/chat/completions` without `"stream": true` → a fixed `chat.completion` JSON (~400 bytes,
 *   with `usage`), one write with `content-length`;
 * - with `"stream": true` → `text/event-stream` (chunked): 20 content chunks, a finish chunk, a usage
 *   chunk (only when `stream_options.include_usage` is true) and `data: [DONE]`, written back to back
 *   with no delay, exactly one `res.write()` per event (the last event goes with `res.end()`);
 * - `GET /v1/models` → a one-model list; anything else → 404 (OpenAI-shaped).
 *
 * - `GET /_bench/stats` → `{"requests":N}`: chat requests answered on this port so far (the routing
 *   benchmark reads it to check how a pool spread the load).
 *
 * Standalone: `node --import tsx bench/mock-upstream.ts --port 0 [--host 127.0.0.1] [--instances N]`
 * prints `{"port":N,"url":"http://127.0.0.1:N","urls":[…],"pid":N}` on stdout once listening;
 * SIGINT/SIGTERM (or, with `--exit-on-stdin-end`, the parent closing stdin) stop it. `--instances N`
 * listens on N ports (each `--port 0`, i.e. any free port) in the same process, so N "backends" cost
 * exactly what one does: the routing benchmark's pool (bench/routing.bench.ts) uses three.
 */
import http from 'node:http';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const CREATED = 1767225600;
const MODEL = 'mock-llm';
const CHAT_ID = 'chatcmpl-sovrabench0000000000000000000001';
const USAGE = { prompt_tokens: 12, completion_tokens: 20, total_tokens: 32 };
/** 20 content pieces of the streamed answer (they join to the non-stream answer's content). */
const PIECES = [
  'Hello',
  '!',
  ' This',
  ' is',
  ' a',
  ' fixed',
  ' answer',
  ' from',
  ' the',
  ' Sovra',
  ' benchmark',
  ' mock',
  ' upstream',
  ',',
  ' served',
  ' without',
  ' any',
  ' delay',
  ' at',
  ' all.',
];
export const STREAM_CONTENT_CHUNKS = PIECES.length;
export const ANSWER_TEXT = PIECES.join('');

/** The non-streaming answer (pre-serialised). */
export const COMPLETION_BODY: Buffer = Buffer.from(
  JSON.stringify({
    id: CHAT_ID,
    object: 'chat.completion',
    created: CREATED,
    model: MODEL,
    choices: [{ index: 0, message: { role: 'assistant', content: ANSWER_TEXT }, logprobs: null, finish_reason: 'stop' }],
    usage: USAGE,
  }),
);

function sse(obj: unknown): Buffer {
  return Buffer.from('data: ' + (typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n\n');
}

function chunk(delta: Record<string, unknown>, finish: string | null): Buffer {
  return sse({
    id: CHAT_ID,
    object: 'chat.completion.chunk',
    created: CREATED,
    model: MODEL,
    system_fingerprint: 'fp_sovra_bench',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  });
}

/** The streamed events, each one pre-framed `data: …\n\n` block. */
export const STREAM_CONTENT_EVENTS: Buffer[] = PIECES.map((p, i) => chunk(i === 0 ? { role: 'assistant', content: p } : { content: p }, null));
export const STREAM_FINISH_EVENT: Buffer = chunk({}, 'stop');
export const STREAM_USAGE_EVENT: Buffer = sse({
  id: CHAT_ID,
  object: 'chat.completion.chunk',
  created: CREATED,
  model: MODEL,
  system_fingerprint: 'fp_sovra_bench',
  choices: [],
  usage: USAGE,
});
export const STREAM_DONE_EVENT: Buffer = sse('[DONE]');

const MODELS_BODY = Buffer.from(JSON.stringify({ object: 'list', data: [{ id: MODEL, object: 'model', created: CREATED, owned_by: 'sovra-bench' }] }));
const NOT_FOUND_BODY = Buffer.from(JSON.stringify({ error: { message: 'Unknown route.', type: 'invalid_request_error', param: null, code: 'unknown_url' } }));
const BAD_BODY = Buffer.from(JSON.stringify({ error: { message: 'The body is not valid JSON.', type: 'invalid_request_error', param: null, code: 'invalid_json' } }));

const JSON_HEADERS = { 'content-type': 'application/json' } as const;
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' } as const;

function sendJson(res: http.ServerResponse, status: number, body: Buffer): void {
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': body.length });
  res.end(body);
}

function sendStream(res: http.ServerResponse, includeUsage: boolean): void {
  res.writeHead(200, SSE_HEADERS);
  for (let i = 0; i < STREAM_CONTENT_EVENTS.length; i++) res.write(STREAM_CONTENT_EVENTS[i]!);
  res.write(STREAM_FINISH_EVENT);
  if (includeUsage) res.write(STREAM_USAGE_EVENT);
  res.end(STREAM_DONE_EVENT);
}

function onChat(res: http.ServerResponse, raw: Buffer): void {
  let body: { stream?: unknown; stream_options?: { include_usage?: unknown } | null } | null;
  try {
    body = JSON.parse(raw.toString('utf8')) as typeof body;
  } catch {
    body = null;
  }
  if (!body || typeof body !== 'object') return sendJson(res, 400, BAD_BODY);
  if (body.stream === true) return sendStream(res, body.stream_options?.include_usage === true);
  sendJson(res, 200, COMPLETION_BODY);
}

/** A running mock. */
export interface MockUpstream {
  readonly port: number;
  /** `http://127.0.0.1:PORT` (append `/v1` for a backend base URL). */
  readonly url: string;
  /** Requests answered so far (all routes). */
  requests(): number;
  close(): Promise<void>;
}

/** Start the mock (port 0 = any free port). */
export async function startMockUpstream(opts: { port?: number; host?: string } = {}): Promise<MockUpstream> {
  const host = opts.host ?? '127.0.0.1';
  let count = 0;
  let chats = 0;
  const server = http.createServer({ keepAlive: true, noDelay: true, keepAliveTimeout: 120_000 }, (req, res) => {
    count++;
    const url = req.url ?? '/';
    if (req.method === 'POST' && (url === '/v1/chat/completions' || url === '/chat/completions')) {
      chats++;
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => onChat(res, parts.length === 1 ? parts[0]! : Buffer.concat(parts)));
      return;
    }
    req.resume();
    if (req.method === 'GET' && (url === '/v1/models' || url === '/models')) return sendJson(res, 200, MODELS_BODY);
    if (req.method === 'GET' && url === '/_bench/stats') return sendJson(res, 200, Buffer.from(JSON.stringify({ requests: chats })));
    sendJson(res, 404, NOT_FOUND_BODY);
  });
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 130_000;
  server.requestTimeout = 0;
  server.maxRequestsPerSocket = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    url: `http://${host}:${port}`,
    requests: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      instances: { type: 'string', default: '1' },
      'exit-on-stdin-end': { type: 'boolean', default: false },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be 0-65535, got ${values.port}`);
  const instances = Number(values.instances);
  if (!Number.isInteger(instances) || instances < 1 || instances > 16) throw new Error(`--instances must be 1-16, got ${values.instances}`);
  if (instances > 1 && port !== 0) throw new Error('--instances > 1 needs --port 0 (each instance takes a free port)');
  const mocks: MockUpstream[] = [];
  for (let i = 0; i < instances; i++) mocks.push(await startMockUpstream({ port, host: values.host }));
  const mock = mocks[0]!;
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(0), 2_000);
    force.unref();
    void Promise.all(mocks.map((m) => m.close())).then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  if (values['exit-on-stdin-end']) {
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }
  process.stdout.write(JSON.stringify({ port: mock.port, url: mock.url, urls: mocks.map((m) => m.url), pid: process.pid }) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`mock-upstream: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
