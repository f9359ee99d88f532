"""`gst eval pose` and `gst eval nvs`: score methods and baselines on the same pairs.

Methods per run (each scored by the same code on the same pairs):
- pose: ``--method sift`` (OpenCV SIFT + essential matrix, given intrinsics), ``--method prior``
  (a random training pair's relative pose; needs ``--train-data``), ``--method mean`` (the mean training
  relative pose for every pair, the best constant; needs ``--train-data``), ``--method regressor``
  (the siamese CNN of ``gst train regressor``, the learned baseline; needs ``--regressor DIR``; its
  training command and CPU-minutes go into results.json), ``--predictions FILE`` (any
  method, format in gst.eval.predictors), ``--checkpoint DIR`` (the world model, through gst.api:
  greedy camera decoding, metric translation);
- nvs: ``--method copy`` (the observed image), ``--method mean-colour`` (a flat image of its mean
  colour), ``--tokenizer DIR`` (decode(encode(target)) ceiling),
  ``--predictions FILE.npz``, ``--checkpoint DIR`` (the world model's view from the true target camera).

With ``--checkpoint`` (or ``--regressor``) and no ``--method``, only that model runs; add ``--method``
for baselines beside it (``--regressor`` implies ``--method regressor``).

``--json`` prints the results object (as results.json) on stdout; ``--out DIR`` writes report.md,
results.json and the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gst.api_commands import add_warp_argument

POSE_METHODS = ("sift", "prior", "mean", "regressor")
VIEW_METHODS = ("copy", "mean-colour")
GRID_PAIRS = 6  # pairs shown in the view grid and the frusta figure


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="a scene folder (transforms*.json) or a folder of scene folders"
    )
    p.add_argument(
        "--split", default=None, help="transforms_<split>.json to read (e.g. val for NeRF-synthetic)"
    )
    p.add_argument("--num-pairs", type=int, default=200, help="pairs to evaluate (default 200)")
    p.add_argument("--seed", type=int, default=0, help="pair-sampling seed (default 0)")
    p.add_argument("--resolution", type=int, default=None, help="resize images to this width (K scaled)")
    p.add_argument(
        "--scenes",
        choices=("all", "train", "val"),
        default="all",
        help="keep the scene folders of this hash split of --data (gst.data.pairs.scene_split; default all)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="val share of the hash split (default 0.1)"
    )
    p.add_argument(
        "--max-scenes", type=int, default=None, help="use only the first N scenes (sorted by name)"
    )
    p.add_argument(
        "--min-baseline", type=float, default=10.0, help="min baseline angle, degrees (default 10)"
    )
    p.add_argument(
        "--max-baseline", type=float, default=90.0, help="max baseline angle, degrees (default 90)"
    )
    p.add_argument(
        "--min-covisible",
        type=int,
        default=1,
        help="objects visible in both views, where metadata exists (default 1)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="world-model checkpoint folder, e.g. assets/gst-tiny (or a `gst train gst` run)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the world model (default cpu)")
    p.add_argument("--predictions", action="append", default=[], help="score a prediction file (repeatable)")
    p.add_argument("--json", action="store_true", help="print the results JSON object on stdout")
    p.add_argument("--out", default=None, help="write report.md, results.json and figures here")


def register_eval(sub: argparse._SubParsersAction) -> None:
    pose = sub.add_parser(
        "pose",
        help="relative pose: rotation, translation, centre, focal errors; RRA/RTA/AUC",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(pose)
    pose.add_argument(
        "--method",
        action="append",
        choices=POSE_METHODS,
        default=None,
        help="baseline(s) to run (repeatable; default: sift, plus prior with --train-data)",
    )
    pose.add_argument(
        "--train-data",
        default=None,
        help="training scenes the prior and mean baselines draw their poses from",
    )
    pose.add_argument("--train-split", default=None, help="split of --train-data (e.g. train)")
    pose.add_argument("--prior-samples", type=int, default=2000, help="training pairs prior/mean draw from")
    pose.add_argument("--sift-ratio", type=float, default=0.85, help="Lowe ratio for SIFT matching (0.85)")
    pose.add_argument(
        "--sift-contrast",
        type=float,
        default=0.01,
        help="SIFT contrastThreshold (default 0.01; OpenCV's 0.04)",
    )
    pose.add_argument("--ransac-px", type=float, default=1.0, help="RANSAC epipolar threshold, pixels")
    pose.add_argument(
        "--regressor",
        default=None,
        help="a `gst train regressor` run, checkpoint or export: the learned baseline (--method regressor)",
    )
    pose.add_argument(
        "--pose-readout",
        choices=("auto", "codes", "head", "head-sym"),
        default="auto",
        help="--checkpoint: decode camera codes greedily, or read the auxiliary pose head (models trained "
        "with loss.pose_weight > 0); head-sym: the head on both orders of the pair, the backward pose "
        "inverted and averaged in; auto (default): the head of a model with a convolutional reader, "
        "else the codes",
    )
    pose.add_argument(
        "--no-focal-reader",
        action="store_true",
        help="--checkpoint: the pose head's own focal length, without the checkpoint's focal reader",
    )
    pose.set_defaults(func=run_pose)

    nvs = sub.add_parser(
        "nvs",
        help="view synthesis: PSNR, SSIM, LPIPS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(nvs)
    nvs.add_argument(
        "--method",
        action="append",
        choices=VIEW_METHODS,
        default=None,
        help="baseline(s) to run (repeatable; default: copy)",
    )
    nvs.add_argument(
        "--tokenizer", default=None, help="image tokenizer checkpoint: adds the decode(encode) ceiling"
    )
    nvs.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="image-token sampling temperature of the world model (default 1: plain sampling)",
    )
    nvs.add_argument(
        "--samples",
        type=int,
        default=1,
        help="views sampled per pair; more than 1 scores their pixel mean, the posterior-mean estimate "
        "(higher PSNR, blurrier; default 1: one sampled view)",
    )
    add_warp_argument(nvs)
    nvs.add_argument(
        "--lpips-weights",
        default=None,
        help="torchvision AlexNet ImageNet weights (alexnet-owt-7be5be79.pth) for LPIPS",
    )
    nvs.set_defaults(func=run_nvs)


def _model_predictor(args: argparse.Namespace, kind: str) -> tuple[object, dict]:
    """The world model of --checkpoint as a pose or view predictor (gst.api), with its provenance."""
    from tqdm.auto import tqdm

    from gst.api import GST, GSTPosePredictor, GSTViewPredictor
    from gst.eval.report import sha256_of

    gst = GST.from_pretrained(args.checkpoint, device=args.device)
    bar = tqdm(total=args.num_pairs, desc=f"gst {kind}", unit="pair", disable=args.json, file=sys.stderr)
    if kind == "pose":
        readout = gst.resolve_readout(args.pose_readout)
        predictor = GSTPosePredictor(gst, seed=args.seed, progress=bar, readout=readout)
        decoding = {
            "codes": "greedy camera tokens",
            "head": "pose head readout",
            "head-sym": "pose head readout, both orders averaged",
        }[readout]
        if args.no_focal_reader:
            gst.focal_reader = None
        if gst.focal_reader is not None and readout != "codes":
            decoding += f"; focal length with the focal reader (weight {gst.focal_reader.config.weight:g})"
    else:
        from gst.model import SamplingConfig

        if args.samples < 1:
            raise SystemExit(f"gst eval nvs: --samples must be >= 1, got {args.samples}")
        sampling = SamplingConfig(temperature=args.temperature, top_k=0)  # refuses a negative temperature
        predictor = GSTViewPredictor(
            gst, sampling=sampling, num_samples=args.samples, seed=args.seed, progress=bar, warp=args.warp
        )
        decoding = f"sampled image tokens (temperature {args.temperature:g})"
        if args.samples > 1:
            decoding = f"pixel mean of {args.samples} views, each from {decoding}"
        if args.warp > 0:
            decoding += (
                f"; observed pixels warped with the model's cell depths, weight {args.warp:g} where they land"
            )
    meta = {
        "source": "world model checkpoint",
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "sha256": sha256_of(gst.checkpoint),
        "decoding": decoding,
    }
    return predictor, meta


def _setup(args: argparse.Namespace):
    from gst.data.pairs import PairConfig
    from gst.eval.data import build_evalset

    config = PairConfig(
        min_baseline_deg=args.min_baseline,
        max_baseline_deg=args.max_baseline,
        min_covisible_objects=args.min_covisible,
    )
    evalset = build_evalset(
        args.data,
        num_pairs=args.num_pairs,
        seed=args.seed,
        split=args.split,
        resolution=args.resolution,
        pair_config=config,
        max_scenes=args.max_scenes,
        scenes=args.scenes,
        val_fraction=args.val_fraction,
    )
    data = {
        "path": str(Path(args.data).resolve()),
        "split": args.split,
        "scene_split": args.scenes,
        "val_fraction": args.val_fraction,
    }
    return config, evalset, data


def _pose_predictors(args: argparse.Namespace, config) -> list[tuple[object, dict]]:
    from gst.eval.baselines import MeanPose, PriorPose, SiftEssentialPose
    from gst.eval.data import load_scenes
    from gst.eval.predictors import FilePosePredictor
    from gst.eval.report import sha256_of

    methods = args.method
    if methods is None:
        models = args.predictions or args.checkpoint or args.regressor
        methods = [] if models else ["sift"]
        if args.train_data is not None and not models:
            methods.append("prior")
    if args.regressor is not None:  # like --checkpoint, --regressor always runs
        methods = [*methods, "regressor"]
    out = []
    for m in dict.fromkeys(methods):
        if m == "regressor":
            out.append(_regressor_predictor(args))
        elif m == "sift":
            sift = SiftEssentialPose(
                ratio=args.sift_ratio,
                contrast_threshold=args.sift_contrast,
                ransac_threshold_px=args.ransac_px,
                seed=args.seed,
            )
            out.append((sift, {"source": "baseline", "config": sift.config()}))
        elif m in ("prior", "mean"):
            if args.train_data is None:
                raise ValueError(
                    f"--method {m} needs --train-data DIR (the scenes whose pair distribution it "
                    "samples; for NeRF-synthetic the same folder with --train-split train)"
                )
            train_scenes = _prior_scenes(args)
            train = load_scenes(
                args.train_data, split=args.train_split, scenes=train_scenes, val_fraction=args.val_fraction
            )
            prior = PriorPose.from_scenes(train, args.prior_samples, seed=args.seed + 1, config=config)
            method = prior if m == "prior" else MeanPose.from_prior(prior)
            out.append(
                (
                    method,
                    {
                        "source": "baseline",
                        "config": {
                            **method.config(),
                            "train_data": str(Path(args.train_data).resolve()),
                            "train_split": args.train_split,
                            "train_scene_split": train_scenes,
                        },
                    },
                )
            )
    if args.checkpoint is not None:
        out.append(_model_predictor(args, "pose"))
    for f in args.predictions:
        pred = FilePosePredictor(f)
        out.append(
            (pred, {"source": "predictions file", "file": str(Path(f).resolve()), "sha256": sha256_of(f)})
        )
    return out


def _regressor_predictor(args: argparse.Namespace) -> tuple[object, dict]:
    """The learned baseline of --regressor, with its provenance (training command, CPU-minutes)."""
    from gst.eval.regressor_predictor import RegressorPose

    if args.regressor is None:
        raise ValueError(
            "--method regressor needs --regressor DIR (a `gst train regressor` run, checkpoint or export)"
        )
    predictor = RegressorPose(args.regressor, device=args.device)
    return predictor, predictor.meta()


def _prior_scenes(args: argparse.Namespace) -> str:
    """Which hash split of --train-data the prior may use: never the evaluated scenes' views."""
    if Path(args.train_data).resolve() != Path(args.data).resolve():
        return "all"
    if args.scenes != "all":
        return "train" if args.scenes == "val" else "val"
    if args.train_split is None or args.train_split == args.split:
        raise ValueError(
            "--train-data is the evaluated --data: the prior must come from other views; pass "
            "--train-split (e.g. train, with --split val) or evaluate --scenes val of a folder of scenes"
        )
    return "all"


