"""Chat (spatial QA) token cache: the views each QA record shows, tokenized once, and its texts.

``build_chat_cache`` reads a QA file from ``gst data qa`` (``gst.data.qa_types``), encodes every view
that some record shows (``QARecord.views``; a visibility question's ``target_view`` is described in
words, never shown) ONCE with the image tokenizer, exactly as the pair cache does
(``gst.data.token_cache._encode_views``: ``gst.data.views.crop_resize`` to the tokenizer's ``image_hw``,
then ``to_signed``; ``gst.api.GST.prepare`` does the same to a user's image), and writes:

    OUT/manifest.json                        format, tokenizers (paths + sha256), grid, QA file sha256
    OUT/<split>/image_codes.npy (M, h, w)    uint16 image codes, one row per distinct (scene, view)
    OUT/<split>/records.jsonl                one record per line: the QA record's fields (question,
                                             canonical ``answer_text``, typed ``answer``,
                                             ``phrasing_split``...) plus ``image_rows`` (rows of
                                             image_codes, in the order of ``views``)

Splits: the QA file's own ``split`` field (``gst.data.pairs.scene_split`` of the scene name, chosen
when the questions were generated), so a scene is never in both; a scene whose records disagree is an
error. Held-out phrasings stay in the cache, marked by ``phrasing_split``; training reads only
``phrasing_split == "train"`` records of the train split (``ChatSplit.rows``).

Texts are kept as text: the run's text tokenizer (``GSTRunConfig.text``) tokenizes them at batch time,
so one cache serves every text vocabulary, with or without number tokens (``GSTRunConfig.number_tokens``:
numbers with a unit become one token each, ``gst.tokenizers.numbers``). Writing is atomic
(``OUT.partial`` renamed to ``OUT``); reading (``open_chat_cache``) checks format, shapes and, given the
tokenizers in use, their hashes.

Per-view data of a split, for the answer reader's training (gst.training.answer_reader): ``view_objects``
(the object or class each cell shows, from the cell labels of a token cache over the same scenes) and
``view_elevations`` (each view's camera elevation, from the scenes' ``transforms.json``).

Glossary: N records in a split, M distinct views of a split, h/w image token grid.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gst.data.cache_tokenizers import check_tokenizers, tokenizer_fingerprint
from gst.data.loaders import read_json
from gst.data.qa_geometry import WORLD_UP
from gst.data.qa_types import QARecord, read_jsonl
from gst.data.token_cache import SPLITS, CacheConfig, _encode_views, _load, find_scene_dirs
from gst.hashing import file_sha256

CHAT_CACHE_FORMAT = "gst-chat-cache"
CHAT_CACHE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"


def _split_records(records: Sequence[QARecord], qa_path: Path) -> dict[str, list[QARecord]]:
    """Records by their ``split`` field; every scene must sit in exactly one split."""
    scene_split: dict[str, str] = {}
    out: dict[str, list[QARecord]] = {split: [] for split in SPLITS}
    for r in records:
        if r.split not in SPLITS:
            raise ValueError(f"{qa_path}: record {r.id!r} has split {r.split!r}, expected train or val")
        if scene_split.setdefault(r.scene, r.split) != r.split:
            raise ValueError(
                f"{qa_path}: scene {r.scene!r} has records in both splits; regenerate with `gst data qa`"
            )
        out[r.split].append(r)
    return out


def _write_split(
    out: Path,
    records: list[QARecord],
    scene_dirs: dict[str, Path],
    image_tok: Any,
    config: CacheConfig,
    image_grid: list[int],
    progress: bool,
) -> dict[str, Any]:
    """Encode one split's views into ``out/image_codes.npy`` and write its records; its manifest entry."""
    out.mkdir(parents=True)
    keys = sorted({(r.scene, v) for r in records for v in r.views})
    where = {key: i for i, key in enumerate(keys)}
    codes = np.lib.format.open_memmap(
        out / "image_codes.npy", mode="w+", dtype=np.uint16, shape=(len(keys), *image_grid)
    )
    scenes = sorted({scene for scene, _ in keys})
    items = scenes
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(scenes, desc=f"chat cache {out.name}", unit="scene", file=sys.stderr)
    for name in items:
        scene = _load(scene_dirs[name])
        views = [v for s, v in keys if s == name]
        if views[-1] >= scene.num_views:
            raise ValueError(
                f"scene {name} ({scene_dirs[name]}) has {scene.num_views} views, but a QA record shows view "
                f"{views[-1]}; were the questions generated from these scenes?"
            )
        scene_codes, _ = _encode_views(image_tok, scene, views, config)  # (V', h, w)
        codes[[where[(name, v)] for v in views]] = scene_codes.numpy().astype(np.uint16)
    codes.flush()
    with open(out / RECORDS, "w", encoding="utf-8") as f:
        for r in records:
            row = {**r.to_json(), "image_rows": [where[(r.scene, v)] for v in r.views]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "num_records": len(records),
        "num_train_phrasing_records": sum(r.phrasing_split == "train" for r in records),
        "num_images": len(keys),
        "num_scenes": len(scenes),
        "scenes": scenes,
        "arrays": {"image_codes": {"shape": [len(keys), *image_grid], "dtype": "uint16"}},
    }


