/**
 * Writes a tiny, valid GGUF v3 model file for tests: a LLaMA-architecture transformer with
 * deterministic pseudo-random F32 weights and a SentencePiece-style ("llama") tokenizer.
 *
 * Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
 *   header   : magic "GGUF", u32 version (3), u64 tensor_count, u64 metadata_kv_count
 *   kv       : gguf_string key, u32 value_type, value
 *   string   : u64 byte length + UTF-8 bytes (no NUL)
 *   array    : u32 element type, u64 count, elements
 *   tensor   : gguf_string name, u32 n_dims, u64 dims[n_dims] (innermost first: ne[0] = row length),
 *              u32 ggml_type (0 = F32), u64 offset relative to the start of the data section
 *   data     : starts at the next multiple of general.alignment after the tensor infos; every
 *              tensor offset is itself a multiple of the alignment.
 *
 * The weights are random, so the model produces gibberish, but it loads in llama.cpp and generates
 * real tokens. The 256 byte-token output rows are damped so text is mostly word pieces. The output
 * rows of <unk>, <s>, </s> and the ChatML control tokens <|im_start|>, <|im_end|> are zero, so their
 * logits are always 0 while the best ordinary token scores well above that: greedy decoding never
 * ends with EOS, and sampled decoding rarely does. Tests therefore bound generation with max_tokens.
 */
import { writeFileSync } from 'node:fs';
import { rng as prng } from './prng.ts';

/** Model shape (exported so tests can reason about it). */
export const TINY_GGUF = {
  nEmbd: 64,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 4,
  nFf: 128,
  contextLength: 256,
  bosId: 1,
  eosId: 2,
  unkId: 0,
} as const;

const ALIGNMENT = 32;

// GGUF metadata value types.
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_BOOL = 7;
const T_STRING = 8;
const T_ARRAY = 9;

// Token types (llama.cpp / gguf-py TokenType).
const TT_NORMAL = 1;
const TT_UNKNOWN = 2;
const TT_CONTROL = 3;
const TT_BYTE = 6;

/** The vocabulary: specials, the 256 byte-fallback tokens, then ordinary SentencePiece pieces. */
function buildVocab(): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL];
  const scores: number[] = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TT_BYTE);
    scores.push(0);
  }
  const pieces = [
    '▁',
    ...'abcdefghijklmnopqrstuvwxyz'.split(''),
    ...'.,!?'.split(''),
    '▁t', '▁a', '▁s', '▁w', '▁h', '▁i', '▁o',
    'th', 'he', 'in', 'er', 'an', 'on', 'or', 'ld', 'll', 'lo',
    '▁th', '▁the', '▁an', '▁and', '▁of', '▁to', '▁is', '▁in', '▁it', '▁on',
    '▁he', '▁hel', '▁hell', '▁hello', '▁wo', '▁wor', '▁worl', '▁world',
    '▁cat', '▁sat', '▁mat', '▁dog', '▁sun', '▁sky', '▁blue', '▁red',
  ];
  for (const p of pieces) {
    tokens.push(p);
    types.push(TT_NORMAL);
    // SentencePiece scores: higher = merged first. Prefer longer pieces.
    scores.push(-100 + [...p].length * 10);
  }
  // ChatML control tokens, so that a ChatML chat template renders as it does with real models.
  for (const c of ['<|im_start|>', '<|im_end|>']) {
    tokens.push(c);
    types.push(TT_CONTROL);
    scores.push(0);
  }
  return { tokens, scores, types };
}


