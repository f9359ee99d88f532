"""Metric functions against hand-computed values, and LPIPS availability without downloads."""

from __future__ import annotations

import math

import lpips  # noqa: F401  imported at collection: triton (via torchvision) segfaults if first loaded after EGL
import numpy as np
import pytest
import torch

from gst.eval import lpips_metric
from gst.eval.metrics import accuracy_at, auc, fold_sign, pose_summary, psnr, ssim


def test_psnr_of_a_known_mse():
    target = torch.full((2, 3, 16, 16), 0.5)
    pred = target + 0.1  # MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    np.testing.assert_allclose(psnr(pred, target).numpy(), [20.0, 20.0], atol=1e-4)
    pred[1] = target[1] + 0.01  # MSE 1e-4 -> 40 dB
    assert float(psnr(pred, target)[1]) == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(float(psnr(target, target)[0]))


def test_ssim_identical_is_one_and_drops_with_noise():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g)
    np.testing.assert_allclose(ssim(img, img).numpy(), [1.0, 1.0], atol=1e-5)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    assert float(ssim(noisy, img).max()) < 0.9


def test_image_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def test_accuracy_is_strict_and_counts_failures():
    errs = [1.0, 5.0, 4.999, float("nan"), float("inf")]
    assert accuracy_at(errs, 5.0) == pytest.approx(2 / 5)  # 5.0 itself is not < 5; nan and inf are failures
    assert accuracy_at(errs, 181.0) == 1.0  # failures sit at 180 degrees


def test_auc_hand_example():
    # max(rot, trans) = 0.5, 2.5, 10, 40: below t for t=1,2 -> 1/4; t=3..10 -> 2/4; t=11..30 -> 3/4
    rot = np.array([0.5, 2.5, 1.0, 40.0])
    trans = np.array([0.1, 0.3, 10.0, 3.0])
    expected = (2 * 0.25 + 8 * 0.5 + 20 * 0.75) / 30
    assert auc(rot, trans, 30) == pytest.approx(expected)
    assert auc([30.0], [0.0], 30) == pytest.approx(1 / 30)  # the last bin is closed, as numpy.histogram's
    assert auc([0.0, 0.0], [0.0, float("nan")]) == pytest.approx(0.5)  # a failure is never dropped


def test_pose_summary_and_sign_folding():
    s = pose_summary([2.0, 20.0, 180.0], [3.0, 170.0, 180.0], [False, False, True])
    assert s["num_pairs"] == 3 and s["num_failed"] == 1
    assert s["rra5"] == pytest.approx(1 / 3) and s["rra30"] == pytest.approx(2 / 3)
    assert s["rta5"] == pytest.approx(1 / 3) and s["rta15"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(fold_sign([3.0, 170.0, 180.0]), [3.0, 10.0, 0.0])
    # folded: pair 2 has max(20, 10) = 20 -> counted from t = 21; the failure (rot 180) never counts
    assert s["auc30_sign_folded"] == pytest.approx((27 + 10) / 30 / 3)
    assert s["auc30"] == pytest.approx(27 / 30 / 3)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(lpips_metric.ENV_VAR, raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS must never try to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def test_lpips_reports_unavailable_without_downloading(no_weights, tmp_path):
    status = lpips_metric.load_lpips()
    assert not status.available and status.scorer is None
    assert status.description.startswith("LPIPS unavailable:")
    assert "--lpips-weights" in status.description and lpips_metric.ALEXNET_FILE in status.description
    assert str(tmp_path / "torch_home") in status.description  # names the cache it looked in
    with pytest.raises(FileNotFoundError, match="no such file"):
        lpips_metric.load_lpips(tmp_path / "missing.pth")


def _small_alexnet_trunk(path):
    """AlexNet conv weights only (the part LPIPS uses), random: exercises the loading path, not a score."""
    import torchvision

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(state, path)


def test_lpips_loads_trunk_from_a_path_and_checks_the_hash(no_weights, tmp_path):
    weights = tmp_path / "alexnet.pth"
    _small_alexnet_trunk(weights)
    with pytest.raises(ValueError, match="sha256"):
        lpips_metric.load_lpips(weights)  # not torchvision's file: refused
    status = lpips_metric.load_lpips(weights, verify_hash=False)
    assert status.available and str(weights) in status.description
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    assert status.scorer(a, a).abs().max() < 1e-6
    assert float(status.scorer(a, b).min()) > 0


def test_lpips_found_in_the_hub_cache(no_weights, tmp_path):
    cached = lpips_metric.hub_cache_path()
    cached.parent.mkdir(parents=True)
    _small_alexnet_trunk(cached)
    assert lpips_metric.find_alexnet_weights() == cached


def test_paired_values_align_two_methods_by_pair(tmp_path):
    import json

    from gst.eval.paired import paired_values, two_method_parser

    def rows(values):
        return [{"scene": "s", "obs": o, "tgt": t, "psnr": v} for (o, t), v in values.items()]

    a = tmp_path / "a.json"
    a.write_text(json.dumps({"methods": {"m": {"rows": rows({(0, 1): 10.0, (2, 3): 12.0})}}}))
    b = tmp_path / "b.json"  # the same pairs in another order
    b.write_text(json.dumps({"methods": {"n": {"rows": rows({(2, 3): 7.0, (0, 1): 5.0})}}}))
    args = two_method_parser("").parse_args([str(a), "m", str(b), "n"])
    va, vb = paired_values(args, lambda r: (r["psnr"],))
    assert va.tolist() == [[10.0], [12.0]] and vb.tolist() == [[5.0], [7.0]]
    with pytest.raises(SystemExit, match="no method 'x'"):
        paired_values(two_method_parser("").parse_args([str(a), "x", str(b), "n"]), lambda r: (r["psnr"],))
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"methods": {"n": {"rows": rows({(2, 3): 7.0})}}}))
    with pytest.raises(SystemExit, match="different pairs"):
        paired_values(two_method_parser("").parse_args([str(a), "m", str(c), "n"]), lambda r: (r["psnr"],))
