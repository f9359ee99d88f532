"""Results JSON and the Markdown report of an evaluation run.

``results.json`` holds everything needed to check a number: the command, data path and split, seeds,
the pair rule and every pair (with its true relative camera), metric implementations and library
versions, and per method its source (baseline name, prediction-file or checkpoint hash), config,
summary and per-pair rows. Non-finite floats (a failure's infinite centre error, the PSNR of an exact
copy) are written as the strings "inf", "-inf", "nan" so the file is strict JSON.

Glossary: N pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gst.data.pairs import PairConfig, baseline_histogram, format_histogram
from gst.eval.data import EvalSet
from gst.hashing import update_with_file

PAIR_RULE = (
    "ordered (observed, target) views of one scene; baseline angle = angle at the scene centre "
    "(least-squares intersection of all optical axes) between the two camera centres, or between the "
    "optical axes where they are near parallel; kept within [min_baseline_deg, max_baseline_deg]; "
    "where object visibility metadata exists, >= min_covisible_objects objects visible "
    "(>= min_visible_fraction) in both views; drawn round-robin across scenes from per-scene shuffles "
    "(numpy default_rng(seed)); see gst.data.pairs"
)


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative paths and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        update_with_file(h, f)
    return h.hexdigest()


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# OpenCV ships as one of four distributions; whichever is installed provides cv2.
OPENCV_DISTRIBUTIONS = (
    "opencv-python-headless",
    "opencv-python",
    "opencv-contrib-python-headless",
    "opencv-contrib-python",
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries behind the numbers, read from package metadata (imports nothing)."""
    names = ("gst", "torch", "numpy", "torchmetrics", "lpips", "matplotlib")
    opencv = {n: _dist_version(n) for n in OPENCV_DISTRIBUTIONS}
    installed = {n: v for n, v in opencv.items() if v != "not installed"}
    return {
        "python": platform.python_version(),
        **{n: _dist_version(n) for n in names},
        **(installed or {"opencv-python-headless": "not installed"}),
    }


