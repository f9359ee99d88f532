"""The project's one training loop: every stage (tokenizers, the GST backbone) runs through ``train``.

What it does (stages differ only by their ``Task``, see ``gst.training.task``):

- ``accelerate``: one ``Accelerator``; single process, DDP or FSDP as ``accelerate launch`` configures
  (CPU processes use the gloo backend). bf16 autocast on CUDA (``mixed_precision="auto"``), or also on
  CPUs that compute bf16 natively (``"native"``, ``resolve_precision``).
- Gradient accumulation (DDP gradients are synchronised on the last micro-batch only), global gradient
  norm clipping, AdamW with a linear warm-up and cosine decay (``gst.training.config.lr_factor``),
  set explicitly per update so the schedule needs no state of its own.
- Deterministic data: micro-batch ``index = (update * A + micro) * P + rank`` is drawn by
  ``task.batch`` with a generator seeded from ``(seed, index)``.
- Checkpoints every ``checkpoint_every`` updates, written atomically (``gst.training.checkpoint``) with
  the model, the flattened optimizer state, the config and every process's RNG states, so that a
  resumed run continues bit-exactly (on CPU) where the interrupted one stopped.
- A time budget (``max_minutes``, on the wall clock or the process CPU clock: ``budget_clock``) beside
  ``max_steps``: the loop's own time (updates, periodic evaluations and checkpoints; not the task's
  data loading before it) is summed over resumed calls and saved in every checkpoint; a run stops at
  the first limit reached, and every process takes the largest clock of all, so all stop at the same
  update with the same learning rate.
- Every export carries ``training.json`` (``TRAINING_RECORD``): the command, the steps, and the loop's
  wall-clock and process CPU minutes, so a deployed artefact says what it cost.
- TensorBoard scalars (``OUT/tensorboard``) and a tqdm progress bar on the main process.

Glossary: A gradient-accumulation micro-batches per update, P processes.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gst.training import checkpoint as ckpt
from gst.training.config import TrainConfig, lr_factor
from gst.training.overrides import to_dict
from gst.training.task import Task

# Config keys that may change between an interrupted run and its resumption: they do not change the
# optimisation (max_steps does change the cosine schedule; a notice says so).
_RESUMABLE_CHANGES = {
    "train.max_steps", "train.progress", "train.tensorboard", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.eval_every", "train.max_minutes", "train.budget_clock",
}  # fmt: skip
TRAINING_RECORD = "training.json"  # written into every export folder (see _training_record)


def _now() -> float:
    """The loop's wall clock in seconds (a function, so tests can replace it)."""
    return time.perf_counter()


def _cpu_now() -> float:
    """This process's CPU time in seconds, all threads (replaceable in tests like ``_now``)."""
    return time.process_time()


@dataclass
class TrainResult:
    """What a call to ``train`` did. ``losses`` holds the mean loss of each update it ran."""

    step: int  # completed optimizer updates
    losses: list[float] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None  # the last checkpoint written
    resumed_from: int | None = None  # the step of the checkpoint it resumed from
    stopped_by: str = "max_steps"  # "max_steps", "max_minutes" or "stop_at_step"
    train_seconds: float = 0.0  # the loop's wall-clock seconds, summed over resumed calls
    cpu_seconds: float = 0.0  # the process's CPU seconds in the loop (all threads), summed likewise


def micro_batch_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for micro-batch ``index`` (NumPy SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _make_accelerator(config: TrainConfig, task: Task):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    on_cuda = torch.cuda.is_available()
    precision = resolve_precision(config.mixed_precision, on_cuda)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=task.find_unused_parameters)]
    return Accelerator(cpu=not on_cuda, mixed_precision=precision, kwargs_handlers=handlers)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles, as torch reports them)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(requested: str, on_cuda: bool, native_bf16: bool | None = None) -> str:
    """``train.mixed_precision`` as accelerate takes it ("no" or "bf16"): "auto" is bf16 on CUDA only,
    "native" bf16 on CUDA or where the CPU computes bf16 natively (``native_bf16``, default
    ``native_cpu_bf16()``). An explicit "bf16" on a CPU without it is kept, with a warning: torch then
    emulates bf16, and a training update took 11 times as long as in full precision on an AVX2 CPU
    (docs/training.md, "Mixed precision on the CPU")."""
    native = on_cuda or (native_cpu_bf16() if native_bf16 is None else native_bf16)
    if requested == "auto":
        return "bf16" if on_cuda else "no"
    if requested == "native":
        return "bf16" if native else "no"
    if requested == "bf16" and not native:
        print(
            "WARNING: train.mixed_precision=bf16 on a CPU without native bf16 (torch reports "
            f"{torch.backends.cpu.get_cpu_capability()}, no AVX-512 BF16 or AMX): bf16 is emulated and "
            "training runs many times slower than in full precision; set train.mixed_precision=native "
            "(bf16 only where it is native) or no",
            file=sys.stderr,
        )
    return requested


