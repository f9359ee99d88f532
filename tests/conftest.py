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
