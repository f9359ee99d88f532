#!/usr/bin/env bash
# Set up .venv (pip, pinned torch) and run the test suite with one torch thread.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest tests "$@"
