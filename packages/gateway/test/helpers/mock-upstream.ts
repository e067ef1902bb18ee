/**
 * M, the scripted mock upstream of `/work/shared/cases/gateway-conformance.md`.
 *
 * A plain `node:net` server (no `node:http` on the response side) so that every TCP write is under the
 * script's control. It parses HTTP/1.1 requests itself (request line, raw headers, Content-Length or
 * chunked bodies), supports keep-alive (several requests per connection, handled one after the other)
 * and any number of concurrent connections, records every request byte for byte, and replays a
 * {@link Script} per request.
 *
 * ## Response framing (the decision)
 * By default a response is sent with `Transfer-Encoding: chunked` and **each {@link Write} is exactly
 * one HTTP chunk, sent as exactly one `socket.write()`** (chunk-size line + data + CRLF together), so
 * the connection stays reusable (keep-alive, like real upstreams: OpenAI, vLLM/uvicorn, llama.cpp and
 * Ollama all stream SSE chunked) while the receiver still sees one body callback per write.
 * A script can choose otherwise with {@link Script.framing}:
 * - `'chunked'` (default unless the script's headers carry `content-length`): as above. A zero-length
 *   write is not sent (it would be the terminating chunk); its `after` delay still applies.
 * - `'length'` (default when the script's headers carry `content-length`, and what {@link jsonResponse}
 *   uses): the writes are sent raw; `content-length` is taken from the headers verbatim when present
 *   (so a script may lie about it), otherwise computed from the writes.
 * - `'close'`: the writes are sent raw with `connection: close`; the body ends when M ends the socket.
 * Framing headers are added only when the script did not provide a header of that name.
 *
 * ## Timing
 * Every timestamp (here and in `raw-client.ts`) is `performance.now()` in milliseconds: monotonic and
 * directly comparable between the two helpers and the code under test when they share a process.
 *
 * ## Flushing
 * The head (status line + headers) is one write; then each body write is one `socket.write()` on a
 * socket with Nagle disabled, followed by a flush: M waits for the write callback (data handed to the
 * kernel) and then two `setImmediate` turns, which guarantees at least one poll phase of the event loop
 * between two writes, so an in-process receiver reads them separately. `flushMs` (per mock) adds a real
 * delay after every write for receivers in another process.
 */
import net from 'node:net';
import { STATUS_CODES } from 'node:http';

// ---------------------------------------------------------------------------------------------------
// Script types
// ---------------------------------------------------------------------------------------------------

/** One piece of a mixed write: `T'…'` (UTF-8 text) or `X'…'` (hex bytes) in the case file. */
export type Segment = { text: string } | { hex: string };

/**
 * One body write: a single `socket.write()` followed by a flush. `after` (ms) is waited before the
 * write. `text` is UTF-8; `hex` is raw bytes (whitespace between bytes allowed); `segments` are sent
 * back to back in one write.
 */
export type Write =
  | { after?: number; text: string }
  | { after?: number; hex: string }
  | { after?: number; segments: Segment[] };

/** How the response body is delimited; see the module documentation. */
export type Framing = 'chunked' | 'length' | 'close';

/**
 * What happens after the last write:
 * - `'end'` (default): the response is completed properly (chunked terminator `0\r\n\r\n`; for
 *   `'close'` framing, or when the request said `Connection: close`, the socket is then ended with FIN).
 *   The connection otherwise stays open for the next keep-alive request.
 * - `'fin'`: the socket is ended (TCP FIN) **without** completing the framing (no terminating chunk):
 *   a truncated-but-orderly close.
 * - `'destroy'`: the connection is reset (TCP RST via `socket.resetAndDestroy()`), no proper end.
 * - `'hang'`: nothing more is sent and the socket stays open until the client closes it or
 *   {@link MockUpstream.close}/{@link MockUpstream.reset} is called.
 */
export type CloseMode = 'end' | 'fin' | 'destroy' | 'hang';

/** A scripted response. */
export interface Script {
  /** HTTP status; the reason phrase is the standard one (or `Unknown`). */
  status: number;
  /** Response headers, in order, names sent exactly as written. Framing headers are added if absent. */
  headers?: Record<string, string> | Array<[string, string]>;
  /** Body writes, each one TCP write + flush. */
  writes?: Write[];
  /** See {@link CloseMode}. Default `'end'`. */
  close?: CloseMode;
  /** See {@link Framing}. Default: `'length'` if `headers` has `content-length`, else `'chunked'`. */
  framing?: Framing;
  /**
   * Milliseconds to wait before sending the status line and headers. `Infinity` means never answer:
   * M accepts the request and sends nothing at all until the client goes away (CASE-12 A).
   */
  headersAfter?: number;
}

