"""Benchmarks: `python -m nucseg.bench metrics|predict|train [options]` (see `--help` of each).

`metrics` times the sparse-contingency metrics of `nucseg.metrics` on a deterministic synthetic
image (ellipses as GT; the prediction shifts and rescales them and adds merges, splits, misses and
false detections) against the literal per-nucleus-mask reference in `nucseg._reference_metrics`,
checks that both agree, and prints median milliseconds and the speed ratio.

`predict` times a whole-image U-Net prediction (`nucseg.infer.UNetPredictor`) on a procedural
demo image, stage by stage (read, tiling/network, post-processing, total), and measures the peak
resident memory of one prediction on a `--size` and on a `--big` image, each in a fresh
subprocess (`predict-peak`) so that the two peaks are separate. Without a weights file it builds
an untrained U-Net: the time does not depend on the weights.

`train` times U-Net training steps (data, compute, validation amortised) of fp32 and bf16
autocast, each with GroupNorm and BatchNorm, side by side, and compares their losses (see
`nucseg._bench_train`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from nucseg import _reference_metrics as ref
from nucseg import metrics
from nucseg._bench_predict import add_predict_parsers, positive_int
from nucseg._bench_train import add_train_parser
from nucseg.errors import NucsegError

T = TypeVar("T")
TARGET_MS = 25.0
TARGET_RATIO = 50.0
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _limit_threads() -> str:
    """Ask every math library for one thread; return a line saying what could be enforced."""
    for var in _THREAD_VARS:  # only reaches libraries loaded after this point
        os.environ.setdefault(var, "1")
    notes = []
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        notes.append("threadpoolctl not installed (bincount/unique/sort run on one thread anyway)")
    else:
        threadpool_limits(1)
        notes.append("threadpoolctl limit 1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
        notes.append("torch 1 thread")
    if hasattr(os, "getloadavg"):  # other processes on the machine inflate every timing
        notes.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return "threads: 1 requested; " + "; ".join(notes)


def _ellipse(
    centre: np.ndarray, axes: np.ndarray, theta: float, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, cols, and offsets (dy, dx) from the centre of the pixels inside an ellipse."""
    reach = int(np.ceil(axes.max())) + 1
    cy, cx = centre
    rows = np.arange(max(int(cy) - reach, 0), min(int(cy) + reach + 1, size))
    cols = np.arange(max(int(cx) - reach, 0), min(int(cx) + reach + 1, size))
    dy, dx = np.meshgrid(rows - cy, cols - cx, indexing="ij")
    u = dy * np.cos(theta) + dx * np.sin(theta)
    v = -dy * np.sin(theta) + dx * np.cos(theta)
    inside = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return rr[inside], cc[inside], dy[inside], dx[inside]


