/**
 * The `embedded` provider: an in-process llama.cpp engine (node-llama-cpp) behind Sovra's
 * {@link Provider} interface. Serves `chat.completions` and `completions` from a local GGUF file.
 *
 * Engine layout: one llama.cpp context with `contexts` sequences; each sequence serves one
 * generation at a time (concurrent generations are batched together by node-llama-cpp). Further
 * calls wait in a FIFO queue; a queued call whose signal aborts leaves the queue and rejects with
 * `UpstreamError('aborted')`. The sequence is cleared before every generation (no prompt cache).
 *
 * Loading: `getLlama({ build: 'never', gpu: false })` uses the prebuilt CPU binary shipped in the npm
 * package; nothing is downloaded or compiled. The model file is checked (exists, is a file, starts
 * with the "GGUF" magic) before llama.cpp sees it; llama.cpp itself rejects truncated files
 * ("tensor … data is not within the file bounds") without crashing the process.
 *
 * Generation: sampling follows OpenAI semantics (temperature 1 and top_p 1 by default; no top-k or
 * min-p unless the non-standard `top_k` / `min_p` fields are sent; `seed` makes sampling
 * reproducible; temperature 0 is greedy). `usage.prompt_tokens` is the tokenized prompt length
 * (BOS included); `usage.completion_tokens` counts every sampled token, including an end-of-generation
 * token and the tokens that completed a stop string (as llama.cpp's server does). `max_tokens` is
 * clamped to the room left in the context (finish_reason "length" when it runs out); a prompt that
 * does not fit gets a 400 `context_length_exceeded`.
 *
 * Cancellation: the call's signal (client disconnect), `return()` on the stream iterator, a timeout,
 * or `close()` stop generation before the next token; the sequence goes back to the pool as soon as
 * llama.cpp has finished the token it was computing.
 *
 * Timeouts: `firstByteMs` bounds the wait for a free sequence (→ `first_byte_timeout`), `totalMs`
 * bounds a whole non-streaming call and `streamTotalMs` a whole stream (→ `total_timeout`).
 * `idleMs` and `connectMs` do not apply to an in-process engine.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { open, stat } from 'node:fs/promises';
import {
  getLlama,
  LlamaGrammarEvaluationState,
  LlamaLogLevel,
  resolveChatWrapper,
  SpecialTokensText,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import type { SseItem } from '../../sse/types.ts';
import {
  UpstreamError,
  type Operation,
  type Provider,
  type ProviderCall,
  type ProviderResult,
  type ProviderState,
} from '../types.ts';
import { QueueFullError, SlotPool, type Lease } from './pool.ts';
import {
  BadRequest,
  FALLBACK_STOPS,
  parseMessages,
  parseParams,
  parsePrompt,
  renderFallback,
  toChatHistory,
  type GenerationParams,
} from './prompt.ts';
import { StopMatcher, StreamingDetokenizer } from './text.ts';
import { GrammarCache, checkStructuredOutput, parseResponseFormat, type StructuredFormat } from './structured.ts';

/** Logging hook (same shape as the registry's ProviderLog). */
export type EmbeddedLog = (level: 'info' | 'warn' | 'error', msg: string) => void;

/** Options for {@link EmbeddedProvider}. */
export interface EmbeddedProviderOptions {
  /** Backend id from configuration. */
  id: string;
  /** Absolute path of the GGUF model file. */
  modelPath: string;
  /** CPU threads for evaluation (default 1: on small machines more threads is often much slower). */
  threads?: number | undefined;
  /** Tokens per sequence (default 2048), clamped to the model's training context. */
  contextSize?: number | undefined;
  /** Concurrent generations (llama sequences), default 1; further calls queue FIFO. */
  contexts?: number | undefined;
  /** Most calls waiting for a free context (default 256); beyond it calls get 503 `engine_overloaded`. */
  maxQueue?: number | undefined;
  log?: EmbeddedLog | undefined;
}