// ---------------------------------------------------------------------------------------------------
// Recorded requests
// ---------------------------------------------------------------------------------------------------

/** One request as M received it. All times are `performance.now()` milliseconds. */
export interface RecordedRequest {
  /** 0-based index in {@link MockUpstream.requests} order (arrival order of complete requests). */
  readonly index: number;
  /** Id of the TCP connection it came on (1, 2, …, per mock); equal ids mean keep-alive reuse. */
  readonly connectionId: number;
  /** 0-based position of this request on its connection. */
  readonly indexOnConnection: number;
  readonly method: string;
  /** Request target as sent (path and query), e.g. `/v1/chat/completions`. */
  readonly path: string;
  /** The HTTP version token from the request line, e.g. `HTTP/1.1`. */
  readonly httpVersion: string;
  /** Every header line as received, in order, names with their original case, values trimmed. */
  readonly rawHeaders: Array<[string, string]>;
  /** Lower-case name → value; a name that appeared more than once maps to an array of its values. */
  readonly headers: Record<string, string | string[]>;
  /** Request line + header block + body bytes (chunk framing included), exactly as received. */
  readonly rawRequest: Buffer;
  /** The decoded body (chunk framing removed). */
  readonly body: Buffer;
  /** Time the first byte of this request arrived. */
  readonly firstByteAt: number;
  /** Time the request was complete (head and whole body received) and handed to the script. */
  readonly arrivedAt: number;
  /** Time the socket was closed or aborted (by either side), whether before or after the response. */
  closedAt?: number;
  /** Who closed the connection first: the peer (client/gateway: FIN, RST) or M itself. */
  closedBy?: 'peer' | 'mock';
  /** True when the socket closed before the script finished (always the case for `'hang'` scripts). */
  aborted: boolean;
  /** Time the script finished (its last write and close step), if it did. */
  scriptDoneAt?: number;
  /** The script that was (or is being) replayed. */
  script?: Script;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as JSON (throws on invalid JSON). */
  json(): unknown;
  /** All values of a header (case-insensitive), in order; `[]` when absent. */
  headerValues(name: string): string[];
}

/** Chooses the script for a request. Returning `undefined` makes M answer 404 (OpenAI error shape). */
export type Handler = (req: RecordedRequest) => Script | undefined | Promise<Script | undefined>;

/** Options of {@link startMockUpstream}. */
export interface MockUpstreamOptions {
  /** Initial handler (also restored by {@link MockUpstream.reset}). */
  handler?: Handler;
  /** Extra real delay in ms after each write's flush (default 0). Useful for out-of-process receivers. */
  flushMs?: number;
}

/** A running mock upstream. */
export interface MockUpstream {
  /** Base URL including `/v1`, e.g. `http://127.0.0.1:41234/v1`. */
  readonly url: string;
  /** `http://127.0.0.1:PORT` without a path. */
  readonly origin: string;
  readonly port: number;
  /** Every complete request received, in arrival order. Cleared by {@link reset}. */
  readonly requests: RecordedRequest[];
  /** Number of TCP connections accepted since start (or the last reset). */
  readonly connectionCount: number;
  /** Replaces the handler used when the queue is empty (`undefined` removes it). */
  setHandler(handler: Handler | undefined): void;
  /** Appends scripts to the FIFO queue; each request takes the next one before the handler is asked. */
  enqueue(...scripts: Script[]): void;
  /** Resolves with {@link requests} once at least `n` requests have arrived; rejects after `timeoutMs`. */
  waitForRequests(n: number, timeoutMs?: number): Promise<RecordedRequest[]>;
  /**
   * Resolves when `predicate()` becomes truthy; re-checked on every request, socket close and script
   * end. Rejects after `timeoutMs` (default 5000). E.g. `waitFor(() => mock.requests[0]?.closedAt)`.
   */
  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs?: number): Promise<T>;
  /**
   * Clears recorded requests and the queue, restores the handler given at start, and destroys every
   * connection that is still in the middle of a response (hanging or slow scripts). Idle keep-alive
   * connections are kept. Connection ids keep increasing; {@link connectionCount} restarts at 0.
   */
  reset(): void;
  /** Destroys every idle keep-alive connection (not those mid-response). */
  dropIdleConnections(): void;
  /** Stops listening and destroys all sockets, including hanging ones. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------------

/**
 * The case file's `CH(x)`: `{"id":"chatcmpl-T","object":"chat.completion.chunk","created":1700000000,"model":"mock-llm",` + x + `}`.
 */
