/**
 * The request guard: finds personal identifiers in a request's free text and applies the caller's
 * policy to each, before routing (docs/privacy.md).
 *
 * Which text is scanned, per operation (never structure: `response_format`, tool definitions,
 * `tool_choice`, `metadata`, JSON-schema keys, model names and the like are left alone):
 * - chat completions: every message's `content` (a string, or the text of `text` / `refusal` parts,
 *   file names of `file` parts), `refusal`, `name`, assistant `tool_calls[].function.arguments` and
 *   legacy `function_call.arguments`, `role: tool` results, `prediction.content`;
 * - completions: `prompt` (a string or an array of strings) and `suffix`;
 * - embeddings: `input` (a string or an array of strings; token arrays are numbers, not text);
 * - responses: `instructions`, `input` (a string, or items' `content` strings and `input_text` /
 *   `output_text` / `refusal` parts, input file names, `function_call.arguments`,
 *   `function_call_output.output` (string or parts), custom tool calls and outputs, reasoning
 *   summaries), `prompt.variables`.
 *
 * JSON `\uXXXX` escapes in any scanned text are read as the characters they encode.
 *
 * Actions per identifier type: `block` (the request is refused: 400 `pii_detected` naming the types,
 * never the values), `redact` (typed placeholder), `mask` (last 4 kept), `tokenize` (placeholder,
 * restored in the answer for the caller — see restore.ts), `allow` (sent as is; the request's
 * classification is raised to the policy's `allow_classification`).
 *
 * Fails closed: a scan that throws, exceeds the time budget or is too large refuses the request.
 */
import type { PiiAction, PrivacyConfig, PrivacyPolicyConfig } from '../config/schema.ts';
import type { Operation } from '../providers/types.ts';
import { GatewayError } from '../http/errors.ts';
import { Detector, type PiiSpan } from './detect.ts';
import { PiiInputTooLargeError, PiiTimeoutError } from './errors.ts';
import { RedactionSession } from './redact.ts';
import { PII_TYPES, type IdType, type PiiType } from './types.ts';

/** A policy with every default resolved. */
export interface ResolvedPrivacyPolicy {
  /** Action per type looked for (types set to `off` are absent). */
  readonly actions: ReadonlyMap<PiiType, PiiAction>;
  /** The types looked for. */
  readonly types: ReadonlySet<PiiType>;
  readonly strict: boolean;
  /** Classification name for requests whose identifiers go out as is, or null. */
  readonly allowClassification: string | null;
}

/** What the guard did to one request. */
export interface GuardOutcome {
  /** The body to route and forward (the same object when nothing changed). */
  readonly body: Record<string, unknown>;
  /** Findings per `TYPE action`, e.g. `MY_NRIC redact` → 2 (no values). */
  readonly counts: ReadonlyMap<string, number>;
  /** Placeholder → original, for the tokenize action's restore step (empty when none). Never log it. */
  readonly restore: ReadonlyMap<string, string>;
  /** True when an identifier went out as is (`allow`). */
  readonly allowed: boolean;
}

/** Audit lines for a guard outcome: `TYPE action count`, sorted. */
export function piiAuditLines(counts: ReadonlyMap<string, number>): string[] {
  return [...counts.entries()].map(([k, n]) => `${k} ${n}`).sort();
}

type Visit = (s: string) => string;

/** Actions from the most to the least protective: what a tie between types resolves to. */
const STRICTNESS: readonly PiiAction[] = ['block', 'redact', 'tokenize', 'mask', 'allow'];

/**
 * The action for one finding: its type's; for a `NATIONAL_ID` tie (a number valid as several
 * types) the most protective action among the tied types (and `NATIONAL_ID`'s own).
 */
function actionFor(s: PiiSpan, policy: ResolvedPrivacyPolicy): PiiAction {
  const own = policy.actions.get(s.type) ?? 'redact';
  const tied = (s as PiiSpan & { candidates?: readonly PiiType[] }).candidates;
  if (s.type !== 'NATIONAL_ID' || !tied) return own;
  let best = STRICTNESS.indexOf(own);
  for (const t of tied) {
    const a = policy.actions.get(t);
    if (a !== undefined) best = Math.min(best, STRICTNESS.indexOf(a));
  }
  return STRICTNESS[best]!;
}

