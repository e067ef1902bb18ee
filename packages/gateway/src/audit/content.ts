/**
 * Content retention (opt-in, `audit.content_retention`): the exact request and response bytes that a
 * `request` record commits to, sealed with AES-256-GCM and kept in the erasable `audit_content`
 * table beside the commitment salts — never in the log. `sovra audit open ID` decrypts them and checks
 * them against the record's commitments; `sovra audit erase ID` deletes them with the salt.
 *
 * Format of one sealed record (`audit_content` row):
 * - `key_id`: 8 lowercase hex digits, the first 4 bytes of SHA-256("sovra-audit-content-key\n" ‖ key),
 *   naming the key that sealed it (the key itself is never stored with the data);
 * - `nonce`: 12 random bytes (a fresh nonce per record; NIST SP 800-38D §8.2.2 random construction —
 *   keep a key below 2^32 records, i.e. rotate long before that);
 * - `data`: ciphertext ‖ 16-byte GCM tag of the plaintext frame
 *   `0x01 (version) ‖ flags (bit 0 request present, bit 1 response present) ‖ u32 BE request length ‖
 *   request bytes ‖ response bytes`;
 * - additional authenticated data: UTF-8 of `sovra-audit-content/v1\n<entry id>\n<key id>`, so a row
 *   copied onto another entry's id does not open.
 *
 * Keys: 32 random bytes, base64, one per line in the key file (created with mode 0600 when missing) or
 * separated by commas / white space in `SOVRA_AUDIT_CONTENT_KEY`. The first key seals new records;
 * every key listed opens records (rotation: put a new key first, keep the old ones while their
 * records are retained).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { randomSlice } from '../random.ts';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Environment variable that may hold the content keys instead of the key file. */
export const CONTENT_KEY_ENV = 'SOVRA_AUDIT_CONTENT_KEY';
/** Bytes of a content key (AES-256). */
export const CONTENT_KEY_BYTES = 32;
/** Bytes of a GCM nonce. */
export const CONTENT_NONCE_BYTES = 12;
/** Bytes of a GCM tag. */
export const CONTENT_TAG_BYTES = 16;
/** Plaintext frame version. */
const FRAME_VERSION = 1;
/** Frame header bytes: version, flags, u32 request length. */
const HEADER_BYTES = 6;
/** Frame flags: a request body is present / a response body is present. */
const FLAG_REQUEST = 1;
const FLAG_RESPONSE = 2;

/** A decrypting/encrypting key and its id. */
export interface ContentKey {
  /** 8 lowercase hex digits (see the module doc). */
  readonly id: string;
  readonly key: Buffer;
}

/** The keys of a gateway: the first seals, all open. */
export interface ContentKeyring {
  readonly current: ContentKey;
  readonly byId: ReadonlyMap<string, ContentKey>;
  /** Where the keys came from (for messages): `SOVRA_AUDIT_CONTENT_KEY` or the key file path. */
  readonly source: string;
  /** True when this call created the key file. */
  readonly created: boolean;
  /** Set when the key file can be read by others than its owner (mode & 0o077): the text of a warning. */
  readonly warning?: string;
}

/** The bodies retained for one record; null where a body was not retained (absent, or over the size cap). */
export interface RetainedBodies {
  request: Uint8Array | null;
  response: Uint8Array | null;
}

/** One sealed record, as stored in `audit_content`. */
export interface SealedContent {
  /** Entry id (the request id). */
  id: string;
  keyId: string;
  nonce: Uint8Array;
  /** Ciphertext ‖ tag. */
  data: Uint8Array;
}

/** Why content could not be opened. `code`: `UNKNOWN_KEY` (no key with that id) or `CORRUPT` (authentication failed or bad frame). */
export class ContentError extends Error {
  constructor(
    readonly code: 'UNKNOWN_KEY' | 'CORRUPT',
    message: string,
  ) {
    super(message);
    this.name = 'ContentError';
  }
}

/** The key id of `key` (see the module doc). */
export function contentKeyId(key: Uint8Array): string {
  return createHash('sha256').update('sovra-audit-content-key\n').update(key).digest('hex').slice(0, 8);
}

/**
 * Parses key text: base64 keys of 32 bytes separated by newlines, commas or white space; `#` starts a
 * comment line in a file.
 * @throws Error naming `source` and the key's position (never the key) when a key is malformed or none is given
 */
export function parseContentKeys(text: string, source: string): ContentKey[] {
  const tokens = text
    .split('\n')
    .filter((l) => !l.trimStart().startsWith('#'))
    .join('\n')
    .split(/[\s,]+/)
    .filter((t) => t.length > 0);
  if (tokens.length === 0) throw new Error(`audit content key in ${source}: no key found`);
  return tokens.map((t, i) => {
    const key = /^[A-Za-z0-9+/]+={0,2}$/.test(t) ? Buffer.from(t, 'base64') : Buffer.alloc(0);
    if (key.length !== CONTENT_KEY_BYTES || key.toString('base64') !== t)
      throw new Error(`audit content key ${i + 1} in ${source} is not ${CONTENT_KEY_BYTES} bytes of canonical base64`);
    return { id: contentKeyId(key), key };
  });
}