export function CH(x: string): string {
  return '{"id":"chatcmpl-T","object":"chat.completion.chunk","created":1700000000,"model":"mock-llm",' + x + '}';
}

/** The case file's `EV(j)`: `data: ` + j + `\n\n`. */
export function EV(j: string): string {
  return 'data: ' + j + '\n\n';
}

/** The terminating event `data: [DONE]\n\n`. */
export const DONE = 'data: [DONE]\n\n';

/** One text write per string, in order (no delays). */
export function sse(events: string[]): Write[] {
  return events.map((text) => ({ text }));
}

/**
 * A 200 `text/event-stream` script. Strings become text writes; {@link Write} objects are kept as is.
 * `opts.headers` replace the default `content-type: text/event-stream` header list entirely.
 */
export function sseScript(
  writes: Array<Write | string>,
  opts: { status?: number; headers?: Script['headers']; close?: CloseMode; framing?: Framing; headersAfter?: number } = {},
): Script {
  const s: Script = {
    status: opts.status ?? 200,
    headers: opts.headers ?? [['content-type', 'text/event-stream']],
    writes: writes.map((w) => (typeof w === 'string' ? { text: w } : w)),
  };
  if (opts.close !== undefined) s.close = opts.close;
  if (opts.framing !== undefined) s.framing = opts.framing;
  if (opts.headersAfter !== undefined) s.headersAfter = opts.headersAfter;
  return s;
}

/**
 * A JSON response in one write with a computed `content-length` (`'length'` framing).
 * `body` is `JSON.stringify`-ed unless it is already a string (sent verbatim) or a Buffer.
 */
export function jsonResponse(status: number, body: unknown, headers: Array<[string, string]> = []): Script {
  const text = Buffer.isBuffer(body) ? body.toString('hex') : typeof body === 'string' ? body : JSON.stringify(body);
  return {
    status,
    headers: [['content-type', 'application/json'], ...headers],
    writes: [Buffer.isBuffer(body) ? { hex: text } : { text }],
    framing: 'length',
  };
}

/** An OpenAI-shaped error object `{"error":{message,type,param,code}}`. */
export function openaiError(message: string, type: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type, param, code } };
}

/** Options of {@link chatCompletion}. */
export interface ChatCompletionOptions {
  /** `choices[0].message.content`; default `"Hello from mock-llm."`. */
  content?: string;
  /** `choices[0].finish_reason`; default `"stop"`. */
  finishReason?: string;
  /** Response `model`; default `"mock-llm"`. */
  model?: string;
  /** Usage (total computed when omitted); default 9/4/13; `null` leaves `usage` out. */
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens?: number } | null;
}

/** A non-streaming `chat.completion` object (id `chatcmpl-T`, created 1700000000, model `mock-llm`). */
export function chatCompletion(opts: ChatCompletionOptions = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: 'chatcmpl-T',
    object: 'chat.completion',
    created: 1700000000,
    model: opts.model ?? 'mock-llm',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: opts.content ?? 'Hello from mock-llm.' },
        logprobs: null,
        finish_reason: opts.finishReason ?? 'stop',
      },
    ],
  };
  const u = opts.usage === undefined ? { prompt_tokens: 9, completion_tokens: 4 } : opts.usage;
  if (u !== null) out.usage = { ...u, total_tokens: u.total_tokens ?? u.prompt_tokens + u.completion_tokens };
  return out;
}

