"""The one training loop: schedule, overrides, atomic checkpoints, exact resume, two gloo processes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

from gst.training import checkpoint as ckpt
from gst.training.config import TrainConfig, lr_factor
from gst.training.loop import resolve_precision, train
from gst.training.overrides import apply_overrides, from_dict, to_dict
from gst.training.task import Task

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # tests/conftest.py


class ToyTask(Task):
    """Regression of y = x @ w_true with an MLP; dropout exercises the model's own RNG stream."""

    name = "toy"

    def __init__(self, dropout: float = 0.2) -> None:
        self.dropout = dropout
        self.w_true = torch.linspace(-1.0, 1.0, 8).reshape(4, 2)

    def config_dict(self) -> dict:
        return {"dropout": self.dropout}

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(self.dropout), nn.Linear(16, 2))

    def batch(self, index: int, generator: torch.Generator, batch_size: int) -> dict:
        x = torch.randn(batch_size, 4, generator=generator)  # (B, 4)
        return {"x": x, "y": x @ self.w_true}

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return loss, {"mse": float(loss.detach())}


def _config(**kw) -> TrainConfig:
    base = dict(
        max_steps=6,
        batch_size=8,
        grad_accum_steps=2,
        lr=1e-2,
        warmup_steps=2,
        checkpoint_every=2,
        log_every=1,
        tensorboard=False,
        progress=False,
        keep_checkpoints=0,
    )
    return TrainConfig(**{**base, **kw})


def test_lr_schedule_warmup_then_cosine() -> None:
    c = TrainConfig(max_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    factors = [lr_factor(s, c) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0)
    assert factors[6] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_factor(10, c) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))


@dataclass(frozen=True, kw_only=True)
class Inner:
    levels: tuple[int, ...] = (8, 5)
    kind: Literal["vq", "fsq"] = "vq"
    scale: float | None = None


@dataclass(frozen=True, kw_only=True)
class Outer:
    inner: Inner = Inner()
    train: TrainConfig = TrainConfig()


def test_mixed_precision_resolves_per_device(capsys) -> None:
    """auto: bf16 on CUDA only; native: bf16 on CUDA or a CPU with native bf16; an explicit bf16 on a CPU
    without it stays bf16 and warns, naming the setting to use instead; unknown values are refused."""
    assert [resolve_precision("auto", cuda, native) for cuda, native in ((True, False), (False, True))] == [
        "bf16",
        "no",
    ]
    assert resolve_precision("native", True, False) == "bf16"
    assert resolve_precision("native", False, True) == "bf16"
    assert resolve_precision("native", False, False) == "no"
    assert resolve_precision("no", True, True) == "no"
    assert resolve_precision("bf16", False, True) == "bf16" and capsys.readouterr().err == ""
    assert resolve_precision("bf16", False, False) == "bf16"
    assert "train.mixed_precision=native" in capsys.readouterr().err
    assert TrainConfig(mixed_precision="native").mixed_precision == "native"
    with pytest.raises(ValueError, match="auto, native, no or bf16"):
        TrainConfig(mixed_precision="fp16")


