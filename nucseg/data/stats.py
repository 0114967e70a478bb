"""Descriptive statistics of annotated nuclei: shapes, contacts, overlaps, and their summaries.

Used by the data chapter (``notebooks/01_data_exploration.ipynb``) to describe the dataset; it
saves `shape_statistics` of the training nuclei to ``stats/data_statistics.json`` in its run
folder, for reference: no other module or chapter reads that file back. The class balance used
for the loss weights is `nucseg.data.targets.class_balance`, not computed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from nucseg.data.monuseg import read_xml_regions
from nucseg.data.poly2mask import rasterise_polygons

SHAPE_PROPERTIES = ("area", "eccentricity", "solidity", "major_axis_length", "minor_axis_length")


def touching_ids(instances: np.ndarray) -> np.ndarray:
    """Ids of nuclei that share an edge (4-neighbourhood) with a different nucleus.

    Args:
        instances: (H, W) integer instance map, 0 = background.

    Returns:
        Sorted unique ids, in the map's dtype (empty when no two nuclei touch).
    """
    labels = np.asarray(instances)
    touching = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        contact = (a != b) & (a > 0) & (b > 0)
        touching += [a[contact], b[contact]]
    return np.unique(np.concatenate(touching)) if touching else np.zeros(0, labels.dtype)


def nucleus_properties(instances: np.ndarray) -> pd.DataFrame:
    """One row per nucleus: id, shape properties and whether it touches another.

    Args:
        instances: (H, W) integer instance map, 0 = background (cast to int32).

    Returns:
        Columns ``nucleus_id``, the `SHAPE_PROPERTIES` of ``skimage.measure.regionprops``
        (areas and lengths in pixels) and ``touching`` (bool, see `touching_ids`), in
        increasing id order.
    """
    table = pd.DataFrame(
        regionprops_table(np.asarray(instances, np.int32), properties=("label", *SHAPE_PROPERTIES))
    ).rename(columns={"label": "nucleus_id"})
    table["touching"] = table.nucleus_id.isin(touching_ids(instances))
    return table


def dataset_nuclei(samples: Iterable) -> pd.DataFrame:
    """Nucleus properties of many samples, with image_id, split and organ columns.

    Args:
        samples: Objects with ``.image_id``, ``.split``, ``.organ`` and ``.instances`` (e.g.
            ``nucseg.data.monuseg.Sample``).

    Returns:
        `nucleus_properties` of every sample, concatenated, after the three sample columns.
    """
    frames = []
    for s in samples:
        table = nucleus_properties(s.instances)
        table.insert(0, "image_id", s.image_id)
        table.insert(1, "split", s.split)
        table.insert(2, "organ", s.organ)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def image_summary(nuclei: pd.DataFrame, image_pixels: dict[str, int]) -> pd.DataFrame:
    """One row per image of a `dataset_nuclei` table.

    Args:
        nuclei: As returned by `dataset_nuclei`.
        image_pixels: Pixel count (H * W) of every image id.

    Returns:
        Columns ``image_id``, ``split``, ``organ``, ``nuclei`` (count), ``mean_area``
        (pixels), ``touching_fraction`` and ``per_megapixel`` (nuclei per 10**6 pixels),
        sorted by image id. Images without any nucleus have no row.
    """
    grouped = nuclei.groupby(["image_id", "split", "organ"], sort=True)
    table = grouped.agg(
        nuclei=("nucleus_id", "size"),
        mean_area=("area", "mean"),
        touching_fraction=("touching", "mean"),
    ).reset_index()
    pixels = table.image_id.map(image_pixels)
    table["per_megapixel"] = table.nuclei / pixels * 1e6
    return table


def shape_statistics(nuclei: pd.DataFrame) -> dict:
    """Size and shape summaries of nuclei, overall and per organ.

    Args:
        nuclei: As returned by `dataset_nuclei` (any subset of rows, e.g. one split).

    Returns:
        ``{"all": summary, organ: summary, ...}``; each summary holds ``n``, the mean and
        standard deviation of the log area (``log_area_mean``, ``log_area_std``; areas are
        roughly log-normal), ``touching_fraction``, and for ``eccentricity`` and ``solidity``
        a dict of ``mean``, ``std``, ``p05`` and ``p95``.
    """

    def summary(frame: pd.DataFrame) -> dict:
        log_area = np.log(frame.area.to_numpy(float))
        out = {
            "n": len(frame),
            "log_area_mean": float(log_area.mean()),
            "log_area_std": float(log_area.std()),
            "touching_fraction": float(frame.touching.mean()),
        }
        for col in ("eccentricity", "solidity"):
            values = frame[col].to_numpy(float)
            out[col] = {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "p05": float(np.percentile(values, 5)),
                "p95": float(np.percentile(values, 95)),
            }
        return out

    stats = {"all": summary(nuclei)}
    stats.update({organ: summary(frame) for organ, frame in nuclei.groupby("organ")})
    return stats


def xml_overlaps(path: str | Path, shape: Sequence[int]) -> dict[str, int]:
    """Count overlapping polygons in an ImageScope XML file.

    The polygons are rasterised (`nucseg.data.poly2mask.rasterise_polygons`, later polygons
    win) in document order and in reverse order; a pixel covered by two or more polygons gets
    a different owner in the two maps (its last and its first polygon). Polygons the
    rasteriser skips (degenerate, or outside the image) count in ``regions`` only.

    Args:
        path: ImageScope XML file.
        shape: Image shape; only (H, W) is used.

    Returns:
        ``{"regions": number of regions in the file, "overlap_pixels": pixels covered by two
        or more polygons, "overlapping_regions": regions that own such a pixel in either
        order}``. A polygon covered only in the middle of a stack of three or more is not
        counted.
    """
    regions = read_xml_regions(path)
    forward, kept = rasterise_polygons(regions, shape)
    backward, kept_back = rasterise_polygons(regions[::-1], shape)
    # map both id spaces back to region indices
    fwd_region = np.concatenate([[-1], np.flatnonzero(kept)])
    back_region = np.concatenate([[-1], len(regions) - 1 - np.flatnonzero(kept_back)])
    a, b = fwd_region[forward], back_region[backward]
    overlapped = a != b
    involved = np.union1d(a[overlapped], b[overlapped])
    return {
        "regions": len(regions),
        "overlap_pixels": int(overlapped.sum()),
        "overlapping_regions": int((involved >= 0).sum()),
    }