/** Decodes a hex string (whitespace and an optional `0x` prefix per byte group allowed). */
export function hexToBytes(hex: string): Buffer {
  const clean = hex.replace(/0x/gi, '').replace(/\s+/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new Error(`invalid hex in mock script: ${JSON.stringify(hex)}`);
  return Buffer.from(clean, 'hex');
}

/** The exact bytes of one write. */
export function writeBytes(w: Write): Buffer {
  if ('segments' in w) return Buffer.concat(w.segments.map((s) => ('hex' in s ? hexToBytes(s.hex) : Buffer.from(s.text, 'utf8'))));
  if ('hex' in w) return hexToBytes(w.hex);
  return Buffer.from(w.text, 'utf8');
}

/** The exact body bytes a script sends (all writes concatenated, framing excluded). */
export function scriptBody(script: Script): Buffer {
  return Buffer.concat((script.writes ?? []).map(writeBytes));
}

/** Delivery modes of the case file: (a) as scripted, (b) whole body in one write, (c) one byte per write. */
export type DeliveryMode = 'scripted' | 'one-write' | 'byte-per-write';

/** All three delivery modes, for `for (const mode of DELIVERY_MODES)` loops. */
export const DELIVERY_MODES: readonly DeliveryMode[] = ['scripted', 'one-write', 'byte-per-write'];

/**
 * Re-splits a script's body without changing its bytes.
 * - `'scripted'`: unchanged (a shallow copy).
 * - `'one-write'`: the whole body as one hex write, with no `after` delay.
 * - `'byte-per-write'`: every byte its own write; the `after` of each original write is kept on its
 *   first byte (an empty original write passes its delay on to the next byte).
 */
export function deliver(script: Script, mode: DeliveryMode): Script {
  const writes = script.writes ?? [];
  if (mode === 'scripted') return { ...script, writes: [...writes] };
  if (mode === 'one-write') {
    const body = scriptBody(script);
    return { ...script, writes: body.length ? [{ hex: body.toString('hex') }] : [] };
  }
  const out: Write[] = [];
  let pending = 0;
  for (const w of writes) {
    pending += w.after ?? 0;
    const bytes = writeBytes(w);
    for (let i = 0; i < bytes.length; i++) {
      const one: Write = { hex: bytes.subarray(i, i + 1).toString('hex') };
      if (i === 0 && pending > 0) one.after = pending;
      if (i === 0) pending = 0;
      out.push(one);
    }
  }
  if (pending > 0) out.push({ after: pending, hex: '' });
  return { ...script, writes: out };
}

// ---------------------------------------------------------------------------------------------------
// Ready-made handlers
// ---------------------------------------------------------------------------------------------------

/** Returns the first script any handler gives (handlers returning `undefined` pass the request on). */
export function chainHandlers(...handlers: Handler[]): Handler {
  return async (req) => {
    for (const h of handlers) {
      const s = await h(req);
      if (s !== undefined) return s;
    }
    return undefined;
  };
}

/** Strips the query string from a recorded path. */
function pathOnly(p: string): string {
  const q = p.indexOf('?');
  return q === -1 ? p : p.slice(0, q);
}

/** Answers `GET …/models` with an OpenAI model list of `ids` (default `['mock-llm']`); else `undefined`. */
export function modelsHandler(ids: string[] = ['mock-llm']): Handler {
  return (req) => {
    if (req.method !== 'GET' || !pathOnly(req.path).endsWith('/models')) return undefined;
    return jsonResponse(200, {
      object: 'list',
      data: ids.map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'mock' })),
    });
  };
}

/** Options of {@link ollamaEmulationHandler}. */
export interface OllamaEmulationOptions {
  /** Tokens generated when the model stops on its own (no usable cap). Default 400. */
  naturalTokens?: number;
  /** Reported `usage.prompt_tokens`. Default 10. */
  promptTokens?: number;
  /** Backstop variant of CASE-08: ignore `max_tokens` too and always generate `naturalTokens`. */
  ignoreMaxTokens?: boolean;
}

/**
 * CASE-08's Ollama emulation for `POST …/chat/completions`; other requests get `undefined` (so it can be
 * chained). It reads `body.max_tokens` and ignores `max_completion_tokens`, like Ollama's OpenAI endpoint:
 * with `max_tokens = N` (N < naturalTokens) it generates N tokens, `finish_reason: "length"` and
 * `usage.completion_tokens = N`; without it (or with N ≥ naturalTokens, when the model "finishes" first)
 * it generates `naturalTokens` (400) tokens with `finish_reason: "stop"`.
 * Token i (1-based) is the text `i` followed by a space except for the last one, e.g. `"1 2 3"`.
 * With `stream: true` it answers SSE: one chunk per token, a finish chunk, a usage chunk only if
 * `stream_options.include_usage` is true, then `[DONE]`. The response `model` echoes the request's.
 */
