/**
 * Identifier detector (src/privacy): validators against the fixture vectors, library behaviour
 * pinned by the fixture's `library_checks`, end-to-end spans on the fixture sentences (per-type
 * precision/recall table), normalisation, fail-closed limits, same-shape collisions (spec §4.6)
 * and redaction.
 *
 * Fixture: test/fixtures/pii-vectors.json (synthetic values; spec pii-identifiers.md §5).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { fileURLToPath } from 'node:url';
import { validate as stdnumMyNric } from 'stdnum/lib/cjs/my/nric.js';
import { validate as stdnumThIdnr } from 'stdnum/lib/cjs/th/idnr.js';
import { validate as stdnumKePin } from 'stdnum/lib/cjs/ke/pin.js';
import { validate as stdnumZaIdnr } from 'stdnum/lib/cjs/za/idnr.js';
import { validate as stdnumPkCnic } from 'stdnum/lib/cjs/pk/cnic.js';
import { validate as stdnumInAadhaar } from 'stdnum/lib/cjs/in/aadhaar.js';
import { validate as stdnumInPan } from 'stdnum/lib/cjs/in/pan.js';
import { validate as stdnumTrTckimlik } from 'stdnum/lib/cjs/tr/tckimlik.js';
import { validate as stdnumCnRic } from 'stdnum/lib/cjs/cn/ric.js';
import { validate as stdnumBrCpf } from 'stdnum/lib/cjs/br/cpf.js';
import { validate as stdnumBrCnpj } from 'stdnum/lib/cjs/br/cnpj.js';
import { validate as stdnumMxCurp } from 'stdnum/lib/cjs/mx/curp.js';
import { electronicFormatIBAN, isValidIBAN } from 'ibantools';
import {
  applyRedaction,
  detect,
  Detector,
  normalise,
  normaliseDigits,
  PII_TYPES,
  PiiInputTooLargeError,
  PiiTimeoutError,
  validateIdentifier,
  type IdType,
  type PiiSpan,
} from '../src/privacy/index.ts';
import { isEmail, isISO31661Numeric, isLuhnNumber } from '../src/privacy/validators/validator-lib.ts';
import { isValidPhoneNumber } from '../src/privacy/phone.ts';

interface Vector {
  id_type: IdType;
  value: string;
  valid: boolean;
  note: string;
  library_checks?: Array<{ library: string; call: string; result: boolean }>;
}
interface Sentence {
  id: string;
  kind: 'positive' | 'negative';
  lang: string;
  text: string;
  expected_spans: Array<{ type: IdType; start: number; end: number; text: string }>;
  note?: string;
}
interface Fixture {
  generated_on: string;
  id_types: Record<string, unknown>;
  vectors: Vector[];
  sentences: Sentence[];
}

const fixture = JSON.parse(
  readFileSync(fileURLToPath(new URL('./fixtures/pii-vectors.json', import.meta.url)), 'utf8'),
) as Fixture;
/** Vectors are valid "as of generated_on" (fixture conventions). */
const NOW = new Date(`${fixture.generated_on}T12:00:00Z`);

const key = (s: { type: string; start: number; end: number }): string => `${s.type}:${s.start}-${s.end}`;

function spans(text: string, opts: Parameters<typeof detect>[1] = {}): Array<[string, number, number]> {
  return detect(text, { now: NOW, ...opts }).map((s) => [s.type, s.start, s.end]);
}

function assertWellFormed(text: string, found: readonly PiiSpan[]): void {
  for (let i = 0; i < found.length; i++) {
    const s = found[i]!;
    assert.ok(s.start >= 0 && s.end <= text.length && s.start < s.end, `span in range: ${key(s)}`);
    if (i > 0) assert.ok(found[i - 1]!.end <= s.start, 'sorted and non-overlapping');
    assert.ok(s.confidence >= 0 && s.confidence <= 1);
    // The rule names evidence, never the value (no digit run of the identifier leaks into it).
    const value = normaliseDigits(text.slice(s.start, s.end)).replace(/[\s.\/-]/g, '');
    assert.ok(!s.rule.includes(value), 'rule does not contain the value');
    assert.ok(!/\d{5}/.test(s.rule), 'rule has no long digit runs');
  }
}

describe('privacy: fixture sanity', () => {
  it('has the 30 types of the catalogue, 224 vectors and 157 sentences', () => {
    assert.deepEqual(Object.keys(fixture.id_types).sort(), [...PII_TYPES].sort());
    assert.equal(fixture.vectors.length, 224);
    assert.equal(fixture.sentences.length, 157);
    for (const s of fixture.sentences) {
      for (const e of s.expected_spans) assert.equal(s.text.slice(e.start, e.end), e.text, s.id);
    }
  });
});

describe('privacy: validators accept every valid vector and reject every near-miss', () => {
  for (const type of PII_TYPES) {
    it(type, () => {
      const vs = fixture.vectors.filter((v) => v.id_type === type);
      assert.ok(vs.filter((v) => v.valid).length >= 5, 'at least 5 valid vectors');
      assert.ok(vs.filter((v) => !v.valid).length >= 2, 'at least 2 near-misses');
      const failures: string[] = [];
      for (const v of vs) {
        const r = validateIdentifier(type, v.value, NOW);
        if (r.valid !== v.valid) failures.push(`${v.valid ? 'rejected valid' : 'accepted invalid'} vector "${v.note}" (reason ${r.reason ?? '-'})`);
        if (!r.valid) assert.ok(r.reason, 'an invalid result carries a reason');
      }
      assert.deepEqual(failures, []);
    });
  }

  it('reports the reason class (length, date, checksum, prefix, region, repeated)', () => {
    const reason = (t: IdType, v: string): string | undefined => validateIdentifier(t, v, NOW).reason;
    assert.equal(reason('SG_NRIC_FIN', 'S858583E'), 'length');
    assert.equal(reason('SG_NRIC_FIN', 'S8585833B'), 'checksum');
    assert.equal(reason('SG_NRIC_FIN', 'X8585833E'), 'prefix');
    assert.equal(reason('MY_NRIC', '571306-09-3427'), 'date');
    assert.equal(reason('VN_CCCD', '003097849893'), 'region');
    assert.equal(reason('VN_CCCD', '092235849893'), 'date');
    assert.equal(reason('BR_CPF', '111.111.111-11'), 'repeated');
    assert.equal(reason('PAYMENT_CARD', '9310045543887328'), 'prefix');
    assert.equal(reason('TH_NATIONAL_ID', '5358460292427'), 'checksum');
  });

  it('never throws, whatever the input', () => {
    const junk = ['', ' ', 'abc', '\u0000', '😀😀', '１２３', 'x'.repeat(5000), '1'.repeat(40), '-'.repeat(20), '@@', 'a@b'];
    for (const type of PII_TYPES) {
      for (const j of junk) assert.equal(validateIdentifier(type, j, NOW).valid, false, `${type} on junk`);
    }
  });

  it('CURP: the 17th character gives the century (stdnum ignores it; spec §2.4)', () => {
    // Same name/date block, 17th character a letter => born 2095: in the future.
    assert.equal(validateIdentifier('MX_CURP', 'YUPN950830HCLJYVA4', NOW).valid, false);
  });
});