/** What the loaded engine looks like (for health pages and tests). */
export interface EmbeddedInfo {
  readonly modelPath: string;
  readonly architecture: string;
  /** Tokens per sequence actually allocated. */
  readonly contextSize: number;
  readonly trainContextSize: number;
  readonly contexts: number;
  readonly threads: number;
  /** "model": the GGUF's chat template (through node-llama-cpp); "fallback": the plain template. */
  readonly chatTemplate: 'model' | 'fallback';
  /** node-llama-cpp chat wrapper name when chatTemplate is "model". */
  readonly chatWrapper: string | null;
}

/** A prompt ready for the engine. */
export interface PreparedPrompt {
  /** Rendered text, special tokens spelled out (null for a token-id completion prompt). */
  readonly text: string | null;
  readonly tokens: Token[];
  /** Extra stop strings implied by the template. */
  readonly stops: readonly string[];
  /** Tokens that end generation besides llama.cpp's end-of-generation tokens. */
  readonly stopTokens: ReadonlySet<Token>;
  /** Remove one leading space from the reply (fallback chat template). */
  readonly trimLeadingSpace: boolean;
}

interface Engine {
  llama: Llama;
  model: LlamaModel;
  context: LlamaContext;
  pool: SlotPool<LlamaContextSequence>;
  chatWrapper: ChatWrapper | null;
  contextSize: number;
  vocabSize: number | undefined;
  grammars: GrammarCache;
}

type FinishReason = 'stop' | 'length';

interface Outcome {
  readonly finishReason: FinishReason;
  readonly completionTokens: number;
}

const JSON_HEADERS = { 'content-type': 'application/json' } as const;
const SSE_HEADERS = { 'content-type': 'text/event-stream' } as const;
const noop = (): void => {};

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function jsonResult(status: number, body: unknown): ProviderResult {
  return { kind: 'json', status, headers: { ...JSON_HEADERS }, body: Buffer.from(JSON.stringify(body)) };
}

function errorResult(status: number, message: string, type: string, param: string | null, code: string | null): ProviderResult {
  return jsonResult(status, { error: { message, type, param, code } });
}

function event(data: string): SseItem {
  return { type: 'event', event: undefined, id: undefined, data };
}

/** The abort reason as an UpstreamError (the reasons we set are UpstreamErrors already). */
function asUpstream(reason: unknown): UpstreamError {
  if (reason instanceof UpstreamError) return reason;
  return new UpstreamError('aborted', 'request aborted', { cause: reason });
}

/**
 * The signal of one call: fires on the client's signal, on provider close, and on timeouts, with an
 * UpstreamError as reason. `dispose()` detaches everything.
 */
class CallScope {
  private readonly ctl = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly detach: Array<() => void> = [];

  constructor(sources: ReadonlyArray<{ signal: AbortSignal; reason: () => UpstreamError }>) {
    for (const s of sources) {
      if (s.signal.aborted) {
        this.ctl.abort(s.reason());
        continue;
      }
      const l = (): void => this.ctl.abort(s.reason());
      s.signal.addEventListener('abort', l, { once: true });
      this.detach.push(() => s.signal.removeEventListener('abort', l));
    }
  }

  get signal(): AbortSignal {
    return this.ctl.signal;
  }

  /** Aborts with `reason()` after `ms` (0 = never); returns a canceller. */
  timeout(ms: number, reason: () => UpstreamError): () => void {
    if (!(ms > 0)) return noop;
    const t = setTimeout(() => this.ctl.abort(reason()), ms);
    this.timers.push(t);
    return () => clearTimeout(t);
  }

  dispose(): void {
    for (const t of this.timers.splice(0)) clearTimeout(t);
    for (const d of this.detach.splice(0)) d();
  }
}

/**
 * One generation on a leased sequence. `pieces()` yields text as tokens are produced and returns
 * the outcome. The lease is released exactly once, when generation ends for any reason, including
 * an abort while the consumer is not iterating.
 */
class Generation {
  private executing = false;
  private inner: AsyncGenerator<Token, void, void | Token | Token[]> | undefined;
  private released: Promise<void> | undefined;
  private readonly abortedP: Promise<never>;
  private readonly detachAbort: () => void;

