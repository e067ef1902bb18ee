/**
 * The transparency log's read API under `/audit` (spec §9, §10): the signed checkpoint, hash tiles,
 * entry bundles, inclusion / consistency proofs, the offline tlog-proof, and the vkey.
 *
 * **No API key is required**: auditors are outside parties, and no body ever contains request
 * content (entries hold only metadata and salted commitments). Every response carries
 * `Access-Control-Allow-Origin: *` so browser-based auditors work.
 *
 * Only what the latest *published* checkpoint covers is served: tiles and bundles of its size (and
 * the narrower, immutable ones of earlier sizes), proofs up to its size. Unknown, malformed and
 * not-yet-published resources answer 404; malformed or out-of-range proof queries 400 (spec §10).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  bundleWidth,
  emptyRoot,
  formatConsistencyProofJSON,
  formatInclusionProofJSON,
  formatTlogProof,
  inclusionProofFromTiles,
  consistencyProofFromTiles,
  parseDecimal,
  parseTilePath,
  rootHashFromTiles,
  tileWidth,
  decodeHashTile,
} from '@sovra/tlog';
import { nodeTreeHasher } from '@sovra/tlog/node';
import type { PublishedCheckpoint } from '../../audit/integrator.ts';
import type { AuditStorage } from '../../audit/storage.ts';
import { GatewayError } from '../errors.ts';

/** What the routes read; `null` while the log is not open yet (then 503). */
export interface AuditReadSource {
  /** Latest published checkpoint. */
  latest(): PublishedCheckpoint | null;
  /** The log's vkey line (spec §8.3). */
  vkey(): string | null;
  /** Stored tiles, bundles, checkpoints and the leaf index. */
  storage(): AuditStorage | null;
}

const IMMUTABLE = 'public, max-age=31536000, immutable';
const CORS = { 'access-control-allow-origin': '*' };

/** A read-API error: the shared {@link GatewayError}, typed by status as the API always did. */
function httpError(status: number, code: string, message: string, param: string | null = null): GatewayError {
  const type = status === 400 ? 'invalid_request_error' : status === 404 ? 'not_found_error' : 'api_error';
  return new GatewayError(status, type, code, message, param);
}

const bad = (param: string, message: string) => httpError(400, 'invalid_parameter', message, param);

