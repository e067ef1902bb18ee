/**
 * Summarise a V8 `.cpuprofile` (e.g. the one `node --import tsx bench/gateway.bench.ts --cpu-prof`
 * writes to bench/results/profiles/): top functions by self time, by total (inclusive) time, a
 * roll-up by file/package, and the hottest source lines.
 *
 *   node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top 25] [--json]
 *
 * Positions are printed 1-based (`file:line:column`). Profiles written by bench/gateway-server.ts
 * already carry TypeScript source positions for `.ts` frames.
 */
import { readFileSync } from 'node:fs';
import { relative, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; scriptId: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
  positionTicks?: { line: number; ticks: number }[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Short, readable location: repo-relative path, `node_modules/pkg/...`, or `node:internal/...`. */
export function shortUrl(url: string): string {
  if (!url) return '';
  let p = url;
  if (p.startsWith('file://')) p = fileURLToPath(p);
  if (p.startsWith('/')) {
    const nm = p.lastIndexOf('/node_modules/');
    if (nm >= 0) return p.slice(nm + 1);
    return relative(REPO_ROOT, p);
  }
  return p;
}

/** Group for the roll-up: gateway source file, npm package, node internals, or a V8 pseudo-frame. */
function groupOf(n: Node): string {
  const u = n.callFrame.url;
  if (!u) return n.callFrame.functionName.startsWith('(') ? n.callFrame.functionName : '(native / V8 builtins)';
  const s = shortUrl(u);
  const nm = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(s);
  if (nm) return `npm:${nm[1]}`;
  if (s.startsWith('node:')) return 'node: core (' + s.replace(/^node:(internal\/)?/, '').split('/')[0] + ')';
  return s;
}

function label(n: Node): string {
  const cf = n.callFrame;
  const name = cf.functionName || '(anonymous)';
  if (!cf.url) return name;
  return `${name}  ${shortUrl(cf.url)}:${cf.lineNumber + 1}:${cf.columnNumber + 1}`;
}

export interface Summary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  self: { fn: string; ms: number; pctBusy: number }[];
  total: { fn: string; ms: number; pctBusy: number }[];
  groups: { group: string; ms: number; pctBusy: number }[];
  lines: { line: string; ms: number; pctBusy: number }[];
}

export function summarise(profile: Profile, top: number): Summary {
  const byId = new Map<number, Node>();
  for (const n of profile.nodes) byId.set(n.id, n);
  // Self time per node from samples + timeDeltas (DevTools convention: delta i+1 belongs to sample i).
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length > 0) {
    for (let i = 0; i < samples.length; i++) {
      const dt = i + 1 < deltas.length ? deltas[i + 1]! : 0;
      selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + Math.max(0, dt));
    }
  } else {
    const per = (profile.endTime - profile.startTime) / Math.max(1, profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0));
    for (const n of profile.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * per);
  }
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);
  let idleUs = 0;
  for (const [id, us] of selfUs) if (byId.get(id)?.callFrame.functionName === '(idle)') idleUs += us;
  const busyUs = Math.max(1, totalUs - idleUs);

  // Parents, for inclusive time.
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const selfByFn = new Map<string, number>();
  const totalByFn = new Map<string, number>();
  const byGroup = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    if (n.callFrame.functionName === '(idle)') continue;
    const l = label(n);
    selfByFn.set(l, (selfByFn.get(l) ?? 0) + us);
    const g = groupOf(n);
    byGroup.set(g, (byGroup.get(g) ?? 0) + us);
    // Inclusive: add to every distinct function on the stack once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cl = label(byId.get(cur)!);
      if (seen.has(cl)) continue;
      seen.add(cl);
      totalByFn.set(cl, (totalByFn.get(cl) ?? 0) + us);
    }
  }
  // Hot lines (positionTicks are per node; their time share is proportional to its ticks).
  const byLine = new Map<string, number>();
  for (const n of profile.nodes) {
    if (!n.positionTicks || !n.callFrame.url) continue;
    // tsx-transpiled modules are one generated line: their line ticks say nothing (older profiles).
    if (/\.m?tsx?$/.test(n.callFrame.url) && n.positionTicks.every((p) => p.line === 1)) continue;
    const us = selfUs.get(n.id) ?? 0;
    const ticks = n.positionTicks.reduce((a, p) => a + p.ticks, 0);
    if (!ticks || !us) continue;
    for (const p of n.positionTicks) {
      const k = `${shortUrl(n.callFrame.url)}:${p.line}  (${n.callFrame.functionName || '(anonymous)'})`;
      byLine.set(k, (byLine.get(k) ?? 0) + (us * p.ticks) / ticks);
    }
  }
  const rows = <K extends string>(m: Map<string, number>, key: K, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, us]) => ({ [key]: k, ms: Math.round(us / 100) / 10, pctBusy: Math.round((us / busyUs) * 1000) / 10 }) as { [P in K]: string } & { ms: number; pctBusy: number });
  return {
    totalMs: Math.round(totalUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    self: rows(selfByFn, 'fn', top),
    total: rows(totalByFn, 'fn', top),
    groups: rows(byGroup, 'group', top),
    lines: rows(byLine, 'line', top),
  };
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '25' }, json: { type: 'boolean', default: false } },
  });
  const file = positionals[0];
  if (!file) {
    process.stderr.write('usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top 25] [--json]\n');
    process.exit(2);
  }
  const top = Math.max(1, Math.min(500, Number(values.top) || 25));
  const s = summarise(JSON.parse(readFileSync(file, 'utf8')) as Profile, top);
  if (values.json) {
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return;
  }
  const out: string[] = [];
  out.push(`Profile ${file}: ${s.totalMs} ms sampled, ${s.idleMs} ms idle, ${s.busyMs} ms busy (percentages are of busy time).`);
  out.push('', `### Top ${top} by self time`, '', '| self ms | % busy | function  location |', '|---:|---:|---|');
  for (const r of s.self) out.push(`| ${r.ms} | ${r.pctBusy} | \`${r.fn}\` |`);
  out.push('', `### Top ${top} by total (inclusive) time`, '', '| total ms | % busy | function  location |', '|---:|---:|---|');
  for (const r of s.total) out.push(`| ${r.ms} | ${r.pctBusy} | \`${r.fn}\` |`);
  out.push('', '### Self time by file / package', '', '| self ms | % busy | group |', '|---:|---:|---|');
  for (const r of s.groups) out.push(`| ${r.ms} | ${r.pctBusy} | ${r.group} |`);
  if (s.lines.length) {
    out.push('', `### Hottest source lines`, '', '| ms | % busy | line |', '|---:|---:|---|');
    for (const r of s.lines) out.push(`| ${r.ms} | ${r.pctBusy} | \`${r.line}\` |`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
