"""The documented API examples run as written: the ```python blocks of gst/api.py's docstring and of
README.md that use gst.api, executed against the shipped default checkpoint (assets/gst-tiny) from a
scratch folder that sees the repository's assets/. Skipped while assets/gst-tiny is absent."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import gst.api

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str]]:
    found = [("gst/api.py", b) for b in _BLOCK.findall(gst.api.__doc__ or "")]
    readme = REPO / "README.md"
    if readme.is_file():
        found += [("README.md", b) for b in _BLOCK.findall(readme.read_text()) if "gst.api" in b]
    return found


@pytest.mark.skipif(
    not (REPO / "assets" / "gst-tiny" / "gst_checkpoint.json").is_file(),
    reason="the default checkpoint assets/gst-tiny is not there yet",
)
@pytest.mark.parametrize("where, code", _blocks(), ids=lambda v: v if v.endswith((".py", ".md")) else "")
def test_documented_example_runs(where: str, code: str, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "assets").symlink_to(REPO / "assets")
    monkeypatch.chdir(tmp_path)  # outputs the example writes land in the scratch folder
    exec(compile(code, f"{where} example", "exec"), {"__name__": "__example__"})
    assert os.getcwd() == str(tmp_path)
