/**
 * Request ids: UUIDv7 (RFC 9562 §5.7, from the `uuid` package) — unique and time-ordered, so the
 * request and audit tables, keyed by request id, grow at the right edge of their B-trees instead of
 * at random pages.
 */
import { v7 } from 'uuid';

/** A new request id, e.g. `019ad4e0-7b1c-7c3e-9f6a-2d4b8e1a0c55` (36 characters). */
export function newRequestId(): string {
  return v7();
}