export function ollamaEmulationHandler(opts: OllamaEmulationOptions = {}): Handler {
  const natural = opts.naturalTokens ?? 400;
  const promptTokens = opts.promptTokens ?? 10;
  return (req) => {
    if (req.method !== 'POST' || !pathOnly(req.path).endsWith('/chat/completions')) return undefined;
    let body: Record<string, unknown>;
    try {
      body = req.json() as Record<string, unknown>;
    } catch {
      return jsonResponse(400, openaiError('invalid JSON body', 'invalid_request_error'));
    }
    const maxTokens = typeof body.max_tokens === 'number' && !opts.ignoreMaxTokens ? body.max_tokens : undefined;
    const capped = maxTokens !== undefined && maxTokens < natural;
    const n = capped ? Math.max(0, Math.floor(maxTokens)) : natural;
    const finish = capped ? 'length' : 'stop';
    const model = typeof body.model === 'string' ? body.model : 'mock-llm';
    const tokens = Array.from({ length: n }, (_, i) => String(i + 1) + (i < n - 1 ? ' ' : ''));
    const usage = { prompt_tokens: promptTokens, completion_tokens: n, total_tokens: promptTokens + n };
    if (body.stream !== true) {
      return jsonResponse(200, chatCompletion({ content: tokens.join(''), finishReason: finish, model, usage }));
    }
    const head = `{"id":"chatcmpl-T","object":"chat.completion.chunk","created":1700000000,"model":${JSON.stringify(model)},`;
    const chunk = (x: string) => EV(head + x + '}');
    const writes: string[] = tokens.map((t, i) =>
      chunk(`"choices":[{"index":0,"delta":{${i === 0 ? '"role":"assistant",' : ''}"content":${JSON.stringify(t)}},"finish_reason":null}]`),
    );
    writes.push(chunk(`"choices":[{"index":0,"delta":{},"finish_reason":"${finish}"}]`));
    const so = body.stream_options as { include_usage?: unknown } | undefined;
    if (so && so.include_usage === true) writes.push(chunk(`"choices":[],"usage":${JSON.stringify(usage)}`));
    writes.push(DONE);
    return sseScript(writes);
  };
}

// ---------------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------------

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');
const MAX_HEAD = 256 * 1024;

interface Conn {
  id: number;
  socket: net.Socket;
  buf: Buffer;
  busy: boolean;
  count: number;
  firstByteAt: number | undefined;
  closed: boolean;
  closedPromise: Promise<void>;
  /** One-shot callbacks run when the connection closes (used by sleeps, removed when they end). */
  closeListeners: Set<() => void>;
  markClosed: (by: 'peer' | 'mock') => void;
  requests: RecordedRequestImpl[];
  continueSent: boolean;
}

class RecordedRequestImpl implements RecordedRequest {
  closedAt?: number;
  closedBy?: 'peer' | 'mock';
  aborted = false;
  scriptDoneAt?: number;
  script?: Script;
  constructor(
    readonly index: number,
    readonly connectionId: number,
    readonly indexOnConnection: number,
    readonly method: string,
    readonly path: string,
    readonly httpVersion: string,
    readonly rawHeaders: Array<[string, string]>,
    readonly headers: Record<string, string | string[]>,
    readonly rawRequest: Buffer,
    readonly body: Buffer,
    readonly firstByteAt: number,
    readonly arrivedAt: number,
  ) {}
  text(): string {
    return this.body.toString('utf8');
  }
  json(): unknown {
    return JSON.parse(this.text());
  }
  headerValues(name: string): string[] {
    const n = name.toLowerCase();
    return this.rawHeaders.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  }
}

interface ParsedRequest {
  method: string;
  path: string;
  httpVersion: string;
  rawHeaders: Array<[string, string]>;
  raw: Buffer;
  body: Buffer;
  consumed: number;
}

class ProtocolError extends Error {}

/**
 * Tries to parse one complete request from the start of `buf`. Returns `undefined` if more bytes are
 * needed; `{ headOnly }` when the head is complete but the body is not (for `Expect: 100-continue`).
 */
