"""Which tokenizers a cache was built with: their folders under ``--tokenizers DIR``, their content
hashes and the facts a cache records about them (``tokenizer_fingerprint``), and the check that the
tokenizers in use are those (``check_tokenizers``). Token and chat caches, and checkpoints, name their
tokenizers this way; no weights are loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gst.hashing import update_with_file

MAX_UINT16_CODES = 1 << 16  # caches store codes as uint16


def tokenizer_dirs(tokenizers_dir: str | Path) -> dict[str, Path]:
    """The resolved image and camera tokenizer folders under ``DIR/image`` and ``DIR/camera``."""
    from gst.tokenizers.io import resolve_tokenizer_dir

    root = Path(tokenizers_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--tokenizers {root}: no such folder (expected {root}/image and {root}/camera)"
        )
    out = {}
    for kind in ("image", "camera"):
        if not (root / kind).exists():
            raise FileNotFoundError(
                f"--tokenizers {root}: missing {root / kind}; train it with "
                f"`gst train tokenizer --kind {kind}` and put its export (or run folder) there"
            )
        out[kind] = resolve_tokenizer_dir(root / kind)
    return out


def tokenizer_sha256(folder: Path) -> str:
    """Content hash of a tokenizer folder: sha256 over its config.json and model.safetensors bytes."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update(name.encode())
        update_with_file(digest, folder / name)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizers_dir: str | Path) -> dict[str, dict[str, Any]]:
    """{kind: {"path", "sha256", "kind", "num_codes", "grid_hw", "image_hw"[, "pose_scale"]}} read from the
    tokenizers' config.json (no weights loaded)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, folder in tokenizer_dirs(tokenizers_dir).items():
        info = json.loads((folder / "config.json").read_text())
        if info.get("kind") != kind:
            raise ValueError(f"{folder}/config.json: kind is {info.get('kind')!r}, expected {kind!r}")
        entry = {
            "path": str(folder.resolve()),
            "sha256": tokenizer_sha256(folder),
            "num_codes": info["num_codes"],
            "grid_hw": list(info["grid_hw"]),
            "image_hw": list(info["config"]["image_hw"]),
        }
        if kind == "camera":
            entry["pose_scale"] = info["pose_scale"]
            entry["pose_normalisation"] = info.get("pose_normalisation", "")
        out[kind] = entry
    if out["image"]["image_hw"] != out["camera"]["image_hw"]:
        raise ValueError(
            f"--tokenizers {tokenizers_dir}: the image tokenizer works at {out['image']['image_hw']} but the "
            f"camera tokenizer's K refer to {out['camera']['image_hw']} pixels; use a matching pair"
        )
    for entry in out.values():
        if entry["num_codes"] > MAX_UINT16_CODES:
            raise ValueError(
                f"{entry['path']}: {entry['num_codes']} codes do not fit the cache's uint16 arrays"
            )
    return out


def check_tokenizers(
    manifest: dict[str, Any], current: dict[str, dict[str, Any]], where: Path, command: str = "gst data cache"
) -> None:
    """Raise ValueError unless the tokenizers a cache was built with are the ones in use (by content);
    ``command`` names the command that rebuilds the cache."""
    for kind in ("image", "camera"):
        built, now = manifest["tokenizers"][kind], current[kind]
        if built["sha256"] != now["sha256"]:
            raise ValueError(
                f"{where}: built with the {kind} tokenizer {built['path']} (sha256 {built['sha256'][:12]}), "
                f"but the tokenizers in use give {now['path']} (sha256 {now['sha256'][:12]}); rebuild "
                f"the cache with `{command} --tokenizers ...` or pass the tokenizers it was built with"
            )


__all__ = [
    "MAX_UINT16_CODES",
    "check_tokenizers",
    "tokenizer_dirs",
    "tokenizer_fingerprint",
    "tokenizer_sha256",
]
