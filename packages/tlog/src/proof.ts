/**
 * Proof documents: the inclusion / consistency proof JSON of the gateway's proof API (spec §10.1,
 * §10.2) and the offline C2SP `tlog-proof@v1` text file (spec §10.3): formatting, strict parsing,
 * and verification against a trusted log key (offline, no network).
 *
 * JSON numbers: formatting writes exact decimal digits for any size below 2^63; parsing goes through
 * `JSON.parse`, so sizes/indexes above 2^53−1 are rejected (`MALFORMED_PROOF`) rather than rounded.
 */
import { TlogError } from './errors.ts';
import {
  bytesEqual,
  decodeBase64,
  decodeHash,
  encodeBase64,
  parseDecimal,
  textAndBytes,
  toU63,
  type TextInput,
  type Uint63,
} from './encoding.ts';
import { HASH_SIZE, defaultTreeHasher, type TreeHasher } from './hash.ts';
import { MAX_PROOF_LENGTH, verifyConsistency, verifyInclusion } from './tree.ts';
import { openCheckpoint, type Checkpoint, type OpenCheckpointOptions, type OpenedCheckpoint } from './checkpoint.ts';
import { parseNote, type Verifier } from './note.ts';

/** Inclusion proof document (spec §10.1). */
export interface InclusionProofDoc {
  readonly leafIndex: bigint;
  readonly treeSize: bigint;
  /** `LH(entry)`. */
  readonly leafHash: Uint8Array;
  /** `PATH(leafIndex, D[0:treeSize])`, bottom-up. */
  readonly proof: readonly Uint8Array[];
  /** Root at `treeSize` (RECOMMENDED). */
  readonly rootHash?: Uint8Array;
  /** Complete signed note for exactly `treeSize`. */
  readonly checkpoint?: string;
}

/** Consistency proof document (spec §10.2). */
export interface ConsistencyProofDoc {
  readonly oldSize: bigint;
  readonly newSize: bigint;
  readonly oldRoot: Uint8Array;
  readonly newRoot: Uint8Array;
  /** `PROOF(oldSize, D[0:newSize])`; empty when oldSize is 0 or equals newSize. */
  readonly proof: readonly Uint8Array[];
  /** Complete signed note for exactly `newSize`. */
  readonly checkpoint?: string;
}

// ---------------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------------

type JsonValue = string | bigint | readonly string[];

