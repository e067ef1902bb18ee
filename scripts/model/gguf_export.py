"""Writes the trained model as a GGUF v3 file for llama.cpp (architecture "llama").

Format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), all little-endian:
header ``"GGUF"``, version 3, tensor count (u64), metadata count (u64); metadata key/value pairs
(string key, u32 value type, value); tensor infos (name, n_dims, dims innermost first, ggml type,
offset into the data section); padding to ``general.alignment`` (32); tensor data, each tensor
aligned to 32 bytes.

Tensor types: matrices are Q8_0 (blocks of 32 values: an fp16 scale ``d = max|x| / 127`` and 32
int8 ``round(x / d)``; rows must be multiples of 32), or F32 / F16 with ``--type``; norm weights
are always F32. The output projection is tied to ``token_embd.weight`` (no ``output.weight``).

Tokenizer metadata follows llama.cpp's SentencePiece ("llama") vocabulary: pieces, scores, token
types (1 normal, 2 unknown, 3 control, 6 byte), BOS/EOS/UNK/PAD ids, ``add_bos_token`` true,
``add_eos_token`` false, ``add_space_prefix`` false (see tokenizer.py), and the chat template.
"""
from __future__ import annotations

import argparse
import hashlib
import struct

import numpy as np
import torch

from tokenizer import load as load_tokenizer

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

# metadata value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
# llama_ftype
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}

# The conversation, one paragraph per message, separated by a blank line; the model writes the
# next paragraph. See models/sovra-austen-1m.md.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['content'] }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n' }}{% endif %}"
)


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


class Writer:
    def __init__(self):
        self.kv: list[bytes] = []
        self.tensors: list[tuple[str, tuple[int, ...], int, bytes]] = []

    def add(self, key: str, vtype: int, value) -> None:
        out = _str(key) + struct.pack("<I", vtype)
        if vtype == T_STRING:
            out += _str(value)
        elif vtype == T_UINT32:
            out += struct.pack("<I", value)
        elif vtype == T_INT32:
            out += struct.pack("<i", value)
        elif vtype == T_FLOAT32:
            out += struct.pack("<f", value)
        elif vtype == T_BOOL:
            out += struct.pack("<?", value)
        elif vtype == T_UINT64:
            out += struct.pack("<Q", value)
        else:
            raise ValueError(vtype)
        self.kv.append(out)

    def add_array(self, key: str, etype: int, values) -> None:
        out = _str(key) + struct.pack("<IIQ", T_ARRAY, etype, len(values))
        if etype == T_STRING:
            out += b"".join(_str(v) for v in values)
        elif etype == T_FLOAT32:
            out += np.asarray(values, dtype="<f4").tobytes()
        elif etype == T_INT32:
            out += np.asarray(values, dtype="<i4").tobytes()
        else:
            raise ValueError(etype)
        self.kv.append(out)

    def add_tensor(self, name: str, arr: np.ndarray, ttype: int) -> None:
        """arr: numpy array in PyTorch layout (rows last dim); GGUF dims are reversed."""
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if ttype == GGML_F32:
            data = arr.astype("<f4").tobytes()
        elif ttype == GGML_F16:
            data = arr.astype("<f2").tobytes()
        elif ttype == GGML_Q8_0:
            data = quantize_q8_0(arr)
        else:
            raise ValueError(ttype)
        self.tensors.append((name, tuple(reversed(arr.shape)), ttype, data))

    def write(self, path: str) -> None:
        def pad(n: int) -> int:
            return (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT

        infos, offset = [], 0
        for name, dims, ttype, data in self.tensors:
            infos.append(_str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
                         + struct.pack("<IQ", ttype, offset))
            offset += len(data) + pad(len(data))
        head = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))
        head += b"".join(self.kv) + b"".join(infos)
        with open(path, "wb") as f:
            f.write(head + b"\0" * pad(len(head)))
            for _, _, _, data in self.tensors:
                f.write(data + b"\0" * pad(len(data)))


def quantize_q8_0(arr: np.ndarray) -> bytes:
    """ggml's reference Q8_0 quantization (quantize_row_q8_0_ref), row-major blocks of 32."""
    if arr.shape[-1] % 32:
        raise ValueError(f"Q8_0 needs rows that are multiples of 32, got {arr.shape}")
    blocks = arr.reshape(-1, 32).astype(np.float32)
    amax = np.abs(blocks).max(axis=1)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    x = blocks * inv[:, None]
    q = (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int8)  # roundf: half away from zero
    out = np.zeros(len(blocks), dtype=[("d", "<f2"), ("qs", "i1", (32,))])
    out["d"] = d.astype("<f2")
    out["qs"] = q
    return out.tobytes()