def _full_config(task: Task, config: TrainConfig) -> dict[str, Any]:
    return {"task_name": task.name, "task": task.config_dict(), "train": to_dict(config)}


def _check_resume_config(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    diffs = ckpt.config_differences(saved, current)
    blocking = [d for d in diffs if d not in _RESUMABLE_CHANGES]
    if blocking:
        raise ValueError(
            f"{where}: cannot resume, the config differs in {blocking}; resume with the same preset and "
            "--set values, or start a new run in another --out folder"
        )
    if "train.max_steps" in diffs:
        print(
            f"gst: notice: train.max_steps changed from {saved['train']['max_steps']} to "
            f"{current['train']['max_steps']}; the cosine schedule is recomputed for the new length",
            file=sys.stderr,
        )


@dataclass
class _Run:
    """The live objects of one call to ``train``."""

    accelerator: Any
    model: torch.nn.Module  # wrapped (DDP/FSDP) as accelerate prepared it
    unwrapped: torch.nn.Module
    optimizer: Any
    full_config: dict[str, Any]
    checkpoints_dir: Path
    step: int
    existing: Path | None  # the checkpoint resumed from
    command: str  # the command line recorded in every export
    writer: Any = None  # TensorBoard SummaryWriter on the main process
    train_seconds: float = 0.0  # wall clock spent in the loop so far, over all calls (see _Clock)
    cpu_seconds: float = 0.0


def train(
    task: Task,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_at_step: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train ``task`` for ``config.max_steps`` updates or ``config.max_minutes``, whichever ends first,
    checkpointing into ``out_dir``.

    ``resume``: continue from the newest checkpoint in ``out_dir`` (a notice, then a fresh start, if
    there is none). Without it, a folder that already holds checkpoints is an error, so a run is never
    overwritten by accident. ``stop_at_step`` ends early after that many updates (with a checkpoint),
    as an interruption would; the schedule still spans ``max_steps``. ``command``: the command line
    recorded in every export's ``training.json`` (default: this process's ``sys.argv``).
    """
    from tqdm.auto import tqdm

    command = command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    run = _setup(task, config, Path(out_dir), resume, command)
    main = run.accelerator.is_main_process
    result = TrainResult(step=run.step, resumed_from=run.step if run.existing is not None else None)
    bar = tqdm(
        total=config.max_steps,
        initial=run.step,
        disable=not (main and config.progress),
        desc=task.name,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    end = config.max_steps if stop_at_step is None else min(stop_at_step, config.max_steps)
    clock = _Clock(run)
    while run.step < end and not _budget_spent(run, config):
        sums = _update(run, task, config, _budget_fraction(run, config))
        run.step += 1
        clock.tick(synced=config.max_minutes > 0)
        if _budget_spent(run, config):
            end = run.step  # the last update: log it, and leave the save to the final one below
        step = run.step
        result.losses.append(sums["loss"])
        result.last_metrics = sums
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss']:.4g}", refresh=False)
        if on_step is not None:
            on_step(step, sums)
        if step % config.log_every == 0 or step == end:
            _log(run, sums)
        if config.eval_every and step % config.eval_every == 0 and step < end:
            _evaluate(run, task)
        if step % config.checkpoint_every == 0 and step < end:
            result.checkpoint = _save(run, task, config)
    bar.close()
    clock.tick(synced=False)
    return _finish(run, task, config, result)


def _finish(run: _Run, task: Task, config: TrainConfig, result: TrainResult) -> TrainResult:
    """The final checkpoint and evaluation of a call to ``train``, and why it stopped."""
    # Periodic saves skip the last update, so a call that ran any update always saves here.
    result.checkpoint = _save(run, task, config) if result.losses else run.existing
    result.eval_metrics = _evaluate(run, task)
    result.step = run.step
    if run.step >= config.max_steps:
        result.stopped_by = "max_steps"
    else:
        result.stopped_by = "max_minutes" if _budget_spent(run, config) else "stop_at_step"
    result.train_seconds, result.cpu_seconds = run.train_seconds, run.cpu_seconds
    if run.writer is not None:
        run.writer.close()
    run.accelerator.wait_for_everyone()
    return result


def _budget_fraction(run: _Run, config: TrainConfig) -> float:
    """The share of ``max_minutes`` spent on its clock (0 without a budget)."""
    if config.max_minutes <= 0:
        return 0.0
    spent = run.cpu_seconds if config.budget_clock == "cpu" else run.train_seconds
    return spent / (config.max_minutes * 60.0)


def _budget_spent(run: _Run, config: TrainConfig) -> bool:
    return config.max_minutes > 0 and _budget_fraction(run, config) >= 1.0


class _Clock:
    """Adds the loop's wall-clock and CPU time of this call to what earlier calls of the run spent."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.base_wall, self.base_cpu = run.train_seconds, run.cpu_seconds
        self.start_wall, self.start_cpu = _now(), _cpu_now()

    def tick(self, *, synced: bool) -> None:
        """Update ``run.train_seconds`` / ``cpu_seconds``. ``synced``: take the largest clocks of all
        processes (a collective: every process calls it at the same update), so that budget stops and
        budget-driven learning rates agree across processes."""
        run = self.run
        wall = self.base_wall + (_now() - self.start_wall)
        cpu = self.base_cpu + (_cpu_now() - self.start_cpu)
        if synced and run.accelerator.num_processes > 1:
            both = torch.tensor([[wall, cpu]], dtype=torch.float64, device=run.accelerator.device)
            wall, cpu = (float(v) for v in run.accelerator.gather(both).amax(0))
        run.train_seconds, run.cpu_seconds = wall, cpu


def _setup(task: Task, config: TrainConfig, out_dir: Path, resume: bool, command: str) -> _Run:
    """Accelerator, model, optimizer, and the state of the checkpoint resumed from (if any)."""
    from accelerate.utils import set_seed

    accelerator = _make_accelerator(config, task)
    rank, world = accelerator.process_index, accelerator.num_processes
    existing = ckpt.latest_checkpoint(out_dir) if out_dir.exists() else None
    if existing is not None and not resume:
        raise ValueError(
            f"{out_dir}: already holds checkpoints ({existing.name}); pass --resume to continue that run "
            "or choose another --out folder"
        )
    if resume and existing is None and accelerator.is_main_process:
        print(
            f"gst: notice: --resume given but {out_dir / 'checkpoints'} has no checkpoint; starting "
            "from step 0",
            file=sys.stderr,
        )

    set_seed(config.seed)  # identical initial weights on every process
    model = task.build_model()
    groups = task.param_groups(model, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))
    model, optimizer = accelerator.prepare(model, optimizer)
    run = _Run(
        accelerator=accelerator,
        model=model,
        unwrapped=accelerator.unwrap_model(model),
        optimizer=optimizer,
        full_config=_full_config(task, config),
        checkpoints_dir=out_dir / "checkpoints",
        step=0,
        existing=existing,
        command=command,
    )
    if existing is not None:
        model_state, optimizer_state, trainer_state = ckpt.read_checkpoint(existing)
        _check_resume_config(trainer_state["config"], run.full_config, existing)
        run.unwrapped.load_state_dict(model_state, strict=True)
        _load_optimizer_state(run, optimizer_state)
        run.step = int(trainer_state["step"])
        run.train_seconds = float(trainer_state.get("train_seconds", 0.0))
        run.cpu_seconds = float(trainer_state.get("cpu_seconds", 0.0))
        rng_file = existing / f"rng_rank{rank}.json"
        if trainer_state.get("num_processes") != world or not rng_file.exists():
            print(
                f"gst: notice: {existing} was written by {trainer_state.get('num_processes')} processes, "
                f"this run has {world}; data order and RNG streams continue differently",
                file=sys.stderr,
            )
            set_seed(config.seed + 1 + rank + run.step)
        else:
            ckpt.set_rng_state(json.loads(rng_file.read_text()))
    else:
        set_seed(config.seed + 1 + rank)  # per-process streams for the model's own randomness

    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(run.full_config, indent=2) + "\n")
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=run.step)
    return run


