/**
 * Incremental text helpers for the embedded engine: a streaming detokenizer that never splits a
 * character across pieces, and a stop-string matcher that withholds text that might begin a stop.
 *
 * Both are pure (no engine state) so that a non-streaming call, which concatenates the same pieces,
 * returns exactly the text a streaming call emits.
 */
import type { Token } from 'node-llama-cpp';

/** The part of node-llama-cpp's model/tokenizer this module needs. */
export interface Detokenize {
  detokenize(tokens: readonly Token[], specialTokens?: boolean, lastTokens?: readonly Token[]): string;
}

/** U+FFFD, what the engine's UTF-8 decoder produces for incomplete or invalid byte sequences. */
const REPLACEMENT = '\uFFFD';
/** Tokens of context passed to the detokenizer (llama.cpp looks at a few only). */
const CONTEXT_TOKENS = 16;

/**
 * Turns generated tokens into text piece by piece.
 *
 * - Each piece is detokenized with the preceding tokens as context, so a SentencePiece "▁word"
 *   continuation keeps its leading space (detokenizing it alone would drop it).
 * - A token whose text ends in U+FFFD is usually the first byte(s) of a multi-byte UTF-8 character
 *   (byte-fallback tokens): it is held until the character completes, at most `maxPending` tokens
 *   (then emitted as is, since the bytes are genuinely invalid). So a character is never split into
 *   two U+FFFD across chunks.
 */
export class StreamingDetokenizer {
  private context: Token[];
  private pending: Token[] = [];

  /**
   * @param model the detokenizer (a LlamaModel)
   * @param contextTokens tokens preceding the generation (the prompt), used as detokenizer context
   * @param maxPending how many tokens may be held waiting for a character to complete (UTF-8 needs ≤ 4)
   */
  constructor(
    private readonly model: Detokenize,
    contextTokens: readonly Token[] = [],
    private readonly maxPending = 4,
  ) {
    this.context = contextTokens.slice(-CONTEXT_TOKENS);
  }

  /** Adds one token; returns the text that is now complete ('' while a character is incomplete). */
  push(token: Token): string {
    this.pending.push(token);
    const text = this.model.detokenize(this.pending, false, this.context);
    if (text.endsWith(REPLACEMENT) && this.pending.length < this.maxPending) return '';
    this.commit();
    return text;
  }

  /** Returns whatever is still held (possibly ending in U+FFFD), at the end of generation. */
  flush(): string {
    if (this.pending.length === 0) return '';
    const text = this.model.detokenize(this.pending, false, this.context);
    this.commit();
    return text;
  }

  private commit(): void {
    this.context = this.context.concat(this.pending).slice(-CONTEXT_TOKENS);
    this.pending = [];
  }
}

/**
 * Finds stop strings in streamed text. Text that could be the beginning of a stop string is held
 * back until it is known not to be; everything else passes through at once. The stop string itself
 * and anything after it are never emitted.
 */
export class StopMatcher {
  private held = '';
  private readonly stops: readonly string[];

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /**
   * Adds text.
   * @returns `emit`: text safe to pass on now; `stopped`: a stop string was found (everything before
   * it is in `emit`; the caller must end generation).
   */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: text, stopped: false };
    const held = this.held + text;
    let first = -1;
    for (const s of this.stops) {
      const i = held.indexOf(s);
      if (i !== -1 && (first === -1 || i < first)) first = i;
    }
    if (first !== -1) {
      this.held = '';
      return { emit: held.slice(0, first), stopped: true };
    }
    // Longest suffix of `held` that is a proper prefix of some stop string: keep it back.
    let keep = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, held.length); k > keep; k--) {
        if (held.endsWith(s.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    this.held = held.slice(held.length - keep);
    return { emit: held.slice(0, held.length - keep), stopped: false };
  }

  /** Text still held back when generation ends without a stop string. */
  flush(): string {
    const h = this.held;
    this.held = '';
    return h;
  }
}
