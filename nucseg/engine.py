"""One training loop for every method: the U-Net, pix2pix and the CycleGAN.

The split follows pytorch-CycleGAN-and-pix2pix's ``BaseModel``, without its global options:

- a :class:`Method` owns what differs: its named ``networks``, ``optimizers`` and
  ``schedulers``, its data (:meth:`Method.loader`), the algorithm of one step
  (:meth:`Method.train_step`, returning the loss parts), :meth:`Method.validate`, and any extra
  state to save (image pools);
- the :class:`Engine` owns what is common: device, mixed precision with one ``GradScaler``,
  channels-last, seeding, DDP under ``torchrun``, the epoch loop with a progress bar of the loss
  parts, the time budget, history.csv, best/last selection on the method's monitored value,
  atomic checkpoints every epoch and exact resume.

A method plugs in like this::

    class MyGAN(Method):
        name, monitor = "mygan", None              # no validation score: best = last
        def __init__(self, ...):
            super().__init__()
            self.networks = {"G": build_model("unet", ...), "D": build_model("patchgan", ...)}
            self.optimizers = {"G": Adam(...), "D": Adam(...)}
        def loader(self, epoch): ...               # batches of that epoch, deterministic
        def train_step(self, batch):
            fake = self.net("G")(batch.image)
            self.set_requires_grad("D", False)      # frozen: called unwrapped under DDP
            loss_g = ...; self.backward(loss_g); self.step("G")
            self.set_requires_grad("D", True)
            loss_d = ...; self.backward(loss_d); self.step("D")
            return {"G": loss_g, "D": loss_d}

    Engine(MyGAN(...), EngineSettings(out_dir="runs/x", epochs=10)).run()
"""

from __future__ import annotations

import csv
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from nucseg import checkpoint as ckpt
from nucseg.errors import NucsegError
from nucseg.runtime import amp_dtype, atomic_write, autocast, resolve_device


class EngineError(NucsegError, ValueError):
    """A training setting is invalid, or a checkpoint does not fit the run being resumed."""


