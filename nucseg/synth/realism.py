"""How real do synthetic H&E crops look? Numbers rather than pictures.

No pretrained feature network can be downloaded here (so no FID), hence three measures:

- :func:`classifier_two_sample_test`: a small CNN is trained to tell real from synthetic crops;
  its accuracy on held-out crops is the test statistic (C2ST, Lopez-Paz & Oquab 2017). 50 %
  means the classifier finds no difference, 100 % that the two sets are trivially apart.
- stain and colour statistics and nuclear contrast live in :mod:`nucseg.synth.stain_stats`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn
from tqdm.auto import tqdm

from nucseg.errors import ShapeMismatchError
from nucseg.runtime import InputError, image_to_tensor, resolve_device
from nucseg.stain import check_rgb_uint8
from nucseg.synth.stain_stats import as_crops

__all__ = ["MIN_CROPS", "C2STResult", "classifier_two_sample_test", "random_crops"]

#: Fewest crops per set for a C2ST: at least one per class must be held out and trained on.
MIN_CROPS = 4


@dataclass(frozen=True)
class C2STResult:
    """Outcome of a classifier two-sample test.

    Attributes:
        accuracy: Fraction of held-out crops classified correctly (classes balanced).
        ci_low: Lower end of the 95 % interval of ``accuracy`` (see ``interval``).
        ci_high: Upper end of that interval.
        p_value: One-sided p-value of "accuracy <= 0.5" (no detectable difference), by the
            same method as the interval.
        interval: ``"binomial"`` (exact Clopper-Pearson and binomial test) when every held-out
            crop is its own group; else ``"group bootstrap"`` (held-out groups resampled per
            class), because crops of one image are not independent trials.
        accuracy_real: Accuracy on the held-out real crops alone.
        accuracy_synthetic: Accuracy on the held-out synthetic crops alone.
        n_train: Training crops, both classes together.
        n_test: Held-out crops, both classes together.
        epochs: Epochs actually run (fewer than asked when ``max_minutes`` cut training short).
        seconds: Wall time of the whole test (split, training, evaluation).
    """

    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float
    interval: str
    accuracy_real: float
    accuracy_synthetic: float
    n_train: int
    n_test: int
    epochs: int
    seconds: float


def random_crops(
    images: Sequence[np.ndarray],
    size: int,
    per_image: int,
    *,
    seed: int = 0,
    instances: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cut ``per_image`` square crops of side ``size`` from each image, at random positions.

    Args:
        images: uint8 RGB images (H, W, 3), each at least ``size`` on both sides.
        size: Side of the crops in pixels.
        per_image: Crops per image.
        seed: Seed of the positions.
        instances: Instance maps of ``images``, cropped at the same positions.

    Returns:
        ``(crops, groups, instance_crops)``: uint8 (N, size, size, 3); each crop's image index
        (N,), the groups of :func:`classifier_two_sample_test`; the instance crops or None.

    Raises:
        InputError: Settings below 1, no image, or an image smaller than ``size``.
        ImageReadError: An image is not uint8 RGB.
        ShapeMismatchError: An instance map does not match its image.
    """
    if size < 1 or per_image < 1:
        raise InputError(f"size and per_image must be >= 1, got {size} and {per_image}")
    rng = np.random.default_rng(seed)
    crops, groups, masks = [], [], []
    for i, image in enumerate(images):
        image = check_rgb_uint8(image, f"image {i}")
        h, w = image.shape[:2]
        if h < size or w < size:
            raise InputError(f"image {i}: shape {image.shape[:2]} is smaller than the crop {size}")
        if instances is not None and np.shape(instances[i]) != (h, w):
            raise ShapeMismatchError(
                f"instances {i}: shape {np.shape(instances[i])} does not match image {(h, w)}"
            )
        for y, x in zip(rng.integers(0, h - size + 1, per_image),
                        rng.integers(0, w - size + 1, per_image), strict=True):  # fmt: skip
            crops.append(image[y : y + size, x : x + size])
            groups.append(i)
            if instances is not None:
                masks.append(np.asarray(instances[i])[y : y + size, x : x + size])
    if not crops:
        raise InputError("images: no images given")
    return np.stack(crops), np.asarray(groups), (np.stack(masks) if instances is not None else None)