/** JSON with sorted keys, bigint as exact digits; `indent` like JSON.stringify's third argument. */
function stringifySorted(obj: Record<string, JsonValue | undefined>, indent: number): string {
  const pad = ' '.repeat(indent);
  const nl = indent > 0 ? '\n' : '';
  const sep = indent > 0 ? ': ' : ':';
  const val = (v: JsonValue): string => {
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'string') return JSON.stringify(v);
    if (v.length === 0) return '[]';
    return `[${nl}${v.map((s) => `${pad}${pad}${JSON.stringify(s)}`).join(`,${nl}`)}${nl}${pad}]`;
  };
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${nl}${keys.map((k) => `${pad}${JSON.stringify(k)}${sep}${val(obj[k]!)}`).join(`,${nl}`)}${nl}}`;
}

function hashOrThrow(h: Uint8Array | undefined, what: string): string {
  if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE) throw new TlogError('INVALID_ARGUMENT', `${what} must be 32 bytes`);
  return encodeBase64(h);
}

/**
 * Serialises an inclusion proof as JSON (spec §10.1): keys in sorted order, hashes in base64,
 * `proof` always an array, numbers as exact integers, optional fields omitted when undefined.
 * With the default `indent = 2` the output reproduces the spec §14 vector byte for byte (no
 * trailing newline).
 * @throws TlogError `INVALID_ARGUMENT`
 */
export function formatInclusionProofJSON(
  doc: {
    leafIndex: Uint63;
    treeSize: Uint63;
    leafHash: Uint8Array;
    proof: readonly Uint8Array[];
    rootHash?: Uint8Array;
    checkpoint?: string;
  },
  options: { indent?: number } = {},
): string {
  const leafIndex = toU63(doc.leafIndex, 'leaf index');
  const treeSize = toU63(doc.treeSize, 'tree size');
  if (leafIndex >= treeSize) throw new TlogError('INVALID_ARGUMENT', 'leaf index must be below tree size');
  return stringifySorted(
    {
      checkpoint: doc.checkpoint,
      leaf_hash: hashOrThrow(doc.leafHash, 'leaf hash'),
      leaf_index: leafIndex,
      proof: doc.proof.map((h, i) => hashOrThrow(h, `proof[${i}]`)),
      root_hash: doc.rootHash === undefined ? undefined : hashOrThrow(doc.rootHash, 'root hash'),
      tree_size: treeSize,
    },
    options.indent ?? 2,
  );
}

/**
 * Serialises a consistency proof as JSON (spec §10.2), same conventions as
 * {@link formatInclusionProofJSON}.
 * @throws TlogError `INVALID_ARGUMENT`
 */
export function formatConsistencyProofJSON(
  doc: {
    oldSize: Uint63;
    newSize: Uint63;
    oldRoot: Uint8Array;
    newRoot: Uint8Array;
    proof: readonly Uint8Array[];
    checkpoint?: string;
  },
  options: { indent?: number } = {},
): string {
  const oldSize = toU63(doc.oldSize, 'old size');
  const newSize = toU63(doc.newSize, 'new size');
  if (oldSize > newSize) throw new TlogError('INVALID_ARGUMENT', 'old size exceeds new size');
  return stringifySorted(
    {
      checkpoint: doc.checkpoint,
      new_root: hashOrThrow(doc.newRoot, 'new root'),
      new_size: newSize,
      old_root: hashOrThrow(doc.oldRoot, 'old root'),
      old_size: oldSize,
      proof: doc.proof.map((h, i) => hashOrThrow(h, `proof[${i}]`)),
    },
    options.indent ?? 2,
  );
}

function asObject(input: string | object): Record<string, unknown> {
  let v: unknown = input;
  if (typeof input === 'string') {
    try {
      v = JSON.parse(input);
    } catch (e) {
      throw new TlogError('MALFORMED_PROOF', 'proof is not valid JSON', { cause: e });
    }
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TlogError('MALFORMED_PROOF', 'proof must be a JSON object');
  return v as Record<string, unknown>;
}

function jsonInt(o: Record<string, unknown>, key: string): bigint {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new TlogError('MALFORMED_PROOF', `"${key}" must be a non-negative integer`);
  }
  if (!Number.isSafeInteger(v)) throw new TlogError('MALFORMED_PROOF', `"${key}" exceeds 2^53-1 (not supported by this JSON parser)`);
  return BigInt(v);
}

function jsonHash(o: Record<string, unknown>, key: string, required: true): Uint8Array;
function jsonHash(o: Record<string, unknown>, key: string, required: false): Uint8Array | undefined;
function jsonHash(o: Record<string, unknown>, key: string, required: boolean): Uint8Array | undefined {
  const v = o[key];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw new TlogError('MALFORMED_PROOF', `"${key}" must be a base64 string`);
  try {
    return decodeHash(v, key);
  } catch (e) {
    throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
  }
}

function jsonProof(o: Record<string, unknown>): Uint8Array[] {
  const v = o['proof'];
  if (!Array.isArray(v)) throw new TlogError('MALFORMED_PROOF', '"proof" must be an array (use [] when empty)');
  if (v.length > MAX_PROOF_LENGTH) throw new TlogError('MALFORMED_PROOF', `"proof" has more than ${MAX_PROOF_LENGTH} hashes`);
  return v.map((h, i) => {
    if (typeof h !== 'string') throw new TlogError('MALFORMED_PROOF', `proof[${i}] must be a base64 string`);
    try {
      return decodeHash(h, `proof[${i}]`);
    } catch (e) {
      throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
    }
  });
}

function jsonCheckpoint(o: Record<string, unknown>): string | undefined {
  const v = o['checkpoint'];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new TlogError('MALFORMED_PROOF', '"checkpoint" must be a string');
  return v;
}

/**
 * Strictly parses an inclusion proof JSON document (spec §10.1): required `leaf_index`, `tree_size`,
 * `leaf_hash`, `proof`; optional `root_hash`, `checkpoint`; unknown keys are ignored.
 * @param input JSON text or an already-parsed object
 * @throws TlogError `MALFORMED_PROOF`
 */
export function parseInclusionProofJSON(input: string | object): InclusionProofDoc {
  const o = asObject(input);
  const leafIndex = jsonInt(o, 'leaf_index');
  const treeSize = jsonInt(o, 'tree_size');
  if (leafIndex >= treeSize) throw new TlogError('MALFORMED_PROOF', 'leaf_index must be below tree_size');
  const rootHash = jsonHash(o, 'root_hash', false);
  const checkpoint = jsonCheckpoint(o);
  return {
    leafIndex,
    treeSize,
    leafHash: jsonHash(o, 'leaf_hash', true),
    proof: jsonProof(o),
    ...(rootHash ? { rootHash } : {}),
    ...(checkpoint !== undefined ? { checkpoint } : {}),
  };
}

/**
 * Strictly parses a consistency proof JSON document (spec §10.2): required `old_size`, `new_size`,
 * `old_root`, `new_root`, `proof`; optional `checkpoint`.
 * @throws TlogError `MALFORMED_PROOF`
 */
export function parseConsistencyProofJSON(input: string | object): ConsistencyProofDoc {
  const o = asObject(input);
  const oldSize = jsonInt(o, 'old_size');
  const newSize = jsonInt(o, 'new_size');
  if (oldSize > newSize) throw new TlogError('MALFORMED_PROOF', 'old_size exceeds new_size');
  const checkpoint = jsonCheckpoint(o);
  return {
    oldSize,
    newSize,
    oldRoot: jsonHash(o, 'old_root', true),
    newRoot: jsonHash(o, 'new_root', true),
    proof: jsonProof(o),
    ...(checkpoint !== undefined ? { checkpoint } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------
// Verification of JSON documents
// ---------------------------------------------------------------------------------------------------

/** How a proof document's root is authenticated. */
export interface TrustOptions extends OpenCheckpointOptions {
  /** Trusted log keys, used to open the document's embedded `checkpoint`. */
  verifiers?: readonly Verifier[];
  /**
   * An already verified checkpoint (e.g. from `openCheckpoint` on `/audit/checkpoint`) to use instead
   * of (or in addition to) the embedded one; its size must match the proof's tree size.
   */
  trustedCheckpoint?: Checkpoint;
  hasher?: TreeHasher;
}

function trustedRoot(embedded: string | undefined, size: bigint, opts: TrustOptions): { checkpoint: Checkpoint; opened?: OpenedCheckpoint } {
  let opened: OpenedCheckpoint | undefined;
  let cp: Checkpoint | undefined = opts.trustedCheckpoint;
  if (embedded !== undefined && opts.verifiers && opts.verifiers.length > 0) {
    opened = openCheckpoint(embedded, opts.verifiers, opts);
    if (cp && (cp.size !== opened.checkpoint.size || !bytesEqual(cp.rootHash, opened.checkpoint.rootHash))) {
      throw new TlogError('ROOT_MISMATCH', 'embedded checkpoint differs from the trusted checkpoint');
    }
    cp = opened.checkpoint;
  }
  if (!cp) {
    throw new TlogError(
      'INVALID_ARGUMENT',
      'no trusted root: pass `verifiers` (to open the embedded checkpoint) or a verified `trustedCheckpoint`',
    );
  }
  if (opts.origin !== undefined && cp.origin !== opts.origin) {
    throw new TlogError('ORIGIN_MISMATCH', `checkpoint origin ${JSON.stringify(cp.origin)} is not ${JSON.stringify(opts.origin)}`);
  }
  if (cp.size !== size) throw new TlogError('SIZE_MISMATCH', `checkpoint size ${cp.size} differs from the proof's size ${size}`);
  return opened ? { checkpoint: cp, opened } : { checkpoint: cp };
}

