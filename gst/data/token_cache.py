"""Tokenized pair cache: every (observed, target) pair tokenized once, stored as memory-mapped arrays.

Training the GST backbone must not be bound by the tokenizers, so ``build_token_cache`` samples pairs
from scenes (``gst.data.pairs.sample_pairs``: baseline angle in [min, max] degrees around the scene
centre, co-visible objects where the scene records them, balanced across scenes), tokenizes each view
ONCE with the image tokenizer and each pair's camera with the camera tokenizer, and writes:

    OUT/manifest.json                      format, tokenizers (paths + sha256), grids, counts, config
    OUT/<split>/obs_codes.npy  (N, h, w)   uint16 image codes of the observed view
    OUT/<split>/tgt_codes.npy  (N, h, w)   uint16 image codes of the target view
    OUT/<split>/cam_codes.npy  (N, hc, wc) uint16 camera codes of the target relative to the observed
    OUT/<split>/K_obs.npy, K_tgt.npy (N, 3, 3) float32 intrinsics at the tokenizer resolution
    OUT/<split>/w2c_rel.npy    (N, 4, 4)   float32 true relative pose, world units (NOT normalised)
    OUT/<split>/views.npy      (N, 2)      int32 (obs, tgt) view indices within the scene
    OUT/<split>/scene_index.npy (N,)       int32 index into manifest splits.<split>.scenes
    OUT/<split>/baseline_deg.npy (N,)      float32 baseline angle (gst.data.pairs)

Splits: ``train`` and ``val`` by scene name (``gst.data.pairs.scene_split`` with ``val_fraction``), so
no scene is in both; ``val_fraction=1`` puts every scene in ``val`` (a held-out set), 0 in ``train``.

Images are cropped/resized to the image tokenizer's ``image_hw`` with ``gst.data.views.crop_resize``
(K adjusted exactly). Camera codes encode the target camera relative to the observed one with the
target's K, translation divided by the camera tokenizer's ``pose_scale``
(``CameraTokenizer.encode_cameras``); ``w2c_rel`` keeps world units, so evaluation scores against
the truth, not against the tokenizer's reconstruction.

Writing is atomic: everything goes to ``OUT.partial`` and is renamed to ``OUT`` when complete.
Reading (``open_token_cache``) checks the manifest, the array shapes, and, given the tokenizers in
use, their content hashes; a mismatch is an error that says how to rebuild.

Glossary: N pairs, h/w image token grid, hc/wc camera token grid, V views.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gst.data.cache_tokenizers import check_tokenizers, tokenizer_fingerprint
from gst.data.pairs import SPLIT_SALT, Pair, PairConfig, baseline_histogram, sample_pairs, scene_split
from gst.data.scene import Scene
from gst.data.views import crop_box, crop_resize
from gst.geometry.conventions import relative_w2c

CACHE_FORMAT = "gst-token-cache"
CACHE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """What goes into a cache (saved in its manifest)."""

    pairs_per_scene: int  # at most this many ordered pairs per scene (fewer where a scene has fewer)
    seed: int = 0  # pair sampling seed (numpy default_rng, see gst.data.pairs)
    val_fraction: float = 0.1  # scenes hashing below this go to the val split; 1 = all val (held-out set)
    crop: str = "center_crop"  # how views reach the tokenizer resolution (gst.data.views)
    encode_batch_size: int = 64  # views per image-tokenizer forward
    pairs: PairConfig = field(default_factory=PairConfig)

    def __post_init__(self) -> None:
        if self.pairs_per_scene < 1:
            raise ValueError(f"--pairs-per-scene must be >= 1, got {self.pairs_per_scene}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1], got {self.val_fraction}")
        if self.crop not in ("center_crop", "stretch"):
            raise ValueError(f"crop must be center_crop or stretch, got {self.crop!r}")
        if self.encode_batch_size < 1 or self.seed < 0:
            raise ValueError("encode_batch_size must be >= 1 and seed >= 0")


# ---- scenes ----


def find_scene_dirs(root: str | Path) -> list[Path]:
    """Scene folders (``transforms.json`` or ``transforms_<split>.json``) under ``root``, sorted by name;
    ``root`` itself if it is one."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--scenes {root}: no such folder; make one with `gst data synth --out {root}`"
        )

    def is_scene(p: Path) -> bool:
        return (p / "transforms.json").is_file() or any(p.glob("transforms_*.json"))

    if is_scene(root):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and is_scene(p))
    if not found:
        raise FileNotFoundError(f"--scenes {root}: no scene folders inside; make some with `gst data synth`")
    return found