/** The single string value of query parameter `name`, or undefined; repeated parameters are rejected. */
function param(q: Record<string, unknown>, name: string): string | undefined {
  const v = q[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw bad(name, `'${name}' must be given once`);
  return v;
}

/** A canonical decimal query number (spec §1: no sign, no leading zeros, < 2^63). */
function decimal(q: Record<string, unknown>, name: string): bigint | undefined {
  const v = param(q, name);
  if (v === undefined) return undefined;
  try {
    return parseDecimal(v, name);
  } catch {
    throw bad(name, `'${name}' must be a decimal integer without sign or leading zeros`);
  }
}

/** Registers the `/audit/*` routes. */
export function registerAuditRoutes(app: FastifyInstance, src: AuditReadSource): void {
  const ready = (): { latest: PublishedCheckpoint; storage: AuditStorage } => {
    const latest = src.latest();
    const storage = src.storage();
    if (!latest || !storage) throw httpError(503, 'not_ready', 'The audit log is starting.');
    return { latest, storage };
  };
  const handle =
    (fn: (req: FastifyRequest, reply: FastifyReply) => Promise<{ type: string; body: string | Uint8Array; cache: string }>) =>
    async (req: FastifyRequest, reply: FastifyReply) => {
      try {
        const r = await fn(req, reply);
        return reply
          .code(200)
          .headers({ ...CORS, 'content-type': r.type, 'cache-control': r.cache })
          .send(typeof r.body === 'string' ? r.body : Buffer.from(r.body.buffer, r.body.byteOffset, r.body.byteLength));
      } catch (err) {
        const e = err instanceof GatewayError ? err : httpError(500, 'internal_error', 'The audit log hit an internal error.');
        if (!(err instanceof GatewayError)) req.log.error({ err }, 'audit read API failed');
        return reply
          .code(e.status)
          .headers({ ...CORS, 'content-type': 'application/json', 'cache-control': 'no-cache' })
          .send(e.body());
      }
    };

  app.get(
    '/audit/checkpoint',
    handle(async () => ({ type: 'text/plain; charset=utf-8', body: ready().latest.note, cache: 'no-cache' })),
  );

  app.get(
    '/audit/vkey',
    handle(async () => {
      ready();
      return { type: 'text/plain; charset=utf-8', body: `${src.vkey()}\n`, cache: 'no-cache' };
    }),
  );

  app.get(
    '/audit/tile/*',
    handle(async (req) => {
      const { latest, storage } = ready();
      const rest = (req.params as Record<string, string>)['*'] ?? '';
      const notFound = httpError(404, 'not_found', 'No such tile.');
      // Tile paths are canonical (spec §9.2): a percent-encoded character is a different path.
      if (req.url.includes('%')) throw notFound;
      let p;
      try {
        p = parseTilePath(`tile/${rest}`);
      } catch {
        throw notFound;
      }
      let data: Uint8Array | undefined;
      if (p.kind === 'tile') {
        const w = tileWidth(p.level, p.index, latest.size);
        if (w === 0 || p.width > w) throw notFound;
        data = await storage.tileExact(p.level, p.index, p.width);
      } else {
        const w = bundleWidth(p.index, latest.size);
        if (w === 0 || p.width > w) throw notFound;
        data = await storage.bundleExact(p.index, p.width);
      }
      if (!data) throw notFound;
      return { type: 'application/octet-stream', body: data, cache: IMMUTABLE };
    }),
  );

  app.get(
    '/audit/proof/inclusion',
    handle(async (req) => {
      const { latest, storage } = ready();
      const q = req.query as Record<string, unknown>;
      const explicit = decimal(q, 'tree_size');
      const treeSize = explicit ?? latest.size;
      if (treeSize > latest.size) throw bad('tree_size', `'tree_size' exceeds the latest checkpoint size ${latest.size}`);
      const leafHex = param(q, 'leaf_hash');
      const idxParam = decimal(q, 'index');
      if ((leafHex === undefined) === (idxParam === undefined)) throw bad('index', "give exactly one of 'index' and 'leaf_hash'");
      let index: bigint;
      if (leafHex !== undefined) {
        if (!/^[0-9a-f]{64}$/.test(leafHex)) throw bad('leaf_hash', "'leaf_hash' must be 64 lowercase hex digits");
        const found = await storage.indexOfLeafHash(leafHex);
        if (found === undefined || found >= treeSize) throw httpError(404, 'not_found', `No entry with that leaf hash in the tree of size ${treeSize}.`);
        index = found;
      } else {
        index = idxParam!;
        if (index >= treeSize) throw bad('index', `'index' must be below the tree size ${treeSize}`);
      }
      const proof = await inclusionProofFromTiles(index, treeSize, storage, nodeTreeHasher, storage.tileHashes);
      const t = index / 256n;
      const leafTile = await storage.readTile(0, t, tileWidth(0, t, treeSize));
      const leafHash = decodeHashTile(leafTile, tileWidth(0, t, treeSize))[Number(index % 256n)]!;
      const atLatest = treeSize === latest.size;
      const rootHash = atLatest ? latest.rootHash : await rootHashFromTiles(treeSize, storage, nodeTreeHasher, storage.tileHashes);
      const checkpoint = atLatest ? latest.note : await storage.checkpointAt(treeSize);
      return {
        type: 'application/json',
        body: formatInclusionProofJSON({ leafIndex: index, treeSize, leafHash, proof, rootHash, ...(checkpoint ? { checkpoint } : {}) }),
        cache: explicit === undefined ? 'no-cache' : IMMUTABLE,
      };
    }),
  );

  app.get(
    '/audit/proof/consistency',
    handle(async (req) => {
      const { latest, storage } = ready();
      const q = req.query as Record<string, unknown>;
      const oldSize = decimal(q, 'old_size');
      if (oldSize === undefined) throw bad('old_size', "'old_size' is required");
      const explicit = decimal(q, 'new_size');
      const newSize = explicit ?? latest.size;
      if (newSize > latest.size) throw bad('new_size', `'new_size' exceeds the latest checkpoint size ${latest.size}`);
      if (oldSize > newSize) throw bad('old_size', "'old_size' exceeds 'new_size'");
      const proof = await consistencyProofFromTiles(oldSize, newSize, storage, nodeTreeHasher, storage.tileHashes);
      const oldRoot = oldSize === 0n ? emptyRoot() : await rootHashFromTiles(oldSize, storage, nodeTreeHasher, storage.tileHashes);
      const atLatest = newSize === latest.size;
      const newRoot = atLatest ? latest.rootHash : await rootHashFromTiles(newSize, storage, nodeTreeHasher, storage.tileHashes);
      const checkpoint = atLatest ? latest.note : await storage.checkpointAt(newSize);
      return {
        type: 'application/json',
        body: formatConsistencyProofJSON({ oldSize, newSize, oldRoot, newRoot, proof, ...(checkpoint ? { checkpoint } : {}) }),
        cache: explicit === undefined ? 'no-cache' : IMMUTABLE,
      };
    }),
  );

  app.get(
    '/audit/proof/tlog-proof',
    handle(async (req) => {
      const { latest, storage } = ready();
      const index = decimal(req.query as Record<string, unknown>, 'index');
      if (index === undefined) throw bad('index', "'index' is required");
      if (index >= latest.size) throw bad('index', `'index' must be below the tree size ${latest.size}`);
      const proof = await inclusionProofFromTiles(index, latest.size, storage, nodeTreeHasher, storage.tileHashes);
      return { type: 'text/plain; charset=utf-8', body: formatTlogProof({ index, proof, checkpoint: latest.note }), cache: 'no-cache' };
    }),
  );
}
