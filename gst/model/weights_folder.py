"""A small network's export folder: ``model.safetensors`` plus one JSON file, written to a temporary folder
and moved into place (a reader never sees half a folder). Used by the answer reader and the focal reader."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn


def save_weights_folder(net: nn.Module, out_dir: str | Path, json_name: str, info: dict[str, Any]) -> Path:
    """Write ``net``'s state dict to ``out_dir/model.safetensors`` and ``info`` to ``out_dir/json_name``,
    replacing any folder there. Returns ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / json_name).write_text(json.dumps(info, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
