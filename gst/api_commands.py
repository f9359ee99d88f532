"""Top-level commands on a trained model (`gst pose`, `gst nvs`, `gst sample`, `gst chat`, `gst demo`;
`gst train export` is gst.training.export_commands). Handlers import torch and the model lazily, so
`gst --help` stays fast. Every command takes `--checkpoint DIR` (default: assets/gst-tiny).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

_DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "gst-tiny"
_CAMERAS = """Cameras are OpenCV (+x right, +y down, +z forward); a camera's w2c is expressed in the observed
camera's frame, in metres. Images of any size are centre-cropped and resized to the model's resolution,
with the intrinsics adjusted to match (see gst.api)."""


def _describe(*paragraphs: str) -> str:
    """Help text paragraphs, each wrapped to 100 columns (the parsers keep line breaks)."""
    import textwrap

    return "\n\n".join(textwrap.fill(" ".join(p.split()), 100) for p in paragraphs)


def _model_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=_DEFAULT_CHECKPOINT,
        help="checkpoint folder (`gst train export`) or a `gst train gst` run (default: assets/gst-tiny)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def _sampling_args(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument(
        "--temperature",
        type=float,
        default=temperature,
        help=f"sampling temperature, 0 = greedy (default {temperature:g})",
    )
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest codes (0 = all)")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")


def _sampling(args: argparse.Namespace):
    from gst.model import SamplingConfig

    return SamplingConfig(temperature=args.temperature, top_k=args.top_k, cfg_scale=args.cfg_scale)


def _load(args: argparse.Namespace):
    from gst.api import GST

    return GST.from_pretrained(args.checkpoint, device=args.device)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=1)
    sys.stdout.write("\n")


# ---- gst pose ----


def run_pose(args: argparse.Namespace) -> int:
    gst = _load(args)
    pose = gst.estimate_pose(
        args.observed, args.target, sampling=_sampling(args), seed=args.seed, readout=args.readout
    )
    if args.json:
        _print_json(pose.to_dict())
        return 0
    import numpy as np

    np_fmt = {"float_kind": lambda v: f"{v: .4f}"}
    print(f"{args.target} seen from {args.observed}: {pose.summary}")
    print("w2c (target in the observed camera's frame, metres):")
    print(np.array2string(pose.w2c.numpy(), formatter=np_fmt))
    print(f"K of {args.target} ({pose.image_hw[1]}x{pose.image_hw[0]} px):")
    print(np.array2string(pose.K_tgt.numpy(), formatter=np_fmt))
    return 0


# ---- gst nvs ----


def add_warp_argument(p: argparse.ArgumentParser) -> None:
    """``--warp [WEIGHT]`` of `gst nvs`, `gst sample` and `gst eval nvs`: ``GST.synthesize_view`` /
    ``GST.sample(warp=WEIGHT)``."""
    p.add_argument(
        "--warp",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="WEIGHT",
        help="mix the observed pixels, moved to the new camera with the depth the model reads for each "
        "observed cell, into each view where they land: WEIGHT * warped + (1 - WEIGHT) * generated "
        "(--warp alone: 1, pasted; default 0: off)",
    )


def _nvs_camera(args: argparse.Namespace) -> dict[str, Any]:
    from gst.api import orbit_camera, read_camera_json

    if args.camera is not None:
        if args.azimuth is not None or args.elevation is not None:
            raise ValueError("give either --camera FILE or --azimuth/--elevation, not both")
        return read_camera_json(args.camera)
    if args.azimuth is None and args.elevation is None:
        raise ValueError("say where to look from: --azimuth DEG [--elevation DEG], or --camera FILE")
    return {"w2c": orbit_camera(args.azimuth or 0.0, args.elevation or 0.0, radius_m=args.radius)}


def run_nvs(args: argparse.Namespace) -> int:
    from gst.demo import save_png

    camera = _nvs_camera(args)
    gst = _load(args)
    view = gst.synthesize_view(
        args.observed,
        camera["w2c"],
        K=camera.get("K"),
        K_hw=camera.get("K_hw"),
        fov_deg=args.fov,
        sampling=_sampling(args),
        num_samples=args.num_samples,
        seed=args.seed,
        warp=args.warp,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = (
        [out]
        if args.num_samples == 1
        else [out.with_name(f"{out.stem}_{i:02d}{out.suffix or '.png'}") for i in range(args.num_samples)]
    )
    for path, image in zip(paths, view.images, strict=True):
        save_png(image, path)
    if args.json:
        _print_json(
            {
                "images": [str(p) for p in paths],
                "camera": view.camera.to_dict(),
                "warped_fraction": view.warped_fraction,
            }
        )
    else:
        from gst.api import describe_camera

        asked = describe_camera(camera["w2c"], view.camera.K_tgt, view.camera.image_hw)[1].split(";")[0]
        print(f"camera asked for: {asked}\ncamera as the model read it (tokenized): {view.camera.summary}")
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---- gst sample ----


def run_sample(args: argparse.Namespace) -> int:
    from gst.demo import save_png, save_sample_figures
    from gst.model import SamplingConfig

    gst = _load(args)
    result = gst.sample(
        args.observed,
        args.num_samples,
        camera_sampling=SamplingConfig(temperature=args.camera_temperature),
        image_sampling=_sampling(args),
        seed=args.seed,
        warp=args.warp,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    views = [save_png(img, out / f"sample_{i:02d}.png") for i, img in enumerate(result.images)]
    grid, frusta = save_sample_figures(
        result, out, title=f"{args.num_samples} joint samples from {args.observed}"
    )
    doc = {
        "observed": str(args.observed),
        "seed": args.seed,
        "samples": [
            {"image": str(p), **c.to_dict(), "warped_fraction": f}
            for p, c, f in zip(
                views, result.cameras, result.warped_fractions or [None] * len(views), strict=True
            )
        ],
        "figures": {"grid": str(grid), "cameras": str(frusta)},
    }
    (out / "cameras.json").write_text(json.dumps(doc, indent=1) + "\n")
    if args.json:
        _print_json(doc)
    else:
        for i, c in enumerate(result.cameras):
            print(f"sample {i}: {c.summary}")
        print(f"wrote {grid}, {frusta}, {out / 'cameras.json'} and {len(views)} views in {out}")
    return 0


# ---- gst chat ----


_CHAT_HELP = (
    "Type a question and press Enter. Commands: /image PATH attaches an image to the next question, "
    "/reset clears the history, /quit (or Ctrl-D) leaves."
)


def chat_repl(session, images: list[str], *, stdin: TextIO, stdout: TextIO, save_dir: Path) -> int:
    """The interactive loop of `gst chat`: reads lines from ``stdin`` until EOF or /quit.

    ``images`` are attached to the first question (and again after /reset). Camera segments in replies
    are printed as readable poses, image segments saved under ``save_dir`` and their paths printed.
    """
    from gst.api import load_image
    from gst.demo import save_png

    interactive = stdin.isatty()
    pending, saved = list(images), [0]

    def save(image) -> str:
        save_dir.mkdir(parents=True, exist_ok=True)
        saved[0] += 1
        return str(save_png(image, save_dir / f"reply_image_{saved[0]:03d}.png"))

    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    print(_CHAT_HELP, file=stdout)
    while True:
        if interactive:
            try:
                line = input("you> ") + "\n"
            except EOFError:
                line = ""
        else:
            line = stdin.readline()
        if not line:  # EOF (Ctrl-D)
            print("", file=stdout)
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.reset()
            pending = list(images)
            print("(history cleared)", file=stdout)
            continue
        if line.startswith("/image"):
            path = line[len("/image") :].strip()
            try:
                load_image(path)
            except (FileNotFoundError, ValueError) as err:
                print(f"error: {err}", file=stdout)
                continue
            pending.append(path)
            print(f"(attached {path} to the next question)", file=stdout)
            continue
        try:
            reply = session.ask(line, pending)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=stdout)
            continue
        pending = []
        who = "gst> " if reply.answered_by == "model" else f"gst [{reply.answered_by}]> "
        print(who + reply.render(save_image=save), file=stdout)
        stdout.flush()


def run_chat(args: argparse.Namespace) -> int:
    from gst.api import load_image
    from gst.model import SamplingConfig

    for path in args.image:  # unreadable images fail before the model loads
        load_image(path)
    gst = _load(args)
    router = None
    if not args.no_answer_reader:
        from gst.eval.qa_reader import chat_router

        router = chat_router(gst)
    session = gst.start_chat(
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        sampling=SamplingConfig(temperature=args.temperature),
        seed=args.seed,
        router=router,
    )
    return chat_repl(
        session, list(args.image), stdin=sys.stdin, stdout=sys.stdout, save_dir=Path(args.save_dir)
    )


# ---- gst demo ----


def run_demo(args: argparse.Namespace) -> int:
    import time

    from gst.demo import EXAMPLES_DIR, load_examples, make_examples
    from gst.demo import run_demo as demo

    examples_dir = args.examples or EXAMPLES_DIR
    if args.make_examples:
        out = make_examples(examples_dir, seed=args.examples_seed)
        print(f"wrote the example views and cameras.json to {out}")
        return 0
    start = time.perf_counter()
    from gst.api import GST

    examples = load_examples(examples_dir)
    gst = GST.from_pretrained(args.checkpoint, device=args.device)
    results = demo(
        gst, examples, args.out, seed=args.seed, num_samples=args.num_samples, progress=not args.json
    )
    results["wall_seconds_with_loading"] = time.perf_counter() - start
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.json:
        _print_json(results)
        return 0
    pose = results["pose"]
    print(f"pose of B seen from A: {pose['estimate']['summary']}")
    print(f"  true:                {pose['true_summary']}")
    for o in results["orbit"]:
        print(f"orbit view at azimuth {o['azimuth_deg']:+.0f} deg: camera {o['camera']}")
    print(f"{len(results['samples'])} joint samples, e.g. {results['samples'][0]['summary']}")
    q = results["question"]
    print(f"Q: {q['text']}  model: {q['model_answer']!r}  (true: {q['answer']})")
    if q.get("reader_answer") is not None:
        print(f"   answer reader: {q['reader_answer']!r}")
    print(f"done in {results['wall_seconds_with_loading']:.1f} s; summary: {results['figure']}")
    return 0


def register_top(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "pose",
        help="estimate where a second image was taken from, relative to the first",
        description=_describe(
            "Estimate the camera of TARGET relative to OBSERVED (greedy decoding of the camera "
            "tokens): a readable motion, w2c and the target's K.",
            _CAMERAS,
        ),
        formatter_class=fmt,
    )
    p.add_argument("observed", help="the observed image (any size)")
    p.add_argument("target", help="the image whose camera to estimate")
    _model_args(p)
    _sampling_args(p, temperature=0.0)
    p.add_argument(
        "--readout",
        choices=("auto", "codes", "head", "head-sym"),
        default="auto",
        help="decode the camera codes, or read the auxiliary pose head (models trained with "
        "loss.pose_weight > 0; the sampling flags do not apply); head-sym: the head on both orders, "
        "averaged; auto (default): the head of a model with a convolutional reader, else the codes",
    )
    p.add_argument(
        "--json", action="store_true", help="print the camera as JSON (gst.camera.v1, for --camera)"
    )
    p.set_defaults(func=run_pose)

    p = sub.add_parser(
        "nvs",
        help="synthesize the view from a new camera",
        description=_describe(
            "Generate what a camera sees, given one observed image: an orbit around the point "
            "--radius metres ahead (--azimuth > 0 moves the camera right, --elevation > 0 up), or a camera "
            "file (--camera, as `gst pose --json` writes: w2c, optional K and image_hw).",
            _CAMERAS,
        ),
        formatter_class=fmt,
    )
    p.add_argument("observed", help="the observed image (any size)")
    p.add_argument("--azimuth", type=float, default=None, help="orbit azimuth in degrees (> 0: to the right)")
    p.add_argument("--elevation", type=float, default=None, help="orbit elevation in degrees (> 0: up)")
    p.add_argument(
        "--radius", type=float, default=4.5, help="orbit pivot distance ahead, metres (default 4.5)"
    )
    p.add_argument("--camera", type=Path, default=None, help="camera JSON instead of an orbit")
    p.add_argument(
        "--fov",
        type=float,
        default=None,
        help="horizontal field of view of the observed camera, degrees (default 52.5)",
    )
    p.add_argument("-n", "--num-samples", type=int, default=1, help="views to draw (default 1)")
    add_warp_argument(p)
    p.add_argument(
        "--out", default="nvs.png", help="output PNG (with -n > 1: OUT_00.png, ...; default nvs.png)"
    )
    _model_args(p)
    _sampling_args(p, temperature=1.0)
    p.add_argument("--json", action="store_true", help="print the written paths and the camera as JSON")
    p.set_defaults(func=run_nvs)

    p = sub.add_parser(
        "sample",
        help="sample cameras and the views they see, jointly",
        description=_describe(
            "Draw N (camera, view) pairs from p(camera, image | observed): writes each view, an "
            "image grid (samples.png), a camera-frustum plot (cameras.png) and cameras.json.",
            _CAMERAS,
        ),
        formatter_class=fmt,
    )
    p.add_argument("observed", help="the observed image (any size)")
    p.add_argument("-n", "--num-samples", type=int, default=8, help="samples to draw (default 8)")
    p.add_argument("--out", default="samples", help="output folder (default ./samples)")
    p.add_argument("--camera-temperature", type=float, default=1.0, help="temperature of the camera tokens")
    add_warp_argument(p)
    _model_args(p)
    _sampling_args(p, temperature=1.0)
    p.add_argument("--json", action="store_true", help="print cameras.json on stdout")
    p.set_defaults(func=run_sample)

    p = sub.add_parser(
        "chat",
        help="ask spatial questions about images, interactively",
        description="A terminal chat with the model about one or more images. " + _CHAT_HELP + " Replies "
        "that contain a camera are shown as a readable pose; images in replies are saved to --save-dir.",
    )
    p.add_argument(
        "--image", action="append", default=[], help="an image for the first question (repeatable)"
    )
    p.add_argument("--system", default=None, help="an optional system message")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest reply in tokens (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="text temperature, 0 = greedy (default)")
    p.add_argument("--save-dir", default="gst-chat", help="where images in replies go (default ./gst-chat)")
    p.add_argument(
        "--no-answer-reader",
        action="store_true",
        help="let the model answer every question; by default a question of a kind the checkpoint's answer "
        "reader knows (answer_reader/answer_forms.json) is answered by the reader (shown as "
        "'gst [answer-reader]>')",
    )
    _model_args(p)
    p.set_defaults(func=run_chat)

    p = sub.add_parser(
        "demo",
        help="run the whole system on the example images (< 1 minute on a laptop CPU)",
        description="Load the default checkpoint, estimate the pose between two example views, synthesize "
        "views along a small orbit, sample cameras and views jointly, ask a spatial question, and write a "
        "summary PNG (and results.json) to --out. --make-examples re-renders assets/examples.",
    )
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--examples", type=Path, default=None, help="examples folder (default assets/examples)")
    p.add_argument("-n", "--num-samples", type=int, default=4, help="joint samples (default 4)")
    p.add_argument("--json", action="store_true", help="print results.json on stdout (no progress bar)")
    p.add_argument(
        "--make-examples",
        action="store_true",
        help="re-render the example views into --examples (needs the EGL renderer) and exit",
    )
    p.add_argument("--examples-seed", type=int, default=7, help="procedural-world seed of the examples (7)")
    _model_args(p)
    p.set_defaults(func=run_demo)
