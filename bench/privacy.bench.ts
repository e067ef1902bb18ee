/**
 * Throughput of the identifier detector (`detect()`, all 30 types, default configuration) on a
 * synthetic multilingual corpus of several MB:
 *   - plain filler sentences in the 20 fixture languages, without identifiers (most of the text),
 *   - number-heavy text: prices, dates, times, order/invoice/ticket numbers, phone numbers,
 *     quantities, versions, tracking codes (random digits, so a few happen to validate),
 *   - the 157 fixture sentences (positives and negatives), sprinkled in.
 * The corpus is cut into prompt-sized documents (4–64 KiB) and each is scanned with `detect()`.
 *
 * Run: node --import tsx bench/privacy.bench.ts [--mb 8] [--rounds 5] [--kind mixed|filler|numbers|fixture]
 * Prints MB/s per core (UTF-8 bytes and UTF-16 code units), best and median over the rounds,
 * after a warm-up round, plus the throughput of each text kind on its own.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { detect } from '../packages/gateway/src/privacy/index.ts';
import { rng } from '../packages/gateway/test/helpers/prng.ts';

const args = process.argv.slice(2);
const argNum = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : dflt;
};
const TARGET_MB = argNum('mb', 8);
const ROUNDS = argNum('rounds', 5);
const ONLY = args.includes('--kind') ? args[args.indexOf('--kind') + 1] : undefined;

const fixturePath = fileURLToPath(new URL('../packages/gateway/test/fixtures/pii-vectors.json', import.meta.url));
const fixture = JSON.parse(readFileSync(fixturePath, 'utf8')) as { sentences: Array<{ text: string }> };

const rand = rng(20261129);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const digits = (n: number): string => {
  let s = String(1 + Math.floor(rand() * 9));
  for (let i = 1; i < n; i++) s += String(Math.floor(rand() * 10));
  return s;
};

const FILLER: readonly string[] = [
  'The committee reviewed the proposal and asked the team to prepare a short summary for the next meeting.',
  'Please rewrite this paragraph in a friendlier tone and keep the key points about the delivery schedule.',
  'Can you explain the difference between a fixed and a variable interest rate in simple words?',
  'Our customers in the northern region reported slower responses during the holiday season.',
  'Sila semak dokumen ini dan berikan cadangan untuk memperbaiki struktur laporan tahunan kami.',
  'Kami ingin mengetahui cara terbaik untuk mengurus permohonan cuti pekerja secara dalam talian.',
  'Tolong buatkan ringkasan rapat hari ini dan kirimkan kepada semua peserta sebelum sore.',
  'Bagaimana cara meningkatkan layanan pelanggan tanpa menambah biaya operasional perusahaan?',
  'กรุณาช่วยสรุปเนื้อหาของรายงานฉบับนี้ให้สั้นและเข้าใจง่ายสำหรับผู้บริหาร',
  'ลูกค้าหลายคนสอบถามเกี่ยวกับขั้นตอนการสมัครบริการใหม่ผ่านแอปพลิเคชัน',
  'Vui lòng tóm tắt nội dung cuộc họp và gửi cho toàn bộ nhân viên trong phòng ban.',
  'Chúng tôi cần một kế hoạch truyền thông rõ ràng cho chiến dịch ra mắt sản phẩm mới.',
  'Pakisuri ang dokumentong ito at magbigay ng mga mungkahi para sa mas malinaw na paliwanag.',
  'يرجى تلخيص هذا التقرير بلغة بسيطة وإرساله إلى فريق الإدارة قبل نهاية الأسبوع.',
  'نود معرفة أفضل الطرق لتحسين تجربة العملاء في فروعنا المختلفة.',
  'Tafadhali andika muhtasari wa mkutano huu na uutume kwa wanachama wote wa kamati.',
  'Abeg help me write better message wey go explain the new policy to all the staff.',
  'Skryf asseblief n kort opsomming van die verslag vir die bestuurspan.',
  'እባክዎ ይህንን ሪፖርት በአጭሩ ያጠቃልሉ እና ለቡድኑ ያጋሩ።',
  'براہ کرم اس رپورٹ کا خلاصہ آسان الفاظ میں لکھیں اور ٹیم کو بھیج دیں۔',
  'कृपया इस रिपोर्ट का सारांश सरल भाषा में लिखें और टीम को भेजें।',
  'অনুগ্রহ করে এই প্রতিবেদনের একটি সংক্ষিপ্ত সারাংশ লিখুন এবং দলকে পাঠান।',
  'Пожалуйста, подготовьте краткое резюме отчёта и отправьте его руководству до пятницы.',
  'Өтінеміз, есептің қысқаша мазмұнын дайындап, басшылыққа жіберіңіз.',
  'Lütfen bu raporun kısa bir özetini hazırlayın ve ekip üyeleriyle paylaşın.',
  '请把这份报告总结成简单易懂的要点，并在周五之前发给管理团队。',
  'Por favor, resuma este relatório em linguagem simples e envie para a equipe de gestão.',
  'Por favor, resume este informe en un lenguaje sencillo y envíalo al equipo directivo.',
];

function numberHeavy(): string {
  switch (Math.floor(rand() * 14)) {
    case 0: return `Total tagihan Rp ${digits(1)}.${digits(3)}.000 jatuh tempo pada ${1 + Math.floor(rand() * 28)}/0${1 + Math.floor(rand() * 9)}/2026.`;
    case 1: return `Order #${digits(8)} shipped on 2026-0${1 + Math.floor(rand() * 9)}-1${Math.floor(rand() * 10)}, total $${digits(3)}.${digits(2)}.`;
    case 2: return `Invoice INV-2026-${digits(6)} for ${digits(2)} items at €${digits(2)},${digits(2)} each.`;
    case 3: return `Meeting at 14:${digits(2)} in room ${digits(3)}; dial-in ${digits(3)} ${digits(3)} ${digits(4)}.`;
    case 4: return `Sipariş numaranız ${digits(11)}, kargo takip kodu 1Z${digits(4)}E${digits(10)} ve toplam tutar ${digits(1)}.${digits(3)},90 TL.`;
    case 5: return `Call +60 3-${digits(4)} ${digits(4)} or 0${digits(2)}-${digits(3)} ${digits(4)} before 5pm.`;
    case 6: return `Q3 revenue grew ${digits(2)}.${digits(1)}% to ${digits(3)} million; EBITDA ${digits(2)}.${digits(1)} million, ${digits(4)} employees.`;
    case 7: return `ยอดชำระ ${digits(2)},${digits(3)}.00 บาท ภายในวันที่ ${1 + Math.floor(rand() * 28)}/12/2569 หมายเลขคำสั่งซื้อ ${digits(13)}`;
    case 8: return `Version ${digits(1)}.${digits(2)}.${digits(1)} released ${2000 + Math.floor(rand() * 26)}; build ${digits(7)}, ${digits(3)} tests passed.`;
    case 9: return `Flight AI ${digits(3)} departs at ${digits(2)}:${digits(2)}; PNR 6QX2PT, seat ${digits(2)}A, ticket 0${digits(12)}.`;
    case 10: return `Stock: ${digits(4)} units, reorder level ${digits(3)}, SKU ${digits(10)}, price R$ ${digits(3)},${digits(2)}.`;
    case 11: return `Temperatures ranged from ${digits(2)} to ${digits(2)} degrees between 2020 and 2026, with ${digits(3)} mm of rain.`;
    case 12: return `Reference ${digits(8)} dated ${digits(2)}.${digits(2)}.2026, amount ${digits(2)} ${digits(3)} ${digits(3)} KZT.`;
    default: return `Коды: ${digits(5)}, ${digits(6)}, ${digits(4)}; тел. 8 ${digits(3)} ${digits(3)} ${digits(2)} ${digits(2)}.`;
  }
}

type Kind = 'mixed' | 'filler' | 'numbers' | 'fixture';

function buildDocs(kind: Kind, targetBytes: number): string[] {
  const docs: string[] = [];
  let total = 0;
  while (total < targetBytes) {
    const size = 4096 + Math.floor(rand() * 60 * 1024);
    const parts: string[] = [];
    let n = 0;
    while (n < size) {
      let s: string;
      const r = rand();
      if (kind === 'filler') s = pick(FILLER);
      else if (kind === 'numbers') s = numberHeavy();
      else if (kind === 'fixture') s = pick(fixture.sentences).text;
      else s = r < 0.75 ? pick(FILLER) : r < 0.95 ? numberHeavy() : pick(fixture.sentences).text;
      parts.push(s);
      n += Buffer.byteLength(s) + 1;
    }
    const doc = parts.join(rand() < 0.5 ? ' ' : '\n');
    docs.push(doc);
    total += Buffer.byteLength(doc);
  }
  return docs;
}

function run(docs: readonly string[]): { ms: number; spans: number } {
  let spans = 0;
  const now = new Date('2026-11-29T00:00:00Z');
  const t0 = performance.now();
  for (const d of docs) spans += detect(d, { now }).length;
  return { ms: performance.now() - t0, spans };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/** Target throughput of `detect()` on the mixed corpus (MB/s per core). */
