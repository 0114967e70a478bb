"""Colour deconvolution of H&E images: HED channels, optical density and Macenko stain vectors.

Two views of the stains are offered:

- the fixed Ruifrok & Johnston stain matrix (via `skimage.color.rgb2hed` / `hed2rgb`), used by
  the classical baseline to get a hematoxylin channel, and
- per-image stain vectors estimated with the Macenko et al. (2009) method, used by the data
  notebook to show how staining varies between images and organs.

Optical density (OD) follows Beer-Lambert with base-10 logarithms: ``OD = -log10(I / I0)``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from skimage.color import hed2rgb, rgb2hed, rgb_from_hed

from nucseg.errors import ImageReadError, NucsegError

#: Unit-norm Ruifrok & Johnston hematoxylin, eosin and DAB OD vectors (rows, RGB columns).
RUIFROK_HED: np.ndarray = rgb_from_hed / np.linalg.norm(rgb_from_hed, axis=1, keepdims=True)
RUIFROK_H: np.ndarray = RUIFROK_HED[0]
RUIFROK_E: np.ndarray = RUIFROK_HED[1]


class StainError(NucsegError, ValueError):
    """Stain vectors cannot be estimated (e.g. too few stained pixels)."""


def check_rgb_uint8(image: Any, name: str = "image") -> np.ndarray:
    """Check that ``image`` is an 8-bit RGB array and return it as an ndarray.

    Args:
        image: array-like to check.
        name: what to call the input in the error message (e.g. a file name).

    Returns:
        The image as a ``uint8`` array of shape ``(H, W, 3)`` (no copy when already one).

    Raises:
        ImageReadError: wrong dtype (not uint8), wrong number of dimensions or channels, or
            an empty image.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ImageReadError(
            f"{name}: expected an 8-bit RGB image (uint8), got dtype {arr.dtype}; "
            "convert floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(
            f"{name}: expected an RGB image of shape (H, W, 3), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{name}: image is empty (shape {arr.shape})")
    return arr


