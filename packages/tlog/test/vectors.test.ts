/**
 * Every test vector of spec §14, reproduced byte for byte (fixtures/spec-vectors.json is a verbatim
 * copy of the spec's tables and code blocks).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  InMemoryTree,
  MemoryTileStore,
  TileIntegrator,
  TreeBuilder,
  bundlesForSize,
  computeKeyId,
  consistencyProof,
  createCosignatureVerifier,
  createCosigner,
  createEd25519Signer,
  createEd25519Verifier,
  cosignatureMessage,
  decodeBase64,
  decodeHash,
  emptyRoot,
  encodeBase64,
  encodeEntryBundle,
  entryBundlePath,
  formatCheckpoint,
  formatConsistencyProofJSON,
  formatInclusionProofJSON,
  formatKeyId,
  formatTileIndex,
  formatTlogProof,
  formatVerifierKey,
  fromHex,
  hashLeaf,
  inclusionProof,
  merkleTreeHash,
  openCheckpoint,
  parseCheckpoint,
  parseTileIndex,
  parseVerifierKey,
  referenceConsistencyProof,
  referenceInclusionProof,
  rootHashFromTiles,
  sha256,
  signCheckpoint,
  tileLayout,
  tilePath,
  tilesForSize,
  toHex,
  utf8Encode,
  verifyConsistency,
  verifyConsistencyProofJSON,
  verifyInclusion,
  verifyInclusionProofJSON,
  verifyTlogProof,
  addSignatureLines,
  SIG_TYPE_COSIGNATURE_ED25519,
  SIG_TYPE_ED25519,
} from '../src/index.ts';
import { createNodeEd25519Signer, nodeTreeHasher } from '../src/node.ts';
import { leafEntry, vectors as V } from './helpers/util.ts';

const b64 = encodeBase64;
const leafHashes8 = V.leaves.map((l) => hashLeaf(utf8Encode(l.entry)));
const tree8 = new InMemoryTree();
for (let i = 0; i < 8; i++) tree8.appendEntry(leafEntry(i));
const logSeed = fromHex(V.logKey.seedHex);
const witnessSeed = fromHex(V.witness.seedHex);

describe('spec §14: leaf hashes', () => {
  for (const l of V.leaves) {
    it(`leaf hash of ${l.entry}`, () => {
      const h = hashLeaf(utf8Encode(l.entry));
      assert.equal(toHex(h), l.hex);
      assert.equal(b64(h), l.base64);
      assert.equal(toHex(nodeTreeHasher.hashLeaf(utf8Encode(l.entry))), l.hex);
    });
  }
});

describe('spec §14: root hashes', () => {
  for (const r of V.roots) {
    it(`root of size ${r.size}`, () => {
      const ref = merkleTreeHash(leafHashes8.slice(0, r.size));
      assert.equal(toHex(ref), r.hex);
      assert.equal(b64(ref), r.base64);
      assert.equal(b64(tree8.root(r.size)), r.base64);
      const b = new TreeBuilder();
      for (let i = 0; i < r.size; i++) b.appendLeafHash(leafHashes8[i]!);
      assert.equal(b64(b.root()), r.base64);
    });
  }
  it('size 0 root is SHA-256("") and not zeros', () => {
    assert.equal(b64(emptyRoot()), V.roots[0]!.base64);
    assert.equal(b64(sha256(new Uint8Array(0))), V.roots[0]!.base64);
  });

  describe('larger trees (tiled)', () => {
    // One 70 000-leaf tree, built three ways: in-memory tree (noble SHA-256), incremental builder,
    // and the tile integrator (node:crypto SHA-256) whose tiles are then read back.
    const big = new InMemoryTree();
    const builder = new TreeBuilder({ hasher: nodeTreeHasher });
    const integrator = new TileIntegrator({ hasher: nodeTreeHasher });
    const store = new MemoryTileStore();
    const builderRoots = new Map<number, string>();
    const flushRoots = new Map<number, string>();
    const sizes = new Set(V.largeRoots.map((r) => r.size));
    before(() => {
      for (let i = 0; i < 70000; i++) {
        const e = leafEntry(i);
        big.appendEntry(e);
        builder.appendEntry(e);
        integrator.appendEntry(e);
        if (sizes.has(i + 1)) {
          builderRoots.set(i + 1, b64(builder.root()));
          const res = integrator.flush();
          store.write(res);
          flushRoots.set(i + 1, b64(res.rootHash));
        }
      }
    });
    for (const r of V.largeRoots) {
      it(`root of size ${r.size}`, async () => {
        assert.equal(b64(big.root(r.size)), r.base64);
        assert.equal(builderRoots.get(r.size), r.base64);
        assert.equal(flushRoots.get(r.size), r.base64);
        assert.equal(b64(await rootHashFromTiles(r.size, store)), r.base64);
      });
    }
  });
});

describe('spec §14: inclusion proofs', () => {
  for (const v of V.inclusion) {
    it(`leaf ${v.index} in tree of size ${v.size}`, () => {
      const leaf = leafHashes8[v.index]!;
      assert.equal(b64(leaf), v.leafHash);
      assert.equal(b64(tree8.root(v.size)), v.root);
      const proof = inclusionProof(v.index, v.size, tree8.reader);
      assert.deepEqual(proof.map(b64), v.proof);
      assert.deepEqual(proof.map(toHex), v.proofHex);
      assert.deepEqual(referenceInclusionProof(v.index, leafHashes8.slice(0, v.size)).map(b64), v.proof);
      assert.equal(verifyInclusion(v.index, v.size, decodeHash(v.leafHash), v.proof.map((p) => decodeHash(p)), decodeHash(v.root)), true);
    });
  }
});

describe('spec §14: consistency proofs', () => {
  for (const v of V.consistency) {
    it(`from size ${v.oldSize} to size ${v.newSize}`, () => {
      assert.equal(b64(tree8.root(v.oldSize)), v.oldRoot);
      assert.equal(b64(tree8.root(v.newSize)), v.newRoot);
      const proof = consistencyProof(v.oldSize, v.newSize, tree8.reader);
      assert.deepEqual(proof.map(b64), v.proof);
      assert.deepEqual(proof.map(toHex), v.proofHex);
      assert.deepEqual(referenceConsistencyProof(v.oldSize, leafHashes8.slice(0, v.newSize)).map(b64), v.proof);
      assert.equal(
        verifyConsistency(v.oldSize, v.newSize, decodeHash(v.oldRoot), decodeHash(v.newRoot), v.proof.map((p) => decodeHash(p))),
        true,
      );
    });
  }
  it('m > n is an error, never a proof', () => {
    assert.throws(() => consistencyProof(8, 7, tree8.reader), { code: 'INVALID_ARGUMENT' });
    assert.equal(verifyConsistency(8, 7, tree8.root(8), tree8.root(7), []), false);
  });
});

describe('spec §14: log key, checkpoint and signature', () => {
  const signer = createEd25519Signer(V.logKey.name, logSeed);
  it('public key from the seed', () => {
    assert.equal(toHex(signer.publicKey), V.logKey.publicKeyHex);
  });
  it('key ID', () => {
    assert.equal(formatKeyId(computeKeyId(V.logKey.name, SIG_TYPE_ED25519, fromHex(V.logKey.publicKeyHex))), V.logKey.keyIdHex);
    assert.equal(formatKeyId(signer.keyId), V.logKey.keyIdHex);
  });
  it('verifier key', () => {
    assert.equal(formatVerifierKey(V.logKey.name, fromHex(V.logKey.publicKeyHex)), V.logKey.vkey);
    assert.equal(signer.vkey, V.logKey.vkey);
    const k = parseVerifierKey(V.logKey.vkey);
    assert.equal(k.name, V.logKey.name);
    assert.equal(toHex(k.publicKey), V.logKey.publicKeyHex);
  });
  it('checkpoint note text for size 8', () => {
    assert.equal(formatCheckpoint({ origin: V.logKey.name, size: 8, rootHash: tree8.root(8) }), V.checkpoint8Text);
    const cp = parseCheckpoint(V.checkpoint8Text);
    assert.equal(cp.size, 8n);
    assert.equal(b64(cp.rootHash), V.roots[8]!.base64);
  });
  it('signed checkpoint for size 8 (exact bytes), portable and node:crypto signers', () => {
    const cp = { origin: V.logKey.name, size: 8, rootHash: tree8.root(8) };
    assert.equal(signCheckpoint(cp, [signer]), V.signedCheckpoint8);
    assert.equal(signCheckpoint(cp, [createNodeEd25519Signer(V.logKey.name, logSeed)]), V.signedCheckpoint8);
    const opened = openCheckpoint(V.signedCheckpoint8, [createEd25519Verifier(V.logKey.vkey)]);
    assert.equal(opened.checkpoint.size, 8n);
  });
  it('decoded signature = key ID || Ed25519 signature over the note text', () => {
    const line = V.signedCheckpoint8.split('\n').at(-2)!;
    const sig = decodeBase64(line.split(' ').at(-1)!);
    assert.equal(sig.length, 68);
    assert.equal(toHex(sig), V.signature8Hex);
  });
  it('signed checkpoint for size 7', () => {
    assert.equal(signCheckpoint({ origin: V.logKey.name, size: 7, rootHash: tree8.root(7) }, [signer]), V.signedCheckpoint7);
    openCheckpoint(V.signedCheckpoint7, [createEd25519Verifier(V.logKey.vkey)], { origin: V.logKey.name });
  });
});

describe('spec §14: witness cosignature', () => {
  const w = createCosigner(V.witness.name, witnessSeed);
  it('witness public key', () => {
    assert.equal(toHex(w.publicKey), V.witness.publicKeyHex);
  });
  it('witness key ID (type 0x04)', () => {
    assert.equal(formatKeyId(computeKeyId(V.witness.name, SIG_TYPE_COSIGNATURE_ED25519, fromHex(V.witness.publicKeyHex))), V.witness.keyIdHex);
  });
  it('witness verifier key', () => {
    assert.equal(w.vkey, V.witness.vkey);
    assert.equal(formatVerifierKey(V.witness.name, fromHex(V.witness.publicKeyHex), SIG_TYPE_COSIGNATURE_ED25519), V.witness.vkey);
  });
  it('message the witness signs', () => {
    assert.equal(new TextDecoder().decode(cosignatureMessage(V.checkpoint8Text, V.witness.timestamp)), V.witness.message);
  });
  it('checkpoint with the log signature and the cosignature (exact bytes)', () => {
    const line = w.signatureLine(V.checkpoint8Text, V.witness.timestamp);
    assert.equal(addSignatureLines(V.signedCheckpoint8, [line]), V.witness.cosignedCheckpoint);
    const wv = createCosignatureVerifier(V.witness.vkey);
    const opened = openCheckpoint(V.witness.cosignedCheckpoint, [createEd25519Verifier(V.logKey.vkey)], {
      witnesses: [wv],
      witnessThreshold: 1,
    });
    assert.deepEqual(
      opened.cosignatures.map((c) => [c.name, c.timestamp]),
      [[V.witness.name, BigInt(V.witness.timestamp)]],
    );
  });
});

describe('spec §14: tiles and entry bundles', () => {
  for (const e of V.tiles.indexEncodings) {
    it(`index encoding ${e.index} → ${e.path}`, () => {
      assert.equal(formatTileIndex(e.index), e.path);
      assert.equal(parseTileIndex(e.path), BigInt(e.index));
    });
  }
  it('entry bundle tile/entries/000.p/3 for the tree of size 3', () => {
    const t = new TileIntegrator();
    for (let i = 0; i < 3; i++) t.appendEntry(leafEntry(i));
    const res = t.flush();
    assert.equal(res.bundles.length, 1);
    const b = res.bundles[0]!;
    assert.equal(entryBundlePath(b.index, b.width), V.tiles.bundle3Path);
    assert.equal(toHex(b.data), V.tiles.bundle3Hex);
    assert.equal(toHex(encodeEntryBundle([0, 1, 2].map(leafEntry))), V.tiles.bundle3Hex);
  });
  it('tile/0/000.p/8 for the tree of size 8', () => {
    const t = new TileIntegrator();
    for (let i = 0; i < 8; i++) t.appendEntry(leafEntry(i));
    const res = t.flush();
    const tile = res.tiles.find((x) => x.level === 0)!;
    assert.equal(tilePath(tile.level, tile.index, tile.width), V.tiles.tile8Path);
    assert.equal(tile.data.length, 256);
    assert.equal(toHex(tile.data), V.leaves.map((l) => l.hex).join(''));
    assert.equal(toHex(sha256(tile.data)), V.tiles.tile8Sha256Hex);
  });
  it('a tree of size 300 consists of exactly the listed resources', () => {
    const paths = [
      ...[...tilesForSize(300)].map((t) => tilePath(t.level, t.index, t.width)),
      ...[...bundlesForSize(300)].map((b) => entryBundlePath(b.index, b.width)),
    ];
    assert.deepEqual(paths.sort(), [...V.tiles.size300Paths].sort());
    const t = new TileIntegrator();
    for (let i = 0; i < 300; i++) t.appendEntry(leafEntry(i));
    const store = new MemoryTileStore();
    store.write(t.flush());
    assert.deepEqual(store.paths().sort(), [...V.tiles.size300Paths].sort());
  });
  it('tile/1/000.p/1 of the size-300 tree holds the root of the first 256 leaves', () => {
    const t = new TileIntegrator();
    for (let i = 0; i < 300; i++) t.appendEntry(leafEntry(i));
    const store = new MemoryTileStore();
    store.write(t.flush());
    assert.equal(b64(store.get(V.tiles.size300Level1Path)!), V.tiles.size300Level1Hash);
    assert.equal(V.tiles.size300Level1Hash, V.largeRoots.find((r) => r.size === 256)!.base64);
  });
  it('a tree of size 70000: 273 full + .p/112, 1 full + .p/17, .p/1', () => {
    assert.deepEqual(
      tileLayout(70000).map((l) => ({ level: l.level, fullTiles: Number(l.fullTiles), partialWidth: l.partialWidth })),
      V.tiles.size70000Layout,
    );
    assert.equal([...tilesForSize(70000)].length, 273 + 1 + 1 + 1 + 1);
  });
});

describe('spec §14: proof documents', () => {
  const verifier = createEd25519Verifier(V.logKey.vkey);
  it('inclusion proof JSON (leaf 5, tree size 8)', () => {
    const json = formatInclusionProofJSON({
      checkpoint: V.signedCheckpoint8,
      leafHash: tree8.leafHash(5),
      leafIndex: 5,
      proof: tree8.inclusionProof(5, 8),
      rootHash: tree8.root(8),
      treeSize: 8,
    });
    assert.equal(json, V.inclusionProofJSON);
    const r = verifyInclusionProofJSON(V.inclusionProofJSON, { verifiers: [verifier], origin: V.logKey.name, entry: leafEntry(5) });
    assert.equal(r.doc.leafIndex, 5n);
  });
  it('consistency proof JSON (3 → 7)', () => {
    const json = formatConsistencyProofJSON({
      oldSize: 3,
      newSize: 7,
      oldRoot: tree8.root(3),
      newRoot: tree8.root(7),
      proof: tree8.consistencyProof(3, 7),
    });
    assert.equal(json, V.consistencyProofJSON);
    const trusted = openCheckpoint(V.signedCheckpoint7, [verifier]).checkpoint;
    verifyConsistencyProofJSON(V.consistencyProofJSON, { trustedCheckpoint: trusted, trustedOld: { size: 3n, rootHash: tree8.root(3) } });
  });
  it('c2sp.org/tlog-proof@v1 document for leaf 5', () => {
    const doc = formatTlogProof({ index: 5, proof: tree8.inclusionProof(5, 8), checkpoint: V.signedCheckpoint8 });
    assert.equal(doc, V.tlogProof);
    const r = verifyTlogProof(V.tlogProof, { verifiers: [verifier], origin: V.logKey.name, entry: leafEntry(5) });
    assert.equal(r.index, 5n);
  });
});
