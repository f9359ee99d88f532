#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default (the procedural world).
# Until the world model is trained this renders a small procedural dataset and prints its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
out=${1:-out/procedural-demo}
.venv/bin/gst data synth --out "$out" --num-scenes 8 --views-per-scene 12 --resolution 128 --seed 0
.venv/bin/gst data summary "$out"
