/**
 * `sovra audit …` commands (docs/audit.md):
 *
 *   sovra audit vkey                                   print the log's verifier key
 *   sovra audit verify URL --vkey KEY [--prev FILE] [--full] [--save FILE]
 *                                                      verify a log over HTTP, as an outside auditor
 *   sovra audit prove REQUEST_ID [--out DIR]           write <id>.tlog-proof and <id>.entry.json
 *   sovra audit check-proof FILE --vkey KEY [--entry ENTRY_FILE]
 *                                                      check an offline proof (no network)
 *   sovra audit erase REQUEST_ID                       delete an entry's commitment salt (and retained
 *                                                      content), log the erasure
 *   sovra audit open REQUEST_ID [--out DIR]            write <id>.salt and any retained <id>.request /
 *                                                      <id>.response, checked against the commitments
 *   sovra audit check-commitment ENTRY_FILE --salt FILE [--request FILE] [--response FILE]
 *                                                      check bytes against an entry's commitments (no network)
 *
 * Exit codes: 0 success, 1 failure (bad input, verification failure, missing entry), 3 fork or
 * rollback detected (`verify --prev`).
 */
import { chmodSync, existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  TlogError,
  consistencyProofFromTiles,
  createEd25519Verifier,
  createFetchTileReader,
  encodeBase64,
  formatTlogProof,
  inclusionProofFromTiles,
  openCheckpoint,
  parseVerifierKey,
  readEntryFromBundles,
  verifyConsistency,
  verifyLogFromTiles,
  verifyTlogProof,
  type Checkpoint,
} from '@sovra/tlog';
import { createNodeEd25519Signer, nodeTreeHasher } from '@sovra/tlog/node';
import type { Store } from '../store/db.ts';
import { randomId } from '../keys/keys.ts';
import { AuditStorage } from './storage.ts';
import { readSigningKey } from './signing-key.ts';
import { commitment, decodeRecord, encodeRecord, erasureRecord, SALT_BYTES, type RequestRecord } from './record.ts';
import { openContent, type ContentKeyring, type RetainedBodies } from './content.ts';

/** Where CLI output goes (tests capture it). */
export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

/** Exit code for a detected fork or rollback. */
export const EXIT_FORK = 3;

/** Options of the audit commands (from the command line). */
export interface AuditCliOptions {
  vkey?: string | undefined;
  prev?: string | undefined;
  full?: boolean | undefined;
  save?: string | undefined;
  out?: string | undefined;
  entry?: string | undefined;
  salt?: string | undefined;
  request?: string | undefined;
  response?: string | undefined;
}

/** A vkey given inline, or the path of a file holding one. */
function loadVkey(v: string | undefined): string {
  if (!v) throw new Error('--vkey KEY is required (the log\'s verifier key, obtained out of band; see `sovra audit vkey`)');
  const text = existsSync(v) ? readFileSync(v, 'utf8').trim() : v.trim();
  parseVerifierKey(text);
  return text;
}

/** `http://host:port` → `http://host:port/audit`; a URL with a path is taken as the prefix itself. */
export function auditPrefix(url: string): string {
  const u = new URL(url);
  const base = url.replace(/\/+$/, '');
  return u.pathname === '/' || u.pathname === '' ? `${base}/audit` : base;
}

const safeName = (id: string): string => id.replace(/[^A-Za-z0-9._-]/g, '_');

/**
 * `sovra audit verify`: fetches the checkpoint and tiles, verifies the signature with the pinned
 * vkey, recomputes the root from the tiles (`--full`: every tile and entry bundle), and with `--prev`
 * checks the log only grew since the saved checkpoint.
 * @returns exit code (0 ok, 1 failure, 3 fork/rollback)
 */
