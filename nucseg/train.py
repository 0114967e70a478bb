"""Supervised training of the three-class U-Net, single process or DDP under ``torchrun``.

``train(config)`` trains on random augmented crops of the training images, validates every
``validate_every`` epochs by predicting whole held-out training images (split by organ),
post-processing them into nuclei and scoring the mean AJI, and keeps ``best.pt`` (best
validation AJI) and ``last.pt`` (every epoch) in ``out_dir``, both written atomically, plus
``history.csv``. ``train(config, resume=True)`` continues from ``last.pt``; on the CPU with
``num_workers`` fixed the resumed run reproduces the uninterrupted one exactly, because crops
depend only on ``(seed, epoch, index)`` and the model, optimiser, scheduler and RNG states are
restored. Command line: ``python -m nucseg.train --profile demo`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from nucseg import checkpoint as ckpt
from nucseg.data.augment import build_augmentation
from nucseg.data.dataset import CropDataset
from nucseg.data.monuseg import Sample, load_split, split_by_organ
from nucseg.data.source import resolve_data_root
from nucseg.data.targets import three_class_target, unet_weight_map
from nucseg.errors import NucsegError
from nucseg.losses import LossConfig, LossOutput, SegmentationLoss
from nucseg.metrics import aji
from nucseg.models import build_model
from nucseg.postprocess import PostprocessParams, instances_from_three_class
from nucseg.tiling import predict_probabilities
from nucseg.train_config import (
    TrainConfig,
    TrainConfigError,
    TrainResult,
    parse_overrides,
    plain_values,
    profile_config,
    resolve_device,
)

__all__ = ["Trainer", "TrainConfig", "TrainConfigError", "TrainResult", "main", "train"]


def split_training_samples(config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Load the training split, hold out ``val_fraction`` of it by organ, add extra pairs."""
    samples = load_split(resolve_data_root(config.data_dir), "train")
    ids = [s.image_id for s in samples]
    _, val_ids = split_by_organ(ids, [s.organ for s in samples], config.val_fraction, config.seed)
    held_out = set(val_ids)
    train = [s for s in samples if s.image_id not in held_out]
    val = [s for s in samples if s.image_id in held_out]
    if config.extra_pairs_dir:  # every pair of that folder (all splits) joins training
        train += load_split(resolve_data_root(config.extra_pairs_dir), None)
    return train, val


class LossTargets(Dataset):
    """``CropDataset`` items as ``(image, class target (H, W) [, U-Net weight map (H, W)])``."""

    def __init__(self, crops: CropDataset, loss: LossConfig, boundary_width: int) -> None:
        self.crops, self.loss, self.boundary_width = crops, loss, boundary_width

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image, mask = self.crops[index]
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)[0]
        if not self.loss.use_distance_weights:  # crops already hold the 3-class target
            return image, mask
        # The weight map needs instances, so it is made here, after augmentation, per crop.
        instances = mask.numpy()
        target = three_class_target(instances, boundary_width=self.boundary_width)
        weights = unet_weight_map(instances, self.loss.w0, self.loss.sigma, class_weights=(1, 1))
        return image, torch.from_numpy(target.astype(np.int64)), torch.from_numpy(weights)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    # float16 + GradScaler on CUDA; the CPU never autocasts (AMP is CUDA-only here).
    return torch.autocast(device.type, torch.float16 if device.type == "cuda" else None, enabled)