def run_pose(args: argparse.Namespace) -> int:
    from gst.eval.pose_eval import POSE_METRIC_IMPLEMENTATIONS, evaluate_pose, summarize_pose
    from gst.eval.report import base_results

    config, evalset, data = _setup(args)
    predictors = _pose_predictors(args, config)
    results = base_results("pose", evalset, data, args.seed, config, POSE_METRIC_IMPLEMENTATIONS)
    method_rows, predictions = {}, {}
    for predictor, meta in predictors:
        name = _unique(predictor.name, results["methods"])
        rows = evaluate_pose(evalset, predictor)
        results["methods"][name] = {
            **meta,
            "scale_known": predictor.scale_known,
            "summary": summarize_pose(rows, predictor),
            "rows": rows,
        }
        method_rows[name] = rows
        predictions[name] = predictor
    if args.out:
        _write_pose_report(Path(args.out), results, method_rows, predictions, evalset)
    _emit(args, results, "pose")
    return 0


def _unique(name: str, taken: dict) -> str:
    k, out = 2, name
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out


def _write_pose_report(out: Path, results: dict, method_rows: dict, predictors: dict, evalset) -> None:
    import torch

    from gst.eval import plots
    from gst.eval.predictors import PosePrediction, write_pose_predictions
    from gst.eval.report import pose_markdown, write_json

    out.mkdir(parents=True, exist_ok=True)
    pairs = results["pairs"]["rows"]
    edges = results["pairs"]["baseline_angle_histogram"]["edges_deg"]
    plots.pose_error_cdfs(method_rows, out / "pose_error_cdf.png")
    plots.error_vs_baseline(method_rows, out / "pose_error_vs_baseline.png")
    plots.baseline_histogram_plot(
        [p["baseline_angle_deg"] for p in pairs], edges, out / "baseline_angles.png"
    )
    plots.frusta(
        pairs,
        method_rows,
        {n: p.scale_known for n, p in predictors.items()},
        out / "frusta.png",
        max_pairs=GRID_PAIRS,
    )
    for name, rows in method_rows.items():  # every run can be re-scored with --predictions
        preds = [
            PosePrediction(
                w2c_rel=torch.tensor(r["w2c_rel_pred"], dtype=torch.float64),
                failed=r["failed"],
                K_tgt=None if r["K_tgt_pred"] is None else torch.tensor(r["K_tgt_pred"]),
            )
            for r in rows
        ]
        write_pose_predictions(
            out / f"predictions_{name}.json", name, predictors[name].scale_known, evalset.pairs, preds
        )
    figures = ["pose_error_cdf.png", "frusta.png", "pose_error_vs_baseline.png", "baseline_angles.png"]
    write_json(results, out / "results.json")
    (out / "report.md").write_text(pose_markdown(results, figures))


