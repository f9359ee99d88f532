"""Training the focal reader (``gst.model.focal_reader``) on single views of scene folders.

Views are read from scene folders (``transforms.json`` + images; ``gst data synth`` writes them) and
resized with the loaders' antialiased ``crop_resize`` to the reader's size (square scenes: fx / W is
unchanged). Targets: log(fx / W). Loss: smooth-L1 (beta 0.05) on the log; AdamW, cosine decay over a
budget of process CPU-minutes; horizontal flips (focal-neutral) on half the views.

``colour`` (``colour_jitter``): each training view's colour channels shuffled and each scaled by a gain
in [0.7, 1.3]: focal-neutral, so that the reader cannot tie a palette (a sky colour, a ground tint) to
the focal lengths of the few scenes it saw it in.

``zoom`` > 1: each training view is, with probability one half, a crop of side 1/s of the view (s
log-uniform in [1, zoom], anywhere in the view) resized back, its target log(fx / W) + log s: the same
scene seen through a longer lens, so that the reader cannot tie a scene's look to its focal length. The
views are then kept at twice the reader's size and every training view (cropped or not) is shrunk by the
same antialiased resize.

Choosing the weight (``choose_weight``): the pose head of a checkpoint read on pairs of validation scenes
(``head-sym``'s forward reading, the target's log focal) and the reader on the same targets; the weight
with the lowest median relative error on a grid of 0, 0.05, ..., 1.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gst.data.loaders import load_scene
from gst.data.views import crop_resize
from gst.model.focal_reader import FocalReader

WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def scene_folders(root: str | Path, num_scenes: int | None = None) -> list[Path]:
    """The first ``num_scenes`` scene folders under ``root`` in name order (all when None), as the
    evaluation finds them (``gst.eval.data.discover_scene_dirs``)."""
    from gst.eval.data import discover_scene_dirs

    return discover_scene_dirs(root)[:num_scenes]


def load_views(
    root: str | Path, num_scenes: int | None, size: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every view of the first ``num_scenes`` scenes under ``root``: images (N, 3, size, size) uint8,
    log(fx / W) (N,) float32, and each view's scene index."""
    images, targets, scene_of = [], [], []
    for s, folder in enumerate(scene_folders(root, num_scenes)):
        scene = load_scene(folder)
        img, K = crop_resize(scene.load_images(), scene.K.float(), (size, size))
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        targets.append((K[:, 0, 0] / size).log())
        scene_of += [s] * len(img)
    return torch.cat(images), torch.cat(targets), scene_of


def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 views (N, 3, S, S) -> (N, 3, size, size) uint8 by the antialiased bilinear resize."""
    x = nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def zoom_batch(
    x: torch.Tensor, y: torch.Tensor, size: int, zoom: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Views (B, 3, S, S) float and their log(fx / W) (B,) -> each, with probability one half, cropped
    to side S / s (s log-uniform in [1, zoom], anywhere in the view), then all shrunk to ``size``;
    targets + log s (the exact scale of the rounded crop)."""
    B, S = len(x), x.shape[-1]
    log_s = torch.rand(B, generator=generator) * math.log(zoom)
    log_s = torch.where(torch.rand(B, generator=generator) < 0.5, log_s, torch.zeros(B))
    out = []
    for i in range(B):
        side = max(size, round(S / math.exp(float(log_s[i]))))
        r0, c0 = torch.randint(0, S - side + 1, (2,), generator=generator).tolist()
        crop = x[i : i + 1, :, r0 : r0 + side, c0 : c0 + side]
        out.append(nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True))
        log_s[i] = math.log(S / side)
    return torch.cat(out), y + log_s