describe('privacy: library behaviour pinned by the fixture (library_checks)', () => {
  /** The library calls the adapters rely on, as recorded in the fixture. */
  const CALLS: Record<string, (v: string) => boolean> = {
    'stdnum.MY.nric.validate': (v) => stdnumMyNric(v).isValid,
    'stdnum.TH.idnr.validate': (v) => stdnumThIdnr(v).isValid,
    'stdnum.KE.pin.validate': (v) => stdnumKePin(v).isValid,
    'stdnum.ZA.idnr.validate': (v) => stdnumZaIdnr(v).isValid,
    'stdnum.PK.cnic.validate': (v) => stdnumPkCnic(v).isValid,
    'stdnum.IN.aadhaar.validate': (v) => stdnumInAadhaar(v).isValid,
    'stdnum.IN.pan.validate': (v) => stdnumInPan(v).isValid,
    'stdnum.TR.tckimlik.validate': (v) => stdnumTrTckimlik(v).isValid,
    'stdnum.CN.ric.validate': (v) => stdnumCnRic(v).isValid,
    'stdnum.BR.cpf.validate': (v) => stdnumBrCpf(v).isValid,
    'stdnum.BR.cnpj.validate': (v) => stdnumBrCnpj(v).isValid,
    'stdnum.MX.curp.validate': (v) => stdnumMxCurp(v).isValid,
    'validator.isLuhnNumber(compact)  [check digit only]': (v) => isLuhnNumber(v.replace(/[ -]/g, '')),
    'validator.isISO31661Numeric(digits 4-6)  [nationality segment only]': (v) => isISO31661Numeric(v.slice(3, 6)),
    'ibantools.isValidIBAN(electronicFormatIBAN(value))': (v) => isValidIBAN(electronicFormatIBAN(v) ?? ''),
    'validator.isEmail(value)': (v) => isEmail(v),
  };

  it('every recorded call to a library we use still gives the recorded result', () => {
    let checked = 0;
    const diffs: string[] = [];
    for (const v of fixture.vectors) {
      for (const c of v.library_checks ?? []) {
        const fn = CALLS[c.call];
        if (!fn) continue; // validator.isIdentityCard / isTaxID / isIBAN / isCreditCard: not used
        checked++;
        let got: boolean;
        try {
          got = fn(v.value);
        } catch {
          got = false;
        }
        if (got !== c.result) diffs.push(`${c.call} on ${v.id_type} vector "${v.note}": ${got}, recorded ${c.result}`);
      }
    }
    assert.ok(checked >= 120, `checked ${checked} calls`);
    assert.deepEqual(diffs, []);
  });

  it('the adapters add the checks the libraries miss (spec §2.4)', () => {
    assert.equal(stdnumBrCpf('111.111.111-11').isValid, true);
    assert.equal(validateIdentifier('BR_CPF', '111.111.111-11', NOW).valid, false);
    assert.equal(stdnumCnRic('990105197003048519').isValid, true, 'stdnum has no province list');
    assert.equal(validateIdentifier('CN_RIC', '990105197003048519', NOW).reason, 'region');
    assert.equal(stdnumKePin('|071641922S').isValid, true, 'stdnum accepts a leading |');
    assert.equal(validateIdentifier('KE_KRA_PIN', '|071641922S', NOW).valid, false);
    assert.equal(isLuhnNumber('784200786107472'), true, 'Luhn alone accepts an Emirates ID');
    assert.equal(validateIdentifier('PAYMENT_CARD', '784200786107472', NOW).valid, false, 'the card adapter does not');
  });
});