def _load(path: Path) -> Scene:
    from gst.data.loaders import load_scene

    # Folders with only split files (NeRF-synthetic) contribute all their views: pairs stay in one
    # scene, and the train/val split is by scene.
    return load_scene(path, None if (path / "transforms.json").is_file() else "all")


def _select_pairs(scenes: Sequence[Scene], config: CacheConfig) -> list[Pair]:
    """At most ``pairs_per_scene`` pairs per scene: the first rounds of sample_pairs' round-robin."""
    if not scenes:
        return []
    pairs = sample_pairs(
        scenes, config.pairs_per_scene * len(scenes), config.seed, config.pairs, allow_fewer=True
    )
    taken: dict[int, int] = {}
    out = []
    for pair in pairs:
        if taken.get(pair.scene_index, 0) < config.pairs_per_scene:
            taken[pair.scene_index] = taken.get(pair.scene_index, 0) + 1
            out.append(pair)
    return sorted(out, key=lambda p: (p.scene_index, p.obs, p.tgt))


def baseline_summary(angles: np.ndarray) -> dict[str, Any]:
    """Statistics of baseline angles in degrees (what the manifest reports)."""
    if len(angles) == 0:
        return {"count": 0}
    edges, counts = baseline_histogram(
        [
            Pair(
                scene="",
                scene_index=0,
                obs=0,
                tgt=1,
                baseline_angle_deg=float(a),
                angle_source="",
                num_covisible=None,
            )
            for a in angles
        ]
    )
    q = np.percentile(angles, [0, 10, 50, 90, 100])
    return {
        "count": int(len(angles)),
        "mean": float(angles.mean()),
        "min": float(q[0]),
        "p10": float(q[1]),
        "median": float(q[2]),
        "p90": float(q[3]),
        "max": float(q[4]),
        "hist_edges_deg": edges.tolist(),
        "hist_counts": counts.tolist(),
    }


# ---- building ----


def _array_specs(
    n: int, image_grid: list[int], camera_grid: list[int]
) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        "obs_codes": ((n, *image_grid), "uint16"),
        "tgt_codes": ((n, *image_grid), "uint16"),
        "cam_codes": ((n, *camera_grid), "uint16"),
        "K_obs": ((n, 3, 3), "float32"),
        "K_tgt": ((n, 3, 3), "float32"),
        "w2c_rel": ((n, 4, 4), "float32"),
        "views": ((n, 2), "int32"),
        "scene_index": ((n,), "int32"),
        "baseline_deg": ((n,), "float32"),
    }


