"""The no-learning reference: colour deconvolution, Otsu threshold and a distance watershed.

Steps: hematoxylin channel (colour deconvolution with per-image Macenko stain vectors, or the
fixed Ruifrok matrix) -> Gaussian smoothing -> Otsu
threshold (optionally scaled) -> optional binary opening -> `instances_from_foreground`
(hole filling, small-object removal, distance-transform watershed, int32 relabelling).

The defaults were tuned on the MoNuSeg training images only (see `ClassicalParams`).
About 0.5 s per 1000x1000 image on one core.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from nucseg.errors import NucsegError
from nucseg.postprocess import PostprocessParams, instances_from_foreground
from nucseg.stain import check_rgb_uint8, hematoxylin


class ClassicalParamsError(NucsegError, ValueError):
    """A `ClassicalParams` value is out of range."""


@dataclass(frozen=True)
class ClassicalParams:
    """Settings of the classical segmentation; sizes in pixels at 40x (about 0.25 um/pixel).

    The defaults come from a small staged grid on the MoNuSeg training images only (stain
    method, sigma x threshold_scale, then seeds, then min_size x max_hole_size), scored by the
    mean per-image AJI: 0.438 over the 30 training images. The test images were not used.

    Attributes:
        stain_method: how the hematoxylin channel is obtained, ``"macenko"`` (stain vectors
            estimated per image; adapts to each slide's staining) or ``"ruifrok"`` (fixed matrix).
        sigma: standard deviation, in pixels, of the Gaussian smoothing of the hematoxylin
            channel before thresholding; 0 disables.
        threshold_scale: the Otsu threshold of the smoothed hematoxylin channel is multiplied by
            this factor (> 1 keeps only darker nuclei, < 1 grows them).
        opening_radius: radius in pixels of the disk used for a binary opening of the
            foreground (breaks thin bridges between nuclei, removes specks); 0 disables.
        min_size: instances smaller than this area, in pixels, are removed.
        max_hole_size: holes in the foreground of at most this area, in pixels, are filled.
        marker_method: watershed seeds, ``"peaks"`` or ``"h_maxima"`` (see `PostprocessParams`).
        min_distance: ``"peaks"`` seeds: minimal distance between seeds, in pixels.
        h: ``"h_maxima"`` seeds: minimal maximum height of the distance map, in pixels.
        distance_sigma: Gaussian smoothing of the distance transform before seeding, in pixels.
        split: split touching nuclei with the watershed; False keeps connected components (the
            ``otsu`` method of the report, which measures what the splitting is worth).
    """

    stain_method: Literal["macenko", "ruifrok"] = "macenko"
    sigma: float = 1.0
    threshold_scale: float = 1.0
    opening_radius: int = 0
    min_size: int = 60
    max_hole_size: int = 1000
    marker_method: Literal["peaks", "h_maxima"] = "peaks"
    min_distance: int = 5
    h: float = 1.0
    distance_sigma: float = 1.0
    split: bool = True

    def __post_init__(self) -> None:
        if self.stain_method not in ("macenko", "ruifrok"):
            raise ClassicalParamsError(
                f"stain_method must be 'macenko' or 'ruifrok', got {self.stain_method!r}"
            )
        if self.sigma < 0:
            raise ClassicalParamsError(f"sigma must be >= 0 pixels, got {self.sigma}")
        if self.threshold_scale <= 0:
            raise ClassicalParamsError(f"threshold_scale must be > 0, got {self.threshold_scale}")
        if self.opening_radius < 0:
            raise ClassicalParamsError(
                f"opening_radius must be >= 0 pixels, got {self.opening_radius}"
            )
        self.postprocess()  # validates the shared fields (raises PostprocessError)

    def postprocess(self) -> PostprocessParams:
        """Return the `PostprocessParams` holding the shared watershed and clean-up settings."""
        shared = {f.name for f in fields(PostprocessParams)} & {f.name for f in fields(self)}
        return PostprocessParams(**{name: getattr(self, name) for name in shared})


def foreground_mask(image: np.ndarray, params: ClassicalParams | None = None) -> np.ndarray:
    """Nucleus foreground of an H&E image: smoothed hematoxylin above a scaled Otsu threshold.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        params: settings; defaults to ``ClassicalParams()``.

    Returns:
        bool (H, W) mask (before hole filling and watershed).

    Raises:
        ImageReadError: the input is not uint8 RGB.
    """
    params = params or ClassicalParams()
    h = hematoxylin(check_rgb_uint8(image), params.stain_method)
    if params.sigma > 0:
        h = ndi.gaussian_filter(h, params.sigma)
    if np.ptp(h) <= 1e-6:  # uniform image: Otsu is undefined and nothing stands out
        return np.zeros(h.shape, dtype=bool)
    mask = h > threshold_otsu(h) * params.threshold_scale
    if params.opening_radius > 0:
        mask = ndi.binary_opening(mask, structure=disk(params.opening_radius))
    return mask


def segment_classical(image: np.ndarray, params: ClassicalParams | None = None) -> np.ndarray:
    """Segment nuclei in an H&E image without learning.

    Args:
        image: uint8 RGB image, shape (H, W, 3) (e.g. a MoNuSeg 1000x1000 tile at 40x).
        params: settings; defaults to ``ClassicalParams()`` (tuned on MoNuSeg training images).

    Returns:
        int32 (H, W) instance map, 0 = background, nuclei numbered 1..n.

    Raises:
        ImageReadError: the input is not an 8-bit RGB array of shape (H, W, 3).
    """
    params = params or ClassicalParams()
    mask = foreground_mask(image, params)
    return instances_from_foreground(mask, params.postprocess())
