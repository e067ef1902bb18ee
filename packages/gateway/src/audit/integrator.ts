/**
 * The integrator: turns queued entries into tiles, bundles and signed checkpoints (spec §9, §11).
 *
 * One integrator runs per log. Rounds are serialised by an {@link IntegrationLock}; the default is an
 * in-process lock, so **multi-replica integration is not supported yet**: run exactly one gateway
 * process with `audit.enabled` per database (other processes — the CLI included — only append to the
 * queue, which is safe). The lock is an interface so that a PostgreSQL session advisory lock
 * (`pg_try_advisory_lock`) can replace it for several replicas later; the rebuild-from-storage rule
 * below is what makes that safe.
 *
 * A round (every `checkpoint_interval_ms`, and at once when the previous round was full):
 * 1. take up to `batch_max` queued entries in `seq` order — from the journal's in-memory
 *    {@link QueueTail} when it holds exactly the queue's first rows, else read from `audit_queue` —
 *    append each to the in-memory
 *    `TileIntegrator` (node:crypto hasher) with the leaf hash the journal computed when it committed
 *    the entry (stored in the queue row; entries queued without one are hashed here);
 * 2. in one transaction per tile's worth of entries (the journal's commits interleave): insert the
 *    new tiles and bundles (each (level, idx, width) written once, never rewritten), the index and
 *    leaf-lookup rows, delete exactly the integrated queue rows (by `seq`), set `integrated_size`
 *    (spec §11.3 a–b);
 * 3. recompute the root of the new size from the stored tiles, check it equals the integrator's and
 *    is consistent with the last signed checkpoint using the auditors' verification code (a
 *    consistency proof from the stored tiles, checked with `verifyConsistency`) — on failure refuse to
 *    sign and log an error (spec §11.4);
 * 4. sign the checkpoint (Ed25519, key name = origin), store it, then serve it (spec §11.3 c–e).
 * Any failure discards the in-memory state; the next round rebuilds it from storage.
 *
 * On start: the origin and vkey are checked against `audit_meta` (they never change); size 0 is
 * published if no checkpoint exists; otherwise the root at the latest checkpoint's size is recomputed
 * from the stored tiles and the process refuses to start if it differs (spec §11.4); then everything
 * pending (including entries the CLI queued while the server was down) is integrated.
 */
import { randomBytes } from 'node:crypto';
import {
  TileIntegrator,
  consistencyProofFromTiles,
  createEd25519Verifier,
  emptyRoot,
  openCheckpoint,
  rootHashFromTiles,
  signCheckpoint,
  verifyConsistency,
  bytesEqual,
  encodeBase64,
  type Signer,
  type Verifier,
} from '@sovra/tlog';
import { createNodeEd25519Signer, nodeTreeHasher } from '@sovra/tlog/node';
import type { Store } from '../store/db.ts';
import type { Logger } from '../telemetry/logger.ts';
import { AuditStorage, type QueuedEntry } from './storage.ts';
import type { QueueTail } from './queue-tail.ts';
import { createSigningKey, readSigningKey } from './signing-key.ts';

/** A published (signed, stored) checkpoint. */
export interface PublishedCheckpoint {
  size: bigint;
  rootHash: Uint8Array;
  /** The complete signed note (spec §8). */
  note: string;
}

/**
 * Serialises integration rounds. `acquire` resolves with a release function once the caller may
 * integrate. Replace the in-process default with a PostgreSQL advisory lock for multi-replica setups.
 */
export interface IntegrationLock {
  acquire(): Promise<() => Promise<void>>;
}

/** An {@link IntegrationLock} that serialises rounds within this process only. */
export class InProcessLock implements IntegrationLock {
  #tail: Promise<void> = Promise.resolve();
  /** Resolves when every earlier holder released. */
  acquire(): Promise<() => Promise<void>> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.#tail;
    this.#tail = prev.then(() => next);
    return prev.then(() => async () => release());
  }
}

/** Options of {@link AuditLog.open}. */
export interface AuditLogOptions {
  /** Configured origin (must equal the stored one if the log exists). */
  origin?: string;
  /** Absolute path of the signing key file. */
  keyFile: string;
  /** Environment (for `SOVRA_AUDIT_SIGNING_KEY`). */
  env: NodeJS.ProcessEnv;
  /** Round period, ms. */
  intervalMs: number;
  /** Most entries per round. */
  batchMax: number;
  logger: Logger;
  lock?: IntegrationLock;
  /** Called after each new checkpoint is stored and served (not for the one found at open). */
  onPublish?: (cp: PublishedCheckpoint) => void;
  /**
   * The queue rows the journal on this connection just committed (`queue-tail.ts`): a round takes
   * its entries from here instead of reading `audit_queue` when the tail starts at the queue's head.
   */
  tail?: QueueTail;
}

