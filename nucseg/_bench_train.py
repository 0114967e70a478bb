"""The `train` benchmark of `python -m nucseg.bench`: seconds per U-Net training step.

It trains four variants side by side on the procedural demo data (no download): float32 and
bfloat16 autocast, each with GroupNorm and with BatchNorm (``nucseg.models.unet``). Each variant
is the real training code: a ``nucseg.train.UNetMethod`` (crops, augmentation, loss, AdamW,
schedule) attached to a ``nucseg.engine.Engine`` (device, autocast, channels-last, threads),
with the settings of a profile (``--profile``, default ``monuseg-cpu``) where no option
overrides them.

One step is split into
- data: loading one batch of crops (one loader; the variants get the same batches),
- compute: ``UNetMethod.train_step`` (forward, loss, backward, optimiser step) and the
  scheduler step,
- validation, amortised: one ``UNetMethod.validate`` (whole-image prediction, post-processing,
  AJI) of a ``--val-size`` demo image, times ``--val-images`` images, divided by the steps
  between validations (steps per epoch x ``--val-every``).

The variants run interleaved, one step each in turn, so that load from other processes falls on
all of them alike; times are means over ``--steps`` steps after ``--warmup`` steps. Every variant
starts from the same weights and sees the same batches, so a bfloat16 variant's loss, step by
step, against the float32 variant with the same normalisation shows whether bfloat16 trains the
same. On the CPU, bfloat16 runs only where it is native (``nucseg.runtime.cpu_bf16_native``);
elsewhere the bfloat16 rows are not run (training uses float32), unless ``--emulated-bf16``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nucseg.errors import NucsegError

TARGET_S = 0.75  # seconds per step at width 16, 8 x 256x256 crops, on 2 cores
TARGET_SETTINGS = {"width": 16, "batch": 8, "crop": 256, "threads": 2, "device": "cpu"}
MONUSEG_VAL_IMAGES = 7  # training images that monuseg-cpu holds out for validation


@dataclass
class Variant:
    """One benchmarked training set-up and what it measured."""

    norm: str
    amp: bool
    emulated: bool = False  # bf16 autocast where the CPU has no native bf16
    method: Any = None
    engine: Any = None
    losses: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    val_image_s: float = 0.0

    @property
    def name(self) -> str:
        """E.g. ``"fp32 group"``; ``"bf16* batch"`` when emulated."""
        return f"{'bf16' if self.amp else 'fp32'}{'*' if self.emulated else ''} {self.norm}"


def _config(args: argparse.Namespace, out_dir: str) -> Any:
    """The profile's training config on demo data, with the benchmark's options."""
    from nucseg.profiles import load_profile
    from nucseg.train_config import TrainConfig

    base = TrainConfig.from_profile(load_profile(args.profile))
    sizes = {"width": args.width, "depth": args.depth, "batch_size": args.batch,
             "crop_size": args.crop}  # fmt: skip
    sizes = {k: getattr(base, k) if v is None else v for k, v in sizes.items()}
    if args.steps_per_epoch is None:  # the profile's epoch, in batches of this size
        crops = base.crops_per_epoch or 24 * base.batch_size
        args.steps_per_epoch = max(crops // sizes["batch_size"], 1)
    if args.val_every is None:
        args.val_every = base.validate_every
    # Many planned epochs, as the profile: the learning rate stays near its peak here.
    epochs = max(base.epochs, math.ceil((args.warmup + args.steps) / args.steps_per_epoch))
    return base.with_overrides({
        **sizes, "data_dir": None, "out_dir": out_dir, "device": args.device,
        "threads": args.threads, "num_workers": 0, "max_minutes": None, "epochs": epochs,
        "crops_per_epoch": sizes["batch_size"] * args.steps_per_epoch,
    })  # fmt: skip


def _method(config: Any, norm: str) -> Any:
    """A ``UNetMethod`` of ``config`` whose U-Net has normalisation ``norm``."""
    from nucseg.engine import seed_everything
    from nucseg.models import build_model
    from nucseg.train import UNetMethod

    if "norm" in {f.name for f in dataclasses.fields(config)}:
        config = dataclasses.replace(config, norm=norm)
    seed_everything(config.seed)
    method = UNetMethod(config)
    if getattr(method.networks["net"], "norm", "group") != norm:
        # The config cannot say `norm`: rebuild the net from the same seed (the same conv
        # weights) and hand its parameters to the optimiser, which has not stepped yet.
        seed_everything(config.seed)
        kwargs = {**method.model_kwargs, "norm": norm}
        net = build_model(config.model, **kwargs)
        method.networks["net"], method.model_kwargs = net, kwargs
        method.optimizers["net"].param_groups[0]["params"] = list(net.parameters())
    return method


def _batches(method: Any) -> Iterator[Any]:
    """The method's batches, epoch after epoch."""
    epoch = 0
    while True:
        yield from method.loader(epoch)
        epoch += 1


