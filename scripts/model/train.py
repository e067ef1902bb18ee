"""Trains the Sovra Austen model: a ~1M-parameter LLaMA-architecture transformer (PyTorch, CPU).

Architecture (what llama.cpp's ``llama`` graph computes): token embedding; N blocks of
pre-RMSNorm multi-head attention with rotary position embeddings, then pre-RMSNorm SwiGLU
feed-forward; final RMSNorm; output projection tied to the embedding. No biases.

RoPE follows llama.cpp's convention for the llama architecture ("NORM" rope type): rotation of
*adjacent* pairs ``(x[2i], x[2i+1])`` by ``pos * base^(-2i/head_dim)``. The Q/K weights can thus be
written to GGUF as they are (no permutation, unlike HF checkpoints, which rotate halves).

Training data (see :func:`examples`): for every pair of consecutive paragraphs of a chapter
(paragraphs longer than 150 tokens are first cut at sentence ends into pieces of at most 150 tokens),

    <s> PREVIOUS_PARAGRAPH "\\n\\n" NEXT_PARAGRAPH </s>

so that, given one paragraph and a blank line, the model writes one paragraph and stops. Examples
are packed into rows of ``context`` tokens with a block-diagonal causal mask (no attention across
examples) and positions restarting at 0 for each example, exactly as at inference. The loss covers
every token (both paragraphs and EOS). Examples longer than the context keep the whole next
paragraph and the *end* of the previous one.

Validation: the last two chapters of each novel (never trained on, not in the tokenizer's
training text either).

Determinism: one thread, fixed seeds, deterministic data order → the same weights, bit for bit.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import time

# One thread everywhere (PyTorch's pool and OpenBLAS's own): faster on this 2-core machine, and
# the order of floating-point operations, hence the weights, stays the same from run to run.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from corpus import split_chapters
from tokenizer import load as load_tokenizer

class Config:
    def __init__(self, **kw):
        self.vocab_size = kw.get("vocab_size", 2048)
        self.dim = kw.get("dim", 128)
        self.n_layers = kw.get("n_layers", 4)
        self.n_heads = kw.get("n_heads", 4)
        self.ffn_dim = kw.get("ffn_dim", 352)
        self.context = kw.get("context", 256)
        self.rope_base = kw.get("rope_base", 10000.0)
        self.norm_eps = kw.get("norm_eps", 1e-5)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg: Config):
    hd = cfg.dim // cfg.n_heads
    inv = cfg.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(cfg.context, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
    """x: (B, T, H, hd); cos/sin: (B, T, 1, hd/2). Rotates adjacent pairs (llama.cpp NORM mode)."""
    xp = x.view(*x.shape[:-1], -1, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        d = cfg.dim
        self.n_heads = cfg.n_heads
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg.norm_eps)
        self.w_gate = nn.Linear(d, cfg.ffn_dim, bias=False)
        self.w_up = nn.Linear(d, cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        H = self.n_heads
        h = self.attn_norm(x)
        q = apply_rope(self.wq(h).view(B, T, H, -1), cos, sin).transpose(1, 2)
        k = apply_rope(self.wk(h).view(B, T, H, -1), cos, sin).transpose(1, 2)
        v = self.wv(h).view(B, T, H, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + self.wo((att @ v).transpose(1, 2).reshape(B, T, D))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Model(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        cos, sin = rope_tables(cfg)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("wo.weight", "w_down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, tokens, pos, doc):
        """tokens, pos, doc: (B, T). Attention only within the same doc id, causally."""
        T = tokens.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = (doc[:, :, None] == doc[:, None, :]) & causal
        mask = mask[:, None]
        cos = self.cos[pos][:, :, None, :]
        sin = self.sin[pos][:, :, None, :]
        x = self.tok(tokens)
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        return self.norm(x) @ self.tok.weight.t()


# Longest "paragraph" the model is taught to write: longer paragraphs (about a quarter of Austen's)
# are cut at sentence ends into pieces of at most this many tokens, so that a reply ends (EOS)
# within ~150 tokens. A single longer sentence stays whole.
MAX_PARAGRAPH_TOKENS = 150
SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=["\']?[A-Z])|(?<=[.!?]["\'])\s+')
ABBREVIATION = re.compile(r"\b(Mr|Mrs|Dr|St|Col|Capt|Messrs|Esq)\.$")


def sentences(paragraph: str) -> list[str]:
    out: list[str] = []
    for x in SENTENCE_END.split(paragraph):
        if out and ABBREVIATION.search(out[-1]):
            out[-1] += " " + x  # "Mr. Darcy" is not a sentence end
        elif x:
            out.append(x)
    return out


def pieces(paragraph: str, sp) -> list[list[int]]:
    """The paragraph's tokens, split at sentence ends into runs of at most MAX_PARAGRAPH_TOKENS."""
    ids = sp.encode(paragraph)
    if len(ids) <= MAX_PARAGRAPH_TOKENS:
        return [ids]
    out, cur = [], ""
    for sentence in sentences(paragraph):
        cand = cur + " " + sentence if cur else sentence
        if cur and len(sp.encode(cand)) > MAX_PARAGRAPH_TOKENS:
            out.append(sp.encode(cur))
            cur = sentence
        else:
            cur = cand
    if cur:
        out.append(sp.encode(cur))
    return out