const TARGET_MBPS = 20;

function measure(label: string, docs: readonly string[], rounds: number): void {
  const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d), 0);
  const units = docs.reduce((n, d) => n + d.length, 0);
  const mb = bytes / 1e6;
  const mu = units / 1e6;
  run(docs); // warm-up
  const times: number[] = [];
  let spans = 0;
  for (let r = 0; r < rounds; r++) {
    const res = run(docs);
    times.push(res.ms);
    spans = res.spans;
  }
  const best = Math.min(...times);
  const med = median(times);
  console.log(
    `${label.padEnd(8)} ${mb.toFixed(2).padStart(6)} MB (${mu.toFixed(2)} M UTF-16 units, ${docs.length} docs, ${spans} spans)` +
      `  best ${(mb / (best / 1000)).toFixed(1).padStart(6)} MB/s (${(mu / (best / 1000)).toFixed(1)} M units/s)` +
      `  median ${(mb / (med / 1000)).toFixed(1).padStart(6)} MB/s (${(mu / (med / 1000)).toFixed(1)} M units/s)`,
  );
  if (label === 'mixed') {
    const mbps = mb / (med / 1000);
    console.log(`         target ≥ ${TARGET_MBPS} MB/s per core on mixed text: ${mbps >= TARGET_MBPS ? 'met' : 'NOT met'} (median ${mbps.toFixed(1)} MB/s)`);
  }
}

console.log(`privacy detector benchmark: node ${process.version}, one core, ${ROUNDS} rounds after a warm-up (MB = 10^6 UTF-8 bytes)`);
const t0 = performance.now();
detect('warm up the module state 1234567890');
console.log(`first detect() call (lazy detector build): ${(performance.now() - t0).toFixed(1)} ms`);
const KINDS: ReadonlyArray<[Kind, number]> = [['mixed', 1], ['filler', 1 / 4], ['numbers', 1 / 4], ['fixture', 1 / 8]];
for (const [kind, share] of KINDS) {
  if (ONLY && ONLY !== kind) continue;
  measure(kind, buildDocs(kind, TARGET_MB * 1e6 * (ONLY ? 1 : share)), ROUNDS);
}
