"""Features of nuclei in instance maps, per nucleus and per image, and real-vs-synthetic tests.

`measure_nuclei` extends `nucseg.data.stats.dataset_nuclei` with centroids, orientations and
nearest neighbours; `image_features` summarises each image (density, touching, clustering,
orientation); `compare_statistics` sets real and synthetic nuclei side by side with a
two-sample Kolmogorov-Smirnov test per feature. `nucseg.synth.masks` fits its statistics to
these tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.stats import ks_2samp
from skimage.measure import regionprops_table

from nucseg.data.stats import dataset_nuclei, image_summary
from nucseg.errors import NucsegError

__all__ = [
    "SynthError",
    "compare_statistics",
    "expected_nn_distance",
    "image_features",
    "measure_nuclei",
]

ALIGNED = 0.6  # eccentricity above which an orientation counts for neighbour alignment


class SynthError(NucsegError, ValueError):
    """Bad input to the mask synthesiser: a size, a count, an organ, or malformed statistics."""


@dataclass(frozen=True)
class _Masks:
    """A stand-in for `nucseg.data.monuseg.Sample` around a bare instance map."""

    image_id: str
    split: str
    organ: str
    instances: np.ndarray


def measure_nuclei(samples: Iterable[object], organ: str = "synthetic") -> pd.DataFrame:
    """One row per nucleus of many instance maps: `nucseg.data.stats.dataset_nuclei` plus more.

    Args:
        samples: ``Sample``-like objects (``image_id``, ``split``, ``organ``, ``instances``)
            or bare (H, W) instance maps, which get ids ``<organ>-0000``... and split
            "synthetic".
        organ: Organ of bare instance maps.

    Returns:
        The `dataset_nuclei` columns plus ``centroid_row``, ``centroid_col``,
        ``orientation``, ``nn_distance`` (to the nearest other centroid of the image),
        ``nn_alignment`` (``cos(2 * orientation difference)`` with that neighbour, where both
        have eccentricity above 0.6), ``image_height``, ``image_width`` and ``image_pixels``;
        NaN where undefined. Images without nuclei have no rows.

    Raises:
        SynthError: If there are no samples.
    """
    frames = []
    for i, sample in enumerate(samples):
        if isinstance(sample, np.ndarray):
            sample = _Masks(f"{organ}-{i:04d}", "synthetic", organ, sample)
        instances = np.asarray(sample.instances, np.int32)
        extra = regionprops_table(instances, properties=("label", "centroid", "orientation"))
        names = {"label": "nucleus_id", "centroid-0": "centroid_row", "centroid-1": "centroid_col"}
        extra = pd.DataFrame(extra).rename(columns=names)
        table = dataset_nuclei([sample]).merge(extra, on="nucleus_id")
        table["nn_distance"], table["nn_alignment"] = np.nan, np.nan
        if len(table) > 1:
            points = table[["centroid_row", "centroid_col"]].to_numpy()
            dist, idx = cKDTree(points).query(points, k=2)
            angle, ecc = table.orientation.to_numpy(), table.eccentricity.to_numpy()
            both = (ecc > ALIGNED) & (ecc[idx[:, 1]] > ALIGNED)
            table["nn_distance"] = dist[:, 1]
            table["nn_alignment"] = np.where(both, np.cos(2 * (angle - angle[idx[:, 1]])), np.nan)
        table["image_height"], table["image_width"] = instances.shape
        table["image_pixels"] = instances.size
        frames.append(table)
    if not frames:
        raise SynthError("no instance maps to measure")
    return pd.concat(frames, ignore_index=True)


def image_features(nuclei: pd.DataFrame) -> pd.DataFrame:
    """One row per image of a `measure_nuclei` table: counts, density, touching, clustering.

    Args:
        nuclei: As returned by `measure_nuclei`.

    Returns:
        `nucseg.data.stats.image_summary` columns (``per_megapixel`` is the density) plus
        ``log_area_mean``, ``clark_evans`` (mean nearest-neighbour distance over its
        expectation for as many uniform random points in the image, with Donnelly's edge
        correction, so that images of different sizes compare), ``orientation_coherence``
        (resultant length of doubled orientations, its ``1 / n`` bias removed) and
        ``nn_alignment`` (mean).
    """
    by_image = nuclei.groupby("image_id")
    pixels = by_image.image_pixels.first()
    table = image_summary(nuclei, pixels.to_dict())
    n = by_image.size()
    doubled = pd.Series(np.exp(2j * nuclei.orientation.to_numpy()), index=nuclei.index)
    r2 = doubled.groupby(nuclei.image_id).mean().abs() ** 2
    per_image = {
        "log_area_mean": np.log(nuclei.area.astype(float)).groupby(nuclei.image_id).mean(),
        "clark_evans": by_image.nn_distance.mean()
        / expected_nn_distance(n, by_image.image_height.first(), by_image.image_width.first()),
        "orientation_coherence": np.sqrt((r2 - 1 / n).clip(lower=0)),
        "nn_alignment": by_image.nn_alignment.mean(),
    }
    for column, values in per_image.items():
        table[column] = table.image_id.map(values)
    return table


def expected_nn_distance(n: object, height: object, width: object) -> object:
    """Mean nearest-neighbour distance of ``n`` uniform random points in a rectangle.

    Donnelly's (1978) approximation, ``0.5 sqrt(A / n) + (0.0514 + 0.041 / sqrt(n)) P / n``
    for area ``A`` and perimeter ``P``, corrects Clark and Evans' ``0.5 sqrt(A / n)`` for
    the image edges. Works elementwise on arrays and Series.
    """
    return (
        0.5 * np.sqrt(height * width / n) + (0.0514 + 0.041 / np.sqrt(n)) * 2 * (height + width) / n
    )


_NUCLEUS_FEATURES = ("area", "eccentricity", "orientation", "solidity", "nn_distance",
                     "nn_alignment")  # fmt: skip
_IMAGE_FEATURES = {
    "density": "per_megapixel",
    "touching_fraction": "touching_fraction",
    "clark_evans": "clark_evans",
    "orientation_coherence": "orientation_coherence",
    "image_log_area_mean": "log_area_mean",
}


def compare_statistics(real_nuclei: pd.DataFrame, synthetic_nuclei: pd.DataFrame) -> pd.DataFrame:
    """Real against synthetic nuclei, feature by feature, with a two-sample KS test.

    Args:
        real_nuclei: `measure_nuclei` table of the real images.
        synthetic_nuclei: `measure_nuclei` table of the generated masks (best of the real
            images' size: nearest-neighbour distances are not corrected for image edges).

    Returns:
        One row per feature: ``feature``, ``level`` ("nucleus": one value per nucleus, or
        "image": one per image, from `image_features`), ``n_real``, ``n_synthetic``,
        ``real_mean``, ``synthetic_mean``, ``real_median``, ``synthetic_median``,
        ``ks_statistic`` and ``ks_pvalue`` (``scipy.stats.ks_2samp``; NaN with an empty
        side). Density is in nuclei per megapixel; the KS statistic of area is that of log
        area.
    """
    pairs = [(f, "nucleus", real_nuclei[f], synthetic_nuclei[f]) for f in _NUCLEUS_FEATURES]
    real_images, synth_images = image_features(real_nuclei), image_features(synthetic_nuclei)
    pairs += [(name, "image", real_images[col], synth_images[col])
              for name, col in _IMAGE_FEATURES.items()]  # fmt: skip
    rows = []
    for feature, level, real, synth in pairs:
        real, synth = real.dropna().to_numpy(float), synth.dropna().to_numpy(float)
        ks = ks_2samp(real, synth) if real.size and synth.size else None
        rows.append({
            "feature": feature, "level": level, "n_real": real.size, "n_synthetic": synth.size,
            "real_mean": real.mean() if real.size else np.nan,
            "synthetic_mean": synth.mean() if synth.size else np.nan,
            "real_median": np.median(real) if real.size else np.nan,
            "synthetic_median": np.median(synth) if synth.size else np.nan,
            "ks_statistic": float(ks.statistic) if ks else np.nan,
            "ks_pvalue": float(ks.pvalue) if ks else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)
