"""sha256 of files, streamed in 1 MiB blocks (checkpoint manifests, cache manifests, weight checks)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def update_with_file(digest: Any, path: str | Path) -> None:
    """Feed a file's bytes into ``digest`` (a hashlib object) without reading it whole."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()
