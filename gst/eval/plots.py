"""Report figures (matplotlib, Agg backend: no display needed). Each function writes one PNG.

Glossary: N pairs, G pairs shown, M methods, H/W pixels.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from gst.geometry.conventions import invert_rigid  # noqa: E402

_COLOURS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _cdf(ax, errors: np.ndarray, label: str, colour: str) -> None:
    e = np.sort(np.where(np.isfinite(errors), errors, 180.0))
    ax.step(
        np.concatenate([[0.0], e]), np.arange(len(e) + 1) / len(e), where="post", label=label, color=colour
    )


def pose_error_cdfs(method_rows: dict[str, list[dict]], path: Path) -> None:
    """CDFs of rotation, translation-direction and max(rot, trans) errors, one curve per method."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    keys = (
        ("rot_err_deg", "rotation error (deg)"),
        ("trans_err_deg", "translation direction error (deg)"),
        (None, "max(rotation, translation) error (deg)"),
    )
    for ax, (key, title) in zip(axes, keys, strict=True):
        for m, (name, rows) in enumerate(method_rows.items()):
            if key is None:
                errs = np.asarray([max(r["rot_err_deg"], r["trans_err_deg"]) for r in rows])
            else:
                errs = np.asarray([r[key] for r in rows])
            _cdf(ax, errs, name, _COLOURS[m % len(_COLOURS)])
        for thr in (5, 15, 30):
            ax.axvline(thr, color="0.85", lw=0.8, zorder=0)
        ax.set(xlim=(0, 180), ylim=(0, 1), xlabel=title, ylabel="fraction of pairs (failures at 180)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_vs_baseline(method_rows: dict[str, list[dict]], path: Path) -> None:
    """max(rot, trans) error against the pair's baseline angle, one colour per method."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, (name, rows) in enumerate(method_rows.items()):
        x = [r["baseline_angle_deg"] for r in rows]
        y = [min(max(r["rot_err_deg"], r["trans_err_deg"]), 180.0) for r in rows]
        ax.scatter(x, y, s=10, alpha=0.6, label=name, color=_COLOURS[m % len(_COLOURS)])
    ax.set(xlabel="baseline angle (deg)", ylabel="max(rot, trans) error (deg)", ylim=(0, 185))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metric_vs_baseline(method_rows: dict[str, list[dict]], key: str, label: str, path: Path) -> None:
    """A per-pair image metric against the baseline angle (non-finite values are left out of the plot)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, (name, rows) in enumerate(method_rows.items()):
        pts = [(r["baseline_angle_deg"], r[key]) for r in rows if r[key] is not None and np.isfinite(r[key])]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.scatter(x, y, s=10, alpha=0.6, label=name, color=_COLOURS[m % len(_COLOURS)])
    ax.set(xlabel="baseline angle (deg)", ylabel=label)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def baseline_histogram_plot(angles: list[float], edges: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(angles, bins=edges, color="tab:gray", edgecolor="black")
    ax.set(xlabel="baseline angle (deg)", ylabel="pairs", title=f"{len(angles)} evaluated pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _frustum_lines(
    w2c_rel: torch.Tensor, K: torch.Tensor, hw: tuple[int, int], depth: float
) -> list[np.ndarray]:
    """Line segments (2, 3) of a camera frustum in the observed camera's frame."""
    H, W = hw
    corners_px = torch.tensor(
        [[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]], dtype=torch.float64
    )
    homog = torch.cat([corners_px, torch.ones(4, 1, dtype=torch.float64)], dim=1)  # (4, 3)
    rays = homog @ torch.linalg.inv(K.double()).T  # (4, 3) camera-frame points at z = 1
    pts_cam = torch.cat([torch.zeros(1, 3, dtype=torch.float64), rays * depth], dim=0)  # (5, 3)
    c2w = invert_rigid(w2c_rel.double())
    pts = (pts_cam @ c2w[:3, :3].T + c2w[:3, 3]).numpy()  # (5, 3) in the observed frame
    segs = [np.stack([pts[0], pts[i]]) for i in range(1, 5)]
    segs += [np.stack([pts[i], pts[i % 4 + 1]]) for i in range(1, 5)]
    return segs


def frusta(
    pairs: list[dict],
    method_rows: dict[str, list[dict]],
    method_scale_known: dict[str, bool],
    path: Path,
    max_pairs: int = 6,
) -> None:
    """Observed (black), true target (green) and predicted target cameras, in the observed frame.

    Predictions of scale-free methods are drawn at the true baseline length (as they are scored).
    """
    from gst.eval.pose_eval import rescale_to_baseline

    shown = min(max_pairs, len(pairs))
    cols = min(3, shown)
    rows_n = (shown + cols - 1) // cols
    fig = plt.figure(figsize=(5 * cols, 4.6 * rows_n))
    for k in range(shown):
        p = pairs[k]
        ax = fig.add_subplot(rows_n, cols, k + 1, projection="3d")
        w2c_true = torch.tensor(p["w2c_rel_true"], dtype=torch.float64)
        K_tgt = torch.tensor(p["K_tgt"], dtype=torch.float64)
        hw = tuple(p["image_hw"])
        baseline = float(torch.linalg.vector_norm(w2c_true[:3, 3]))
        depth = 0.35 * max(baseline, 1e-6)
        cams = [
            ("observed", torch.eye(4, dtype=torch.float64), torch.tensor(p["K_obs"]), "black"),
            ("true", w2c_true, K_tgt, "tab:green"),
        ]
        for m, (name, rows) in enumerate(method_rows.items()):
            r = rows[k]
            if r["failed"]:
                continue
            w2c = torch.tensor(r["w2c_rel_pred"], dtype=torch.float64)
            if not method_scale_known[name]:
                w2c = rescale_to_baseline(w2c, baseline)
            K = torch.tensor(r["K_tgt_pred"]) if r["K_tgt_pred"] is not None else K_tgt
            cams.append((name, w2c, K, _COLOURS[m % len(_COLOURS)]))
        for _name, w2c, K, colour in cams:
            for seg in _frustum_lines(w2c, K, hw, depth):
                # plotted as (x, z, -y): the observed camera's up (-y in OpenCV) is the plot's vertical
                ax.plot(seg[:, 0], seg[:, 2], -seg[:, 1], color=colour, lw=1.2)
        failed = [n for n, rows in method_rows.items() if rows[k]["failed"]]
        title = f"{p['scene']} {p['obs']}->{p['tgt']} ({p['baseline_angle_deg']:.0f} deg)"
        ax.set_title(title + (f"\nfailed: {', '.join(failed)}" if failed else ""), fontsize=9)
        ax.set(xlabel="x (right)", ylabel="z (forward)", zlabel="-y (up)")
        ax.view_init(elev=25, azim=-65)
        _equal_axes(ax)
    # one legend for the figure: a method that failed on the first pair still gets its colour listed
    names = [("observed", "black"), ("true", "tab:green")]
    names += [(n, _COLOURS[m % len(_COLOURS)]) for m, n in enumerate(method_rows)]
    handles = [Line2D([0], [0], color=c, lw=1.5, label=n) for n, c in names]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _equal_axes(ax) -> None:
    lims = np.array([ax.get_xlim3d(), ax.get_ylim3d(), ax.get_zlim3d()])
    centre, radius = lims.mean(1), (lims[:, 1] - lims[:, 0]).max() / 2
    ax.set_xlim3d(centre[0] - radius, centre[0] + radius)
    ax.set_ylim3d(centre[1] - radius, centre[1] + radius)
    ax.set_zlim3d(centre[2] - radius, centre[2] + radius)


def view_grid(
    observed: list[torch.Tensor],
    predictions: dict[str, list[torch.Tensor]],
    targets: list[torch.Tensor],
    captions: list[str],
    path: Path,
) -> None:
    """Rows: pairs. Columns: observed, each method's prediction, true target."""
    columns = ["observed", *predictions.keys(), "true target"]
    n = len(observed)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 2.3 * n), squeeze=False)
    for i in range(n):
        images = [observed[i], *(p[i] for p in predictions.values()), targets[i]]
        for j, img in enumerate(images):
            ax = axes[i, j]
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
        axes[i, 0].set_ylabel(captions[i], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