  constructor(
    private readonly model: LlamaModel,
    private readonly lease: Lease<LlamaContextSequence>,
    private readonly prompt: PreparedPrompt,
    private readonly params: GenerationParams,
    /** Most tokens to sample (request cap and room in the context). */
    private readonly limit: number,
    private readonly scope: CallScope,
    /** Grammar constraining the output (structured output), if any. */
    private readonly grammar?: LlamaGrammar,
  ) {
    let reject: (e: unknown) => void = noop;
    this.abortedP = new Promise<never>((_, r) => (reject = r));
    this.abortedP.catch(noop);
    const signal = scope.signal;
    const onAbort = (): void => {
      reject(asUpstream(signal.reason));
      // Not inside pieces() (not started, or suspended at a yield): release now.
      if (!this.executing) void this.release();
    };
    if (signal.aborted) {
      this.detachAbort = noop;
      onAbort();
    } else {
      signal.addEventListener('abort', onAbort, { once: true });
      this.detachAbort = () => signal.removeEventListener('abort', onAbort);
    }
  }

  /** Stops the engine iterator and returns the sequence to the pool (idempotent). */
  release(): Promise<void> {
    this.released ??= (async () => {
      this.detachAbort();
      this.scope.dispose();
      const inner = this.inner;
      this.inner = undefined;
      // Waits for a token being computed to finish, so the sequence is idle when handed on.
      if (inner) await inner.return(undefined).then(noop, noop);
      this.lease.release();
    })();
    return this.released;
  }

  private abortError(): UpstreamError {
    return asUpstream(this.scope.signal.reason);
  }

