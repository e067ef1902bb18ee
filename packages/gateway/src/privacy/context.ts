/**
 * Context words (spec §3.2): positive keywords per type in the deployment languages and negative
 * words (order, invoice, call, IMEI, currency …), found with one Aho–Corasick automaton over the
 * text around candidates (each character is scanned once per text; windows around candidates are
 * merged first, so text far from any candidate is never scanned).
 *
 * Matching is case-insensitive by a length-preserving per-code-unit lower-casing (offsets stay
 * valid; Turkish İ maps to i). Keywords starting or ending with a Latin, Cyrillic or Greek letter
 * or a digit need a word boundary on that side (no adjacent letter, mark or digit); a trailing
 * `*` lifts the right boundary (inflected forms: `numara*` matches `numarası`, `numaram`).
 * Keywords in scripts written without spaces (Thai, Chinese, Amharic …) and Arabic-script ones
 * (prefixed articles) match as substrings. Every keyword is added in NFC and NFD form.
 *
 * Keywords are matched on the scan copy, where underscores, quotes, brackets, `=`, `:` and `.`
 * are not word characters, so `"created": 1764412800`, `created_at=…`, `exp: …`, `[ts] …` and
 * `Date.now() → …` are seen in JSON, logs and code; camel-case labels (`createdAt`) are listed as
 * such because a following capital letter is a word character.
 */
import type { IdType } from './types.ts';

/** Positive context words per type: spec §3.2 table plus common spelling variants. */
export const DEFAULT_KEYWORDS: Readonly<Record<IdType, readonly string[]>> = {
  MY_NRIC: ['mykad', 'my kad', 'kad pengenalan', 'no. k/p', 'k/p', 'no. kp', 'ic', 'i/c', 'no. ic', 'ic no', 'nric'],
  SG_NRIC_FIN: ['nric', 'fin', 'uin', 'ic', '身份证', '准证'],
  ID_NIK: ['nik', 'ktp', 'e-ktp', 'nomor induk kependudukan', 'kependudukan', 'kk'],
  TH_NATIONAL_ID: ['เลขประจำตัวประชาชน', 'เลขประจําตัวประชาชน', 'บัตรประชาชน', 'เลขบัตรประชาชน', 'thai id', 'national id'],
  VN_CCCD: ['cccd', 'căn cước', 'căn cước công dân', 'can cuoc', 'số định danh', 'số định danh cá nhân', 'định danh', 'cmnd'],
  PH_PSN: ['philsys', 'psn', 'philid', 'philsys number'],
  SA_NATIONAL_ID: ['رقم الهوية', 'الهوية الوطنية', 'السجل المدني', 'national id', 'saudi id'],
  SA_IQAMA: ['إقامة', 'اقامة', 'الإقامة', 'رقم الإقامة', 'هوية مقيم', 'iqama', 'resident id'],
  AE_EMIRATES_ID: ['emirates id', 'eid', 'الهوية الإماراتية', 'رقم الهوية', 'بطاقة الهوية'],
  QA_QID: ['qid', 'qatar id', 'الرقم الشخصي', 'البطاقة الشخصية'],
  EG_NATIONAL_ID: ['الرقم القومي', 'رقم البطاقة', 'بطاقة الرقم القومي', 'national id'],
  KE_NATIONAL_ID: ['kitambulisho', 'namba ya kitambulisho', 'id no.', 'id no', 'id number', 'national id'],
  KE_KRA_PIN: ['kra', 'kra pin', 'pin'],
  NG_NIN: ['nin', 'national identification number', 'nimc'],
  NG_BVN: ['bvn', 'bank verification number'],
  ZA_ID: ['id number', 'identity number', 'sa id', 'rsa id', 'id-nommer', 'identiteitsnommer'],
  ET_FAYDA_FIN: ['fayda', 'ፋይዳ', 'fin', 'መለያ ቁጥር', 'national id'],
  PK_CNIC: ['cnic', 'nic', 'nadra', 'شناختی کارڈ', 'قومی شناختی کارڈ'],
  IN_AADHAAR: ['aadhaar', 'aadhar', 'आधार', 'uid', 'uidai'],
  IN_PAN: ['pan', 'पैन', 'permanent account number'],
  BD_NID: ['nid', 'এনআইডি', 'জাতীয় পরিচয়পত্র', 'ভোটার আইডি', 'national id'],
  KZ_IIN: ['иин', 'жсн', 'iin'],
  TR_TCKN: ['t.c. kimlik', 'tc kimlik', 'kimlik numara*', 'kimlik no', 'tckn', 'tc no', 'tc numara*'],
  CN_RIC: ['身份证', '身份证号', '身份证号码', '公民身份号码', '证件号', '身份證', '身分證'],
  BR_CPF: ['cpf', 'cadastro de pessoas físicas'],
  BR_CNPJ: ['cnpj'],
  MX_CURP: ['curp', 'clave única de registro de población'],
  IBAN: ['iban', 'آيبان', 'ايبان', 'رقم الآيبان', 'hesap', 'conta'],
  PAYMENT_CARD: ['card', 'cards', 'kartu', 'kartı', 'بطاقة', 'tarjeta', 'cartão', 'kadi', 'บัตร', '卡号', '信用卡'],
  EMAIL: ['email', 'e-mail', 'emel', 'correo', 'البريد الإلكتروني', 'อีเมล', '邮箱'],
};