function keyring(keys: ContentKey[], source: string, created: boolean, warning?: string): ContentKeyring {
  const byId = new Map<string, ContentKey>();
  for (const k of keys) if (!byId.has(k.id)) byId.set(k.id, k);
  return { current: keys[0]!, byId, source, created, ...(warning ? { warning } : {}) };
}

/**
 * Loads the content keys from `env[SOVRA_AUDIT_CONTENT_KEY]`, else from `keyFile`; with `create`, makes
 * the key file (one fresh key, mode 0600, parent folders created) when neither exists.
 * @returns undefined when there is no key and `create` is false
 * @throws Error when a key is malformed (the message names the source, never the key) or the file cannot be written
 */
export function loadContentKeyring(keyFile: string, env: NodeJS.ProcessEnv, opts: { create: boolean }): ContentKeyring | undefined {
  const fromEnv = env[CONTENT_KEY_ENV];
  if (fromEnv) return keyring(parseContentKeys(fromEnv, CONTENT_KEY_ENV), CONTENT_KEY_ENV, false);
  if (existsSync(keyFile)) {
    const mode = statSync(keyFile).mode & 0o777;
    const loose = (mode & 0o077) !== 0 ? `the content key file ${keyFile} has mode 0${mode.toString(8)}: others can read it; chmod 600 it` : undefined;
    return keyring(parseContentKeys(readFileSync(keyFile, 'utf8'), keyFile), keyFile, false, loose);
  }
  if (!opts.create) return undefined;
  const key = randomBytes(CONTENT_KEY_BYTES);
  mkdirSync(dirname(keyFile), { recursive: true });
  writeFileSync(keyFile, `# Sovra audit content keys (AES-256-GCM): the first seals new records, every key opens.\n${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(keyFile, 0o600);
  return keyring([{ id: contentKeyId(key), key }], keyFile, true);
}

const aad = (entryId: string, keyId: string): Buffer => Buffer.from(`sovra-audit-content/v1\n${entryId}\n${keyId}`, 'utf8');

/**
 * Seals the retained bodies of entry `entryId` under `key` (AES-256-GCM, fresh random nonce).
 * @throws RangeError when the request body is 4 GiB or more (never, with the configured caps)
 */
export function sealContent(key: ContentKey, entryId: string, bodies: RetainedBodies): SealedContent {
  const req = bodies.request;
  const res = bodies.response;
  if (req && req.byteLength > 0xffff_ffff) throw new RangeError('request body too large to retain');
  const header = Buffer.alloc(HEADER_BYTES);
  header[0] = FRAME_VERSION;
  header[1] = (req ? FLAG_REQUEST : 0) | (res ? FLAG_RESPONSE : 0);
  header.writeUInt32BE(req ? req.byteLength : 0, 2);
  const nonce = randomSlice(CONTENT_NONCE_BYTES); // from the pooled CSPRNG output (never handed out twice)
  const cipher = createCipheriv('aes-256-gcm', key.key, nonce);
  cipher.setAAD(aad(entryId, key.id));
  const parts = [cipher.update(header)];
  if (req) parts.push(cipher.update(req));
  if (res) parts.push(cipher.update(res));
  parts.push(cipher.final(), cipher.getAuthTag());
  return { id: entryId, keyId: key.id, nonce, data: Buffer.concat(parts) };
}

/**
 * Opens a sealed record with the keyring.
 * @throws ContentError `UNKNOWN_KEY` when no key has its key id, `CORRUPT` when authentication fails
 *   (wrong entry id, altered bytes) or the frame is malformed
 */
export function openContent(keys: ContentKeyring, sealed: SealedContent): RetainedBodies {
  const key = keys.byId.get(sealed.keyId);
  if (!key) throw new ContentError('UNKNOWN_KEY', `the content of ${sealed.id} was sealed with key ${sealed.keyId}, which is not in ${keys.source}`);
  const data = Buffer.from(sealed.data.buffer, sealed.data.byteOffset, sealed.data.byteLength);
  if (data.length < HEADER_BYTES + CONTENT_TAG_BYTES || sealed.nonce.byteLength !== CONTENT_NONCE_BYTES) throw new ContentError('CORRUPT', `the content of ${sealed.id} is truncated`);
  let plain: Buffer;
  try {
    const d = createDecipheriv('aes-256-gcm', key.key, sealed.nonce);
    d.setAAD(aad(sealed.id, sealed.keyId));
    d.setAuthTag(data.subarray(data.length - CONTENT_TAG_BYTES));
    plain = Buffer.concat([d.update(data.subarray(0, data.length - CONTENT_TAG_BYTES)), d.final()]);
  } catch {
    throw new ContentError('CORRUPT', `the content of ${sealed.id} does not authenticate (altered, or stored under another entry)`);
  }
  const flags = plain[1]!;
  const reqLen = plain.readUInt32BE(2);
  if (plain[0] !== FRAME_VERSION || flags > 3 || HEADER_BYTES + reqLen > plain.length || (!(flags & FLAG_REQUEST) && reqLen !== 0) || (!(flags & FLAG_RESPONSE) && HEADER_BYTES + reqLen !== plain.length))
    throw new ContentError('CORRUPT', `the content of ${sealed.id} has an unknown frame`);
  return {
    request: flags & FLAG_REQUEST ? plain.subarray(HEADER_BYTES, HEADER_BYTES + reqLen) : null,
    response: flags & FLAG_RESPONSE ? plain.subarray(HEADER_BYTES + reqLen) : null,
  };
}