def examples(chapters, sp, context: int) -> list[list[int]]:
    """Token lists ``<s> prev \\n\\n next </s>`` for consecutive paragraphs (or paragraph pieces,
    see :func:`pieces`) of each chapter."""
    bos, eos = sp.bos_id(), sp.eos_id()
    sep = sp.encode("\n\n")
    out = []
    for ch in chapters:
        enc = [x for p in ch for x in pieces(p, sp)]
        for prev, nxt in zip(enc, enc[1:]):
            room = context - 1 - len(sep) - len(nxt) - 1
            if room < 8:
                continue  # the next piece alone does not fit
            out.append([bos] + prev[-room:] + sep + nxt + [eos])
    return out


def pack(exs: list[list[int]], context: int, pad: int):
    """Greedy packing in the given order → arrays tokens/targets/pos/doc/loss-mask of shape (N, context)."""
    rows, row, used = [], [], 0
    for e in exs:
        if used + len(e) > context:
            rows.append(row)
            row, used = [], 0
        row.append(e)
        used += len(e)
    if row:
        rows.append(row)
    n = len(rows)
    tok = np.full((n, context), pad, np.int64)
    tgt = np.zeros((n, context), np.int64)
    pos = np.zeros((n, context), np.int64)
    doc = np.full((n, context), -1, np.int64)
    lm = np.zeros((n, context), np.float32)
    for r, row in enumerate(rows):
        at = 0
        for j, e in enumerate(row):
            L = len(e)
            tok[r, at:at + L] = e
            tgt[r, at:at + L - 1] = e[1:]
            lm[r, at:at + L - 1] = 1.0
            pos[r, at:at + L] = np.arange(L)
            doc[r, at:at + L] = j
            at += L
    return tok, tgt, pos, doc, lm


def batch_loss(model, arrays, idx):
    tok, tgt, pos, doc, lm = (torch.from_numpy(a[idx]) for a in arrays)
    logits = model(tok, pos, doc)
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1), reduction="none")
    m = lm.view(-1)
    return (ce * m).sum(), m.sum()


@torch.no_grad()
def evaluate(model, arrays, batch: int) -> float:
    model.eval()
    tot, cnt = 0.0, 0.0
    for i in range(0, len(arrays[0]), batch):
        s, c = batch_loss(model, arrays, np.arange(i, min(i + batch, len(arrays[0]))))
        tot += s.item()
        cnt += c.item()
    model.train()
    return tot / cnt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True, help="checkpoint path (.pt)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32, help="rows of `context` tokens per step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=int, default=0, help="0 = only at the end")
    ap.add_argument("--context", type=int, default=256)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)

    sp = load_tokenizer(args.tokenizer)
    cfg = Config(vocab_size=sp.get_piece_size(), context=args.context)
    with open(args.corpus, encoding="utf-8") as f:
        books = json.load(f)["books"]
    train_ch, val_ch = split_chapters(books)
    train_ex = examples(train_ch, sp, cfg.context)
    val_ex = examples(val_ch, sp, cfg.context)
    val = pack(val_ex, cfg.context, sp.pad_id())
    print(f"train: {len(train_ex)} examples, {sum(map(len, train_ex))} tokens; val: {len(val_ex)} examples, {int(val[4].sum())} predicted tokens")

    model = Model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters, config {cfg.to_dict()}")
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    epoch, cursor, arrays = -1, 0, None
    t0 = time.time()
    seen = 0
    for step in range(args.steps):
        if arrays is None or cursor + args.batch > len(arrays[0]):
            epoch += 1
            order = np.random.RandomState(args.seed + epoch).permutation(len(train_ex))
            arrays = pack([train_ex[i] for i in order], cfg.context, sp.pad_id())
            cursor = 0
        idx = np.arange(cursor, cursor + args.batch)
        cursor += args.batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        s, c = batch_loss(model, arrays, idx)
        loss = s / c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += int(c.item())
        if step % 10 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step:5d}  epoch {epoch}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {seen / el:.0f} tok/s  {el:.0f}s", flush=True)
        if args.eval_every and step and step % args.eval_every == 0:
            print(f"step {step:5d}  val loss {evaluate(model, val, args.batch):.4f}", flush=True)
    train_time = time.time() - t0
    val_loss = evaluate(model, val, args.batch)
    print(f"final: val loss {val_loss:.4f} nats/token ({val_loss / math.log(2):.3f} bits), train time {train_time:.0f}s, {seen} tokens")
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(),
                "meta": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                         "val_loss": val_loss, "train_seconds": round(train_time), "train_tokens": seen,
                         "params": n_params, "epochs": round(seen / max(1, sum(len(e) - 1 for e in train_ex)), 3)}},
               args.out)


if __name__ == "__main__":
    main()
