/**
 * Upstreams for the adversarial privacy tests: `node:http` servers on 127.0.0.1 that keep their own
 * log of every request body exactly as received (the ground truth of what "the model" saw) and answer
 * with whatever the test scripts.
 *
 * - {@link probeUpstream}: OpenAI-compatible (`/v1/chat/completions`, `/v1/completions`,
 *   `/v1/embeddings`, `/v1/responses`). By default it echoes the last user text back
 *   (`You said: …`); a test sets `reply` to script a JSON answer, an SSE stream (one TCP write per
 *   event when `perEventWrite`), or an error.
 * - {@link anthropicProbe}: an Anthropic Messages API stand-in that records bodies and answers `ok`.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One request as the upstream received it. */
export interface ProbeRequest {
  readonly method: string;
  readonly path: string;
  /** The body exactly as received (UTF-8). */
  readonly body: string;
  /** The body parsed as JSON ({} when it is not JSON). */
  readonly json: Record<string, any>;
}

/** A scripted answer. */
export type ProbeReply =
  | { kind: 'json'; status?: number; body: unknown }
  /** A body sent byte for byte (e.g. pretty-printed JSON). */
  | { kind: 'raw'; status?: number; text: string; contentType?: string }
  /** SSE: objects become `data: <JSON>`, strings are sent as `data: <string>`; `[DONE]` appended unless `done: false`. */
  | { kind: 'sse'; events: unknown[]; done?: boolean; perEventWrite?: boolean };

/** A running OpenAI-compatible probe. */
export interface ProbeUpstream {
  /** `http://127.0.0.1:PORT/v1` */
  readonly url: string;
  /** Every request received, in order (health checks included). */
  readonly seen: ProbeRequest[];
  /** POST requests only (what the gateway forwarded). */
  posts(): ProbeRequest[];
  /** Scripted answer for the following requests; null = echo. */
  reply: ((r: ProbeRequest) => ProbeReply) | null;
  close(): Promise<void>;
}

/** Text of a chat message content (string, or the text of its parts). */
function contentText(c: unknown): string {
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return c.map((p) => (p && typeof p === 'object' && typeof (p as any).text === 'string' ? (p as any).text : '')).join('');
  return '';
}

/** The default answer: echo what the caller wrote, per operation. */
function echo(r: ProbeRequest): ProbeReply {
  const b = r.json;
  if (r.path.endsWith('/chat/completions')) {
    const msgs = Array.isArray(b['messages']) ? (b['messages'] as any[]) : [];
    const text = contentText(msgs.filter((m) => m?.role === 'user').at(-1)?.content);
    return { kind: 'json', body: chatCompletion(`You said: ${text}`) };
  }
  if (r.path.endsWith('/completions')) {
    const p = b['prompt'];
    return { kind: 'json', body: { id: 'cmpl-probe', object: 'text_completion', created: 1, model: 'probe', choices: [{ index: 0, text: `You said: ${Array.isArray(p) ? p.join('|') : String(p)}`, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } } };
  }
  if (r.path.endsWith('/embeddings')) {
    const n = Array.isArray(b['input']) ? (b['input'] as unknown[]).length : 1;
    return { kind: 'json', body: { object: 'list', model: 'probe', data: Array.from({ length: n }, (_, i) => ({ object: 'embedding', index: i, embedding: [0.1, 0.2] })), usage: { prompt_tokens: 1, total_tokens: 1 } } };
  }
  if (r.path.endsWith('/responses')) {
    const input = typeof b['input'] === 'string' ? b['input'] : 'items';
    return { kind: 'json', body: responsesObject(`You said: ${input}`) };
  }
  return { kind: 'json', status: 404, body: { error: { message: 'not found', type: 'invalid_request_error' } } };
}

/** A non-streamed chat completion with one text choice. */
export function chatCompletion(content: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'chatcmpl-probe',
    object: 'chat.completion',
    created: 1,
    model: 'probe',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    ...extra,
  };
}

/** A Responses API object with one output_text message. */
export function responsesObject(text: string): Record<string, unknown> {
  return {
    id: 'resp_probe',
    object: 'response',
    created_at: 1,
    status: 'completed',
    model: 'probe',
    output: [{ type: 'message', id: 'msg_probe', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] }],
    usage: { input_tokens: 1, output_tokens: 1, total_tokens: 2 },
  };
}

/** Starts an OpenAI-compatible probe upstream. */
export async function probeUpstream(): Promise<ProbeUpstream> {
  const sockets = new Set<Socket>();
  const seen: ProbeRequest[] = [];
  const u: { reply: ((r: ProbeRequest) => ProbeReply) | null } = { reply: null };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let json: Record<string, any> = {};
        try {
          const v = JSON.parse(body);
          if (v && typeof v === 'object' && !Array.isArray(v)) json = v as Record<string, any>;
        } catch {
          /* not JSON */
        }
        const r: ProbeRequest = { method: req.method ?? '', path: req.url ?? '', body, json };
        seen.push(r);
        if (req.method === 'GET') {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ object: 'list', data: [] }));
          return;
        }
        const a = (u.reply ?? echo)(r);
        if (a.kind === 'json') {
          const text = JSON.stringify(a.body);
          res.writeHead(a.status ?? 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
          res.end(text);
          return;
        }
        if (a.kind === 'raw') {
          res.writeHead(a.status ?? 200, { 'content-type': a.contentType ?? 'application/json', 'content-length': Buffer.byteLength(a.text) });
          res.end(a.text);
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
        const frames = a.events.map((e) => `data: ${typeof e === 'string' ? e : JSON.stringify(e)}\n\n`);
        if (a.done !== false) frames.push('data: [DONE]\n\n');
        if (a.perEventWrite) {
          for (const f of frames) {
            res.write(f);
            await new Promise((r2) => setImmediate(r2));
          }
          res.end();
        } else res.end(frames.join(''));
      })();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    seen,
    posts: () => seen.filter((r) => r.method === 'POST'),
    get reply() {
      return u.reply;
    },
    set reply(f) {
      u.reply = f;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

/** A running Anthropic stand-in. */
export interface AnthropicProbe {
  /** `http://127.0.0.1:PORT` (the provider appends `/v1/messages`). */
  readonly url: string;
  readonly seen: ProbeRequest[];
  /** `POST /v1/messages` requests. */
  messages(): ProbeRequest[];
  close(): Promise<void>;
}

/** Starts an Anthropic Messages API stand-in answering every message with the text `ok`. */
export async function anthropicProbe(): Promise<AnthropicProbe> {
  const sockets = new Set<Socket>();
  const seen: ProbeRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: Record<string, any> = {};
      try {
        json = body ? (JSON.parse(body) as Record<string, any>) : {};
      } catch {
        /* not JSON */
      }
      seen.push({ method: req.method ?? '', path: req.url ?? '', body, json });
      const send = (status: number, b: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(b));
      };
      if (req.method === 'GET') return send(200, { data: [], has_more: false, first_id: null, last_id: null });
      send(200, {
        id: 'msg_01probe',
        type: 'message',
        role: 'assistant',
        model: String(json['model'] ?? 'claude'),
        content: [{ type: 'text', text: 'ok' }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 },
      });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    messages: () => seen.filter((r) => r.method === 'POST' && r.path === '/v1/messages'),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