function parseRequest(buf: Buffer): ParsedRequest | { needBody: true; rawHeaders: Array<[string, string]> } | undefined {
  // Tolerate stray CRLFs between requests (RFC 9112 §2.2).
  let start = 0;
  while (buf.length >= start + 2 && buf[start] === 0x0d && buf[start + 1] === 0x0a) start += 2;
  const headEnd = buf.indexOf(HEAD_END, start);
  if (headEnd === -1) {
    if (buf.length - start > MAX_HEAD) throw new ProtocolError('request head too large');
    return undefined;
  }
  const lines = buf.subarray(start, headEnd).toString('latin1').split('\r\n');
  const requestLine = lines.shift() ?? '';
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) (HTTP\/\d\.\d)$/.exec(requestLine);
  if (!m) throw new ProtocolError(`bad request line ${JSON.stringify(requestLine)}`);
  const rawHeaders: Array<[string, string]> = [];
  for (const line of lines) {
    const c = line.indexOf(':');
    if (c <= 0) throw new ProtocolError(`bad header line ${JSON.stringify(line)}`);
    // Header values are decoded as latin1 (byte-preserving); re-encode UTF-8 where it round-trips.
    const name = line.slice(0, c);
    const rawValue = line.slice(c + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    const asUtf8 = Buffer.from(rawValue, 'latin1').toString('utf8');
    rawHeaders.push([name, Buffer.from(asUtf8, 'utf8').equals(Buffer.from(rawValue, 'latin1')) ? asUtf8 : rawValue]);
  }
  const values = (n: string) => rawHeaders.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  const te = values('transfer-encoding').join(',').toLowerCase();
  let pos = headEnd + 4;
  let body: Buffer;
  if (/(^|,)\s*chunked\s*$/.test(te)) {
    const parts: Buffer[] = [];
    for (;;) {
      const lineEnd = buf.indexOf(CRLF, pos);
      if (lineEnd === -1) return { needBody: true, rawHeaders };
      const sizeText = buf.subarray(pos, lineEnd).toString('latin1').split(';')[0]!.trim();
      if (!/^[0-9a-fA-F]+$/.test(sizeText)) throw new ProtocolError(`bad chunk size ${JSON.stringify(sizeText)}`);
      const size = parseInt(sizeText, 16);
      pos = lineEnd + 2;
      if (size === 0) {
        // Trailer section: header lines until an empty line.
        for (;;) {
          const tEnd = buf.indexOf(CRLF, pos);
          if (tEnd === -1) return { needBody: true, rawHeaders };
          const empty = tEnd === pos;
          pos = tEnd + 2;
          if (empty) break;
        }
        break;
      }
      if (buf.length < pos + size + 2) return { needBody: true, rawHeaders };
      parts.push(buf.subarray(pos, pos + size));
      pos += size;
      if (buf[pos] !== 0x0d || buf[pos + 1] !== 0x0a) throw new ProtocolError('chunk data not followed by CRLF');
      pos += 2;
    }
    body = Buffer.concat(parts);
  } else {
    const cl = values('content-length');
    let len = 0;
    if (cl.length) {
      const distinct = new Set(cl.flatMap((v) => v.split(',').map((x) => x.trim())));
      if (distinct.size !== 1) throw new ProtocolError(`conflicting content-length ${JSON.stringify(cl)}`);
      const v = [...distinct][0]!;
      if (!/^\d+$/.test(v)) throw new ProtocolError(`bad content-length ${JSON.stringify(v)}`);
      len = Number(v);
    }
    if (buf.length < pos + len) return { needBody: true, rawHeaders };
    body = Buffer.from(buf.subarray(pos, pos + len));
    pos += len;
  }
  return {
    method: m[1]!,
    path: m[2]!,
    httpVersion: m[3]!,
    rawHeaders,
    raw: Buffer.from(buf.subarray(start, pos)),
    body: Buffer.from(body),
    consumed: pos,
  };
}

function headersRecord(raw: Array<[string, string]>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of raw) {
    const n = k.toLowerCase();
    const prev = out[n];
    if (prev === undefined) out[n] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[n] = [prev, v];
  }
  return out;
}

function headerPairs(h: Script['headers']): Array<[string, string]> {
  if (!h) return [];
  return Array.isArray(h) ? h.map(([k, v]) => [k, v] as [string, string]) : Object.entries(h);
}

function errorScript(status: number, message: string, type: string): Script {
  return jsonResponse(status, openaiError(message, type));
}

/**
 * Starts M on 127.0.0.1 with an ephemeral port. See the module documentation for framing and timing.
 * Requests are answered in order per connection; with no queued script and no handler M answers 500
 * (`type: "mock_no_script"`), a handler returning `undefined` gives 404 (`type: "mock_not_found"`), a
 * handler that throws gives 500 (`type: "mock_handler_error"`), and an unparseable request gives 400
 * followed by closing the connection.
 */