def _sync(variant: Variant) -> None:
    import torch

    if variant.engine.device.type == "cuda":
        torch.cuda.synchronize(variant.engine.device)


def _train_step(variant: Variant, batch: Any) -> None:
    """One step as ``Engine.train_one_epoch`` takes it; records its seconds and loss."""
    method, engine = variant.method, variant.engine
    _sync(variant)
    start = time.perf_counter()
    parts = method.train_step(batch)
    engine.scaler.update()
    for scheduler in method.schedulers.values():
        scheduler.step()
    loss = float(parts["loss"].detach())  # waits for the device
    variant.compute.append(time.perf_counter() - start)
    variant.losses.append(loss)


def _validate(variant: Variant, image_size: int) -> None:
    """Time one whole-image validation of a demo image (predict, post-process, AJI)."""
    from nucseg.data.demo import make_tile
    from nucseg.data.monuseg import Sample

    image, instances = make_tile(seed=1, size=image_size)
    variant.method.val_samples = [Sample("bench", image, instances, "demo-a", "train")]
    variant.method.validate()  # warm-up: inference kernels differ from training's
    _sync(variant)
    start = time.perf_counter()
    variant.method.validate()
    _sync(variant)
    variant.val_image_s = time.perf_counter() - start


def _build(args: argparse.Namespace, out_dir: str, amp_rows: bool, force: bool) -> list[Variant]:
    """The variants to run, each with its method attached to its own engine."""
    from nucseg.engine import Engine

    config = _config(args, out_dir)
    variants = [Variant(norm, amp, amp and force) for norm in ("group", "batch")
                for amp in ((False, True) if amp_rows else (False,))]  # fmt: skip
    for v in variants:
        v.method = _method(config, v.norm)
        settings = dataclasses.replace(config.engine_settings(), amp=v.amp and not force)
        v.engine = Engine(v.method, settings)
        if force:  # --emulated-bf16: autocast where the engine would not
            v.engine.amp = v.amp
        if v.engine.amp != v.amp:
            raise NucsegError(f"{v.name}: the engine chose amp={v.engine.amp}")
    return variants


def _bf16_line(args: argparse.Namespace) -> tuple[bool, bool, str]:
    """Whether the bf16 rows run, whether they are forced (emulated), and a line saying so."""
    from nucseg.runtime import _cpu_flags, amp_dtype, cpu_bf16_native, resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        dtype = str(amp_dtype(device)).removeprefix("torch.")
        return True, False, f"mixed precision on {device}: autocast to {dtype} (the bf16 rows)"
    found = sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    if cpu_bf16_native():
        return True, False, f"bf16 on this CPU: native ({', '.join(found)}); the bf16 rows autocast"
    if args.emulated_bf16:
        note = "the bf16 rows run it EMULATED (--emulated-bf16), which training never does"
    else:
        note = "training runs fp32, so the bf16 rows would be the fp32 rows (not run)"
    line = f"bf16 on this CPU: NOT native (no avx512_bf16 / amx_bf16 / bf16 flag); {note}"
    return args.emulated_bf16, args.emulated_bf16, line


def _verdict(seconds: float, args: argparse.Namespace, config: Any) -> str:
    actual = {"width": config.width, "batch": config.batch_size, "crop": config.crop_size,
              "threads": args.threads, "device": args.device}  # fmt: skip
    if actual != TARGET_SETTINGS:
        return "n/a at these settings"
    return "met" if seconds <= TARGET_S else "NOT met"


