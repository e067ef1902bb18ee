/**
 * A scripted OpenAI-compatible upstream for the adversarial routing tests (127.0.0.1 only).
 *
 * Beyond `upstreams.ts` it can: delay any answer (so a test can act while an attempt is in flight),
 * hold every completion behind a gate the test opens, stream slowly, and count concurrent
 * completions (current and the maximum seen) — the ground truth for `max_in_flight` and half-open
 * probe limits. Every completion request is logged with its arrival time (performance.now()).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type AdvMode =
  | { kind: 'ok'; delayMs?: number }
  | { kind: 'status'; status: number; headers?: Record<string, string>; delayMs?: number }
  /** A proper SSE stream of `chunks` content events, `intervalMs` apart, then usage and [DONE]. */
  | { kind: 'slow_stream'; chunks: number; intervalMs: number }
  /** Answers stream requests with SSE headers, then resets the socket before any event. */
  | { kind: 'stream_reset_after_headers' }
  /** Destroys the connection without answering. */
  | { kind: 'reset' }
  /** Never answers (until the socket is closed by the client or `stop()`). */
  | { kind: 'hang' };

export interface AdvSeen {
  path: string;
  body: string;
  headers: http.IncomingHttpHeaders;
  /** performance.now() at arrival. */
  at: number;
}

export interface AdvUpstream {
  readonly name: string;
  url: string;
  mode: AdvMode;
  healthy: boolean;
  /** Completion requests received (health-check GETs excluded). */
  readonly seen: AdvSeen[];
  /** Completions being answered right now. */
  current(): number;
  /** Most completions answered at once since the last `resetMax()`. */
  max(): number;
  resetMax(): void;
  /** While closed, every completion waits (counted as concurrent) until `open()`. */
  closeGate(): void;
  openGate(): void;
  /** Resolves once `n` completions are waiting at the gate (or being answered). Bounded by `timeoutMs`. */
  waitCurrent(n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function advUpstream(name: string, mode: AdvMode = { kind: 'ok' }): Promise<AdvUpstream> {
  const sockets = new Set<Socket>();
  let port = 0;
  let cur = 0;
  let max = 0;
  let gate: Promise<void> | null = null;
  let release: (() => void) | null = null;
  const u: AdvUpstream = {
    name,
    url: '',
    mode,
    healthy: true,
    seen: [],
    current: () => cur,
    max: () => max,
    resetMax: () => {
      max = cur;
    },
    closeGate() {
      if (gate) return;
      gate = new Promise<void>((r) => (release = r));
    },
    openGate() {
      const r = release;
      gate = null;
      release = null;
      r?.();
    },
    async waitCurrent(n: number, timeoutMs = 5000) {
      const end = Date.now() + timeoutMs;
      while (cur < n) {
        if (Date.now() > end) throw new Error(`${name}: ${cur} concurrent, waited for ${n}`);
        await sleep(5);
      }
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
    start: () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve())),
  };

  const chunk = (id: string, delta: Record<string, unknown>, finish: string | null = null) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;

  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(parts).toString('utf8');
        if (req.method === 'GET') {
          res.writeHead(u.healthy ? 200 : 503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ object: 'list', data: [] }));
          return;
        }
        u.seen.push({ path: req.url ?? '', body, headers: req.headers, at: performance.now() });
        cur++;
        if (cur > max) max = cur;
        let done = false;
        const finish = () => {
          if (!done) {
            done = true;
            cur--;
          }
        };
        res.on('close', finish);
        const g = gate;
        if (g) await g;
        const m = u.mode;
        let parsed: Record<string, unknown> = {};
        try {
          parsed = JSON.parse(body) as Record<string, unknown>;
        } catch {
          /* answer anyway */
        }
        const stream = parsed['stream'] === true;
        const id = `chatcmpl-${name}`;
        if (m.kind === 'hang') return;
        if (m.kind === 'reset') {
          req.socket.destroy();
          return;
        }
        if (m.kind === 'status') {
          if (m.delayMs) await sleep(m.delayMs);
          res.writeHead(m.status, { 'content-type': 'application/json', ...(m.headers ?? {}) });
          res.end(JSON.stringify({ error: { message: `${name} says ${m.status}`, type: 'server_error', code: `status_${m.status}` } }));
          return;
        }
        if (m.kind === 'stream_reset_after_headers') {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.flushHeaders();
          await sleep(20);
          req.socket.destroy();
          return;
        }
        if (!stream) {
          if (m.kind === 'ok' && m.delayMs) await sleep(m.delayMs);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              id,
              object: 'chat.completion',
              created: 1,
              model: name,
              choices: [{ index: 0, message: { role: 'assistant', content: `hello from ${name}` }, finish_reason: 'stop' }],
              usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
            }),
          );
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk(id, { role: 'assistant', content: '' }));
        const n = m.kind === 'slow_stream' ? m.chunks : 1;
        const gap = m.kind === 'slow_stream' ? m.intervalMs : m.kind === 'ok' ? (m.delayMs ?? 0) : 0;
        for (let i = 0; i < n; i++) {
          if (gap) await sleep(gap);
          if (res.destroyed) return;
          res.write(chunk(id, { content: `part${i} from ${name} ` }));
        }
        res.write(chunk(id, {}, 'stop'));
        res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } })}\n\n`);
        res.end('data: [DONE]\n\n');
      })();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  port = (server.address() as AddressInfo).port;
  u.url = `http://127.0.0.1:${port}/v1`;
  return u;
}
