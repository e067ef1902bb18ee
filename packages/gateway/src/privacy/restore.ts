/**
 * Restoring tokenized identifiers in answers (the `tokenize` action, docs/privacy.md): the model saw
 * placeholders such as `[MY_NRIC_1]`; the caller gets its original values back.
 *
 * Only placeholders this request created are replaced (a placeholder the model invents, or one of
 * another type or request, stays as is), and only in generated text: a chat answer's
 * `message.content` and `tool_calls[].function.arguments`, a completion's `text`, and the same fields
 * of stream chunks (`delta.content`, `delta.tool_calls[].function.arguments`, `text`) and of
 * Responses API `response.output_text.delta` / `response.function_call_arguments.delta` events.
 *
 * Streams: a placeholder may be split across chunks at any character (`[MY_NR` + `IC_1]`). Each
 * stream field (per choice and per tool call) keeps back a trailing fragment that could still become
 * a placeholder, at most {@link MAX_PLACEHOLDER_CHARS} characters, and releases it with the next
 * chunk of that field, or when the choice finishes, or at the end of the stream.
 */

/** Longest placeholder text, in UTF-16 code units (`[` + type + `_` + number + `]`). */
export const MAX_PLACEHOLDER_CHARS = 48;

const PLACEHOLDER = /\[[A-Z][A-Z_]*_[0-9]+\]/g;
/** A suffix that could still grow into a placeholder. */
const PARTIAL = /\[[A-Z_0-9]*$/;

/** Replaces the request's placeholders in a complete text. */
export function restoreText(text: string, map: ReadonlyMap<string, string>): string {
  if (map.size === 0 || text.indexOf('[') < 0) return text;
  return text.replace(PLACEHOLDER, (p) => map.get(p) ?? p);
}

/** One streamed text field: feed chunks in order, get text safe to emit. */
export class StreamFieldRestorer {
  private held = '';
  constructor(private readonly map: ReadonlyMap<string, string>) {}

  /** Text to emit for this chunk (may be empty while a fragment is held). */
  push(chunk: string): string {
    const s = this.held + chunk;
    this.held = '';
    const m = PARTIAL.exec(s.length > MAX_PLACEHOLDER_CHARS ? s.slice(-MAX_PLACEHOLDER_CHARS) : s);
    let emit = s;
    if (m) {
      const cut = s.length - m[0].length;
      this.held = s.slice(cut);
      emit = s.slice(0, cut);
    }
    return restoreText(emit, this.map);
  }

  /** Whatever is held (the stream or the field ended). */
  flush(): string {
    const s = this.held;
    this.held = '';
    return restoreText(s, this.map);
  }

  get holding(): boolean {
    return this.held.length > 0;
  }
}

const NONE: Array<Record<string, unknown>> = [];

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Restores placeholders in a complete (non-streamed) JSON answer, in place: chat choices'
 * `message.content` / `tool_calls[].function.arguments`, completions' `text`, Responses `output`
 * items (text parts, `arguments`).
 * @returns true when something was restored
 */
export function restoreAnswer(body: Record<string, unknown>, map: ReadonlyMap<string, string>): boolean {
  let changed = false;
  const put = (o: Record<string, unknown>, k: string) => {
    const v = o[k];
    if (typeof v !== 'string') return;
    const n = restoreText(v, map);
    if (n !== v) ((o[k] = n), (changed = true));
  };
  const choices = body['choices'];
  if (Array.isArray(choices)) {
    for (const c of choices) {
      if (!isObj(c)) continue;
      put(c, 'text');
      const msg = c['message'];
      if (isObj(msg)) {
        put(msg, 'content');
        const calls = msg['tool_calls'];
        if (Array.isArray(calls)) for (const t of calls) if (isObj(t) && isObj(t['function'])) put(t['function'] as Record<string, unknown>, 'arguments');
      }
    }
  }
  const output = body['output'];
  if (Array.isArray(output)) for (const item of output) if (isObj(item) && restoreItem(item, map)) changed = true;
  return changed;
}

/** A Responses output item (message text parts, function call arguments), in place. */
function restoreItem(item: Record<string, unknown>, map: ReadonlyMap<string, string>): boolean {
  let changed = false;
  const put = (o: Record<string, unknown>, k: string) => {
    const v = o[k];
    if (typeof v !== 'string') return;
    const n = restoreText(v, map);
    if (n !== v) ((o[k] = n), (changed = true));
  };
  put(item, 'arguments');
  put(item, 'text');
  const parts = item['content'];
  if (Array.isArray(parts)) for (const p of parts) if (isObj(p)) put(p, 'text');
  return changed;
}

/**
 * Restores placeholders in a stream of chunk objects (parsed `data:` JSON), one chunk at a time.
 * Keys fields by choice index (and tool-call index), or by `output_index`/`content_index` for the
 * Responses API.
 */
export class StreamRestorer {
  private readonly fields = new Map<string, StreamFieldRestorer>();
  /** The last chat/completions chunk seen (to build a flush chunk at the end). */
  private last: Record<string, unknown> | null = null;
  private before: Array<Record<string, unknown>> = [];

  constructor(private readonly map: ReadonlyMap<string, string>) {}

  private field(key: string): StreamFieldRestorer {
    let f = this.fields.get(key);
    if (!f) this.fields.set(key, (f = new StreamFieldRestorer(this.map)));
    return f;
  }

  /**
   * Rewrites one chunk in place. A choice's held text is released into its chunk that carries a
   * `finish_reason`.
   * @returns true when the chunk changed
   */
  chunk(obj: Record<string, unknown>): boolean {
    let changed = false;
    const choices = obj['choices'];
    if (Array.isArray(choices)) {
      this.last = obj;
      for (const c of choices) {
        if (!isObj(c)) continue;
        const i = String(c['index'] ?? 0);
        const finished = c['finish_reason'] !== null && c['finish_reason'] !== undefined;
        if (typeof c['text'] === 'string' || (finished && this.fields.get(`t${i}`)?.holding)) {
          const f = this.field(`t${i}`);
          const out = f.push(typeof c['text'] === 'string' ? c['text'] : '') + (finished ? f.flush() : '');
          if (out !== c['text']) ((c['text'] = out), (changed = true));
        }
        let d = c['delta'];
        if (finished && !isObj(d) && [...this.fields.keys()].some((k) => (k === `c${i}` || k.startsWith(`a${i}.`)) && this.fields.get(k)!.holding))
          d = c['delta'] = {}; // held text must leave with (not after) the finish chunk
        if (isObj(d)) {
          if (typeof d['content'] === 'string' || (finished && this.fields.get(`c${i}`)?.holding)) {
            const f = this.field(`c${i}`);
            const out = f.push(typeof d['content'] === 'string' ? d['content'] : '') + (finished ? f.flush() : '');
            if (out !== d['content']) ((d['content'] = out), (changed = true));
          }
          const calls = d['tool_calls'];
          if (Array.isArray(calls))
            for (const t of calls) {
              const fn = isObj(t) ? t['function'] : undefined;
              if (!isObj(fn) || typeof fn['arguments'] !== 'string') continue;
              const out = this.field(`a${i}.${String(t['index'] ?? 0)}`).push(fn['arguments']);
              if (out !== fn['arguments']) ((fn['arguments'] = out), (changed = true));
            }
          if (finished) {
            // Release held tool-call argument fragments of this choice.
            for (const [k, f] of this.fields) {
              if (!k.startsWith(`a${i}.`) || !f.holding) continue;
              const rest = f.flush();
              const idx = Number(k.slice(k.indexOf('.') + 1));
              const list = Array.isArray(d['tool_calls']) ? (d['tool_calls'] as unknown[]) : (d['tool_calls'] = []);
              (list as unknown[]).push({ index: idx, function: { arguments: rest } });
              changed = true;
            }
          }
        }
      }
      return changed;
    }
    // Responses API events
    const type = obj['type'];
    const key = `r${String(obj['output_index'] ?? 0)}.${String(obj['content_index'] ?? 0)}`;
    if ((type === 'response.output_text.delta' || type === 'response.function_call_arguments.delta') && typeof obj['delta'] === 'string') {
      const out = this.field(key).push(obj['delta']);
      if (out !== obj['delta']) ((obj['delta'] = out), (changed = true));
      return changed;
    }
    if (type === 'response.output_text.done' || type === 'response.function_call_arguments.done') {
      // Release a held tail as one more delta, sent just before this event, so that the deltas
      // add up to the restored text; then restore the full text this event repeats.
      const f = this.fields.get(key);
      if (f?.holding) {
        const tail = f.flush();
        this.before.push({
          type: type === 'response.output_text.done' ? 'response.output_text.delta' : 'response.function_call_arguments.delta',
          ...(obj['item_id'] !== undefined ? { item_id: obj['item_id'] } : {}),
          output_index: obj['output_index'] ?? 0,
          ...(obj['content_index'] !== undefined ? { content_index: obj['content_index'] } : {}),
          delta: tail,
        });
      }
      for (const k of ['text', 'arguments'])
        if (typeof obj[k] === 'string') {
          const out = restoreText(obj[k] as string, this.map);
          if (out !== obj[k]) ((obj[k] = out), (changed = true));
        }
      return changed;
    }
    if (type === 'response.content_part.done' && isObj(obj['part'])) return restoreItem(obj['part'] as Record<string, unknown>, this.map);
    if (type === 'response.output_item.done' && isObj(obj['item'])) return restoreItem(obj['item'] as Record<string, unknown>, this.map);
    if ((type === 'response.completed' || type === 'response.incomplete') && isObj(obj['response']))
      return restoreAnswer(obj['response'] as Record<string, unknown>, this.map);
    return changed;
  }

  /** Events to send before the one just passed to {@link chunk} (each time: taken once). */
  takeBefore(): Array<Record<string, unknown>> {
    if (this.before.length === 0) return NONE;
    const out = this.before;
    this.before = [];
    return out;
  }

  /**
   * At the end of the stream: a chunk carrying whatever is still held (a stream that ended without a
   * finish chunk), or null when nothing is held.
   */
  end(): Record<string, unknown> | null {
    const held = [...this.fields.entries()].filter(([k, f]) => f.holding && (k.startsWith('c') || k.startsWith('t')));
    if (held.length === 0 || !this.last) return null;
    const choices = held.map(([k, f]) => {
      const index = Number(k.slice(1));
      const text = f.flush();
      return k.startsWith('c') ? { index, delta: { content: text }, finish_reason: null } : { index, text, finish_reason: null };
    });
    return { ...this.last, choices, usage: undefined };
  }
}