def synthetic_pair(
    size: int = 1000, nuclei: int = 500, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic GT and perturbed prediction, int32 (size, size) each.

    Args:
        size: image side in pixels.
        nuclei: number of GT ellipses (later ones overwrite earlier ones where they touch).
        seed: random seed.

    Returns:
        `(gt, pred)`. The prediction drops ~5 % of nuclei, merges ~7 % into their nearest
        neighbour, splits ~8 % in two, jitters the rest, and adds ~5 % false detections.

    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (nuclei, 2))
    axes = rng.uniform(6, 14, (nuclei, 2))
    thetas = rng.uniform(0, np.pi, nuclei)
    fates = rng.choice(4, nuclei, p=[0.80, 0.05, 0.07, 0.08])  # keep, drop, merge, split
    gt = np.zeros((size, size), dtype=np.int32)
    pred = np.zeros_like(gt)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(axis=1) if nuclei > 1 else np.zeros(nuclei, dtype=int)
    next_id = nuclei + 1
    for i in range(nuclei):
        rr, cc, _, _ = _ellipse(centres[i], axes[i], thetas[i], size)
        gt[rr, cc] = i + 1
        if fates[i] == 1:
            continue
        shift = rng.normal(0, 1.5, 2)
        scale = rng.uniform(0.85, 1.15, 2)
        rr, cc, dy, dx = _ellipse(centres[i] + shift, axes[i] * scale, thetas[i], size)
        label = np.full(len(rr), nearest[i] + 1 if fates[i] == 2 else i + 1, dtype=np.int32)
        if fates[i] == 3:
            phi = rng.uniform(0, np.pi)
            label[dy * np.cos(phi) + dx * np.sin(phi) > 0] = next_id
            next_id += 1
        pred[rr, cc] = label
    for _ in range(max(nuclei // 20, 1)):
        rr, cc, _, _ = _ellipse(rng.uniform(0, size, 2), rng.uniform(5, 12, 2), 0.0, size)
        pred[rr, cc] = next_id
        next_id += 1
    return gt, pred


def _time_ms(fn: Callable[[], T], repeats: int, desc: str | None = None) -> tuple[float, float, T]:
    """Median wall time and median CPU time of `fn` in milliseconds, and its last result.

    CPU time (this thread only) is what "ms on one core" means on a shared machine: it leaves out
    the time the process waits while other processes hold the CPUs.
    """
    wall, cpu = [], []
    for _ in tqdm(range(repeats), desc=desc, leave=False, disable=desc is None):
        start, start_cpu = time.perf_counter(), time.thread_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3, result


def _fast_three(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    return metrics.aji(gt, pred), metrics.aji_plus(gt, pred), metrics.panoptic_quality(gt, pred).pq


def _reference_three(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    return (
        ref.reference_aji(gt, pred),
        ref.reference_aji_plus(gt, pred),
        (ref.reference_panoptic_quality(gt, pred)[0]),
    )


def run_metrics(args: argparse.Namespace) -> int:
    """Run the `metrics` benchmark and print its figures.

    Args:
        args: parsed `metrics` options.

    Returns:
        0, or 1 when the fast metrics disagree with the reference.

    """
    print(_limit_threads())
    gt, pred = synthetic_pair(args.size, args.nuclei, args.seed)
    n_gt, n_pred = len(np.unique(gt)) - 1, len(np.unique(pred)) - 1
    side = f"{args.size}x{args.size}"
    print(f"synthetic {side}: {n_gt} GT nuclei, {n_pred} predicted (seed {args.seed})")
    metrics.score(gt, pred)  # warm-up
    ms_score, cpu_score, _ = _time_ms(lambda: metrics.score(gt, pred), args.repeats)
    ms_three, cpu_three, fast = _time_ms(lambda: _fast_three(gt, pred), args.repeats)
    ms_ref, cpu_ref, slow = _time_ms(
        lambda: _reference_three(gt, pred), args.reference_repeats, "reference"
    )
    print("fast      aji={:.6f} aji_plus={:.6f} pq={:.6f}".format(*fast))
    print("reference aji={:.6f} aji_plus={:.6f} pq={:.6f}".format(*slow))
    rows = [
        ("fast score() all metrics", ms_score, cpu_score, args.repeats),
        ("fast aji+aji_plus+pq", ms_three, cpu_three, args.repeats),
        ("reference aji+aji_plus+pq", ms_ref, cpu_ref, args.reference_repeats),
    ]
    for name, wall, cpu, n in rows:
        print(f"{name + ':':27s} {wall:10.2f} ms median wall, {cpu:10.2f} ms median CPU, of {n}")
    for name, ref_ms, fast_ms in (
        ("aji+aji_plus+pq", cpu_ref, cpu_three),
        ("score()", cpu_ref, cpu_score),
    ):
        print(f"speed ratio reference / fast {name}: {ref_ms / fast_ms:.1f}x (CPU medians)")
    verdicts = [
        f"{label} {'met' if t_fast < TARGET_MS and t_ref / t_fast >= TARGET_RATIO else 'NOT met'}"
        for label, t_fast, t_ref in (("by CPU", cpu_three, cpu_ref), ("by wall", ms_three, ms_ref))
    ]
    print(
        f"target (aji+aji_plus+pq): fast < {TARGET_MS:.0f} ms/image on one core and "
        f">= {TARGET_RATIO:.0f}x faster: " + ", ".join(verdicts)
    )
    if not np.allclose(fast, slow, rtol=0, atol=1e-9):
        print("ERROR: fast metrics disagree with the reference", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with one sub-command per benchmark."""
    parser = argparse.ArgumentParser(prog="python -m nucseg.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("metrics", help="time fast metrics against the literal reference")
    m.add_argument("--repeats", type=positive_int, default=20, help="fast-path repeats")
    m.add_argument(
        "--reference-repeats", type=positive_int, default=1, help="reference repeats (slow)"
    )
    m.add_argument("--size", type=positive_int, default=1000, help="image side in pixels")
    m.add_argument("--nuclei", type=positive_int, default=500, help="number of GT nuclei")
    m.add_argument("--seed", type=int, default=0, help="synthetic-image seed")
    m.set_defaults(func=run_metrics)

    add_predict_parsers(sub)
    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m nucseg.bench`.

    Args:
        argv: command-line arguments without the program name (default: `sys.argv[1:]`).

    Returns:
        Process exit status.

    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NucsegError as err:
        print(f"nucseg.bench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
