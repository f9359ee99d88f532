#!/usr/bin/env bash
# One device run: `gst train gst "$@"` on .devdata/cache, then `gst train export`; results into $OUT.
# The GPU runs of docs/experiments.md (2026-12-04) used it as .devdata/run.sh, with the caches cut by
# scripts/device/cut_*.py packed as .devdata/cache.tar.xz and .devdata/chat.tar.xz (unpacked below).
# Usage (from the repo root): bash scripts/device/train_gst.sh --preset tiny --max-steps 2000 [--set KEY=VALUE ...]
# Env: RUN (run folder, default /tmp/run), EXPORT_DTYPE (float32|float16|bfloat16, default float32).
# $OUT gets at most 8 files: log.txt, scalars.json, training.json, run_config.json, export.tar (or up to
# 4 parts export.tar.NN: cat export.tar.* > export.tar). export.tar holds export/ (gst train export).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1                  # the repository root
OUT=${OUT:-/tmp/devout}; RUN=${RUN:-/tmp/run}; mkdir -p "$OUT"
main() {
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}
PY=python3
if command -v nvidia-smi >/dev/null 2>&1; then      # on the device: carried wheels, then the GPU
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi
else                                                 # CPU dry run here: the venv's python
  python3 -c 'import torch' 2>/dev/null || PY=$PWD/.venv/bin/python
  export PYTHONPATH=$PWD
fi
$PY -c 'import sys, torch, vector_quantize_pytorch as v; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "vq", v.__file__)' || exit 1
unpack() {  # unpack() NAME: .devdata/NAME.tar.xz -> .devdata/NAME/ (the caches travel packed)
  local t0=$(date +%s)
  tar -C .devdata -xJf .devdata/$1.tar.xz ||
    $PY -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".devdata")' .devdata/$1.tar.xz || exit 1
  echo "unpacked .devdata/$1 in $(( $(date +%s) - t0 )) s"
}
CACHE=.devdata/cache
[ -f $CACHE/manifest.json ] || unpack cache
# the chat cache (spatial-QA rows, for --chat .devdata/chat) travels as .devdata/chat.tar.xz, if carried
[ -f .devdata/chat/manifest.json ] || [ ! -f .devdata/chat.tar.xz ] || unpack chat
TOK=assets/tokenizers-tiny-aa
t0=$(date +%s)
$PY -m gst.cli train gst --data $CACHE --tokenizers $TOK --out "$RUN" "$@"; rc=$?
echo "train gst: rc=$rc in $(( $(date +%s) - t0 )) s"
$PY - "$RUN" "$OUT/scalars.json" <<'EOF'
import json, sys
from gst.training.gst_commands import read_scalars
s = read_scalars(sys.argv[1])
json.dump(s, open(sys.argv[2], "w"))
for tag, v in sorted(s.items()):
    print(f"{tag}: {len(v)} points, last step {v[-1][0]} = {v[-1][1]:.5g}")
EOF
[ $rc -eq 0 ] || exit $rc
rm -rf /tmp/export
$PY -m gst.cli train export "$RUN" --out /tmp/export --tokenizers $TOK --backbone-dtype "${EXPORT_DTYPE:-float32}" || exit 1
last=$(ls -d "$RUN"/checkpoints/step_* | tail -1)     # training.json: steps, wall/CPU minutes, device
cp "$last/export/training.json" "$OUT/training.json"; cp "$RUN/config.json" "$OUT/run_config.json"
( cd /tmp/export && find . -type f | sort | xargs ls -l )
tar -C /tmp -cf /tmp/export.tar export
size=$(stat -c %s /tmp/export.tar); echo "export.tar: $size bytes"
if [ "$size" -gt 60000000 ]; then                    # tokenizers are byte-copies of $TOK (sha256 in gst_checkpoint.json)
  tar -C /tmp -cf /tmp/export.tar --exclude=export/tokenizers export
  size=$(stat -c %s /tmp/export.tar); echo "export.tar without tokenizers/: $size bytes"
fi
if [ "$size" -le 15000000 ]; then cp /tmp/export.tar "$OUT/"
elif [ "$size" -le 60000000 ]; then split -b 15000000 -d /tmp/export.tar "$OUT/export.tar."  # cat export.tar.* >export.tar
else echo "export.tar too big to come back; only log and scalars returned"; fi
ls -l "$OUT"
}
main "$@" 2>&1 | tee "$OUT/log.txt"                  # everything also lands in $OUT/log.txt
exit "${PIPESTATUS[0]}"
