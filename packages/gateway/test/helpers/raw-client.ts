/**
 * The raw recording client of `/work/shared/cases/gateway-conformance.md`: sends one HTTP/1.1 request
 * with `node:http` (`agent: false`, a fresh socket each time), keeps every byte of the response body
 * with the arrival time of each chunk, can abort (destroy the socket) after a delay or after N SSE
 * events, and parses the body with its own WHATWG-compliant SSE parser (independent of the gateway's).
 *
 * All timestamps are `performance.now()` milliseconds, the same clock as `mock-upstream.ts`.
 *
 * The returned promise always resolves (it never rejects for network errors or aborts): check
 * `error`, `complete` and `aborted`.
 */
import http from 'node:http';

// ---------------------------------------------------------------------------------------------------
// SSE parser (WHATWG HTML "event stream interpretation")
// ---------------------------------------------------------------------------------------------------

/** One dispatched SSE event. */
export interface RawSseEvent {
  /** The `event:` field, or undefined for the default type (`message`). */
  event?: string;
  /** The data buffer: all `data:` lines of the event joined with `\n`. */
  data: string;
  /**
   * The last-event-ID buffer at dispatch time (it persists across events, as in the spec), or
   * undefined when it is empty.
   */
  id?: string;
}

/** Everything the parser saw. */
export interface SseParseResult {
  events: RawSseEvent[];
  /** Comment lines without the leading `:` (the text after it is kept verbatim, leading space included). */
  comments: string[];
  /** The last valid `retry:` value, if any. */
  retry?: number;
}

/**
 * An incremental WHATWG event-stream parser. Bytes may be split anywhere (inside UTF-8 sequences, between
 * CR and LF). Line ends are CRLF, LF or CR; a leading UTF-8 BOM is dropped; `field:value` with one
 * optional space after the colon; `data` lines are joined with `\n`; an event is dispatched at a blank
 * line only if its data buffer is non-empty; fields other than data/event/id/retry are ignored; an `id`
 * containing NUL is ignored; at end of stream an unterminated event is discarded (per spec).
 */
export class SseParser {
  /** Events dispatched so far. */
  readonly events: RawSseEvent[] = [];
  /** Comments seen so far. */
  readonly comments: string[] = [];
  /** The last valid `retry:` value. */
  retry: number | undefined;
  private readonly decoder = new TextDecoder('utf-8', { ignoreBOM: false });
  private pending = '';
  private data = '';
  private hasData = false;
  private eventType = '';
  private lastId = '';

  /** Feeds bytes; returns the events dispatched by this call. */
  feed(bytes: Uint8Array | string): RawSseEvent[] {
    const text = typeof bytes === 'string' ? bytes : this.decoder.decode(bytes, { stream: true });
    return this.process(text, false);
  }

  /** Ends the stream (flushes the decoder and a final CR); returns any events dispatched by it. */
  end(): RawSseEvent[] {
    return this.process(this.decoder.decode(), true);
  }

  private process(text: string, final: boolean): RawSseEvent[] {
    const out: RawSseEvent[] = [];
    const s = this.pending + text;
    let start = 0;
    let i = 0;
    while (i < s.length) {
      const ch = s.charCodeAt(i);
      if (ch === 0x0a) {
        this.line(s.slice(start, i), out);
        start = i + 1;
      } else if (ch === 0x0d) {
        if (i + 1 < s.length) {
          this.line(s.slice(start, i), out);
          start = s.charCodeAt(i + 1) === 0x0a ? i + 2 : i + 1;
          i = start - 1;
        } else if (final) {
          this.line(s.slice(start, i), out);
          start = i + 1;
        } else {
          break; // a CR at the end of the input: wait to see whether an LF follows
        }
      }
      i++;
    }
    this.pending = s.slice(start);
    if (final) this.pending = ''; // an unterminated last line is dropped, like its unterminated event
    return out;
  }