/**
 * Verifies an inclusion proof document offline (spec §5, §10.1): the root comes from a verified
 * checkpoint of exactly `tree_size` (embedded one opened with `verifiers`, or `trustedCheckpoint`),
 * `root_hash` if present must equal it, the leaf hash must match `entry`/`leafHash` if given, and the
 * audit path must verify.
 * @returns the parsed document and the checkpoint that authenticated it
 * @throws TlogError `MALFORMED_PROOF`, checkpoint errors (`UNVERIFIED_NOTE`, `INVALID_SIGNATURE`, …),
 *   `SIZE_MISMATCH`, `ROOT_MISMATCH`, `PROOF_FAILED`
 */
export function verifyInclusionProofJSON(
  input: string | object,
  options: TrustOptions & { entry?: Uint8Array; leafHash?: Uint8Array },
): { doc: InclusionProofDoc; checkpoint: Checkpoint; opened?: OpenedCheckpoint } {
  const doc = parseInclusionProofJSON(input);
  const hasher = options.hasher ?? defaultTreeHasher;
  const { checkpoint, opened } = trustedRoot(doc.checkpoint, doc.treeSize, options);
  if (doc.rootHash && !bytesEqual(doc.rootHash, checkpoint.rootHash)) {
    throw new TlogError('ROOT_MISMATCH', 'root_hash differs from the signed checkpoint root');
  }
  if (options.entry && !bytesEqual(hasher.hashLeaf(options.entry), doc.leafHash)) {
    throw new TlogError('PROOF_FAILED', 'leaf_hash is not the leaf hash of the given entry');
  }
  if (options.leafHash && !bytesEqual(options.leafHash, doc.leafHash)) {
    throw new TlogError('PROOF_FAILED', 'leaf_hash differs from the expected leaf hash');
  }
  if (!verifyInclusion(doc.leafIndex, doc.treeSize, doc.leafHash, doc.proof, checkpoint.rootHash, hasher)) {
    throw new TlogError('PROOF_FAILED', `inclusion proof of leaf ${doc.leafIndex} in tree ${doc.treeSize} does not verify`);
  }
  return opened ? { doc, checkpoint, opened } : { doc, checkpoint };
}