@torch.no_grad()
def _encode_views(
    image_tok, scene: Scene, views: list[int], config: CacheConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image codes and resized K of some views. Shapes: -> (V', h, w) int64, (V', 3, 3) float64."""
    from gst.tokenizers.image import to_signed

    image_hw = tuple(image_tok.config.image_hw)
    codes, Ks = [], []
    for start in range(0, len(views), config.encode_batch_size):
        chunk = views[start : start + config.encode_batch_size]
        images, K = crop_resize(scene.load_images(chunk), scene.K[chunk], image_hw, mode=config.crop)
        codes.append(image_tok.encode(to_signed(images.clamp(0.0, 1.0))))  # (v, h, w)
        Ks.append(K)
    return torch.cat(codes), torch.cat(Ks)


def _write_split(
    out: Path,
    scenes: list[Scene],
    pairs: list[Pair],
    tokenizers: dict[str, Any],
    fp: dict,
    config: CacheConfig,
    progress: bool,
) -> dict[str, Any]:
    """Tokenize one split's pairs into ``out`` (a folder of .npy files); returns its manifest entry."""
    out.mkdir(parents=True)
    specs = _array_specs(len(pairs), fp["image"]["grid_hw"], fp["camera"]["grid_hw"])
    arrays = {
        name: np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        for name, (shape, dtype) in specs.items()
    }
    by_scene: dict[int, list[int]] = {}
    for row, pair in enumerate(pairs):
        by_scene.setdefault(pair.scene_index, []).append(row)
    items = list(by_scene.items())
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=f"cache {out.name}", unit="scene", file=sys.stderr)
    for s, rows in items:
        scene = scenes[s]
        obs = torch.tensor([pairs[r].obs for r in rows])
        tgt = torch.tensor([pairs[r].tgt for r in rows])
        views = sorted(set(obs.tolist()) | set(tgt.tolist()))
        where = {v: i for i, v in enumerate(views)}
        codes, K = _encode_views(tokenizers["image"], scene, views, config)  # (V', h, w), (V', 3, 3)
        i_obs = torch.tensor([where[v] for v in obs.tolist()])
        i_tgt = torch.tensor([where[v] for v in tgt.tolist()])
        w2c_obs, w2c_tgt = scene.w2c[obs].double(), scene.w2c[tgt].double()
        cam = tokenizers["camera"].encode_cameras(K[i_tgt].double(), w2c_obs, w2c_tgt)  # (n, hc, wc)
        idx = np.asarray(rows)
        arrays["obs_codes"][idx] = codes[i_obs].numpy().astype(np.uint16)
        arrays["tgt_codes"][idx] = codes[i_tgt].numpy().astype(np.uint16)
        arrays["cam_codes"][idx] = cam.cpu().numpy().astype(np.uint16)
        arrays["K_obs"][idx] = K[i_obs].numpy().astype(np.float32)
        arrays["K_tgt"][idx] = K[i_tgt].numpy().astype(np.float32)
        arrays["w2c_rel"][idx] = relative_w2c(w2c_obs, w2c_tgt).numpy().astype(np.float32)
        arrays["views"][idx] = torch.stack([obs, tgt], 1).numpy().astype(np.int32)
        arrays["scene_index"][idx] = s
        arrays["baseline_deg"][idx] = [pairs[r].baseline_angle_deg for r in rows]
    for array in arrays.values():
        array.flush()
    angles = np.asarray([p.baseline_angle_deg for p in pairs], dtype=np.float64)
    per_scene = np.bincount([p.scene_index for p in pairs], minlength=len(scenes)) if scenes else np.zeros(0)
    return {
        "num_pairs": len(pairs),
        "num_scenes": len(scenes),
        "scenes": [s.name for s in scenes],
        "scene_hw": [
            list(s.image_hw) for s in scenes
        ],  # original (H, W), to map K back (original_intrinsics)
        "scenes_with_fewer_pairs": int((per_scene < config.pairs_per_scene).sum()),
        "angle_sources": sorted({p.angle_source for p in pairs}),
        "baseline_deg": baseline_summary(angles),
        "arrays": {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in specs.items()},
    }


