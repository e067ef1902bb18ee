#!/usr/bin/env bash
# Reproducible build of Sovra's demonstration model, models/sovra-austen-1m.Q8_0.gguf.
# See scripts/model/README.md. Not run in CI (about 25 minutes of one CPU core).
#
#   scripts/model/build.sh                 # full build into models/
#   STEPS=200 OUT=/tmp/x scripts/model/build.sh   # a shorter run elsewhere
#
# Environment: WORK (scratch directory, default /tmp/sovra-model-build), OUT (output directory,
# default <repo>/models), STEPS (default 1000), SEED (default 1234), PYTHON (default /usr/bin/python3,
# Debian's interpreter, which sees python3-torch / python3-sentencepiece / python3-numpy).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-/tmp/sovra-model-build}"
OUT="${OUT:-$REPO/models}"
STEPS="${STEPS:-1000}"
SEED="${SEED:-1234}"
BATCH=32
PYTHON="${PYTHON:-/usr/bin/python3}"
NAME="sovra-austen-1m"
GGUF="$OUT/$NAME.Q8_0.gguf"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1

"$PYTHON" -c 'import torch, numpy, sentencepiece' 2>/dev/null || {
  echo "missing Python packages; as root: apt-get install python3-torch python3-numpy python3-sentencepiece libopenblas0-pthread" >&2
  exit 1
}
mkdir -p "$WORK" "$OUT"
cd "$HERE"

t() { date +%s; }
T0=$(t)
echo "== 1/4 corpus (r-cran-janeaustenr, checked against its pinned SHA-256)"
"$PYTHON" corpus.py "$WORK"
T1=$(t)
echo "== 2/4 tokenizer (SentencePiece BPE, 2048 pieces, byte fallback)"
"$PYTHON" tokenizer.py "$WORK/corpus.json" "$WORK"
T2=$(t)
echo "== 3/4 training ($STEPS steps, batch $BATCH x 256 tokens, seed $SEED, one thread)"
"$PYTHON" train.py --corpus "$WORK/corpus.json" --tokenizer "$WORK/tokenizer.model" --out "$WORK/model.pt" \
  --steps "$STEPS" --batch "$BATCH" --seed "$SEED" | tee "$WORK/train.log"
T3=$(t)
echo "== 4/4 GGUF export (Q8_0)"
"$PYTHON" gguf_export.py --checkpoint "$WORK/model.pt" --tokenizer "$WORK/tokenizer.model" --out "$GGUF" --type q8_0
T4=$(t)

SHA=$(sha256sum "$GGUF" | cut -d' ' -f1)
PREVIOUS=""
[ -f "$GGUF.sha256" ] && PREVIOUS=$(cut -d' ' -f1 "$GGUF.sha256")
(cd "$OUT" && sha256sum "$NAME.Q8_0.gguf" > "$NAME.Q8_0.gguf.sha256")
VAL=$(sed -n 's/^final: val loss \([0-9.]*\).*/\1/p' "$WORK/train.log")
"$PYTHON" - "$OUT/$NAME.build.json" <<PY
import json, sys
json.dump({"file": "$NAME.Q8_0.gguf", "sha256": "$SHA", "bytes": $(stat -c %s "$GGUF"), "steps": $STEPS, "batch": $BATCH,
           "seed": $SEED, "val_loss_nats_per_token": $VAL,
           "seconds": {"corpus": $((T1 - T0)), "tokenizer": $((T2 - T1)), "train": $((T3 - T2)), "export": $((T4 - T3))}},
          open(sys.argv[1], "w"), indent=1)
PY
echo
echo "model:      $GGUF ($(stat -c %s "$GGUF") bytes)"
echo "sha256:     $SHA"
echo "val loss:   $VAL nats/token"
echo "time:       corpus $((T1 - T0))s, tokenizer $((T2 - T1))s, training $((T3 - T2))s, export $((T4 - T3))s"
if [ -n "$PREVIOUS" ]; then
  if [ "$PREVIOUS" = "$SHA" ]; then echo "reproduced: identical to the previously recorded SHA-256"
  else echo "NOTE: differs from the previously recorded SHA-256 $PREVIOUS (different STEPS/SEED, or a different torch/numpy/OpenBLAS build)"; fi
fi