/**
 * Negative context (spec §3.2): order, invoice, tracking, ticket, reference, phone/call words,
 * meeting numbers, IMEI/ISBN/barcodes, currency symbols and codes, plus technical words that
 * precede numbers in logs and JSON (timestamp, epoch, version, build, hash, port …). Lowers the
 * score when closer than any keyword of the candidate's type.
 */
export const DEFAULT_NEGATIVE: readonly string[] = [
  'order', 'order no', 'orders', 'invoice', 'inv', 'faktur', 'tracking', 'takip', 'ticket', 'pnr',
  'reference', 'ref', 'call', 'phone', 'tel', 'telephone', 'mobile', 'whatsapp', 'simu', 'piga simu',
  'hubungi', 'telepon', 'telefon', 'oda', 'pedido', 'sipariş', 'siparis', 'meeting', 'meeting id',
  '会议号', '订单', '电话', 'คำสั่งซื้อ', 'โทร', 'رقم العملية', 'رقم الطلب', 'هاتف', 'جوال',
  'điện thoại', 'đơn hàng', 'फोन', 'ফোন', 'телефон', 'заказ', 'imei', 'isbn', 'issn', 'ean', 'upc',
  'barcode', 'sku', 'gtin', 'serial no', 'tracking no', 'awb',
  'timestamp', 'epoch', 'unix time', 'created_at', 'updated_at', 'version', 'build', 'hash', 'sha',
  'md5', 'pid', 'port', 'doi',
  '$', '€', '£', '¥', '₹', '₦', '₺', '₱', '฿', '₫', '₸', '﷼', 'rp', 'rs', 'rs.', 'usd', 'eur', 'gbp',
  'idr', 'myr', 'rm', 'sgd', 'thb', 'vnd', 'php', 'sar', 'aed', 'qar', 'egp', 'kes', 'ksh', 'ngn',
  'zar', 'etb', 'pkr', 'inr', 'bdt', 'kzt', 'tl', 'cny', 'rmb', 'brl', 'r$', 'mxn', 'บาท', 'ريال',
  'درهم', 'جنيه', 'روپے', 'টাকা', 'тенге', 'руб', 'naira', 'shilingi', 'birr',
];

/**
 * Near negative context: technical labels that put a timestamp, not an identifier, right before a
 * number in JSON, logs, SQL and code (`"created": 1764412800`, `exp: …`, `[ts] …`,
 * `Date.now() returned …`), and time units right after one (`1699864009357 ms`). Ten-digit epoch
 * seconds starting with 1 pass the Saudi ID check one time in ten, thirteen-digit epoch
 * milliseconds the Thai ID check one time in eleven. These words are common in prose too ("at the
 * time", "record … updated", "Ms Tan"), so a label counts only BEFORE the number and a unit only
 * AFTER it, within `SCORE.nearNegativeReach` code units, and only when the number has no keyword
 * of its type in context (detect.ts). `timestamp`, `epoch`, `unix time`, `created_at` and
 * `updated_at` are unambiguous and stay full negative words ({@link DEFAULT_NEGATIVE}).
 */
export const DEFAULT_NEGATIVE_NEAR: Readonly<{ before: readonly string[]; after: readonly string[] }> = {
  before: [
    'created', 'createdat', 'created_on', 'createdon', 'create_time', 'updated', 'updatedat', 'modified',
    'modifiedat', 'lastmodified', 'last_modified', 'deleted_at', 'deletedat', 'expires', 'expires_at',
    'expiresat', 'ts', 'exp', 'iat', 'nbf', 'auth_time', 'time', 'timestamp_ms', 'unix', 'date.now',
    'ms', 'millis', 'log',
  ],
  after: ['ms', 'millis', 'milliseconds'],
};