export async function auditVerify(url: string, o: AuditCliOptions, io: CliIo, fetchFn: typeof fetch = fetch): Promise<number> {
  const vkey = loadVkey(o.vkey);
  const verifier = createEd25519Verifier(vkey);
  const origin = parseVerifierKey(vkey).name;
  const prefix = auditPrefix(url);
  const reader = createFetchTileReader(prefix, fetchFn);
  let note: string;
  let cp: Checkpoint;
  try {
    note = await reader.readCheckpoint();
    cp = openCheckpoint(note, [verifier], { origin }).checkpoint;
  } catch (err) {
    io.err(`VERIFICATION FAILED: the checkpoint at ${prefix}/checkpoint does not verify with ${origin}'s key: ${(err as Error).message}\n`);
    return 1;
  }
  let prev: Checkpoint | undefined;
  if (o.prev) {
    try {
      prev = openCheckpoint(readFileSync(o.prev, 'utf8'), [verifier], { origin }).checkpoint;
    } catch (err) {
      io.err(`VERIFICATION FAILED: the saved checkpoint ${o.prev} is not a checkpoint signed by ${origin}'s key: ${(err as Error).message}\n`);
      return 1;
    }
  }
  const full = o.full === true;
  let report;
  try {
    report = await verifyLogFromTiles(cp, reader, { mode: full ? 'full' : 'root', entries: full, hasher: nodeTreeHasher });
  } catch (err) {
    io.err(`VERIFICATION FAILED: the log's tiles do not match its signed checkpoint (size ${cp.size}): ${(err as Error).message}\n`);
    return 1;
  }
  if (prev) {
    const fork = (why: string): number => {
      io.err(
        `FORK OR ROLLBACK DETECTED: ${why}\n` +
          `  saved:   size ${prev!.size} root ${encodeBase64(prev!.rootHash)}\n` +
          `  current: size ${cp.size} root ${encodeBase64(cp.rootHash)}\n` +
          `  Both checkpoints carry valid signatures of ${origin}: keep them as evidence.\n`,
      );
      return EXIT_FORK;
    };
    if (prev.size > cp.size) return fork(`the log shrank from ${prev.size} to ${cp.size} entries`);
    let ok = false;
    try {
      const proof = await consistencyProofFromTiles(prev.size, cp.size, reader, nodeTreeHasher);
      ok = verifyConsistency(prev.size, cp.size, prev.rootHash, cp.rootHash, proof, nodeTreeHasher);
    } catch (err) {
      if (!(err instanceof TlogError)) throw err;
    }
    if (!ok) return fork(`the current tree is not an extension of the saved one (no valid consistency proof ${prev.size} → ${cp.size})`);
  }
  io.out(
    `OK: ${origin} verified at size ${cp.size}, root ${encodeBase64(cp.rootHash)}\n` +
      `  mode ${report.mode}: ${report.tilesRead} tiles, ${report.bundlesRead} entry bundles, ${report.entriesVerified} entries checked\n` +
      (prev ? `  consistent with the saved checkpoint of size ${prev.size}\n` : ''),
  );
  if (o.save) {
    writeFileSync(o.save, note);
    io.out(`  checkpoint saved to ${o.save}\n`);
  }
  return 0;
}

/**
 * `sovra audit prove`: builds a C2SP tlog-proof for entry `id` against the latest checkpoint from the
 * local store and writes `<id>.tlog-proof` and `<id>.entry.json` (the exact entry bytes) into `o.out`
 * (default: the current folder). Both files together are checked offline by `check-proof`.
 */
export async function auditProve(store: Store, id: string, o: AuditCliOptions, io: CliIo): Promise<number> {
  const storage = new AuditStorage(store);
  const index = await storage.indexOf(id);
  if (index === undefined) {
    io.err((await storage.queuedEntry(id)) ? `entry ${id} is queued but not integrated yet; retry in a few seconds (is the server running?)\n` : `no audit entry with id ${id}\n`);
    return 1;
  }
  const latest = await storage.latestCheckpoint();
  if (!latest || index >= latest.size) {
    io.err(`entry ${id} (index ${index}) is not covered by a signed checkpoint yet; retry in a few seconds\n`);
    return 1;
  }
  const proof = await inclusionProofFromTiles(index, latest.size, storage, nodeTreeHasher, storage.tileHashes);
  const text = formatTlogProof({ index, proof, checkpoint: latest.note });
  const entry = await readEntryFromBundles(index, latest.size, storage);
  const vkey = await storage.getMeta('vkey');
  if (vkey) verifyTlogProof(text, { verifiers: [createEd25519Verifier(vkey)], entry, hasher: nodeTreeHasher }); // self-check
  const dir = resolve(o.out ?? '.');
  mkdirSync(dir, { recursive: true });
  const proofFile = join(dir, `${safeName(id)}.tlog-proof`);
  const entryFile = join(dir, `${safeName(id)}.entry.json`);
  writeFileSync(proofFile, text);
  writeFileSync(entryFile, entry);
  io.out(`wrote ${proofFile} (index ${index}, checkpoint size ${latest.size})\nwrote ${entryFile}\n`);
  return 0;
}

