/**
 * Request ids: UUIDv7 (RFC 9562 §5.7, laid out and formatted by the `uuid` package) — unique and
 * time-ordered, so the request and audit tables, keyed by request id, grow at the right edge of
 * their B-trees instead of at random pages.
 *
 * The random bits come from the pooled CSPRNG (`../random.ts`) instead of `uuid`'s own
 * `crypto.getRandomValues` call per id (about 8 µs each on the CI VM). Because `v7()` keeps its
 * monotonic counter only when it draws its own bytes, the counter is kept here exactly as `uuid`
 * keeps it (RFC 9562 §6.2, method 1: a 31-bit counter seeded from random bits at each new
 * millisecond, incremented within one; on overflow the timestamp moves on), so ids from this
 * process still increase strictly.
 */
import { v7 } from 'uuid';
import { randomSlice } from '../random.ts';

let lastMs = -Infinity;
let seq = 0;

/** A new request id, e.g. `019ad4e0-7b1c-7c3e-9f6a-2d4b8e1a0c55` (36 characters), greater than every earlier one of this process. */
export function newRequestId(): string {
  const random = randomSlice(16);
  const now = Date.now();
  if (now > lastMs) {
    lastMs = now;
    seq = ((random[6]! & 0x7f) << 24) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
  } else {
    seq = (seq + 1) | 0;
    if (seq === 0) lastMs++;
  }
  return v7({ random, msecs: lastMs, seq });
}