class _CropClassifier(nn.Module):
    """Four conv-BN-ReLU blocks, global average pooling and one logit (synthetic = 1).

    The first block keeps full resolution, so that fine texture (blur, noise) is seen; the
    others halve it.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for k, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if k == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]  # fmt: skip
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for images (N, 3, H, W) in [0, 1]."""
        return self.head(self.features(x - 0.5).mean(dim=(2, 3))).squeeze(1)


def _split(
    n: int, groups: Any, test_fraction: float, rng: np.random.Generator, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train and test indices and group codes; a group goes wholly to one side."""
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise InputError(f"{name} groups: expected {n} labels (one per crop), got {groups.shape}")
    unique = rng.permutation(np.unique(groups))
    if len(unique) < 2:
        raise InputError(f"{name}: all crops are in one group; at least 2 groups are needed")
    counts = np.array([(groups == g).sum() for g in unique])
    # Fill the test side group by group up to the fraction, leaving at least one for training.
    n_test_groups = int(np.clip(np.searchsorted(np.cumsum(counts), test_fraction * n) + 1,
                                1, len(unique) - 1))  # fmt: skip
    test = np.isin(groups, unique[:n_test_groups])
    return np.flatnonzero(~test), np.flatnonzero(test), np.unique(groups, return_inverse=True)[1]


def _balance(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Subsample the larger index set so that both classes count the same."""
    k = min(len(a), len(b))
    return np.sort(rng.choice(a, k, replace=False)), np.sort(rng.choice(b, k, replace=False))


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per crop: orientation says nothing about realism."""
    n = x.shape[0]
    h = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    v = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    x = torch.where(h, x.flip(3), x)
    return torch.where(v, x.flip(2), x)


def _group_bootstrap(
    correct: list[np.ndarray], codes: list[np.ndarray], seed: int, reps: int = 10_000
) -> tuple[float, float, float]:
    """Percentile 95 % interval and one-sided p-value of the balanced accuracy.

    The held-out groups of each class (``correct`` and group ``codes``, one array per class)
    are resampled with replacement; the p-value is the share of resamples at or below 0.5.
    """
    rng = np.random.default_rng([seed, 1])
    per_class = []
    for hits, code in zip(correct, codes, strict=True):
        _, code = np.unique(code, return_inverse=True)
        k, n = np.bincount(code, hits.astype(float)), np.bincount(code)
        pick = rng.integers(0, len(n), (reps, len(n)))
        per_class.append(k[pick].sum(1) / n[pick].sum(1))
    boot = np.mean(per_class, axis=0)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(low), float(high), float((1 + np.sum(boot <= 0.5)) / (reps + 1))


@torch.no_grad()
def _recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Set BatchNorm running statistics to exact averages under the final weights."""
    # After few steps the running averages still remember the first weights, and the
    # eval-mode classifier then calls every crop one class.
    for m in model.modules():
        if not isinstance(m, nn.BatchNorm2d):
            continue
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) > 0 for i in range(0, len(x), batch_size)])