describe('privacy: detection on the fixture sentences', () => {
  it('prints per-type precision/recall; recall ≥ 0.99, no false positive on negatives', () => {
    const stats = new Map<string, { tp: number; fp: number; fn: number }>();
    const stat = (t: string) => {
      let s = stats.get(t);
      if (!s) stats.set(t, (s = { tp: 0, fp: 0, fn: 0 }));
      return s;
    };
    for (const t of PII_TYPES) stat(t);
    const problems: string[] = [];
    let negativeFp = 0;
    for (const s of fixture.sentences) {
      const found = detect(s.text, { now: NOW });
      assertWellFormed(s.text, found);
      const want = new Set(s.expected_spans.map(key));
      const got = new Set(found.map(key));
      for (const e of s.expected_spans) {
        if (got.has(key(e))) stat(e.type).tp++;
        else {
          stat(e.type).fn++;
          problems.push(`${s.id}: missed ${key(e)}`);
        }
      }
      for (const f of found) {
        if (want.has(key(f))) continue;
        stat(f.type).fp++;
        if (s.kind === 'negative') negativeFp++;
        problems.push(`${s.id}: unexpected ${key(f)} (${f.rule})`);
      }
    }
    const rows: string[] = [];
    let tp = 0;
    let fp = 0;
    let fn = 0;
    const pct = (x: number) => (Number.isNaN(x) ? '   -  ' : x.toFixed(3).padStart(6));
    rows.push(`${'type'.padEnd(16)}   tp  fp  fn  precision  recall`);
    for (const [t, s] of stats) {
      tp += s.tp;
      fp += s.fp;
      fn += s.fn;
      rows.push(`${t.padEnd(16)} ${String(s.tp).padStart(4)} ${String(s.fp).padStart(3)} ${String(s.fn).padStart(3)}     ${pct(s.tp / (s.tp + s.fp))}  ${pct(s.tp / (s.tp + s.fn))}`);
    }
    const precision = tp / (tp + fp);
    const recall = tp / (tp + fn);
    rows.push(`${'ALL'.padEnd(16)} ${String(tp).padStart(4)} ${String(fp).padStart(3)} ${String(fn).padStart(3)}     ${pct(precision)}  ${pct(recall)}`);
    rows.push(`negative sentences: ${fixture.sentences.filter((s) => s.kind === 'negative').length}, spans reported on them: ${negativeFp}`);
    console.log(rows.join('\n'));
    if (problems.length) console.log(problems.join('\n'));
    assert.equal(tp + fn, 150, 'all 150 expected spans counted');
    assert.ok(recall >= 0.99, `recall ${recall}`);
    assert.ok(precision >= 0.99, `precision ${precision}`);
    assert.equal(negativeFp, 0, 'no span on negative sentences');
  });

  it('multi-sentence prompts: the sentences joined in random order give the same spans', () => {
    let seed = 99;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const problems: string[] = [];
    let expected = 0;
    for (let doc = 0; doc < 12; doc++) {
      const sep = [' ', '\n', '\n\n'][doc % 3]!;
      let text = '';
      const want: string[] = [];
      for (let k = 0; k < 200; k++) {
        const s = fixture.sentences[Math.floor(rnd() * fixture.sentences.length)]!;
        for (const e of s.expected_spans) want.push(key({ type: e.type, start: text.length + e.start, end: text.length + e.end }));
        text += s.text + sep;
      }
      expected += want.length;
      const found = detect(text, { now: NOW });
      assertWellFormed(text, found);
      const got = new Set(found.map(key));
      const wantSet = new Set(want);
      for (const w of want) if (!got.has(w)) problems.push(`doc ${doc}: missed ${w}`);
      for (const f of found) if (!wantSet.has(key(f))) problems.push(`doc ${doc}: unexpected ${key(f)} (${f.rule})`);
    }
    assert.ok(expected > 1500);
    assert.deepEqual(problems, []);
  });

  it('finds each sentence identifier with its own type only (types option)', () => {
    for (const s of fixture.sentences.filter((x) => x.kind === 'positive')) {
      for (const e of s.expected_spans) {
        const only = detect(s.text, { now: NOW, types: new Set([e.type]) });
        assert.ok(only.some((f) => key(f) === key(e)), `${s.id} with only ${e.type}`);
        assert.ok(only.every((f) => f.type === e.type || f.type === 'NATIONAL_ID'));
      }
    }
  });

  it('a Detector restricted to some types reports only those', () => {
    const d = new Detector({ types: ['EMAIL'] });
    const text = 'Mail siti.aminah@example.com, NRIC S8585833E, IBAN SA63 8023 9272 9841 4730 2626.';
    assert.deepEqual(
      d.detect(text, { now: NOW }).map((s) => s.type),
      ['EMAIL'],
    );
    assert.deepEqual(
      detect(text, { now: NOW }).map((s) => s.type),
      ['EMAIL', 'SG_NRIC_FIN', 'IBAN'],
    );
  });

  it('extra context words per deployment are honoured', () => {
    const text = 'Nambari ya mwanachama 26055944.';
    assert.deepEqual(spans(text), []);
    const d = new Detector({ extraKeywords: { KE_NATIONAL_ID: ['nambari ya mwanachama'] } });
    assert.deepEqual(
      d.detect(text, { now: NOW }).map((s) => [s.type, s.start, s.end]),
      [['KE_NATIONAL_ID', 22, 30]],
    );
  });
});

describe('privacy: normalisation', () => {
  /** Writes the ASCII digits of `s` in the script whose zero is `zero`. */
  const inScript = (s: string, zero: number): string => s.replace(/\d/g, (d) => String.fromCodePoint(zero + Number(d)));
  const SCRIPTS: Array<[string, number]> = [
    ['Arabic-Indic', 0x660],
    ['Extended Arabic-Indic (Persian/Urdu)', 0x6f0],
    ['Devanagari', 0x966],
    ['Bengali', 0x9e6],
    ['Thai', 0xe50],
    ['full-width', 0xff10],
  ];

  for (const [name, zero] of SCRIPTS) {
    it(`${name} digits map to ASCII with offsets into the original`, () => {
      const aadhaar = inScript('7013 8216 4176', zero);
      const text = `Aadhaar (${name}): ${aadhaar} — verified`;
      const start = text.indexOf(aadhaar);
      assert.deepEqual(spans(text), [['IN_AADHAAR', start, start + aadhaar.length]]);
      assert.equal(normaliseDigits(aadhaar), '7013 8216 4176');
      assert.equal(normaliseDigits(text).length, text.length);
      const cpf = inScript('381.451.294-43', zero);
      const t2 = `CPF ${cpf}.`;
      assert.deepEqual(spans(t2), [['BR_CPF', 4, 4 + cpf.length]]);
    });
  }

  it('mixed scripts in one number are still one number', () => {
    const text = `رقم الهوية ${inScript('12652', 0x660)}${'71104'}`;
    assert.deepEqual(spans(text), [['SA_NATIONAL_ID', 11, 21]]);
  });

  it('astral-plane digits (two code units each) are mapped back to original offsets', () => {
    const bold = inScript('57702299348', 0x1d7ce); // MATHEMATICAL BOLD DIGIT ZERO
    const text = `T.C. Kimlik No: ${bold}!`;
    assert.equal(bold.length, 22);
    const [found] = detect(text, { now: NOW });
    assert.ok(found);
    assert.equal(found.type, 'TR_TCKN');
    assert.equal(text.slice(found.start, found.end), bold);
  });

  it('zero-width characters and soft hyphens cannot split an identifier', () => {
    const cases: Array<[string, IdType, string]> = [
      ['My NRIC is S858\u200B5833E.', 'SG_NRIC_FIN', 'S858\u200B5833E'],
      ['MyKad 570306\u200C-09-3427', 'MY_NRIC', '570306\u200C-09-3427'],
      ['CPF 381.451\u2060.294-43', 'BR_CPF', '381.451\u2060.294-43'],
      ['Card 4310\u00AD0455\u00AD4388\u00AD7329', 'PAYMENT_CARD', '4310\u00AD0455\u00AD4388\u00AD7329'],
      ['Mail siti.amin\uFEFFah@example.com now', 'EMAIL', 'siti.amin\uFEFFah@example.com'],
      ['Aadhaar ७०१३\u200B८२१६\u200B४१७६', 'IN_AADHAAR', '७०१३\u200B८२१६\u200B४१७६'],
    ];
    for (const [text, type, value] of cases) {
      const start = text.indexOf(value);
      assert.deepEqual(spans(text), [[type, start, start + value.length]], JSON.stringify(text));
    }
    // With the hardening off, the split NRIC is not found.
    const off = new Detector({ stripInvisible: false });
    assert.deepEqual(off.detect('My NRIC is S858\u200B5833E.', { now: NOW }), []);
  });

  it('leaves invisible characters outside identifiers alone (Persian ZWNJ, emoji ZWJ)', () => {
    const text = 'می\u200Cخواهم 👨\u200D👩\u200D👧 بدانم';
    const n = normalise(text);
    assert.equal(n.text, text);
    assert.equal(n.remapped, false);
  });
});