  async *pieces(): AsyncGenerator<string, Outcome, undefined> {
    this.executing = true;
    try {
      if (this.released) throw this.abortError();
      let count = 0;
      if (this.limit <= 0) return { finishReason: 'length', completionTokens: 0 };
      const seq = this.lease.item;
      const p = this.params;
      await seq.clearHistory();
      if (this.released) throw this.abortError();
      const inner = seq.evaluate(this.prompt.tokens, {
        temperature: p.temperature,
        topP: p.topP,
        topK: p.topK,
        minP: p.minP,
        seed: p.seed === undefined ? randomInt(0, 2 ** 32 - 1) : ((p.seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
        yieldEogToken: true,
        ...(this.grammar ? { grammarEvaluationState: new LlamaGrammarEvaluationState({ model: this.model, grammar: this.grammar }) } : {}),
      });
      this.inner = inner;
      const detok = new StreamingDetokenizer(this.model, this.prompt.tokens);
      const stopper = new StopMatcher([...this.prompt.stops, ...p.stop]);
      let trim = this.prompt.trimLeadingSpace;
      let finishReason: FinishReason = 'length';
      let stopped = false;
      const shape = (text: string): string => {
        if (trim && text.length > 0) {
          trim = false;
          if (text.startsWith(' ')) return text.slice(1);
        }
        return text;
      };

      for (;;) {
        const next = inner.next();
        next.catch(noop);
        const r = await Promise.race([next, this.abortedP]);
        if (r.done) {
          finishReason = 'stop';
          break;
        }
        count++;
        const token = r.value;
        if (this.model.isEogToken(token) || this.prompt.stopTokens.has(token)) {
          finishReason = 'stop';
          break;
        }
        const { emit, stopped: hit } = stopper.push(detok.push(token));
        const out = shape(emit);
        if (out) {
          this.executing = false;
          yield out;
          this.executing = true;
          if (this.released) throw this.abortError();
        }
        if (hit) {
          finishReason = 'stop';
          stopped = true;
          break;
        }
        if (count >= this.limit) break;
      }

      if (!stopped) {
        // Text still held: an incomplete character, or a possible stop-string prefix.
        const { emit, stopped: hit } = stopper.push(detok.flush());
        const tail = shape(emit + (hit ? '' : stopper.flush()));
        if (hit) finishReason = 'stop';
        if (tail) {
          this.executing = false;
          yield tail;
          this.executing = true;
        }
      }
      return { finishReason, completionTokens: count };
    } catch (e) {
      if (e instanceof UpstreamError) throw e;
      throw new UpstreamError('engine', `embedded engine failed: ${errMsg(e)}`, { cause: e });
    } finally {
      this.executing = false;
      void this.release();
    }
  }
}

/** See module doc. */
export class EmbeddedProvider implements Provider {
  readonly kind = 'embedded';
  readonly id: string;
  private readonly modelPath: string;
  private readonly threads: number;
  private readonly requestedContextSize: number;
  private readonly contexts: number;
  private readonly maxQueue: number;
  private readonly log: EmbeddedLog;
  private phase: 'idle' | 'loading' | 'ready' | 'failed' | 'closed' = 'idle';
  private failure = '';
  private starting: Promise<void> | undefined;
  private engine: Engine | undefined;
  private readonly closing = new AbortController();
  /** Last error line llama.cpp logged (explains load failures). */
  private lastEngineError: string | undefined;

  constructor(opts: EmbeddedProviderOptions) {
    this.id = opts.id;
    this.modelPath = opts.modelPath;
    this.threads = Math.max(1, Math.floor(opts.threads ?? 1));
    this.requestedContextSize = Math.max(16, Math.floor(opts.contextSize ?? 2048));
    this.contexts = Math.max(1, Math.floor(opts.contexts ?? 1));
    this.maxQueue = Math.max(0, Math.floor(opts.maxQueue ?? 256));
    this.log = opts.log ?? noop;
    // Every call in flight (up to maxQueue + contexts) listens on this signal and removes its
    // listener when done: no leak, so no "possible EventTarget memory leak" warning past 10.
    setMaxListeners(0, this.closing.signal);
  }

  supports(op: Operation): boolean {
    return op === 'chat.completions' || op === 'completions';
  }

  state(): ProviderState {
    switch (this.phase) {
      case 'ready':
        return { ready: true };
      case 'idle':
        return { ready: false, reason: 'model not loaded yet (start() not called)' };
      case 'loading':
        return { ready: false, reason: `loading model ${this.modelPath}` };
      case 'failed':
        return { ready: false, reason: this.failure };
      case 'closed':
        return { ready: false, reason: 'closed' };
    }
  }

  /** Engine details, once loaded. */
  info(): EmbeddedInfo | undefined {
    const e = this.engine;
    if (!e) return undefined;
    return {
      modelPath: this.modelPath,
      architecture: String(e.model.fileInfo.metadata?.general?.architecture ?? 'unknown'),
      contextSize: e.contextSize,
      trainContextSize: e.model.trainContextSize,
      contexts: this.contexts,
      threads: this.threads,
      chatTemplate: e.chatWrapper ? 'model' : 'fallback',
      chatWrapper: e.chatWrapper ? e.chatWrapper.wrapperName : null,
    };
  }

  /** Generations running (`active`) and calls waiting for a sequence (`queued`). */
  stats(): { active: number; queued: number } {
    const pool = this.engine?.pool;
    return { active: pool?.active ?? 0, queued: pool?.queued ?? 0 };
  }

  /** Loads llama.cpp and the model. Idempotent; rejects with a message fit for an operator. */
  start(): Promise<void> {
    if (this.phase === 'closed') return Promise.reject(new Error(`embedded backend "${this.id}" is closed`));
    this.starting ??= this.load().catch((e: unknown) => {
      this.failure = errMsg(e);
      if (this.phase !== 'closed') this.phase = 'failed';
      this.log('error', this.failure);
      throw e instanceof Error ? e : new Error(this.failure);
    });
    return this.starting;
  }

  private async load(): Promise<void> {
    this.phase = 'loading';
    const path = this.modelPath;
    const prefix = `embedded backend "${this.id}"`;
    await checkModelFile(path, prefix);

    let llama: Llama;
    try {
      llama = await getLlama({
        build: 'never',
        gpu: false,
        maxThreads: this.threads,
        skipDownload: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.warn,
        logger: (level, message) => this.onEngineLog(level, message),
      });
    } catch (e) {
      throw new Error(
        `${prefix}: could not load the llama.cpp engine (node-llama-cpp prebuilt binary for ${process.platform}-${process.arch}): ${errMsg(e)}`,
        { cause: e },
      );
    }
    try {
      this.lastEngineError = undefined;
      let model: LlamaModel;
      try {
        model = await llama.loadModel({ modelPath: path, loadSignal: this.closing.signal });
      } catch (e) {
        if (this.closing.signal.aborted) throw new Error(`${prefix}: closed while loading`);
        const detail = this.lastEngineError ?? errMsg(e);
        throw new Error(
          `${prefix}: could not load the GGUF model ${path}: ${detail}. ` +
            'The file may be corrupted or incomplete (download it again), or use an architecture this llama.cpp build does not support; ' +
            'point model_path in sovra.yaml at a valid GGUF file.',
          { cause: e },
        );
      }
      try {
        const train = model.trainContextSize;
        const contextSize = train > 0 ? Math.min(this.requestedContextSize, train) : this.requestedContextSize;
        let context: LlamaContext;
        try {
          context = await model.createContext({
            contextSize,
            sequences: this.contexts,
            threads: this.threads,
            createSignal: this.closing.signal,
          });
        } catch (e) {
          if (this.closing.signal.aborted) throw new Error(`${prefix}: closed while loading`);
          throw new Error(`${prefix}: could not create a llama.cpp context of ${contextSize} tokens × ${this.contexts}: ${errMsg(e)}`, { cause: e });
        }
        const seqs: LlamaContextSequence[] = [];
        for (let i = 0; i < this.contexts; i++) seqs.push(context.getSequence());
        const chatWrapper = this.resolveTemplate(model);
        const tokens = model.fileInfo.metadata?.tokenizer?.ggml?.tokens;
        if (this.closing.signal.aborted) {
          await context.dispose().catch(noop);
          throw new Error(`${prefix}: closed while loading`);
        }
        this.engine = {
          llama,
          model,
          context,
          pool: new SlotPool(seqs, this.maxQueue),
          chatWrapper,
          contextSize: seqs[0]?.contextSize ?? contextSize,
          vocabSize: Array.isArray(tokens) ? tokens.length : undefined,
          grammars: new GrammarCache(llama),
        };
        this.phase = 'ready';
        const i = this.info()!;
        this.log(
          'info',
          `${prefix}: loaded ${path} (${i.architecture}), context ${i.contextSize} tokens × ${i.contexts}, ` +
            `${i.threads} thread(s), chat template: ${i.chatWrapper ? `model (${i.chatWrapper})` : 'fallback'}`,
        );
      } catch (e) {
        await model.dispose().catch(noop);
        throw e;
      }
    } catch (e) {
      await llama.dispose().catch(noop);
      throw e;
    }
  }

  private onEngineLog(level: LlamaLogLevel, message: string): void {
    const msg = message.trim();
    if (!msg) return;
    if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) {
      this.lastEngineError = msg.replace(/^[a-z_]+: (error loading model: )?/, '');
      this.log('error', `embedded backend "${this.id}": llama.cpp: ${msg}`);
    } else if (level === LlamaLogLevel.warn) {
      this.log('warn', `embedded backend "${this.id}": llama.cpp: ${msg}`);
    }
  }

  /** The model's own chat template through node-llama-cpp, or null for the plain fallback. */
  private resolveTemplate(model: LlamaModel): ChatWrapper | null {
    const tpl = model.fileInfo.metadata?.tokenizer?.chat_template;
    if (typeof tpl !== 'string' || tpl.trim() === '') return null;
    try {
      return resolveChatWrapper(model, { warningLogs: false, fallbackToOtherWrappersOnJinjaError: false });
    } catch (e) {
      this.log('warn', `embedded backend "${this.id}": the model's chat template cannot be used (${errMsg(e)}); using the plain fallback template`);
      return null;
    }
  }

  /**
   * Renders and tokenizes the prompt of a request, exactly as {@link call} would.
   * @throws BadRequest for an invalid body
   */
  preparePrompt(operation: Operation, body: Record<string, unknown>): PreparedPrompt {
    const e = this.engine;
    if (!e) throw new Error(`embedded backend "${this.id}" is not ready`);
    const model = e.model;
    const bos = model.tokens.bos;
    const withBos = (tokens: Token[]): Token[] => (bos !== null && model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens);

    if (operation === 'completions') {
      const p = parsePrompt(body['prompt']);
      if ('tokens' in p) {
        const vocab = e.vocabSize;
        if (vocab === undefined) throw new BadRequest('prompt: token-id prompts are not supported for this model', 'prompt');
        const bad = p.tokens.findIndex((t) => t >= vocab);
        if (bad !== -1) throw new BadRequest(`prompt[${bad}]: token id out of range (vocabulary size ${vocab})`, 'prompt');
        return { text: null, tokens: p.tokens as Token[], stops: [], stopTokens: new Set(), trimLeadingSpace: false };
      }
      const tokens = withBos(model.tokenize(p.text, false));
      if (tokens.length === 0) throw new BadRequest('prompt: must not be empty', 'prompt');
      return { text: p.text, tokens, stops: [], stopTokens: new Set(), trimLeadingSpace: false };
    }

    const messages = parseMessages(body['messages']);
    if (!e.chatWrapper) {
      const text = renderFallback(messages);
      return { text, tokens: withBos(model.tokenize(text, false)), stops: FALLBACK_STOPS, stopTokens: new Set(), trimLeadingSpace: true };
    }
    let state;
    try {
      state = e.chatWrapper.generateContextState({ chatHistory: toChatHistory(messages) });
    } catch (err) {
      throw new BadRequest(`messages: the model's chat template rejected these messages: ${errMsg(err)}`, 'messages');
    }
    const stops: string[] = [];
    const stopTokens = new Set<Token>();
    for (const trigger of state.stopGenerationTriggers) {
      const toks = trigger.tokenize(model.tokenizer);
      if (toks.length === 1) {
        stopTokens.add(toks[0]!);
        continue;
      }
      let text = '';
      let special = false;
      for (const v of trigger.values) {
        if (typeof v === 'string') text += v;
        else if (v instanceof SpecialTokensText) text += v.value;
        else special = true;
      }
      if (!special && text && !stops.includes(text)) stops.push(text);
    }
    const tokens = state.contextText.tokenize(model.tokenizer);
    return {
      text: model.detokenize(tokens, true),
      tokens,
      stops,
      stopTokens,
      trimLeadingSpace: false,
    };
  }

  async call(c: ProviderCall): Promise<ProviderResult> {
    if (!this.supports(c.operation)) {
      return errorResult(400, `the embedded backend "${this.id}" does not serve ${c.operation}`, 'invalid_request_error', null, 'unsupported_operation');
    }
    const e = this.engine;
    if (!e || this.phase !== 'ready') {
      const st = this.state();
      throw new UpstreamError('engine', `embedded backend "${this.id}" is not ready: ${st.ready ? 'closing' : st.reason}`);
    }
    if (c.signal.aborted) throw new UpstreamError('aborted', 'request aborted before it started');

    const chat = c.operation === 'chat.completions';
    let params: GenerationParams;
    let prompt: PreparedPrompt;
    let format: StructuredFormat;
    let grammar: LlamaGrammar | undefined;
    try {
      params = parseParams(c.body, chat);
      format = parseResponseFormat(c.body['response_format']);
      prompt = this.preparePrompt(c.operation, c.body);
      // (no await for plain text, so a call reaches the context queue synchronously)
      grammar = format.kind === 'text' ? undefined : await e.grammars.get(format);
    } catch (err) {
      if (err instanceof BadRequest) return errorResult(400, err.message, 'invalid_request_error', err.param, err.code);
      throw new UpstreamError('engine', `embedded engine failed to prepare the prompt: ${errMsg(err)}`, { cause: err });
    }
    const room = e.contextSize - prompt.tokens.length;
    if (room < 1) {
      return errorResult(
        400,
        `This model's maximum context length is ${e.contextSize} tokens. However, your ${chat ? 'messages' : 'prompt'} resulted in ${prompt.tokens.length} tokens. Please reduce the length of the ${chat ? 'messages' : 'prompt'}.`,
        'invalid_request_error',
        chat ? 'messages' : 'prompt',
        'context_length_exceeded',
      );
    }
    const limit = Math.min(room, params.maxTokens ?? room);

    const scope = new CallScope([
      { signal: c.signal, reason: () => new UpstreamError('aborted', 'request aborted (client went away)') },
      { signal: this.closing.signal, reason: () => new UpstreamError('engine', `embedded backend "${this.id}" closed`) },
    ]);
    const t = c.timeouts;
    const cancelQueueTimer = scope.timeout(t.firstByteMs, () => new UpstreamError('first_byte_timeout', `no free embedded context within ${t.firstByteMs} ms`));
    if (c.stream) scope.timeout(t.streamTotalMs, () => new UpstreamError('total_timeout', `stream exceeded ${t.streamTotalMs} ms`));
    else scope.timeout(t.totalMs, () => new UpstreamError('total_timeout', `generation exceeded ${t.totalMs} ms`));

    let lease: Lease<LlamaContextSequence>;
    try {
      lease = await e.pool.acquire(scope.signal, asUpstream);
    } catch (err) {
      scope.dispose();
      if (err instanceof QueueFullError) {
        const r = errorResult(503, `The embedded engine is busy: ${err.message}. Retry shortly.`, 'service_unavailable', null, 'engine_overloaded');
        return { ...r, headers: { ...r.headers, 'retry-after': '1' } } as ProviderResult;
      }
      throw asUpstream(err);
    }
    cancelQueueTimer();
    const gen = new Generation(e.model, lease, prompt, params, limit, scope, grammar);

    const meta = {
      id: (chat ? 'chatcmpl-' : 'cmpl-') + randomBytes(12).toString('hex'),
      created: Math.floor(Date.now() / 1000),
      model: typeof c.body['model'] === 'string' ? c.body['model'] : this.id,
      promptTokens: prompt.tokens.length,
    };

    if (!c.stream) {
      let text = '';
      let outcome: Outcome;
      const it = gen.pieces();
      try {
        for (;;) {
          const r = await it.next();
          if (r.done) {
            outcome = r.value;
            break;
          }
          text += r.value;
        }
      } finally {
        void gen.release();
      }
      const usage = usageOf(meta.promptTokens, outcome.completionTokens);
      const violation = outcome.finishReason === 'stop' ? checkStructuredOutput(format, text) : null;
      if (violation) {
        return errorResult(502, `The model's output does not satisfy the requested response_format (${violation}).`, 'api_error', 'response_format', 'schema_validation_failed');
      }
      const body = chat
        ? {
            id: meta.id,
            object: 'chat.completion',
            created: meta.created,
            model: meta.model,
            choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: outcome.finishReason }],
            usage,
          }
        : {
            id: meta.id,
            object: 'text_completion',
            created: meta.created,
            model: meta.model,
            choices: [{ index: 0, text, logprobs: null, finish_reason: outcome.finishReason }],
            usage,
          };
      return jsonResult(200, body);
    }