def classifier_two_sample_test(
    real_crops: Any,
    synthetic_crops: Any,
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    epochs: int = 20,
    width: int = 16,
    batch_size: int = 16,
    lr: float = 2e-3,
    device: str | torch.device = "cpu",
    max_minutes: float | None = None,
    real_groups: Sequence[Any] | None = None,
    synthetic_groups: Sequence[Any] | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> C2STResult:
    """Train a small CNN to tell real from synthetic crops; its held-out accuracy is the test.

    Each set is split into training and held-out crops (by ``*_groups`` when given, so that
    held-out crops come from images the classifier never saw: otherwise it can recognise the
    staining of single images and call two halves of one data set different). Both sides are
    then balanced by subsampling the larger class. The classifier (:class:`_CropClassifier`) is
    trained with Adam on a binary cross-entropy with random flips, then scored without them.

    Deterministic for a ``seed`` and thread count on the CPU: weights are initialised under a
    forked, seeded torch RNG and batches drawn from a seeded ``torch.Generator``, leaving the
    global RNG as it was. On CUDA, non-deterministic kernels may change the last digits.

    Args:
        real_crops: uint8 RGB crops (N, H, W, 3), or a sequence of (H, W, 3) crops.
        synthetic_crops: Same, with the same H and W as ``real_crops``.
        seed: Seed of the split, the initial weights, shuffling and flips.
        test_fraction: Fraction of each set held out, in (0, 1).
        epochs: Passes over the training crops.
        width: Channels of the first conv layer (then 2x, 4x, 4x).
        batch_size: Crops per optimiser step.
        lr: Adam learning rate.
        device: A name for :func:`nucseg.runtime.resolve_device`.
        max_minutes: Stop training after the epoch that passes this wall time (None: no limit).
        real_groups: Source (e.g. image id) of each real crop; None = each crop its own.
        synthetic_groups: Same for the synthetic crops.
        num_threads: torch CPU threads during the test (restored afterwards); None = unchanged.
        progress: Show a progress bar over the epochs.

    Returns:
        The accuracy, its 95 % interval and the counts (:class:`C2STResult`).

    Raises:
        InputError: Crops that are not uint8 RGB of one shape, fewer than :data:`MIN_CROPS` per
            set, bad groups, or settings out of range.
        DeviceError: An unknown or unavailable device.
    """
    start = time.perf_counter()
    real = as_crops(real_crops, "real_crops")
    synth = as_crops(synthetic_crops, "synthetic_crops")
    if real.shape[1:] != synth.shape[1:]:
        raise InputError(f"real and synthetic crops differ: {real.shape[1:]} vs {synth.shape[1:]}")
    for name, arr in (("real_crops", real), ("synthetic_crops", synth)):
        if len(arr) < MIN_CROPS:
            raise InputError(f"{name}: {len(arr)} crops; a C2ST needs at least {MIN_CROPS} per set")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if min(epochs, width, batch_size) < 1 or not lr > 0:
        raise InputError(f"need epochs, width, batch_size >= 1 and lr > 0, got "
                         f"{epochs}, {width}, {batch_size}, {lr}")  # fmt: skip
    if max_minutes is not None and not max_minutes > 0:
        raise InputError(f"max_minutes must be > 0 or None, got {max_minutes}")
    dev = resolve_device(device)

    rng = np.random.default_rng(seed)
    r_train, r_test, r_codes = _split(len(real), real_groups, test_fraction, rng, "real_crops")
    s_train, s_test, s_codes = _split(
        len(synth), synthetic_groups, test_fraction, rng, "synthetic_crops"
    )
    r_train, s_train = _balance(r_train, s_train, rng)
    r_test, s_test = _balance(r_test, s_test, rng)

    def tensors(r_idx: np.ndarray, s_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = image_to_tensor(np.concatenate([real[r_idx], synth[s_idx]])).contiguous()
        y = torch.cat([torch.zeros(len(r_idx)), torch.ones(len(s_idx))])
        return x.to(dev), y.to(dev)

    x_train, y_train = tensors(r_train, s_train)
    x_test, y_test = tensors(r_test, s_test)

    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _CropClassifier(width).to(dev)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        loss_fn = nn.BCEWithLogitsLoss()
        deadline = None if max_minutes is None else start + 60.0 * max_minutes
        done = 0
        for _ in tqdm(range(epochs), desc="C2ST", unit="epoch", leave=False, disable=not progress):
            model.train()
            order = torch.randperm(len(x_train), generator=gen).to(dev)
            for i in range(0, len(order), batch_size):
                batch = order[i : i + batch_size]
                if len(batch) < 2:  # BatchNorm needs two crops; a lone one rejoins next epoch
                    continue
                opt.zero_grad(set_to_none=True)
                loss_fn(model(_flip(x_train[batch], gen)), y_train[batch]).backward()
                opt.step()
            done += 1
            if deadline is not None and time.perf_counter() > deadline:
                break
        _recompute_batchnorm(model, x_train, 4 * batch_size)
        correct = (_predict(model, x_test, 4 * batch_size).float() == y_test).cpu().numpy()
    finally:
        torch.set_num_threads(threads)

    k, n, n_real = int(correct.sum()), len(correct), len(r_test)
    codes = [r_codes[r_test], s_codes[s_test]]
    if all(len(np.unique(c)) == len(c) for c in codes):
        ci = binomtest(k, n, 0.5).proportion_ci(0.95, method="exact")
        low, high = float(ci.low), float(ci.high)
        p_value, interval = float(binomtest(k, n, 0.5, alternative="greater").pvalue), "binomial"
    else:
        hits = [correct[:n_real], correct[n_real:]]
        low, high, p_value = _group_bootstrap(hits, codes, seed)
        interval = "group bootstrap"
    return C2STResult(
        accuracy=k / n,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        interval=interval,
        accuracy_real=float(correct[:n_real].mean()),
        accuracy_synthetic=float(correct[n_real:].mean()),
        n_train=len(x_train),
        n_test=n,
        epochs=done,
        seconds=time.perf_counter() - start,
    )
