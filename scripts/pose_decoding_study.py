"""Where a GST model's pose comes from: the same held-out pairs read out several ways, against the truth.

    python scripts/pose_decoding_study.py --checkpoint assets/gst-tiny --data data/eval_heldout_s1000 \
        [--num-pairs 200] [--seed 0] [--resolution 64] [--samples 16] [--out FILE.json]

Readouts of the est layout's camera codes (each decoded by the model's camera tokenizer):

- ``true codes``: the tokenizer's round trip of the true camera, the floor under every readout.
- ``teacher-forced``: each code the model's top choice given the TRUE codes before it (what the
  training log's camera-token accuracy scores); ``teacher-forced, expected``: the expectation of the
  code latents under those distributions.
- ``greedy``: the model's own codes, each the top choice given its earlier ones (what `gst eval pose`
  scores); ``greedy, expected``: the expected latents along that path.
- ``sampled, mean``: ``--samples`` cameras at temperature 1, their parameter vectors averaged.

It also prints code accuracies: all codes and the first code, teacher-forced (and the first code's
cross-entropy), and the greedy codes' agreement with the true ones; as references for the first code,
the share of the most common true first code among the pairs and those codes' (plug-in) entropy.
Errors are `gst.eval.pose_eval.pose_errors`; summaries
`gst.eval.metrics.pose_summary` (AUC@30 over the larger of rotation and translation-direction error).

Glossary: n camera tokens, D code latent size, S samples.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch

from gst.api import GST
from gst.data.pairs import PairConfig
from gst.eval.data import build_evalset
from gst.eval.metrics import pose_summary
from gst.eval.pose_eval import pose_errors
from gst.eval.predictors import PosePrediction
from gst.geometry import denormalize_relative_pose
from gst.model.config import HeadKind
from gst.model.sampling import GREEDY, SamplingConfig, estimate_camera_tokens
from gst.model.sequences import TASK_EST, assemble_pose, pose_offsets

READOUTS = (
    "true codes",
    "teacher-forced",
    "teacher-forced, expected",
    "greedy",
    "greedy, expected",
    "sampled, mean",
)


def camera_distributions(
    gst: GST, obs_ids: torch.Tensor, tgt_ids: torch.Tensor, codes: torch.Tensor
) -> torch.Tensor:
    """The model's code probabilities at every camera position of an est row holding ``codes`` (each
    given the codes before it). Shapes: (1, h*w) image ids, (n,) codes in [0, K) -> (n, K) float32."""
    layout, seq = gst.layout, gst.sequence
    lo, hi = layout.kind_rows(HeadKind.CAMERA)
    rows, _, grid = assemble_pose(
        layout, seq, TASK_EST, obs_ids, tgt_ids, (codes + lo)[None].to(obs_ids.device)
    )
    with torch.no_grad():
        logits = gst.model(rows, grid[None].to(rows.device)).logits[0]  # (T, V)
    start = pose_offsets(seq, TASK_EST).cam - 1  # the position that predicts the first code
    return logits[start : start + len(codes), lo:hi].float().softmax(-1).cpu()


def decode_latents(gst: GST, latents: torch.Tensor):
    """Per-token code latents -> decoded camera parameters (normalised). Shapes: (N, n, D) -> CameraParams."""
    tok = gst.camera_tokenizer
    grid = latents.transpose(1, 2).reshape(len(latents), -1, *gst.sequence.camera_grid)  # (N, D, hc, wc)
    return tok.decode_latent_params(grid.to(next(tok.parameters()).device))


def world_w2c(gst: GST, params) -> torch.Tensor:
    """Decoded parameters -> relative w2c in world units. Shapes: -> (N, 4, 4) float64."""
    return denormalize_relative_pose(params.w2c().double().cpu(), gst.camera_tokenizer.config.pose_scale)


def pair_readouts(
    gst: GST, obs_ids: torch.Tensor, tgt_ids: torch.Tensor, true_codes: torch.Tensor, samples: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every readout's w2c for one pair, and its code accuracies. Shapes: (1, h*w), (1, h*w), (n,) ->
    {readout: (4, 4) float64}, {name: float}."""
    book = gst.camera_tokenizer.quantizer.codebook_vectors().float().cpu()  # (K, D)
    offset = gst.layout.camera_offset
    seq = gst.sequence
    forced = camera_distributions(gst, obs_ids, tgt_ids, true_codes)  # (n, K)
    top = forced.argmax(-1)  # (n,)
    greedy = estimate_camera_tokens(gst.model, obs_ids, tgt_ids, seq_cfg=seq, config=GREEDY)
    greedy_codes = greedy.camera_ids[0, 0].cpu() - offset  # (n,)
    along = camera_distributions(gst, obs_ids, tgt_ids, greedy_codes)  # (n, K)
    sampled = estimate_camera_tokens(
        gst.model,
        obs_ids,
        tgt_ids,
        seq_cfg=seq,
        config=SamplingConfig(temperature=1.0),
        num_samples=samples,
        generator=torch.Generator(gst.device).manual_seed(seed),
    )
    sample_codes = sampled.camera_ids[0].cpu() - offset  # (S, n)
    tok = gst.camera_tokenizer
    params = decode_latents(gst, book[sample_codes])
    vectors = tok.camera_vector(params.K(), params.w2c())  # (S, 13): the samples' parameter vectors
    mean = tok.params_from_vector(vectors.mean(0, keepdim=True))
    latents = torch.stack([book[true_codes], book[top], forced @ book, book[greedy_codes], along @ book])
    out = dict(zip(READOUTS[:5], world_w2c(gst, decode_latents(gst, latents)), strict=True))
    out["sampled, mean"] = world_w2c(gst, mean)[0]
    acc = {
        "teacher-forced, all codes": float((top == true_codes).float().mean()),
        "teacher-forced, first code": float(top[0] == true_codes[0]),
        "first code cross-entropy (nats)": float(-forced[0, true_codes[0]].clamp_min(1e-30).log()),
        "greedy codes equal to the true ones": float((greedy_codes == true_codes).float().mean()),
    }
    return out, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="assets/gst-tiny")
    p.add_argument("--data", required=True)
    p.add_argument("--num-pairs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--out", default=None, help="write per-pair errors and the summary as JSON")
    args = p.parse_args()

    gst = GST.from_pretrained(args.checkpoint)
    evalset = build_evalset(
        args.data,
        num_pairs=args.num_pairs,
        seed=args.seed,
        resolution=args.resolution,
        pair_config=PairConfig(),
    )
    offset = gst.layout.camera_offset
    errors: dict[str, list[dict]] = {r: [] for r in READOUTS}
    accuracies: dict[str, list[float]] = {}
    first_codes: list[int] = []
    for i, pair in enumerate(evalset.pairs):
        s = pair.scene_index
        K_tgt, w2c_true = evalset.K(s, pair.tgt), evalset.w2c_rel(pair)
        obs, tgt = gst.prepare(evalset.image(s, pair.obs)), gst.prepare(evalset.image(s, pair.tgt), K=K_tgt)
        true_codes = (gst.encode_camera(w2c_true, tgt.K_model) - offset)[0].cpu()  # (n,)
        first_codes.append(int(true_codes[0]))
        w2c, acc = pair_readouts(gst, obs.ids, tgt.ids, true_codes, args.samples, args.seed * 100_003 + i)
        for name, value in acc.items():
            accuracies.setdefault(name, []).append(value)
        for name, pred in w2c.items():
            errors[name].append(pose_errors(PosePrediction(w2c_rel=pred, K_tgt=None), w2c_true, K_tgt, True))

    summary = {}
    print(f"{len(evalset.pairs)} pairs of {args.data}, checkpoint {args.checkpoint}")
    print("| readout | AUC@30 | RRA@15 | RRA@30 | RTA@30 | median rotation | median translation direction |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in errors.items():
        rot, trans = [r["rot_err_deg"] for r in rows], [r["trans_err_deg"] for r in rows]
        s = pose_summary(rot, trans, [False] * len(rows))
        summary[name] = {k: s[k] for k in ("auc30", "rra15", "rra30", "rta30")}
        summary[name] |= {
            "median_rot_deg": float(np.median(rot)),
            "median_trans_deg": float(np.median(trans)),
        }
        v = summary[name]
        print(
            f"| {name} | {v['auc30']:.3f} | {v['rra15']:.3f} | {v['rra30']:.3f} | {v['rta30']:.3f} "
            f"| {v['median_rot_deg']:.1f} deg | {v['median_trans_deg']:.1f} deg |"
        )
    code_stats = {name: float(np.mean(values)) for name, values in accuracies.items()}
    counts = np.asarray(list(Counter(first_codes).values()), dtype=np.float64) / len(first_codes)
    code_stats["most common true first code's share"] = float(counts.max())
    code_stats["entropy of the true first codes (nats, plug-in)"] = float(-(counts * np.log(counts)).sum())
    for name, value in code_stats.items():
        print(f"{name}: {value:.3f}")
    if args.out:
        doc = {"args": vars(args), "summary": summary, "codes": code_stats, "errors": errors}
        with open(args.out, "w") as f:
            json.dump(doc, f)


if __name__ == "__main__":
    main()