def export(ckpt_path: str, tokenizer_path: str, out_path: str, ttype_name: str, name: str) -> str:
    ckpt = torch.load(ckpt_path, map_location="cpu")
    cfg, sd = ckpt["config"], ckpt["state_dict"]
    sp = load_tokenizer(tokenizer_path)
    mat_type = {"f32": GGML_F32, "f16": GGML_F16, "q8_0": GGML_Q8_0}[ttype_name]

    w = Writer()
    w.add("general.architecture", T_STRING, "llama")
    w.add("general.name", T_STRING, name)
    w.add("general.description", T_STRING,
          "Demonstration model trained from scratch on Jane Austen's novels: writes one Austen-flavoured "
          "paragraph after a paragraph of input. Not an assistant.")
    w.add("general.license", T_STRING, "Apache-2.0")
    w.add("general.file_type", T_UINT32, FILE_TYPE[ttype_name])
    w.add("general.quantization_version", T_UINT32, 2)
    w.add("general.alignment", T_UINT32, ALIGNMENT)
    w.add("llama.context_length", T_UINT32, cfg["context"])
    w.add("llama.embedding_length", T_UINT32, cfg["dim"])
    w.add("llama.block_count", T_UINT32, cfg["n_layers"])
    w.add("llama.feed_forward_length", T_UINT32, cfg["ffn_dim"])
    w.add("llama.attention.head_count", T_UINT32, cfg["n_heads"])
    w.add("llama.attention.head_count_kv", T_UINT32, cfg["n_heads"])
    w.add("llama.rope.dimension_count", T_UINT32, cfg["dim"] // cfg["n_heads"])
    w.add("llama.rope.freq_base", T_FLOAT32, float(cfg["rope_base"]))
    w.add("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, float(cfg["norm_eps"]))
    w.add("llama.vocab_size", T_UINT32, cfg["vocab_size"])

    n = sp.get_piece_size()
    pieces, scores, types = [], [], []
    for i in range(n):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    w.add("tokenizer.ggml.model", T_STRING, "llama")
    w.add_array("tokenizer.ggml.tokens", T_STRING, pieces)
    w.add_array("tokenizer.ggml.scores", T_FLOAT32, scores)
    w.add_array("tokenizer.ggml.token_type", T_INT32, types)
    w.add("tokenizer.ggml.bos_token_id", T_UINT32, sp.bos_id())
    w.add("tokenizer.ggml.eos_token_id", T_UINT32, sp.eos_id())
    w.add("tokenizer.ggml.unknown_token_id", T_UINT32, sp.unk_id())
    w.add("tokenizer.ggml.padding_token_id", T_UINT32, sp.pad_id())
    w.add("tokenizer.ggml.add_bos_token", T_BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", T_BOOL, False)
    w.add("tokenizer.ggml.add_space_prefix", T_BOOL, False)
    w.add("tokenizer.chat_template", T_STRING, CHAT_TEMPLATE)

    t = lambda k: sd[k].detach().float().numpy()  # noqa: E731
    w.add_tensor("token_embd.weight", t("tok.weight"), mat_type)
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", t(p + "attn_norm.weight"), GGML_F32)
        w.add_tensor(f"blk.{i}.attn_q.weight", t(p + "wq.weight"), mat_type)
        w.add_tensor(f"blk.{i}.attn_k.weight", t(p + "wk.weight"), mat_type)
        w.add_tensor(f"blk.{i}.attn_v.weight", t(p + "wv.weight"), mat_type)
        w.add_tensor(f"blk.{i}.attn_output.weight", t(p + "wo.weight"), mat_type)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", t(p + "ffn_norm.weight"), GGML_F32)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(p + "w_gate.weight"), mat_type)
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(p + "w_up.weight"), mat_type)
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(p + "w_down.weight"), mat_type)
    w.add_tensor("output_norm.weight", t("norm.weight"), GGML_F32)
    w.write(out_path)

    h = hashlib.sha256()
    with open(out_path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Export a train.py checkpoint to GGUF")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", choices=["q8_0", "f16", "f32"], default="q8_0")
    ap.add_argument("--name", default="sovra-austen-1m")
    a = ap.parse_args()
    digest = export(a.checkpoint, a.tokenizer, a.out, a.type, a.name)
    print(f"gguf: {a.out} sha256 {digest}")