  private line(line: string, out: RawSseEvent[]): void {
    if (line === '') {
      if (this.hasData) {
        const ev: RawSseEvent = { data: this.data };
        if (this.eventType !== '') ev.event = this.eventType;
        if (this.lastId !== '') ev.id = this.lastId;
        this.events.push(ev);
        out.push(ev);
      }
      this.data = '';
      this.hasData = false;
      this.eventType = '';
      return;
    }
    if (line.charCodeAt(0) === 0x3a) {
      this.comments.push(line.slice(1));
      return;
    }
    const c = line.indexOf(':');
    const field = c === -1 ? line : line.slice(0, c);
    let value = c === -1 ? '' : line.slice(c + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data = this.hasData ? this.data + '\n' + value : value;
        this.hasData = true;
        break;
      case 'event':
        this.eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
  }
}

/** Parses a whole event stream (bytes or text) with {@link SseParser}. */
export function parseSse(body: Uint8Array | string): SseParseResult {
  const p = new SseParser();
  p.feed(body);
  p.end();
  const r: SseParseResult = { events: p.events, comments: p.comments };
  if (p.retry !== undefined) r.retry = p.retry;
  return r;
}

/**
 * The `data` of each event parsed as JSON, with the literal `[DONE]` kept as the string `'[DONE]'`.
 * Throws (naming the event) when a payload is not JSON.
 */
export function eventPayloads(events: RawSseEvent[]): unknown[] {
  return events.map((e, i) => {
    if (e.data === '[DONE]') return '[DONE]';
    try {
      return JSON.parse(e.data) as unknown;
    } catch {
      throw new Error(`SSE event #${i} is not JSON: ${JSON.stringify(e.data)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------------

/** Options of {@link rawRequest}. */
export interface RawRequestOptions {
  /** Default `POST` when a body is given, else `GET`. */
  method?: string;
  /**
   * Headers, sent in this order with this exact case. Pairs may repeat a name to send duplicates.
   * `Host` and `Content-Length` are added (at the end) when absent, unless `autoHeaders` is false;
   * Content-Length is not added when a `Transfer-Encoding` header is given.
   */
  headers?: Array<[string, string]> | Record<string, string | string[]>;
  /** Request body, sent in one write. */
  body?: string | Buffer;
  /** Convenience: JSON-encodes this as the body and adds `content-type: application/json` if absent. */
  json?: unknown;
  /** Add `Host`/`Content-Length` when missing (default true). Node adds no headers of its own here. */
  autoHeaders?: boolean;
  /** Destroy the socket this many ms after the request was sent. */
  abortAfterMs?: number;
  /** Destroy the socket once this many SSE events have been dispatched (counted incrementally). */
  abortAfterEvents?: number;
  /** Called for each body chunk as it arrives. */
  onChunk?: (bytes: Buffer, at: number) => void;
  /**
   * Safety net: destroy the socket and record an `error` after this many ms (default 30000).
   * 0 disables it.
   */
  timeoutMs?: number;
}

/** One received body chunk (one `data` callback of the response). */
export interface RawChunk {
  at: number;
  bytes: Buffer;
}

/** What {@link rawRequest} observed. */
export interface RawResponse {
  /** HTTP status, or 0 when no response head arrived. */
  status: number;
  statusMessage: string;
  /** Lower-cased headers as Node joins them (`set-cookie` array; duplicates otherwise comma-joined). */
  headers: http.IncomingHttpHeaders;
  /** Response header lines in order, original case. */
  rawHeaders: Array<[string, string]>;
  /** The whole body as received (transfer-decoding done by Node, no content decoding). */
  body: Buffer;
  /** Each body chunk with its arrival time. */
  chunks: RawChunk[];
  /** Events of a WHATWG parse of the whole body (may include events after an `abortAfterEvents` cut). */
  events: RawSseEvent[];
  /** Comment lines found by the same parse. */
  comments: string[];
  /** True when this client destroyed the socket (abortAfterMs / abortAfterEvents / timeout). */
  aborted: boolean;
  /** When this client destroyed the socket. */
  abortedAt?: number;
  /** When the request was handed to the socket layer. */
  startedAt: number;
  /** When the response head arrived. */
  headersAt?: number;
  /** When the exchange finished (end, error or abort). */
  endedAt: number;
  /** True when the response body ended properly (framing complete). */
  complete: boolean;
  /** A network or protocol error, if one happened (not set for our own aborts, except the timeout). */
  error?: Error;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as JSON (throws on invalid JSON). */
  json(): unknown;
}

function toPairs(h: RawRequestOptions['headers']): Array<[string, string]> {
  if (!h) return [];
  if (Array.isArray(h)) return h.map(([k, v]) => [k, v] as [string, string]);
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(h)) {
    if (Array.isArray(v)) for (const x of v) out.push([k, x]);
    else out.push([k, v]);
  }
  return out;
}

/**
 * Sends one request and records the response. See the module documentation; the promise resolves in
 * every case (inspect `error`/`complete`/`aborted`).
 */
export function rawRequest(url: string | URL, opts: RawRequestOptions = {}): Promise<RawResponse> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const pairs = toPairs(opts.headers);
  const has = (n: string) => pairs.some(([k]) => k.toLowerCase() === n);
  let body: Buffer | undefined;
  if (opts.json !== undefined) {
    body = Buffer.from(JSON.stringify(opts.json), 'utf8');
    if (!has('content-type')) pairs.push(['content-type', 'application/json']);
  } else if (opts.body !== undefined) {
    body = Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body, 'utf8');
  }
  const method = opts.method ?? (body ? 'POST' : 'GET');
  if (opts.autoHeaders !== false) {
    if (!has('host')) pairs.push(['Host', u.host]);
    if (body && !has('content-length') && !has('transfer-encoding')) pairs.push(['Content-Length', String(body.length)]);
  }

  return new Promise<RawResponse>((resolve) => {
    const chunks: RawChunk[] = [];
    const parser = new SseParser();
    let status = 0;
    let statusMessage = '';
    let headers: http.IncomingHttpHeaders = {};
    let rawHeaders: Array<[string, string]> = [];
    let headersAt: number | undefined;
    let aborted = false;
    let abortedAt: number | undefined;
    let complete = false;
    let error: Error | undefined;
    let done = false;
    const timers: NodeJS.Timeout[] = [];

    const req = http.request({
      protocol: u.protocol,
      hostname: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method,
      agent: false,
      headers: pairs.flat(),
    });
    const startedAt = performance.now();

    const finish = () => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      req.socket?.destroy(); // agent:false + a client `Connection: keep-alive` would otherwise leave it open
      const bodyBuf = Buffer.concat(chunks.map((c) => c.bytes));
      const parsed = parseSse(bodyBuf);
      const r: RawResponse = {
        status,
        statusMessage,
        headers,
        rawHeaders,
        body: bodyBuf,
        chunks,
        events: parsed.events,
        comments: parsed.comments,
        aborted,
        startedAt,
        endedAt: performance.now(),
        complete,
        text: () => bodyBuf.toString('utf8'),
        json: () => JSON.parse(bodyBuf.toString('utf8')) as unknown,
      };
      if (abortedAt !== undefined) r.abortedAt = abortedAt;
      if (headersAt !== undefined) r.headersAt = headersAt;
      if (error) r.error = error;
      resolve(r);
    };

    const abort = (why?: Error) => {
      if (done || aborted || complete) return;
      aborted = true;
      abortedAt = performance.now();
      if (why) error = why;
      if (req.socket) req.socket.destroy();
      req.destroy();
      // 'close' events follow; finish() runs from them, or here as a fallback.
      setImmediate(finish);
    };

    if (opts.abortAfterMs !== undefined) timers.push(setTimeout(() => abort(), opts.abortAfterMs));
    const timeoutMs = opts.timeoutMs ?? 30000;
    if (timeoutMs > 0) timers.push(setTimeout(() => abort(new Error(`raw-client: no end after ${timeoutMs} ms`)), timeoutMs));

    req.on('socket', (s) => s.setNoDelay(true));
    req.on('error', (e) => {
      if (!aborted && !error) error = e;
      setImmediate(finish);
    });
    req.on('close', () => {
      if (status === 0) setImmediate(finish);
    });
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      statusMessage = res.statusMessage ?? '';
      headers = res.headers;
      rawHeaders = [];
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) rawHeaders.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!]);
      headersAt = performance.now();
      res.on('data', (d: Buffer) => {
        if (aborted) return;
        const at = performance.now();
        chunks.push({ at, bytes: d });
        opts.onChunk?.(d, at);
        if (opts.abortAfterEvents !== undefined) {
          parser.feed(d);
          if (parser.events.length >= opts.abortAfterEvents) abort();
        }
      });
      res.on('end', () => {
        if (!aborted && res.complete) complete = true;
      });
      res.on('error', (e) => {
        if (!aborted && !error) error = e;
      });
      res.on('close', () => setImmediate(finish));
    });

    if (body) req.end(body);
    else req.end();
  });
}
