"""Jane Austen's six novels as paragraphs, from the Debian package r-cran-janeaustenr.

Steps: download the .deb with ``apt-get download`` (no R needed), check its SHA-256 against the
pinned value, extract it with ``dpkg-deb -x``, read the character vectors (one element per printed
line) from ``data/Rdata.rdb``/``.rdx`` with :mod:`rdata`, and reflow them:

* lines are grouped into paragraphs at empty lines and joined with single spaces;
* front matter (title page, Northanger Abbey's "Advertisement") before the first chapter heading,
  and everything from "THE END" / "Finis" / "A NOTE ON THE TEXT" on, are dropped;
* headings are dropped and start a new chapter: "CHAPTER I", "Chapter 1", "VOLUME II" and any
  short all-capitals paragraph (e.g. "CHARADE."); footnotes (paragraphs starting "*") are dropped;
* ``_italics_`` markers are removed; curly quotes and dashes (none in this edition, but other
  editions have them) become ASCII ``"`` ``'`` ``--``; runs of whitespace become one space.

The result is ``corpus.json``: ``{"books": {name: [[paragraph, ...] per chapter, ...]}}``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

from rdata import character_vectors

PACKAGE = "r-cran-janeaustenr"
DEB_NAME = "r-cran-janeaustenr_1.0.0-1_all.deb"
# SHA-256 of the Debian bookworm package (version 1.0.0-1) this model was built from.
DEB_SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
BOOKS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]

VAL_CHAPTERS = 2  # per novel: the last two chapters are the validation set

HEADING = re.compile(r"^(chapter|volume)\s+[ivxlc0-9]+\.?$|^by jane austen$", re.I)
CHAPTER = re.compile(r"^chapter\s+[ivxlc0-9]+\.?$", re.I)
# The story ends here; what follows (Northanger Abbey's "A NOTE ON THE TEXT") is editorial.
END = re.compile(r"^(the end|finis|a note on the text)\.?$", re.I)
END_SUFFIX = re.compile(r"\s+(the end|finis)\.?$", re.I)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(workdir: str) -> str:
    """Downloads (unless present) and verifies the package; returns the extraction directory."""
    os.makedirs(workdir, exist_ok=True)
    deb = os.path.join(workdir, DEB_NAME)
    if not os.path.exists(deb):
        subprocess.run(["apt-get", "download", f"{PACKAGE}=1.0.0-1"], cwd=workdir, check=True)
    got = sha256_file(deb)
    if got != DEB_SHA256:
        sys.exit(f"corpus: SHA-256 mismatch for {deb}\n  expected {DEB_SHA256}\n  got      {got}\nrefusing to build from a different corpus")
    print(f"corpus: {DEB_NAME} sha256 {got} (ok)")
    root = os.path.join(workdir, "deb")
    if not os.path.exists(os.path.join(root, RDATA + ".rdb")):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return root


def normalise(text: str) -> str:
    text = text.replace("_", "")
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    text = text.replace("\u2014", "--").replace("\u2013", "-")
    return re.sub(r"\s+", " ", text).strip()


def is_heading(p: str) -> bool:
    if HEADING.match(p):
        return True
    # short all-capitals lines: titles ("EMMA", "PRIDE AND PREJUDICE"), "CHARADE." etc.
    return len(p) <= 40 and not re.search(r"[a-z]", p)


def chapters(lines: list[str]) -> list[list[str]]:
    """Reflows one book's lines into chapters of paragraphs."""
    paragraphs: list[str] = []
    buf: list[str] = []
    for line in list(lines) + [""]:
        if line is None or not line.strip():
            if buf:
                paragraphs.append(normalise(" ".join(buf)))
                buf = []
        else:
            buf.append(line)

    out: list[list[str]] = []
    started = False
    for p in paragraphs:
        if not p:
            continue
        if END.match(p):
            break
        if CHAPTER.match(p):
            started = True
            out.append([])
            continue
        if not started:
            continue  # front matter
        if is_heading(p):
            if out[-1]:
                out.append([])
            continue
        if p.startswith("*"):
            continue  # footnote
        m = END_SUFFIX.search(p)
        if m:  # "... national importance. Finis" (no empty line before the end mark)
            out[-1].append(p[: m.start()])
            break
        out[-1].append(p)
    return [c for c in out if c]


def split_chapters(books: dict) -> tuple[list[list[str]], list[list[str]]]:
    """(training chapters, validation chapters): the last VAL_CHAPTERS chapters of each novel are
    held out (from the tokenizer too)."""
    train, val = [], []
    for name in sorted(books):
        chs = books[name]
        train += chs[:-VAL_CHAPTERS]
        val += chs[-VAL_CHAPTERS:]
    return train, val


def build(workdir: str, out_path: str) -> dict:
    root = fetch(workdir)
    vecs = character_vectors(os.path.join(root, RDATA + ".rdx"), os.path.join(root, RDATA + ".rdb"))
    books = {name: chapters(vecs[name]) for name in BOOKS}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"source": DEB_NAME, "sha256": DEB_SHA256, "books": books}, f, ensure_ascii=False, indent=0)
    for name, chs in books.items():
        paras = [p for c in chs for p in c]
        print(f"corpus: {name}: {len(chs)} chapters, {len(paras)} paragraphs, {sum(map(len, paras))} characters")
    return books


if __name__ == "__main__":
    work = sys.argv[1] if len(sys.argv) > 1 else "build"
    build(work, os.path.join(work, "corpus.json"))
