"""The `predict` benchmark of `python -m nucseg.bench` (sub-commands `predict`, `predict-peak`).

`predict` times a whole-image U-Net prediction on a procedural demo image (written to a TIFF and
read back), stage by stage: read, tiling/network (`nucseg.tiling.predict_probabilities`),
post-processing (`nucseg.postprocess.instances_from_three_class`) and total; it prints the
median of ``--repeats`` runs after one warm-up run. It then measures the peak resident memory
(VmHWM) of one prediction on a ``--size`` and on a ``--big`` image, each in a fresh interpreter
(`predict-peak`), so that the two peaks are separate. Images larger than the demo tile (1000
pixels) are mirror-padded copies of it. Without a weights file it builds an untrained U-Net:
the time does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

TARGET_PREDICT_S = 3.0
TARGET_PEAK_MB = {1000: 2000.0, 4096: 4000.0}  # image side -> peak RSS in MB (1e6 bytes)


def _load_unet(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, post-processing params, description) from --weights / the default / untrained."""
    import torch

    from nucseg.checkpoint import load_model, postprocess_from
    from nucseg.infer import DEFAULT_UNET_WEIGHTS
    from nucseg.models import build_model
    from nucseg.postprocess import PostprocessParams

    torch.set_num_threads(args.threads)
    path = Path(args.weights) if args.weights else DEFAULT_UNET_WEIGHTS
    if args.weights or path.is_file():
        model, checkpoint = load_model(path, device=args.device)
        params = postprocess_from(checkpoint) or PostprocessParams()
        return model, params, f"weights {path} ({model.build_spec})"
    kwargs = {k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None}
    model = build_model("unet", **kwargs)
    arch = f"width {model.width}, depth {model.depth}"
    note = f"no weights at {path}: untrained U-Net ({arch}); timing does not depend on weights"
    return model, PostprocessParams(), note


def _demo_image_file(folder: str, size: int) -> Path:
    """Write the procedural demo tile (at most 1000 pixels; larger sizes are padded later)."""
    from nucseg.data.demo import make_tile
    from nucseg.data.images import write_image

    image, _ = make_tile(seed=0, size=min(max(size, 32), 1000))
    return write_image(Path(folder) / "demo.tif", image)


def _sized(image: np.ndarray, size: int) -> np.ndarray:
    """Crop or mirror-pad an image to size x size."""
    image = image[:size, :size]
    pad = ((0, size - image.shape[0]), (0, size - image.shape[1]), (0, 0))
    return np.pad(image, pad, mode="symmetric") if pad[0][1] or pad[1][1] else image