/** `sovra audit check-proof`: verifies an offline tlog-proof and its entry with the pinned vkey only. */
export function auditCheckProof(file: string, o: AuditCliOptions, io: CliIo): number {
  const vkey = loadVkey(o.vkey);
  const entryFile = o.entry ?? file.replace(/\.tlog-proof$/, '') + '.entry.json';
  if (!existsSync(entryFile)) {
    io.err(`the entry file ${entryFile} is missing (give it with --entry FILE)\n`);
    return 1;
  }
  const entry = new Uint8Array(readFileSync(entryFile));
  try {
    const r = verifyTlogProof(readFileSync(file, 'utf8'), {
      verifiers: [createEd25519Verifier(vkey)],
      origin: parseVerifierKey(vkey).name,
      entry,
      hasher: nodeTreeHasher,
    });
    let what = '';
    try {
      const rec = decodeRecord(entry);
      what = ` (${rec.type} ${rec.id})`;
    } catch {
      /* not a Sovra record: fine, the log layer does not parse entries */
    }
    io.out(`OK: entry${what} is at index ${r.index} of ${r.checkpoint.origin}, in the signed tree of size ${r.checkpoint.size}, root ${encodeBase64(r.checkpoint.rootHash)}\n`);
    return 0;
  } catch (err) {
    io.err(`PROOF FAILED: ${(err as Error).message}\n`);
    return 1;
  }
}

/** Reads entry `id`'s exact bytes: still queued, or integrated (from the entry bundles). */
async function entryBytes(storage: AuditStorage, id: string): Promise<Uint8Array | undefined> {
  const queued = await storage.queuedEntry(id);
  if (queued) return queued;
  const index = await storage.indexOf(id);
  const size = await storage.getMeta('integrated_size');
  if (index === undefined || size === undefined) return undefined;
  return readEntryFromBundles(index, BigInt(size), storage);
}

/** Writes a file readable by its owner only (also when it existed with a looser mode). */
function writePrivate(file: string, data: string | Uint8Array): void {
  writeFileSync(file, data, { mode: 0o600 });
  chmodSync(file, 0o600);
}

/** Compares `bytes` with a hex commitment under `salt`; the verdict as text. */
function checkOne(what: string, salt: Uint8Array, bytes: Uint8Array, committed: string | null): { ok: boolean; text: string } {
  if (committed === null) return { ok: false, text: `${what}: the entry commits to no ${what} body (it was never read), so none can match` };
  const ok = commitment(salt, bytes) === committed;
  return { ok, text: ok ? `${what}: ${bytes.byteLength} bytes, MATCH the entry's commitment` : `${what}: ${bytes.byteLength} bytes, DO NOT MATCH the entry's commitment` };
}

/**
 * `sovra audit open`: discloses what the operator holds for entry `id` — its commitment salt
 * (`<id>.salt`, hex) and, with content retention, the decrypted request and response bytes
 * (`<id>.request`, `<id>.response`) — into `o.out` (default: the current folder), together with the
 * exact entry bytes (`<id>.entry.json`), and checks every retained body against the entry's commitments.
 * The files are what an auditor needs for `check-commitment`.
 * @param loadKeys loads the content keyring (undefined when there is no key: retained content cannot
 *   be opened); called only when the entry has retained content
 * @throws Error from `loadKeys` (a malformed key)
 * @returns exit code: 0 when the salt exists and every retained body matches; 1 otherwise (no such
 *   entry, erased, not a request entry, a body that does not match, content that does not open)
 */
export async function auditOpen(store: Store, id: string, loadKeys: () => ContentKeyring | undefined, o: AuditCliOptions, io: CliIo): Promise<number> {
  const storage = new AuditStorage(store);
  const entry = await entryBytes(storage, id);
  if (!entry) {
    io.err(`no audit entry with id ${id}\n`);
    return 1;
  }
  const rec = decodeRecord(entry);
  if (rec.type !== 'request') {
    io.err(`entry ${id} is an ${rec.type} entry: it has no commitments to open\n`);
    return 1;
  }
  const salt = await storage.saltOf(id);
  if (!salt) {
    io.err(`entry ${id} has no commitment salt: it was erased (sovra audit erase), so its commitments can no longer be opened\n`);
    return 1;
  }
  const dir = resolve(o.out ?? '.');
  mkdirSync(dir, { recursive: true });
  const base = join(dir, safeName(id));
  writeFileSync(`${base}.entry.json`, entry);
  writePrivate(`${base}.salt`, Buffer.from(salt).toString('hex') + '\n');
  io.out(`entry ${id} (${rec.operation}, tenant ${rec.tenant ?? '-'}, ${rec.time})\nwrote ${base}.entry.json\nwrote ${base}.salt\n`);
  const sealed = await storage.contentOf(id);
  if (!sealed) {
    io.out('no content retained for this entry (retention off, tenant not retained, or a body over max_body_bytes);\n' + `  check bytes someone presents with: sovra audit check-commitment ${base}.entry.json --salt ${base}.salt --request FILE --response FILE\n`);
    return 0;
  }
  const keys = loadKeys();
  if (!keys) {
    io.err(`content is retained for ${id}, but no content key is configured (audit.content_retention.key_file or SOVRA_AUDIT_CONTENT_KEY)\n`);
    return 1;
  }
  let bodies: RetainedBodies;
  try {
    bodies = openContent(keys, sealed);
  } catch (err) {
    io.err(`the retained content of ${id} cannot be opened: ${(err as Error).message}\n`);
    return 1;
  }
  let ok = true;
  for (const what of ['request', 'response'] as const) {
    const bytes = bodies[what];
    if (!bytes) {
      io.out(`${what}: not retained (over max_body_bytes, or no body)\n`);
      continue;
    }
    writePrivate(`${base}.${what}`, bytes);
    const r = checkOne(what, salt, bytes, rec.commitments[what]);
    ok &&= r.ok;
    (r.ok ? io.out : io.err)(`${r.text}\nwrote ${base}.${what}\n`);
  }
  return ok ? 0 : 1;
}