/** Approximately standard-normal values (Box–Muller). */
function gaussian(rand: () => number): () => number {
  return () => {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

class ByteWriter {
  private chunks: Buffer[] = [];
  length = 0;
  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v | 0);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  bool(v: boolean): void {
    this.push(Buffer.from([v ? 1 : 0]));
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  raw(b: Buffer): void {
    this.push(b);
  }
  padTo(alignment: number): void {
    const rem = this.length % alignment;
    if (rem !== 0) this.push(Buffer.alloc(alignment - rem));
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

type Kv =
  | { t: 'u32'; v: number }
  | { t: 'f32'; v: number }
  | { t: 'bool'; v: boolean }
  | { t: 'str'; v: string }
  | { t: 'arr_str'; v: readonly string[] }
  | { t: 'arr_f32'; v: readonly number[] }
  | { t: 'arr_i32'; v: readonly number[] };

function writeKv(w: ByteWriter, key: string, kv: Kv): void {
  w.str(key);
  switch (kv.t) {
    case 'u32': w.u32(T_UINT32); w.u32(kv.v); break;
    case 'f32': w.u32(T_FLOAT32); w.f32(kv.v); break;
    case 'bool': w.u32(T_BOOL); w.bool(kv.v); break;
    case 'str': w.u32(T_STRING); w.str(kv.v); break;
    case 'arr_str': w.u32(T_ARRAY); w.u32(T_STRING); w.u64(kv.v.length); for (const s of kv.v) w.str(s); break;
    case 'arr_f32': w.u32(T_ARRAY); w.u32(T_FLOAT32); w.u64(kv.v.length); for (const x of kv.v) w.f32(x); break;
    case 'arr_i32': w.u32(T_ARRAY); w.u32(T_INT32); w.u64(kv.v.length); for (const x of kv.v) w.i32(x); break;
  }
}

interface Tensor {
  name: string;
  /** ggml ne[], innermost (row length) first. */
  dims: number[];
  data: Float32Array;
}

/** Options of {@link writeTinyGguf}. */
export interface TinyGgufOptions {
  /** PRNG seed of the weights (default 1234). */
  seed?: number;
  /** llama.context_length (default 256). */
  contextLength?: number;
  /** A Jinja chat template stored as tokenizer.chat_template (default: none). */
  chatTemplate?: string;
}

/** A ChatML Jinja template, for tests of the model-template path. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Builds the whole GGUF file in memory. */
export function buildTinyGguf(opts: TinyGgufOptions = {}): Buffer {
  const { nEmbd, nLayer, nHead, nHeadKv, nFf } = TINY_GGUF;
  const contextLength = opts.contextLength ?? TINY_GGUF.contextLength;
  const headDim = nEmbd / nHead;
  const nEmbdKv = headDim * nHeadKv;
  const vocab = buildVocab();
  const nVocab = vocab.tokens.length;
  const randn = gaussian(prng(opts.seed ?? 1234));

  const tensors: Tensor[] = [];
  const matrix = (name: string, rowLen: number, rows: number, std: number): void => {
    const data = new Float32Array(rowLen * rows);
    for (let i = 0; i < data.length; i++) data[i] = randn() * std;
    tensors.push({ name, dims: [rowLen, rows], data });
  };
  const ones = (name: string, n: number): void => {
    tensors.push({ name, dims: [n], data: new Float32Array(n).fill(1) });
  };

  matrix('token_embd.weight', nEmbd, nVocab, 1);
  for (let l = 0; l < nLayer; l++) {
    ones(`blk.${l}.attn_norm.weight`, nEmbd);
    matrix(`blk.${l}.attn_q.weight`, nEmbd, nEmbd, 1 / Math.sqrt(nEmbd));
    matrix(`blk.${l}.attn_k.weight`, nEmbd, nEmbdKv, 1 / Math.sqrt(nEmbd));
    matrix(`blk.${l}.attn_v.weight`, nEmbd, nEmbdKv, 1 / Math.sqrt(nEmbd));
    matrix(`blk.${l}.attn_output.weight`, nEmbd, nEmbd, 1 / Math.sqrt(nEmbd));
    ones(`blk.${l}.ffn_norm.weight`, nEmbd);
    matrix(`blk.${l}.ffn_gate.weight`, nEmbd, nFf, 1 / Math.sqrt(nEmbd));
    matrix(`blk.${l}.ffn_up.weight`, nEmbd, nFf, 1 / Math.sqrt(nEmbd));
    matrix(`blk.${l}.ffn_down.weight`, nFf, nEmbd, 1 / Math.sqrt(nFf));
  }
  ones('output_norm.weight', nEmbd);
  // Logit std ≈ 2.5 (hidden state has unit RMS after output_norm).
  matrix('output.weight', nEmbd, nVocab, 2.5 / Math.sqrt(nEmbd));
  // Zero the rows of <unk>, <s>, </s> and the other control tokens: their logits are always 0
  // (see file comment).
  const out = tensors[tensors.length - 1]!.data;
  vocab.types.forEach((type, id) => {
    if (type === TT_CONTROL || type === TT_UNKNOWN) out.fill(0, id * nEmbd, (id + 1) * nEmbd);
  });
  // Damp the 256 byte-fallback rows so the text is mostly word pieces (bytes, including invalid
  // UTF-8 sequences, still appear now and then, which exercises the streaming detokenizer).
  for (let i = 3 * nEmbd; i < (3 + 256) * nEmbd; i++) out[i]! *= 0.45;

  const kvs: Array<[string, Kv]> = [
    ['general.architecture', { t: 'str', v: 'llama' }],
    ['general.name', { t: 'str', v: 'sovra-tiny-test' }],
    ['general.alignment', { t: 'u32', v: ALIGNMENT }],
    ['general.file_type', { t: 'u32', v: 0 }], // ALL_F32
    ['llama.context_length', { t: 'u32', v: contextLength }],
    ['llama.embedding_length', { t: 'u32', v: nEmbd }],
    ['llama.block_count', { t: 'u32', v: nLayer }],
    ['llama.feed_forward_length', { t: 'u32', v: nFf }],
    ['llama.attention.head_count', { t: 'u32', v: nHead }],
    ['llama.attention.head_count_kv', { t: 'u32', v: nHeadKv }],
    ['llama.rope.dimension_count', { t: 'u32', v: headDim }],
    ['llama.rope.freq_base', { t: 'f32', v: 10000 }],
    ['llama.attention.layer_norm_rms_epsilon', { t: 'f32', v: 1e-5 }],
    ['llama.vocab_size', { t: 'u32', v: nVocab }],
    ['tokenizer.ggml.model', { t: 'str', v: 'llama' }],
    ['tokenizer.ggml.tokens', { t: 'arr_str', v: vocab.tokens }],
    ['tokenizer.ggml.scores', { t: 'arr_f32', v: vocab.scores }],
    ['tokenizer.ggml.token_type', { t: 'arr_i32', v: vocab.types }],
    ['tokenizer.ggml.bos_token_id', { t: 'u32', v: TINY_GGUF.bosId }],
    ['tokenizer.ggml.eos_token_id', { t: 'u32', v: TINY_GGUF.eosId }],
    ['tokenizer.ggml.unknown_token_id', { t: 'u32', v: TINY_GGUF.unkId }],
    ['tokenizer.ggml.add_bos_token', { t: 'bool', v: true }],
    ['tokenizer.ggml.add_eos_token', { t: 'bool', v: false }],
  ];
  if (opts.chatTemplate !== undefined) kvs.push(['tokenizer.chat_template', { t: 'str', v: opts.chatTemplate }]);

  const w = new ByteWriter();
  w.raw(Buffer.from('GGUF', 'ascii'));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kvs.length);
  for (const [k, v] of kvs) writeKv(w, k, v);

  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(offset);
    offset += t.data.byteLength;
    offset = Math.ceil(offset / ALIGNMENT) * ALIGNMENT;
  }
  tensors.forEach((t, i) => {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(0); // GGML_TYPE_F32
    w.u64(offsets[i]!);
  });
  w.padTo(ALIGNMENT);
  for (const t of tensors) {
    w.raw(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    w.padTo(ALIGNMENT);
  }
  return w.toBuffer();
}

/** Writes the tiny model to `path` (deterministic for a given seed). */
export function writeTinyGguf(path: string, opts: TinyGgufOptions = {}): void {
  writeFileSync(path, buildTinyGguf(opts));
}
