"""Descriptive statistics of annotated nuclei: shapes, contacts, overlaps, and their summaries.

The data chapter computes these once; the random-mask generator of the synthesis chapter and the
class weights of the losses read the summaries it saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from nucseg.data.monuseg import rasterise_polygons, read_xml_regions

SHAPE_PROPERTIES = ("area", "eccentricity", "solidity", "major_axis_length", "minor_axis_length")


def touching_ids(instances: np.ndarray) -> np.ndarray:
    """Ids of nuclei that share an edge (4-neighbourhood) with a different nucleus."""
    labels = np.asarray(instances)
    touching = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        contact = (a != b) & (a > 0) & (b > 0)
        touching += [a[contact], b[contact]]
    return np.unique(np.concatenate(touching)) if touching else np.zeros(0, labels.dtype)


def nucleus_properties(instances: np.ndarray) -> pd.DataFrame:
    """One row per nucleus: id, shape properties (pixels at 40x) and whether it touches another."""
    table = pd.DataFrame(
        regionprops_table(np.asarray(instances, np.int32), properties=("label", *SHAPE_PROPERTIES))
    ).rename(columns={"label": "nucleus_id"})
    table["touching"] = table.nucleus_id.isin(touching_ids(instances))
    return table


def dataset_nuclei(samples: Iterable) -> pd.DataFrame:
    """Nucleus properties of many samples, with image_id, split and organ columns."""
    frames = []
    for s in samples:
        table = nucleus_properties(s.instances)
        table.insert(0, "image_id", s.image_id)
        table.insert(1, "split", s.split)
        table.insert(2, "organ", s.organ)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def image_summary(nuclei: pd.DataFrame, image_pixels: dict[str, int]) -> pd.DataFrame:
    """Per image: organ, split, nucleus count, density per megapixel, touching fraction."""
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
    """Summaries for a random nucleus-mask generator, per organ and overall.

    Areas are log-normal to a good approximation, so their log mean and log std are given;
    eccentricity and solidity get mean, std and the 5th/95th percentiles.
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

    The polygons are rasterised in document order and in reverse order; a pixel covered by two
    or more polygons gets a different owner in the two maps. Returns the number of regions, the
    overlapped pixels, and the regions (in document order) that own or lose such a pixel.
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
