"""Whole-image prediction with a fully convolutional network, one tile at a time.

`predict_probabilities` slides a square window over the image (the last tile flush with each
border), runs the network on batches of tiles and blends the overlapping softmax outputs with a
smooth window: each tile's probabilities are weighted by a separable raised-cosine ramp that is
low at the tile's edges (where zero padding inside the network distorts the output) and 1 in its
centre, and the weighted sum is divided by the summed weights (separable, so kept as two 1-D
profiles). Memory stays at one image-sized (C, H, W) accumulator plus one batch of tiles, so a
4096x4096 image fits in a few GB.

Input is normalised by `image_to_tensor`, the same float32 [0, 1] scaling the training crops
get in `nucseg.data.dataset`. This module imports only numpy, torch and `nucseg.errors`, so that
floor-1 modules such as the dataset can import `image_to_tensor` from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nucseg.errors import NucsegError

WINDOW_FLOOR = 1e-2  # smallest blending weight, so every pixel has a positive total weight
_PROGRESS_MIN_TILES = 64  # show a progress bar from this many tiles on (about 2000x2000 px)


class TilingError(NucsegError, ValueError):
    """An image, a tiling setting or a model output is unusable for tiled prediction."""


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert RGB image(s) to the network input: float32 in [0, 1], channels first.

    uint8 values are divided by 255 (exactly as the training crops are); float input is taken
    to be in [0, 1] already and only cast to float32.

    Args:
        image: (H, W, 3) or a batch (N, H, W, 3), uint8 or float.

    Returns:
        (3, H, W) or (N, 3, H, W) float32 tensor. It is a channels-first view of a
        channels-last buffer, so ``.contiguous()`` copies it and
        ``.contiguous(memory_format=torch.channels_last)`` does not.

    Raises:
        TilingError: wrong number of dimensions or channels, or a non-numeric dtype.
    """
    arr = np.asarray(image)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise TilingError(f"image: expected (H, W, 3) or (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise TilingError(f"image: expected uint8 or float in [0, 1], got dtype {arr.dtype}")
    pixels = torch.from_numpy(np.ascontiguousarray(arr))
    pixels = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
    return pixels.movedim(-1, -3)


def window_1d(tile: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """Blending weights along one side of a tile: a raised-cosine ramp over ``overlap`` pixels.

    Args:
        tile: tile side in pixels.
        overlap: ramp length in pixels at each end; 0 gives a flat window.
        floor: smallest weight, in (0, 1].

    Returns:
        float32 (tile,) weights in [floor, 1], symmetric, 1 in the middle.
    """
    if overlap <= 0:
        return np.ones(tile, dtype=np.float32)
    edge = np.minimum(np.arange(tile), np.arange(tile)[::-1]) + 0.5  # distance to nearest edge
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.minimum(edge / overlap, 1.0))
    return np.maximum(ramp, floor).astype(np.float32)


def axis_tiles(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """Tile side and start offsets along one image axis.

    The fewest tiles of side at most ``tile`` that overlap by at least ``overlap`` pixels are
    used, and their side is then shrunk to the smallest multiple of ``multiple`` that still
    covers the axis with that overlap (so a 1000-pixel side takes three 384-pixel tiles rather
    than three 512-pixel ones for ``tile=512, overlap=64``). Starts are evenly spaced, the first
    at 0 and the last flush with the end. A side no longer than ``tile`` gets one tile of side
    ``length`` rounded up to ``multiple`` (the image is then padded to it).

    Args:
        length: image side in pixels (>= 1).
        tile: largest tile side, a multiple of ``multiple``.
        overlap: minimal overlap of neighbouring tiles, in [0, tile).
        multiple: the tile side is a multiple of this (e.g. ``2**depth`` of a U-Net).

    Returns:
        ``(side, starts)``.
    """
    if length <= tile:
        return -(-length // multiple) * multiple, [0]
    count = -(-(length - overlap) // (tile - overlap))
    needed = -(-(length + (count - 1) * overlap) // count)
    side = min(tile, -(-needed // multiple) * multiple)
    starts = [i * (length - side) // (count - 1) for i in range(count)]  # gaps <= side - overlap
    return side, starts


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(x, k, dims=(-2, -1))


def _undo_dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def tta_transforms(tta: bool | str | None) -> list[tuple[int, bool]]:
    """The test-time augmentations as (quarter turns, horizontal flip) pairs.

    Args:
        tta: False/None (identity only), True or ``"dihedral"`` (all 8 rotations and
            reflections of the square) or ``"flips"`` (identity, horizontal, vertical, both).

    Returns:
        A list of ``(k, flip)``; the transform flips left-right first, then turns k quarters.

    Raises:
        TilingError: unknown ``tta`` value.
    """
    if tta is None or tta is False:
        return [(0, False)]
    if tta is True or tta == "dihedral":
        return [(k, flip) for flip in (False, True) for k in range(4)]
    if tta == "flips":  # a 180-degree turn of a left-right flip is an up-down flip
        return [(0, False), (0, True), (2, True), (2, False)]
    raise TilingError(f"tta must be False, True, 'dihedral' or 'flips', got {tta!r}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; the previous train/eval mode is restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _batches(positions: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for start in range(0, len(positions), size):
        yield positions[start : start + size]


def _check_settings(
    image: np.ndarray, tile: int, overlap: int, batch_size: int, multiple: int
) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise TilingError(f"image: expected (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise TilingError(f"image: empty image of shape {image.shape}")
    if tile < 1:
        raise TilingError(f"tile must be >= 1 pixel, got {tile}")
    if not 0 <= overlap < tile:
        raise TilingError(f"overlap must be in [0, tile={tile}), got {overlap}")
    if batch_size < 1:
        raise TilingError(f"batch_size must be >= 1, got {batch_size}")
    if multiple < 1 or tile % multiple:
        raise TilingError(f"tile={tile} must be a multiple of {multiple} (the network's stride)")


def _check_output(logits: torch.Tensor, n: int, size: tuple[int, int]) -> None:
    if logits.ndim != 4 or logits.shape[0] != n or tuple(logits.shape[2:]) != size:
        raise TilingError(
            f"model output has shape {tuple(logits.shape)}; expected ({n}, C, {size[0]}, "
            f"{size[1]}) for a batch of {size[0]}x{size[1]} tiles (is multiple= right?)"
        )


def _axis_weight(length: int, side: int, starts: list[int], ramp: np.ndarray) -> np.ndarray:
    """Sum of the 1-D windows over the tiles of one axis (the 2-D weight is separable)."""
    total = np.zeros(length, dtype=np.float32)
    for start in starts:
        total[start : start + side] += ramp
    return total


def predict_probabilities(
    model: nn.Module,
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    device: str | torch.device = "cpu",
    tta: bool | str | None = False,
    batch_size: int = 4,
    channels_last: bool | None = None,
    amp: bool | None = None,
    multiple: int | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Softmax probabilities of a segmentation network over a whole image, tile by tile.

    The model runs in eval mode (its train/eval mode is restored afterwards) and is moved to
    ``device`` (and to channels-last memory format) in place; it must map (N, 3, h, w) to
    (N, C, h, w) logits. Tiles (see `axis_tiles`: at most ``tile`` pixels a side, overlapping by
    at least ``overlap``, the last flush with the border) are blended with `window_1d` weights.
    An image side shorter than a tile is reflect-padded and the padding cropped off again.
    With ``tta`` the probabilities of each transformed tile are mapped back and averaged.

    Memory: the (C, H, W) float32 probability accumulator, two 1-D weight profiles and one
    batch of tiles (the image is converted tile by tile).

    Args:
        model: fully convolutional network returning logits (e.g. ``nucseg.models.UNet``).
        image: (H, W, 3) uint8 RGB (float in [0, 1] is accepted too).
        tile: largest tile side in pixels, a multiple of ``multiple``.
        overlap: minimal overlap of neighbouring tiles (and blending ramp length), in pixels.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        tta: test-time augmentation, see `tta_transforms` (8 dihedral transforms for True).
        batch_size: tiles per forward pass.
        channels_last: channels-last memory format (faster convolutions on CPU and GPU);
            None = on.
        amp: autocast to bf16 (fp16 on GPUs without bf16); None = on for CUDA only.
        multiple: tile sides are multiples of this; None = ``model.multiple`` if the model has
            it (a U-Net of depth d: 2**d), else 1.
        progress: show a progress bar; None = only for images of many tiles.

    Returns:
        float32 (C, H, W) probabilities (C = 3 for [background, inside, boundary]),
        summing to 1 over the first axis.

    Raises:
        TilingError: bad image or settings, or the model output has the wrong shape.
    """
    image = np.asarray(image)
    multiple = int(getattr(model, "multiple", 1) if multiple is None else multiple)
    _check_settings(image, tile, overlap, batch_size, multiple)
    dev = resolve_device(device)
    channels_last = True if channels_last is None else channels_last
    amp = dev.type == "cuda" if amp is None else amp
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=dev, memory_format=memory_format)
    height, width = image.shape[:2]
    side_y, starts_y = axis_tiles(height, tile, overlap, multiple)
    side_x, starts_x = axis_tiles(width, tile, overlap, multiple)
    pad = ((0, max(side_y - height, 0)), (0, max(side_x - width, 0)), (0, 0))
    padded = np.pad(image, pad, mode="reflect") if pad[0][1] or pad[1][1] else image
    big_h, big_w = padded.shape[:2]
    ramp_y, ramp_x = window_1d(side_y, overlap), window_1d(side_x, overlap)
    window = ramp_y[:, None] * ramp_x[None, :]
    positions = [(y, x) for y in starts_y for x in starts_x]
    transforms = tta_transforms(tta)
    accum: np.ndarray | None = None
    show = len(positions) >= _PROGRESS_MIN_TILES if progress is None else progress
    bar = tqdm(total=len(positions), desc="tiles", unit="tile", disable=not show, leave=False)
    with _evaluating(model), torch.inference_mode(), _autocast(dev, amp):
        for batch in _batches(positions, batch_size):
            tiles = np.stack([padded[y : y + side_y, x : x + side_x] for y, x in batch])
            inputs = image_to_tensor(tiles).to(dev).contiguous(memory_format=memory_format)
            probs = None
            for k, flip in transforms:
                view = _dihedral(inputs, k, flip)
                logits = model(view)
                _check_output(logits, len(batch), tuple(view.shape[2:]))
                out = _undo_dihedral(torch.softmax(logits.float(), dim=1), k, flip)
                probs = out if probs is None else probs + out
            probs = (probs / len(transforms)).cpu().numpy()
            if accum is None:
                accum = np.zeros((probs.shape[1], big_h, big_w), dtype=np.float32)
            for (y, x), p in zip(batch, probs, strict=True):
                accum[:, y : y + side_y, x : x + side_x] += p * window
            bar.update(len(batch))
    bar.close()
    assert accum is not None  # there is always at least one tile
    accum = accum[:, :height, :width]  # a view unless the image was padded
    # In place, one axis at a time: no (H, W) temporary.
    accum /= _axis_weight(big_h, side_y, starts_y, ramp_y)[None, :height, None]
    accum /= _axis_weight(big_w, side_x, starts_x, ramp_x)[None, None, :width]
    return np.ascontiguousarray(accum)


def count_tiles(
    height: int, width: int, tile: int = 512, overlap: int = 64, multiple: int = 1
) -> tuple[int, int, int]:
    """Tiles `predict_probabilities` runs for an image (without TTA).

    Args:
        height: image height in pixels.
        width: image width in pixels.
        tile: largest tile side.
        overlap: minimal overlap, in [0, tile).
        multiple: tile sides are multiples of this.

    Returns:
        ``(count, tile height, tile width)``.
    """
    side_y, starts_y = axis_tiles(height, tile, overlap, multiple)
    side_x, starts_x = axis_tiles(width, tile, overlap, multiple)
    return len(starts_y) * len(starts_x), side_y, side_x
