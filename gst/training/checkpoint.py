"""Checkpoints of the training loop: written atomically, read back exactly.

One checkpoint is a folder ``OUT/checkpoints/step_00001234/`` holding

- ``model.safetensors``: the full training module's state dict (parameters and buffers);
- ``optimizer.safetensors``: every optimizer state tensor, flattened as ``state.<param index>.<name>``;
- ``trainer_state.json``: format version, step, the resolved config, the optimizer's param groups and
  non-tensor state, and the Python / NumPy / torch RNG states of every process (``rng`` by rank);
- ``config.json``: the resolved config alone, for people and for ``gst eval``;
- ``export/``: the task's deployable artefact (e.g. the tokenizer without its discriminator).

Atomicity: everything is written into ``step_XXXXXXXX.tmp`` and renamed with ``os.replace`` (atomic on
POSIX within one file system) only when complete; ``OUT/checkpoints/latest`` is likewise replaced
atomically. A crash mid-write leaves at most a ``.tmp`` folder, which the next save removes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_FORMAT_VERSION = 1  # bump when the folder layout changes; loading another version is an error
LATEST = "latest"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict[str, Any]:
    """This process's RNG states (JSON-able)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _listify(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *[_plain(v) for v in np_state[2:]]],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, Any] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            key = f"state.{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                extra[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "non_tensor_state": extra}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[Any, dict[str, Any]] = {}
    items = list(tensors.items()) + list(rest["non_tensor_state"].items())
    for key, value in items:
        # Keys are "state.<param>.<name>"; <param> is an index (or, under FSDP, a dotted parameter
        # name), and state names hold no dots, so split at the last dot.
        param, name = key[len("state.") :].rsplit(".", 1)
        state.setdefault(int(param) if param.isdigit() else param, {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def prepare_tmp_dir(checkpoints_dir: Path, step: int) -> Path:
    """A fresh ``step_XXXXXXXX.tmp`` folder (a stale one from a crash is removed). Main process only."""
    tmp = checkpoints_dir / (step_dir_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_main_files(
    tmp: Path,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
) -> None:
    """Model, optimizer, trainer state and config into the temp folder (main process)."""
    # Shared storage (tied weights) cannot be saved twice by safetensors; clone so each key owns its data.
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()},
        str(tmp / "model.safetensors"),
    )
    tensors, rest = flatten_optimizer_state(optimizer_state)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {**trainer_state, "format_version": CHECKPOINT_FORMAT_VERSION, "optimizer": rest}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_rng_file(tmp: Path, rank: int) -> None:
    (tmp / f"rng_rank{rank}.json").write_text(json.dumps(rng_state()) + "\n")


def finalize(checkpoints_dir: Path, step: int, keep: int) -> Path:
    """Rename the temp folder into place, point ``latest`` at it and prune old ones (main process)."""
    tmp = checkpoints_dir / (step_dir_name(step) + ".tmp")
    final = checkpoints_dir / step_dir_name(step)
    if final.exists():
        shutil.rmtree(final)  # re-saving a step (e.g. the end of a resumed run) replaces it
    os.replace(tmp, final)
    write_json_atomic(checkpoints_dir / LATEST, {"step": step, "dir": final.name})
    if keep > 0:
        steps = _step_dirs(checkpoints_dir)
        for old in steps[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder under ``OUT/checkpoints``, or None."""
    checkpoints_dir = out_dir / "checkpoints"
    pointer = checkpoints_dir / LATEST
    if pointer.exists():
        name = json.loads(pointer.read_text())["dir"]
        if (checkpoints_dir / name).is_dir():
            return checkpoints_dir / name
    found = _step_dirs(checkpoints_dir)
    return found[-1] if found else None


def read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, optimizer state dict, trainer state); raises ValueError for another format."""
    state_path = ckpt / "trainer_state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"{ckpt}: no trainer_state.json; not a checkpoint of gst.training")
    trainer_state = json.loads(state_path.read_text())
    version = trainer_state.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{state_path}: checkpoint format version {version} differs from this build's "
            f"{CHECKPOINT_FORMAT_VERSION}; resume it with the gst version that wrote it, or start a new run"
        )
    model_state = load_file(str(ckpt / "model.safetensors"))
    optimizer_state = unflatten_optimizer_state(
        load_file(str(ckpt / "optimizer.safetensors")), trainer_state["optimizer"]
    )
    return model_state, optimizer_state, trainer_state


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like configs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else key
            if key not in saved or key not in current:
                out.append(name)
            else:
                out.extend(config_differences(saved[key], current[key], name))
        return out
    return [] if saved == current else [prefix]


def _step_dirs(checkpoints_dir: Path) -> list[Path]:
    """Complete step folders, oldest first."""
    return sorted(p for p in checkpoints_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