    const so = c.body['stream_options'] as Record<string, unknown> | null | undefined;
    const includeUsage = !!so && typeof so === 'object' && so['include_usage'] === true;
    return {
      kind: 'stream',
      status: 200,
      headers: { ...SSE_HEADERS },
      items: releasing(streamItems(gen, meta, chat, includeUsage, format), () => void gen.release()),
    };
  }

  async close(): Promise<void> {
    if (this.phase === 'closed') return;
    const wasLoading = this.phase === 'loading';
    this.phase = 'closed';
    this.closing.abort();
    if (wasLoading && this.starting) await this.starting.catch(noop);
    const e = this.engine;
    this.engine = undefined;
    if (!e) return;
    e.pool.close(new UpstreamError('engine', `embedded backend "${this.id}" closed`));
    // Running generations stop at their next token; wait for their sequences (bounded).
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([e.pool.whenIdle(), new Promise<void>((r) => (timer = setTimeout(r, 5_000)))]);
    clearTimeout(timer);
    await e.context.dispose().catch((err: unknown) => this.log('warn', `embedded backend "${this.id}": disposing context: ${errMsg(err)}`));
    await e.model.dispose().catch((err: unknown) => this.log('warn', `embedded backend "${this.id}": disposing model: ${errMsg(err)}`));
    await e.llama.dispose().catch((err: unknown) => this.log('warn', `embedded backend "${this.id}": disposing llama: ${errMsg(err)}`));
  }
}

