"""Read character vectors out of an R lazy-load database (.rdx index + .rdb blobs).

Only the standard library is used. An R lazy-load database is two files:

* ``NAME.rdx``: an R serialization (gzip-compressed, as ``saveRDS`` writes it; older R versions
  wrote 4-byte big-endian length + zlib data instead) of a list ``list(variables=list(name=c(offset, length), ...), references=..., compressed=TRUE)``;
* ``NAME.rdb``: concatenated blobs; blob ``(offset, length)`` is 4-byte big-endian length + zlib
  data holding an R serialization of one object.

The unserializer handles the XDR ("X\\n") format, versions 2 and 3, for the subset of types found
in data packages: NULL, symbols, pairlists (attributes), character/logical/integer/double vectors,
generic vectors (lists), references and a few special environments. Anything else raises.
"""
from __future__ import annotations

import gzip
import struct
import zlib

NILVALUE_SXP = 254
REFSXP = 255
GLOBALENV_SXP = 253
UNBOUNDVALUE_SXP = 252
MISSINGARG_SXP = 251
BASENAMESPACE_SXP = 247
EMPTYENV_SXP = 242
BASEENV_SXP = 241
SYMSXP = 1
LISTSXP = 2
CHARSXP = 9
LGLSXP = 10
INTSXP = 13
REALSXP = 14
STRSXP = 16
VECSXP = 19

NA_INTEGER = -(2**31)


class RObject:
    """A vector or pairlist with its R attributes (``attrs``: dict name -> value)."""

    def __init__(self, rtype: int, value, attrs: dict | None = None):
        self.rtype = rtype
        self.value = value
        self.attrs = attrs or {}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"RObject(type={self.rtype}, len={len(self.value) if hasattr(self.value, '__len__') else '?'}, attrs={list(self.attrs)})"


class Symbol(str):
    """An R symbol (a name)."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.refs: list = []

    def bytes(self, n: int) -> bytes:
        b = self.data[self.pos:self.pos + n]
        if len(b) != n:
            raise ValueError("truncated R serialization")
        self.pos += n
        return b

    def int(self) -> int:
        return struct.unpack(">i", self.bytes(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two 32-bit halves
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        fmt = self.bytes(2)
        if fmt != b"X\n":
            raise ValueError(f"unsupported R serialization format {fmt!r} (only XDR 'X' is handled)")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            n = self.int()
            self.bytes(n)  # native encoding name
        elif version != 2:
            raise ValueError(f"unsupported R serialization version {version}")

    def attributes(self) -> dict:
        pl = self.item()
        out: dict = {}
        while isinstance(pl, RObject) and pl.rtype == LISTSXP:
            tag, car, cdr = pl.value
            out[str(tag)] = car
            pl = cdr
        return out

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if t == NILVALUE_SXP:
            return None
        if t in (GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP, EMPTYENV_SXP, BASEENV_SXP):
            return RObject(t, None)
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == SYMSXP:
            name = self.item()  # a CHARSXP
            sym = Symbol(name if name is not None else "")
            self.refs.append(sym)
            return sym
        if t == LISTSXP:
            attrs = self.attributes() if has_attr else {}
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            return RObject(LISTSXP, (tag, car, cdr), attrs)
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.bytes(n)
            levels = flags >> 12
            enc = "latin-1" if levels & (1 << 2) else "utf-8"
            return raw.decode(enc)
        if t in (LGLSXP, INTSXP):
            n = self.length()
            vals = list(struct.unpack(f">{n}i", self.bytes(4 * n))) if n else []
            vals = [None if v == NA_INTEGER else v for v in vals]
            return RObject(t, vals, self.attributes() if has_attr else {})
        if t == REALSXP:
            n = self.length()
            vals = list(struct.unpack(f">{n}d", self.bytes(8 * n))) if n else []
            return RObject(t, vals, self.attributes() if has_attr else {})
        if t == STRSXP:
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return RObject(t, vals, self.attributes() if has_attr else {})
        if t == VECSXP:
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return RObject(t, vals, self.attributes() if has_attr else {})
        raise ValueError(f"unsupported R SEXP type {t} at byte {self.pos - 4}")


def unserialize(data: bytes):
    """Unserializes one R object (XDR format)."""
    r = _Reader(data)
    r.header()
    return r.item()


def _inflate(blob: bytes) -> bytes:
    (n,) = struct.unpack(">I", blob[:4])
    out = zlib.decompress(blob[4:])
    if len(out) != n:
        raise ValueError(f"decompressed {len(out)} bytes, header says {n}")
    return out


def named_list(obj: RObject) -> dict:
    """A named R list (VECSXP with a ``names`` attribute) as a Python dict."""
    names = obj.attrs["names"].value
    return dict(zip(names, obj.value))


def read_lazyload(rdx_path: str, rdb_path: str) -> dict:
    """Returns ``{name: object}`` for every variable of a lazy-load database."""
    with open(rdx_path, "rb") as f:
        raw = f.read()
    index = named_list(unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _inflate(raw)))
    compressed = index.get("compressed")
    if compressed is not None and compressed.value and compressed.value[0] not in (True, 1):
        raise ValueError(f"unsupported compression type {compressed.value[0]} (only zlib)")
    with open(rdb_path, "rb") as f:
        rdb = f.read()
    out = {}
    for name, loc in named_list(index["variables"]).items():
        offset, length = (int(v) for v in loc.value)
        out[name] = unserialize(_inflate(rdb[offset:offset + length]))
    return out


def character_vectors(rdx_path: str, rdb_path: str) -> dict:
    """Returns ``{name: [str, ...]}`` for the character vectors of a lazy-load database."""
    return {k: v.value for k, v in read_lazyload(rdx_path, rdb_path).items() if isinstance(v, RObject) and v.rtype == STRSXP}


if __name__ == "__main__":
    import sys

    base = sys.argv[1]
    for name, vec in character_vectors(base + ".rdx", base + ".rdb").items():
        print(name, len(vec), sum(len(s or "") for s in vec))