/** Where a near negative word counts (bit mask of {@link KeywordHit.near}). */
export const NEAR_BEFORE = 1;
export const NEAR_AFTER = 2;

/** One keyword occurrence: offsets into the scanned (normalised) text, end exclusive. */
export interface KeywordHit {
  start: number;
  end: number;
  /** Types this keyword supports (empty for negative words). */
  types: readonly IdType[];
  negative: boolean;
  /**
   * 0 for a full negative word; for a near negative word ({@link DEFAULT_NEGATIVE_NEAR}) the sides
   * of the number it counts on: {@link NEAR_BEFORE} | {@link NEAR_AFTER}.
   */
  near: number;
}

interface PatternInfo {
  length: number;
  types: IdType[];
  negative: boolean;
  near: number;
  leftBoundary: boolean;
  rightBoundary: boolean;
}

/**
 * Length-preserving lower-case of each BMP code unit (Turkish İ → i), filled lazily: 0 = not
 * computed yet (U+0000 maps to itself and is never part of a keyword).
 */
const LOWER = new Uint16Array(65536);

function lower(c: number): number {
  if (c < 128) return c >= 65 && c <= 90 ? c | 0x20 : c;
  const l = LOWER[c]!;
  if (l !== 0) return l;
  let v = c;
  if (c === 0x130) v = 0x69;
  else if (c < 0xd800 || c > 0xdfff) {
    const s = String.fromCharCode(c).toLowerCase();
    if (s.length === 1) v = s.charCodeAt(0);
  }
  LOWER[c] = v;
  return v;
}

const BOUNDARY_SCRIPT = /[\p{Script=Latin}\p{Script=Cyrillic}\p{Script=Greek}0-9]/u;
const WORD_CHAR = /[\p{L}\p{M}\p{N}]/u;

/** Word character test with a small cache for ASCII. */
function isWordChar(c: number): boolean {
  if (c < 128) return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
  if (c >= 0xd800 && c <= 0xdfff) return false;
  return WORD_CHAR.test(String.fromCharCode(c));
}

function lowerString(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) out += String.fromCharCode(lower(s.charCodeAt(i)));
  return out;
}

/**
 * Aho–Corasick automaton over UTF-16 code units of the lower-cased keywords.
 * Built once per {@link ContextMatcher}; scanning is O(window length + hits).
 */
export class ContextMatcher {
  private readonly goto: Array<Map<number, number>> = [new Map()];
  private readonly fail: number[] = [0];
  /** Pattern ids ending at each state (own and via suffix links). */
  private readonly out: number[][] = [[]];
  private readonly patterns: PatternInfo[] = [];
  /** Transitions out of the root state, dense (most characters start no keyword). */
  private readonly rootNext = new Int32Array(65536);
  /** Transitions of the other states, flattened: state s owns entries trOff[s] … trOff[s+1]−1. */
  private trOff = new Int32Array(1);
  private trChar = new Uint16Array(0);
  private trTo = new Int32Array(0);
  /** Longest keyword, in code units (windows are widened by it). */
  readonly maxLength: number;

