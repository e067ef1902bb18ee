/**
 * Parity check between the PyTorch checkpoint and the exported GGUF run by llama.cpp
 * (node-llama-cpp): same tokenization, same next-token distribution, same greedy continuation.
 * Catches RoPE-layout, tensor-orientation, tokenizer and metadata mistakes.
 *
 *   /usr/bin/python3 scripts/model/reference.py --checkpoint model.pt --tokenizer tokenizer.model --out ref.json
 *   node --import tsx scripts/model/parity.ts model.gguf ref.json
 *
 * Use an F32 export for an exact comparison; with Q8_0 the probabilities differ by about 1e-2 and a
 * greedy continuation may diverge after a near tie.
 */
import { readFileSync } from 'node:fs';
import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';

interface Case {
  text: string;
  tokens: number[];
  top: Array<[number, number]>;
  greedy: number[];
  greedy_text: string;
}

const [modelPath, refPath] = process.argv.slice(2);
if (!modelPath || !refPath) throw new Error('usage: parity.ts MODEL.gguf REF.json');
const cases = JSON.parse(readFileSync(refPath, 'utf8')) as Case[];

const llama = await getLlama({ build: 'never', gpu: false, maxThreads: 1, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: model.trainContextSize, sequences: 1, threads: 1 });
const seq = context.getSequence();
let bad = 0;

for (const c of cases) {
  const toks = model.tokenize(c.text, false);
  const withBos = [model.tokens.bos!, ...toks];
  const sameTok = JSON.stringify(withBos) === JSON.stringify(c.tokens);
  console.log(`prompt ${JSON.stringify(c.text)}\n  tokenization ${sameTok ? 'identical' : `DIFFERS\n    llama.cpp ${JSON.stringify(withBos)}\n    sentencepiece ${JSON.stringify(c.tokens)}`}`);
  if (!sameTok) bad++;

  await seq.clearHistory();
  const it = seq.evaluateWithMetadata(c.tokens as Token[], { probabilities: true }, { temperature: 0 });
  const first = await it.next();
  await it.return();
  if (!first.done) {
    const probs = first.value.probabilities;
    let maxDiff = 0;
    for (const [id, p] of c.top) maxDiff = Math.max(maxDiff, Math.abs((probs.get(id as Token) ?? 0) - p));
    console.log(`  next-token top-10 probabilities: max |llama.cpp - pytorch| = ${maxDiff.toExponential(2)}`);
    console.log(`    pytorch   ${c.top.slice(0, 5).map(([id, p]) => `${id}:${p.toFixed(4)}`).join(' ')}`);
    console.log(`    llama.cpp ${c.top.slice(0, 5).map(([id]) => `${id}:${(probs.get(id as Token) ?? 0).toFixed(4)}`).join(' ')}`);
  }

  await seq.clearHistory();
  const greedy: number[] = [];
  for await (const t of seq.evaluate(c.tokens as Token[], { temperature: 0, yieldEogToken: true })) {
    greedy.push(t);
    if (model.isEogToken(t) || greedy.length >= c.greedy.length) break;
  }
  let agree = 0;
  while (agree < greedy.length && greedy[agree] === c.greedy[agree]) agree++;
  console.log(`  greedy: ${agree}/${c.greedy.length} tokens identical`);
  console.log(`    pytorch   ${JSON.stringify(c.greedy_text)}`);
  console.log(`    llama.cpp ${JSON.stringify(model.detokenize(greedy.filter((t) => !model.isEogToken(t as Token)) as Token[], false, c.tokens as Token[]))}`);
}

await context.dispose();
await model.dispose();
await llama.dispose();
if (bad) process.exitCode = 1;
