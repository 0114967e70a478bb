"""Where AJI is lost: the cost of each kind of error, and what the false detections look like.

The cost of an error kind is measured by an oracle repair: the prediction is corrected for that
kind only, using the ground truth, and re-scored. The AJI gained is what that kind costs. The
kinds are the statuses of `nucseg.taxonomy`; "other" is a nucleus found but poorly outlined.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nucseg.metrics import aji
from nucseg.stain import hematoxylin
from nucseg.taxonomy import ErrorTaxonomy, classify_errors

REPAIRABLE = ("missed", "false", "merged", "split", "other")


def repair_errors(
    gt: np.ndarray, pred: np.ndarray, taxonomy: ErrorTaxonomy, status: str
) -> np.ndarray:
    """Return a copy of `pred` with the errors of one status corrected from the ground truth.

    * ``missed``: the missed GT nuclei are added.
    * ``false``: the false detections are removed.
    * ``merged``, ``split``, ``other``: the predictions with that status are removed and the GT
      nuclei with that status are put in their place.

    GT nuclei are painted over the prediction with new ids, so a repair may trim a neighbour.

    Args:
        gt: GT instance map (H, W).
        pred: predicted instance map (H, W).
        taxonomy: `classify_errors(gt, pred)`.
        status: one of `REPAIRABLE`.

    Returns:
        The repaired instance map (int64).

    Raises:
        ValueError: unknown status.

    """
    if status not in REPAIRABLE:
        raise ValueError(f"status must be one of {REPAIRABLE}, got {status!r}")
    out = pred.astype(np.int64, copy=True)
    wrong = taxonomy.pred_ids[taxonomy.pred_status == status]
    if len(wrong):
        out[np.isin(out, wrong)] = 0
    wanted = taxonomy.gt_ids[taxonomy.gt_status == status]
    if len(wanted):
        paint = np.isin(gt, wanted)
        out[paint] = gt[paint].astype(np.int64) + int(out.max())  # ids clear of the prediction's
    return out


def aji_cost_table(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    statuses: Sequence[str] = REPAIRABLE,
    progress: bool = True,
) -> pd.DataFrame:
    """Re-score each image with one error kind repaired at a time.

    Args:
        items: `(image_id, gt, pred)` triples.
        statuses: error kinds to repair, each alone.
        progress: show a progress bar.

    Returns:
        One row per image: `image_id`, `aji`, and `gain_<status>` = AJI after that repair minus
        `aji`, for each status.

    """
    rows = []
    for image_id, gt, pred in tqdm(list(items), desc="repairs", disable=not progress):
        taxonomy = classify_errors(gt, pred)
        row = {"image_id": image_id, "aji": aji(gt, pred)}
        for status in statuses:
            row[f"gain_{status}"] = aji(gt, repair_errors(gt, pred, taxonomy, status)) - row["aji"]
        rows.append(row)
    return pd.DataFrame(rows)


def predicted_nuclei_table(
    image: np.ndarray, gt: np.ndarray, pred: np.ndarray, taxonomy: ErrorTaxonomy | None = None
) -> pd.DataFrame:
    """Describe every predicted nucleus: status, area and mean hematoxylin.

    Args:
        image: uint8 RGB image (H, W, 3).
        gt: GT instance map (H, W).
        pred: predicted instance map (H, W).
        taxonomy: `classify_errors(gt, pred)`; computed when None.

    Returns:
        One row per predicted nucleus: `pred_id`, `status`, `area` (pixels), `hematoxylin`
        (mean Ruifrok H concentration inside it), `row`, `col` (centroid).

    """
    taxonomy = taxonomy if taxonomy is not None else classify_errors(gt, pred)
    ids = taxonomy.pred_ids.astype(np.int64)
    flat = pred.ravel().astype(np.int64)
    n = int(max(flat.max(initial=0), ids.max(initial=0))) + 1
    area = np.bincount(flat, minlength=n)[ids]
    h = np.bincount(flat, weights=hematoxylin(image).ravel(), minlength=n)[ids]
    rr, cc = np.indices(pred.shape)
    rows = np.bincount(flat, weights=rr.ravel(), minlength=n)[ids]
    cols = np.bincount(flat, weights=cc.ravel(), minlength=n)[ids]
    safe = np.maximum(area, 1)
    columns = {"pred_id": ids, "status": taxonomy.pred_status, "area": area}
    columns.update(hematoxylin=h / safe, row=rows / safe, col=cols / safe)
    return pd.DataFrame(columns)


def nucleus_like(table: pd.DataFrame, reference: str = "matched", low: float = 10.0) -> pd.Series:
    """Flag predictions whose stain and size are those of the correctly found nuclei.

    A prediction is nucleus-like when its mean hematoxylin is at least the `low` percentile of
    the `reference` predictions' and its area lies between their `low` and `100 - low`
    percentiles. A false detection that is nucleus-like may be a nucleus nobody annotated; this
    is a proxy, not a pathologist's reading.

    Args:
        table: `predicted_nuclei_table` rows, pooled over images.
        reference: status of the predictions that set the ranges.
        low: lower percentile (the upper area bound is `100 - low`).

    Returns:
        Boolean Series aligned with `table`.

    Raises:
        ValueError: no prediction has the reference status.

    """
    ref = table[table.status == reference]
    if ref.empty:
        raise ValueError(f"no prediction has status {reference!r} to set the ranges")
    h_min = np.percentile(ref.hematoxylin, low)
    a_min, a_max = np.percentile(ref.area, [low, 100 - low])
    return (table.hematoxylin >= h_min) & table.area.between(a_min, a_max)