def _emit(args: argparse.Namespace, results: dict, kind: str) -> None:
    from gst.eval.report import jsonable

    if args.json:
        json.dump(jsonable(results), sys.stdout)
        sys.stdout.write("\n")
        return
    for name, m in results["methods"].items():
        s = {k: v for k, v in m["summary"].items()}
        print(f"{kind} {name}: " + json.dumps(jsonable(s)))
    if args.out:
        print(f"report: {Path(args.out) / 'report.md'}")


def _view_predictors(args: argparse.Namespace) -> list[tuple[object, dict]]:
    from gst.eval.baselines import CopyView, MeanColourView
    from gst.eval.predictors import FileViewPredictor
    from gst.eval.report import sha256_of

    methods = args.method
    if methods is None:
        methods = [] if args.predictions or args.checkpoint else ["copy"]
    out: list[tuple[object, dict]] = []
    for m in dict.fromkeys(methods):
        baseline = {"copy": CopyView, "mean-colour": MeanColourView}[m]()
        out.append((baseline, {"source": "baseline"}))
    if args.tokenizer is not None:
        from gst.eval.tokenizer_ceiling import load_reconstruction_ceiling

        ceiling, meta = load_reconstruction_ceiling(args.tokenizer)
        out.append((ceiling, {"source": "tokenizer checkpoint (looks at the target: a ceiling)", **meta}))
    if args.checkpoint is not None:
        out.append(_model_predictor(args, "nvs"))
    for f in args.predictions:
        out.append(
            (
                FileViewPredictor(f),
                {"source": "predictions file", "file": str(Path(f).resolve()), "sha256": sha256_of(f)},
            )
        )
    return out