def _report(variants: list[Variant], data: list[float], args: argparse.Namespace) -> None:
    """Print the timing table, the loss check and the target line."""
    import numpy as np

    per_val = args.val_images / (args.steps_per_epoch * args.val_every)
    mean_data = float(np.mean(data[args.warmup :]))
    rows = {}
    for v in variants:
        compute = float(np.mean(v.compute[args.warmup :]))
        val = v.val_image_s * per_val
        rows[v.name] = (mean_data, compute, v.val_image_s, val, mean_data + compute + val)
    base = rows[variants[0].name]
    config = variants[0].method.config
    print(
        f"{'variant':11s} {'data s':>7s} {'compute s':>9s} {'val image s':>11s} "
        f"{'val s/step':>10s} {'total s/step':>12s} {'compute x':>9s} {'total x':>7s}  target"
    )
    for v in variants:
        d, c, vi, va, t = rows[v.name]
        print(
            f"{v.name:11s} {d:7.3f} {c:9.3f} {vi:11.3f} {va:10.3f} {t:12.3f} "
            f"{c / base[1]:9.2f} {t / base[4]:7.2f}  {_verdict(t, args, config)}"
        )
    if not any(v.amp for v in variants):
        for norm in ("group", "batch"):
            print(f"bf16 {norm:6s} = fp32 {norm} (bf16 not native: training uses fp32)")
    total = args.warmup + args.steps
    print(
        f"\nloss after {total} steps (quality: bf16 against fp32 with the same norm, "
        "|loss difference| over every step)"
    )
    by_name = {v.name: v for v in variants}
    for v in variants:
        line = f"{v.name:11s} loss {v.losses[-1]:.4f}"
        ref = by_name.get(f"fp32 {v.norm}") if v.amp else None
        if ref is not None:
            diff = np.abs(np.array(v.losses) - np.array(ref.losses))
            line += f"  |d| mean {diff.mean():.4f}  max {diff.max():.4f}  last {diff[-1]:.4f}"
        print(line)
    if any(v.emulated for v in variants):
        print("* emulated bf16 (--emulated-bf16): not what training runs, left out of the target")
    best = min((v for v in variants if not v.emulated), key=lambda v: rows[v.name][4])
    seconds = rows[best.name][4]
    print(
        f"\ntarget <= {TARGET_S:.2f} s/step (width 16, 8 x 256x256 crops, 2 threads, CPU): "
        f"best {best.name} {seconds:.3f} s/step, {_verdict(seconds, args, config)}"
    )


def run_train(args: argparse.Namespace) -> int:
    """Run the `train` benchmark and print its figures.

    Args:
        args: parsed `train` options.

    Returns:
        0.
    """
    amp_rows, force, bf16_line = _bf16_line(args)
    with tempfile.TemporaryDirectory() as out_dir:
        variants = _build(args, out_dir, amp_rows, force)
        config = variants[0].method.config
        load = f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
        print(f"train benchmark: U-Net width {config.width}, depth {config.depth}; batch "
              f"{config.batch_size} of {config.crop_size}x{config.crop_size} crops of demo data, "
              f"profile {args.profile}'s augmentation and loss")  # fmt: skip
        print(f"device {args.device}, {args.threads} thread(s); {load} on {os.cpu_count()} CPUs")
        print(bf16_line)
        print(
            f"timing: mean of {args.steps} steps after {args.warmup} warm-up steps, variants "
            "interleaved step by step; data = loading one batch (shared by the variants)"
        )
        print(
            f"validation: one whole-image validation of a {args.val_size}x{args.val_size} demo "
            f"image x {args.val_images} images / ({args.steps_per_epoch} steps per epoch x "
            f"every {args.val_every} epochs)\n"
        )
        batches, data = _batches(variants[0].method), []
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.warmup + args.steps):
            start = time.perf_counter()
            batch = next(batches)
            data.append(time.perf_counter() - start)
            for v in variants:
                _train_step(v, batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        for v in variants:
            _validate(v, args.val_size)
        _report(variants, data, args)
    # Well below --threads means other processes held the cores (data loading is 1 thread).
    print(f"CPU use while training: {cpu / wall:.2f} cores busy on average, {args.threads} asked")
    if hasattr(os, "getloadavg"):
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command to the bench parser.

    Args:
        sub: the sub-parsers object of `nucseg.bench.build_parser`.
    """
    from nucseg._bench_predict import positive_int

    p = sub.add_parser("train", help="time U-Net training steps: fp32/bf16 x GroupNorm/BatchNorm")
    p.add_argument("--profile", default="monuseg-cpu", help="training settings (params/NAME)")
    p.add_argument("--steps", type=positive_int, default=8, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--width", type=positive_int, help="U-Net width (default: the profile's)")
    p.add_argument("--depth", type=positive_int, help="U-Net depth (default: the profile's)")
    # The target's batch by default, so that the default run answers the target.
    p.add_argument("--batch", type=positive_int, default=TARGET_SETTINGS["batch"],
                   help="crops per step (default 8, the target's)")  # fmt: skip
    p.add_argument("--crop", type=positive_int, help="crop side (default: the profile's)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--val-size", type=positive_int, default=1000, help="validation image side")
    p.add_argument("--val-images", type=positive_int, default=MONUSEG_VAL_IMAGES,
                   help="images per validation")  # fmt: skip
    p.add_argument("--val-every", type=positive_int, help="epochs between validations")
    p.add_argument("--steps-per-epoch", type=positive_int, help="default: the profile's")
    p.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="run the bf16 rows even where bf16 is not native (for comparison)",
    )
    p.set_defaults(func=run_train)
