"""Settings of a U-Net training run: ``TrainConfig``, built from profiles.

Profiles (``params/<name>.yaml``) carry the training settings in the ``"04"`` notebook section
(merged over ``common``); command-line ``--set key=value`` overrides reach the same fields.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from nucseg.engine import EngineError, EngineSettings
from nucseg.losses import LossConfig
from nucseg.models.unet import NORMS
from nucseg.postprocess import PostprocessParams
from nucseg.profiles import load_profile, resolve_data_dir, section_parameters

SCHEDULERS = ("cosine", "onecycle")


#: A training setting is invalid or does not match the checkpoint being resumed (one error for
#: the engine and the U-Net's settings).
TrainConfigError = EngineError


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint's ``meta``).

    Attributes:
        data_dir: MoNuSeg folder (any layout); None or "demo" = the embedded demo data. Only
            its training split is used: ``val_fraction`` of it, stratified by organ, validates.
        extra_pairs_dir: Another folder in MoNuSeg layout whose pairs (all splits) are added
            to training, e.g. synthetic image / mask pairs.
        out_dir: Where ``best.pt``, ``last.pt`` and ``history.csv`` go.
        model, width, depth, norm: Network name in ``nucseg.models.MODELS``, its size and its
            normalisation (``"group"`` or ``"batch"``, see ``nucseg.models.unet``).
        crop_size, batch_size: Training crop side; crops per step and process.
        epochs: Planned epochs (the learning-rate schedule spans them).
        crops_per_epoch: Crops per epoch over all processes; None = about one coverage of
            the training images.
        lr, weight_decay, scheduler: AdamW settings; ``"cosine"`` or ``"onecycle"`` per step.
        max_minutes: Time budget (> 0) of one call; training stops at the first step after
            it and saves ``last.pt``; resuming continues from the next batch. None = no limit.
        val_fraction, validate_every, seed: Validation split, its period (epochs), the seed.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_workers: DataLoader workers; None = 0 on the CPU, up to 8 on CUDA.
        loss: :class:`nucseg.losses.LossConfig` (a dict is converted).
        boundary_width: Width in pixels of the boundary class of the targets.
        flip, rot90, elastic, hed_jitter: Augmentations (``hed_jitter`` = strength, 0 = off).
        amp: Mixed precision (``nucseg.runtime.resolve_amp``); None = on for CUDA and for a
            CPU with native bfloat16.
        channels_last: Channels-last memory format; None = on (faster on CUDA and the CPU).
        threads: CPU threads; None = all cores, shared among DDP processes.
        val_tile: Tile side of validation prediction (1024: a MoNuSeg image in one pass).
        postprocess: ``PostprocessParams`` fields for validation; None = defaults.

    """

    data_dir: str | None = None
    extra_pairs_dir: str | None = None
    out_dir: str = "runs/unet"
    model: str = "unet"
    width: int = 16
    depth: int = 4
    norm: str = "group"
    crop_size: int = 256
    batch_size: int = 8
    epochs: int = 30
    crops_per_epoch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    max_minutes: float | None = None
    val_fraction: float = 0.2
    validate_every: int = 1
    seed: int = 0
    device: str = "auto"
    num_workers: int | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    boundary_width: int = 2
    flip: bool = True
    rot90: bool = True
    elastic: bool = True
    hed_jitter: float = 0.05
    amp: bool | None = None
    channels_last: bool | None = None
    threads: int | None = None
    val_tile: int = 1024
    postprocess: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        try:
            if isinstance(self.loss, Mapping):
                check_types(LossConfig, self.loss, prefix="loss.")
                self.loss = LossConfig(**self.loss)
            PostprocessParams(**(self.postprocess or {}))  # fail now, not after an epoch
        except (TypeError, ValueError) as err:  # unknown keys, or LossConfig's own checks
            raise TrainConfigError(f"TrainConfig: {err}") from None
        check_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        try:
            torch.device(self.device if self.device != "auto" else "cpu")
        except RuntimeError:
            raise TrainConfigError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            ) from None
        sizes = {k: getattr(self, k) for k in ("width", "depth", "crop_size", "batch_size")}
        checks = [
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {SCHEDULERS}"),
            (self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}"),
            (min(sizes.values()) >= 1, f"sizes must be >= 1, got {sizes}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.validate_every >= 1, f"validate_every must be >= 1, got {self.validate_every}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got "
             f"{self.val_fraction}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.max_minutes is None or self.max_minutes > 0,
             f"max_minutes must be > 0 (or None: no limit), got {self.max_minutes}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(f"TrainConfig: {message}")

    @classmethod
    def from_profile(
        cls, profile: Mapping[str, Any], section: str = "04", **overrides: Any
    ) -> TrainConfig:
        """Build a config from a profile and overrides.

        Args:
            profile: A whole profile (``{"common": ..., "notebooks": {...}}``, as from
                ``nucseg.profiles.load_profile``), merged with ``notebook_parameters``; or the
                already merged parameters a notebook receives. Keys that are not config
                fields (``quick``, ``run_dir``, ...) are ignored.
            section: Notebook number whose section is used for a whole profile.
            **overrides: Config fields (``loss`` may be a dict, ``loss.<field>`` keys work).

        Returns:
            The config.

        """
        params = dict(profile)
        if "common" in params:
            params = section_parameters(params, section)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names}).with_overrides(overrides)

    def engine_settings(self) -> EngineSettings:
        """The part of the config the training engine uses."""
        return EngineSettings(
            out_dir=self.out_dir, epochs=self.epochs, max_minutes=self.max_minutes,
            validate_every=self.validate_every, seed=self.seed, device=self.device,
            amp=self.amp, channels_last=self.channels_last, threads=self.threads,
        )  # fmt: skip

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """Return a copy with fields replaced (``"loss.boundary_weight"`` style keys allowed).

        Raises:
            TrainConfigError: A key is not a config (or loss) field.

        """
        values, loss = dataclasses.asdict(self), dataclasses.asdict(self.loss)
        for key, value in overrides.items():
            name = key.removeprefix("loss.")
            target = loss if key.startswith("loss.") else values
            if name not in target:
                raise TrainConfigError(f"unknown training setting {key!r}")
            if key == "loss":
                loss.update(dataclasses.asdict(value) if isinstance(value, LossConfig) else value)
            else:
                target[name] = value
        values["loss"] = loss
        return type(self)(**values)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a setting's value fits its annotation (enough for the types settings use)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:  # an int is a fine float; a bool is neither
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, tuple | list)
    if origin is dict:
        return isinstance(value, Mapping)
    return isinstance(value, origin or hint)