describe('privacy: fail-closed limits', () => {
  it('a deadline already passed throws PiiTimeoutError', () => {
    assert.throws(() => detect('NRIC S8585833E', { deadline: performance.now() - 1 }), PiiTimeoutError);
  });

  it('a deadline hit during a long scan throws PiiTimeoutError', () => {
    const line = 'Order 20481234 on 2026-03-15, NIN 50760073693, ref 1696536364, total $1,249.90. ';
    const text = line.repeat(Math.floor(1_900_000 / line.length));
    const start = performance.now();
    assert.throws(() => detect(text, { deadline: start + 2, now: NOW }), (err: unknown) => {
      assert.ok(err instanceof PiiTimeoutError);
      assert.ok(!err.message.includes('50760073693'), 'no text in the message');
      return true;
    });
    assert.ok(performance.now() - start < 1000, 'gave up promptly');
  });

  it('oversized input throws PiiInputTooLargeError before scanning', () => {
    assert.throws(() => detect('x'.repeat(101), { maxChars: 100 }), PiiInputTooLargeError);
    assert.throws(() => new Detector({ maxChars: 10 }).detect('S8585833E is mine'), PiiInputTooLargeError);
    assert.deepEqual(detect('x'.repeat(100), { maxChars: 100 }), []);
    assert.throws(() => detect(' '.repeat(2_000_001)), (err: unknown) => err instanceof PiiInputTooLargeError && err.maxChars === 2_000_000);
  });

  it('adversarial digit runs stay linear (no regex backtracking blow-up)', () => {
    const text = '1 '.repeat(200_000) + '1kg ' + '12-'.repeat(100_000) + 'X9';
    const t0 = performance.now();
    detect(text, { now: NOW });
    assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
  });
});