def _update(run: _Run, task: Task, config: TrainConfig, budget_fraction: float) -> dict[str, float]:
    """One optimizer update over A micro-batches; returns the metrics averaged over them.
    ``budget_fraction``: the share of ``max_minutes`` spent before it (``lr_factor``)."""
    from accelerate.utils import send_to_device

    accelerator, model, optimizer = run.accelerator, run.model, run.optimizer
    t0 = time.perf_counter()
    factor = lr_factor(run.step, config, budget_fraction)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * factor * group.get("lr_scale", 1.0)
    A, world, rank = config.grad_accum_steps, accelerator.num_processes, accelerator.process_index
    sums: dict[str, float] = {}
    for micro in range(A):
        index = (run.step * A + micro) * world + rank
        generator = torch.Generator().manual_seed(micro_batch_seed(config.seed, index))
        batch = send_to_device(task.batch(index, generator, config.batch_size), accelerator.device)
        # DDP all-reduces gradients only on the last micro-batch of an update.
        sync = accelerator.no_sync(model) if micro < A - 1 else nullcontext()
        with sync, accelerator.autocast():
            loss, metrics = task.loss(model, batch, run.step)
            accelerator.backward(loss / A)
        for k, v in {"loss": float(loss.detach()), **metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(v) / A
    if config.grad_clip > 0:
        sums["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), config.grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums["lr"] = config.lr * factor
    sums["step_time_s"] = time.perf_counter() - t0
    return sums


def _log(run: _Run, sums: dict[str, float]) -> None:
    """Mean of the loss over processes (a collective: every process calls this at the same steps)."""
    loss = torch.tensor([sums["loss"]], device=run.accelerator.device)
    mean_loss = float(run.accelerator.reduce(loss, reduction="mean"))
    if run.writer is not None:
        for key, value in {**sums, "loss": mean_loss}.items():
            run.writer.add_scalar(f"train/{key}", value, run.step)


def _evaluate(run: _Run, task: Task) -> dict[str, float]:
    """task.evaluate on the main process, without disturbing any RNG stream (so eval never changes
    training)."""
    accelerator, unwrapped, writer, step = run.accelerator, run.unwrapped, run.writer, run.step
    metrics: dict[str, float] = {}
    if accelerator.is_main_process:
        state = ckpt.rng_state()
        was_training = unwrapped.training
        unwrapped.eval()
        with torch.no_grad():
            metrics = task.evaluate(unwrapped, step)
        unwrapped.train(was_training)
        ckpt.set_rng_state(state)
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"eval/{key}", value, step)
    accelerator.wait_for_everyone()
    return metrics


def _is_fsdp(run: _Run) -> bool:
    from accelerate.utils import DistributedType

    return run.accelerator.distributed_type == DistributedType.FSDP


def _optimizer_state(run: _Run) -> dict[str, Any]:
    """The full optimizer state (a collective under FSDP, whose state is sharded across processes)."""
    if _is_fsdp(run):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.optim_state_dict(run.model, run.optimizer.optimizer)
    return run.optimizer.state_dict()


def _load_optimizer_state(run: _Run, state: dict[str, Any]) -> None:
    if _is_fsdp(run):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        state = FSDP.optim_state_dict_to_load(run.model, run.optimizer.optimizer, state)
    run.optimizer.load_state_dict(state)


def _save(run: _Run, task: Task, config: TrainConfig) -> Path:
    """Write one checkpoint atomically; every process calls this (the RNG files are per process)."""
    accelerator, model, step, checkpoints_dir = run.accelerator, run.model, run.step, run.checkpoints_dir
    main = accelerator.is_main_process
    if main:
        ckpt.prepare_tmp_dir(checkpoints_dir, step)
    accelerator.wait_for_everyone()
    tmp = checkpoints_dir / (ckpt.step_dir_name(step) + ".tmp")
    model_state = accelerator.get_state_dict(model)  # gathers full weights under FSDP
    optimizer_state = _optimizer_state(run)
    if main:
        trainer_state = {
            "step": step,
            "num_processes": accelerator.num_processes,
            "task_name": task.name,
            "config": run.full_config,
            "train_seconds": run.train_seconds,
            "cpu_seconds": run.cpu_seconds,
        }
        ckpt.write_main_files(
            tmp,
            model_state=model_state,
            optimizer_state=optimizer_state,
            trainer_state=trainer_state,
            config=run.full_config,
        )
        export_dir = tmp / "export"
        export_dir.mkdir()
        task.export(run.unwrapped, export_dir)
        record = _training_record(run, task, config)
        (export_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    ckpt.write_rng_file(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    final = checkpoints_dir / ckpt.step_dir_name(step)
    if main:
        ckpt.finalize(checkpoints_dir, step, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return final


def _training_record(run: _Run, task: Task, config: TrainConfig) -> dict[str, Any]:
    """What an export cost: the command, the steps, the loop's wall-clock and CPU minutes (summed over
    resumed calls; data loading before the loop is not counted) and the threads they ran on."""
    return {
        "format": "gst.training_record.v1",
        "task": task.name,
        "command": run.command,
        "step": run.step,
        "max_steps": config.max_steps,
        "max_minutes": config.max_minutes,
        "budget_clock": config.budget_clock,
        "wall_minutes": run.train_seconds / 60.0,
        "cpu_minutes": run.cpu_seconds / 60.0,  # process CPU time of the main process, all its threads
        "torch_threads": torch.get_num_threads(),
        "num_processes": run.accelerator.num_processes,
        "device": str(run.accelerator.device),
        "mixed_precision": str(run.accelerator.mixed_precision),
    }


__all__ = ["TRAINING_RECORD", "TrainConfig", "TrainResult", "micro_batch_seed", "train"]