@dataclass(frozen=True)
class EngineSettings:
    """What the engine needs to know, whatever the method.

    Attributes:
        out_dir: Where ``best.pt``, ``last.pt`` and ``history.csv`` go.
        epochs: Planned epochs (methods plan their learning-rate schedules on them).
        max_minutes: Time budget of one call; training stops after it, then still validates
            and saves. None = no limit.
        validate_every: Validation period in epochs (the last epoch always validates).
        seed: Seed of python, numpy and torch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see ``nucseg.runtime``).
        amp: Mixed precision (autocast + ``GradScaler``); None = on for CUDA only.
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
        epochs_run: Completed epochs in total, including those before a resume.
        seconds: Wall time of this call.
        best_path: ``out_dir/best.pt``.
        last_path: ``out_dir/last.pt``.
        history_path: ``out_dir/history.csv``.
        stopped_early: The ``max_minutes`` budget ended the run.
        monitor: Name of the monitored metric (e.g. ``"val_aji"``), or None.

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

    @property
    def best_val_aji(self) -> float | None:
        """The best validation AJI, for methods that monitor ``val_aji``."""
        return self.best_value if self.monitor == "val_aji" else None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_history(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write history rows to CSV atomically; columns are the union of the rows' keys."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields) or ["epoch"], restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


class Method:
    """What one training method declares; subclasses fill the dicts in ``__init__``.

    Attributes:
        name: Method name, stored in checkpoints.
        monitor: History column that selects ``best.pt`` (None: best is the last epoch).
        monitor_mode: ``"max"`` or ``"min"``.
        scheduler_interval: Schedulers step after every ``"step"`` or every ``"epoch"``.
        networks: Named networks, built with ``nucseg.models.build_model``.
        optimizers: Named optimisers.
        schedulers: Named learning-rate schedulers.

    """

    name = "method"
    monitor: str | None = "val_aji"
    monitor_mode = "max"
    scheduler_interval = "step"

    def __init__(self) -> None:
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.engine: Engine | None = None
        self._wrapped: dict[str, nn.Module] = {}

    # --- what a method implements -------------------------------------------------------
    def loader(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch; the same epoch must give the same batches (for resume)."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """Batches per epoch on this process."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step of every network; returns the loss parts (scalar tensors)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics, e.g. ``{"val_aji": 0.6}``; empty when there is nothing to score."""
        return {}

    def plan(self) -> dict[str, Any]:
        """Facts a resumed run must share with the checkpoint (e.g. the planned steps)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """More state to checkpoint (e.g. image pools), in ``torch.load``-safe types."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""

    def meta(self) -> dict[str, Any]:
        """Facts stored in every checkpoint's ``meta`` (e.g. the config)."""
        return {}

    def postprocess_state(self) -> dict[str, Any] | None:
        """Post-processing settings that inference should use with these weights, if any."""
        return None

    # --- what the engine gives a method -------------------------------------------------
    def attach(self, engine: Engine) -> None:
        """Move the networks to the engine's device and wrap the trainable ones for DDP."""
        self.engine = engine
        for name, net in self.networks.items():
            net.to(engine.device, memory_format=engine.memory_format)
            trainable = any(p.requires_grad for p in net.parameters())
            if engine.world > 1 and trainable:
                ids = [engine.device.index] if engine.device.type == "cuda" else None
                self._wrapped[name] = DistributedDataParallel(net, ids)

    def net(self, name: str) -> nn.Module:
        """The network to call: DDP-wrapped while it trains, bare while it is frozen.

        A frozen network called through DDP would leave its gradient reduction waiting.
        """
        bare = self.networks[name]
        wrapped = self._wrapped.get(name)
        if wrapped is None or not any(p.requires_grad for p in bare.parameters()):
            return bare
        return wrapped

    def set_requires_grad(self, names: str | Sequence[str], flag: bool) -> None:
        """Freeze (False) or unfreeze (True) the named networks."""
        for name in [names] if isinstance(names, str) else names:
            for p in self.networks[name].parameters():
                p.requires_grad_(flag)

    def autocast(self) -> Any:
        """Mixed precision for the forward pass, as the engine decided."""
        return autocast(self._engine().device, self._engine().amp)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate a loss through the engine's gradient scaler."""
        self._engine().scaler.scale(loss).backward()

    def step(self, optimizer: str) -> None:
        """Update with the named optimiser (scaled), then clear its gradients."""
        opt = self.optimizers[optimizer]
        self._engine().scaler.step(opt)
        opt.zero_grad(set_to_none=True)

    def to_device(self, tensor: torch.Tensor, image: bool = False) -> torch.Tensor:
        """Move a batch tensor to the device; images (N, C, H, W) also to the memory format."""
        engine = self._engine()
        if image:
            return tensor.to(engine.device, non_blocking=True, memory_format=engine.memory_format)
        return tensor.to(engine.device, non_blocking=True)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise EngineError(f"method {self.name!r} is not attached to an engine")
        return self.engine


