"""One training loop for every method: the U-Net, pix2pix and the CycleGAN.

The split follows pytorch-CycleGAN-and-pix2pix's ``BaseModel``, without its global options:

- a :class:`Method` owns what differs: its named ``networks``, ``optimizers`` and
  ``schedulers``, its data (:meth:`Method.loader`), the algorithm of one step
  (:meth:`Method.train_step`, returning the loss parts), :meth:`Method.validate`, and any extra
  state to save (image pools);
- the :class:`Engine` owns what is common: device, mixed precision with one ``GradScaler``,
  channels-last, seeding, DDP under ``torchrun``, the epoch loop with a progress bar of the loss
  parts, the time budget, history.csv, best/last selection on the method's monitored value,
  atomic checkpoints every epoch and exact resume, also from the middle of an epoch that a
  time budget cut short (it resumes at the next batch; it is never counted as complete).

A run folder that already holds a run is never silently replaced: ``run`` refuses unless it
resumes or is told to overwrite. Resuming refuses a checkpoint whose plan (method, networks,
settings, data) differs, naming the fields; :data:`CHANGEABLE_ON_RESUME` lists what may differ.

A method plugs in as ``nucseg.method`` shows.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from nucseg import checkpoint as ckpt
from nucseg.errors import EngineError
from nucseg.method import CHANGEABLE_ON_RESUME, Method
from nucseg.run_folder import RUN_FILES, check_run_folder, plan_differences, write_history
from nucseg.runtime import amp_dtype, resolve_amp, resolve_device

__all__ = [
    "CHANGEABLE_ON_RESUME", "Engine", "EngineError", "EngineSettings", "Method", "RUN_FILES",
    "TrainResult", "plan_differences", "run_distributed", "seed_everything", "train_method",
    "write_history",
]  # fmt: skip


@dataclass(frozen=True)
class EngineSettings:
    """What the engine needs to know, whatever the method.

    Attributes:
        out_dir: Where ``best.pt``, ``last.pt`` and ``history.csv`` go.
        epochs: Planned epochs (methods plan their learning-rate schedules on them).
        max_minutes: Time budget of one call (> 0); training stops at the first step after
            it and saves ``last.pt``; ``--resume`` continues from the next batch. None = no
            limit.
        validate_every: Validation period in epochs (the last epoch always validates).
        seed: Seed of python, numpy and torch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see ``nucseg.runtime``).
        amp: Mixed precision (autocast, plus a ``GradScaler`` for float16); None = on for CUDA
            and for a CPU with native bfloat16 (``nucseg.runtime.resolve_amp``).
        channels_last: Channels-last memory format; None = on (faster on CUDA and the CPU).
        threads: CPU threads; None = all cores, shared among DDP processes.

    """

    out_dir: str | Path = "runs/train"
    epochs: int = 1
    max_minutes: float | None = None
    validate_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    threads: int | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a training run did (on DDP, meaningful on rank 0).

    Attributes:
        best_value: Best value of the monitored metric (None without one or without data).
        best_epoch: Epoch (1-based) of ``best.pt``.
        epochs_run: Completed epochs in total, including those before a resume (an epoch cut
            short by the time budget does not count).
        seconds: Wall time of this call.
        best_path: ``out_dir/best.pt``.
        last_path: ``out_dir/last.pt``.
        history_path: ``out_dir/history.csv``.
        stopped_early: The ``max_minutes`` budget ended the run.
        monitor: Name of the monitored metric (e.g. ``"val_aji"``), or None.
        epoch_step: Steps done in the epoch the budget cut short (0 when none was).

    """

    best_value: float | None
    best_epoch: int | None
    epochs_run: int
    seconds: float
    best_path: Path
    last_path: Path
    history_path: Path
    stopped_early: bool
    monitor: str | None = "val_aji"
    epoch_step: int = 0

    @property
    def best_val_aji(self) -> float | None:
        """The best validation AJI, for methods that monitor ``val_aji``."""
        return self.best_value if self.monitor == "val_aji" else None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Engine:
    """Runs a :class:`Method`: the loop, checkpoints, history and resume (see the module doc)."""

    def __init__(
        self, method: Method, settings: EngineSettings, rank: int = 0, world: int = 1
    ) -> None:
        s = self.settings = settings
        if s.epochs < 1 or s.validate_every < 1:
            raise EngineError(f"epochs and validate_every must be >= 1; got {s}")
        if s.max_minutes is not None and not s.max_minutes > 0:
            raise EngineError(f"max_minutes must be > 0 or None; got {s.max_minutes}")
        self.method, self.rank, self.world = method, rank, world
        self.device = resolve_device(s.device, int(os.environ.get("LOCAL_RANK", 0)))
        cuda = self.device.type == "cuda"
        self.amp = resolve_amp(self.device, s.amp)  # CUDA; the CPU where bf16 is native
        channels_last = s.channels_last is None or s.channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels
        else:
            cores = min(torch.get_num_threads(), os.cpu_count() or 1)
            torch.set_num_threads(s.threads or max(1, cores // world))
        # float16 needs loss scaling; bfloat16 (and fp32) do not, so the scaler is then a no-op.
        scaled = self.amp and amp_dtype(self.device) == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaled)
        self.out = Path(s.out_dir)
        self.epoch = self.step = 0
        # Progress inside an epoch that the time budget cut short: steps done, loss-part sums.
        self.epoch_step = 0
        self.partial_sums: dict[str, torch.Tensor] = {}
        self.seconds = 0.0
        self.best: dict[str, Any] = {"monitor": method.monitor, "value": None, "epoch": None}
        self.history: list[dict[str, Any]] = []
        method.attach(self)

    # --- checkpoints --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The format-2 checkpoint dict of the current state."""
        m = self.method
        return {
            "format": ckpt.FORMAT,
            "method": m.name,
            "networks": {name: ckpt.network_entry(net) for name, net in m.networks.items()},
            "inference_network": m.inference_network,
            "optimizers": {name: opt.state_dict() for name, opt in m.optimizers.items()},
            "schedulers": {name: sch.state_dict() for name, sch in m.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "epoch_step": self.epoch_step,
            "partial_sums": dict(self.partial_sums),
            "seconds": self.seconds,
            "rng": ckpt.capture_rng(),
            "best": dict(self.best),
            "history": list(self.history),
            "extra": m.extra_state(),
            "postprocess": m.postprocess_state(),
            "meta": {**m.meta(), "plan": self.plan(), "world_size": self.world,
                     "torch": str(torch.__version__)},
        }  # fmt: skip

    def plan(self) -> dict[str, Any]:
        """The method's plan plus the engine settings a resumed run must share.

        Mixed precision and memory format follow the device, which may change on resume.
        """
        s = self.settings
        return {"epochs": s.epochs, "seed": s.seed, "validate_every": s.validate_every,
                **self.method.plan()}  # fmt: skip

    def resume(self, path: Path) -> None:
        """Restore everything saved in ``path``; refuse a checkpoint of another plan."""
        m, state = self.method, ckpt.load_checkpoint(path, map_location=self.device)
        specs = {name: dict(net.build_spec) for name, net in m.networks.items()}
        stored = {name: entry["spec"] for name, entry in state["networks"].items()}
        if state.get("method") != m.name or stored != specs:
            raise EngineError(
                f"{path}: checkpoint of method {state.get('method')!r} with networks {stored}; "
                f"this run is {m.name!r} with {specs}: cannot resume it"
            )
        differences = plan_differences(state.get("meta", {}).get("plan") or {}, self.plan())
        if differences:
            raise EngineError(
                f"{path}: cannot resume, the run's settings differ from the checkpoint's: "
                + "; ".join(differences)
                + f" (only {', '.join(CHANGEABLE_ON_RESUME)} may change on resume; "
                "to start afresh, overwrite)"
            )
        for name, net in m.networks.items():
            net.load_state_dict(state["networks"][name]["state_dict"])
        for kind, objects in (("optimizers", m.optimizers), ("schedulers", m.schedulers)):
            for name, obj in objects.items():
                obj.load_state_dict(state[kind][name])
        if state.get("scaler"):  # empty when saved without a scaler
            self.scaler.load_state_dict(state["scaler"])
        m.load_extra_state(state.get("extra") or {})
        ckpt.restore_rng(state["rng"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], dict(state["best"])
        self.epoch_step = int(state.get("epoch_step", 0))
        self.partial_sums = dict(state.get("partial_sums") or {})
        self.history = list(state["history"])
        previous = self.history[-1]["seconds"] if self.history else 0.0
        self.seconds = float(state.get("seconds", previous))

    # --- the loop -----------------------------------------------------------------------
    def _agree(self, flag: bool) -> bool:
        """Every process stops together: true if any process says so."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _step_schedulers(self) -> None:
        for scheduler in self.method.schedulers.values():
            scheduler.step()

    def _batches(self) -> Iterable[Any]:
        """The current epoch's batches, from the first one not yet trained on."""
        batches = self.method.loader(self.epoch)
        if not self.epoch_step:
            return batches
        # Skipping draws the skipped batches again; the random state must not notice.
        rng = ckpt.capture_rng()
        iterator = iter(batches)
        for _ in range(self.epoch_step):
            next(iterator)
        ckpt.restore_rng(rng)
        return iterator

    def train_one_epoch(self, bar: tqdm, deadline: float | None) -> tuple[dict[str, float], bool]:
        """Train the rest of the epoch, or until the deadline.

        Returns:
            The epoch's mean loss parts, and whether the epoch was completed. An epoch cut
            short keeps its progress in ``epoch_step`` and ``partial_sums`` (checkpointed).
        """
        m = self.method
        for net in m.networks.values():
            net.train()
        for batch in itertools.islice(self._batches(), m.steps_per_epoch() - self.epoch_step):
            parts = m.train_step(batch)
            self.scaler.update()
            if m.scheduler_interval == "step":
                self._step_schedulers()
            self.step += 1
            self.epoch_step += 1
            for key, value in parts.items():
                previous = self.partial_sums.get(key, 0.0)
                self.partial_sums[key] = previous + value.detach().float()
            bar.update(1)
            if self.epoch_step % 10 == 1:
                bar.set_postfix({k: f"{v.item():.3f}" for k, v in parts.items()})
            if self._agree(deadline is not None and time.monotonic() > deadline):
                break
        n = self.epoch_step
        if n < m.steps_per_epoch():
            return {}, False
        means = {k: float(v) / n for k, v in self.partial_sums.items()}
        self.epoch_step, self.partial_sums = 0, {}
        return means, True

    def _is_better(self, value: float | None) -> bool:
        if value is None:
            return False
        best = self.best["value"]
        if best is None:
            return True
        return value > best if self.method.monitor_mode == "max" else value < best

    def _claim_folder(self, resume: bool, overwrite: bool) -> bool:
        """Check the run folder (see :func:`check_run_folder`); returns whether to resume.

        Overwriting deletes the run files first, so that old and new never mix.
        """
        resuming = check_run_folder(self.out, resume, overwrite)
        if overwrite:
            if self.rank == 0:
                for name in RUN_FILES:
                    (self.out / name).unlink(missing_ok=True)
            if self.world > 1:
                dist.barrier()
        return resuming

    def run(
        self, resume: bool = False, until_epoch: int | None = None, overwrite: bool = False
    ) -> TrainResult:
        """Train up to ``epochs`` (or ``until_epoch``) epochs.

        Args:
            resume: Continue from ``out_dir/last.pt`` if it exists.
            until_epoch: Stop after this many completed epochs (schedules span ``epochs``).
            overwrite: Delete the run files already in ``out_dir`` and start afresh.

        Raises:
            EngineError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``
                is set, or the checkpoint does not fit this run.

        """
        start = time.monotonic()
        s, m = self.settings, self.method
        last, best = self.out / "last.pt", self.out / "best.pt"
        deadline = None if s.max_minutes is None else start + 60.0 * s.max_minutes
        if self._claim_folder(resume, overwrite):
            self.resume(last)
        end = min(s.epochs, until_epoch or s.epochs)
        per_epoch = m.steps_per_epoch()
        bar = tqdm(total=end * per_epoch, initial=self.step, unit="step",
                   desc=f"train {m.name}", disable=self.rank != 0)  # fmt: skip
        time_up = False
        while self.epoch < end and not time_up:
            epoch_start = time.monotonic()
            parts, complete = self.train_one_epoch(bar, deadline)
            self.seconds += time.monotonic() - epoch_start
            if not complete:  # the budget ran out mid-epoch: keep the progress, count nothing
                if self.rank == 0:
                    ckpt.save_checkpoint(self.state(), last)
                break
            self.epoch += 1
            time_up = deadline is not None and self._agree(time.monotonic() > deadline)
            if m.scheduler_interval == "epoch":
                self._step_schedulers()
            # Not when only the budget ends the epoch: a run in chunks validates as one does.
            due = self.epoch % s.validate_every == 0 or self.epoch == end
            validation_start = time.monotonic()
            metrics = m.validate() if due and self.rank == 0 else {}
            self.seconds += time.monotonic() - validation_start
            value = metrics.get(m.monitor) if m.monitor else None
            improved = self._is_better(value)
            no_score = m.monitor is None or (self.best["value"] is None and value is None)
            if improved or no_score:
                self.best = {"monitor": m.monitor, "value": value, "epoch": self.epoch}
            lrs = {f"lr_{k}" if len(m.optimizers) > 1 else "lr": o.param_groups[0]["lr"]
                   for k, o in m.optimizers.items()}  # fmt: skip
            row = {"epoch": self.epoch, "step": self.step, **parts}
            if m.monitor:
                row[m.monitor] = value
            self.history.append({**row, **metrics, **lrs, "seconds": self.seconds})
            bar.set_postfix({k: f"{v:.3f}" for k, v in {**parts, **metrics}.items()})
            if self.rank == 0:
                state = self.state()
                ckpt.save_checkpoint(state, last)
                if improved or no_score:
                    ckpt.save_checkpoint(state, best)
                write_history(self.history, self.out / "history.csv")
            if self.world > 1:
                dist.barrier()
        bar.close()
        return TrainResult(self.best["value"], self.best["epoch"], self.epoch,
                           time.monotonic() - start, best, last, self.out / "history.csv",
                           self.epoch_step > 0 or time_up, m.monitor,
                           self.epoch_step)  # fmt: skip


def run_distributed(
    make_method: Any,
    settings: EngineSettings,
    resume: bool = False,
    until_epoch: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Build a method and train it, single process or under ``torchrun``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is set up from the environment
    (NCCL on CUDA, gloo on the CPU), only rank 0 validates, saves and shows progress, and the
    group is destroyed at the end.

    Args:
        make_method: ``make_method(rank, world) -> Method`` (a method shards its data by rank).
        settings: Engine settings.
        resume: Continue from ``out_dir/last.pt`` when it exists.
        until_epoch: Stop after this many completed epochs (schedules still span ``epochs``).
        overwrite: Replace a run already in ``out_dir`` (see :meth:`Engine.run`).

    Returns:
        A :class:`TrainResult`.

    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        device = resolve_device(settings.device, int(os.environ.get("LOCAL_RANK", 0)))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        rank = dist.get_rank() if world > 1 else 0
        check_run_folder(Path(settings.out_dir), resume, overwrite)  # before loading any data
        seed_everything(settings.seed)
        method = make_method(rank, world)
        return Engine(method, settings, rank, world).run(resume, until_epoch, overwrite)
    finally:
        if owns_group:
            dist.destroy_process_group()


def train_method(
    method_cls: Any,
    config: Any,
    resume: bool = False,
    until_epoch: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``method_cls(config, rank, world)`` with ``config.engine_settings()``.

    A missing device fails before any data is loaded; see :func:`run_distributed`.
    """
    resolve_device(config.device)
    return run_distributed(
        lambda rank, world: method_cls(config, rank, world),
        config.engine_settings(),
        resume=resume,
        until_epoch=until_epoch,
        overwrite=overwrite,
    )