function usageOf(prompt: number, completion: number): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/**
 * Iterable (once) over `gen` whose `return()`/`throw()` always call `release`: an async generator
 * that was never pulled does not run its `finally` on `return()`, and the sequence must still go back.
 */
function releasing<T>(gen: AsyncGenerator<T, void, undefined>, release: () => void): AsyncIterable<T> {
  let used = false;
  return {
    [Symbol.asyncIterator](): AsyncIterator<T, void, undefined> {
      if (used) throw new Error('an embedded provider stream can be iterated only once');
      used = true;
      return {
        next: () => gen.next(),
        return: async () => {
          try {
            return await gen.return(undefined);
          } finally {
            release();
          }
        },
        throw: async (err?: unknown) => {
          try {
            return await gen.throw(err);
          } finally {
            release();
          }
        },
      };
    },
  };
}

/** OpenAI chunk stream for one generation (chat.completion.chunk or text_completion). */
async function* streamItems(
  gen: Generation,
  meta: { id: string; created: number; model: string; promptTokens: number },
  chat: boolean,
  includeUsage: boolean,
  format: StructuredFormat,
): AsyncGenerator<SseItem, void, undefined> {
  const head = { id: meta.id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: meta.created, model: meta.model };
  const tail = includeUsage ? { usage: null } : {};
  const chunk = (delta: Record<string, unknown> | string, finishReason: FinishReason | null): string =>
    JSON.stringify({
      ...head,
      choices: [
        chat
          ? { index: 0, delta, logprobs: null, finish_reason: finishReason }
          : { index: 0, text: delta, logprobs: null, finish_reason: finishReason },
      ],
      ...tail,
    });
  const it = gen.pieces();
  try {
    if (chat) yield event(chunk({ role: 'assistant', content: '' }, null));
    let outcome: Outcome;
    let text = '';
    for (;;) {
      const r = await it.next();
      if (r.done) {
        outcome = r.value;
        break;
      }
      if (format.kind !== 'text') text += r.value;
      yield event(chunk(chat ? { content: r.value } : r.value, null));
    }
    const violation = outcome.finishReason === 'stop' ? checkStructuredOutput(format, text) : null;
    if (violation) {
      yield event(
        JSON.stringify({
          error: {
            message: `The model's output does not satisfy the requested response_format (${violation}).`,
            type: 'api_error',
            param: 'response_format',
            code: 'schema_validation_failed',
          },
        }),
      );
      return;
    }
    yield event(chunk(chat ? {} : '', outcome.finishReason));
    if (includeUsage) {
      yield event(JSON.stringify({ ...head, choices: [], usage: usageOf(meta.promptTokens, outcome.completionTokens) }));
    }
    yield event('[DONE]');
  } finally {
    await it.return(undefined as never).catch(noop);
    void gen.release();
  }
}

/** Checks that `path` is a readable regular file starting with the GGUF magic. */
async function checkModelFile(path: string, prefix: string): Promise<void> {
  const fix = 'Point model_path in sovra.yaml at a GGUF model file (relative paths resolve against the folder of sovra.yaml).';
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error(`${prefix}: model path ${path} is not a file. ${fix}`);
    size = st.size;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new Error(`${prefix}: model file ${path} does not exist. ${fix}`);
    if (code === 'EACCES' || code === 'EPERM') throw new Error(`${prefix}: model file ${path} cannot be read (permission denied).`);
    throw e;
  }
  const magic = Buffer.alloc(4);
  let fh;
  try {
    fh = await open(path, 'r');
    await fh.read(magic, 0, 4, 0);
  } catch (e) {
    throw new Error(`${prefix}: model file ${path} cannot be read: ${errMsg(e)}`, { cause: e });
  } finally {
    await fh?.close();
  }
  if (size < 24 || magic.toString('latin1') !== 'GGUF') {
    throw new Error(
      `${prefix}: ${path} is not a GGUF model file (it does not start with the "GGUF" magic bytes${size < 24 ? ', or is too short' : ''}). ${fix}`,
    );
  }
}