def _predict_stages(
    model: Any, params: Any, path: Path, args: argparse.Namespace
) -> dict[str, float]:
    """Seconds of each stage of one prediction of the image file, padded to --size."""
    from nucseg.data.images import read_image
    from nucseg.postprocess import instances_from_three_class
    from nucseg.tiling import predict_probabilities

    times = {"read": time.perf_counter()}
    image = _sized(read_image(path), args.size)
    times["network"] = time.perf_counter()
    probs = predict_probabilities(
        model, image, tile=args.tile, overlap=args.overlap, device=args.device, progress=False
    )
    times["post"] = time.perf_counter()
    instances_from_three_class(probs, params)
    end = time.perf_counter()
    stamps = [*times.values(), end]
    seconds = {name: b - a for name, a, b in zip(times, stamps, stamps[1:], strict=False)}
    seconds["total"] = end - times["read"]
    return seconds


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024 / 1e6
    except (OSError, AttributeError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def run_predict_peak(args: argparse.Namespace) -> int:
    """One prediction in this process, then print its peak resident memory (for `predict`)."""
    model, params, _ = _load_unet(args)
    _predict_stages(model, params, Path(args.image), args)
    print(f"peak_rss_mb={_peak_rss_mb():.1f}")
    return 0


def _child_peak(args: argparse.Namespace, image: Path, size: int) -> float | str:
    """Peak RSS in MB of a prediction at ``size`` in a fresh interpreter (or why it failed)."""
    cmd = [sys.executable, "-m", "nucseg.bench", "predict-peak", "--image", str(image)]
    cmd += ["--size", str(size), "--threads", str(args.threads), "--device", args.device]
    cmd += ["--tile", str(args.tile), "--overlap", str(args.overlap)]
    for flag in ("weights", "width", "depth"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    env = dict(os.environ, **{var: str(args.threads) for var in _THREAD_VARS})
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"peak_rss_mb=([\d.]+)", done.stdout)
    if done.returncode or not found:
        return f"failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
    return float(found.group(1))


def run_predict(args: argparse.Namespace) -> int:
    """Run the `predict` benchmark and print stage timings and peak memory.

    Args:
        args: parsed `predict` options.

    Returns:
        0, or 1 when a memory measurement failed.
    """
    from nucseg.tiling import count_tiles, default_overlap

    for var in _THREAD_VARS:
        os.environ[var] = str(args.threads)
    model, params, note = _load_unet(args)
    if args.overlap is None:
        args.overlap = default_overlap(model, args.tile)
    print(f"threads: {args.threads}; device: {args.device}; {note}")
    n, th, tw = count_tiles(args.size, args.size, args.tile, args.overlap, model.multiple)
    side = f"{args.size}x{args.size}"
    print(f"image: demo tile {side}; {n} tile(s) of {th}x{tw} (tile {args.tile}, overlap ", end="")
    print(f"{args.overlap}); no TTA")
    with tempfile.TemporaryDirectory() as folder:
        path = _demo_image_file(folder, args.size)
        _predict_stages(model, params, path, args)  # warm-up: allocator, oneDNN kernels
        runs = [_predict_stages(model, params, path, args) for _ in range(args.repeats)]
        median = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        labels = {"read": "read image", "network": "tiling/network", "post": "post-processing"}
        for key, label in [*labels.items(), ("total", "total")]:
            print(f"{label + ':':17s}{median[key]:8.3f} s median of {args.repeats}")
        verdict = _verdict(median["total"] <= TARGET_PREDICT_S, args.size == 1000)
        print(f"target: total <= {TARGET_PREDICT_S:.0f} s at 1000x1000 on 2 CPU cores: {verdict}")
        failed = False
        for size, (side, target) in zip((args.size, args.big), TARGET_PEAK_MB.items(), strict=True):
            peak = _child_peak(args, path, size)
            if isinstance(peak, str):
                failed = True
                print(f"peak RSS {size}x{size}: {peak}")
                continue
            verdict = _verdict(peak < target, size == side)
            print(
                f"peak RSS {size}x{size}: {peak:8.1f} MB "
                f"(target < {target:.0f} MB at {side}x{side}: {verdict})"
            )
    return int(failed)


def _verdict(ok: bool, applies: bool) -> str:
    return ("met" if ok else "NOT met") if applies else "n/a at this size"


def positive_int(text: str) -> int:
    """Argparse type of the benchmarks' counts and sizes (also used by `nucseg.bench`)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_predict_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `predict` and (internal) `predict-peak` sub-commands to the bench parser.

    Args:
        sub: the sub-parsers object of `nucseg.bench.build_parser`.
    """
    p = sub.add_parser("predict", help="time a whole-image U-Net prediction and its peak memory")
    _predict_options(p)
    p.add_argument("--big", type=positive_int, default=4096, help="side of the memory test")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed predictions")
    p.set_defaults(func=run_predict)
    peak = sub.add_parser("predict-peak", help="internal: peak memory of one prediction")
    _predict_options(peak)
    peak.add_argument("--image", required=True, help="image file, cropped or padded to --size")
    peak.set_defaults(func=run_predict_peak)


def _predict_options(p: argparse.ArgumentParser) -> None:
    from nucseg.infer import UNET_TILE

    p.add_argument("--weights", help="checkpoint (default: the packaged one, else untrained)")
    p.add_argument("--width", type=positive_int, help="untrained U-Net width (default 16)")
    p.add_argument("--depth", type=positive_int, help="untrained U-Net depth (default 4)")
    p.add_argument("--size", type=positive_int, default=1000, help="image side in pixels")
    p.add_argument("--threads", type=positive_int, default=2, help="torch / BLAS threads")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--tile", type=positive_int, default=UNET_TILE, help="largest tile side")
    p.add_argument(
        "--overlap", type=int, help="minimal tile overlap (default: half the receptive field)"
    )