class Engine:
    """Runs a :class:`Method`: the loop, checkpoints, history and resume (see the module doc)."""

    def __init__(
        self, method: Method, settings: EngineSettings, rank: int = 0, world: int = 1
    ) -> None:
        s = self.settings = settings
        if s.epochs < 1 or s.validate_every < 1:
            raise EngineError(f"epochs and validate_every must be >= 1; got {s}")
        if s.max_minutes is not None and s.max_minutes < 0:
            raise EngineError(f"max_minutes must be >= 0 or None; got {s.max_minutes}")
        self.method, self.rank, self.world = method, rank, world
        self.device = resolve_device(s.device, int(os.environ.get("LOCAL_RANK", 0)))
        cuda = self.device.type == "cuda"
        self.amp = cuda if s.amp is None else bool(s.amp) and cuda
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
            "optimizers": {name: opt.state_dict() for name, opt in m.optimizers.items()},
            "schedulers": {name: sch.state_dict() for name, sch in m.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": ckpt.capture_rng(),
            "best": dict(self.best),
            "history": list(self.history),
            "extra": m.extra_state(),
            "postprocess": m.postprocess_state(),
            "meta": {**m.meta(), "plan": m.plan(), "world_size": self.world,
                     "torch": str(torch.__version__)},
        }  # fmt: skip

    def resume(self, path: Path) -> None:
        """Restore everything saved in ``path``; refuse a checkpoint of another plan."""
        m, state = self.method, ckpt.load_checkpoint(path, map_location=self.device)
        specs = {name: dict(net.build_spec) for name, net in m.networks.items()}
        stored = {name: entry["spec"] for name, entry in state["networks"].items()}
        plan = state.get("meta", {}).get("plan")
        if state.get("method") != m.name or stored != specs or plan != m.plan():
            raise EngineError(
                f"{path}: checkpoint of method {state.get('method')!r} with networks {stored} "
                f"and plan {plan}; this run is {m.name!r} with {specs} and plan {m.plan()} "
                "(same networks, epochs, crops, batch size and processes needed)"
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
        self.history = list(state["history"])
        self.seconds = self.history[-1]["seconds"] if self.history else 0.0

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

    def train_one_epoch(self, bar: tqdm, deadline: float | None) -> tuple[dict[str, float], bool]:
        """One epoch (or until the deadline): mean loss parts, and whether time is up."""
        m = self.method
        for net in m.networks.values():
            net.train()
        sums: dict[str, torch.Tensor] = {}
        n, time_up = 0, False
        for batch in m.loader(self.epoch):
            parts = m.train_step(batch)
            self.scaler.update()
            if m.scheduler_interval == "step":
                self._step_schedulers()
            self.step += 1
            n += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            bar.update(1)
            if n % 10 == 1:
                bar.set_postfix({k: f"{v.item():.3f}" for k, v in parts.items()})
            time_up = self._agree(deadline is not None and time.monotonic() > deadline)
            if time_up:
                break
        return {k: float(v) / max(n, 1) for k, v in sums.items()}, time_up

    def _is_better(self, value: float | None) -> bool:
        if value is None:
            return False
        best = self.best["value"]
        if best is None:
            return True
        return value > best if self.method.monitor_mode == "max" else value < best

    def run(self, resume: bool = False, until_epoch: int | None = None) -> TrainResult:
        """Train up to ``epochs`` (or ``until_epoch``) epochs; resume from ``last.pt`` if asked."""
        start = time.monotonic()
        s, m = self.settings, self.method
        last, best = self.out / "last.pt", self.out / "best.pt"
        deadline = None if s.max_minutes is None else start + 60.0 * s.max_minutes
        if resume and last.is_file():
            self.resume(last)
        end = min(s.epochs, until_epoch or s.epochs)
        per_epoch = m.steps_per_epoch()
        bar = tqdm(total=end * per_epoch, initial=self.step, unit="step",
                   desc=f"train {m.name}", disable=self.rank != 0)  # fmt: skip
        time_up = False
        while self.epoch < end and not time_up:
            epoch_start = time.monotonic()
            parts, time_up = self.train_one_epoch(bar, deadline)
            self.epoch += 1
            if m.scheduler_interval == "epoch":
                self._step_schedulers()
            due = self.epoch % s.validate_every == 0 or self.epoch == end or time_up
            metrics = m.validate() if due and self.rank == 0 else {}
            value = metrics.get(m.monitor) if m.monitor else None
            improved = self._is_better(value)
            no_score = m.monitor is None or (self.best["value"] is None and value is None)
            if improved or no_score:
                self.best = {"monitor": m.monitor, "value": value, "epoch": self.epoch}
            self.seconds += time.monotonic() - epoch_start
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
                           time_up, m.monitor)  # fmt: skip


def run_distributed(
    make_method: Any, settings: EngineSettings, resume: bool = False, until_epoch: int | None = None
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
        seed_everything(settings.seed)
        method = make_method(rank, world)
        return Engine(method, settings, rank, world).run(resume, until_epoch)
    finally:
        if owns_group:
            dist.destroy_process_group()
