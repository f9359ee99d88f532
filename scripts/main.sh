#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default: `gst demo` with the shipped checkpoint
# assets/gst-tiny on the example views in assets/examples (about ten seconds on 2 CPU cores).
# Extra arguments go to `gst demo` (e.g. --out DIR, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/gst demo "$@"