/**
 * Decodes JSON `\uXXXX` escapes (only those; other escapes stay as written).
 * @returns the decoded text, and for each decoded index the original start (`starts`) and end
 *   (`ends`, exclusive) of the source it came from
 */
export function decodeUnicodeEscapes(text: string): { text: string; starts: number[]; ends: number[] } {
  let out = '';
  const starts: number[] = [];
  const ends: number[] = [];
  for (let i = 0; i < text.length; ) {
    if (text.charCodeAt(i) === 92 /* \ */ && text.charCodeAt(i + 1) === 92) {
      // An escaped backslash: `\\u0035` is the text "\u0035", not a digit.
      out += '\\\\';
      starts.push(i, i + 1);
      ends.push(i + 1, i + 2);
      i += 2;
      continue;
    }
    if (text.charCodeAt(i) === 92 && text.charCodeAt(i + 1) === 117 /* u */ && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
      out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
      starts.push(i);
      ends.push(i + 6);
      i += 6;
      continue;
    }
    out += text[i];
    starts.push(i);
    ends.push(i + 1);
    i++;
  }
  return { text: out, starts, ends };
}

/** See module doc. */
export class PrivacyGuard {
  readonly detector: Detector;
  private readonly cache = new Map<string, ResolvedPrivacyPolicy>();

  /** @param config the `privacy` configuration section */
  constructor(readonly config: PrivacyConfig) {
    this.detector = new Detector({ extraKeywords: config.extra_keywords as Partial<Record<IdType, string[]>>, maxChars: config.max_chars });
  }

  /** The policy for a tenant and key: the key's entry over the tenant's over the default. */
  policyFor(tenant: string | null, keyId: string | null): ResolvedPrivacyPolicy {
    const k = `${tenant ?? ''}\u0000${keyId ?? ''}`;
    let p = this.cache.get(k);
    if (p) return p;
    const layers: PrivacyPolicyConfig[] = [this.config.default];
    if (tenant !== null && this.config.tenants[tenant]) layers.push(this.config.tenants[tenant]!);
    if (keyId !== null && this.config.keys[keyId]) layers.push(this.config.keys[keyId]!);
    let action: PiiAction = 'redact';
    let strict = false;
    let allowClassification: string | null = null;
    const perType = new Map<string, PiiAction | 'off'>();
    for (const l of layers) {
      if (l.action) action = l.action;
      if (l.strict !== undefined) strict = l.strict;
      if (l.allow_classification !== undefined) allowClassification = l.allow_classification;
      for (const [t, a] of Object.entries(l.types ?? {})) perType.set(t, a);
    }
    const actions = new Map<PiiType, PiiAction>();
    for (const t of [...PII_TYPES, 'NATIONAL_ID'] as PiiType[]) {
      const a = perType.get(t) ?? action;
      if (a !== 'off') actions.set(t, a);
    }
    p = { actions, types: new Set(actions.keys()), strict, allowClassification };
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(k, p);
    return p;
  }