describe('privacy: same-shape collisions (spec §4.6)', () => {
  it('an IMEI passes Luhn but is no payment card, with or without card context', () => {
    const imei = '352444660806484';
    assert.equal(isLuhnNumber(imei), true);
    assert.equal(validateIdentifier('PAYMENT_CARD', imei, NOW).valid, false);
    assert.deepEqual(spans(`Device IMEI ${imei}`), []);
    assert.deepEqual(spans(`IMEI ${imei} is printed on the SIM card`), []);
    assert.deepEqual(spans(`IMEI ${imei} is printed on the SIM card`, { strict: true }), []);
    assert.deepEqual(spans('Device IMEI 356938035643809 and ISBN 978-0-306-40615-7'), []);
  });

  it('an ISBN-13 that has the Bangladesh 13-digit NID structure is not redacted', () => {
    const isbn = '9790876288824';
    assert.equal(validateIdentifier('BD_NID', isbn, NOW).valid, true, 'structure-only collision');
    assert.deepEqual(spans(`ISBN ${isbn}`), []);
    assert.deepEqual(spans(`ISBN ${isbn}`, { strict: true }), []);
    assert.deepEqual(spans('ISBN 979-0-87628-882-4'), []);
  });

  it('an EAN-13 barcode that passes the Thai ID check is suppressed by barcode context', () => {
    const ean = '8858042246861';
    assert.equal(validateIdentifier('TH_NATIONAL_ID', ean, NOW).valid, true);
    assert.deepEqual(spans(`Barcode ${ean}`), []);
    assert.deepEqual(spans(`EAN ${ean}`), []);
    assert.deepEqual(spans(`บัตรประชาชน ${ean}`), [['TH_NATIONAL_ID', 12, 25]]);
  });

  it('a 12-digit order number that passes Verhoeff is not redacted next to "order"', () => {
    const n = '964808484240';
    assert.equal(validateIdentifier('IN_AADHAAR', n, NOW).valid, true);
    assert.deepEqual(spans(`Your order ${n} has shipped.`), []);
    assert.deepEqual(spans(`Pedido ${n} enviado.`), []);
    assert.deepEqual(spans(`My Aadhaar is ${n}.`), [['IN_AADHAAR', 14, 26]]);
  });

  it('a phone number next to "call" is not redacted, even when it passes the CPF check', () => {
    const phone = '08038664884';
    assert.equal(isValidPhoneNumber(phone, 'NG'), true);
    assert.equal(validateIdentifier('BR_CPF', phone, NOW).valid, true);
    assert.deepEqual(spans(`Call ${phone} after 5pm.`), []);
    assert.deepEqual(spans(`Please call me: ${phone}`), []);
    assert.deepEqual(spans(`CPF ${phone}`), [['BR_CPF', 4, 15]]);
    assert.deepEqual(spans('Call 0803 123 4567 or 0907 555 0199 between 9am and 5pm.'), []);
    assert.deepEqual(spans('Call me on +60123456789 or +2348031234567.'), []);
  });

  it('a context-only number that is a valid phone number needs its keyword right before it', () => {
    const phone = '08052002840';
    assert.equal(isValidPhoneNumber(phone, 'NG'), true);
    assert.deepEqual(spans(`My NIN is ${phone}.`), [['NG_NIN', 10, 21]]);
    const far = `NIN registration: the applicant number is ${phone}`;
    assert.deepEqual(spans(far), []);
    const strict = detect(far, { now: NOW, strict: true });
    assert.deepEqual(strict.map((s) => [s.type, s.tier]), [['NG_NIN', 'low']]);
    assert.match(strict[0]!.rule, /-phone$/);
  });

  it('an 11-digit number valid as both TCKN and CPF: context decides, a bare tie is NATIONAL_ID', () => {
    const n = '60048620882';
    assert.equal(validateIdentifier('TR_TCKN', n, NOW).valid, true);
    assert.equal(validateIdentifier('BR_CPF', n, NOW).valid, true);
    assert.deepEqual(spans(`CPF: ${n}`), [['BR_CPF', 5, 16]]);
    assert.deepEqual(spans(`TC kimlik ${n}`), [['TR_TCKN', 10, 21]]);
    assert.deepEqual(spans(`Customer record ${n} updated.`), [['NATIONAL_ID', 16, 27]]);
  });

  it('an East Java NIK inside the JCB range: NIK context gives NIK, card context gives a card', () => {
    const n = '3578011508858266';
    assert.equal(validateIdentifier('ID_NIK', n, NOW).valid, true);
    assert.equal(validateIdentifier('PAYMENT_CARD', n, NOW).valid, true);
    assert.deepEqual(spans(`NIK ${n}`), [['ID_NIK', 4, 20]]);
    assert.deepEqual(spans(`Nomor kartu ${n}`), [['PAYMENT_CARD', 12, 28]]);
  });

  it('two context-only numbers of the same shape: the nearest preceding keyword decides', () => {
    assert.deepEqual(spans('BVN 22161348635, NIN 50760073693'), [
      ['NG_BVN', 4, 15],
      ['NG_NIN', 21, 32],
    ]);
    const d = new Detector({ extraKeywords: { NG_NIN: ['kyc number'], NG_BVN: ['kyc number'] } });
    assert.deepEqual(
      d.detect('KYC number 22161348635', { now: NOW }).map((s) => [s.type, s.start, s.end]),
      [['NATIONAL_ID', 11, 22]],
    );
  });

  it('dates, amounts and glued codes do not become Kenyan IDs or anything else', () => {
    assert.deepEqual(spans('Reference 20260315, total KSh 12500000, code AB12345678CD.'), []);
    assert.deepEqual(spans('kargo takip kodu 1Z9A45E2031245781'), []);
    assert.deepEqual(spans('Rp 1.250.000.000 pada 15/08/2026'), []);
  });

  it('negative words act within their sentence only (abbreviation dots do not end it)', () => {
    const sa = 'تم التحقق من هوية المواطن رقم 1214408682 عبر أبشر.';
    assert.deepEqual(spans(sa), [['SA_NATIONAL_ID', 30, 40]]);
    assert.deepEqual(spans(`Total paid $45.99. ${sa}`), [['SA_NATIONAL_ID', 49, 59]]);
    assert.deepEqual(spans(`Call us today! ${sa}`), [['SA_NATIONAL_ID', 45, 55]]);
    assert.deepEqual(spans('Ref. 1214408682'), []);
    assert.deepEqual(spans('Order no. 964808484240'), []);
    assert.deepEqual(spans('Order number:\n964808484240'), []);
  });

  it('a number inside a longer same-separator sequence is not a shorter identifier', () => {
    // 4-4-4 inside 4-4-4-4 is a 16-digit number, not an Aadhaar/PhilSys number.
    assert.deepEqual(spans('Aadhaar? 7013 8216 4176 9999'), []);
    // A card followed by another group is still found (spec §3.2 retry).
    assert.deepEqual(spans('Card 4310 0455 4388 7329 2026'), [['PAYMENT_CARD', 5, 24]]);
  });

  it('strict mode adds low-tier findings that have type context (e.g. a failed check letter)', () => {
    assert.deepEqual(spans('NRIC S8585833B'), []);
    const strict = detect('NRIC S8585833B', { now: NOW, strict: true });
    assert.deepEqual(strict.map((s) => [s.type, s.tier, s.rule]), [['SG_NRIC_FIN', 'low', 'SG_NRIC_FIN:checksum-failed+context']]);
    // Without context a failed check is never reported.
    assert.deepEqual(spans('Ref S8585833B', { strict: true }), []);
    // A structure-only MyKad without context or layout is low: reported only in strict mode with context.
    assert.deepEqual(spans('Records: 660201129987'), []);
  });
});

describe('privacy: redaction', () => {
  it('redact: typed placeholders numbered per type, the same value gets the same number', () => {
    const text = 'NIK 9652121802030822 dan NIK 6545076503525299; ulang: 9652121802030822. Email siti.aminah@example.com';
    const found = detect(text, { now: NOW });
    const { text: out, vault } = applyRedaction(text, found, 'redact');
    assert.equal(out, 'NIK [ID_NIK_1] dan NIK [ID_NIK_2]; ulang: [ID_NIK_1]. Email [EMAIL_1]');
    assert.equal(vault.get('[ID_NIK_1]'), '9652121802030822');
    assert.equal(vault.get('[ID_NIK_2]'), '6545076503525299');
    assert.equal(vault.get('[EMAIL_1]'), 'siti.aminah@example.com');
    assert.equal(vault.size, 3);
  });

  it('redact: the same identifier written differently (separators, native digits) shares a number', () => {
    const text = 'MyKad 570306-09-3427, also written ٥٧٠٣٠٦٠٩٣٤٢٧ in the IC scan';
    const found = detect(text, { now: NOW });
    assert.equal(found.length, 2);
    const { text: out, vault } = applyRedaction(text, found, 'redact');
    assert.equal(out, 'MyKad [MY_NRIC_1], also written [MY_NRIC_1] in the IC scan');
    assert.equal(vault.get('[MY_NRIC_1]'), '570306-09-3427');
  });

  it('mask: keeps the last 4 characters and separators', () => {
    const text = 'Card 4310 0455 4388 7329, CPF 381.451.294-43, NRIC S8585833E, رقم الهوية ١٢٦٥٢٧١١٠٤';
    const found = detect(text, { now: NOW });
    const { text: out, vault } = applyRedaction(text, found, 'mask');
    assert.equal(out, 'Card **** **** **** 7329, CPF ***.***.*94-43, NRIC *****833E, رقم الهوية ******١١٠٤');
    assert.equal(vault.size, 0);
  });

  it('the vault never shows its values in logs or JSON', () => {
    const { vault } = applyRedaction('NRIC S8585833E', detect('NRIC S8585833E', { now: NOW }), 'redact');
    for (const shown of [JSON.stringify({ vault }), inspect(vault), String(vault), `${vault}`, inspect({ nested: { vault } }, { depth: 5 })]) {
      assert.ok(!shown.includes('S8585833E'), shown);
    }
    assert.deepEqual(vault.placeholders(), ['[SG_NRIC_FIN_1]']);
  });

  it('rejects overlapping or out-of-range spans', () => {
    assert.throws(
      () =>
        applyRedaction('abcdef', [
          { type: 'EMAIL', start: 0, end: 3 },
          { type: 'EMAIL', start: 2, end: 4 },
        ], 'redact'),
      RangeError,
    );
    assert.throws(() => applyRedaction('abc', [{ type: 'EMAIL', start: 1, end: 9 }], 'mask'), RangeError);
  });
});

