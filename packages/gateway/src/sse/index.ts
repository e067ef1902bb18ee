/**
 * Server-Sent Events: item types, the incremental WHATWG-conformant parser and the writer.
 * See https://html.spec.whatwg.org/multipage/server-sent-events.html
 */
export type { SseComment, SseEvent, SseItem } from './types.ts';
export { SseParser } from './parser.ts';
export { encodeItem, formatComment, formatEvent, formatItem } from './writer.ts';