def test_overrides_are_typed_and_unknown_keys_fail() -> None:
    cfg = apply_overrides(
        Outer(),
        [
            "inner.levels=8,5,5,5",
            "inner.kind=fsq",
            "train.lr=2e-3",
            "train.tensorboard=false",
            "inner.scale=0.5",
        ],
    )
    assert cfg.inner == Inner(levels=(8, 5, 5, 5), kind="fsq", scale=0.5)
    assert cfg.train.lr == 2e-3 and cfg.train.tensorboard is False
    assert from_dict(Outer, json.loads(json.dumps(to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="unknown key 'lrr'"):
        apply_overrides(Outer(), ["train.lrr=1"])
    with pytest.raises(ValueError, match=r"choose one of \['vq', 'fsq'\]"):
        apply_overrides(Outer(), ["inner.kind=lfq"])
    with pytest.raises(ValueError, match="train.max_steps must be >= 1"):
        apply_overrides(Outer(), ["train.max_steps=0"])
    with pytest.raises(ValueError, match="unknown keys"):
        from_dict(Outer, {"inner": {"level": [1]}})


def test_resume_is_bit_exact_on_cpu(tmp_path: Path) -> None:
    full = train(ToyTask(), _config(), tmp_path / "full")
    first = train(ToyTask(), _config(), tmp_path / "cut", stop_at_step=3)
    assert first.step == 3 and (tmp_path / "cut/checkpoints/step_00000003/rng_rank0.json").exists()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    second = train(ToyTask(), _config(), tmp_path / "cut", resume=True)
    assert second.resumed_from == 3 and second.step == 6
    assert first.losses + second.losses == full.losses  # bit-exact, not approximately equal
    a = ckpt.read_checkpoint(tmp_path / "full/checkpoints/step_00000006")[0]
    b = ckpt.read_checkpoint(tmp_path / "cut/checkpoints/step_00000006")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.losses[-1] < full.losses[0]


def test_wall_clock_budget_stops_saves_exports_and_resumes(tmp_path: Path, monkeypatch) -> None:
    from accelerate.state import AcceleratorState

    from gst.training import loop

    def clock() -> object:
        ticks = iter(range(0, 100_000, 10))  # every reading of the loop's clock is 10 s later
        return lambda: float(next(ticks))

    monkeypatch.setattr(loop, "_now", clock())
    cfg = _config(max_steps=100, max_minutes=1.0, checkpoint_every=4, warmup_steps=0, grad_accum_steps=1)
    lrs: list[float] = []
    result = train(ToyTask(), cfg, tmp_path / "run", on_step=lambda s, m: lrs.append(m["lr"]))
    # Readings 10, 20, ... after each update: the 6th reaches the 60 s budget.
    assert (result.step, result.stopped_by) == (6, "max_minutes")
    assert result.train_seconds == 70.0  # + one reading before the final save
    # The cosine follows the budget: update k starts with 10 k of 60 s spent.
    assert lrs == pytest.approx([cfg.lr * lr_factor(k, cfg, k / 6) for k in range(6)])
    assert lrs[-1] < 0.2 * cfg.lr
    assert result.checkpoint.name == "step_00000006"
    record = json.loads((result.checkpoint / "export" / loop.TRAINING_RECORD).read_text())
    assert record["step"] == 6 and record["wall_minutes"] == pytest.approx(70 / 60)
    assert record["max_minutes"] == 1.0 and record["command"] and record["cpu_minutes"] >= 0
    assert ckpt.read_checkpoint(result.checkpoint)[2]["train_seconds"] == 70.0

    AcceleratorState._reset_state(True)
    monkeypatch.setattr(loop, "_now", clock())
    more = dataclasses.replace(cfg, max_minutes=2.0)
    resumed = train(ToyTask(), more, tmp_path / "run", resume=True, command="gst train toy --resume")
    # 70 s spent before; 80, 90, ..., 120 s after the resumed updates 7..11.
    assert (resumed.resumed_from, resumed.step, resumed.stopped_by) == (6, 11, "max_minutes")
    record = json.loads((resumed.checkpoint / "export" / loop.TRAINING_RECORD).read_text())
    assert record["command"] == "gst train toy --resume" and record["wall_minutes"] == pytest.approx(130 / 60)

    AcceleratorState._reset_state(True)
    spent = train(ToyTask(), more, tmp_path / "run", resume=True)  # budget already spent: no update
    assert (spent.step, spent.losses, spent.stopped_by) == (11, [], "max_minutes")
    with pytest.raises(ValueError, match="train.max_minutes must be >= 0"):
        TrainConfig(max_minutes=-1.0)


def test_cpu_clock_budget(tmp_path: Path, monkeypatch) -> None:
    from gst.training import loop

    wall, cpu = iter(range(0, 100_000, 1)), iter(range(0, 100_000, 15))
    monkeypatch.setattr(loop, "_now", lambda: float(next(wall)))  # 1 s per reading
    monkeypatch.setattr(loop, "_cpu_now", lambda: float(next(cpu)))  # 15 CPU-s per reading
    cfg = _config(max_steps=100, max_minutes=1.0, budget_clock="cpu", grad_accum_steps=1)
    result = train(ToyTask(), cfg, tmp_path / "run")
    assert (result.step, result.stopped_by, result.cpu_seconds) == (4, "max_minutes", 75.0)
    record = json.loads((result.checkpoint / "export" / loop.TRAINING_RECORD).read_text())
    assert record["budget_clock"] == "cpu" and record["cpu_minutes"] == 75.0 / 60


def test_checkpoint_layout_and_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints" / "step_00000004.tmp").mkdir(parents=True)  # debris of a crashed save
    train(ToyTask(), _config(max_steps=4, keep_checkpoints=1), out)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["latest", "step_00000004"]  # pruned to one, stale .tmp replaced
    step_dir = out / "checkpoints" / "step_00000004"
    assert {p.name for p in step_dir.iterdir()} == {
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
        "config.json",
        "rng_rank0.json",
        "export",
    }
    _, opt_state, state = ckpt.read_checkpoint(step_dir)
    assert state["step"] == 4 and set(opt_state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    from accelerate.state import AcceleratorState

    with pytest.raises(ValueError, match="pass --resume"):
        AcceleratorState._reset_state(True)
        train(ToyTask(), _config(max_steps=4), out)
    with pytest.raises(ValueError, match=r"config differs in \['task.dropout'\]"):
        AcceleratorState._reset_state(True)
        train(ToyTask(dropout=0.5), _config(max_steps=4), out, resume=True)
    state["format_version"] = 999
    (step_dir / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="format version 999 differs"):
        AcceleratorState._reset_state(True)
        train(ToyTask(), _config(max_steps=4), out, resume=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    result = train(ToyTask(dropout=0.0), _config(grad_accum_steps=1, max_steps=4), out)
    from accelerate import PartialState

    state = PartialState()
    assert state.distributed_type.value == "MULTI_CPU" and state.backend == "gloo"
    weights = torch.cat([p.detach().flatten() for p in _load_model(Path(out)).parameters()])
    torch.save({"losses": result.losses, "weights": weights}, Path(out) / f"rank{rank}.pt")


def _load_model(out: Path) -> nn.Module:
    from safetensors.torch import load_file

    model = ToyTask().build_model()
    model.load_state_dict(load_file(str(ckpt.latest_checkpoint(out) / "model.safetensors")))
    return model


def test_two_gloo_processes_match_one_process_with_accumulation(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    # Process r reads micro-batch index s * 2 + r: the data one process reads with 2 accumulation steps.
    train(ToyTask(dropout=0.0), _config(grad_accum_steps=2, max_steps=4), tmp_path / "single")
    weights = torch.cat([p.detach().flatten() for p in _load_model(tmp_path / "single").parameters()])
    torch.testing.assert_close(r0["weights"], weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r0["weights"], r1["weights"], rtol=0, atol=0)
    assert r0["losses"] != r1["losses"]  # each process saw its own micro-batches
    assert sorted(p.name for p in (out / "checkpoints/step_00000004").glob("rng_rank*.json")) == [
        "rng_rank0.json",
        "rng_rank1.json",
    ]