def build_chat_cache(
    qa_path: str | Path,
    scenes_dir: str | Path,
    tokenizers_dir: str | Path,
    out_dir: str | Path,
    *,
    crop: str = "center_crop",
    encode_batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Tokenize the views of every record of ``qa_path`` and write the chat cache atomically.

    Returns the manifest. Raises ValueError when ``out_dir`` exists (never overwritten) or a record's
    scene or view is not under ``scenes_dir``.
    """
    from gst.tokenizers.io import load_tokenizer

    qa_path, out_dir = Path(qa_path), Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"--out {out_dir}: already exists; remove it or choose another folder")
    # The pair cache's encoding settings (crop, batch size); pairs_per_scene is unused here.
    config = CacheConfig(pairs_per_scene=1, crop=crop, encode_batch_size=encode_batch_size)
    records = read_jsonl(qa_path)
    if not records:
        raise ValueError(f"--qa {qa_path}: no records; generate some with `gst data qa`")
    by_split = _split_records(records, qa_path)
    scene_dirs = {d.resolve().name: d for d in find_scene_dirs(scenes_dir)}
    missing = sorted({r.scene for r in records} - set(scene_dirs))
    if missing:
        raise ValueError(
            f"--qa {qa_path} asks about {len(missing)} scene(s) not under --scenes {scenes_dir} "
            f"(first: {missing[0]!r}); pass the folder the questions were generated from"
        )
    fp = tokenizer_fingerprint(tokenizers_dir)
    image_tok = load_tokenizer(fp["image"]["path"])
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # a crashed earlier build
    tmp.mkdir(parents=True)
    grid = fp["image"]["grid_hw"]
    splits = {
        split: _write_split(tmp / split, by_split[split], scene_dirs, image_tok, config, grid, progress)
        for split in SPLITS
    }
    manifest = {
        "format": CHAT_CACHE_FORMAT,
        "format_version": CHAT_CACHE_FORMAT_VERSION,
        "qa": {"path": str(qa_path.resolve()), "sha256": file_sha256(qa_path)},
        "scenes_root": str(Path(scenes_dir).resolve()),
        "tokenizers": fp,
        "image_grid": grid,
        "image_hw": fp["image"]["image_hw"],
        "crop": crop,
        "splits": splits,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out_dir)
    return manifest


# ---- reading ----


@dataclass
class ChatSplit:
    """One split: records (dicts as in records.jsonl) and their image codes, memory-mapped read-only."""

    name: str
    records: list[dict[str, Any]]
    image_codes: np.ndarray  # (M, h, w) uint16

    def __len__(self) -> int:
        return len(self.records)

    def rows(self, phrasing: str = "all") -> np.ndarray:
        """Record indices with ``phrasing_split`` == ``phrasing`` ("train", "heldout" or "all").
        Shapes: -> (n,) int64."""
        keep = [i for i, r in enumerate(self.records) if phrasing in ("all", r["phrasing_split"])]
        return np.asarray(keep, dtype=np.int64)

    def images(self, row: int) -> torch.Tensor:
        """Image codes of the views record ``row`` shows, in order. Shapes: -> (V, h, w) int64."""
        return torch.from_numpy(self.image_codes[self.records[row]["image_rows"]].astype(np.int64))

    def texts(self, row: int) -> tuple[str, str]:
        """(question, canonical answer text) of record ``row``."""
        r = self.records[row]
        return r["question"], r["answer_text"]


@dataclass
class ChatCache:
    root: Path
    manifest: dict[str, Any]
    splits: dict[str, ChatSplit]

    @property
    def image_grid(self) -> tuple[int, int]:
        return tuple(self.manifest["image_grid"])  # type: ignore[return-value]

    def split(self, name: str) -> ChatSplit:
        if name not in self.splits:
            raise ValueError(f"{self.root}: no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]


def open_chat_cache(cache_dir: str | Path, *, tokenizers_dir: str | Path | None = None) -> ChatCache:
    """Open a chat cache. With ``tokenizers_dir``, its tokenizers must be the ones the cache was built
    with (content hashes), else ValueError naming the cache's manifest."""
    root = Path(cache_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; {root} is not a chat cache (build one with `gst data chat-cache`)"
        )
    manifest = json.loads(path.read_text())
    if (manifest.get("format"), manifest.get("format_version")) != (
        CHAT_CACHE_FORMAT,
        CHAT_CACHE_FORMAT_VERSION,
    ):
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')} is not "
            f"{CHAT_CACHE_FORMAT!r} version {CHAT_CACHE_FORMAT_VERSION}; rebuild it with "
            "`gst data chat-cache`"
        )
    if tokenizers_dir is not None:
        check_tokenizers(manifest, tokenizer_fingerprint(tokenizers_dir), path, "gst data chat-cache")
    splits = {}
    for name, entry in manifest["splits"].items():
        codes_path = root / name / "image_codes.npy"
        records_path = root / name / RECORDS
        for p in (codes_path, records_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing from the chat cache; rebuild it")
        codes = np.load(codes_path, mmap_mode="r")
        spec = entry["arrays"]["image_codes"]
        if list(codes.shape) != spec["shape"] or str(codes.dtype) != spec["dtype"]:
            raise ValueError(
                f"{codes_path}: {codes.dtype} {list(codes.shape)} but the manifest says "
                f"{spec['dtype']} {spec['shape']}; the cache is damaged, rebuild it"
            )
        with open(records_path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        if len(records) != entry["num_records"]:
            raise ValueError(
                f"{records_path}: {len(records)} records, the manifest says {entry['num_records']}"
            )
        splits[name] = ChatSplit(name=name, records=records, image_codes=codes)
    return ChatCache(root=root, manifest=manifest, splits=splits)


def view_objects(split, cells, cache, array: str = "object") -> np.ndarray:
    """The object each cell of every view of a chat split shows (index into its scene's objects, -1 none),
    from the cell labels of a token cache over the same scenes; another label with ``array`` ("shape",
    "colour": class indices, -1 none). Shapes: (M, n) int64."""
    if tuple(cells.info["grid_hw"]) != tuple(split.image_codes.shape[1:]):
        raise ValueError(f"{cells.root}: cell grid {cells.info['grid_hw']} is not the chat cache's")
    where = {scene: (name, i) for name, s in cache.splits.items() for i, scene in enumerate(s.scenes)}
    out = np.full((len(split.image_codes), int(np.prod(split.image_codes.shape[1:]))), -1, np.int64)
    for r in split.records:
        if r["scene"] not in where:
            raise ValueError(
                f"--cells {cache.root}: no scene {r['scene']!r}; build it from the chat's scenes"
            )
        name, i = where[r["scene"]]
        for v, row in zip(r["views"], r["image_rows"], strict=True):
            out[row] = cells.arrays[name][array][i, v].reshape(-1)
    return out


def view_elevations(split, scenes_root: str | Path) -> np.ndarray:
    """The elevation of the camera of every view of a chat split (degrees, its forward axis above the
    horizontal plane of the world's up axis ``WORLD_UP``), read from each scene's ``transforms.json``
    under ``scenes_root`` (OpenGL camera-to-world ``transform_matrix``, as the procedural world writes).
    Shapes: -> (M,) float32."""
    out = np.full(len(split.image_codes), np.nan, np.float32)
    up, frames = np.asarray(WORLD_UP), {}
    for r in split.records:
        if r["scene"] not in frames:
            path = Path(scenes_root) / r["scene"] / "transforms.json"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: missing; the elevation target reads the cameras of the chat cache's scenes "
                    "(give --elevation-weight 0 to train without it)"
                )
            frames[r["scene"]] = read_json(path)["frames"]
        for v, row in zip(r["views"], r["image_rows"], strict=True):
            forward = -np.asarray(frames[r["scene"]][v]["transform_matrix"], np.float64)[:3, 2]
            out[row] = np.degrees(np.arcsin(np.clip(forward @ up / np.linalg.norm(forward), -1, 1)))
    return out


__all__ = ["ChatCache", "ChatSplit", "build_chat_cache", "open_chat_cache", "view_elevations", "view_objects"]
