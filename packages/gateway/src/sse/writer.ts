/**
 * Server-Sent Events framing: turns events and comments back into `text/event-stream` text.
 *
 * Output follows the WHATWG HTML event-stream format
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream):
 * UTF-8, LF line endings, `field: value` with exactly one space after the colon (a parser removes one
 * space, so values that themselves start with a space survive), and a blank line ending each block.
 * Nothing a caller passes can inject extra fields or events: line terminators inside values are
 * turned into separate `data:` lines (data) or spaces (event names, ids, comments).
 */
import type { SseItem } from './types.ts';

/** Any line terminator of the event-stream grammar (CRLF, LF, bare CR). */
const LINE_BREAK = /\r\n|\r|\n/;
/** Single CR or LF characters, for values that must stay on one line. */
const CR_OR_LF = /[\r\n]/g;

/** Replaces every CR or LF with a space so the value stays on its line. */
function oneLine(value: string): string {
  return value.indexOf('\n') === -1 && value.indexOf('\r') === -1 ? value : value.replace(CR_OR_LF, ' ');
}

/**
 * Frames one event: `event: <event>\n` (when set and non-empty), `id: <id>\n` (when set), then one
 * `data: <line>\n` per line of `data`, then the blank line that dispatches it, e.g.
 * `formatEvent({ event: 'error', data: '{"a":1}' })` → `"event: error\ndata: {\"a\":1}\n\n"`.
 *
 * - `data` is split on "\n" (and on CRLF / bare CR, which the event-stream grammar also treats as
 *   line breaks; they come back as "\n" after parsing, since SSE cannot carry a CR in data);
 *   empty data yields one `data: ` line, i.e. an event whose data is the empty string.
 * - `event` and `id` cannot contain line breaks on the wire: CR/LF in them are replaced by spaces.
 *   An `id` containing U+0000 is written as is, and will be ignored by conforming parsers.
 * - Omitting `event` (or passing "") means the default type "message".
 *
 * Shape: `{ event?: string | undefined; data: string; id?: string | undefined }` — an `SseEvent`
 * from the parser (whose `type` field is ignored) is accepted directly.
 */
export function formatEvent(ev: { event?: string | undefined; data: string; id?: string | undefined }): string {
  let out = '';
  if (ev.event !== undefined && ev.event !== '') out = 'event: ' + oneLine(ev.event) + '\n';
  if (ev.id !== undefined) out += 'id: ' + oneLine(ev.id) + '\n';
  const data = ev.data;
  if (data.indexOf('\n') === -1 && data.indexOf('\r') === -1) return out + 'data: ' + data + '\n\n';
  return out + 'data: ' + data.split(LINE_BREAK).join('\ndata: ') + '\n\n';
}

/**
 * Frames one comment line: `":" + text + "\n\n"`, e.g. `formatComment(' ping')` → `": ping\n\n"`.
 * CR and LF characters inside `text` are replaced by spaces, so a comment can never inject fields.
 * The trailing blank line dispatches nothing (comments carry no data) and keeps proxies flushing;
 * write comments between events, not in the middle of one.
 */
export function formatComment(text: string): string {
  return ':' + oneLine(text) + '\n\n';
}

/** Frames any parser item: {@link formatEvent} for `{ type: 'event' }`, {@link formatComment} for `{ type: 'comment' }`. */
export function formatItem(item: SseItem): string {
  return item.type === 'event' ? formatEvent(item) : formatComment(item.text);
}

const encoder = new TextEncoder();

/** {@link formatItem}, encoded as UTF-8 bytes ready to write to a `text/event-stream` response. */
export function encodeItem(item: SseItem): Uint8Array {
  return encoder.encode(formatItem(item));
}
