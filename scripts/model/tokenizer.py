"""SentencePiece BPE tokenizer for the Austen corpus (vocabulary 2,048, byte fallback).

Special pieces: ``<unk>`` 0, ``<s>`` 1 (BOS), ``</s>`` 2 (EOS), ``<pad>`` 3; then the 256 byte
pieces ``<0x00>`` .. ``<0xFF>`` (byte fallback: any character outside the vocabulary, e.g. "\\n" or
"é", is spelled in UTF-8 bytes); then 1,788 merged pieces.

Text is not normalised (``identity``) and **no dummy prefix space** is added (``add_dummy_prefix``
false; exported to GGUF as ``tokenizer.ggml.add_space_prefix = false``): the same text tokenizes the
same way in SentencePiece, in llama.cpp, and in node-llama-cpp (which tokenizes text after a
special token separately and would otherwise drop or add the "▁" prefix inconsistently).

Trained on the training paragraphs only, single-threaded; BPE training uses every sentence (no
sampling), so the model file is deterministic.
"""
from __future__ import annotations

import os
import sys

import sentencepiece as spm

VOCAB_SIZE = 2048


def train(paragraphs: list[str], workdir: str) -> str:
    """Trains the tokenizer; returns the path of the ``.model`` file."""
    text_path = os.path.join(workdir, "tokenizer-train.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        for p in paragraphs:
            f.write(p + "\n")
    prefix = os.path.join(workdir, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=text_path,
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        max_sentence_length=1 << 16,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        pad_piece="<pad>",
        minloglevel=1,
    )
    return prefix + ".model"


def load(path: str) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=path)


if __name__ == "__main__":
    # tokenizer.py CORPUS_JSON WORKDIR       → trains WORKDIR/tokenizer.model
    # tokenizer.py MODEL "text" ["text" ...] → shows how the texts are tokenized
    if sys.argv[1].endswith(".json"):
        import json

        from corpus import split_chapters

        with open(sys.argv[1], encoding="utf-8") as f:
            train_chapters, _ = split_chapters(json.load(f)["books"])
        path = train([p for ch in train_chapters for p in ch], sys.argv[2])
        sp = load(path)
        print(f"tokenizer: {path}, {sp.get_piece_size()} pieces")
    else:
        sp = load(sys.argv[1])
        for s in sys.argv[2:]:
            ids = sp.encode(s)
            print(ids, [sp.id_to_piece(i) for i in ids])