  /**
   * @param keywords positive words per type (merged with nothing: pass the defaults explicitly)
   * @param negative negative words
   * @param nearNegative near negative words before and after the number (a word that is also in
   *   `negative` is a full negative word)
   */
  constructor(
    keywords: Readonly<Partial<Record<IdType, readonly string[]>>>,
    negative: readonly string[],
    nearNegative: Readonly<{ before: readonly string[]; after: readonly string[] }> = { before: [], after: [] },
  ) {
    const byText = new Map<string, PatternInfo>();
    const add = (word: string, type: IdType | null, near = 0): void => {
      let w = word.trim();
      let prefixOnly = false;
      if (w.endsWith('*')) {
        prefixOnly = true;
        w = w.slice(0, -1);
      }
      if (!w) return;
      for (const form of new Set([w.normalize('NFC'), w.normalize('NFD')])) {
        const key = lowerString(form) + (prefixOnly ? '*' : '');
        let info = byText.get(key);
        if (!info) {
          const lw = lowerString(form);
          info = {
            length: lw.length,
            types: [],
            negative: false,
            near: 0,
            leftBoundary: BOUNDARY_SCRIPT.test(lw[0]!),
            rightBoundary: !prefixOnly && BOUNDARY_SCRIPT.test(lw[lw.length - 1]!),
          };
          byText.set(key, info);
        }
        if (type === null) {
          // A full negative word wins over near; near sides add up.
          if (!info.negative) info.near = near;
          else if (info.near !== 0) info.near = near === 0 ? 0 : info.near | near;
          info.negative = true;
        } else if (!info.types.includes(type)) info.types.push(type);
      }
    };
    for (const [type, words] of Object.entries(keywords) as Array<[IdType, readonly string[]]>) {
      for (const w of words) add(w, type);
    }
    for (const w of negative) add(w, null);
    for (const w of nearNegative.before) add(w, null, NEAR_BEFORE);
    for (const w of nearNegative.after) add(w, null, NEAR_AFTER);
    let maxLen = 0;
    for (const [key, info] of byText) {
      const text = key.endsWith('*') ? key.slice(0, -1) : key;
      const id = this.patterns.length;
      this.patterns.push(info);
      maxLen = Math.max(maxLen, info.length);
      let state = 0;
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        let next = this.goto[state]!.get(c);
        if (next === undefined) {
          next = this.goto.length;
          this.goto.push(new Map());
          this.fail.push(0);
          this.out.push([]);
          this.goto[state]!.set(c, next);
        }
        state = next;
      }
      this.out[state]!.push(id);
    }
    this.maxLength = maxLen;
    for (const [c, st] of this.goto[0]!) this.rootNext[c] = st;
    const states = this.goto.length;
    let total = 0;
    for (const m of this.goto) total += m.size;
    this.trOff = new Int32Array(states + 1);
    this.trChar = new Uint16Array(total);
    this.trTo = new Int32Array(total);
    let k = 0;
    for (let st = 0; st < states; st++) {
      this.trOff[st] = k;
      for (const [c, to] of this.goto[st]!) {
        this.trChar[k] = c;
        this.trTo[k] = to;
        k++;
      }
    }
    this.trOff[states] = k;
    // Breadth-first failure links.
    const queue: number[] = [];
    for (const s of this.goto[0]!.values()) {
      this.fail[s] = 0;
      queue.push(s);
    }
    for (let qi = 0; qi < queue.length; qi++) {
      const r = queue[qi]!;
      for (const [c, s] of this.goto[r]!) {
        queue.push(s);
        let f = this.fail[r]!;
        while (f !== 0 && !this.goto[f]!.has(c)) f = this.fail[f]!;
        const g = this.goto[f]!.get(c);
        this.fail[s] = g !== undefined && g !== s ? g : 0;
        this.out[s] = this.out[s]!.concat(this.out[this.fail[s]!]!);
      }
    }
  }

  /** Goto transition of a non-root state on code unit `c`, or −1 (states have few transitions). */
  private step(state: number, c: number): number {
    const end = this.trOff[state + 1]!;
    for (let k = this.trOff[state]!; k < end; k++) if (this.trChar[k] === c) return this.trTo[k]!;
    return -1;
  }

  /**
   * Appends every keyword occurrence inside `t[from, to)` to `hits` (offsets into `t`), applying
   * the word-boundary rules against the characters around the match (which may lie outside the
   * window). `checkDeadline` (the detector's deadline) is called every 16 Ki code units.
   */
  scan(t: string, from: number, to: number, hits: KeywordHit[], checkDeadline?: () => void): void {
    const rootNext = this.rootNext;
    let state = 0;
    for (let i = from; i < to; i++) {
      if (checkDeadline && ((i - from) & 0x3fff) === 0x3fff) checkDeadline();
      const c = lower(t.charCodeAt(i));
      if (state === 0) {
        state = rootNext[c]!;
        if (state === 0) continue;
      } else {
        let next = this.step(state, c);
        while (next < 0) {
          state = this.fail[state]!;
          if (state === 0) {
            next = rootNext[c]!;
            break;
          }
          next = this.step(state, c);
        }
        state = next;
        if (state === 0) continue;
      }
      const outs = this.out[state]!;
      if (outs.length === 0) continue;
      for (const id of outs) {
        const p = this.patterns[id]!;
        const end = i + 1;
        const start = end - p.length;
        if (p.leftBoundary && start > 0 && isWordChar(t.charCodeAt(start - 1))) continue;
        if (p.rightBoundary && end < t.length && isWordChar(t.charCodeAt(end))) continue;
        hits.push({ start, end, types: p.types, negative: p.negative, near: p.near });
      }
    }
  }
}
