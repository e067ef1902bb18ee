/**
 * Proof documents (spec §10.1–§10.3): strict parsing and offline verification failures.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  InMemoryTree,
  TlogError,
  createCosignatureVerifier,
  createEd25519Signer,
  createEd25519Verifier,
  decodeHash,
  encodeBase64,
  formatInclusionProofJSON,
  formatTlogProof,
  fromHex,
  openCheckpoint,
  parseConsistencyProofJSON,
  parseInclusionProofJSON,
  parseTlogProof,
  signCheckpoint,
  verifyConsistencyProofJSON,
  verifyInclusionProofJSON,
  verifyTlogProof,
} from '../src/index.ts';
import { leafEntry, vectors as V } from './helpers/util.ts';

const verifier = createEd25519Verifier(V.logKey.vkey);
const signer = createEd25519Signer(V.logKey.name, fromHex(V.logKey.seedHex));
const tree = new InMemoryTree();
for (let i = 0; i < 8; i++) tree.appendEntry(leafEntry(i));
const inc = JSON.parse(V.inclusionProofJSON) as Record<string, unknown>;
const con = JSON.parse(V.consistencyProofJSON) as Record<string, unknown>;

function rejectsCode(fn: () => unknown, code: string, label?: string): void {
  assert.throws(fn, (e: unknown) => e instanceof TlogError && e.code === code, label);
}

describe('inclusion proof JSON', () => {
  it('parses the spec document', () => {
    const d = parseInclusionProofJSON(V.inclusionProofJSON);
    assert.equal(d.leafIndex, 5n);
    assert.equal(d.treeSize, 8n);
    assert.equal(d.proof.length, 3);
    assert.equal(d.checkpoint, V.signedCheckpoint8);
  });
  it('compact form and big integers are exact', () => {
    const json = formatInclusionProofJSON(
      { leafIndex: (1n << 62n) + 1n, treeSize: (1n << 63n) - 1n, leafHash: new Uint8Array(32), proof: [] },
      { indent: 0 },
    );
    assert.equal(json, `{"leaf_hash":"${encodeBase64(new Uint8Array(32))}","leaf_index":4611686018427387905,"proof":[],"tree_size":9223372036854775807}`);
    // JSON.parse cannot represent it exactly: rejected rather than rounded
    rejectsCode(() => parseInclusionProofJSON(json), 'MALFORMED_PROOF');
  });
  const bad: Array<[string, unknown]> = [
    ['missing proof', { ...inc, proof: undefined }],
    ['proof null', { ...inc, proof: null }],
    ['proof not array', { ...inc, proof: 'x' }],
    ['index as string', { ...inc, leaf_index: '5' }],
    ['negative index', { ...inc, leaf_index: -1 }],
    ['fractional size', { ...inc, tree_size: 8.5 }],
    ['index >= size', { ...inc, leaf_index: 8 }],
    ['hex leaf hash', { ...inc, leaf_hash: V.leaves[5]!.hex }],
    ['unpadded proof element', { ...inc, proof: [(inc['proof'] as string[])[0]!.slice(0, -1)] }],
    ['64 proof elements', { ...inc, proof: Array(64).fill(V.roots[1]!.base64) }],
    ['checkpoint not a string', { ...inc, checkpoint: 5 }],
    ['array', [inc]],
  ];
  for (const [what, o] of bad) {
    it(`rejects: ${what}`, () => rejectsCode(() => parseInclusionProofJSON(JSON.stringify(o)), 'MALFORMED_PROOF'));
  }
  it('rejects non-JSON', () => rejectsCode(() => parseInclusionProofJSON('{'), 'MALFORMED_PROOF'));

  it('verification failures', () => {
    const opts = { verifiers: [verifier], origin: V.logKey.name };
    const withProof = (proof: string[]) => JSON.stringify({ ...inc, proof });
    const p = inc['proof'] as string[];
    rejectsCode(() => verifyInclusionProofJSON(withProof([p[1]!, p[0]!, p[2]!]), opts), 'PROOF_FAILED');
    rejectsCode(() => verifyInclusionProofJSON(withProof(p.slice(0, 2)), opts), 'PROOF_FAILED');
    rejectsCode(() => verifyInclusionProofJSON(JSON.stringify({ ...inc, leaf_index: 4 }), opts), 'PROOF_FAILED');
    rejectsCode(() => verifyInclusionProofJSON(V.inclusionProofJSON, { ...opts, entry: leafEntry(4) }), 'PROOF_FAILED');
    rejectsCode(() => verifyInclusionProofJSON(JSON.stringify({ ...inc, tree_size: 7 }), opts), 'SIZE_MISMATCH');
    rejectsCode(() => verifyInclusionProofJSON(JSON.stringify({ ...inc, root_hash: V.roots[7]!.base64 }), opts), 'ROOT_MISMATCH');
    rejectsCode(
      () => verifyInclusionProofJSON(JSON.stringify({ ...inc, checkpoint: V.signedCheckpoint8.replace('\n8\n', '\n9\n') }), opts),
      'INVALID_SIGNATURE',
    );
    rejectsCode(() => verifyInclusionProofJSON(JSON.stringify({ ...inc, checkpoint: undefined }), opts), 'INVALID_ARGUMENT');
    rejectsCode(() => verifyInclusionProofJSON(V.inclusionProofJSON, {}), 'INVALID_ARGUMENT');
    rejectsCode(() => verifyInclusionProofJSON(V.inclusionProofJSON, { ...opts, origin: 'x.example' }), 'ORIGIN_MISMATCH');
    // a forged proof + a root taken from the same response is useless: the root must be signed
    const forgedRoot = encodeBase64(new Uint8Array(32));
    rejectsCode(() => verifyInclusionProofJSON(JSON.stringify({ ...inc, root_hash: forgedRoot }), opts), 'ROOT_MISMATCH');
  });
  it('verifies against a separately verified checkpoint (no embedded one)', () => {
    const trusted = openCheckpoint(V.signedCheckpoint8, [verifier]).checkpoint;
    const r = verifyInclusionProofJSON(JSON.stringify({ ...inc, checkpoint: undefined }), { trustedCheckpoint: trusted, leafHash: decodeHash(V.leaves[5]!.base64) });
    assert.equal(r.checkpoint.size, 8n);
    const other = openCheckpoint(V.signedCheckpoint7, [verifier]).checkpoint;
    rejectsCode(() => verifyInclusionProofJSON(V.inclusionProofJSON, { verifiers: [verifier], trustedCheckpoint: other }), 'ROOT_MISMATCH');
  });
});

describe('consistency proof JSON', () => {
  it('parses the spec document', () => {
    const d = parseConsistencyProofJSON(V.consistencyProofJSON);
    assert.equal(d.oldSize, 3n);
    assert.equal(d.newSize, 7n);
    assert.equal(d.proof.length, 4);
  });
  for (const [what, o] of [
    ['old > new', { ...con, old_size: 8 }],
    ['missing old_root', { ...con, old_root: undefined }],
    ['proof missing', { ...con, proof: undefined }],
  ] as Array<[string, unknown]>) {
    it(`rejects: ${what}`, () => rejectsCode(() => parseConsistencyProofJSON(JSON.stringify(o)), 'MALFORMED_PROOF'));
  }
  it('verification with an embedded checkpoint and a trusted old checkpoint', () => {
    const doc = JSON.stringify({ ...con, checkpoint: V.signedCheckpoint7 });
    const r = verifyConsistencyProofJSON(doc, { verifiers: [verifier], trustedOld: { size: 3n, rootHash: tree.root(3) } });
    assert.equal(r.checkpoint.size, 7n);
    rejectsCode(() => verifyConsistencyProofJSON(doc, { verifiers: [verifier], trustedOld: { size: 3n, rootHash: tree.root(4) } }), 'ROOT_MISMATCH');
    rejectsCode(() => verifyConsistencyProofJSON(doc, { verifiers: [verifier], trustedOld: { size: 4n, rootHash: tree.root(3) } }), 'SIZE_MISMATCH');
    const p = con['proof'] as string[];
    rejectsCode(
      () => verifyConsistencyProofJSON(JSON.stringify({ ...con, checkpoint: V.signedCheckpoint7, proof: p.slice(1) }), { verifiers: [verifier] }),
      'PROOF_FAILED',
    );
    rejectsCode(
      () => verifyConsistencyProofJSON(JSON.stringify({ ...con, checkpoint: V.signedCheckpoint8 }), { verifiers: [verifier] }),
      'SIZE_MISMATCH',
    );
    rejectsCode(
      () => verifyConsistencyProofJSON(JSON.stringify({ ...con, old_root: V.roots[2]!.base64, checkpoint: V.signedCheckpoint7 }), { verifiers: [verifier] }),
      'PROOF_FAILED',
    );
  });
});

describe('tlog-proof (spec §10.3)', () => {
  const doc = V.tlogProof;
  it('parses and verifies the spec document', () => {
    const p = parseTlogProof(doc);
    assert.equal(p.index, 5n);
    assert.equal(p.proof.length, 3);
    assert.equal(p.checkpoint, V.signedCheckpoint8);
    assert.equal(p.extra, undefined);
    const r = verifyTlogProof(doc, { verifiers: [verifier], entry: leafEntry(5) });
    assert.equal(r.checkpoint.size, 8n);
  });
  it('extra line round-trip, not authenticated', () => {
    const extra = new TextEncoder().encode('app data');
    const withExtra = formatTlogProof({ index: 5, proof: tree.inclusionProof(5, 8), checkpoint: V.signedCheckpoint8, extra });
    assert.ok(withExtra.startsWith('c2sp.org/tlog-proof@v1\nextra YXBwIGRhdGE=\nindex 5\n'));
    assert.deepEqual(parseTlogProof(withExtra).extra, extra);
    const r = verifyTlogProof(withExtra.replace('YXBwIGRhdGE=', 'b3RoZXI='), { verifiers: [verifier], entry: leafEntry(5) });
    assert.deepEqual(r.extra, new TextEncoder().encode('other'));
  });
  it('a proof with witnesses (cosigned checkpoint) and a quorum policy', () => {
    const cos = formatTlogProof({ index: 5, proof: tree.inclusionProof(5, 8), checkpoint: V.witness.cosignedCheckpoint });
    const w = createCosignatureVerifier(V.witness.vkey);
    const r = verifyTlogProof(cos, { verifiers: [verifier], witnesses: [w], witnessThreshold: 1, entry: leafEntry(5) });
    assert.equal(r.opened.cosignatures.length, 1);
    rejectsCode(() => verifyTlogProof(doc, { verifiers: [verifier], witnesses: [w], witnessThreshold: 1, entry: leafEntry(5) }), 'WITNESS_QUORUM');
  });
  const bad: Array<[string, string]> = [
    ['wrong header', doc.replace('tlog-proof@v1', 'tlog-proof@v2')],
    ['no index line', doc.replace('index 5\n', '')],
    ['index with leading zero', doc.replace('index 5', 'index 05')],
    ['index negative', doc.replace('index 5', 'index -5')],
    ['extra after index', doc.replace('index 5\n', 'index 5\nextra AAAA\n')],
    ['bad extra base64', doc.replace('index 5\n', 'extra A\nindex 5\n')],
    ['hex proof line', doc.replace('6p/BobbhkbRg0NYwbj6HDBc/OTMPE82htwz8cr3DmLo=', V.leaves[4]!.hex)],
    ['CRLF', doc.replace(/\n/g, '\r\n')],
    ['missing checkpoint', doc.slice(0, doc.indexOf('\n\n') + 2)],
    ['truncated', 'c2sp.org/tlog-proof@v1\nindex 5'],
    ['hyphen signature line', doc.replace('\u2014', '-')],
  ];
  for (const [what, d] of bad) it(`rejects: ${what}`, () => rejectsCode(() => parseTlogProof(d), 'MALFORMED_PROOF'));
  it('verification failures', () => {
    rejectsCode(() => verifyTlogProof(doc, { verifiers: [verifier], entry: leafEntry(4) }), 'PROOF_FAILED');
    rejectsCode(() => verifyTlogProof(doc.replace('index 5', 'index 4'), { verifiers: [verifier], entry: leafEntry(4) }), 'PROOF_FAILED');
    rejectsCode(() => verifyTlogProof(doc.replace('index 5', 'index 9'), { verifiers: [verifier], entry: leafEntry(5) }), 'PROOF_FAILED');
    rejectsCode(() => verifyTlogProof(doc, { verifiers: [verifier] }), 'INVALID_ARGUMENT');
    const otherKey = createEd25519Verifier(createEd25519Signer(V.logKey.name, new Uint8Array(32).fill(5)).vkey);
    rejectsCode(() => verifyTlogProof(doc, { verifiers: [otherKey], entry: leafEntry(5) }), 'UNVERIFIED_NOTE');
    // a proof for the right entry in a different (validly signed) tree fails
    const cp7 = signCheckpoint({ origin: V.logKey.name, size: 7, rootHash: tree.root(7) }, [signer]);
    const mixed = formatTlogProof({ index: 5, proof: tree.inclusionProof(5, 8), checkpoint: cp7 });
    rejectsCode(() => verifyTlogProof(mixed, { verifiers: [verifier], entry: leafEntry(5) }), 'PROOF_FAILED');
    const good = formatTlogProof({ index: 5, proof: tree.inclusionProof(5, 7), checkpoint: cp7 });
    verifyTlogProof(good, { verifiers: [verifier], entry: leafEntry(5) });
  });
});