def check_types(cls: type, values: Mapping[str, Any], prefix: str = "") -> None:
    """Refuse values that do not fit the dataclass's field types, e.g. ``width=2.5``.

    Raises:
        TrainConfigError: Naming the setting, the value and the type it needs.

    """
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is not None and not _type_ok(value, hint):
            needed = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise TrainConfigError(
                f"setting {prefix}{name}={value!r}: needs {needed}, got {type(value).__name__}"
            )


def flat_values(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"w0": 10}}`` -> ``{"loss.w0": 10}``: one name per setting."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flat_values(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plain_values(value: Any) -> Any:
    """Config values as checkpoint-safe plain types (paths -> strings)."""
    if isinstance(value, Mapping):
        return {str(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_values(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["width=32", "loss.dice_weight=0"]`` -> ``{"width": 32, "loss.dice_weight": 0}``.

    Values are parsed as YAML scalars (numbers, booleans, ``null``, strings, lists).

    Raises:
        TrainConfigError: An item lacks ``=``.

    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value) if value else None
    return overrides


def profile_config(name: str) -> TrainConfig:
    """The config of profile ``params/<name>.yaml``; relative data paths are from the repo root."""
    config = TrainConfig.from_profile(load_profile(name))
    config.data_dir = resolve_data_dir(config.data_dir)
    return config