/**
 * `sovra audit check-commitment`: checks request and/or response bytes against the commitments of an
 * entry file (the exact entry bytes, e.g. from `prove` or `open`) with the disclosed salt — offline.
 * @returns exit code: 0 when every body given matches, 1 otherwise
 * @throws Error (bad usage) when no body is given, or the salt or entry file is malformed
 */
export function auditCheckCommitment(entryFile: string, o: AuditCliOptions, io: CliIo): number {
  if (!o.salt) throw new Error('--salt FILE is required (the entry\'s salt, hex, as `sovra audit open` writes it)');
  if (!o.request && !o.response) throw new Error('give the bytes to check: --request FILE and/or --response FILE');
  const saltHex = readFileSync(o.salt, 'utf8').trim();
  if (!/^[0-9a-f]+$/i.test(saltHex) || saltHex.length !== SALT_BYTES * 2) throw new Error(`${o.salt} does not hold a ${SALT_BYTES}-byte salt in hex`);
  const salt = Buffer.from(saltHex, 'hex');
  let rec: RequestRecord;
  try {
    const r = decodeRecord(new Uint8Array(readFileSync(entryFile)));
    if (r.type !== 'request' || typeof r.commitments !== 'object' || r.commitments === null) throw new Error(`it is not a request entry`);
    rec = r;
  } catch (err) {
    throw new Error(`${entryFile} is not a Sovra request entry: ${(err as Error).message}`);
  }
  let ok = true;
  for (const what of ['request', 'response'] as const) {
    const file = o[what];
    if (!file) continue;
    const r = checkOne(what, salt, new Uint8Array(readFileSync(file)), rec.commitments[what]);
    ok &&= r.ok;
    (r.ok ? io.out : io.err)(`${r.text} (${file}, entry ${rec.id})\n`);
  }
  return ok ? 0 : 1;
}

/**
 * Erases entry `id`'s commitment salt (and any retained content) and appends an
 * `erasure` entry, in one transaction. The entry stays in the log and every proof still verifies;
 * its commitments can no longer be opened.
 * @returns the erasure entry's id
 * @throws Error if there is no such entry or its salt is already gone
 */
export async function eraseEntry(store: Store, id: string, now: number = Date.now()): Promise<string> {
  const storage = new AuditStorage(store);
  // Queue first: an entry integrated between the two reads is then found in the index.
  const exists = (await storage.queuedEntry(id)) !== undefined || (await storage.indexOf(id)) !== undefined;
  if (!exists) throw new Error(`no audit entry with id ${id}`);
  const eraseId = randomId('era');
  const bytes = encodeRecord(erasureRecord({ id: eraseId, timeMs: now, target: id }));
  await storage.eraseSalt(id, { id: eraseId, bytes }, now);
  return eraseId;
}

/** `sovra audit vkey`: the stored vkey, else the one of the configured signing key. */
export async function auditVkey(store: Store, keyFile: string, env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  const stored = await new AuditStorage(store).getMeta('vkey');
  if (stored) {
    io.out(stored + '\n');
    return 0;
  }
  const key = readSigningKey(keyFile, env);
  if (!key) {
    io.err('the audit log has no key yet: start the server once (it creates the key and the log)\n');
    return 1;
  }
  io.out(createNodeEd25519Signer(key.name, key.seed).vkey + '\n');
  return 0;
}