  /**
   * Scans and rewrites a request body.
   * @param body the parsed, validated body (not modified: changed parts are copied)
   * @param now ms since epoch (birth-date plausibility)
   * @throws GatewayError 400 `pii_detected` (a `block` type was found; the message names the types),
   *   413 `privacy_scan_too_large`, 503 `privacy_guard_unavailable` (the scan failed or ran out of
   *   time: the request is not forwarded)
   */
  inspect(op: Operation, body: Record<string, unknown>, policy: ResolvedPrivacyPolicy, now = Date.now()): GuardOutcome {
    const counts = new Map<string, number>();
    const restore = new Map<string, string>();
    const blocked = new Set<string>();
    let allowed = false;
    let budget = this.config.max_chars;
    const session = new RedactionSession();
    const deadline = performance.now() + this.config.time_budget_ms;
    const date = new Date(now);
    const visit: Visit = (text) => {
      budget -= text.length;
      if (budget < 0) throw new PiiInputTooLargeError(this.config.max_chars - budget, this.config.max_chars);
      // JSON `\uXXXX` escapes (tool arguments, tool results pasted as JSON) are read as the
      // characters they stand for: a model, or an adapter that parses the JSON, would.
      const esc = text.indexOf('\\u') >= 0 ? decodeUnicodeEscapes(text) : null;
      const scanned = esc ? esc.text : text;
      let spans: PiiSpan[] = this.detector.detect(scanned, { types: policy.types, strict: policy.strict, deadline, now: date });
      if (spans.length === 0) return text;
      if (esc) spans = spans.map((sp) => ({ ...sp, start: esc.starts[sp.start]!, end: esc.ends[sp.end - 1]!, value: scanned.slice(sp.start, sp.end) }));
      const edits: Array<PiiSpan & { action: 'redact' | 'mask' | 'tokenize'; value?: string }> = [];
      for (const s of spans) {
        const action = actionFor(s, policy);
        const k = `${s.type} ${action}`;
        counts.set(k, (counts.get(k) ?? 0) + 1);
        if (action === 'block') blocked.add(s.type);
        else if (action === 'allow') allowed = true;
        else edits.push({ ...s, action });
      }
      if (edits.length === 0) return text;
      const out = session.apply(text, edits);
      for (const e of edits) {
        if (e.action !== 'tokenize') continue;
        const value = e.value ?? text.slice(e.start, e.end);
        const ph = session.placeholder(e.type, value);
        if (!restore.has(ph)) restore.set(ph, value); // the caller's first spelling
      }
      return out;
    };
    let out: Record<string, unknown>;
    try {
      out = rewrite(op, body, visit);
    } catch (err) {
      if (err instanceof PiiInputTooLargeError)
        throw new GatewayError(413, 'invalid_request_error', 'privacy_scan_too_large', `The request's text is larger than the privacy guard scans (${this.config.max_chars} characters); it was not forwarded.`);
      if (err instanceof PiiTimeoutError)
        throw new GatewayError(503, 'service_unavailable', 'privacy_guard_unavailable', 'The privacy guard could not finish scanning this request in time; it was not forwarded. Try again, or send less text.', null, { 'retry-after': '1' });
      throw new GatewayError(503, 'service_unavailable', 'privacy_guard_unavailable', 'The privacy guard failed on this request; it was not forwarded.', null, { 'retry-after': '1' });
    }
    if (blocked.size > 0) {
      const e = new GatewayError(400, 'invalid_request_error', 'pii_detected', `The request contains personal identifiers that this API key may not send: ${[...blocked].sort().join(', ')}. Remove them and try again.`);
      (e as GatewayError & { pii?: string[] }).pii = piiAuditLines(counts);
      throw e;
    }
    return { body: out, counts, restore, allowed };
  }
}

// --- walking the text fields of a body (copy-on-write) ---------------------------------------------

function str(v: unknown, visit: Visit): unknown {
  return typeof v === 'string' ? visit(v) : v;
}

/** Rewrites `obj[key]` with `f`; returns a copy of obj when it changed, else obj itself. */
function field<T extends Record<string, unknown>>(obj: T, key: string, f: (v: unknown) => unknown): T {
  if (!(key in obj)) return obj;
  const v = obj[key];
  const n = f(v);
  return n === v ? obj : { ...obj, [key]: n };
}