def run_nvs(args: argparse.Namespace) -> int:
    from gst.eval.lpips_metric import load_lpips
    from gst.eval.metrics import IMAGE_METRIC_IMPLEMENTATIONS
    from gst.eval.nvs_eval import evaluate_views, summarize_views
    from gst.eval.report import base_results

    config, evalset, data = _setup(args)
    lpips = load_lpips(args.lpips_weights)
    predictors = _view_predictors(args)
    metrics = {**IMAGE_METRIC_IMPLEMENTATIONS, "lpips": lpips.description}
    results = base_results("nvs", evalset, data, args.seed, config, metrics)
    results["lpips"] = {"available": lpips.available, "description": lpips.description}
    method_rows, kept = {}, {}
    for predictor, meta in predictors:
        name = _unique(predictor.name, results["methods"])
        rows, images = evaluate_views(evalset, predictor, lpips, keep_images=GRID_PAIRS if args.out else 0)
        results["methods"][name] = {**meta, "summary": summarize_views(rows, predictor, lpips), "rows": rows}
        method_rows[name], kept[name] = rows, images
    if args.out:
        _write_nvs_report(Path(args.out), results, method_rows, kept, evalset, lpips.description)
    _emit(args, results, "nvs")
    return 0


def _write_nvs_report(
    out: Path, results: dict, method_rows: dict, kept: dict, evalset, lpips_desc: str
) -> None:
    from gst.eval import plots
    from gst.eval.report import nvs_markdown, write_json

    out.mkdir(parents=True, exist_ok=True)
    shown = evalset.pairs[:GRID_PAIRS]
    observed = [evalset.image(p.scene_index, p.obs) for p in shown]
    targets = [evalset.image(p.scene_index, p.tgt) for p in shown]
    captions = [f"{p.scene}\n{p.obs}->{p.tgt} ({p.baseline_angle_deg:.0f} deg)" for p in shown]
    plots.view_grid(observed, kept, targets, captions, out / "views_grid.png")
    plots.metric_vs_baseline(method_rows, "psnr", "PSNR (dB)", out / "psnr_vs_baseline.png")
    edges = results["pairs"]["baseline_angle_histogram"]["edges_deg"]
    plots.baseline_histogram_plot(
        [p.baseline_angle_deg for p in evalset.pairs], edges, out / "baseline_angles.png"
    )
    figures = ["views_grid.png", "psnr_vs_baseline.png", "baseline_angles.png"]
    write_json(results, out / "results.json")
    (out / "report.md").write_text(nvs_markdown(results, figures, lpips_desc))
