/**
 * Scripted OpenAI-compatible upstreams for routing tests: each is a `node:http` server on 127.0.0.1
 * that keeps its own request log (method, path, body) — the ground truth of which engine a request
 * reached — and answers according to a mode that a test can switch at any time.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** How an upstream answers chat completions. */
export type UpstreamMode =
  | { kind: 'ok'; delayMs?: number }
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  /** Streams `events` content chunks, then destroys the socket (no `[DONE]`). */
  | { kind: 'break_mid_stream'; events: number }
  /** Accepts the connection and destroys it without answering. */
  | { kind: 'reset' };

/** One request as the upstream saw it. */
export interface SeenRequest {
  method: string;
  path: string;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** A running scripted upstream. */
export interface ScriptedUpstream {
  readonly name: string;
  /** `http://127.0.0.1:PORT/v1` */
  url: string;
  /** Every request received (chat completions and health checks). */
  readonly seen: SeenRequest[];
  /** Chat completion requests only. */
  completions(): SeenRequest[];
  mode: UpstreamMode;
  /** Answer for `GET /v1/models` (health checks): 200 when true. */
  healthy: boolean;
  /** Stop listening (later connections are refused); `start()` listens again on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Starts a scripted upstream named `name` (the name is echoed in answers' `model` and content). */
export async function scriptedUpstream(name: string, mode: UpstreamMode = { kind: 'ok' }): Promise<ScriptedUpstream> {
  const sockets = new Set<import('node:net').Socket>();
  let port = 0;
  const u: ScriptedUpstream = {
    name,
    url: '',
    seen: [],
    mode,
    healthy: true,
    completions: () => u.seen.filter((r) => r.path.endsWith('/chat/completions')),
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
    start: () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve())),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      u.seen.push({ method: req.method ?? '', path: req.url ?? '', body, headers: req.headers });
      if (req.method === 'GET') {
        res.writeHead(u.healthy ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'list', data: [] }));
        return;
      }
      const m = u.mode;
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(body) as Record<string, unknown>;
      } catch {
        /* answer anyway */
      }
      const stream = parsed['stream'] === true;
      if (m.kind === 'reset') {
        req.socket.destroy();
        return;
      }
      if (m.kind === 'status') {
        res.writeHead(m.status, { 'content-type': 'application/json', ...(m.headers ?? {}) });
        res.end(JSON.stringify({ error: { message: `${name} says ${m.status}`, type: 'server_error', code: `status_${m.status}` } }));
        return;
      }
      const id = `chatcmpl-${name}`;
      if (!stream) {
        const send = () => {
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
        };
        if (m.kind === 'ok' && m.delayMs) setTimeout(send, m.delayMs);
        else send();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
        `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      res.write(chunk({ role: 'assistant', content: '' }));
      if (m.kind === 'break_mid_stream') {
        let i = 0;
        const tick = () => {
          if (i++ < m.events) {
            res.write(chunk({ content: `w${i} ` }));
            setTimeout(tick, 5);
          } else req.socket.destroy();
        };
        tick();
        return;
      }
      res.write(chunk({ content: `hello from ${name}` }));
      res.write(chunk({}, 'stop'));
      res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 1, model: name, choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } })}\n\n`);
      res.end('data: [DONE]\n\n');
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