def write_history(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write history rows to CSV (replacing the file atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    os.replace(tmp, path)
    return path


class Trainer:
    """State of one training run; :meth:`run` is the loop, :meth:`train_step` the algorithm."""

    def __init__(self, config: TrainConfig, rank: int = 0, world: int = 1) -> None:
        self.config, self.rank, self.world = config, rank, world
        self.device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
        cuda = self.device.type == "cuda"
        self.amp = cuda if config.amp is None else bool(config.amp) and cuda
        # Channels-last convolutions are faster on GPUs and, measured, on the CPU too.
        channels_last = config.channels_last is None or config.channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels
        else:
            cores = min(torch.get_num_threads(), os.cpu_count() or 1)
            torch.set_num_threads(config.threads or max(1, cores // world))
        seed_everything(config.seed)
        self.out = Path(config.out_dir)
        self.postprocess = PostprocessParams(**(config.postprocess or {}))
        self.train_samples, self.val_samples = split_training_samples(config)
        self.loader = self._make_loader()
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise TrainConfigError(
                f"crops_per_epoch={len(self.crops)} gives no full batch of {config.batch_size} "
                f"on each of {world} processes"
            )
        self.model_kwargs = {"width": config.width, "depth": config.depth}
        model = build_model(config.model, **self.model_kwargs)
        self.net = model.to(self.device, memory_format=self.memory_format)
        self.model: nn.Module = self.net
        if world > 1:
            self.model = DistributedDataParallel(self.net, [self.device.index] if cuda else None)
        self.criterion = SegmentationLoss(config.loss).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.scheduler == "onecycle":
            self.scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=config.lr, total_steps=self.total_steps
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.total_steps
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.epoch = self.step = 0
        self.seconds = 0.0
        self.best: dict[str, Any] = {"val_aji": None, "epoch": None}
        self.history: list[dict[str, Any]] = []

    def _make_loader(self) -> DataLoader:
        c = self.config
        crops = CropDataset(
            self.train_samples,
            crop_size=c.crop_size,
            crops_per_epoch=c.crops_per_epoch,
            transform=build_augmentation(c.flip, c.rot90, c.elastic, hed_jitter=c.hed_jitter),
            seed=c.seed,
            target="instances" if c.loss.use_distance_weights else "three_class",
            boundary_width=c.boundary_width,
            context=8 if c.elastic else 0,  # real tissue, not zero fill, at deformed crop edges
        )
        self.crops = crops
        # Each process takes its own shard of a (seed, epoch)-shuffled order of the crops.
        self.sampler = DistributedSampler(
            crops, self.world, self.rank, shuffle=True, seed=c.seed, drop_last=True
        )
        workers = c.num_workers
        if workers is None:
            cores = (os.cpu_count() or 1) // self.world
            workers = min(8, max(cores - 1, 0)) if self.device.type == "cuda" else 0
        self.generator = torch.Generator()
        return DataLoader(
            LossTargets(crops, c.loss, c.boundary_width),
            batch_size=c.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker,
            generator=self.generator,
            persistent_workers=workers > 0,
        )

    def train_step(
        self, images: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None
    ) -> LossOutput:
        """One optimisation step: predict, score against the target, back-propagate, update."""
        with _autocast(self.device, self.amp):
            logits = self.model(images)
            loss = self.criterion(logits, target, weights)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss

    def train_one_epoch(self, bar: tqdm, deadline: float | None) -> tuple[dict[str, float], bool]:
        """Run one epoch (or until the deadline); returns mean loss parts and whether time is up."""
        self.model.train()
        self.crops.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self.generator.manual_seed(self.config.seed * 100_003 + self.epoch)
        sums, n, time_up = torch.zeros(3, device=self.device), 0, False
        for images, target, *weights in self.loader:
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            target = target.to(self.device, non_blocking=True)
            weight_map = weights[0].to(self.device, non_blocking=True) if weights else None
            loss = self.train_step(images, target, weight_map)
            sums += torch.stack([loss.total.detach(), loss.ce, loss.dice])
            n += 1
            bar.update(1)
            if n % 10 == 1:
                bar.set_postfix(loss=f"{loss.total.item():.3f}", val_aji=self._last_aji())
            time_up = self._agree(deadline is not None and time.monotonic() > deadline)
            if time_up:
                break
        loss_sum, ce_sum, dice_sum = (sums / max(n, 1)).tolist()
        return {"loss": loss_sum, "ce": ce_sum, "dice": dice_sum}, time_up

    def _agree(self, flag: bool) -> bool:
        """Every process stops together: true if any process says so."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _last_aji(self) -> str:
        scores = [r["val_aji"] for r in self.history if r["val_aji"] is not None]
        return f"{scores[-1]:.3f}" if scores else "-"

    def validate(self) -> float:
        """Mean AJI over the validation images, each predicted whole and post-processed."""
        c, scores = self.config, []
        for sample in self.val_samples:
            probs = predict_probabilities(
                self.net, sample.image, tile=c.val_tile, device=self.device, amp=self.amp,
                channels_last=self.memory_format == torch.channels_last,
            )  # fmt: skip
            scores.append(
                aji(sample.instances, instances_from_three_class(probs, self.postprocess))
            )
        # Prediction may move the weights to another memory format; training must not notice.
        self.net.to(memory_format=self.memory_format)
        return float(np.mean(scores))

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of the current state."""
        return {
            "format": ckpt.FORMAT,
            "model": {"name": self.config.model, "kwargs": self.model_kwargs},
            "state_dict": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": ckpt.capture_rng(),
            "best": dict(self.best),
            "history": list(self.history),
            "postprocess": ckpt.postprocess_to_dict(self.postprocess),
            "meta": {
                "config": plain_values(dataclasses.asdict(self.config)),
                "total_steps": self.total_steps,
                "world_size": self.world,
                "torch": str(torch.__version__),
            },
        }

    def resume(self, path: Path) -> None:
        """Restore the state saved in ``path`` (model, optimiser, scheduler, RNG, history)."""
        state = ckpt.load_checkpoint(path, map_location=self.device)
        expected = {"name": self.config.model, "kwargs": self.model_kwargs}
        if state["model"] != expected or state["meta"]["total_steps"] != self.total_steps:
            raise TrainConfigError(
                f"{path}: checkpoint of {state['model']} planned for "
                f"{state['meta']['total_steps']} steps; this run is {expected} with "
                f"{self.total_steps} steps (same epochs, crops, batch size, processes needed)"
            )
        self.net.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty when saved without AMP
            self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng(state["rng"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], dict(state["best"])
        self.history = list(state["history"])
        self.seconds = self.history[-1]["seconds"] if self.history else 0.0

    def run(self, resume: bool = False, until_epoch: int | None = None) -> TrainResult:
        """Train up to ``config.epochs`` (or ``until_epoch``) epochs; see :func:`train`."""
        start = time.monotonic()
        c, last, best = self.config, self.out / "last.pt", self.out / "best.pt"
        deadline = None if c.max_minutes is None else start + 60.0 * c.max_minutes
        if resume and last.is_file():
            self.resume(last)
        end = min(c.epochs, until_epoch or c.epochs)
        bar = tqdm(total=end * self.steps_per_epoch, initial=self.step, unit="step",
                   desc=f"train {c.model}", disable=self.rank != 0)  # fmt: skip
        time_up = False
        while self.epoch < end and not time_up:
            epoch_start = time.monotonic()
            parts, time_up = self.train_one_epoch(bar, deadline)
            self.epoch += 1
            due = self.epoch % c.validate_every == 0 or self.epoch == end or time_up
            val_aji = self.validate() if due and self.val_samples and self.rank == 0 else None
            improved = val_aji is not None and (
                self.best["val_aji"] is None or val_aji > self.best["val_aji"]
            )
            if improved or not self.val_samples:
                self.best = {"val_aji": val_aji, "epoch": self.epoch}
            self.seconds += time.monotonic() - epoch_start
            lr = self.scheduler.get_last_lr()[0]
            row = {"epoch": self.epoch, "step": self.step, **parts, "val_aji": val_aji}
            self.history.append({**row, "lr": lr, "seconds": self.seconds})
            bar.set_postfix(loss=f"{parts['loss']:.3f}", val_aji=self._last_aji())
            if self.rank == 0:
                state = self.state()
                ckpt.save_checkpoint(state, last)
                if improved or not self.val_samples:
                    ckpt.save_checkpoint(state, best)
                write_history(self.history, self.out / "history.csv")
            if self.world > 1:
                dist.barrier()
        bar.close()
        return TrainResult(self.best["val_aji"], self.best["epoch"], self.epoch,
                           time.monotonic() - start, best, last, self.out / "history.csv",
                           time_up)  # fmt: skip


def train(config: TrainConfig, resume: bool = False, until_epoch: int | None = None) -> TrainResult:
    """Train a segmentation network (see the module docstring).

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is set up from
    the environment (NCCL on CUDA, gloo on the CPU), crops are sharded by rank, only rank 0
    validates, saves and shows progress, and the group is destroyed at the end.

    Args:
        config: Training settings.
        resume: Continue from ``out_dir/last.pt`` when it exists (else start afresh).
        until_epoch: Stop after this many completed epochs (the schedule still spans
            ``config.epochs``), e.g. to train in chunks; None trains to the end.

    Returns:
        A :class:`TrainResult`.

    Raises:
        NucsegError: Bad data or settings, or a checkpoint that does not fit the config.

    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        rank = dist.get_rank() if world > 1 else 0
        return Trainer(config, rank, world).run(resume, until_epoch)
    finally:
        if owns_group:
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (also ``nucseg train``); returns the exit status.

    Example: ``python -m nucseg.train --profile demo --out runs/u --set loss.boundary_weight=1``.
    """
    parser = argparse.ArgumentParser(prog="nucseg train", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", help="profile in params/ (its '04' section); else defaults")
    parser.add_argument("--data", help="MoNuSeg folder (default: the profile's, or demo data)")
    parser.add_argument("--out", help="output folder for best.pt / last.pt / history.csv")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--max-minutes", type=float, help="time budget in minutes")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. width=32 or loss.dice_weight=0")  # fmt: skip
    args = parser.parse_args(argv)
    flags = {"data_dir": args.data, "out_dir": args.out, "max_minutes": args.max_minutes,
             "epochs": args.epochs}  # fmt: skip
    try:
        config = profile_config(args.profile) if args.profile else TrainConfig()
        overrides = {
            **parse_overrides(args.set),
            **{k: v for k, v in flags.items() if v is not None},
        }
        result = train(config.with_overrides(overrides), resume=args.resume)
    except NucsegError as err:
        print(f"nucseg train: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        score = "n/a" if result.best_val_aji is None else f"{result.best_val_aji:.4f}"
        print(f"best val AJI {score} at epoch {result.best_epoch}; {result.epochs_run} epochs "
              f"in {result.seconds:.0f} s; checkpoints in {result.last_path.parent}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
