"""`gst demo`: the whole system in under a minute on a laptop CPU, and the example images it runs on.

The demo loads the default checkpoint (assets/gst-tiny), then on the example views in assets/examples:
estimates the pose of view B seen from view A (beside the true relative pose), synthesizes views along a
small orbit around what A looks at (with ``warp=1`` where the checkpoint reads depth: A's pixels
moved to the new camera where they land, generated pixels elsewhere), samples cameras and views jointly
(warped the same way, each to its sampled camera),
asks a spatial question about A, and writes one summary PNG (plus results.json) whose path it prints.

Examples (``make_examples``, ``gst demo --make-examples``): one procedural-world scene (gst.data.synth,
seed ``EXAMPLES_SEED``, never used for training: the training and held-out worlds use other seeds)
rendered at 128x128; three views are kept: A (observed), B (20-45 degrees of baseline from A) and C
(45-80 degrees), each with at least two objects visible in A. ``cameras.json`` holds their K and w2c in
the world frame (OpenCV convention, metres), the true relative poses, the orbit radius (A's distance to
the scene centre) and a generated question about A with its answer (gst.data.qa).

Glossary: S samples, H/W pixels.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
EXAMPLES_FILE = "cameras.json"
EXAMPLES_FORMAT = "gst.examples.v1"
EXAMPLES_SEED = 7  # a procedural-world seed no training or evaluation set uses
ORBIT_AZIMUTHS_DEG = (-20.0, -10.0, 10.0, 20.0)
_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:purple",
    "tab:red",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


# ---- examples ----


def _pick_views(scene, records) -> tuple[int, int, int, dict] | None:
    """(A, B, C, question record) or None: A has a single-view question, B / C lie 20-45 / 45-80 degrees
    of baseline away with two objects visible in both."""
    from gst.data.pairs import baseline_angles, covisible_counts

    angles, _ = baseline_angles(scene.w2c)
    covis = covisible_counts(scene, 0.2)
    for rec in sorted(records, key=lambda r: (r.family != "counting", r.id)):
        if len(rec.views) != 1:
            continue
        a = rec.views[0]
        near = [v for v in range(scene.num_views) if 20 <= angles[a, v] <= 45 and covis[a, v] >= 2]
        far = [v for v in range(scene.num_views) if 45 < angles[a, v] <= 80 and covis[a, v] >= 2]
        if near and far:
            return a, near[0], far[0], rec
    return None


def make_examples(
    out_dir: str | Path = EXAMPLES_DIR, *, seed: int = EXAMPLES_SEED, resolution: int = 128
) -> Path:
    """Render the example scene and write the three example views and cameras.json (module docstring).

    Needs the renderer (moderngl on EGL). Deterministic in (seed, resolution) on one Mesa build.
    """
    from gst.data.loaders import load_scene
    from gst.data.pairs import scene_centre
    from gst.data.qa import generate_scene_qa
    from gst.data.synth import SynthConfig, generate_dataset
    from gst.geometry import camera_centers, relative_w2c

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        from gst.data.synth.render import Renderer

        config = SynthConfig(num_scenes=1, views_per_scene=24, image_hw=(resolution, resolution), seed=seed)
        renderer = Renderer()
        try:
            generate_dataset(config, Path(tmp), renderer=renderer)
        finally:
            renderer.release()
        scene = load_scene(Path(tmp) / "scene_00000")
        records, _ = generate_scene_qa(scene, seed=0, phrasings="train")
        picked = _pick_views(scene, records)
        if picked is None:
            raise ValueError(f"seed {seed}: no view triple with a question; try another --seed")
        a, b, c, rec = picked
        out.mkdir(parents=True, exist_ok=True)
        views = []
        for name, v in zip("abc", (a, b, c), strict=True):
            shutil.copyfile(scene.image_paths[v], out / f"view_{name}.png")
            views.append(
                {
                    "file": f"view_{name}.png",
                    "view": v,
                    "K": scene.K[v].tolist(),
                    "w2c": scene.w2c[v].tolist(),
                }
            )
        w2c = scene.w2c.double()
        centre = torch.from_numpy(scene_centre(w2c))
        doc = {
            "format": EXAMPLES_FORMAT,
            "source": {
                "generator": "gst.data.synth",
                "seed": seed,
                "image_hw": [resolution, resolution],
                "views_per_scene": 24,
                "scene": "scene_00000",
                "command": f"gst demo --make-examples --examples-seed {seed}",
            },
            "convention": "OpenCV camera frame, world-to-camera w2c, K in pixels (pixel-centre), metres",
            "image_hw": [resolution, resolution],
            "views": views,
            "relative": {f"a_to_{n}": relative_w2c(w2c[a], w2c[v]).tolist() for n, v in (("b", b), ("c", c))},
            "orbit_radius_m": float((camera_centers(w2c[a]) - centre).norm()),
            "question": {
                "text": rec.question,
                "answer": rec.answer_text,
                "family": rec.family,
                "kind": rec.kind,
                "answer_type": rec.answer.type,
                **({"unit": rec.answer.unit} if rec.answer.unit else {}),
                **({"options": list(rec.answer.options)} if rec.answer.options else {}),
                "views": ["a"],
            },
        }
    (out / EXAMPLES_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    return out


def load_examples(folder: str | Path = EXAMPLES_DIR) -> dict[str, Any]:
    """cameras.json with absolute image paths and tensors ("K", "w2c" per view; "relative" poses)."""
    folder = Path(folder)
    path = folder / EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; regenerate the examples with `gst demo --make-examples`")
    doc = json.loads(path.read_text())
    if doc.get("format") != EXAMPLES_FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r} is not {EXAMPLES_FORMAT!r}")
    for view in doc["views"]:
        view["path"] = folder / view["file"]
        view["K"], view["w2c"] = torch.tensor(view["K"]).double(), torch.tensor(view["w2c"]).double()
    doc["relative"] = {k: torch.tensor(v).double() for k, v in doc["relative"].items()}
    return doc


# ---- figures ----


def frustum_segments(
    w2c: torch.Tensor, K: torch.Tensor, hw: tuple[int, int], depth: float
) -> list[np.ndarray]:
    """Line segments (2, 3) of a camera frustum in the frame w2c maps from (the observed camera's)."""
    from gst.geometry import invert_rigid

    H, W = hw
    corners = torch.tensor(
        [[-0.5, -0.5, 1], [W - 0.5, -0.5, 1], [W - 0.5, H - 0.5, 1], [-0.5, H - 0.5, 1]], dtype=torch.float64
    )
    rays = corners @ torch.linalg.inv(K.double()).T  # (4, 3) camera-frame points at z = 1
    pts_cam = torch.cat([torch.zeros(1, 3, dtype=torch.float64), rays * depth])  # (5, 3)
    c2w = invert_rigid(w2c.double())
    pts = (pts_cam @ c2w[:3, :3].T + c2w[:3, 3]).numpy()  # (5, 3)
    return [np.stack([pts[0], pts[i]]) for i in range(1, 5)] + [
        np.stack([pts[i], pts[i % 4 + 1]]) for i in range(1, 5)
    ]


def draw_cameras(ax, cameras: list[tuple[str, torch.Tensor, torch.Tensor, tuple[int, int], str]]) -> None:
    """3D frusta of (label, w2c, K, image_hw, colour) on a matplotlib 3D axis; plotted as (x, z, -y) so
    the observed camera's up is the plot's vertical."""
    from matplotlib.lines import Line2D

    reach = max([float(torch.linalg.vector_norm(torch.linalg.inv(w)[:3, 3])) for _, w, *_ in cameras] + [1.0])
    for _, w2c, K, hw, colour in cameras:
        for seg in frustum_segments(w2c, K, hw, 0.25 * reach):
            ax.plot(seg[:, 0], seg[:, 2], -seg[:, 1], color=colour, lw=1.1)
    lims = np.array([ax.get_xlim3d(), ax.get_ylim3d(), ax.get_zlim3d()])
    centre, radius = lims.mean(1), (lims[:, 1] - lims[:, 0]).max() / 2
    for setter, c in zip((ax.set_xlim3d, ax.set_ylim3d, ax.set_zlim3d), centre, strict=True):
        setter(c - radius, c + radius)
    ax.set(xlabel="x (right)", ylabel="z (forward)", zlabel="-y (up)")
    ax.tick_params(labelsize=6)
    ax.view_init(elev=25, azim=-65)
    handles = [Line2D([0], [0], color=col, lw=1.5, label=lab) for lab, *_, col in cameras]
    ax.legend(handles=handles, fontsize=6, loc="upper left")


def _show(ax, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def save_sample_figures(result, out_dir: Path, title: str = "") -> tuple[Path, Path]:
    """``gst sample`` figures: a grid (observed + S views, each with its camera summary) and the frusta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [result.observed, *result.images]
    cols = min(5, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(images):
            ax.axis("off")
            continue
        text = "observed" if k == 0 else f"sample {k - 1}\n" + _wrap(result.cameras[k - 1].summary, 34)
        _show(ax, images[k], text)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    grid = out_dir / "samples.png"
    fig.savefig(grid, dpi=110)
    plt.close(fig)
    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(111, projection="3d")
    hw = tuple(result.observed.shape[-2:])
    cams = [("observed", torch.eye(4, dtype=torch.float64), result.K_obs, hw, "black")]
    cams += [
        (f"sample {i}", c.w2c, c.K_tgt, c.image_hw, _COLOURS[i % len(_COLOURS)])
        for i, c in enumerate(result.cameras)
    ]
    draw_cameras(ax, cams)
    ax.set_title("sampled cameras in the observed camera's frame (m)", fontsize=8)
    fig.tight_layout()
    frusta = out_dir / "cameras.png"
    fig.savefig(frusta, dpi=110)
    plt.close(fig)
    return grid, frusta


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _warped(fraction: float | None) -> str:
    """A figure title's note of how much of a view is A's pixels, warped (None: no warp)."""
    return "" if fraction is None else f", {100 * fraction:.0f} % warped"


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write a (3, H, W) image in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


# ---- the demo ----


def run_demo(
    gst,
    examples: dict[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_samples: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every task on the examples and write ``out_dir``/summary.png and results.json (module docstring).

    ``gst``: a ``gst.api.GST``. Returns the results (JSON-able), including wall times per step.
    """
    from tqdm.auto import tqdm

    from gst.api import orbit_camera
    from gst.api_types import describe_camera
    from gst.geometry import camera_centers, rotation_error_deg, translation_direction_error_deg

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a, b = examples["views"][0], examples["views"][1]
    hw = tuple(examples["image_hw"])
    bar = tqdm(total=4 + len(ORBIT_AZIMUTHS_DEG), desc="gst demo", unit="step", disable=not progress)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    pose = gst.estimate_pose(a["path"], b["path"], seed=seed)
    true_rel = examples["relative"]["a_to_b"]
    _, true_summary = describe_camera(true_rel, b["K"], hw)
    errors = {
        "rotation_deg": float(rotation_error_deg(pose.w2c[:3, :3][None], true_rel[:3, :3][None])[0]),
        "translation_direction_deg": float(
            translation_direction_error_deg(pose.w2c[:3, 3][None], true_rel[:3, 3][None])[0]
        ),
        "centre_m": float((camera_centers(pose.w2c) - camera_centers(true_rel)).norm()),
        "focal_rel": float(abs(pose.K_tgt[0, 0] - b["K"][0, 0]) / b["K"][0, 0]),
    }
    seconds["pose"] = time.perf_counter() - start
    bar.update()

    orbit = []
    for az in ORBIT_AZIMUTHS_DEG:
        t = time.perf_counter()
        camera = orbit_camera(az, 0.0, radius_m=examples["orbit_radius_m"])
        view = gst.synthesize_view(
            a["path"], camera, K_obs=a["K"], seed=seed, warp=1.0 if gst.reads_depth else 0.0
        )
        orbit.append((az, view))
        seconds[f"view_azimuth_{az:+.0f}"] = time.perf_counter() - t
        bar.update()

    t = time.perf_counter()
    samples = gst.sample(
        a["path"], num_samples, K_obs=a["K"], seed=seed, warp=1.0 if gst.reads_depth else 0.0
    )
    seconds["joint_samples"] = time.perf_counter() - t
    bar.update()

    t = time.perf_counter()
    question = examples["question"]
    reply = gst.chat(question["text"], images=[a["path"]], max_new_tokens=48, allow_segments=False)
    reader_answer = _reader_answer(gst, question, a["path"])
    seconds["question"] = time.perf_counter() - t
    bar.update()

    t = time.perf_counter()
    seen = gst.decode_images(torch.cat([gst.prepare(v["path"]).ids for v in (a, b)]))  # what the model reads
    figure = _summary_figure(
        examples, seen, pose, true_summary, errors, orbit, samples, reply.text, out, reader_answer
    )
    seconds["figure"] = time.perf_counter() - t
    bar.update()
    bar.close()
    results = {
        "checkpoint": str(gst.checkpoint),
        "examples": str(Path(a["path"]).parent),
        "seed": seed,
        "pose": {"estimate": pose.to_dict(), "true_summary": true_summary, "errors": errors},
        "orbit": [
            {
                "azimuth_deg": az,
                "camera": v.camera.summary,
                "warped_fraction": v.warped_fraction,
            }
            for az, v in orbit
        ],
        "samples": [c.to_dict() for c in samples.cameras],
        "samples_warped_fraction": samples.warped_fractions,
        "question": {**question, "model_answer": reply.text, "reader_answer": reader_answer},
        "seconds": seconds,
        "total_seconds": time.perf_counter() - start,
        "figure": str(figure),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _reader_answer(gst, question: dict, image: Any) -> str | None:
    """The checkpoint's answer reader (``answer_reader/``, gst.model.answer_reader) on the example question,
    in the question's answer form; None when the checkpoint ships none or the examples predate the form."""
    from gst.model.answer_reader import ANSWER_READER_DIR

    if gst.checkpoint is None or not (Path(gst.checkpoint) / ANSWER_READER_DIR).is_dir():
        return None
    if "answer_type" not in question:
        return None
    from gst.eval.qa_reader import AnswerReaderPredictor

    reader = AnswerReaderPredictor(gst.checkpoint, gst=gst, progress=False)
    return reader.ask(
        question["text"], [image], question["answer_type"], question.get("unit"), question.get("options")
    )


def _summary_figure(
    examples, seen, pose, true_summary, errors, orbit, samples, answer, out: Path, reader_answer=None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gst.data.scene import load_rgb

    a, b = examples["views"][0], examples["views"][1]
    hw = tuple(examples["image_hw"])
    cols = max(6, len(orbit) + 2, len(samples.cameras) + 2)
    fig = plt.figure(figsize=(2.3 * cols, 10.2))
    grid = fig.add_gridspec(4, cols, height_ratios=[1, 1, 1, 0.32])
    _show(fig.add_subplot(grid[0, 0]), load_rgb(a["path"]), "A: observed")
    _show(fig.add_subplot(grid[0, 1]), seen[0], "A as the model reads it\n(decode(encode(A)))")
    _show(fig.add_subplot(grid[0, 2]), load_rgb(b["path"]), "B: target")
    text = fig.add_subplot(grid[0, 3:5])
    text.axis("off")
    text.text(
        0,
        0.95,
        "Where is B's camera, seen from A?\n\nestimated: "
        + _wrap(pose.summary, 48)
        + "\n\ntrue: "
        + _wrap(true_summary, 48)
        + f"\n\nerrors: rotation {errors['rotation_deg']:.1f} deg, translation direction "
        f"{errors['translation_direction_deg']:.1f} deg,\ncentre {errors['centre_m']:.2f} m, "
        f"focal {100 * errors['focal_rel']:.0f} %",
        fontsize=7.5,
        va="top",
        family="monospace",
    )
    ax = fig.add_subplot(grid[0, 5], projection="3d")
    draw_cameras(
        ax,
        [
            ("A", torch.eye(4, dtype=torch.float64), a["K"], hw, "black"),
            ("B true", examples["relative"]["a_to_b"], b["K"], hw, "tab:green"),
            ("B estimated", pose.w2c, pose.K_tgt, pose.image_hw, "tab:red"),
        ],
    )
    for k, (az, view) in enumerate(orbit):
        _show(
            fig.add_subplot(grid[1, k]),
            view.image,
            f"orbit azimuth {az:+.0f} deg{_warped(view.warped_fraction)}\n" + _wrap(view.camera.summary, 30),
        )
    fractions = samples.warped_fractions or [None] * len(samples.cameras)
    for k, (cam, img, f) in enumerate(zip(samples.cameras, samples.images, fractions, strict=True)):
        _show(fig.add_subplot(grid[2, k]), img, f"joint sample {k}{_warped(f)}\n" + _wrap(cam.summary, 30))
    ax = fig.add_subplot(grid[2, len(samples.cameras)], projection="3d")
    draw_cameras(
        ax,
        [("A", torch.eye(4, dtype=torch.float64), a["K"], hw, "black")]
        + [
            (f"sample {i}", c.w2c, c.K_tgt, c.image_hw, _COLOURS[i % len(_COLOURS)])
            for i, c in enumerate(samples.cameras)
        ],
    )
    q = examples["question"]
    text = fig.add_subplot(grid[3, :])
    text.axis("off")
    shown = answer if len(answer) <= 120 else answer[:117] + "..."
    text.text(
        0,
        0.9,
        f"Q (about A): {q['text']}\nmodel: {shown!r}"
        + ("" if reader_answer is None else f"\nanswer reader: {reader_answer!r}")
        + f"\ntrue answer: {q['answer']}",
        fontsize=9,
        va="top",
        family="monospace",
    )
    fig.suptitle(
        f"GST demo: {examples['source']['generator']} seed {examples['source']['seed']}", fontsize=10
    )
    fig.subplots_adjust(left=0.03, right=0.97, top=0.92, bottom=0.02, wspace=0.25, hspace=0.55)
    path = out / "summary.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "EXAMPLES_DIR",
    "EXAMPLES_FORMAT",
    "draw_cameras",
    "frustum_segments",
    "load_examples",
    "make_examples",
    "run_demo",
    "save_png",
    "save_sample_figures",
]
