"""Whole-image prediction with any fully convolutional network, one tile at a time.

`predict_tiled` slides a square window over the image (the last tile flush with each border),
runs the network on batches of tiles, turns each output into a map with an output hook
(softmax probabilities for the U-Net, the raw ``tanh`` map of a GAN generator, ...), and blends
the overlapping maps with a smooth window: each tile's map is weighted by a separable
raised-cosine ramp that is low at the tile's edges (where zero padding inside the network
distorts the output) and 1 in its centre, and the weighted sum is divided by the summed weights
(separable, so kept as two 1-D profiles). Memory stays at one image-sized (C, H, W) accumulator
plus one batch of tiles, so a 4096x4096 image fits in a few GB. `predict_probabilities` is the
softmax case (plus a sigmoid on the U-Net's auxiliary distance channel, where it has one).

The overlap is a parameter; by default it is half the network's receptive field
(``model.receptive_field``) where the network declares one, so that no output pixel that kept
its full context is down-weighted for nothing. Input is scaled by
`nucseg.runtime.image_to_tensor`, to [0, 1] (segmentation networks, as the training crops) or
[-1, 1] (GAN generators).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nucseg.errors import NucsegError
from nucseg.losses import NUM_CLASSES
from nucseg.runtime import ValueRange, autocast, image_to_tensor, resolve_device


def segmentation_maps(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the 3 class channels; a sigmoid on any further one (the distance head)."""
    classes = torch.softmax(logits[:, :NUM_CLASSES], dim=1)
    if logits.shape[1] <= NUM_CLASSES:
        return classes
    return torch.cat([classes, torch.sigmoid(logits[:, NUM_CLASSES:])], dim=1)


#: Output hooks by name: logits (N, C, h, w) -> the map that is blended.
OUTPUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "segmentation": segmentation_maps,
    "sigmoid": torch.sigmoid,
    "identity": lambda logits: logits,
}
#: Overlap for networks that do not declare a receptive field.
DEFAULT_OVERLAP = 64

WINDOW_FLOOR = 1e-2  # smallest blending weight, so every pixel has a positive total weight
_PROGRESS_MIN_TILES = 64  # show a progress bar from this many tiles on (about 2000x2000 px)


class TilingError(NucsegError, ValueError):
    """An image, a tiling setting or a model output is unusable for tiled prediction."""


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


def default_overlap(model: nn.Module, tile: int) -> int:
    """Half the network's receptive field (``model.receptive_field``), else `DEFAULT_OVERLAP`.

    Capped below half the tile, so that tiles still advance.
    """
    field = getattr(model, "receptive_field", None)
    overlap = DEFAULT_OVERLAP if field is None else -(-int(field) // 2)
    return max(0, min(overlap, tile // 2 - 1))


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


def predict_tiled(
    model: nn.Module,
    image: np.ndarray,
    tile: int = 512,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
    tta: bool | str | None = False,
    batch_size: int = 4,
    channels_last: bool | None = None,
    amp: bool | None = None,
    multiple: int | None = None,
    progress: bool | None = None,
    output: str | Callable[[torch.Tensor], torch.Tensor] = "softmax",
    value_range: ValueRange = "unit",
) -> np.ndarray:
    """Blended output maps of a fully convolutional network over a whole image, tile by tile.

    The model runs in eval mode (its train/eval mode is restored afterwards) and is moved to
    ``device`` (and to channels-last memory format) in place; it must map (N, 3, h, w) to
    (N, C, h, w). Tiles (see `axis_tiles`: at most ``tile`` pixels a side, overlapping by at
    least ``overlap``, the last flush with the border) are blended with `window_1d` weights.
    An image side shorter than a tile is reflect-padded and the padding cropped off again.
    With ``tta`` the maps of each transformed tile are mapped back and averaged.

    Memory: the (C, H, W) float32 accumulator, two 1-D weight profiles and one batch of tiles
    (the image is converted tile by tile).

    Args:
        model: fully convolutional network (e.g. ``nucseg.models.UNet``).
        image: (H, W, 3) uint8 RGB (float in [0, 1] is accepted too).
        tile: largest tile side in pixels, a multiple of ``multiple``.
        overlap: minimal overlap of neighbouring tiles (and blending ramp length), in pixels;
            None = `default_overlap` (half the network's receptive field).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        tta: test-time augmentation, see `tta_transforms` (8 dihedral transforms for True).
        batch_size: tiles per forward pass.
        channels_last: channels-last memory format (faster convolutions on CPU and GPU);
            None = on.
        amp: autocast (`nucseg.runtime.autocast`); None = on for CUDA only.
        multiple: tile sides are multiples of this; None = ``model.multiple`` if the model has
            it (a U-Net of depth d: 2**d), else 1.
        progress: show a progress bar; None = only for images of many tiles.
        output: a name in `OUTPUTS` (``"softmax"``, ``"sigmoid"``, ``"identity"``) or a
            callable applied to each batch of raw outputs before blending.
        value_range: network input scaling, ``"unit"`` ([0, 1]) or ``"symmetric"`` ([-1, 1]).

    Returns:
        float32 (C, H, W) map (for ``"softmax"``: probabilities summing to 1 over axis 0).

    Raises:
        TilingError: bad image or settings, an unknown output hook, or the model output has
            the wrong shape.
    """
    image = np.asarray(image)
    multiple = int(getattr(model, "multiple", 1) if multiple is None else multiple)
    overlap = default_overlap(model, tile) if overlap is None else overlap
    _check_settings(image, tile, overlap, batch_size, multiple)
    if isinstance(output, str):
        if output not in OUTPUTS:
            raise TilingError(f"output must be one of {sorted(OUTPUTS)} or a callable")
        output = OUTPUTS[output]
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
    with _evaluating(model), torch.inference_mode(), autocast(dev, amp):
        for batch in _batches(positions, batch_size):
            tiles = np.stack([padded[y : y + side_y, x : x + side_x] for y, x in batch])
            inputs = image_to_tensor(tiles, value_range).to(dev)
            inputs = inputs.contiguous(memory_format=memory_format)
            probs = None
            for k, flip in transforms:
                view = _dihedral(inputs, k, flip)
                logits = model(view)
                _check_output(logits, len(batch), tuple(view.shape[2:]))
                out = _undo_dihedral(output(logits.float()), k, flip)
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


def predict_probabilities(model: nn.Module, image: np.ndarray, **options: object) -> np.ndarray:
    """Probabilities of a segmentation network: `predict_tiled` with ``"segmentation"``.

    Returns:
        float32 (C, H, W): [background, inside, boundary] probabilities, then (C = 4) the
        predicted distance map of a U-Net with the auxiliary distance head.
    """
    return predict_tiled(model, image, output="segmentation", **options)


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
