"""Per-nucleus measurements of an instance map (area, centroid), as a table or CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from nucseg.data.images import read_label_map


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


def write_nuclei_csv(instance_file: str | Path) -> Path:
    """Write `<stem>_nuclei.csv` beside an instance map file and return its path."""
    path = Path(instance_file)
    out = path.with_name(f"{path.stem}_nuclei.csv")
    nuclei_table(read_label_map(path)).to_csv(out, index=False)
    return out