/**
 * Verifies a consistency proof document offline (spec §6, §10.2): `new_root` must equal a verified
 * checkpoint of exactly `new_size`; `old_root` is only as trustworthy as what you compare it with, so
 * pass `trustedOld` (a checkpoint you verified earlier) to bind it.
 * @throws TlogError `MALFORMED_PROOF`, checkpoint errors, `SIZE_MISMATCH`, `ROOT_MISMATCH`, `PROOF_FAILED`
 */
export function verifyConsistencyProofJSON(
  input: string | object,
  options: TrustOptions & { trustedOld?: { size: bigint; rootHash: Uint8Array } },
): { doc: ConsistencyProofDoc; checkpoint: Checkpoint; opened?: OpenedCheckpoint } {
  const doc = parseConsistencyProofJSON(input);
  const hasher = options.hasher ?? defaultTreeHasher;
  const { checkpoint, opened } = trustedRoot(doc.checkpoint, doc.newSize, options);
  if (!bytesEqual(doc.newRoot, checkpoint.rootHash)) throw new TlogError('ROOT_MISMATCH', 'new_root differs from the signed checkpoint root');
  if (options.trustedOld) {
    if (options.trustedOld.size !== doc.oldSize) throw new TlogError('SIZE_MISMATCH', 'old_size differs from the trusted old checkpoint');
    if (!bytesEqual(options.trustedOld.rootHash, doc.oldRoot)) throw new TlogError('ROOT_MISMATCH', 'old_root differs from the trusted old checkpoint');
  }
  if (!verifyConsistency(doc.oldSize, doc.newSize, doc.oldRoot, doc.newRoot, doc.proof, hasher)) {
    throw new TlogError('PROOF_FAILED', `consistency proof ${doc.oldSize} -> ${doc.newSize} does not verify`);
  }
  return opened ? { doc, checkpoint, opened } : { doc, checkpoint };
}

// ---------------------------------------------------------------------------------------------------
// C2SP tlog-proof@v1 (spec §10.3)
// ---------------------------------------------------------------------------------------------------

/** Header line of a tlog-proof document. */
export const TLOG_PROOF_HEADER = 'c2sp.org/tlog-proof@v1';

/** A parsed tlog-proof document (unverified). */
export interface TlogProof {
  readonly index: bigint;
  /** Bottom-up inclusion proof. */
  readonly proof: readonly Uint8Array[];
  /** The complete signed checkpoint, verbatim. */
  readonly checkpoint: string;
  /** Optional unauthenticated application data (`extra` line). */
  readonly extra?: Uint8Array;
}

/**
 * Formats a `c2sp.org/tlog-proof@v1` document (spec §10.3): header, optional `extra <base64>`,
 * `index <i>`, one base64 hash per line, an empty line, then the signed checkpoint verbatim.
 * @throws TlogError `INVALID_ARGUMENT`, `MALFORMED_NOTE` (checkpoint not a well-formed signed note)
 */
export function formatTlogProof(p: { index: Uint63; proof: readonly Uint8Array[]; checkpoint: string; extra?: Uint8Array }): string {
  const index = toU63(p.index, 'index');
  if (p.proof.length > MAX_PROOF_LENGTH) throw new TlogError('INVALID_ARGUMENT', 'proof longer than 63 hashes');
  parseNote(p.checkpoint);
  let out = `${TLOG_PROOF_HEADER}\n`;
  if (p.extra !== undefined) out += `extra ${encodeBase64(p.extra)}\n`;
  out += `index ${index}\n`;
  for (let i = 0; i < p.proof.length; i++) out += hashOrThrow(p.proof[i], `proof[${i}]`) + '\n';
  return `${out}\n${p.checkpoint}`;
}