def jsonable(x: Any) -> Any:
    """Strict-JSON form: non-finite floats as strings, tensors and numpy values as lists / scalars."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if isinstance(x, float):
        return x
    return str(x)


def pairs_section(evalset: EvalSet, seed: int, config: PairConfig) -> dict:
    """The pair rule, seed, baseline-angle histogram and every pair with its true cameras."""
    edges, counts = baseline_histogram(evalset.pairs)
    rows = []
    for p in evalset.pairs:
        rows.append(
            {
                **p.to_dict(),
                "w2c_rel_true": evalset.w2c_rel(p).tolist(),
                "K_obs": evalset.K(p.scene_index, p.obs).tolist(),
                "K_tgt": evalset.K(p.scene_index, p.tgt).tolist(),
                "image_hw": list(evalset.image_hw(p.scene_index)),
            }
        )
    return {
        "rule": PAIR_RULE,
        "seed": seed,
        "config": config.__dict__,
        "num_pairs": len(rows),
        "baseline_angle_histogram": {"edges_deg": edges.tolist(), "counts": counts.tolist()},
        "rows": rows,
    }


def base_results(
    kind: str, evalset: EvalSet, data: dict, seed: int, config: PairConfig, metrics: dict
) -> dict:
    return {
        "kind": kind,
        "command": " ".join(sys.argv),
        "data": {
            **data,
            "num_scenes": len(evalset.scenes),
            "scenes": [s.name for s in evalset.scenes],
            "resolution": evalset.resolution,
        },
        "pairs": pairs_section(evalset, seed, config),
        "metric_implementations": metrics,
        "versions": library_versions(),
        "methods": {},
    }


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(jsonable(results), indent=1))


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return "-" if v is None else str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _header(results: dict) -> list[str]:
    d, p = results["data"], results["pairs"]
    hist = p["baseline_angle_histogram"]
    return [
        f"- command: `{results['command']}`",
        f"- data: `{d['path']}` (split {d.get('split')}), {d['num_scenes']} scene(s), resolution "
        f"{d['resolution'] or 'native'}",
        f"- pairs: {p['num_pairs']}, seed {p['seed']}, config {p['config']}",
        f"- pair rule: {p['rule']}",
        "",
        "Baseline angles of the evaluated pairs:",
        "",
        "```",
        format_histogram(np.asarray(hist["edges_deg"]), np.asarray(hist["counts"])),
        "```",
        "",
    ]


def pose_markdown(results: dict, figures: list[str]) -> str:
    lines = ["# Pose evaluation", "", *_header(results), "## Results", ""]
    cols = [
        "method",
        "source",
        "pairs",
        "failed",
        "RRA@5",
        "RRA@15",
        "RRA@30",
        "RTA@5",
        "RTA@15",
        "RTA@30",
        "AUC@30",
        "AUC@30 (sign-folded)",
        "med rot (deg)",
        "med trans (deg)",
        "med centre err (x baseline)",
        "focal err",
    ]
    rows = []
    for name, m in results["methods"].items():
        s = m["summary"]
        focal = _fmt(s["median_focal_err"]) if "median_focal_err" in s else s["focal_err"]
        rows.append(
            [
                name,
                m["source"],
                str(s["num_pairs"]),
                str(s["num_failed"]),
                *(
                    _fmt(s[k])
                    for k in (
                        "rra5",
                        "rra15",
                        "rra30",
                        "rta5",
                        "rta15",
                        "rta30",
                        "auc30",
                        "auc30_sign_folded",
                        "median_rot_err_deg",
                        "median_trans_err_deg",
                        "median_centre_err",
                    )
                ),
                focal,
            ]
        )
    bins = []
    for name, m in results["methods"].items():
        for b, v in m["summary"].get("by_baseline", {}).items():
            bins.append(
                [
                    name,
                    b,
                    str(v["num_pairs"]),
                    str(v["num_failed"]),
                    _fmt(v["rra15"]),
                    _fmt(v["rta15"]),
                    _fmt(v["auc30"]),
                ]
            )
    cols_bins = ["method", "baseline angle (deg)", "pairs", "failed", "RRA@15", "RTA@15", "AUC@30"]
    lines += [_table(cols, rows), "", "By baseline angle:", "", _table(cols_bins, bins), ""]
    lines += [
        "Notes:",
        "",
        "- Errors are those of the target camera relative to the observed one (observed = identity). "
        "RRA/RTA@t: fraction of pairs with error < t; AUC@30: VGGT's CO3D definition on max(rot, trans); "
        "failures count as 180 degrees.",
        "- Centre error is in units of the true baseline length. Methods without metric scale "
        "(scale_known = false) are rescaled to the TRUE baseline length first, which favours them.",
        "- focal err 'given': the method received the true intrinsics, so it has no focal error to report.",
        *_estimator_notes(results),
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _estimator_notes(results: dict) -> list[str]:
    """One line per classical method: its robust estimator (and fallbacks) and the OpenCV version."""
    out = []
    for name, m in results["methods"].items():
        c = m.get("config", {})
        if "estimator" in c:
            fallback = c.get("fallback_estimators") or []
            then = f", retried with {' then '.join(fallback)} where it fails" if fallback else ""
            opencv = c.get("opencv", "version not recorded")
            out.append(f"- {name}: essential matrix by {c['estimator']}{then} (OpenCV {opencv}).")
    return out


def nvs_markdown(results: dict, figures: list[str], lpips_description: str) -> str:
    lines = ["# View synthesis evaluation", "", *_header(results), "## Results", ""]
    cols = ["method", "source", "pairs", "failed", "PSNR (dB)", "SSIM", "LPIPS (alex)", "looks at target"]
    rows = []
    for name, m in results["methods"].items():
        s = m["summary"]
        lp = _fmt(s["lpips"]) if isinstance(s["lpips"], float) else "unavailable"
        rows.append(
            [
                name,
                m["source"],
                str(s["num_pairs"]),
                str(s["num_failed"]),
                _fmt(s["psnr"], 2),
                _fmt(s["ssim"]),
                lp,
                "yes (ceiling)" if s["uses_target_image"] else "no",
            ]
        )
    lines += [
        _table(cols, rows),
        "",
        "Notes:",
        "",
        "- Images in [0, 1]; PSNR and SSIM with data_range = 1.0 (torchmetrics); SSIM gaussian 11x11, "
        "sigma 1.5. Every method receives the true target camera.",
        f"- LPIPS: {lpips_description}",
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
