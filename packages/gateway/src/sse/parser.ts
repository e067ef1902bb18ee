/**
 * Incremental Server-Sent Events parser.
 *
 * Implements the WHATWG HTML "event stream interpretation" algorithm
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
 * over raw bytes that arrive in arbitrary chunks:
 *
 * - bytes are decoded with one streaming UTF-8 `TextDecoder` (`{ stream: true }`), so multi-byte
 *   characters split between chunks are reassembled; invalid sequences become U+FFFD;
 * - one leading U+FEFF BYTE ORDER MARK is stripped, once per stream;
 * - lines end in CRLF, LF or a bare CR; a CR that ends one chunk and an LF that starts the next one
 *   form a single CRLF line ending;
 * - `field:value` lines split on the first ":", and one U+0020 SPACE after the colon is dropped;
 *   a line without a colon is a field with an empty value;
 * - `data` values are joined with "\n"; an event is dispatched at a blank line only if at least one
 *   `data` line was seen (so `id: 1\n\n` or `retry: 10\n\n` dispatch nothing);
 * - `event` sets the type of the event being built (reset after each blank line);
 * - `id` values containing U+0000 NULL are ignored; `retry` is honoured only when all ASCII digits;
 * - other fields are ignored; lines starting with ":" are comments, returned as they end;
 * - at end of input, an incomplete event (no final blank line) and an unterminated line are
 *   discarded, as the specification requires.
 *
 * Deliberate differences from an `EventSource` (which has no wire-level consumer to serve):
 * - `SseEvent.id` is the `id` field seen *within that event* (undefined if none), so that events can
 *   be re-framed faithfully; the spec's sticky "last event ID" is available as {@link SseParser.lastEventId}.
 * - an empty `event:` value is reported as `undefined`, exactly like an absent one (both mean "message").
 *
 * Hot path: each chunk is decoded once, line terminators are located with `indexOf` over the decoded
 * string (both searches cached, so scanning stays linear), fields are recognised with `startsWith`
 * at an offset without slicing the line, and only field values are sliced. A line that straddles a
 * chunk boundary is kept as a pending remainder and joined once when its terminator arrives.
 */
import type { SseComment, SseEvent, SseItem } from './types.ts';

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
const BOM = 0xfeff;

/** Matches a non-empty string of ASCII digits (the only valid `retry` value). */
const DIGITS = /^[0-9]+$/;

/** Thrown by {@link SseParser.push} when one event (or one line) grows beyond the configured limit. */
export class SseLimitError extends Error {
  override readonly name = 'SseLimitError';
  constructor(readonly limit: number) {
    super(`an SSE event exceeded ${limit} characters`);
  }
}

/** Options of {@link SseParser}. */
export interface SseParserOptions {
  /**
   * Largest event (its pending line plus its joined data), in UTF-16 characters (≈ bytes for the
   * JSON that OpenAI-style streams carry). Default 16 Mi. Exceeding it throws {@link SseLimitError},
   * so a hostile upstream cannot make the gateway buffer without bound.
   */
  maxEventChars?: number;
}

/** Default {@link SseParserOptions.maxEventChars}: 16 Mi characters. */
export const DEFAULT_MAX_EVENT_CHARS = 16 * 1024 * 1024;

export class SseParser {
  private readonly maxEventChars: number;

  constructor(opts: SseParserOptions = {}) {
    this.maxEventChars = opts.maxEventChars ?? DEFAULT_MAX_EVENT_CHARS;
  }

  /** Streaming UTF-8 decoder; the BOM is handled by hand so the behaviour does not depend on the runtime. */
  private decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  /** True until the first decoded character of the stream has been seen (BOM check pending). */
  private atStreamStart = true;
  /** Text of the current line received so far, when the line straddles chunk boundaries. */
  private pending = '';
  /** The previous chunk ended with CR: an LF at the start of the next text belongs to that CR. */
  private pendingCR = false;

  /** Data buffer of the event being built (without the spec's trailing "\n"). */
  private data = '';
  /** Whether at least one `data` line was seen (the spec's "data buffer is not empty"). */
  private hasData = false;
  /** Event type buffer of the event being built; undefined when absent or empty. */
  private eventType: string | undefined = undefined;
  /** `id` field seen in the event being built. */
  private eventId: string | undefined = undefined;
  /** The spec's "last event ID buffer": updated by every valid `id` field, never reset. */
  private lastIdBuffer = '';
  private lastIdString = '';
  private retryMs: number | undefined = undefined;

  /**
   * The spec's "last event ID string": the value of the most recent valid `id` field, committed at
   * each blank line (whether or not an event was dispatched). Persists across events and across
   * {@link end}, as it would across `EventSource` reconnections. Empty string when never set.
   */
  get lastEventId(): string {
    return this.lastIdString;
  }

  /** The last valid `retry` field (reconnection time, in milliseconds), or undefined if none was seen. */
  get retry(): number | undefined {
    return this.retryMs;
  }

  /**
   * Feeds the next raw bytes of the stream.
   * @throws SseLimitError when the event being built exceeds the configured limit
   * @returns the items (events and comments, in stream order) completed by this chunk; often empty.
   */
  push(chunk: Uint8Array): SseItem[] {
    const out: SseItem[] = [];
    this.feed(this.decoder.decode(chunk, { stream: true }), out);
    if (this.pending.length + this.data.length > this.maxEventChars) throw new SseLimitError(this.maxEventChars);
    return out;
  }