/**
 * Strictly parses a tlog-proof document (spec §10.3, C2SP tlog-proof): exact header, optional
 * `extra` line (strict base64), `index` in canonical decimal, ≤ 63 canonical base64 hashes, an empty
 * line, then a structurally valid signed note (not verified here).
 * @throws TlogError `MALFORMED_PROOF`
 */
export function parseTlogProof(input: TextInput): TlogProof {
  const { text } = textAndBytes(input);
  let pos = 0;
  const nextLine = (): string => {
    const end = text.indexOf('\n', pos);
    if (end < 0) throw new TlogError('MALFORMED_PROOF', 'tlog-proof is truncated (missing LF)');
    const line = text.slice(pos, end);
    pos = end + 1;
    return line;
  };
  if (nextLine() !== TLOG_PROOF_HEADER) throw new TlogError('MALFORMED_PROOF', `first line must be ${TLOG_PROOF_HEADER}`);
  let line = nextLine();
  let extra: Uint8Array | undefined;
  if (line.startsWith('extra ')) {
    try {
      extra = decodeBase64(line.slice(6), undefined, 'extra');
    } catch (e) {
      throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
    }
    line = nextLine();
  }
  if (!line.startsWith('index ')) throw new TlogError('MALFORMED_PROOF', 'expected "index <i>" line');
  let index: bigint;
  try {
    index = parseDecimal(line.slice(6), 'index');
  } catch (e) {
    throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
  }
  const proof: Uint8Array[] = [];
  for (;;) {
    line = nextLine();
    if (line === '') break;
    if (proof.length === MAX_PROOF_LENGTH) throw new TlogError('MALFORMED_PROOF', 'more than 63 proof hashes');
    try {
      proof.push(decodeHash(line, `proof line ${proof.length + 1}`));
    } catch (e) {
      throw new TlogError('MALFORMED_PROOF', (e as Error).message, { cause: e });
    }
  }
  const checkpoint = text.slice(pos);
  try {
    parseNote(checkpoint);
  } catch (e) {
    throw new TlogError('MALFORMED_PROOF', `embedded checkpoint: ${(e as Error).message}`, { cause: e });
  }
  return extra ? { index, proof, checkpoint, extra } : { index, proof, checkpoint };
}

/**
 * Verifies a tlog-proof document offline (spec §10.3): opens the embedded checkpoint with the trusted
 * log key(s) (and witness policy, if any), then checks the inclusion of `entry` (or `leafHash`) at
 * `index` against the signed root. The `extra` data is returned but NOT authenticated.
 * @param options.verifiers trusted log keys (required); `entry` or `leafHash` (one is required)
 * @throws TlogError `MALFORMED_PROOF`, checkpoint errors, `PROOF_FAILED`, `INVALID_ARGUMENT`
 */
export function verifyTlogProof(
  input: TextInput,
  options: OpenCheckpointOptions & {
    verifiers: readonly Verifier[];
    entry?: Uint8Array;
    leafHash?: Uint8Array;
    hasher?: TreeHasher;
  },
): { index: bigint; checkpoint: Checkpoint; opened: OpenedCheckpoint; extra?: Uint8Array } {
  const hasher = options.hasher ?? defaultTreeHasher;
  const p = parseTlogProof(input);
  let leafHash: Uint8Array;
  if (options.entry) leafHash = hasher.hashLeaf(options.entry);
  else if (options.leafHash) leafHash = options.leafHash;
  else throw new TlogError('INVALID_ARGUMENT', 'verifyTlogProof needs the entry or its leaf hash');
  const opened = openCheckpoint(p.checkpoint, options.verifiers, options);
  const cp = opened.checkpoint;
  if (p.index >= cp.size) throw new TlogError('PROOF_FAILED', `index ${p.index} is not below the checkpoint size ${cp.size}`);
  if (!verifyInclusion(p.index, cp.size, leafHash, p.proof, cp.rootHash, hasher)) {
    throw new TlogError('PROOF_FAILED', `inclusion proof of index ${p.index} in tree ${cp.size} does not verify`);
  }
  return p.extra ? { index: p.index, checkpoint: cp, opened, extra: p.extra } : { index: p.index, checkpoint: cp, opened };
}
