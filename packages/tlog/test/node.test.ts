/**
 * The node:crypto half gives byte-identical results to the portable half; the portable modules do not
 * import Node built-ins.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import {
  createEd25519Signer,
  createEd25519Verifier,
  nobleTreeHasher,
  openNote,
  parseSignerKey,
  signNote,
} from '../src/index.ts';
import {
  createNodeEd25519Signer,
  createNodeTreeHasher,
  generateLogKey,
  nodeEd25519PublicKey,
  nodeSha256,
  nodeTreeHasher,
  sha256,
} from '../src/node.ts';
import { Prng, vectors as V } from './helpers/util.ts';

describe('node:crypto half', () => {
  it('SHA-256 and tree hashes equal the portable ones, returned as plain Uint8Array', () => {
    const rnd = new Prng(4);
    const h2 = createNodeTreeHasher();
    for (let n = 0; n < 3000; n += rnd.int(1, 97)) {
      const e = rnd.bytes(n);
      assert.deepEqual(nodeSha256(e), sha256(e));
      assert.deepEqual(nodeTreeHasher.hashLeaf(e), nobleTreeHasher.hashLeaf(e));
      assert.deepEqual(h2.hashLeaf(e), nobleTreeHasher.hashLeaf(e));
    }
    const a = rnd.bytes(32);
    const b = rnd.bytes(32);
    const x = nodeTreeHasher.hashChildren(a, b);
    assert.equal(Object.getPrototypeOf(x), Uint8Array.prototype);
    assert.deepEqual(x, nobleTreeHasher.hashChildren(a, b));
    const y = nodeTreeHasher.hashChildren(b, a);
    assert.notDeepEqual(x, y); // results are not views of a reused buffer
    assert.deepEqual(nodeTreeHasher.emptyRoot(), nobleTreeHasher.emptyRoot());
    assert.throws(() => nodeTreeHasher.hashChildren(a, a.subarray(1)), { code: 'INVALID_ARGUMENT' });
  });
  it('Ed25519 signer equals the portable signer', () => {
    const seed = fromSeedHex(V.logKey.seedHex);
    const n = createNodeEd25519Signer(V.logKey.name, seed);
    const p = createEd25519Signer(V.logKey.name, seed);
    assert.deepEqual(n.publicKey, p.publicKey);
    assert.equal(n.vkey, V.logKey.vkey);
    assert.deepEqual(nodeEd25519PublicKey(seed), p.publicKey);
    assert.equal(signNote('hello\n', [n]), signNote('hello\n', [p]));
  });
  it('generateLogKey produces a working key pair', () => {
    const k = generateLogKey('gw.example.com/audit');
    const signer = createNodeEd25519Signer('gw.example.com/audit', parseSignerKey(k.signerKey).seed);
    const note = signNote('gw.example.com/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n', [signer]);
    assert.equal(openNote(note, [createEd25519Verifier(k.vkey)]).verified.length, 1);
  });
  it('portable modules import no Node built-in and no Buffer', () => {
    const src = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
    for (const f of readdirSync(src)) {
      if (!f.endsWith('.ts') || f === 'node.ts') continue;
      const text = readFileSync(join(src, f), 'utf8');
      assert.doesNotMatch(text, /from ['"]node:|require\(|\bBuffer\b|from ['"]\.\/node\.ts['"]/, f);
    }
  });
});

function fromSeedHex(h: string): Uint8Array {
  return Uint8Array.from(h.match(/../g)!.map((x) => parseInt(x, 16)));
}
