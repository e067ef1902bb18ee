/**
 * A fixed pool of engine slots (llama context sequences) with a FIFO wait queue.
 *
 * `acquire` resolves with a lease as soon as a slot is free, in arrival order. A waiter whose signal
 * aborts leaves the queue at once and rejects with the error produced by `onAbort`. `close` rejects
 * every waiter; leases already granted stay valid until released.
 */

/** A granted slot. `release()` is idempotent; the slot goes to the next waiter (FIFO) or back to the pool. */
export interface Lease<T> {
  readonly item: T;
  release(): void;
}

interface Waiter<T> {
  resolve(lease: Lease<T>): void;
  reject(err: unknown): void;
  cleanup(): void;
}

/** Thrown by {@link SlotPool.acquire} when the wait queue is at its bound. */
export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
  constructor(readonly limit: number) {
    super(`${limit} requests are already waiting for the engine`);
  }
}

export class SlotPool<T> {
  private readonly free: T[];
  private readonly waiters: Waiter<T>[] = [];
  private readonly idleListeners: Array<() => void> = [];
  private leased = 0;
  private closedWith: Error | undefined;

  /**
   * @param items the slots
   * @param maxQueue most callers allowed to wait (further ones get {@link QueueFullError}); default unbounded
   */
  constructor(
    items: readonly T[],
    private readonly maxQueue = Number.POSITIVE_INFINITY,
  ) {
    this.free = [...items];
  }

  /** Slots currently leased. */
  get active(): number {
    return this.leased;
  }

  /** Calls waiting for a slot. */
  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Waits for a free slot.
   * @param signal aborting it removes this call from the queue
   * @param onAbort builds the rejection for an aborted wait (receives `signal.reason`)
   * @throws QueueFullError (as a rejection) when `maxQueue` callers are already waiting
   */
  acquire(signal: AbortSignal, onAbort: (reason: unknown) => Error): Promise<Lease<T>> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (signal.aborted) return Promise.reject(onAbort(signal.reason));
    // Invariant: a released slot goes straight to the first waiter, so free slots imply no waiters.
    if (this.waiters.length === 0) {
      const item = this.free.shift();
      if (item !== undefined) return Promise.resolve(this.lease(item));
    }
    if (this.waiters.length >= this.maxQueue) return Promise.reject(new QueueFullError(this.maxQueue));
    return new Promise<Lease<T>>((resolve, reject) => {
      const listener = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i !== -1) this.waiters.splice(i, 1);
        reject(onAbort(signal.reason));
      };
      const waiter: Waiter<T> = {
        resolve,
        reject,
        cleanup: () => signal.removeEventListener('abort', listener),
      };
      signal.addEventListener('abort', listener, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Rejects every waiter with `err` and refuses further acquisitions. */
  close(err: Error): void {
    this.closedWith = err;
    for (const w of this.waiters.splice(0)) {
      w.cleanup();
      w.reject(err);
    }
  }

  /** Resolves when no slot is leased. */
  whenIdle(): Promise<void> {
    if (this.leased === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleListeners.push(resolve));
  }

  private lease(item: T): Lease<T> {
    this.leased++;
    let released = false;
    return {
      item,
      release: () => {
        if (released) return;
        released = true;
        this.leased--;
        const next = this.waiters.shift();
        if (next) {
          next.cleanup();
          next.resolve(this.lease(item));
          return;
        }
        this.free.push(item);
        if (this.leased === 0) for (const l of this.idleListeners.splice(0)) l();
      },
    };
  }
}