def build_token_cache(
    scenes_dir: str | Path,
    tokenizers_dir: str | Path,
    out_dir: str | Path,
    config: CacheConfig,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Sample pairs from the scenes under ``scenes_dir``, tokenize them and write the cache atomically.

    Returns the manifest. Raises ValueError when ``out_dir`` already exists (never overwritten).
    """
    from gst.tokenizers.io import load_tokenizer

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"--out {out_dir}: already exists; remove it or choose another folder")
    fp = tokenizer_fingerprint(tokenizers_dir)
    tokenizers = {kind: load_tokenizer(fp[kind]["path"]) for kind in ("image", "camera")}
    dirs = find_scene_dirs(scenes_dir)
    names = {
        split: [d for d in dirs if scene_split(d.name, config.val_fraction) == split] for split in SPLITS
    }
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # a crashed earlier build
    tmp.mkdir(parents=True)
    splits = {}
    for split in SPLITS:
        scenes = [_load(d) for d in names[split]]
        pairs = _select_pairs(scenes, config)
        if not pairs:
            print(
                f"gst: notice: the {split} split of {scenes_dir} is empty (val_fraction "
                f"{config.val_fraction}, {len(scenes)} scenes)",
                file=sys.stderr,
            )
        splits[split] = _write_split(tmp / split, scenes, pairs, tokenizers, fp, config, progress)
    manifest = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_FORMAT_VERSION,
        "scenes_root": str(Path(scenes_dir).resolve()),
        "tokenizers": fp,
        "image_grid": fp["image"]["grid_hw"],
        "camera_grid": fp["camera"]["grid_hw"],
        "image_hw": fp["image"]["image_hw"],
        "config": asdict(config),
        "split_rule": {
            "rule": "gst.data.pairs.scene_split",
            "salt": SPLIT_SALT,
            "val_fraction": config.val_fraction,
        },
        "splits": splits,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out_dir)
    return manifest


# ---- reading ----


@dataclass
class CacheSplit:
    """One split's arrays, memory-mapped read-only (see the module docstring for shapes and dtypes)."""

    name: str
    scenes: list[str]
    scene_hw: list[tuple[int, int]]  # original (H, W) of each scene's images
    crop: str  # how they were brought to the tokenizer resolution
    obs_codes: np.ndarray
    tgt_codes: np.ndarray
    cam_codes: np.ndarray
    K_obs: np.ndarray
    K_tgt: np.ndarray
    w2c_rel: np.ndarray
    views: np.ndarray
    scene_index: np.ndarray
    baseline_deg: np.ndarray

    def __len__(self) -> int:
        return int(self.obs_codes.shape[0])

    def codes(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(obs, tgt, cam) codes of some pairs as int64 tensors. Shapes: (n, h, w), (n, h, w), (n, hc, wc)."""
        rows = np.asarray(rows)
        return tuple(
            torch.from_numpy(a[rows].astype(np.int64))
            for a in (self.obs_codes, self.tgt_codes, self.cam_codes)
        )  # type: ignore[return-value]

    def original_intrinsics(
        self, rows: Sequence[int], K: torch.Tensor, image_hw: tuple[int, int]
    ) -> torch.Tensor:
        """K at the tokenizer resolution ``image_hw`` -> K at each pair's original image size (the inverse
        of the cache's crop/resize, pixel-centre convention). Shapes: (n, 3, 3) -> (n, 3, 3)."""
        out = K.clone()
        for i, r in enumerate(rows):
            scene_hw = self.scene_hw[int(self.scene_index[r])]
            y0, x0, crop_h, crop_w = crop_box(scene_hw, image_hw, self.crop)  # type: ignore[arg-type]
            sy, sx = image_hw[0] / crop_h, image_hw[1] / crop_w
            out[i, 0, 0], out[i, 0, 1] = K[i, 0, 0] / sx, K[i, 0, 1] / sx
            out[i, 0, 2] = (K[i, 0, 2] + 0.5) / sx - 0.5 + x0
            out[i, 1, 1] = K[i, 1, 1] / sy
            out[i, 1, 2] = (K[i, 1, 2] + 0.5) / sy - 0.5 + y0
        return out

    def pair_keys(self, rows: Sequence[int]) -> list[tuple[str, int, int]]:
        """(scene name, obs view, tgt view) of some pairs."""
        return [
            (self.scenes[int(self.scene_index[r])], int(self.views[r, 0]), int(self.views[r, 1]))
            for r in rows
        ]


@dataclass
class TokenCache:
    """An opened cache: its manifest and its splits."""

    root: Path
    manifest: dict[str, Any]
    splits: dict[str, CacheSplit]

    @property
    def image_grid(self) -> tuple[int, int]:
        return tuple(self.manifest["image_grid"])  # type: ignore[return-value]

    @property
    def camera_grid(self) -> tuple[int, int]:
        return tuple(self.manifest["camera_grid"])  # type: ignore[return-value]

    def split(self, name: str) -> CacheSplit:
        if name not in self.splits:
            raise ValueError(f"{self.root}: no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]


def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """The manifest of a cache folder, checked for format and version."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; {cache_dir} is not a token cache (build one with `gst data cache`)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != CACHE_FORMAT or manifest.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')} is not "
            f"{CACHE_FORMAT!r} version {CACHE_FORMAT_VERSION}; rebuild it with `gst data cache`"
        )
    return manifest


def open_token_cache(cache_dir: str | Path, *, tokenizers_dir: str | Path | None = None) -> TokenCache:
    """Open a cache read-only (memory-mapped). With ``tokenizers_dir``, the tokenizers found there must be
    the ones the cache was built with (content hashes), else ValueError."""
    root = Path(cache_dir)
    manifest = read_manifest(root)
    if tokenizers_dir is not None:
        check_tokenizers(manifest, tokenizer_fingerprint(tokenizers_dir), root)
    splits = {}
    for name, entry in manifest["splits"].items():
        arrays = {}
        for key, spec in entry["arrays"].items():
            path = root / name / f"{key}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing from the cache; rebuild it with `gst data cache`")
            array = np.load(path, mmap_mode="r")
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise ValueError(
                    f"{path}: {array.dtype} {list(array.shape)} but the manifest says "
                    f"{spec['dtype']} {spec['shape']}; the cache is damaged, rebuild it"
                )
            arrays[key] = array
        splits[name] = CacheSplit(
            name=name,
            scenes=list(entry["scenes"]),
            scene_hw=[tuple(hw) for hw in entry["scene_hw"]],
            crop=manifest["config"]["crop"],
            **arrays,
        )
    return TokenCache(root=root, manifest=manifest, splits=splits)


__all__ = [
    "CacheConfig",
    "CacheSplit",
    "TokenCache",
    "baseline_summary",
    "build_token_cache",
    "find_scene_dirs",
    "open_token_cache",
    "read_manifest",
]
