"""PyTorch reference for the parity check (see parity.ts): tokenizes a prompt with SentencePiece,
runs the checkpoint greedily, and writes JSON with the prompt tokens, the next-token top-10
probabilities after the prompt, and the greedy continuation.

    /usr/bin/python3 reference.py --checkpoint model.pt --tokenizer tokenizer.model --out ref.json
"""
from __future__ import annotations

import argparse
import json

import torch

from tokenizer import load as load_tokenizer
from train import Config, Model

PROMPTS = [
    "It was a fine morning, and Elizabeth resolved to walk to Netherfield.\n\n",
    "\"My dear Emma,\" said Mr. Knightley, \"you are quite mistaken.\"\n\n",
]


@torch.no_grad()
def run(model: Model, ids: list[int], n: int, eos: int):
    out, first = [], None
    seq = list(ids)
    for _ in range(n):
        T = len(seq)
        t = torch.tensor([seq])
        logits = model(t, torch.arange(T)[None], torch.zeros(1, T, dtype=torch.long))[0, -1]
        if first is None:
            p = logits.softmax(-1)
            top = torch.topk(p, 10)
            first = [[int(i), float(v)] for v, i in zip(top.values, top.indices)]
        nxt = int(logits.argmax())
        out.append(nxt)
        if nxt == eos:
            break
        seq.append(nxt)
    return first, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=60)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ck = torch.load(a.checkpoint, map_location="cpu")
    model = Model(Config(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    sp = load_tokenizer(a.tokenizer)
    cases = []
    for text in PROMPTS:
        ids = [sp.bos_id()] + sp.encode(text)
        top, greedy = run(model, ids, a.tokens, sp.eos_id())
        cases.append({"text": text, "tokens": ids, "top": top, "greedy": greedy, "greedy_text": sp.decode(greedy)})
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1)
    print(f"reference: {len(cases)} prompts written to {a.out}")


if __name__ == "__main__":
    main()
