"""Contour overlays: draw instance outlines on an RGB image (pure numpy, no plotting)."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from nucseg.errors import ShapeMismatchError

GT_COLOUR = (0, 255, 0)
PRED_COLOUR = (255, 255, 0)


def contour_mask(instances: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Return a boolean mask of the inner outline of every instance.

    Args:
        instances: int instance map (H, W), 0 = background.
        thickness: outline width in pixels.

    Returns:
        bool array (H, W), True on outlines; touching nuclei keep separate outlines.
    """
    edges = find_boundaries(instances, mode="inner")
    for _ in range(max(thickness, 1) - 1):
        grown = find_boundaries(np.where(edges, 0, instances), mode="inner")
        edges |= grown
    return edges & (instances > 0)


def overlay_contours(
    image: np.ndarray,
    instances: np.ndarray,
    colour: tuple[int, int, int] = PRED_COLOUR,
    thickness: int = 1,
    alpha: float = 1.0,
) -> np.ndarray:
    """Draw instance outlines onto a copy of an RGB image.

    Args:
        image: uint8 (H, W, 3).
        instances: int instance map of the same height and width.
        colour: RGB outline colour.
        thickness: outline width in pixels.
        alpha: opacity of the outline, 0..1.

    Returns:
        uint8 (H, W, 3) copy with the outlines drawn.
    """
    if image.shape[:2] != instances.shape:
        raise ShapeMismatchError(
            f"image {image.shape[:2]} and instance map {instances.shape} differ in shape"
        )
    out = image.copy()
    edges = contour_mask(instances, thickness)
    blended = (1 - alpha) * out[edges] + alpha * np.asarray(colour, dtype=float)
    out[edges] = np.clip(blended, 0, 255).astype(np.uint8)
    return out
