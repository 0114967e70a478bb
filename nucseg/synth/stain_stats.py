"""Stain, colour and nuclear contrast of H&E crops: do synthetic crops match real ones?

- :func:`stain_statistics` / :func:`compare_stain`: optical density, hematoxylin and eosin
  (Ruifrok colour deconvolution, :mod:`nucseg.stain`), brightness and saturation per crop,
  and a two-sample Kolmogorov-Smirnov statistic per feature.
- :func:`nuclear_contrast` / :func:`nuclear_contrast_table`: how much darker in hematoxylin the
  nuclei are than the background around them, which a mask-to-image generator must get right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.stats import ks_2samp
from skimage.color import rgb2hsv

from nucseg.errors import ShapeMismatchError
from nucseg.labels import as_label_map
from nucseg.runtime import InputError
from nucseg.stain import RUIFROK_HED, check_rgb_uint8, optical_density, stain_concentrations

__all__ = ["as_crops", "compare_stain", "nuclear_contrast", "nuclear_contrast_table",
           "stain_statistics"]  # fmt: skip

_TISSUE_OD = 0.15  # as nucseg.stain.stain_statistics: OD above this in every channel is tissue


def as_crops(crops: Any, name: str) -> np.ndarray:
    """Stack crops into a uint8 (N, H, W, 3) array, naming the first problem found."""
    if isinstance(crops, np.ndarray):
        arr = crops
    else:
        items = [np.asarray(c) for c in crops]
        if not items:
            raise InputError(f"{name}: no crops given")
        odd = next((i for i, item in enumerate(items) if item.shape != items[0].shape), None)
        if odd is not None:
            raise InputError(f"{name}: crops must share one shape; crop 0 is {items[0].shape}, "
                             f"crop {odd} is {items[odd].shape}")  # fmt: skip
        arr = np.stack(items)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        hint = " (grayscale?)" if arr.ndim == 3 or arr.shape[-1] == 1 else ""
        raise InputError(f"{name}: expected RGB crops (N, H, W, 3), got shape {arr.shape}{hint}")
    if arr.dtype != np.uint8:
        raise InputError(f"{name}: expected uint8 crops, got dtype {arr.dtype}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(f"{name}: crops are empty (shape {arr.shape})")
    return arr


def stain_statistics(crops: Any) -> pd.DataFrame:
    """Colour and stain features of each crop, averaged over all its pixels.

    Optical density (OD) is ``-log10(I / 255)`` (:func:`nucseg.stain.optical_density`);
    hematoxylin, eosin and DAB are unmixed with the unit Ruifrok & Johnston OD vectors
    (:data:`nucseg.stain.RUIFROK_HED`), so their concentrations are in OD units too.

    Args:
        crops: uint8 RGB crops (N, H, W, 3), or a sequence of (H, W, 3) crops of one shape.

    Returns:
        One row per crop with columns ``od_r``, ``od_g``, ``od_b``, ``od_mean`` (mean OD),
        ``hematoxylin``, ``eosin`` (mean concentrations), ``hematoxylin_p95`` (the nuclear end
        of the H distribution), ``tissue_fraction`` (OD > 0.15 in every channel), and
        ``brightness`` and ``saturation`` (mean HSV value and saturation, in [0, 1]).

    Raises:
        InputError: The crops are not uint8 RGB of one shape.
    """
    rows = []
    for crop in as_crops(crops, "crops"):
        od = optical_density(crop)
        conc = stain_concentrations(crop, RUIFROK_HED)
        hsv = rgb2hsv(crop)
        rows.append({
            "od_r": od[..., 0].mean(), "od_g": od[..., 1].mean(), "od_b": od[..., 2].mean(),
            "od_mean": od.mean(),
            "hematoxylin": conc[..., 0].mean(), "eosin": conc[..., 1].mean(),
            "hematoxylin_p95": np.percentile(conc[..., 0], 95),
            "tissue_fraction": np.all(od > _TISSUE_OD, axis=-1).mean(),
            "brightness": hsv[..., 2].mean(), "saturation": hsv[..., 1].mean(),
        })  # fmt: skip
    return pd.DataFrame(rows).astype(float)


def compare_stain(real: Any, synthetic: Any) -> pd.DataFrame:
    """Real and synthetic stain features side by side, with a two-sample KS test per feature.

    Args:
        real: Real crops (as for :func:`stain_statistics`) or its DataFrame.
        synthetic: Synthetic crops or their DataFrame.

    Returns:
        One row per feature (index ``feature``) with ``real_mean``, ``real_std``,
        ``synthetic_mean``, ``synthetic_std``, ``ks_statistic`` (0 = same distribution, 1 =
        disjoint) and ``ks_pvalue``. The p-value treats crops as independent; crops of one
        image are not, so it overstates the evidence (compare with two halves of real data).

    Raises:
        InputError: Bad crops, or two DataFrames without the same columns.
    """
    a = real if isinstance(real, pd.DataFrame) else stain_statistics(real)
    b = synthetic if isinstance(synthetic, pd.DataFrame) else stain_statistics(synthetic)
    if list(a.columns) != list(b.columns):
        raise InputError(
            f"real and synthetic features differ: {list(a.columns)} vs {list(b.columns)}"
        )
    rows = []
    for feature in a.columns:
        ks = ks_2samp(a[feature], b[feature])
        rows.append({"feature": feature, "real_mean": a[feature].mean(),
                     "real_std": a[feature].std(), "synthetic_mean": b[feature].mean(),
                     "synthetic_std": b[feature].std(), "ks_statistic": float(ks.statistic),
                     "ks_pvalue": float(ks.pvalue)})  # fmt: skip
    return pd.DataFrame(rows).set_index("feature")


def _contrast_parts(
    image: np.ndarray, instances: np.ndarray, inner: float, outer: float
) -> tuple[float, float]:
    """Mean hematoxylin OD inside nuclei and in the background ring (NaN where empty)."""
    image = check_rgb_uint8(image)
    labels = as_label_map(instances, "instances")
    if labels.shape != image.shape[:2]:
        raise ShapeMismatchError(
            f"instances: shape {labels.shape} does not match image {image.shape[:2]}"
        )
    if not 0.0 <= inner < outer:
        raise InputError(f"ring: need 0 <= inner < outer, got inner={inner}, outer={outer}")
    h = stain_concentrations(image, RUIFROK_HED)[..., 0]
    nuclei = labels > 0
    if not nuclei.any():
        return math.nan, math.nan
    dist = ndi.distance_transform_edt(~nuclei)  # distance of each background pixel to a nucleus
    ring = (dist > inner) & (dist <= outer)
    return float(h[nuclei].mean()), float(h[ring].mean()) if ring.any() else math.nan


def nuclear_contrast(
    image: np.ndarray, instances: np.ndarray, *, inner: float = 2.0, outer: float = 8.0
) -> float:
    """Hematoxylin contrast between nuclei and the background just around them.

    Defined as ``mean(H[nuclei]) - mean(H[ring])``, where ``H`` is the hematoxylin
    concentration in OD units (Ruifrok unmixing, as :func:`stain_statistics`), ``nuclei`` the
    pixels with an instance id > 0 and ``ring`` the background pixels whose Euclidean distance
    to the nearest nucleus pixel is in ``(inner, outer]``. The gap of ``inner`` pixels keeps
    the blurred nuclear edge, and annotation slack, out of the ring. Positive: nuclei are
    darker in hematoxylin than their surroundings (as in H&E); 0: no contrast.

    Args:
        image: uint8 RGB image (H, W, 3).
        instances: Instance map (H, W), 0 = background.
        inner: Inner radius of the ring, in pixels (>= 0).
        outer: Outer radius of the ring, in pixels (> ``inner``).

    Returns:
        The contrast in OD units; NaN when there is no nucleus or no ring pixel.

    Raises:
        ImageReadError: The image is not uint8 RGB.
        LabelMapError: ``instances`` is not an integer label map.
        ShapeMismatchError: Image and instances differ in shape.
        InputError: A bad ring.
    """
    inside, ring = _contrast_parts(image, instances, inner, outer)
    return inside - ring


def nuclear_contrast_table(
    images: Sequence[np.ndarray],
    instances: Sequence[np.ndarray],
    *,
    inner: float = 2.0,
    outer: float = 8.0,
) -> pd.DataFrame:
    """:func:`nuclear_contrast` of paired crops (e.g. synthetic images and their masks).

    Args:
        images: uint8 RGB crops (H, W, 3), or one stacked array.
        instances: Their instance maps, in the same order.
        inner: Inner radius of the ring, in pixels.
        outer: Outer radius of the ring, in pixels.

    Returns:
        One row per crop: ``nucleus_h``, ``ring_h`` (the two means of :func:`nuclear_contrast`),
        ``contrast`` (their difference) and ``nuclei`` (instance count).

    Raises:
        InputError: The two sequences differ in length; otherwise as :func:`nuclear_contrast`.
    """
    if len(images) != len(instances):
        raise InputError(f"{len(images)} images but {len(instances)} instance maps")
    rows = []
    for image, labels in zip(images, instances, strict=True):
        inside, ring = _contrast_parts(image, labels, inner, outer)
        rows.append({"nucleus_h": inside, "ring_h": ring, "contrast": inside - ring,
                     "nuclei": len(np.unique(labels[labels > 0]))})  # fmt: skip
    return pd.DataFrame(rows)