def rgb_to_hed(image: np.ndarray) -> np.ndarray:
    """Separate an RGB image into hematoxylin, eosin and DAB concentrations (Ruifrok).

    Args:
        image: uint8 RGB image, shape (H, W, 3).

    Returns:
        float64 array (H, W, 3) of stain concentrations (H, E, D), in skimage's units
        (roughly 0 for unstained up to ~0.3 for strongly stained pixels; may be slightly negative).

    Raises:
        ImageReadError: the input is not uint8 RGB.
    """
    return rgb2hed(check_rgb_uint8(image))


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Recombine HED concentrations (as from `rgb_to_hed`) into an 8-bit RGB image.

    Args:
        hed: float array (H, W, 3) of H, E and DAB concentrations.

    Returns:
        uint8 RGB image (H, W, 3).

    Raises:
        StainError: ``hed`` is not a finite (H, W, 3) array.
    """
    arr = np.asarray(hed, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise StainError(f"hed: expected shape (H, W, 3), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise StainError("hed: contains NaN or infinite values")
    rgb = hed2rgb(arr)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def hematoxylin(image: np.ndarray, method: Literal["ruifrok", "macenko"] = "ruifrok") -> np.ndarray:
    """Return the hematoxylin concentration channel of an RGB H&E image.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        method: ``"ruifrok"`` (fixed stain matrix, skimage units) or ``"macenko"`` (this image's
            own stain vectors, OD units; falls back to the Ruifrok H and E vectors when the
            image has too little tissue to estimate them).

    Returns:
        float32 array (H, W): higher means more hematoxylin (nuclei are bright).

    Raises:
        ImageReadError: the input is not uint8 RGB.
        StainError: unknown ``method``.
    """
    if method == "ruifrok":
        return rgb_to_hed(image)[..., 0].astype(np.float32)
    if method == "macenko":
        try:
            stains = estimate_stain_vectors(image)
        except StainError:
            stains = RUIFROK_HED[:2]
        return stain_concentrations(image, stains)[..., 0]
    raise StainError(f"method must be 'ruifrok' or 'macenko', got {method!r}")


def stain_concentrations(
    image: np.ndarray, stains: np.ndarray, background: float = 255.0
) -> np.ndarray:
    """Unmix an image into stain concentrations by least squares on optical density.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        stains: (k, 3) OD vectors, one row per stain (e.g. from `estimate_stain_vectors`).
        background: intensity of unstained glass, in 8-bit grey levels.

    Returns:
        float32 array (H, W, k): concentration of each stain, in OD units along its vector.

    Raises:
        ImageReadError: the input is not uint8 RGB.
        StainError: ``stains`` is not a finite (k, 3) array with 1 <= k <= 3.
    """
    unmix = unmixing_matrix(stains)
    od = _od_lut(background, np.float32)[check_rgb_uint8(image)]
    return od @ unmix.T


def unmixing_matrix(stains: np.ndarray) -> np.ndarray:
    """The (k, 3) float32 matrix that takes an RGB optical density to ``k`` stain concentrations.

    Args:
        stains: (k, 3) OD vectors, one row per stain.

    Raises:
        StainError: ``stains`` is not a finite (k, 3) array with 1 <= k <= 3.
    """
    vectors = np.asarray(stains, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[1] != 3 or not 1 <= vectors.shape[0] <= 3:
        raise StainError(f"stains: expected shape (k, 3) with k in 1..3, got {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise StainError("stains: contains NaN or infinite values")
    return np.linalg.pinv(vectors.T).astype(np.float32)  # least squares of od = c @ vectors


def optical_density(image: np.ndarray, background: float = 255.0) -> np.ndarray:
    """Convert RGB intensities to optical density, ``OD = -log10(I / background)``.

    Zero intensities are treated as 1 so that OD stays finite (at most ``log10(background)``);
    intensities brighter than ``background`` give OD 0.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        background: intensity of unstained glass (I0), in 8-bit grey levels.

    Returns:
        float64 array (H, W, 3) of non-negative OD values per RGB channel.

    Raises:
        ImageReadError: the input is not uint8 RGB.
        StainError: ``background`` is not in (0, 255].
    """
    return _od_lut(background)[check_rgb_uint8(image)]


def _od_lut(background: float, dtype: type = np.float64) -> np.ndarray:
    """OD of each of the 256 grey levels (a lookup table is ~10x faster than a log per pixel)."""
    if not 0.0 < background <= 255.0:
        raise StainError(f"background must be in (0, 255], got {background}")
    levels = np.maximum(np.arange(256, dtype=np.float64), 1.0)
    return np.maximum(-np.log10(levels / background), 0.0).astype(dtype)


def _tissue_od(
    image: np.ndarray, od_threshold: float, background: float, max_pixels: int, seed: int
) -> np.ndarray:
    """OD rows (N, 3) of about ``max_pixels`` random pixels with OD > ``od_threshold`` everywhere.

    OD > t is tested as I < background * 10**-t on the uint8 values, and only the sampled
    pixels are converted, which keeps this cheap on 1000x1000 tiles.
    """
    pixels = check_rgb_uint8(image).reshape(-1, 3)
    if od_threshold < 0:
        raise StainError(f"od_threshold must be >= 0, got {od_threshold}")
    lut = _od_lut(background)
    idx = np.flatnonzero(np.all(pixels < background * 10.0**-od_threshold, axis=1))
    if len(idx) > max_pixels:
        keep = np.random.default_rng(seed).random(len(idx)) < max_pixels / len(idx)
        idx = idx[keep]
    return lut[pixels[idx]]


def estimate_stain_vectors(
    image: np.ndarray,
    od_threshold: float = 0.15,
    alpha: float = 1.0,
    background: float = 255.0,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> np.ndarray:
    """Estimate the H and E stain vectors of one image with the Macenko method.

    Tissue pixels (OD above ``od_threshold`` in all channels) are projected onto the plane of
    the two main OD eigenvectors; the extreme stain directions are the ``alpha`` and
    ``100 - alpha`` percentiles of the projected angles, which is robust to a few outliers.
    The direction absorbing more red is hematoxylin.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        od_threshold: minimal OD per channel for a pixel to count as tissue (dimensionless).
        alpha: percentile (in %, 0 < alpha < 50) used for the robust extreme angles.
        background: intensity of unstained glass, in 8-bit grey levels.
        max_pixels: about this many tissue pixels at most are used (random subsample, for speed).
        seed: seed of the subsampling.

    Returns:
        float64 array (2, 3): row 0 hematoxylin, row 1 eosin; unit-norm OD vectors with
        non-negative RGB components.

    Raises:
        ImageReadError: the input is not uint8 RGB.
        StainError: bad parameters, or fewer than 100 tissue pixels.
    """
    if not 0.0 < alpha < 50.0:
        raise StainError(f"alpha must be a percentile in (0, 50), got {alpha}")
    if max_pixels < 100:
        raise StainError(f"max_pixels must be at least 100, got {max_pixels}")
    od = _tissue_od(image, od_threshold, background, max_pixels, seed)
    if len(od) < 100:
        raise StainError(
            f"image: only {len(od)} pixels have OD > {od_threshold} in every channel; "
            "too few to estimate stain vectors (blank image?)"
        )

    # eigh sorts ascending: the two last eigenvectors span the stain plane.
    _, eigvecs = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = eigvecs[:, [2, 1]]
    # Orient both axes towards positive OD so that angles are comparable between images.
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    proj = od @ plane
    angles = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(angles, [alpha, 100.0 - alpha])
    v_lo = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_hi = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v_lo, v_hi] if v_lo[0] > v_hi[0] else [v_hi, v_lo])
    # OD vectors are physically non-negative: clip the small negative parts noise can leave.
    stains = np.clip(stains, 1e-6, None)
    return stains / np.linalg.norm(stains, axis=1, keepdims=True)


def stain_statistics(
    image: np.ndarray, od_threshold: float = 0.15, background: float = 255.0
) -> dict[str, float]:
    """Summarise the staining of one image, for comparing images and organs.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        od_threshold: OD above which (in every channel) a pixel counts as tissue.
        background: intensity of unstained glass, in 8-bit grey levels.

    Returns:
        Flat dict of floats: ``tissue_fraction``; ``mean_od`` and ``mean_od_r/g/b`` over tissue
        pixels; ``h_p05/h_p50/h_p95`` and ``e_p05/e_p50/e_p95`` percentiles of the Ruifrok H and E
        concentrations over tissue pixels; and the Macenko vectors ``h_r/h_g/h_b`` and
        ``e_r/e_g/e_b`` (NaN when they cannot be estimated). Tissue statistics are NaN when no
        pixel is tissue.

    Raises:
        ImageReadError: the input is not uint8 RGB.
    """
    arr = check_rgb_uint8(image)
    od = optical_density(arr, background).reshape(-1, 3)
    tissue = np.all(od > od_threshold, axis=1)
    stats: dict[str, float] = {"tissue_fraction": float(tissue.mean())}
    nan = float("nan")
    if tissue.any():
        mean = od[tissue].mean(axis=0)
        hed = rgb_to_hed(arr).reshape(-1, 3)[tissue]
        h_pct = np.percentile(hed[:, 0], [5, 50, 95])
        e_pct = np.percentile(hed[:, 1], [5, 50, 95])
    else:
        mean = np.full(3, nan)
        h_pct = e_pct = np.full(3, nan)
    stats["mean_od"] = float(np.mean(mean))
    stats.update({f"mean_od_{c}": float(v) for c, v in zip("rgb", mean, strict=True)})
    for stain, pct in (("h", h_pct), ("e", e_pct)):
        stats.update({f"{stain}_p{p:02d}": float(v) for p, v in zip((5, 50, 95), pct, strict=True)})
    try:
        vectors = estimate_stain_vectors(arr, od_threshold=od_threshold, background=background)
    except StainError:
        vectors = np.full((2, 3), nan)
    for stain, row in zip("he", vectors, strict=True):
        stats.update({f"{stain}_{c}": float(v) for c, v in zip("rgb", row, strict=True)})
    return stats
