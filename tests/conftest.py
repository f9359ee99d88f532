"""Shared fixtures of the test suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def fresh_accelerate():
    """A clean ``accelerate`` state before and after the test: every training run builds its own
    Accelerator, and a state left by an earlier test (mixed precision, device) would leak into it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="session")
def two_tiny_scenes(tmp_path_factory):
    """Two procedural scenes of four 64 px views (seed 3), rendered by `gst data synth` in a subprocess
    (it keeps the rasterizer's EGL context out of the test process)."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("tiny_scenes") / "scenes"
    synth = ["data", "synth", "--out", str(root), "--num-scenes", "2", "--views-per-scene", "4",
             "--resolution", "64", "--seed", "3", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run([sys.executable, "-m", "gst.cli", *synth], env=env, check=False).returncode == 0
    return root