/**
 * The integrator lease (audit_meta `integrator_lease` = `<owner> <expires ms>`): leader election
 * among the processes that share one database. A process takes the lease when it is absent or
 * expired, renews it every round, and integrates only while it holds it. The others are **standby**
 * integrators: each round they try to take the lease and otherwise only refresh the checkpoint they
 * serve from the database; when the holder stops or crashes, its lease runs out after
 * {@link LEASE_MS} and one standby takes over, rebuilding its state from storage. Safety does not
 * depend on the lease alone: a round that overlaps another (e.g. a holder paused for longer than the
 * lease) fails on the unique tile and queue constraints and is redone from storage.
 */
export const LEASE_MS = 3_000;
/** Hashes per full tile and entries per full bundle (spec §9). */
const TILE_WIDTH = 256;
/**
 * Most entries per integration transaction (a multiple of {@link TILE_WIDTH}): one full tile. The
 * journal's commits (same thread, same connection) wait behind each transaction, so a round is cut
 * into pieces of about 2–4 ms with the event loop turning in between; 4,096 entries (16 tiles) cost
 * the same per entry but held commits up for ~50 ms once a second (measured with
 * `bench/routing.bench.ts --vary audit`).
 */
const CHUNK_ENTRIES = TILE_WIDTH;
const LEASE_KEY = 'integrator_lease';

/** Try to take or renew the lease for `owner`; @returns true when held. */
export async function takeLease(storage: AuditStorage, owner: string, now = Date.now()): Promise<boolean> {
  const cur = await storage.getMeta(LEASE_KEY);
  const next = `${owner} ${now + LEASE_MS}`;
  if (cur !== undefined) {
    const [who, until] = cur.split(' ');
    if (who !== owner && Number(until) > now) return false;
  }
  return storage.casMeta(LEASE_KEY, cur, next);
}

/** Give the lease up (on close), if still ours. */
export async function releaseLease(storage: AuditStorage, owner: string): Promise<void> {
  const cur = await storage.getMeta(LEASE_KEY);
  if (cur?.split(' ')[0] === owner) await storage.casMeta(LEASE_KEY, cur, `${owner} 0`);
}

/** Raised when the stored log does not match the signed checkpoint or the configuration. */
export class AuditIntegrityError extends Error {
  override readonly name = 'AuditIntegrityError';
}

/** The running log: integrator, signer and the latest published checkpoint. */
export class AuditLog {
  readonly storage: AuditStorage;
  /** The log origin = key name (spec §7). */
  readonly origin: string;
  /** The verifier key line (spec §8.3). */
  readonly vkey: string;
  readonly #signer: Signer;
  readonly #verifier: Verifier;
  readonly #opts: AuditLogOptions;
  readonly #lock: IntegrationLock;
  #tiles: TileIntegrator | null = null;
  #latest: PublishedCheckpoint;
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<void> | null = null;
  #closed = false;
  #failures = 0;
  /** This process's lease owner id. */
  readonly #owner = randomBytes(8).toString('hex');

  private constructor(storage: AuditStorage, origin: string, signer: Signer & { vkey: string }, latest: PublishedCheckpoint, opts: AuditLogOptions) {
    this.storage = storage;
    this.origin = origin;
    this.#signer = signer;
    this.vkey = signer.vkey;
    this.#verifier = createEd25519Verifier(signer.vkey);
    this.#latest = latest;
    this.#opts = opts;
    this.#lock = opts.lock ?? new InProcessLock();
  }

