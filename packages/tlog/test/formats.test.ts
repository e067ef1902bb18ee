/**
 * Strict codecs and parsers: base64, decimal, hex, UTF-8, signed notes, verifier keys, checkpoints,
 * witness cosignatures and the tlog-witness request body.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  TlogError,
  addSignatureLines,
  createCosignatureVerifier,
  createCosigner,
  createEd25519Signer,
  createEd25519Verifier,
  decodeBase64,
  decodeHash,
  encodeBase64,
  formatAddCheckpointRequest,
  formatCheckpoint,
  formatSignerKey,
  formatVerifierKey,
  fromHex,
  isValidKeyName,
  openCheckpoint,
  openNote,
  parseAddCheckpointRequest,
  parseCheckpoint,
  parseCosignatureResponse,
  parseDecimal,
  parseNote,
  parseSignerKey,
  parseVerifierKey,
  signNote,
  signNoteAsync,
  toHex,
  utf8Decode,
  utf8Encode,
  type Verifier,
} from '../src/index.ts';
import { Prng, vectors as V } from './helpers/util.ts';

const logSigner = createEd25519Signer(V.logKey.name, fromHex(V.logKey.seedHex));
const logVerifier = createEd25519Verifier(V.logKey.vkey);
const witness = createCosigner(V.witness.name, fromHex(V.witness.seedHex), { now: () => V.witness.timestamp });
const witnessVerifier = createCosignatureVerifier(V.witness.vkey);

function rejects(fn: () => unknown, code: string, label?: string): void {
  assert.throws(fn, (e: unknown) => e instanceof TlogError && e.code === code && e.message.length > 0, label);
}

describe('base64 (strict RFC 4648 §4)', () => {
  it('round-trips every length against Node Buffer', () => {
    const rnd = new Prng(5);
    for (let n = 0; n < 100; n++) {
      const b = rnd.bytes(n);
      const s = encodeBase64(b);
      assert.equal(s, Buffer.from(b).toString('base64'));
      assert.deepEqual(decodeBase64(s), b);
    }
  });
  for (const bad of [
    'AA', // missing padding
    'AA=', // wrong length
    'A===',
    '====',
    'AB==', // non-zero padding bits
    'AAB=', // non-zero padding bits
    ' AA==',
    'AA== ',
    'AA==\n',
    'AA\nAA==',
    'A A=',
    'AA-_', // URL-safe alphabet
    'AA==AA==', // padding inside
    '@@@@',
    'AAAA=',
    'AAAAA',
    'ＡＡ==',
  ]) {
    it(`rejects ${JSON.stringify(bad)}`, () => rejects(() => decodeBase64(bad), 'MALFORMED_BASE64'));
  }
  it('hashes must be exactly 44 characters / 32 bytes', () => {
    const ok = 'MF31n5WQw8msY9KydDw4jjeSRJB4zr9/s9vmRxZDsrc=';
    assert.equal(decodeHash(ok).length, 32);
    rejects(() => decodeHash(ok.slice(0, -1)), 'MALFORMED_BASE64');
    rejects(() => decodeHash(ok.slice(0, -4) + 'AA=='), 'MALFORMED_BASE64'); // 31 bytes
    rejects(() => decodeHash(encodeBase64(new Uint8Array(33))), 'MALFORMED_BASE64');
    rejects(() => decodeHash(ok.replace('/', '_')), 'MALFORMED_BASE64');
    rejects(() => decodeHash(ok.slice(0, 42) + 'd='), 'MALFORMED_BASE64'); // last char carries padding bits
  });
});

describe('decimal, hex, UTF-8', () => {
  it('decimal: canonical only, below 2^63', () => {
    assert.equal(parseDecimal('0'), 0n);
    assert.equal(parseDecimal('9223372036854775807'), (1n << 63n) - 1n);
    for (const bad of ['', '00', '01', '-1', '+1', '1 ', ' 1', '1e3', '0x10', '１', '9223372036854775808', '1.0']) {
      rejects(() => parseDecimal(bad), 'MALFORMED_DECIMAL', bad);
    }
  });
  it('hex: lowercase, even length', () => {
    assert.deepEqual(fromHex('00ff'), Uint8Array.of(0, 255));
    rejects(() => fromHex('00FF'), 'MALFORMED_HEX');
    rejects(() => fromHex('0'), 'MALFORMED_HEX');
    rejects(() => fromHex('zz'), 'MALFORMED_HEX');
    rejects(() => fromHex('00', 2), 'MALFORMED_HEX');
  });
  it('UTF-8: invalid sequences and lone surrogates are rejected', () => {
    rejects(() => utf8Decode(Uint8Array.of(0xc3, 0x28)), 'MALFORMED_UTF8');
    rejects(() => utf8Decode(Uint8Array.of(0xed, 0xa0, 0x80)), 'MALFORMED_UTF8');
    rejects(() => utf8Encode('a\uD800b'), 'MALFORMED_UTF8');
    assert.equal(utf8Decode(utf8Encode('— é 世界 🙂')), '— é 世界 🙂');
    assert.equal(utf8Decode(Uint8Array.of(0xef, 0xbb, 0xbf, 0x41)), '\uFEFFA'); // BOM kept, so it can be rejected
  });
});

describe('signed notes (C2SP signed-note, spec §8)', () => {
  const signed = V.signedCheckpoint8;
  it('parses the spec checkpoint', () => {
    const n = parseNote(signed);
    assert.equal(n.text, V.checkpoint8Text);
    assert.equal(n.signatures.length, 1);
    assert.equal(n.signatures[0]!.name, V.logKey.name);
    assert.equal(n.signatures[0]!.keyId, 0xbb794a99);
    assert.deepEqual(parseNote(utf8Encode(signed)).textBytes, utf8Encode(V.checkpoint8Text));
  });
  const malformed: Array<[string, string | Uint8Array]> = [
    ['ASCII hyphen instead of EM DASH', signed.replace('\u2014', '-')],
    ['EN DASH', signed.replace('\u2014', '\u2013')],
    ['no space after the dash', signed.replace('\u2014 ', '\u2014')],
    ['no blank line', signed.replace('=\n\n\u2014', '=\n\u2014')],
    ['missing final LF', signed.slice(0, -1)],
    ['blank line after the signatures', signed + '\n'],
    ['CRLF line endings', signed.replace(/\n/g, '\r\n')],
    ['CR in text', signed.replace('audit\n', 'audit\r\n')],
    ['TAB', signed.replace('\u2014 ', '\u2014\t')],
    ['NUL', signed.replace('8\n', '8\u0000\n')],
    ['BOM', '\uFEFF' + signed],
    ['two spaces', signed.replace(' u3lK', '  u3lK')],
    ['trailing space', signed.slice(0, -1) + ' \n'],
    ['bad base64', signed.replace('u3lK', 'u3l_')],
    ['unpadded base64', signed.replace('nAI=\n', 'nAI\n')],
    ['signature shorter than 5 bytes', `${V.checkpoint8Text}\n\u2014 ${V.logKey.name} AAAAAA==\n`],
    ['empty key name', signed.replace(`\u2014 ${V.logKey.name} `, '\u2014  ')],
    ['key name with +', signed.replace(`\u2014 ${V.logKey.name} `, `\u2014 a+b `)],
    ['no signature line', `${V.checkpoint8Text}\n`],
    ['invalid UTF-8', Uint8Array.of(...utf8Encode(V.checkpoint8Text), 0xff, 0x0a, 0x0a, ...utf8Encode(signed.split('\n\n')[1]!))],
  ];
  for (const [what, input] of malformed) {
    it(`rejects: ${what}`, () => {
      assert.throws(
        () => parseNote(input),
        (e: unknown) => e instanceof TlogError && (e.code === 'MALFORMED_NOTE' || e.code === 'MALFORMED_UTF8'),
      );
    });
  }
  it('accepts 16 and 100 signature lines, rejects 101 by default', () => {
    const line = signed.split('\n\n')[1]!.slice(0, -1);
    const many = (k: number) => `${V.checkpoint8Text}\n${Array(k).fill(line + '\n').join('')}`;
    assert.equal(openNote(many(16), [logVerifier]).verified.length, 1);
    assert.equal(parseNote(many(100)).signatures.length, 100);
    rejects(() => parseNote(many(101)), 'MALFORMED_NOTE');
    assert.equal(parseNote(many(101), { maxSignatures: 200 }).signatures.length, 101);
  });
  it('ignores unknown keys, including same name with another ID and same ID with another name', () => {
    const other = createEd25519Signer(V.logKey.name, new Uint8Array(32).fill(9));
    const stranger = createEd25519Signer('stranger.example/log', new Uint8Array(32).fill(8));
    const fakeIdLine = `\u2014 other.example ${encodeBase64(Uint8Array.of(0xbb, 0x79, 0x4a, 0x99, ...new Uint8Array(64)))}`;
    const note = addSignatureLines(signNote(V.checkpoint8Text, [other, stranger, logSigner]), [fakeIdLine]);
    const opened = openNote(note, [logVerifier]);
    assert.deepEqual(opened.verified.map((s) => s.name), [V.logKey.name]);
    assert.equal(opened.unverified.length, 3);
    rejects(() => openNote(signNote(V.checkpoint8Text, [other, stranger]), [logVerifier]), 'UNVERIFIED_NOTE');
  });
  it('rejects the whole note if a trusted key signature is bad', () => {
    const tampered = signed.replace('\n8\n', '\n9\n');
    rejects(() => openNote(tampered, [logVerifier]), 'INVALID_SIGNATURE');
    const good = signed.split('\n\n')[1]!.slice(0, -1);
    const badSig = decodeBase64(good.split(' ')[2]!);
    badSig[10]! ^= 1;
    const badLine = `\u2014 ${V.logKey.name} ${encodeBase64(badSig)}`;
    rejects(() => openNote(addSignatureLines(signed, [badLine]), [logVerifier]), 'INVALID_SIGNATURE');
  });
  it('key rotation: two keys with the same name both verify', () => {
    const next = createEd25519Signer(V.logKey.name, new Uint8Array(32).fill(7));
    const note = signNote(V.checkpoint8Text, [logSigner, next]);
    const opened = openNote(note, [logVerifier, createEd25519Verifier(next.vkey)]);
    assert.equal(opened.verified.length, 2);
    assert.equal(openNote(note, [createEd25519Verifier(next.vkey)]).verified.length, 1);
  });
  it('duplicate verifiers are a configuration error', () => {
    rejects(() => openNote(signed, [logVerifier, createEd25519Verifier(V.logKey.vkey)]), 'INVALID_ARGUMENT');
  });
  it('a verifier that throws counts as a failed signature', () => {
    const throwing: Verifier = { name: V.logKey.name, keyId: logVerifier.keyId, verify: () => { throw new Error('boom'); } };
    rejects(() => openNote(signed, [throwing]), 'INVALID_SIGNATURE');
  });
  it('signing validates the text; async signers need signNoteAsync', async () => {
    rejects(() => signNote('no final newline', [logSigner]), 'MALFORMED_NOTE');
    rejects(() => signNote('cr\r\n', [logSigner]), 'MALFORMED_NOTE');
    rejects(() => signNote(V.checkpoint8Text, []), 'INVALID_ARGUMENT');
    const asyncSigner = { name: logSigner.name, keyId: logSigner.keyId, sign: async (t: Uint8Array) => logSigner.sign(t) };
    rejects(() => signNote(V.checkpoint8Text, [asyncSigner]), 'INVALID_ARGUMENT');
    assert.equal(await signNoteAsync(V.checkpoint8Text, [asyncSigner]), signed);
  });
});

describe('verifier keys (spec §8.3) and signer keys', () => {
  it('parses the spec vkeys', () => {
    assert.equal(parseVerifierKey(V.logKey.vkey).type, 1);
    assert.equal(parseVerifierKey(V.witness.vkey).type, 4);
  });
  it('round-trips keys whose base64 contains "+"', () => {
    const rnd = new Prng(42);
    let seen = 0;
    for (let i = 0; i < 50; i++) {
      const s = createEd25519Signer('log.example/x', rnd.bytes(32));
      if (s.vkey.split('+').length > 3) seen++;
      const k = parseVerifierKey(s.vkey);
      assert.deepEqual(k.publicKey, s.publicKey);
      assert.equal(formatVerifierKey(k.name, k.publicKey), s.vkey);
    }
    assert.ok(seen > 0);
  });
  const v = V.logKey.vkey;
  const [name, id, key] = [V.logKey.name, V.logKey.keyIdHex, v.split('+').slice(2).join('+')];
  const bad: Array<[string, string]> = [
    ['uppercase key ID', `${name}+${id.toUpperCase()}+${key}`],
    ['7-digit key ID', `${name}+${id.slice(1)}+${key}`],
    ['wrong key ID', `${name}+bb794a98+${key}`],
    ['different name (ID mismatch)', `other.example+${id}+${key}`],
    ['missing key', `${name}+${id}`],
    ['empty key', `${name}+${id}+`],
    ['no separators', name],
    ['empty name', `+${id}+${key}`],
    ['name with space', `a b+${id}+${key}`],
    ['unsupported type 0x02', `${name}+${id}+${encodeBase64(Uint8Array.of(2, ...decodeBase64(key).subarray(1)))}`],
    ['31-byte key', `${name}+${id}+${encodeBase64(decodeBase64(key).subarray(0, 32))}`],
    ['unpadded base64', `${name}+${id}+${key}`.replace(/=*$/, '') + '=='],
    ['trailing newline', v + '\n'],
    ['leading space', ' ' + v],
  ];
  for (const [what, s] of bad) it(`rejects vkey: ${what}`, () => rejects(() => parseVerifierKey(s), 'MALFORMED_VKEY'));
  it('createEd25519Verifier refuses a cosignature key and vice versa', () => {
    rejects(() => createEd25519Verifier(V.witness.vkey), 'INVALID_ARGUMENT');
    rejects(() => createCosignatureVerifier(V.logKey.vkey), 'INVALID_ARGUMENT');
  });
  it('Go-style signer keys round-trip and are checked', () => {
    const seed = fromHex(V.logKey.seedHex);
    const skey = formatSignerKey(V.logKey.name, seed);
    assert.ok(skey.startsWith(`PRIVATE+KEY+${V.logKey.name}+${V.logKey.keyIdHex}+`));
    const parsed = parseSignerKey(skey);
    assert.equal(toHex(parsed.seed), V.logKey.seedHex);
    rejects(() => parseSignerKey(skey.replace(V.logKey.keyIdHex, '00000000')), 'MALFORMED_VKEY');
    rejects(() => parseSignerKey(skey.slice(8)), 'MALFORMED_VKEY');
    const rnd = new Prng(43);
    for (let i = 0; i < 40; i++) {
      const s = rnd.bytes(32);
      assert.deepEqual(parseSignerKey(formatSignerKey('log.example', s)).seed, s); // base64 part may contain '+'
    }
  });
  it('key names', () => {
    assert.equal(isValidKeyName('a.example/b'), true);
    for (const n of ['', 'a b', 'a+b', 'a\u00a0b', 'a\u2003b', 'a\tb', 'a\u0001b']) assert.equal(isValidKeyName(n), false, JSON.stringify(n));
  });
});

describe('checkpoints (spec §7)', () => {
  const text = V.checkpoint8Text;
  const root = text.split('\n')[2]!;
  it('formats and parses', () => {
    const cp = parseCheckpoint(text);
    assert.equal(formatCheckpoint(cp), text);
    assert.equal(parseCheckpoint(`o.example\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n`).size, 0n);
    assert.equal(parseCheckpoint(`o\n9223372036854775807\n${root}\n`).size, (1n << 63n) - 1n);
    assert.deepEqual(parseCheckpoint(`${text}ext line\n`, { allowExtensions: true }).extensions, ['ext line']);
  });
  const bad: Array<[string, string]> = [
    ['extension line', `${text}ext\n`],
    ['blank line', `${text}\n`],
    ['two lines', `o.example\n8\n`],
    ['missing final LF', text.slice(0, -1)],
    ['CRLF', text.replace(/\n/g, '\r\n')],
    ['leading zero', text.replace('\n8\n', '\n08\n')],
    ['negative size', text.replace('\n8\n', '\n-8\n')],
    ['size 2^63', text.replace('\n8\n', '\n9223372036854775808\n')],
    ['size with spaces', text.replace('\n8\n', '\n 8\n')],
    ['hex root', text.replace(root, V.roots[8]!.hex)],
    ['unpadded root', text.replace(root, root.slice(0, -1))],
    ['URL-safe root', text.replace(root, root.replace('/', '_'))],
    ['trailing space after root', text.replace(root, root + ' ')],
    ['origin with space', text.replace('llm-gateway.example/audit', 'llm gateway')],
    ['origin with +', text.replace('llm-gateway.example/audit', 'a+b')],
    ['empty origin', text.replace('llm-gateway.example/audit', '')],
  ];
  for (const [what, t] of bad) it(`rejects: ${what}`, () => rejects(() => parseCheckpoint(t), 'MALFORMED_CHECKPOINT'));
  it('origin pinning', () => {
    rejects(() => parseCheckpoint(text, { origin: 'other.example' }), 'ORIGIN_MISMATCH');
  });
  it('formatCheckpoint refuses bad input', () => {
    rejects(() => formatCheckpoint({ origin: 'a b', size: 1, rootHash: new Uint8Array(32) }), 'INVALID_ARGUMENT');
    rejects(() => formatCheckpoint({ origin: 'a', size: -1, rootHash: new Uint8Array(32) }), 'INVALID_ARGUMENT');
    rejects(() => formatCheckpoint({ origin: 'a', size: 1, rootHash: new Uint8Array(31) }), 'INVALID_ARGUMENT');
  });
});

describe('openCheckpoint and witness cosignatures (spec §8.4, §12)', () => {
  const cosigned = V.witness.cosignedCheckpoint;
  it('log signature required; witness-only notes are rejected', () => {
    const onlyWitness = signNote(V.checkpoint8Text, [witness]);
    rejects(() => openCheckpoint(onlyWitness, [logVerifier], { witnesses: [witnessVerifier] }), 'UNVERIFIED_NOTE');
  });
  it('the log key name must equal the origin', () => {
    const misnamed = createEd25519Signer('other.example/log', fromHex(V.logKey.seedHex));
    const note = signNote(V.checkpoint8Text, [misnamed]);
    rejects(() => openCheckpoint(note, [createEd25519Verifier(misnamed.vkey)]), 'ORIGIN_MISMATCH');
    rejects(() => openCheckpoint(V.signedCheckpoint8, [logVerifier], { origin: 'other.example' }), 'ORIGIN_MISMATCH');
  });
  it('witness threshold', () => {
    const ok = openCheckpoint(cosigned, [logVerifier], { witnesses: [witnessVerifier], witnessThreshold: 1 });
    assert.equal(ok.cosignatures.length, 1);
    rejects(() => openCheckpoint(V.signedCheckpoint8, [logVerifier], { witnesses: [witnessVerifier], witnessThreshold: 1 }), 'WITNESS_QUORUM');
    const w2 = createCosigner('witness.example/w2', new Uint8Array(32).fill(3), { now: () => 1700000001 });
    const both = addSignatureLines(cosigned, [w2.signatureLine(V.checkpoint8Text, 1700000001)]);
    const r = openCheckpoint(both, [logVerifier], { witnesses: [witnessVerifier, createCosignatureVerifier(w2.vkey)], witnessThreshold: 2 });
    assert.deepEqual(r.cosignatures.map((c) => c.timestamp), [1700000000n, 1700000001n]);
    // without the witness keys, cosignatures are simply unknown signatures
    assert.equal(openCheckpoint(both, [logVerifier]).note.unverified.length, 2);
  });
  it('a bad cosignature from a trusted witness rejects the note', () => {
    const line = witness.signatureLine(V.checkpoint8Text, 1700000000).replace(/.{6}$/, (s) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1));
    const note = addSignatureLines(V.signedCheckpoint8, [line]);
    assert.throws(() => openCheckpoint(note, [logVerifier], { witnesses: [witnessVerifier] }), TlogError);
  });
  it('cosignature over a different timestamp or text fails; future timestamps can be refused', () => {
    const other = witness.cosignAt(V.checkpoint8Text, 1700000000);
    other[7]! ^= 1; // timestamp changed, signature kept
    assert.equal(witnessVerifier.verify(utf8Encode(V.checkpoint8Text), other), false);
    const good = witness.cosignAt(V.checkpoint8Text, 1700000000);
    assert.equal(witnessVerifier.verify(utf8Encode(V.checkpoint8Text), good), true);
    assert.equal(witnessVerifier.verify(utf8Encode(V.checkpoint8Text.replace('8', '9')), good), false);
    assert.equal(witnessVerifier.verify(utf8Encode(V.checkpoint8Text), good.subarray(0, 71)), false);
    const strict = createCosignatureVerifier(V.witness.vkey, { maxTimestamp: 1699999999n });
    assert.equal(strict.verify(utf8Encode(V.checkpoint8Text), good), false);
  });
  it('the cosigner works as a note Signer with a clock', () => {
    const note = signNote(V.checkpoint8Text, [logSigner, witness]);
    assert.equal(note, cosigned);
  });
  it('add-checkpoint request body round-trip (C2SP tlog-witness)', () => {
    const proof = [fromHex(V.consistency[0]!.proofHex[0]!)];
    const body = formatAddCheckpointRequest(3, proof, V.signedCheckpoint7);
    assert.ok(body.startsWith('old 3\n/KifV8n4yOtAR6f/nTM6z54PM4SyCyVbzqsPIW3Momc=\n\nllm-gateway.example/audit\n7\n'));
    const r = parseAddCheckpointRequest(body);
    assert.equal(r.oldSize, 3n);
    assert.deepEqual(r.proof, proof);
    assert.equal(r.checkpoint, V.signedCheckpoint7);
    rejects(() => formatAddCheckpointRequest(0, proof, V.signedCheckpoint7), 'INVALID_ARGUMENT');
    rejects(() => parseAddCheckpointRequest('old 03\n\n' + V.signedCheckpoint7), 'MALFORMED_PROOF');
    rejects(() => parseAddCheckpointRequest('old 3\nnot-base64\n\n' + V.signedCheckpoint7), 'MALFORMED_PROOF');
    rejects(() => parseAddCheckpointRequest('new 3\n\n' + V.signedCheckpoint7), 'MALFORMED_PROOF');
    const line = cosigned.split('\n').at(-2)!;
    assert.deepEqual(parseCosignatureResponse(line + '\n'), [line]);
    rejects(() => parseCosignatureResponse(line), 'MALFORMED_NOTE');
    rejects(() => parseCosignatureResponse('- x AAAAAAA=\n'), 'MALFORMED_NOTE');
  });
});
