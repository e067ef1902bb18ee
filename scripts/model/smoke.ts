/**
 * Smoke test of the Sovra demonstration model with the engine the gateway embeds (node-llama-cpp,
 * llama.cpp in-process, prebuilt CPU binary, one thread).
 *
 *   cd /work/main && node --import tsx scripts/model/smoke.ts [model.gguf]
 *
 * For each prompt: renders the chat through the GGUF's own chat template (resolveChatWrapper →
 * generateContextState, as the embedded provider does), samples up to MAX_TOKENS tokens, and prints
 * the text, the speed, and whether the model ended by itself (EOS) within MAX_TOKENS; then samples
 * each conversation several times (SMOKE_SEEDS, default 5) to report how often it stops by itself.
 * Exit code 1 if the template cannot be used or no reply ended with EOS.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, LlamaLogLevel, resolveChatWrapper, type ChatHistoryItem, type Token } from 'node-llama-cpp';

const MAX_TOKENS = 200;
const here = path.dirname(fileURLToPath(import.meta.url));
const modelPath = path.resolve(process.argv[2] ?? path.join(here, '../../models/sovra-austen-1m.Q8_0.gguf'));

const chats: Array<{ title: string; messages: Array<{ role: 'system' | 'user' | 'assistant'; content: string }> }> = [
  { title: 'one user message', messages: [{ role: 'user', content: 'It was a fine morning, and Elizabeth resolved to walk to Netherfield.' }] },
  { title: 'a question', messages: [{ role: 'user', content: 'What do you think of Mr. Darcy?' }] },
  {
    title: 'system + user',
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'Tell me about the ball at Mansfield Park.' },
    ],
  },
  {
    title: 'multi-turn',
    messages: [
      { role: 'user', content: '"My dear Emma," said Mr. Knightley, "you are quite mistaken."' },
      { role: 'assistant', content: '"I am never mistaken," replied Emma, smiling.' },
      { role: 'user', content: 'He shook his head, and said nothing more.' },
    ],
  },
];

const llama = await getLlama({ build: 'never', gpu: false, maxThreads: 1, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const tpl = model.fileInfo.metadata?.tokenizer?.chat_template;
console.log(`model: ${modelPath}`);
console.log(`  train context ${model.trainContextSize}, vocabulary ${model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length}, BOS ${model.tokens.bos} EOS ${model.tokens.eos}`);
console.log(`  chat template: ${JSON.stringify(tpl)}`);
const wrapper = resolveChatWrapper(model, { warningLogs: false, fallbackToOtherWrappersOnJinjaError: false });
console.log(`  chat wrapper: ${wrapper.wrapperName}`);
if (wrapper.wrapperName !== 'JinjaTemplate') console.log('  (note: node-llama-cpp substituted a built-in wrapper for the template)');

const context = await model.createContext({ contextSize: model.trainContextSize, sequences: 1, threads: 1 });
const seq = context.getSequence();

interface Sampling {
  temperature: number;
  topK?: number;
  topP?: number;
  seed: number;
}

/** Renders the chat as the embedded provider does and samples until EOS or MAX_TOKENS. */
async function generate(messages: (typeof chats)[number]['messages'], sampling: Sampling) {
  const history: ChatHistoryItem[] = messages.map((m) =>
    m.role === 'system' ? { type: 'system', text: m.content } : m.role === 'user' ? { type: 'user', text: m.content } : { type: 'model', response: [m.content] },
  );
  history.push({ type: 'model', response: [] });
  const state = wrapper.generateContextState({ chatHistory: history });
  const prompt = state.contextText.tokenize(model.tokenizer);
  await seq.clearHistory();
  const t0 = performance.now();
  let first = 0;
  const out: Token[] = [];
  let eos = false;
  for await (const token of seq.evaluate(prompt, { ...sampling, yieldEogToken: true })) {
    if (first === 0) first = performance.now();
    if (model.isEogToken(token)) {
      eos = true;
      break;
    }
    out.push(token);
    if (out.length >= MAX_TOKENS) break;
  }
  const t1 = performance.now();
  return {
    prompt,
    text: model.detokenize(out, false, prompt),
    tokens: out.length,
    eos,
    firstTokenSeconds: (first - t0) / 1000,
    tokensPerSecond: out.length / Math.max((t1 - first) / 1000, 1e-9),
  };
}

// 1. One reply per conversation, with demo sampling settings.
let eosCount = 0;
for (const [i, chat] of chats.entries()) {
  const r = await generate(chat.messages, { temperature: 0.8, topK: 40, topP: 0.95, seed: 42 + i });
  console.log(`\n[${i + 1}] ${chat.title}`);
  console.log(`  prompt (${r.prompt.length} tokens): ${JSON.stringify(model.detokenize(r.prompt, true))}`);
  console.log(`  reply: ${JSON.stringify(r.text)}`);
  console.log(
    `  ${r.tokens} tokens${r.eos ? ' + EOS' : ''}, ${r.eos ? 'stopped by itself (EOS)' : `no EOS within ${MAX_TOKENS} tokens`}; ` +
      `prompt + first token ${r.firstTokenSeconds.toFixed(3)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s`,
  );
  if (r.eos) eosCount++;
}

// 2. How reliably the model stops: SEEDS samples per conversation, at the OpenAI defaults
//    (temperature 1, no top-k / top-p: what the gateway uses when a request sets nothing) and at
//    the demo settings.
const SEEDS = Number(process.env['SMOKE_SEEDS'] ?? 5);
console.log(`\nStopping: ${SEEDS} samples per conversation, at most ${MAX_TOKENS} tokens each`);
for (const [label, base] of [
  ['temperature 1 (OpenAI defaults)', { temperature: 1 }],
  ['temperature 0.8, top-k 40, top-p 0.95', { temperature: 0.8, topK: 40, topP: 0.95 }],
  ['greedy (temperature 0)', { temperature: 0 }],
] as const) {
  let n = 0;
  let stopped = 0;
  let tokens = 0;
  let seconds = 0;
  let longest = 0;
  for (const chat of chats) {
    for (let s = 0; s < (base.temperature === 0 ? 1 : SEEDS); s++) {
      const r = await generate(chat.messages, { ...base, seed: 1000 + s });
      n++;
      if (r.eos) stopped++;
      tokens += r.tokens;
      seconds += r.tokens / r.tokensPerSecond;
      longest = Math.max(longest, r.tokens);
    }
  }
  console.log(`  ${label}: ${stopped}/${n} ended with EOS, mean ${(tokens / n).toFixed(0)} tokens, longest ${longest}, ${(tokens / seconds).toFixed(0)} tokens/s`);
}

await context.dispose();
await model.dispose();
await llama.dispose();
if (eosCount === 0) {
  console.log('\nno generation ended with EOS: the model or its chat template is not working');
  process.exitCode = 1;
}
