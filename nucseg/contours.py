"""Contour completeness and background noise of predicted maps: the study's cGAN observations.

A 3-class map (background, inside, boundary probabilities, as the U-Net and the pix2pix
generator predict) is judged before any post-processing:

- **boundary recall**: the share of ground-truth boundary pixels (the inner edge of every
  annotated nucleus) that lie within ``tolerance`` pixels of a predicted boundary pixel;
- **contour closure**: an annotated nucleus has a *closed* contour when the predicted boundary
  encloses its core, i.e. the core lies in a hole of the boundary mask; otherwise the contour is
  *open* and the watershed has to close it. Nuclei cut by the image border are left out;
- **background objects**: predicted instances lying mostly (over ``1 - max_overlap`` of their
  area) on annotated background, counted with their area;
- **F1 across IoU thresholds**: one-to-one matches (IoU > t is unique for t >= 0.5) at
  t = 0.5 ... 0.9, which shows boundary accuracy better than one threshold.

``raw_instances`` is the map without post-processing (connected components of the pixels whose
most likely class is inside), so AJI can be compared before and after the post-processing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.segmentation import find_boundaries

from nucseg.contingency import contingency
from nucseg.errors import ShapeMismatchError
from nucseg.labels import as_label_map

__all__ = [
    "IOU_THRESHOLDS",
    "background_objects",
    "boundary_recall",
    "contour_closure",
    "f1_at_iou",
    "map_quality_table",
    "raw_instances",
]

BACKGROUND, INSIDE, BOUNDARY = 0, 1, 2
IOU_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def _same_shape(gt: np.ndarray, other: np.ndarray, what: str) -> None:
    if gt.shape != other.shape[-2:]:
        raise ShapeMismatchError(f"ground truth is {gt.shape} but {what} is {other.shape}")


def predicted_boundary(probabilities: np.ndarray) -> np.ndarray:
    """Pixels whose most likely class is the boundary, from (3, H, W) probabilities.

    A fourth channel (the distance head's map) is not a class and is ignored.
    """
    return np.argmax(probabilities[:3], axis=0) == BOUNDARY


def raw_instances(probabilities: np.ndarray) -> np.ndarray:
    """The map without post-processing: connected inside pixels (4-connected) as instances."""
    inside = np.argmax(probabilities[:3], axis=0) == INSIDE  # not the distance channel
    return label(inside, connectivity=1).astype(np.int32)


def boundary_recall(gt: np.ndarray, boundary: np.ndarray, tolerance: float = 2.0) -> float:
    """Share of annotated boundary pixels within ``tolerance`` pixels of a predicted one.

    Args:
        gt: Instance map (H, W), 0 = background.
        boundary: Predicted boundary mask (H, W).
        tolerance: Largest distance, in pixels, that still counts as recovered.

    Returns:
        Recall in [0, 1]; NaN without annotated nuclei.

    """
    gt = as_label_map(gt, "ground truth")
    _same_shape(gt, boundary, "the boundary mask")
    truth = find_boundaries(gt, mode="inner")
    if not truth.any():
        return float("nan")
    if not boundary.any():
        return 0.0
    distance = ndi.distance_transform_edt(~boundary.astype(bool))
    return float((distance[truth] <= tolerance).mean())


def contour_closure(gt: np.ndarray, boundary: np.ndarray, core: float = 3.0) -> tuple[int, int]:
    """Count annotated nuclei whose predicted contour is closed, and those whose is open.

    A nucleus's core is its pixels at depth ``core`` or more (1 on its edge; its deepest pixels
    if none is that deep), so a predicted boundary band of two pixels does not cover it. The
    contour is closed when most of the core lies in holes of the boundary mask.

    Args:
        gt: Instance map (H, W), 0 = background.
        boundary: Predicted boundary mask (H, W).
        core: Depth of a nucleus's core, pixels.

    Returns:
        ``(closed, open)`` counts over the nuclei that do not touch the image border.

    """
    gt = as_label_map(gt, "ground truth")
    _same_shape(gt, boundary, "the boundary mask")
    boundary = boundary.astype(bool)
    enclosed = ndi.binary_fill_holes(boundary) & ~boundary
    on_border = np.unique(np.concatenate([gt[0], gt[-1], gt[:, 0], gt[:, -1]]))
    # Depth inside its own nucleus (1 on its edge): edges between touching nuclei count too.
    depth = ndi.distance_transform_edt(~find_boundaries(gt, mode="inner")) + 1
    closed = opened = 0
    for index, region in enumerate(ndi.find_objects(gt), start=1):
        if region is None or index in on_border:
            continue
        own = gt[region] == index
        deep = own & (depth[region] >= core)
        if not deep.any():
            deep = own & (depth[region] == depth[region][own].max())
        if enclosed[region][deep].mean() > 0.5:
            closed += 1
        else:
            opened += 1
    return closed, opened


def background_objects(
    gt: np.ndarray, pred: np.ndarray, max_overlap: float = 0.5
) -> tuple[int, int]:
    """Predicted instances that lie mostly on annotated background: their count and area.

    Args:
        gt: Instance map (H, W), 0 = background.
        pred: Predicted instance map (H, W).
        max_overlap: Largest share of an object's area on annotated nuclei for it to count.

    Returns:
        ``(count, area in pixels)``.

    """
    gt, pred = as_label_map(gt, "ground truth"), as_label_map(pred, "prediction")
    _same_shape(gt, pred, "the prediction")
    c = contingency(gt, pred)
    on_nuclei = np.bincount(c.pair_pred, weights=c.intersections, minlength=c.n_pred)
    noise = on_nuclei <= max_overlap * c.pred_areas
    return int(noise.sum()), int(c.pred_areas[noise].sum())


def f1_at_iou(
    gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS
) -> dict[float, float]:
    """Object F1 = 2tp / (2tp + fp + fn) with matches of IoU > t, for each threshold t >= 0.5.

    Returns:
        ``{t: F1}``; 1.0 at every t when both maps are empty.

    """
    if min(thresholds) < 0.5:
        raise ValueError(f"thresholds must be >= 0.5 (unique matches), got {min(thresholds)}")
    gt, pred = as_label_map(gt, "ground truth"), as_label_map(pred, "prediction")
    _same_shape(gt, pred, "the prediction")
    c = contingency(gt, pred)
    iou = c.iou
    scores = {}
    for t in thresholds:
        tp = int((iou > t).sum())
        total = c.n_gt + c.n_pred
        scores[float(t)] = 1.0 if total == 0 else 2 * tp / total
    return scores


def map_quality_table(
    items: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    tolerance: float = 2.0,
) -> pd.DataFrame:
    """Per-image map quality of ``(image_id, gt, probabilities (3, H, W), instances)`` items.

    Returns:
        One row per image: ``boundary_recall``, ``closed`` and ``open`` contours,
        ``open_fraction``, ``background_objects`` and ``background_area`` (a share of the
        image) of the raw map and of the post-processed ``instances`` (``raw_`` / ``post_``
        prefixes), and ``f1@t`` of the post-processed instances for each IoU threshold.

    """
    rows = []
    for image_id, gt, probabilities, instances in items:
        _same_shape(gt, probabilities, "the probability map")
        boundary = predicted_boundary(probabilities)
        closed, opened = contour_closure(gt, boundary)
        row = {"image_id": image_id, "boundary_recall": boundary_recall(gt, boundary, tolerance),
               "closed": closed, "open": opened,
               "open_fraction": opened / max(closed + opened, 1)}  # fmt: skip
        for prefix, pred in (("raw", raw_instances(probabilities)), ("post", instances)):
            count, area = background_objects(gt, pred)
            row[f"{prefix}_background_objects"] = count
            row[f"{prefix}_background_area"] = area / gt.size
        row.update({f"f1@{t:.1f}": f for t, f in f1_at_iou(gt, instances).items()})
        rows.append(row)
    return pd.DataFrame(rows)
