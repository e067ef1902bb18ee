/**
 * Items produced by the incremental Server-Sent Events parser.
 *
 * Follows the WHATWG HTML "Server-sent events" event-stream interpretation
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * an event is dispatched at a blank line only if its data buffer is non-empty; multi-line
 * `data` fields are joined with "\n"; lines beginning with ":" are comments.
 */
export type SseItem = SseEvent | SseComment;

/** One dispatched event. `data` is the joined data buffer (without the trailing "\n"). */
export interface SseEvent {
  readonly type: 'event';
  /** The `event:` field of this event, or undefined when absent (i.e. the default "message"). */
  readonly event: string | undefined;
  /** The data buffer: all `data:` lines of the event joined with "\n". */
  readonly data: string;
  /** The `id:` field seen in this event, or undefined. */
  readonly id: string | undefined;
}

/** A comment line (`: ping`), without the leading ":" (one leading space, if any, is kept). */
export interface SseComment {
  readonly type: 'comment';
  readonly text: string;
}