  /**
   * Opens the log: resolves the origin and signing key (creating them on first use), checks them
   * against the stored ones, verifies the stored tiles against the latest checkpoint, and publishes
   * size 0 for a new log. Does not start the periodic rounds (see {@link start}).
   * @throws AuditIntegrityError when the origin or key disagree with the stored log, or the stored
   *   tiles do not reproduce the latest signed checkpoint (refuse to run, spec §11.4)
   */
  static async open(store: Store, opts: AuditLogOptions): Promise<AuditLog> {
    const storage = new AuditStorage(store);
    const storedOrigin = await storage.getMeta('origin');
    if (storedOrigin !== undefined && opts.origin !== undefined && storedOrigin !== opts.origin) {
      throw new AuditIntegrityError(`audit.origin is "${opts.origin}" but this database's log is "${storedOrigin}"; a log's origin never changes`);
    }
    let key = readSigningKey(opts.keyFile, opts.env);
    const origin = storedOrigin ?? opts.origin ?? key?.name ?? `sovra-${randomBytes(4).toString('hex')}.invalid/audit`;
    if (key && key.name !== origin) {
      throw new AuditIntegrityError(`the audit signing key in ${key.source} is named "${key.name}" but the log origin is "${origin}"`);
    }
    key ??= createSigningKey(opts.keyFile, origin);
    if (key.created) opts.logger.warn({ key_file: key.source }, 'created a new audit signing key; back it up and keep it secret');
    const signer = createNodeEd25519Signer(origin, key.seed);
    const storedVkey = await storage.getMeta('vkey');
    if (storedVkey !== undefined && storedVkey !== signer.vkey) {
      throw new AuditIntegrityError(`the audit signing key in ${key.source} (${signer.vkey}) is not this log's key (${storedVkey})`);
    }
    if ((await storage.initMeta('origin', origin)) !== origin) throw new AuditIntegrityError('another process initialised the log with a different origin');
    if ((await storage.initMeta('vkey', signer.vkey)) !== signer.vkey) throw new AuditIntegrityError('another process initialised the log with a different key');
    await storage.initMeta('integrated_size', '0');

    const verifier = createEd25519Verifier(signer.vkey);
    const stored = await storage.latestCheckpoint();
    let latest: PublishedCheckpoint;
    if (!stored) {
      const note = signCheckpoint({ origin, size: 0n, rootHash: emptyRoot() }, [signer]);
      await storage.insertCheckpoint(0n, note);
      latest = { size: 0n, rootHash: emptyRoot(), note };
    } else {
      let cp;
      try {
        cp = openCheckpoint(stored.note, [verifier], { origin }).checkpoint;
      } catch (err) {
        throw new AuditIntegrityError(`the stored checkpoint of size ${stored.size} does not verify with this log's key: ${(err as Error).message}`);
      }
      const integrated = BigInt((await storage.getMeta('integrated_size')) ?? '0');
      if (cp.size !== stored.size || cp.size > integrated) {
        throw new AuditIntegrityError(`the latest checkpoint (size ${cp.size}) is beyond the integrated size ${integrated}`);
      }
      const root = cp.size === 0n ? emptyRoot() : await rootHashFromTiles(cp.size, storage, nodeTreeHasher);
      if (!bytesEqual(root, cp.rootHash)) {
        throw new AuditIntegrityError(
          `REFUSING TO RUN: the stored tiles give root ${encodeBase64(root)} at size ${cp.size}, but the signed checkpoint says ${encodeBase64(cp.rootHash)}`,
        );
      }
      latest = { size: cp.size, rootHash: cp.rootHash, note: stored.note };
    }
    const log = new AuditLog(storage, origin, signer, latest, opts);
    // Leader election: take the lease if it is free; otherwise start as a standby (see LEASE_MS).
    if (!(await takeLease(storage, log.#owner))) opts.logger.info({ origin }, 'another process holds the audit integrator lease; this one is a standby integrator');
    return log;
  }

  /** A verifier for this log's key (what auditors pin). */
  verifier(): Verifier {
    return this.#verifier;
  }

  /** The latest published checkpoint (what the read API serves). */
  latest(): PublishedCheckpoint {
    return this.#latest;
  }

  /** Starts periodic rounds (the first one at once). */
  start(): void {
    if (this.#closed || this.#timer) return;
    this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.integrateNow()
        .then(
          (more) => more,
          () => false,
        )
        .then((more) => this.#schedule(more ? 0 : this.#opts.intervalMs));
    }, ms);
    this.#timer.unref();
  }

  /**
   * Runs one round now (waiting for a running one first).
   * @returns true if the round integrated a full batch (more may be pending)
   * @throws the round's error (also logged); the next round rebuilds from storage
   */
  async integrateNow(): Promise<boolean> {
    const release = await this.#lock.acquire();
    let more = false;
    const run = (async () => {
      try {
        more = await this.#roundLocked();
        this.#failures = 0;
      } catch (err) {
        this.#tiles = null; // rebuild from storage next time
        this.#failures++;
        this.#opts.logger.error({ err, failures: this.#failures }, 'audit log integration failed; will retry from storage');
        throw err;
      } finally {
        await release();
      }
    })();
    this.#round = run.catch(() => undefined);
    await run;
    return more;
  }

  /** Integrates until the queue is empty (bounded by `maxRounds`). For tests, tools and shutdown. */
  async drain(maxRounds = 1000): Promise<PublishedCheckpoint> {
    for (let i = 0; i < maxRounds; i++) if (!(await this.integrateNow())) break;
    return this.#latest;
  }

  async #roundLocked(): Promise<boolean> {
    const storage = this.storage;
    if (!(await takeLease(storage, this.#owner))) {
      // Standby: someone else integrates. Serve the newest checkpoint it published.
      this.#tiles = null;
      this.#opts.tail?.clear();
      await this.#refreshLatest();
      return false;
    }
    if (!this.#tiles) {
      const size = BigInt((await storage.getMeta('integrated_size')) ?? '0');
      this.#tiles = await TileIntegrator.restore(size, storage, { hasher: nodeTreeHasher });
    }
    const t = this.#tiles;
    const rows = await this.#nextRows();
    // Written in chunks of at most CHUNK_ENTRIES that end on tile boundaries, one transaction each,
    // yielding to the event loop in between so the journal's commits (same thread, same database)
    // are never held up for a whole round; only the last chunk writes partial tiles and bundles.
    for (let at = 0; at < rows.length; ) {
      if (at > 0) await new Promise<void>((r) => setImmediate(r));
      const room = CHUNK_ENTRIES - Number(t.size % BigInt(TILE_WIDTH));
      const chunk = rows.slice(at, at + room);
      at += chunk.length;
      const index: Array<readonly [string, bigint, Uint8Array]> = [];
      const seqs: number[] = [];
      for (const r of chunk) {
        // The journal hashed the entry from these bytes when it committed them; a wrong stored hash
        // would make the level-0 tile disagree with the bundle, which auditors check (spec §9.4).
        const { index: i, leafHash } = r.leafHash ? t.appendEntryWithLeafHash(r.entry, r.leafHash) : t.appendEntry(r.entry);
        index.push([r.entryId, i, leafHash]);
        seqs.push(r.seq);
      }
      const f = t.flush();
      await storage.commitIntegration({ tiles: f.tiles, bundles: f.bundles, index, seqs, size: f.size });
    }
    if (t.size > this.#latest.size) await this.#publish(t.size, t.rootHash());
    return rows.length >= this.#opts.batchMax;
  }

  /**
   * Up to `batchMax` queued entries in seq order: from the in-memory tail when it starts at the
   * queue's head (same rows, no read), else from `audit_queue` (then the tail drops what was read).
   */
  async #nextRows(): Promise<QueuedEntry[]> {
    const tail = this.#opts.tail;
    if (tail && tail.size > 0) {
      const head = await this.storage.queueHead();
      if (head === undefined) tail.clear(); // integrated by someone else
      else {
        const rows = tail.take(this.#opts.batchMax, head);
        const last = rows?.[rows.length - 1];
        if (rows && last && (await this.storage.queuedIdAt(last.seq)) === last.entryId) return rows;
        if (rows) tail.clear(); // not the queue's rows after all: read the table
      }
    }
    const rows = await this.storage.readQueue(this.#opts.batchMax);
    if (tail && rows.length > 0) tail.dropThrough(rows[rows.length - 1]!.seq);
    return rows;
  }

  /** Standby: adopt the newest stored checkpoint if it verifies and is newer than the one served. */
  async #refreshLatest(): Promise<void> {
    const stored = await this.storage.latestCheckpoint();
    if (!stored || stored.size <= this.#latest.size) return;
    try {
      const cp = openCheckpoint(stored.note, [this.#verifier], { origin: this.origin }).checkpoint;
      if (cp.size !== stored.size) return;
      this.#latest = { size: cp.size, rootHash: cp.rootHash, note: stored.note };
      this.#opts.onPublish?.(this.#latest);
    } catch (err) {
      this.#opts.logger.error({ err, size: String(stored.size) }, 'AUDIT LOG: a stored checkpoint does not verify with this log\'s key; not serving it');
    }
  }

  /** Steps 3–4 of a round: verify against the stored tiles and the last checkpoint, sign, store, serve. */
  async #publish(size: bigint, rootHash: Uint8Array): Promise<void> {
    const prev = this.#latest;
    const fromTiles = await rootHashFromTiles(size, this.storage, nodeTreeHasher);
    if (!bytesEqual(fromTiles, rootHash)) {
      this.#opts.logger.error({ size: String(size) }, 'AUDIT LOG: the stored tiles do not reproduce the integrated root; refusing to sign');
      throw new AuditIntegrityError(`stored tiles give a different root at size ${size}`);
    }
    const proof = await consistencyProofFromTiles(prev.size, size, this.storage, nodeTreeHasher);
    if (!verifyConsistency(prev.size, size, prev.rootHash, fromTiles, proof, nodeTreeHasher)) {
      this.#opts.logger.error(
        { old_size: String(prev.size), new_size: String(size) },
        'AUDIT LOG: the new tree is NOT consistent with the last signed checkpoint; refusing to sign (spec §11.4)',
      );
      throw new AuditIntegrityError(`new root at size ${size} is not consistent with the checkpoint of size ${prev.size}`);
    }
    const note = signCheckpoint({ origin: this.origin, size, rootHash: fromTiles }, [this.#signer]);
    await this.storage.insertCheckpoint(size, note);
    this.#latest = { size, rootHash: fromTiles, note };
    this.#opts.onPublish?.(this.#latest);
  }

  /** Stops the rounds; runs a final round so the last checkpoint covers everything queued. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#round;
    try {
      await this.drain(100);
    } catch {
      /* logged; the entries stay queued and are integrated at the next start */
    }
    await releaseLease(this.storage, this.#owner).catch(() => undefined);
  }
}
