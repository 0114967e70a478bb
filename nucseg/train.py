"""Supervised training of the three-class U-Net: the first method on ``nucseg.engine``.

``train(config)`` trains on random augmented crops of the training images, validates every
``validate_every`` epochs by predicting whole held-out training images (split by organ),
post-processing them into nuclei and scoring the mean AJI, and keeps ``best.pt`` (best
validation AJI) and ``last.pt`` (every epoch) in ``out_dir``, both written atomically, plus
``history.csv``. With ``ema_decay`` > 0 a second network, ``"ema"``, holds an exponential
moving average of the trained weights, updated after every step with the decay
``min(ema_decay, (1 + step) / (10 + step))`` (so the first steps are not dominated by the random
initialisation); it is what validation scores, ``best.pt`` keeps and inference loads, and the
trained weights are scored beside it (``val_aji_raw``). ``train(config, resume=True)`` continues
from ``last.pt``; on the CPU with
``num_workers`` fixed the resumed run reproduces the uninterrupted one exactly, because crops
depend only on ``(seed, epoch, index)`` and the model, optimiser, scheduler and RNG states are
restored. A run cut short by ``max_minutes`` resumes at its next batch, so training in chunks
reaches the same weights too. An ``out_dir`` that holds a run is refused unless resuming it or
overwriting it, and a resume whose settings or data differ from the checkpoint's is refused,
naming the fields (``nucseg.method.CHANGEABLE_ON_RESUME`` lists what may change).
Command line: ``python -m nucseg.train --profile demo`` (see :func:`main`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from nucseg import checkpoint as ckpt
from nucseg.data.augment import build_augmentation
from nucseg.data.dataset import CropDataset, fingerprint_samples
from nucseg.data.monuseg import Sample, load_split, split_by_organ
from nucseg.data.source import resolve_data_root
from nucseg.data.targets import distance_target, three_class_target, unet_weight_map
from nucseg.engine import Engine, Method, TrainResult, train_method
from nucseg.losses import NUM_CLASSES, LossConfig, SegmentationLoss
from nucseg.metrics import aji
from nucseg.models import build_model
from nucseg.postprocess import PostprocessParams, instances_from_three_class
from nucseg.runtime import resolve_device
from nucseg.tiling import predict_probabilities
from nucseg.train_config import (
    TrainConfig,
    TrainConfigError,
    plain_values,
    progress_line,
    training_cli,
)

__all__ = ["TrainConfig", "TrainConfigError", "TrainResult", "UNetMethod", "main", "train"]


def split_training_samples(
    config: TrainConfig, samples: Sequence[Sample] | None = None
) -> tuple[list[Sample], list[Sample]]:
    """Load the training split, hold out ``val_fraction`` of it by organ, add extra pairs.

    ``samples`` is that split already loaded (``load_split(config.data_dir, "train")``).
    """
    if samples is None:
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
    """``CropDataset`` items as ``(image, class target (H, W), extras)``.

    ``extras`` holds what the loss config asks for: ``"weight_map"`` (the U-Net distance weight
    map) and ``"distance"`` (the distance head's target), each (H, W) float32.
    """

    def __init__(self, crops: CropDataset, loss: LossConfig, boundary_width: int) -> None:
        self.crops, self.loss, self.boundary_width = crops, loss, boundary_width

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        image, mask = self.crops[index]
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)[0]
        if not needs_instances(self.loss):  # crops already hold the 3-class target
            return image, mask, {}
        # These targets need instances, so they are made here, after augmentation, per crop.
        instances = mask.numpy()
        target = three_class_target(instances, boundary_width=self.boundary_width)
        extras = {}
        if self.loss.use_distance_weights:
            weights = unet_weight_map(instances, self.loss.w0, self.loss.sigma, (1, 1))
            extras["weight_map"] = torch.from_numpy(weights)
        if self.loss.distance_weight > 0:
            extras["distance"] = torch.from_numpy(distance_target(instances))
        return image, torch.from_numpy(target.astype(np.int64)), extras


def needs_instances(loss: LossConfig) -> bool:
    """Whether the loss needs per-crop targets made from instances (not just the 3 classes)."""
    return loss.use_distance_weights or loss.distance_weight > 0


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class UNetMethod(Method):
    """The boundary-aware U-Net: 3-class logits, boundary-weighted CE + Dice, validated by AJI.

    One trained network (``"net"``), one AdamW optimiser and a cosine or one-cycle schedule
    stepped per batch, plus its weight average ``"ema"`` when ``ema_decay`` > 0. Validation
    predicts the held-out training images whole, post-processes them into nuclei and scores the
    mean AJI (``val_aji``, the monitored value) of the network inference uses.
    """

    name = "unet"
    monitor = "val_aji"
    scheduler_interval = "step"
    inference_network = "net"

    def __init__(self, config: TrainConfig, rank: int = 0, world: int = 1) -> None:
        super().__init__()
        self.config, self.rank, self.world = config, rank, world
        self.postprocess = PostprocessParams(**(config.postprocess or {}))
        self.train_samples, self.val_samples = split_training_samples(config)
        self.model_kwargs: dict[str, Any] = {"width": config.width, "depth": config.depth}
        if config.loss.out_channels != NUM_CLASSES:  # the distance head; old specs unchanged
            self.model_kwargs["num_classes"] = config.loss.out_channels
        if config.norm != "group":  # GroupNorm specs unchanged: old checkpoints still resume
            self.model_kwargs["norm"] = config.norm
        net = build_model(config.model, **self.model_kwargs)
        self.networks = {"net": net}
        if config.ema_decay > 0:
            self.networks["ema"] = copy.deepcopy(net).requires_grad_(False)
            self.inference_network = "ema"
        self.criterion = SegmentationLoss(config.loss)
        self.optimizers = {
            "net": torch.optim.AdamW(
                net.parameters(), lr=config.lr, weight_decay=config.weight_decay
            )
        }
        # The engine resolves the device the same way; CUDA loads batches with pinned workers.
        self._build_data(cuda=resolve_device(config.device).type == "cuda")
        self.total_steps = config.epochs * len(self._loader)
        opt = self.optimizers["net"]
        if config.scheduler == "onecycle":
            sched: Any = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=config.lr, total_steps=self.total_steps
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total_steps)
        self.schedulers = {"net": sched}

    def _build_data(self, cuda: bool) -> None:
        c = self.config
        self.crops = CropDataset(
            self.train_samples,
            crop_size=c.crop_size,
            crops_per_epoch=c.crops_per_epoch,
            transform=build_augmentation(c.flip, c.rot90, c.elastic, hed_jitter=c.hed_jitter),
            seed=c.seed,
            target="instances" if needs_instances(c.loss) else "three_class",
            boundary_width=c.boundary_width,
            context=8 if c.elastic else 0,  # real tissue, not zero fill, at deformed crop edges
        )
        # Each process takes its own shard of a (seed, epoch)-shuffled order of the crops.
        self.sampler = DistributedSampler(
            self.crops, self.world, self.rank, shuffle=True, seed=c.seed, drop_last=True
        )
        workers = c.num_workers
        if workers is None:
            cores = (os.cpu_count() or 1) // self.world
            workers = min(8, max(cores - 1, 0)) if cuda else 0
        self.generator = torch.Generator()
        self._loader = DataLoader(
            LossTargets(self.crops, c.loss, c.boundary_width),
            batch_size=c.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=cuda,
            worker_init_fn=_seed_worker,
            generator=self.generator,
            persistent_workers=workers > 0,
        )
        if len(self._loader) == 0:
            raise TrainConfigError(
                f"crops_per_epoch={len(self.crops)} gives no full batch of {c.batch_size} "
                f"on each of {self.world} processes"
            )

    def attach(self, engine: Engine) -> None:
        """Move the networks and the loss (its class weights) to the engine's device."""
        super().attach(engine)
        self.criterion.to(engine.device)

    def steps_per_epoch(self) -> int:
        """Full batches per epoch on this process."""
        return len(self._loader)

    def loader(self, epoch: int) -> DataLoader:
        """The epoch's crops: positions, augmentation and order depend on (seed, epoch) only."""
        self.crops.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.config.seed * 100_003 + epoch)
        return self._loader

    def train_step(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predict, score against the 3-class target, back-propagate, update."""
        images, target, extras = batch
        images, target = self.to_device(images, image=True), self.to_device(target)
        extras = {name: self.to_device(value) for name, value in extras.items()}
        with self.autocast():
            logits = self.net("net")(images)
            loss = self.criterion(logits, target, extras.get("weight_map"), extras.get("distance"))
        self.backward(loss.total)
        self.step("net")
        if "ema" in self.networks:
            self._update_average()
        parts = {"loss": loss.total, "ce": loss.ce, "dice": loss.dice}
        if self.config.loss.distance_weight > 0:
            parts["distance"] = loss.distance
        return parts

    @torch.no_grad()
    def _update_average(self) -> None:
        """Move the weight average towards the weights just updated (module docstring)."""
        done = self._engine().step  # steps completed before this one
        decay = min(self.config.ema_decay, (1 + done) / (10 + done))
        average, trained = self.networks["ema"], self.networks["net"]
        for kept, current in zip(average.parameters(), trained.parameters(), strict=True):
            kept.lerp_(current, 1 - decay)
        for kept, current in zip(average.buffers(), trained.buffers(), strict=True):
            kept.copy_(current)

    def _validation_aji(self, name: str) -> float:
        """Mean AJI of one network over the validation images, each predicted whole."""
        engine, net, scores = self._engine(), self.networks[name], []
        for sample in self.val_samples:
            probs = predict_probabilities(
                net, sample.image, tile=self.config.val_tile, device=engine.device,
                amp=engine.amp, channels_last=engine.memory_format == torch.channels_last,
            )  # fmt: skip
            scores.append(
                aji(sample.instances, instances_from_three_class(probs, self.postprocess))
            )
        # Prediction may move the weights to another memory format; training must not notice.
        net.to(memory_format=engine.memory_format)
        return float(np.mean(scores))

    def validate(self) -> dict[str, float]:
        """Mean AJI over the validation images, each predicted whole and post-processed.

        ``val_aji`` scores the network inference uses; with a weight average, ``val_aji_raw``
        scores the trained weights too.
        """
        if not self.val_samples:
            return {}
        scores = {"val_aji": self._validation_aji(self.inference_network)}
        if self.inference_network != "net":
            scores["val_aji_raw"] = self._validation_aji("net")
        return scores

    def plan(self) -> dict[str, Any]:
        """Resuming needs the same schedule, settings and data (compared by content)."""
        return {
            "total_steps": self.total_steps,
            **self.config.fixed_settings(),
            "data.train": fingerprint_samples(self.train_samples),
            "data.validation": fingerprint_samples(self.val_samples),
        }

    def postprocess_state(self) -> dict[str, Any] | None:
        """The validation post-processing, stored so that inference uses the same."""
        return ckpt.postprocess_to_dict(self.postprocess)

    def meta(self) -> dict[str, Any]:
        """The whole config, for the model card and for reproducing the run."""
        return {
            "config": plain_values(dataclasses.asdict(self.config)),
            "total_steps": self.total_steps,
        }


def train(
    config: TrainConfig,
    resume: bool = False,
    until_epoch: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train the U-Net on the engine (see the module docstring).

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) crops are sharded by rank and
    only rank 0 validates, saves and shows progress (see ``nucseg.engine.run_distributed``).

    Args:
        config: Training settings.
        resume: Continue from ``out_dir/last.pt`` when it exists (else start afresh).
        until_epoch: Stop after this many completed epochs (the schedule still spans
            ``config.epochs``), e.g. to train in chunks; None trains to the end.
        overwrite: Delete the run already in ``out_dir`` and start afresh.

    Returns:
        A :class:`nucseg.engine.TrainResult`.

    Raises:
        NucsegError: Bad data or settings, a checkpoint that does not fit the config, or an
            ``out_dir`` holding a run while neither ``resume`` nor ``overwrite`` is set.

    """
    return train_method(UNetMethod, config, resume, until_epoch, overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (also ``nucseg train``); returns the exit status.

    Example: ``python -m nucseg.train --profile demo --out runs/u --set loss.boundary_weight=1``.
    """
    return training_cli(argv, "nucseg train", TrainConfig, train, validation_summary)


def validation_summary(config: TrainConfig, result: TrainResult) -> str:
    """The last line of a training command: best validation AJI, epochs, time, folder."""
    score = "n/a" if result.best_val_aji is None else f"{result.best_val_aji:.4f}"
    return f"best val AJI {score} at epoch {result.best_epoch}; {progress_line(config, result)}"


if __name__ == "__main__":
    raise SystemExit(main())