function mapArray(v: unknown, f: (x: unknown) => unknown): unknown {
  if (!Array.isArray(v)) return v;
  let out: unknown[] | null = null;
  for (let i = 0; i < v.length; i++) {
    const n = f(v[i]);
    if (n !== v[i]) {
      out ??= v.slice();
      out[i] = n;
    }
  }
  return out ?? v;
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Text of a content string or array: `text` / `input_text` / `output_text` / `summary_text` parts'
 * `text`, `refusal` parts' `refusal`, `file` / `input_file` parts' file names.
 */
function content(v: unknown, visit: Visit): unknown {
  if (typeof v === 'string') return visit(v);
  return mapArray(v, (p) => {
    if (!isObj(p)) return p;
    const t = p['type'];
    if (t === 'text' || t === 'input_text' || t === 'output_text' || t === 'summary_text') return field(p, 'text', (x) => str(x, visit));
    if (t === 'refusal') return field(p, 'refusal', (x) => str(x, visit));
    if (t === 'input_file') return field(p, 'filename', (x) => str(x, visit));
    if (t === 'file') return field(p, 'file', (f) => (isObj(f) ? field(f, 'filename', (x) => str(x, visit)) : f));
    return p;
  });
}

const fnArguments = (fn: unknown, visit: Visit) => (isObj(fn) ? field(fn, 'arguments', (a) => str(a, visit)) : fn);

function chatMessage(m: unknown, visit: Visit): unknown {
  if (!isObj(m)) return m;
  let out = field(m, 'content', (c) => content(c, visit));
  out = field(out, 'refusal', (r) => str(r, visit));
  out = field(out, 'name', (n) => str(n, visit));
  out = field(out, 'function_call', (fn) => fnArguments(fn, visit)); // legacy functions API
  out = field(out, 'tool_calls', (tc) => mapArray(tc, (call) => (isObj(call) ? field(call, 'function', (fn) => fnArguments(fn, visit)) : call)));
  return out;
}

function responsesItem(it: unknown, visit: Visit): unknown {
  if (!isObj(it)) return it;
  let out = field(it, 'content', (c) => content(c, visit));
  switch (it['type']) {
    case 'function_call':
      out = field(out, 'arguments', (a) => str(a, visit));
      break;
    case 'function_call_output':
    case 'custom_tool_call_output':
      out = field(out, 'output', (o) => content(o, visit));
      break;
    case 'custom_tool_call':
      out = field(out, 'input', (i) => str(i, visit));
      break;
    case 'reasoning':
      out = field(out, 'summary', (sm) => content(sm, visit));
      break;
  }
  return out;
}

/** Responses `prompt.variables`: strings, or input_text parts, substituted into a stored prompt. */
function promptVariables(p: unknown, visit: Visit): unknown {
  if (!isObj(p)) return p;
  return field(p, 'variables', (vars) => {
    if (!isObj(vars)) return vars;
    let out = vars;
    for (const k of Object.keys(vars))
      out = field(out, k, (v) => {
        if (typeof v === 'string') return visit(v);
        if (!isObj(v)) return v;
        const arr = content([v], visit) as unknown[];
        return arr[0];
      });
    return out;
  });
}

/** Applies `visit` to every scanned text field of `body` (see module doc); copy-on-write. */
export function rewrite(op: Operation, body: Record<string, unknown>, visit: Visit): Record<string, unknown> {
  switch (op) {
    case 'chat.completions':
      return field(
        field(body, 'messages', (ms) => mapArray(ms, (m) => chatMessage(m, visit))),
        'prediction', // Predicted Outputs: text the model reads
        (pr) => (isObj(pr) ? field(pr, 'content', (c) => content(c, visit)) : pr),
      );
    case 'completions':
      return field(
        field(body, 'prompt', (p) => (typeof p === 'string' ? visit(p) : mapArray(p, (x) => str(x, visit)))),
        'suffix',
        (s) => str(s, visit),
      );
    case 'embeddings':
      return field(body, 'input', (p) => (typeof p === 'string' ? visit(p) : mapArray(p, (x) => str(x, visit))));
    case 'responses':
      return field(
        field(
          field(body, 'instructions', (s) => str(s, visit)),
          'input',
          (p) => (typeof p === 'string' ? visit(p) : mapArray(p, (x) => responsesItem(x, visit))),
        ),
        'prompt',
        (p) => promptVariables(p, visit),
      );
  }
}
