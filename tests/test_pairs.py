"""Pair sampling and the train/val split (gst.data.pairs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gst.data.pairs import (
    PairConfig,
    baseline_angles,
    baseline_histogram,
    candidate_pairs,
    sample_pairs,
    scene_centre,
    scene_split,
    split_scene_names,
)
from gst.data.scene import Scene


def look_at_w2c(centre: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenCV w2c of a camera at ``centre`` looking at ``target`` (world +z up)."""
    f = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    y = np.cross(f, x)
    R = np.stack([x, y, f])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return torch.from_numpy(w2c)


def ring_scene(
    name: str, num_views: int = 12, radius: float = 4.0, height: float = 0.0, objects: list | None = None
) -> Scene:
    az = np.arange(num_views) * 2 * math.pi / num_views
    w2c = torch.stack(
        [look_at_w2c(np.array([radius * math.cos(a), radius * math.sin(a), height]), np.zeros(3)) for a in az]
    )
    K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]], dtype=torch.float64).expand(
        num_views, 3, 3
    )
    return Scene(
        root=Path("/nonexistent") / name,
        name=name,
        image_paths=tuple(Path(f"{i}.png") for i in range(num_views)),
        K=K.clone(),
        w2c=w2c,
        image_hw=(64, 64),
        objects=objects,
    )


def test_scene_centre_and_angles_on_a_ring():
    scene = ring_scene("a", num_views=12)
    np.testing.assert_allclose(scene_centre(scene.w2c), np.zeros(3), atol=1e-9)
    angles, source = baseline_angles(scene.w2c)
    assert source == "scene_centre"
    assert angles[0, 1] == pytest.approx(30.0)
    assert angles[0, 6] == pytest.approx(180.0)
    assert angles[2, 11] == pytest.approx(90.0)


def test_candidate_pairs_respect_the_angle_range():
    scene = ring_scene("a", num_views=12)
    pairs, angles, _, covis = candidate_pairs(scene, PairConfig(min_baseline_deg=25, max_baseline_deg=65))
    assert len(pairs) == 12 * 4  # +-30 and +-60 degrees of azimuth
    assert covis is None
    assert np.all((angles > 25) & (angles < 65))
    assert np.all(pairs[:, 0] != pairs[:, 1])


def test_forward_facing_cameras_fall_back_to_optical_axes():
    w2c = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    w2c[:, 0, 3] = torch.arange(5.0)  # translated sideways, all looking along +z
    assert scene_centre(w2c) is None
    angles, source = baseline_angles(w2c)
    assert source == "optical_axes"
    np.testing.assert_allclose(angles, 0.0, atol=1e-6)


def test_covisibility_filters_pairs():
    # object 0 is visible only in views 0-3, object 1 only in views 6-9; views 4, 5, 10, 11 see nothing
    vis0 = [0.9] * 4 + [0.0] * 8
    vis1 = [0.0] * 6 + [0.8] * 4 + [0.0] * 2
    scene = ring_scene("a", objects=[{"name": "o0", "visible": vis0}, {"name": "o1", "visible": vis1}])
    pairs, _, _, covis = candidate_pairs(scene, PairConfig(min_baseline_deg=25, max_baseline_deg=95))
    assert set(map(tuple, pairs.tolist())) == {
        (a, b)
        for group in (range(0, 4), range(6, 10))
        for a in group
        for b in group
        if a != b and abs(a - b) <= 3
    }
    assert np.all(covis == 1)


def test_sampling_is_deterministic_balanced_and_distinct():
    scenes = [ring_scene("a"), ring_scene("b", num_views=8)]
    cfg = PairConfig(min_baseline_deg=25, max_baseline_deg=95)
    p1 = sample_pairs(scenes, 20, seed=3, config=cfg)
    p2 = sample_pairs(scenes, 20, seed=3, config=cfg)
    p3 = sample_pairs(scenes, 20, seed=4, config=cfg)
    assert [p.key for p in p1] == [p.key for p in p2]
    assert [p.key for p in p1] != [p.key for p in p3]
    assert len({p.key for p in p1}) == 20
    assert sum(p.scene == "a" for p in p1) == 10  # round-robin across the two scenes
    assert all(25 <= p.baseline_angle_deg <= 95 for p in p1)


def test_sampling_too_many_pairs_is_an_error():
    scene = ring_scene("a", num_views=4)  # 4 views 90 degrees apart: 8 ordered pairs at 90 degrees
    cfg = PairConfig(min_baseline_deg=80, max_baseline_deg=100)
    assert len(sample_pairs([scene], 100, seed=0, config=cfg, allow_fewer=True)) == 8
    with pytest.raises(ValueError, match="only 8 pairs"):
        sample_pairs([scene], 9, seed=0, config=cfg)


def test_baseline_histogram_counts_every_pair():
    pairs = sample_pairs(
        [ring_scene("a")], 30, seed=0, config=PairConfig(min_baseline_deg=25, max_baseline_deg=95)
    )
    edges, counts = baseline_histogram(pairs, bin_width_deg=25)  # bins away from the ring's 30, 60, 90
    np.testing.assert_allclose(edges, [0, 25, 50, 75, 100])
    expected = [0] + [sum(abs(p.baseline_angle_deg - a) < 1e-6 for p in pairs) for a in (30, 60, 90)]
    assert counts.tolist() == expected and sum(expected) == 30


def test_split_is_a_stable_hash_of_the_name():
    names = [f"scene_{i:05d}" for i in range(2000)]
    train, val = split_scene_names(names, val_fraction=0.1)
    assert len(train) + len(val) == 2000
    assert 150 <= len(val) <= 250  # ~10 % (binomial sd ~13)
    assert split_scene_names(names[:100], val_fraction=0.1)[1] == [n for n in val if n in names[:100]]
    assert scene_split("scene_00000", 0.1) == scene_split("scene_00000", 0.1)
    assert scene_split("anything", 0.0) == "train" and scene_split("anything", 1.0) == "val"
    assert split_scene_names(names, 0.1, salt="other")[1] != val


def test_pair_config_validation():
    with pytest.raises(ValueError, match="min_baseline_deg"):
        PairConfig(min_baseline_deg=50, max_baseline_deg=40)
