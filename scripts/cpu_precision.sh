#!/usr/bin/env bash
# bf16 autocast against float32 on this machine's CPU, one torch thread: updates per CPU-second of the
# training loop (its own CPU time, the closing evaluation and checkpoint included) for the pixel
# regressor and for the tiny backbone's pose-reader stage (the model card's 12-minute stage).
#
#   bash scripts/cpu_precision.sh [CACHE] [OUT]
#
# CACHE: a token cache with cell labels (default data/cache_world4000_p64: `gst data cache`, then
# `gst data cells`); OUT: a scratch folder (default runs/cpu_precision). Prints one row per run; a few
# minutes where bf16 is native, about 8 where torch emulates it (docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-data/cache_world4000_p64}
OUT=${2:-runs/cpu_precision}
G=.venv/bin/gst
export OMP_NUM_THREADS=1
[ -d "$CACHE" ] || { echo "$CACHE: no such token cache (build it with gst data cache)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
# fewer updates in bf16: where it is emulated one update takes seconds
for p in no bf16; do
    n=$([ "$p" = no ] && echo 300 || echo 60)
    $G train regressor --data "$CACHE" --pixels "$OUT/pixels" --out "$OUT/regressor_$p" --max-steps "$n" \
        --set train.mixed_precision=$p --set train.tensorboard=false --quiet > "$OUT/regressor_$p.log" 2>&1
done
for p in no bf16; do
    n=$([ "$p" = no ] && echo 100 || echo 15)
    $G train gst --preset tiny --data "$CACHE" --tokenizers assets/tokenizers-tiny-aa --init-from assets/gst-tiny \
        --out "$OUT/pose_stage_$p" --max-steps "$n" --set train.mixed_precision=$p --set loss.pose_weight=1 \
        --set loss.pose_beta=0.1 --set loss.cell_weight=1 --set sequence.stem_pairs=64 \
        --set sequence.stem_warmup_steps=1000000 --set train.batch_size=32 --set train.warmup_steps=100 \
        --set frozen=lm,grid_emb,reader --set train.progress=false --set train.tensorboard=false \
        > "$OUT/pose_stage_$p.log" 2>&1
done
.venv/bin/python - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
print(f"CPU: torch reports {torch.backends.cpu.get_cpu_capability()}; one thread")
print("run | precision | updates | loop CPU-minutes | updates per CPU-second")
for path in sorted(out.glob("*/checkpoints/*/export/training.json")):
    r = json.loads(path.read_text())
    run = path.parts[len(out.parts)]
    rate = r["step"] / (60 * r["cpu_minutes"])
    print(f"{run} | {r['mixed_precision']} | {r['step']} | {r['cpu_minutes']:.3f} | {rate:.2f}")
EOF