describe('privacy: adversarial review regressions (detector level)', () => {
  /** Writes the ASCII digits of `s` in the script whose zero is `zero`. */
  const inScript = (s: string, zero: number): string => s.replace(/\d/g, (d) => String.fromCodePoint(zero + Number(d)));
  const joinWith = (s: string, c: string): string => [...s].join(c);
  /** [type, original text of the span] of every span found in `text`. */
  const found = (text: string, opts: Parameters<typeof detect>[1] = {}): Array<[string, string]> =>
    detect(text, { now: NOW, ...opts }).map((s) => [s.type, text.slice(s.start, s.end)]);
  /**
   * Least wall time of `f` over 5 runs (after one warm-up) — the run least disturbed by GC and by
   * other processes on a shared machine — floored at 0.5 ms so tiny times do not dominate a ratio.
   */
  const time = (f: () => unknown): number => {
    f();
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      f();
      best = Math.min(best, performance.now() - t0);
    }
    return Math.max(0.5, best);
  };
  /**
   * Asserts that `work(n)` grows linearly: 10× the input may cost at most 40× the time (a
   * quadratic stage costs 100×, every time). No absolute time is asserted. Measured up to three
   * times, so that one burst of load on a shared machine does not fail a linear stage.
   */
  const assertLinear = (label: string, work: (n: number) => () => unknown, n: number): void => {
    let msg = '';
    for (let attempt = 0; attempt < 3; attempt++) {
      const small = time(work(n));
      const large = time(work(10 * n));
      if (large / small < 40) return;
      msg = `${label}: ${n} → ${small.toFixed(2)} ms, ${10 * n} → ${large.toFixed(2)} ms (×${(large / small).toFixed(1)})`;
    }
    assert.fail(msg);
  };

  it('C1: a tie relabelled NATIONAL_ID carries the tied types in `candidates`; other spans carry none', () => {
    const za = detect('ID 5809211805089', { now: NOW });
    assert.deepEqual(za.map((s) => [s.type, s.candidates]), [['NATIONAL_ID', ['ZA_ID', 'PAYMENT_CARD']]]);
    const tc = detect('Customer record 60048620882 updated.', { now: NOW });
    assert.deepEqual(tc.map((s) => [s.type, s.start, s.end, s.candidates]), [['NATIONAL_ID', 16, 27, ['TR_TCKN', 'BR_CPF']]]);
    const d = new Detector({ extraKeywords: { NG_NIN: ['kyc number'], NG_BVN: ['kyc number'] } });
    assert.deepEqual(d.detect('KYC number 22161348635', { now: NOW })[0]!.candidates, ['NG_NIN', 'NG_BVN']);
    // Context resolves the tie: a plain type, no candidates.
    for (const s of detect('CPF: 60048620882, NRIC S8585833E, card 4310 0455 4388 7329', { now: NOW })) {
      assert.notEqual(s.type, 'NATIONAL_ID');
      assert.equal('candidates' in s, false, s.type);
    }
  });

  it('C5/M1: look-alike spaces and dashes join an identifier, offsets stay those of the original', () => {
    const cases: Array<[string, string, string]> = [
      ['card', '4310 0455 4388 7329', 'PAYMENT_CARD'],
      ['IBAN', 'SA63 8023 9272 9841 4730 2626', 'IBAN'],
      ['Aadhaar', '7013 8216 4176', 'IN_AADHAAR'],
    ];
    for (const space of ['\u00a0', '\u202f', '\u2007', '\u2009', '\u3000']) {
      for (const [kw, value, type] of cases) {
        const v = value.replace(/ /g, space);
        assert.deepEqual(found(`${kw} ${v} ok`), [[type, v]], `${kw} with U+${space.charCodeAt(0).toString(16)}`);
      }
    }
    for (const dash of ['\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2015', '\u2212', '\ufe63', '\uff0d']) {
      const mykad = '570306-09-3427'.replace(/-/g, dash);
      assert.deepEqual(found(`MyKad ${mykad}.`), [['MY_NRIC', mykad]], `MyKad with U+${dash.charCodeAt(0).toString(16)}`);
      const cnic = '35202-1234567-1'.replace(/-/g, dash);
      assert.deepEqual(found(`CNIC ${cnic}`).map((f) => f[1]), [cnic]);
    }
    // The same forms validate as isolated values.
    assert.equal(validateIdentifier('MY_NRIC', '570306\u201309\u20133427', NOW).valid, true);
    assert.equal(validateIdentifier('PAYMENT_CARD', '4310\u00a00455\u202f4388\u200e7329', NOW).valid, true);
    assert.equal(validateIdentifier('SG_NRIC_FIN', 'Ｓ８５８５８３３Ｅ', NOW).valid, true);
    // Length-preserving: no offset map needed.
    const n = normalise('MyKad ５７０３０６－０９－３４２７\u00a0card\u20134310');
    assert.equal(n.remapped, false);
    assert.equal(n.text, 'MyKad 570306-09-3427 card-4310');
  });

  it('M1: identifiers typed entirely in full-width form (CJK input methods) are found', () => {
    const fw = (s: string): string => s.replace(/[!-~]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0));
    const cases: Array<[string, string, string]> = [
      ['MyKad', fw('570306-09-3427'), 'MY_NRIC'],
      ['card', fw('4310 0455 4388 7329').replace(/ /g, '\u3000'), 'PAYMENT_CARD'],
      ['mail', fw('siti.aminah@example.com'), 'EMAIL'],
      ['IBAN', fw('SA63 8023 9272 9841 4730 2626').replace(/ /g, '\u3000'), 'IBAN'],
      ['NRIC', fw('S8585833E'), 'SG_NRIC_FIN'],
      ['PAN', fw('AFZPK7190K'), 'IN_PAN'],
    ];
    for (const [kw, v, type] of cases) assert.deepEqual(found(`${kw}：${v}。`), [[type, v]], `${type} ${v}`);
    assert.deepEqual(found('mail siti.aminah\ufe6bexample\ufe52com'), [['EMAIL', 'siti.aminah\ufe6bexample\ufe52com']]);
  });

  it('M2: bidi marks, CGJ, variation selectors, invisible operators and tag characters inside an identifier are removed', () => {
    const invisibles = ['\u200e', '\u200f', '\u061c', '\u034f', '\ufe0f', '\ufe00', '\u2061', '\u2062', '\u2063', '\u2064', '\u202a', '\u2066', '\u{e0020}', '\u{e0100}'];
    for (const c of invisibles) {
      const tag = `U+${c.codePointAt(0)!.toString(16)}`;
      const card = joinWith('4310045543887329', c);
      assert.deepEqual(found(`card ${card} ok`), [['PAYMENT_CARD', card]], `card with ${tag}`);
      const sa = joinWith('1696536364', c);
      assert.deepEqual(found(`رقم الهوية ${sa}`), [['SA_NATIONAL_ID', sa]], `Saudi ID with ${tag}`);
    }
    // Mixed with native digits and the old invisibles.
    const mixed = joinWith(inScript('1696536364', 0x660), '\u200f\u200b');
    assert.deepEqual(found(`رقم الهوية ${mixed}`), [['SA_NATIONAL_ID', mixed]]);
    // Outside identifiers they stay: emoji presentation selectors, RTL marks in prose.
    for (const text of ['I ❤️ this ☺︎', 'שלום\u200f עולם', 'مرحبا\u061c بالعالم']) {
      const n = normalise(text);
      assert.equal(n.text, text);
      assert.equal(n.remapped, false);
    }
  });

  it('H5: normalisation is linear in a run of invisible characters and checks the deadline while it works', () => {
    for (const c of ['\u200b', '\u00ad', '\u200e', '\ufe0f']) {
      assertLinear(`run of U+${c.charCodeAt(0).toString(16)}`, (n) => () => normalise(`1${c.repeat(n)}2`), 20_000);
    }
    assertLinear('digits split by ZWSP', (n) => () => normalise('1\u200b'.repeat(n)), 20_000);
    // The run between two digits is removed as a whole, with the offsets of the original.
    const text = `card 4310${'\u200b'.repeat(100_000)}045543887329`;
    assert.deepEqual(detect(text, { now: NOW }).map((s) => [s.type, s.start, s.end]), [['PAYMENT_CARD', 5, text.length]]);
    // The deadline hook is called during long passes (both the mapping and the invisible-removal pass).
    let calls = 0;
    normalise(`1${'\u200b'.repeat(1_000_000)}2`, { checkDeadline: () => void calls++ });
    assert.ok(calls >= 10, `invisible run: ${calls} checks`);
    calls = 0;
    normalise('1\u00a0'.repeat(500_000), { checkDeadline: () => void calls++ });
    assert.ok(calls >= 10, `look-alike mapping: ${calls} checks`);
    assert.throws(
      () => normalise(`1${'\u200b'.repeat(1_000_000)}2`, { checkDeadline: () => { throw new PiiTimeoutError(0); } }),
      PiiTimeoutError,
    );
  });

  it('H6: overlap resolution is O(n log n) with many identifiers of one length, and a deadline passed during it is honoured', () => {
    assertLinear('e-mails', (n) => () => detect('ab@cd.ef '.repeat(n), { now: NOW }), 6_000);
    assertLinear('cards', (n) => () => detect('4310 0455 4388 7329 '.repeat(n), { now: NOW }), 3_000);
    assert.equal(detect('ab@cd.ef '.repeat(60_000), { now: NOW }).length, 60_000);
    const start = performance.now();
    assert.throws(() => detect('ab@cd.ef '.repeat(200_000), { now: NOW, deadline: start + 1 }), PiiTimeoutError);
    assert.ok(performance.now() - start < 1_000, 'gave up promptly');
  });

  it('M7: one long letters-and-digits token (a hex dump) is scanned in linear time', () => {
    let seed = 7;
    const hex = (n: number): string => {
      let s = '';
      for (let i = 0; i < n; i++) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        s += '0123456789abcdef'[seed & 15];
      }
      return s;
    };
    const h = hex(2_000_000);
    assertLinear('hex token', (n) => () => detect(h.slice(0, n), { now: NOW }), 200_000);
    assertLinear('AB12 token', (n) => () => detect('AB12'.repeat(n), { now: NOW }), 50_000);
    // Identifiers next to a long token are still found.
    assert.deepEqual(found(`${h.slice(0, 100_000)} IBAN SA63 8023 9272 9841 4730 2626 ${h.slice(0, 1000)}`), [['IBAN', 'SA63 8023 9272 9841 4730 2626']]);
  });

  it('M4: lower- and mixed-case IBANs are found and validated upper-cased', () => {
    assert.deepEqual(found('iban gb82 west 1234 5698 7654 32'), [['IBAN', 'gb82 west 1234 5698 7654 32']]);
    assert.deepEqual(found('iban sa6380239272984147302626.'), [['IBAN', 'sa6380239272984147302626']]);
    assert.deepEqual(found('IBAN Sa63 8023 9272 9841 4730 2626'), [['IBAN', 'Sa63 8023 9272 9841 4730 2626']]);
    assert.equal(validateIdentifier('IBAN', 'br05 6190 5780 9209 5037 1707 584c 1', NOW).valid, true);
    assert.equal(validateIdentifier('IBAN', 'sa64 8023 9272 9841 4730 2626', NOW).valid, false, 'bad check digits stay bad');
    // Words that look like the start of an IBAN are not one.
    assert.deepEqual(found('at12 people came, de89 of them stayed, gb82 west london office'), []);
  });

  it('M8: Unix timestamps next to technical labels (JSON, logs, SQL, code) are not national IDs; labelled IDs still are', () => {
    // 1684075748 is a valid Saudi ID (prefix 1, Luhn); 1699864009357 a valid Thai ID.
    assert.equal(validateIdentifier('SA_NATIONAL_ID', '1684075748', NOW).valid, true);
    assert.equal(validateIdentifier('TH_NATIONAL_ID', '1699864009357', NOW).valid, true);
    const timestamps = [
      '{"id": 42, "created": 1684075748, "model": "gpt-4o"}',
      '{"createdAt":1684075748,"updatedAt":1684075748}',
      '{"ts": 1699864009357, "level": "info"}',
      'exp: 1684075748, iat: 1684075748, nbf: 1684075748',
      'SELECT * FROM events WHERE created > 1684075748;',
      'log: [1684075748] GET /api 200',
      'Date.now() returned 1699864009357',
      'const t = 1699864009357 ms; time=1684075748 unix 1684075748',
      'timestamp 1699864009357, Unix time 1684075748, created_at: 1684075748',
    ];
    for (const t of timestamps) assert.deepEqual(found(t), [], t);
    // The same numbers with a keyword of their type, or in prose where the words are not labels.
    assert.deepEqual(found('رقم الهوية 1684075748 (updated)'), [['SA_NATIONAL_ID', '1684075748']]);
    assert.deepEqual(found('Saudi ID, created 2024: 1684075748'), [['SA_NATIONAL_ID', '1684075748']]);
    assert.deepEqual(found('บัตรประชาชน 1699864009357 ms'), [['TH_NATIONAL_ID', '1699864009357']]);
    assert.deepEqual(found('1684075748 was created for the new resident.').length, 1);
    assert.deepEqual(found('Customer record 60048620882 updated.'), [['NATIONAL_ID', '60048620882']]);
    // Near words count only next to the number, not anywhere in the sentence.
    assert.deepEqual(found('Last time I checked, the number was 1684075748'), [['SA_NATIONAL_ID', '1684075748']]);
  });

  it('L5: the groups of a UUID are never an identifier; numbers next to a UUID still are', () => {
    assert.deepEqual(found('id 123e4567-e89b-12d3-a456-426614174000 in the table'), []);
    assert.deepEqual(found('Aadhaar 123e4567-e89b-12d3-a456-426614174000'), []);
    assert.deepEqual(found('uuid 12345678-1234-1234-1234-426614174000, ID no 12345678'), [['KE_NATIONAL_ID', '12345678']]);
    assert.deepEqual(found('ID no 20481234-1234-1234-1234-426614174000'), []);
    assert.deepEqual(found('ID no 20481234-e89b-12d3-a456-426614174000'), []);
    assert.deepEqual(found('Aadhaar 123e4567-e89b-12d3-1234-426614174000'), []);
    assert.deepEqual(found('row 123E4567-E89B-12D3-A456-426614174000 Aadhaar 7013 8216 4176'), [['IN_AADHAAR', '7013 8216 4176']]);
    assert.deepEqual(found('Aadhaar 7013-8216-4176, not a UUID'), [['IN_AADHAAR', '7013-8216-4176']]);
    assert.deepEqual(found('My Aadhaar is 426614174000.'), [['IN_AADHAAR', '426614174000']]);
  });

  it('an SCP-style SSH remote is not an e-mail; an e-mail before a colon still is', () => {
    assert.deepEqual(found('git clone git@github.com:owner/repo.git'), []);
    assert.deepEqual(found('remote: deploy@build.example.com:/srv/app and git@gitlab.com:repo.git'), []);
    assert.deepEqual(found('Mail siti.aminah@example.com: she replies fast'), [['EMAIL', 'siti.aminah@example.com']]);
    assert.deepEqual(found('Contact:siti.aminah@example.com:'), [['EMAIL', 'siti.aminah@example.com']]);
  });

  it('every long stage checks the deadline (normalise, scan, validate, context, resolve), with no long stretch unchecked', () => {
    // Invisible characters inside identifiers (normalise's second pass), digit runs and e-mails
    // (scan, validate), keywords (context), thousands of spans (resolve).
    const text = 'MyKad 570306\u200b-09-3427 and card 4310\u00a00455\u00a04388\u00a07329, mail ab@cd.ef; '.repeat(20_000);
    const real = performance.now.bind(performance);
    const reads: Array<{ at: number; stack: string }> = [];
    detect(text, { now: NOW });
    performance.now = () => {
      const at = real();
      reads.push({ at, stack: new Error().stack ?? '' });
      return at;
    };
    let t0 = 0;
    let spansFound = 0;
    try {
      t0 = real();
      spansFound = detect(text, { now: NOW, deadline: t0 + 1e9 }).length;
    } finally {
      performance.now = real;
    }
    const total = real() - t0;
    assert.equal(spansFound, 60_000);
    /** Reads whose caller (the frame below `check`) matches `re`. */
    const from = (re: RegExp): number => reads.filter((r) => re.test(r.stack.split('\n')[3] ?? '')).length;
    const stages: Array<[string, RegExp]> = [
      ['normalise', /buildMapped|mapSameLength/],
      ['scan', /scanCandidates|runEnd|scanRun|scanAlnumWindow|scanIban|scanEmails/],
      ['validate / score (detect loop)', /Detector\.detect/],
      ['context', /ContextMatcher\.scan|contextHits/],
      ['resolve', /Detector\.resolve|sortChecked/],
    ];
    for (const [stage, re] of stages) assert.ok(from(re) >= 2, `${stage}: ${from(re)} deadline checks`);
    let gap = 0;
    for (let i = 1; i < reads.length; i++) gap = Math.max(gap, reads[i]!.at - reads[i - 1]!.at);
    assert.ok(gap < total / 2, `longest stretch without a deadline check: ${gap.toFixed(1)} of ${total.toFixed(1)} ms`);
  });
});