def colour_jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Views (B, 3, S, S) float in [0, 1] -> each with its channels in a random order and each channel
    scaled by a gain drawn uniformly from [0.7, 1.3], clipped to [0, 1]."""
    B = len(x)
    order = torch.argsort(torch.rand(B, 3, generator=generator), dim=1)  # (B, 3) a permutation per view
    gain = 0.7 + 0.6 * torch.rand(B, 3, 1, 1, generator=generator)
    shuffled = torch.gather(x, 1, order[:, :, None, None].expand_as(x))
    return (shuffled * gain).clamp(0.0, 1.0)


def cpu_budget(
    opt: torch.optim.Optimizer, lr: float, minutes: float, max_steps: int | None = None
) -> Iterator[float]:
    """Yield once per update while this process's CPU time stays within ``minutes`` (and fewer than
    ``max_steps`` updates were made), first setting ``opt``'s learning rate to a cosine decay from
    ``lr`` over the budget; yields the CPU-minutes used so far."""
    start, budget, steps = time.process_time(), 60.0 * minutes, 0
    while (used := time.process_time() - start) < budget and (max_steps is None or steps < max_steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * used / budget))
        yield used / 60.0
        steps += 1


def median_interval_by_scene(err: np.ndarray, scene_of: list[int], seed: int = 0) -> list[float]:
    """95 % interval of the median of per-view errors over 1,000 resamples of whole scenes."""
    by_scene = [err[np.array(scene_of) == s] for s in sorted(set(scene_of))]
    rng = np.random.default_rng(seed)
    meds = [np.median(np.concatenate([by_scene[i] for i in rng.integers(0, len(by_scene), len(by_scene))]))
            for _ in range(1000)]  # fmt: skip
    return [float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))]


def train_focal_reader(
    net: FocalReader,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    minutes: float,
    zoom: float = 1.0,
    colour: bool = False,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Train ``net`` for ``minutes`` of this process's CPU time (or until ``max_steps``) on uint8 views at
    the reader's size (at twice it with ``zoom`` > 1); ``colour``: ``colour_jitter`` on every view.
    Returns the number of updates."""
    size = net.config.image_size
    want = 2 * size if zoom > 1.0 else size
    if zoom < 1.0:
        raise ValueError(f"zoom must be at least 1 (1: no zoom), got {zoom}")
    if images.shape[-1] != want:
        raise ValueError(
            f"views must be {want} px for zoom {zoom} and a {size} px reader, got {images.shape[-1]}"
        )
    torch.manual_seed(seed)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    rng, steps = torch.Generator().manual_seed(seed), 0
    for used in cpu_budget(opt, lr, minutes, max_steps):
        idx = torch.randint(0, len(images), (batch,), generator=rng)
        x, y = images[idx].float() / 255, targets[idx]
        if zoom > 1.0:
            x, y = zoom_batch(x, y, size, zoom, rng)
        x = torch.where(torch.rand(batch, 1, 1, 1, generator=rng) < 0.5, x, x.flip(-1))  # focal-neutral
        if colour:
            x = colour_jitter(x, rng)
        loss = nn.functional.smooth_l1_loss(net(x), y, beta=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if log is not None and steps % 1000 == 0:
            log(f"update {steps}: loss {loss.item():.4f}, {used:.1f} CPU-min")
    net.eval()
    return steps


def relative_errors(log_pred: torch.Tensor | np.ndarray, log_true: torch.Tensor | np.ndarray) -> np.ndarray:
    """|f_pred - f| / f from log focal lengths (as ``gst.geometry.errors.focal_error`` for fx = fy)."""
    return np.abs(np.expm1(np.asarray(log_pred, dtype=np.float64) - np.asarray(log_true, dtype=np.float64)))


def write_results(
    out: str | Path,
    result: dict,
    predictions: str | Path | None = None,
    scenes_root: str | Path | None = None,
    scene_of: list[int] | None = None,
    pred: torch.Tensor | None = None,
    true: torch.Tensor | None = None,
) -> None:
    """A probe's results JSON at ``out`` and, with ``predictions``, every view's reading as JSON lines
    (scene folder name under ``scenes_root``, view index, true and predicted log(fx / W)); printed too."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    if predictions:
        folders, views = scene_folders(scenes_root), {}
        with open(predictions, "w") as f:
            for s, p, t in zip(scene_of, pred.tolist(), true.tolist(), strict=True):
                v = views[s] = views.get(s, -1) + 1
                f.write(json.dumps({"scene": folders[s].name, "view": v, "true": t, "pred": p}) + "\n")
    print(json.dumps(result, indent=1))


def choose_weight(head: np.ndarray, reader: np.ndarray, true: np.ndarray) -> tuple[float, dict[str, float]]:
    """The weight of the reader in ``combine_log_focal`` with the lowest median relative error over the
    given readings (N,) of log(fx / W); also every grid weight's median error."""
    medians = {
        f"{w:.2f}": float(np.median(relative_errors((1 - w) * head + w * reader, true))) for w in WEIGHT_GRID
    }
    best = min(WEIGHT_GRID, key=lambda w: (medians[f"{w:.2f}"], w))
    return float(best), medians
