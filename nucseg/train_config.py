"""Settings of a U-Net training run: ``TrainConfig``, built from profiles.

Profiles (``params/<name>.yaml``) carry the training settings in the ``"04"`` notebook section
(merged over ``common``); command-line ``--set key=value`` overrides reach the same fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from nucseg.engine import EngineError, EngineSettings
from nucseg.errors import NucsegError
from nucseg.losses import LossConfig
from nucseg.method import CHANGEABLE_ON_RESUME
from nucseg.models.unet import NORMS
from nucseg.postprocess import PostprocessParams
from nucseg.profiles import load_profile, resolve_data_dir, resolve_user_path, section_parameters

SCHEDULERS = ("cosine", "onecycle")


#: A training setting is invalid or does not match the checkpoint being resumed (one error for
#: the engine and the U-Net's settings).
TrainConfigError = EngineError


class RunSettings:
    """What every training config shares: profiles, ``--set`` overrides, engine settings.

    Subclasses are dataclasses; :attr:`SECTION` names their notebook section in a profile.
    """

    SECTION = "04"

    @classmethod
    def from_profile(
        cls, profile: Mapping[str, Any], section: str | None = None, **overrides: Any
    ) -> Any:
        """Build a config from a profile and overrides.

        Args:
            profile: A whole profile (``{"common": ..., "notebooks": {...}}``, as from
                ``nucseg.profiles.load_profile``), merged with ``notebook_parameters``; or the
                already merged parameters a notebook receives. Keys that are not config
                fields (``quick``, ``run_dir``, ...) are ignored.
            section: Notebook number whose section is used for a whole profile (default
                :attr:`SECTION`).
            **overrides: Config fields (nested ones as dicts or ``"loss.<field>"`` keys).

        Returns:
            The config.

        """
        params = dict(profile)
        if "common" in params:
            params = section_parameters(params, section or cls.SECTION)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in params.items() if k in names}).with_overrides(overrides)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Any:
        """Return a copy with fields replaced (``"loss.boundary_weight"`` style keys allowed).

        Raises:
            TrainConfigError: A key is not a config field (or a field of a nested one).

        """
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        for key, value in overrides.items():
            head, dot, rest = key.partition(".")
            nested = isinstance(values.get(head), dict)
            if head not in values or (dot and (not nested or rest not in values[head])):
                raise TrainConfigError(f"unknown training setting {key!r}")
            if dot:
                values[head][rest] = value
            elif nested and value is not None and not isinstance(values[head], type(value)):
                values[head].update(
                    dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
                )
            else:
                values[head] = value
        return type(self)(**values)

    def fixed_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share, flat (``"loss.w0"``; see CHANGEABLE_ON_RESUME)."""
        settings = flat_values(plain_values(dataclasses.asdict(self)))  # type: ignore[call-overload]
        return {k: v for k, v in settings.items() if k not in CHANGEABLE_ON_RESUME}

    def engine_settings(self) -> EngineSettings:
        """The part of the config the training engine uses (fields of the same names)."""
        names = [f.name for f in dataclasses.fields(EngineSettings)]
        return EngineSettings(**{name: getattr(self, name) for name in names})


@dataclass
class TrainConfig(RunSettings):
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
        ema_decay: Keep an exponential moving average of the weights with this decay per step
            (e.g. 0.999; the first steps average faster, see ``nucseg.train``); validation,
            ``best.pt`` and inference then use the average, and the trained weights are scored
            beside it as ``val_aji_raw``. 0 (default) keeps no average.
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
    ema_decay: float = 0.0
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
        resolve_device_name(self.device)
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
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.max_minutes is None or self.max_minutes > 0,
             f"max_minutes must be > 0 (or None: no limit), got {self.max_minutes}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(f"TrainConfig: {message}")


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


def resolve_device_name(name: str) -> None:
    """Refuse a device name torch does not know (whether or not this machine has it)."""
    try:
        torch.device("cpu" if name == "auto" else name)
    except RuntimeError:
        raise TrainConfigError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
        ) from None


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


def profile_config(name: str, cls: type[RunSettings] | None = None) -> Any:
    """The config of profile ``params/<name>.yaml``; relative data paths are from the repo root.

    Args:
        name: Profile name.
        cls: Config class (its ``SECTION`` of the profile); default :class:`TrainConfig`.

    """
    config = (cls or TrainConfig).from_profile(load_profile(name))
    config.data_dir = resolve_data_dir(config.data_dir)
    return config


def training_cli(
    argv: Sequence[str] | None,
    prog: str,
    config_cls: type[RunSettings],
    run: Callable[..., Any],
    summary: Callable[[Any, Any], str],
) -> int:
    """The command line of a training method (``nucseg train``, ``nucseg train-cyclegan``).

    Args:
        argv: Arguments (None: ``sys.argv``).
        prog: Program name for help and errors.
        config_cls: The method's config class.
        run: ``run(config, resume=..., overwrite=...) -> TrainResult``.
        summary: ``summary(config, result) -> str``, the line printed when it ends.

    Returns:
        The exit status: 0, or 2 after a one-line error.

    """
    parser = argparse.ArgumentParser(prog=prog, description=f"Train; see {run.__module__}.")
    parser.add_argument("--profile", help=f"profile in params/ (its {config_cls.SECTION!r} "
                        "section); else defaults")  # fmt: skip
    parser.add_argument("--data", help="MoNuSeg folder, relative to the current folder")
    parser.add_argument("--out", help="output folder for best.pt / last.pt / history.csv")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the run already in OUT and start afresh")  # fmt: skip
    parser.add_argument("--max-minutes", type=float,
                        help="time budget (> 0) of this call; --resume continues")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. width=32 or loss.dice_weight=0")  # fmt: skip
    args = parser.parse_args(argv)
    # Paths given on the command line are relative to the current folder.
    flags = {"data_dir": resolve_user_path(args.data), "out_dir": args.out,
             "max_minutes": args.max_minutes, "epochs": args.epochs}  # fmt: skip
    try:
        config = profile_config(args.profile, config_cls) if args.profile else config_cls()
        overrides = {
            **parse_overrides(args.set),
            **{k: v for k, v in flags.items() if v is not None},
        }
        config = config.with_overrides(overrides)
        result = run(config, resume=args.resume, overwrite=args.overwrite)
    except NucsegError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary(config, result))
    return 0


def progress_line(config: Any, result: Any) -> str:
    """Epochs done (and steps of a cut-short epoch), time, and where the checkpoints are."""
    done = f"{result.epochs_run} of {config.epochs} epochs"
    if result.epoch_step:
        done += f" and {result.epoch_step} steps of the next (time budget; --resume goes on)"
    return f"{done} in {result.seconds:.0f} s; checkpoints in {result.last_path.parent}"
