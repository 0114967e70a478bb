"""Per-nucleus measurements of an instance map (area, centroid), as a table or CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from nucseg.data.images import read_label_map
from nucseg.runtime import atomic_write


def nuclei_table(instances: np.ndarray) -> pd.DataFrame:
    """One row per nucleus: id, area (pixels), centroid (row, col) and bounding box."""
    props = regionprops_table(
        np.asarray(instances, dtype=np.int32), properties=("label", "area", "centroid", "bbox")
    )
    table = pd.DataFrame(props).rename(
        columns={
            "label": "nucleus_id",
            "centroid-0": "centroid_row",
            "centroid-1": "centroid_col",
            "bbox-0": "min_row",
            "bbox-1": "min_col",
            "bbox-2": "max_row",
            "bbox-3": "max_col",
        }
    )
    return table


def write_nuclei_csv(instances: str | Path | np.ndarray, out: str | Path | None = None) -> Path:
    """Write the nuclei table of an instance map as CSV, atomically; returns its path.

    Args:
        instances: An instance map, or a label-map file.
        out: Destination; default `<stem>_nuclei.csv` beside a label-map file.

    """
    if out is None:
        if not isinstance(instances, str | Path):
            raise ValueError("write_nuclei_csv: give `out` when passing an array")
        out = Path(instances).with_name(f"{Path(instances).stem}_nuclei.csv")
    labels = instances if isinstance(instances, np.ndarray) else read_label_map(instances)
    with atomic_write(out) as tmp:
        nuclei_table(labels).to_csv(tmp, index=False)
    return Path(out)
