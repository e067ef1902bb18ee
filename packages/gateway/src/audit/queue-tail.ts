/**
 * The queue tail: the entries this thread's journal just committed to `audit_queue`, kept in memory
 * so that the integrator on the same connection does not read them back (the read, with a Buffer per
 * blob, was about a fifth of an integration round).
 *
 * It is a cache, never the source of truth: the integrator takes entries from it only when its seqs
 * are contiguous and its first and last rows taken are the queue's rows (same seq and entry id as the
 * queue's head, and as the row at the last seq taken), so it holds exactly the rows a `readQueue`
 * would return, in the same order (seqs only grow past the largest one present, so no row between
 * two of ours can have been replaced). Anything else — rows queued
 * by another process (the CLI), a lost or failed round, a tail that outgrew its bound — makes the
 * integrator read the table as before, and the tail heals itself (rows the integrator read are
 * dropped from it; a gap clears it). The integration commit still deletes exactly the integrated
 * queue rows by seq and fails if any is missing, as without the tail.
 */
import type { QueuedEntry } from './storage.ts';

/** In-memory copy of the newest committed queue rows; see the module documentation. */
export class QueueTail {
  readonly #max: number;
  #rows: QueuedEntry[] = [];
  /** Index of the first live row in `#rows` (taken rows are cut lazily). */
  #at = 0;

  /** @param maxEntries most rows held (default 32,768); beyond that the tail is cleared */
  constructor(maxEntries = 32_768) {
    if (!(maxEntries >= 1)) throw new RangeError('maxEntries must be >= 1');
    this.#max = maxEntries;
  }

  /** Rows held. */
  get size(): number {
    return this.#rows.length - this.#at;
  }

  /**
   * Appends rows just committed (in seq order, as inserted). A row whose seq does not follow the
   * last one held (another writer's rows in between) starts the tail afresh; so does going over the
   * bound (the integrator then reads the table until it has caught up).
   */
  push(rows: readonly QueuedEntry[]): void {
    for (const r of rows) {
      const last = this.#rows.length > this.#at ? this.#rows[this.#rows.length - 1]! : undefined;
      if (last !== undefined && r.seq !== last.seq + 1) this.clear();
      if (this.size >= this.#max) this.clear();
      this.#rows.push(r);
    }
  }

  /**
   * Takes up to `limit` rows when the tail starts exactly at the queue's head. The caller must still
   * check that the last row taken is in the queue (see the module documentation).
   * @param head the queue's head row (smallest seq) now
   * @returns the rows (removed from the tail), or null when the tail does not start at `head`
   *   (the caller reads the table instead)
   */
  take(limit: number, head: { seq: number; entryId: string }): QueuedEntry[] | null {
    const first = this.#rows[this.#at];
    if (first === undefined || first.seq !== head.seq || first.entryId !== head.entryId) return null;
    const out = this.#rows.slice(this.#at, this.#at + limit);
    this.#at += out.length;
    if (this.#at === this.#rows.length) this.clear();
    else if (this.#at > 4096 && this.#at * 2 > this.#rows.length) {
      this.#rows = this.#rows.slice(this.#at);
      this.#at = 0;
    }
    return out;
  }

  /** Drops every row with seq ≤ `seq` (rows the integrator read from the table). */
  dropThrough(seq: number): void {
    while (this.size > 0 && this.#rows[this.#at]!.seq <= seq) this.#at++;
    if (this.size === 0) this.clear();
  }

  /** Forgets every row. */
  clear(): void {
    this.#rows = [];
    this.#at = 0;
  }
}