  /**
   * Signals the end of the input. Per the specification, an incomplete event (no terminating blank
   * line) and an unterminated last line are discarded, never dispatched; comments are returned by
   * {@link push} as soon as their line ends, so nothing terminated is ever left over. Trailing bytes
   * of an incomplete UTF-8 sequence are flushed (as U+FFFD) into the discarded remainder.
   *
   * Afterwards the parser is reset and may parse a new stream (BOM check included); only
   * {@link lastEventId} and {@link retry} are kept.
   * @returns the items completed by the end of input (always empty for a conforming stream, kept for symmetry).
   */
  end(): SseItem[] {
    const out: SseItem[] = [];
    this.feed(this.decoder.decode(), out);
    this.atStreamStart = true;
    this.pending = '';
    this.pendingCR = false;
    this.data = '';
    this.hasData = false;
    this.eventType = undefined;
    this.eventId = undefined;
    return out;
  }

  /** Splits decoded text into lines, processing each complete one and keeping the remainder pending. */
  private feed(text: string, out: SseItem[]): void {
    const len = text.length;
    if (len === 0) return;
    let pos = 0;
    if (this.atStreamStart) {
      this.atStreamStart = false;
      if (text.charCodeAt(0) === BOM) pos = 1;
    }
    if (this.pendingCR) {
      this.pendingCR = false;
      if (text.charCodeAt(pos) === LF) pos++;
    }
    // Positions of the next LF / CR at or after `pos`; -1 once none remain (never searched again).
    let nextLF = text.indexOf('\n', pos);
    let nextCR = text.indexOf('\r', pos);
    for (;;) {
      if (nextLF !== -1 && nextLF < pos) nextLF = text.indexOf('\n', pos);
      if (nextCR !== -1 && nextCR < pos) nextCR = text.indexOf('\r', pos);
      let eol: number;
      if (nextLF === -1) {
        if (nextCR === -1) break;
        eol = nextCR;
      } else {
        eol = nextCR === -1 || nextLF < nextCR ? nextLF : nextCR;
      }
      if (this.pending.length !== 0) {
        const line = this.pending + text.slice(pos, eol);
        this.pending = '';
        this.line(line, 0, line.length, out);
      } else {
        this.line(text, pos, eol, out);
      }
      if (eol === nextCR) {
        if (eol + 1 < len) {
          pos = text.charCodeAt(eol + 1) === LF ? eol + 2 : eol + 1;
        } else {
          pos = len;
          this.pendingCR = true;
        }
      } else {
        pos = eol + 1;
      }
    }
    if (pos < len) this.pending = this.pending.length === 0 ? text.slice(pos) : this.pending + text.slice(pos);
  }

  /** Processes the line `s[start, end)` (without its terminator). */
  private line(s: string, start: number, end: number, out: SseItem[]): void {
    if (start === end) {
      this.dispatch(out);
      return;
    }
    const c = s.charCodeAt(start);
    if (c === COLON) {
      const comment: SseComment = { type: 'comment', text: s.slice(start + 1, end) };
      out.push(comment);
      return;
    }
    // Only four field names matter; anything else (including any name merely starting with one of
    // them, e.g. "database:") is ignored without locating its colon.
    let nameEnd: number;
    let field: 0 | 1 | 2 | 3;
    if (c === 0x64 /* d */ && s.startsWith('data', start)) {
      nameEnd = start + 4;
      field = 0;
    } else if (c === 0x65 /* e */ && s.startsWith('event', start)) {
      nameEnd = start + 5;
      field = 1;
    } else if (c === 0x69 /* i */ && s.startsWith('id', start)) {
      nameEnd = start + 2;
      field = 2;
    } else if (c === 0x72 /* r */ && s.startsWith('retry', start)) {
      nameEnd = start + 5;
      field = 3;
    } else {
      return;
    }
    let value: string;
    if (nameEnd === end) {
      value = '';
    } else if (nameEnd > end || s.charCodeAt(nameEnd) !== COLON) {
      return; // a longer, unknown field name (or the name ran past the end of the line)
    } else {
      let vs = nameEnd + 1;
      if (vs < end && s.charCodeAt(vs) === SPACE) vs++;
      value = s.slice(vs, end);
    }
    switch (field) {
      case 0:
        if (this.hasData) {
          this.data += '\n' + value;
        } else {
          this.data = value;
          this.hasData = true;
        }
        return;
      case 1:
        this.eventType = value === '' ? undefined : value;
        return;
      case 2:
        if (value.indexOf('\0') === -1) {
          this.eventId = value;
          this.lastIdBuffer = value;
        }
        return;
      case 3:
        if (DIGITS.test(value)) this.retryMs = Number(value);
        return;
    }
  }

  /** Blank line: dispatches the event being built if its data buffer is non-empty, then resets it. */
  private dispatch(out: SseItem[]): void {
    this.lastIdString = this.lastIdBuffer;
    if (this.hasData) {
      const ev: SseEvent = { type: 'event', event: this.eventType, data: this.data, id: this.eventId };
      out.push(ev);
      this.data = '';
      this.hasData = false;
    }
    this.eventType = undefined;
    this.eventId = undefined;
  }
}