export async function startMockUpstream(opts: MockUpstreamOptions = {}): Promise<MockUpstream> {
  const flushMs = opts.flushMs ?? 0;
  const requests: RecordedRequestImpl[] = [];
  const queue: Script[] = [];
  let handler: Handler | undefined = opts.handler;
  const conns = new Set<Conn>();
  let nextConnId = 1;
  let connectionCount = 0;
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const sleep = (conn: Conn, ms: number): Promise<void> => {
    if (!(ms > 0)) return Promise.resolve();
    if (ms === Infinity) return conn.closedPromise;
    if (conn.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const onClose = () => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        conn.closeListeners.delete(onClose);
        resolve();
      }, ms);
      conn.closeListeners.add(onClose);
    });
  };

  const writeFlush = (conn: Conn, data: Buffer): Promise<void> =>
    new Promise((resolve) => {
      if (conn.closed || conn.socket.destroyed || !conn.socket.writable) return resolve();
      // The callback also runs (with an error) if the socket is destroyed while the write is pending;
      // the close listener is a second guarantee that a write never blocks a closed connection.
      conn.closeListeners.add(resolve);
      conn.socket.write(data, () => {
        conn.closeListeners.delete(resolve);
        setImmediate(() =>
          setImmediate(() => {
            if (flushMs > 0 && !conn.closed) setTimeout(resolve, flushMs);
            else resolve();
          }),
        );
      });
    });

  const chooseScript = async (req: RecordedRequestImpl): Promise<Script> => {
    const queued = queue.shift();
    if (queued) return queued;
    if (!handler) return errorScript(500, `mock upstream: no script for ${req.method} ${req.path}`, 'mock_no_script');
    try {
      const s = await handler(req);
      return s ?? errorScript(404, `mock upstream: no route for ${req.method} ${req.path}`, 'mock_not_found');
    } catch (e) {
      return errorScript(500, `mock upstream handler threw: ${(e as Error)?.message ?? String(e)}`, 'mock_handler_error');
    }
  };

  const respond = async (conn: Conn, req: RecordedRequestImpl, script: Script): Promise<void> => {
    req.script = script;
    const writes = script.writes ?? [];
    const pairs = headerPairs(script.headers);
    const has = (n: string) => pairs.some(([k]) => k.toLowerCase() === n);
    const framing: Framing = script.framing ?? (has('content-length') ? 'length' : 'chunked');
    const closeMode: CloseMode = script.close ?? 'end';
    const reqConnClose = req
      .headerValues('connection')
      .some((v) => v.split(',').some((t) => t.trim().toLowerCase() === 'close'));
    const scriptConnClose = pairs.some(([k, v]) => k.toLowerCase() === 'connection' && /(^|,)\s*close\s*(,|$)/i.test(v));

    await sleep(conn, script.headersAfter ?? 0);
    if (conn.closed) return;

    const bodies = writes.map(writeBytes);
    const head: Array<[string, string]> = [...pairs];
    if (framing === 'chunked' && !has('transfer-encoding')) head.push(['transfer-encoding', 'chunked']);
    if (framing === 'length' && !has('content-length')) head.push(['content-length', String(bodies.reduce((a, b) => a + b.length, 0))]);
    if (framing === 'close' && !has('connection')) head.push(['connection', 'close']);
    const reason = STATUS_CODES[script.status] ?? 'Unknown';
    const headText = `HTTP/1.1 ${script.status} ${reason}\r\n` + head.map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';

    // Steps: the head, each non-empty body write (framed), then the chunked terminator when ending properly.
    const steps: Array<{ after: number; data: Buffer | undefined }> = [{ after: 0, data: Buffer.from(headText, 'utf8') }];
    for (let i = 0; i < writes.length; i++) {
      const bytes = bodies[i]!;
      const data =
        bytes.length === 0
          ? undefined
          : framing === 'chunked'
            ? Buffer.concat([Buffer.from(bytes.length.toString(16) + '\r\n'), bytes, CRLF])
            : bytes;
      steps.push({ after: writes[i]!.after ?? 0, data });
    }
    if (closeMode === 'end' && framing === 'chunked') steps.push({ after: 0, data: Buffer.from('0\r\n\r\n') });
    // The script counts as done the moment its last bytes are handed to the socket (before the flush
    // wait), so a client that closes as soon as it has everything is not recorded as an abort.
    const markDone = () => {
      if (closeMode !== 'hang' && req.scriptDoneAt === undefined) req.scriptDoneAt = performance.now();
    };
    for (let i = 0; i < steps.length; i++) {
      const st = steps[i]!;
      await sleep(conn, st.after);
      if (conn.closed) return;
      if (i === steps.length - 1) markDone();
      if (st.data) await writeFlush(conn, st.data);
      if (conn.closed) return;
    }

    if (closeMode === 'hang') {
      await conn.closedPromise;
      return;
    }
    markDone();
    if (closeMode === 'destroy') {
      conn.markClosed('mock');
      conn.socket.resetAndDestroy();
    } else if (closeMode === 'fin' || framing === 'close' || reqConnClose || scriptConnClose || req.httpVersion === 'HTTP/1.0') {
      conn.markClosed('mock');
      conn.socket.end();
    }
    notify();
  };

  const pump = (conn: Conn): void => {
    if (conn.busy || conn.closed) return;
    let parsed: ReturnType<typeof parseRequest>;
    try {
      parsed = parseRequest(conn.buf);
    } catch (e) {
      conn.busy = true;
      const msg = e instanceof ProtocolError ? e.message : String(e);
      const s = errorScript(400, `mock upstream: malformed request: ${msg}`, 'mock_bad_request');
      const text = scriptBody(s);
      conn.socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${text.length}\r\nconnection: close\r\n\r\n${text.toString()}`);
      conn.markClosed('mock');
      return;
    }
    if (!parsed) return;
    if ('needBody' in parsed) {
      const expect = parsed.rawHeaders.some(([k, v]) => k.toLowerCase() === 'expect' && v.toLowerCase() === '100-continue');
      if (expect && !conn.continueSent) {
        conn.continueSent = true;
        conn.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
      }
      return;
    }
    conn.continueSent = false;
    conn.buf = conn.buf.subarray(parsed.consumed);
    const now = performance.now();
    const req = new RecordedRequestImpl(
      requests.length,
      conn.id,
      conn.count++,
      parsed.method,
      parsed.path,
      parsed.httpVersion,
      parsed.rawHeaders,
      headersRecord(parsed.rawHeaders),
      parsed.raw,
      parsed.body,
      conn.firstByteAt ?? now,
      now,
    );
    conn.firstByteAt = conn.buf.length ? now : undefined;
    requests.push(req);
    conn.requests.push(req);
    conn.busy = true;
    notify();
    void (async () => {
      try {
        const script = await chooseScript(req);
        await respond(conn, req, script);
      } catch {
        if (!conn.closed) conn.socket.destroy();
      } finally {
        conn.busy = false;
        if (!conn.closed) setImmediate(() => pump(conn));
      }
    })();
  };

  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.setNoDelay(true);
    let resolveClosed!: () => void;
    const conn: Conn = {
      id: nextConnId++,
      socket,
      buf: Buffer.alloc(0),
      busy: false,
      count: 0,
      firstByteAt: undefined,
      closed: false,
      closedPromise: new Promise<void>((r) => (resolveClosed = r)),
      closeListeners: new Set(),
      markClosed: (by) => {
        if (conn.closed) return;
        conn.closed = true;
        const at = performance.now();
        for (const r of conn.requests) {
          if (r.closedAt === undefined) {
            r.closedAt = at;
            r.closedBy = by;
          }
          if (r.scriptDoneAt === undefined) r.aborted = true;
        }
        resolveClosed();
        for (const l of conn.closeListeners) l();
        conn.closeListeners.clear();
        notify();
      },
      requests: [],
      continueSent: false,
    };
    conns.add(conn);
    connectionCount++;
    socket.on('data', (d: Buffer) => {
      if (conn.firstByteAt === undefined) conn.firstByteAt = performance.now();
      conn.buf = conn.buf.length ? Buffer.concat([conn.buf, d]) : d;
      pump(conn);
    });
    socket.on('end', () => conn.markClosed('peer'));
    socket.on('error', () => conn.markClosed('peer'));
    socket.on('close', () => {
      conn.markClosed('peer');
      conns.delete(conn);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;

  const waitFor = <T>(predicate: () => T | undefined | null | false, timeoutMs = 5000): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = () => {
        let v: T | undefined | null | false;
        try {
          v = predicate();
        } catch (e) {
          cleanup();
          reject(e as Error);
          return;
        }
        if (v) {
          cleanup();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`mock upstream: waitFor timed out after ${timeoutMs} ms (${requests.length} requests recorded)`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  const mock: MockUpstream = {
    url: `${origin}/v1`,
    origin,
    port,
    requests,
    get connectionCount() {
      return connectionCount;
    },
    setHandler(h) {
      handler = h;
    },
    enqueue(...scripts) {
      queue.push(...scripts);
    },
    async waitForRequests(n, timeoutMs = 5000) {
      try {
        await waitFor(() => requests.length >= n, timeoutMs);
      } catch {
        throw new Error(`mock upstream: expected ${n} request(s) within ${timeoutMs} ms, got ${requests.length}`);
      }
      return requests;
    },
    waitFor,
    reset() {
      requests.length = 0;
      queue.length = 0;
      handler = opts.handler;
      connectionCount = 0;
      for (const c of conns) {
        if (c.busy) {
          c.markClosed('mock');
          c.socket.destroy();
        }
      }
    },
    dropIdleConnections() {
      for (const c of conns) {
        if (!c.busy) {
          c.markClosed('mock');
          c.socket.destroy();
        }
      }
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of conns) {
          c.markClosed('mock');
          c.socket.destroy();
        }
        waiters.clear();
      });
    },
  };
  return mock;
}
