"""Instance-segmentation metrics for one image, all derived from one sparse contingency table.

`nucseg.contingency.Contingency` (re-exported here) counts, in a single pass over the pixels, the
overlap of every (ground-truth id, predicted id) pair that shares at least one pixel, plus the
area of every id. Every metric below is exact arithmetic on that table; no per-nucleus
full-image mask is ever built.

Inputs are two label maps of the same shape with any integer dtype; 0 is background and the other
ids may be arbitrary non-negative integers (gaps and huge ids are fine). Every function raises
`ShapeMismatchError` (both shapes in the message) when the shapes differ, and `LabelMapError` (an
`AnnotationError`) for a non-integer dtype (bool included) or negative ids.

Definitions (IoU is always exact: intersection / union in pixels):

- AJI (official MoNuSeg semantics, Kumar et al. 2017): each GT nucleus takes the prediction with
  the highest IoU among those that overlap it (tie: lowest predicted id); its intersection and
  union are accumulated. A GT nucleus that no prediction overlaps adds only its area to the union
  (the MATLAB release instead pairs it with the first prediction, a known quirk; HoVer-Net's
  re-implementation and this module skip it). One prediction may serve several GT nuclei and is
  then counted in each union. Predictions never chosen add their area to the union.
- AJI+ (Graham et al. 2019, HoVer-Net): one-to-one pairing that maximises the total IoU
  (Hungarian algorithm, as HoVer-Net's `get_fast_aji_plus`), solved independently on each
  connected component of the overlap graph; pairs with IoU 0 are dropped. Unpaired GT and
  unpaired prediction areas join the union. When several pairings reach the same total IoU the
  solver's choice is kept (AJI+ itself is only defined up to such ties).
- PQ = DQ * SQ (Kirillov et al.): pairs with IoU > 0.5 are matches (unique by construction);
  SQ = mean IoU of matches (0 when there are none), DQ = tp / (tp + fp/2 + fn/2).
- Object F1 = 2 tp / (2 tp + fp + fn) with the same IoU > 0.5 matches (numerically equal to DQ).
- Pixel Dice of the binary foregrounds (gt > 0, pred > 0).

Empty images: when neither map has a nucleus, every score (AJI, AJI+, PQ, DQ, SQ, F1, Dice) is
1.0 (nothing to find, nothing found). When only one of them is empty every score is 0.0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from nucseg.contingency import Contingency, contingency

__all__ = [
    "Contingency",
    "ImageScores",
    "MatchTable",
    "PQResult",
    "aji",
    "aji_plus",
    "contingency",
    "match_nuclei",
    "object_f1",
    "panoptic_quality",
    "pixel_dice",
    "score",
    "score_contingency",
    "score_table",
    "summarize",
]


def _jaccard(c: Contingency, sel: np.ndarray) -> float:
    """Return the aggregated Jaccard of chosen pairs; unchosen GT/predicted areas join the union."""
    if c.n_gt == 0 and c.n_pred == 0:
        return 1.0
    used_gt = np.unique(c.pair_gt[sel])
    used_pred = np.unique(c.pair_pred[sel])
    inter = int(c.intersections[sel].sum())
    union = int(c.unions[sel].sum())
    union += int(c.gt_areas.sum() - c.gt_areas[used_gt].sum())
    union += int(c.pred_areas.sum() - c.pred_areas[used_pred].sum())
    return inter / union


class PQResult(NamedTuple):
    """Panoptic quality of one image and its parts."""

    pq: float
    dq: float
    sq: float
    tp: int
    fp: int
    fn: int


def _pq(c: Contingency) -> PQResult:
    match = c.iou > 0.5
    tp = int(match.sum())
    fp, fn = c.n_pred - tp, c.n_gt - tp
    if c.n_gt == 0 and c.n_pred == 0:
        return PQResult(1.0, 1.0, 1.0, 0, 0, 0)
    sq = float(c.iou[match].sum() / tp) if tp else 0.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return PQResult(dq * sq, dq, sq, tp, fp, fn)


def _dice(c: Contingency) -> float:
    total = int(c.gt_areas.sum() + c.pred_areas.sum())
    return 1.0 if total == 0 else 2 * int(c.intersections.sum()) / total


def aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """Compute the Aggregated Jaccard Index, official MoNuSeg semantics (see module docstring).

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        AJI in [0, 1]; 1.0 when both maps are empty.

    """
    c = contingency(gt, pred)
    return _jaccard(c, c.best_pairs_per_gt())


def aji_plus(gt: np.ndarray, pred: np.ndarray) -> float:
    """AJI+ (HoVer-Net): AJI over the one-to-one pairing of maximal total IoU.

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        AJI+ in [0, 1]; 1.0 when both maps are empty.

    """
    c = contingency(gt, pred)
    return _jaccard(c, c.max_iou_pairing())


def panoptic_quality(gt: np.ndarray, pred: np.ndarray) -> PQResult:
    """Panoptic quality with IoU > 0.5 matching.

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        `PQResult(pq, dq, sq, tp, fp, fn)`; scores are 1.0 when both maps are empty.

    """
    return _pq(contingency(gt, pred))


def object_f1(gt: np.ndarray, pred: np.ndarray) -> float:
    """Object-level F1 = 2tp / (2tp + fp + fn) with IoU > 0.5 matching.

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        F1 in [0, 1]; 1.0 when both maps are empty.

    """
    return _pq(contingency(gt, pred)).dq


def pixel_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient of the binary foregrounds (gt > 0, pred > 0).

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both maps are empty.

    """
    return _dice(contingency(gt, pred))


@dataclass(frozen=True)
class ImageScores:
    """Every metric of one image (see the module docstring for definitions)."""

    aji: float
    aji_plus: float
    pq: float
    dq: float
    sq: float
    f1: float
    dice: float
    tp: int
    fp: int
    fn: int
    n_gt: int
    n_pred: int

    def as_dict(self) -> dict[str, float | int]:
        """Return the scores as a plain dict (field order kept)."""
        return dataclasses.asdict(self)


def score_contingency(c: Contingency) -> ImageScores:
    """Compute every metric from an already built contingency table.

    Args:
        c: the table of one image.

    Returns:
        The image's `ImageScores`.

    """
    pq = _pq(c)
    return ImageScores(
        aji=_jaccard(c, c.best_pairs_per_gt()),
        aji_plus=_jaccard(c, c.max_iou_pairing()),
        pq=pq.pq,
        dq=pq.dq,
        sq=pq.sq,
        f1=pq.dq,
        dice=_dice(c),
        tp=pq.tp,
        fp=pq.fp,
        fn=pq.fn,
        n_gt=c.n_gt,
        n_pred=c.n_pred,
    )


def score(gt: np.ndarray, pred: np.ndarray) -> ImageScores:
    """Compute every metric of one image from a single contingency table.

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        The image's `ImageScores`.

    """
    return score_contingency(contingency(gt, pred))


def score_table(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Score many images.

    Args:
        pairs: `(image_id, gt, pred)` triples.

    Returns:
        One row per image: column `image_id` then the `ImageScores` fields.

    """
    columns = ["image_id", *(f.name for f in dataclasses.fields(ImageScores))]
    rows = [{"image_id": image_id, **score(gt, pred).as_dict()} for image_id, gt, pred in pairs]
    return pd.DataFrame(rows, columns=columns)


def summarize(table: pd.DataFrame) -> pd.Series:
    """Mean of the per-image values, the way the MoNuSeg challenge ranked (not pooled pixels).

    Args:
        table: a `score_table` result.

    Returns:
        Mean of every numeric column (NaN for an empty table).

    """
    return table.mean(numeric_only=True)


@dataclass(frozen=True)
class MatchTable:
    """Per-nucleus matching of one image, the raw material for an error taxonomy.

    Best partners use the highest IoU among overlapping nuclei (tie: lowest id); a nucleus that
    nothing overlaps has partner 0 and IoU 0.0. `unique_*` is the one-to-one AJI+ pairing.

    Attributes:
        contingency: the underlying sparse table.
        gt_ids: GT ids (G,).
        gt_best_pred: best predicted id of each GT nucleus, 0 if none (G,).
        gt_best_iou: IoU with that prediction (G,).
        gt_n_overlaps: number of predictions overlapping each GT nucleus (G,).
        pred_ids: predicted ids (P,).
        pred_best_gt: best GT id of each prediction, 0 if none (P,).
        pred_best_iou: IoU with that GT nucleus (P,).
        pred_n_overlaps: number of GT nuclei overlapping each prediction (P,).
        unique_gt: GT ids of the one-to-one pairs.
        unique_pred: predicted ids of the one-to-one pairs.
        unique_iou: IoU of the one-to-one pairs.

    """

    contingency: Contingency
    gt_ids: np.ndarray
    gt_best_pred: np.ndarray
    gt_best_iou: np.ndarray
    gt_n_overlaps: np.ndarray
    pred_ids: np.ndarray
    pred_best_gt: np.ndarray
    pred_best_iou: np.ndarray
    pred_n_overlaps: np.ndarray
    unique_gt: np.ndarray
    unique_pred: np.ndarray
    unique_iou: np.ndarray

    def unmatched_gt(self, iou_threshold: float = 0.5) -> np.ndarray:
        """GT ids whose best IoU is <= `iou_threshold` (PQ false negatives at 0.5).

        Args:
            iou_threshold: IoU a match must exceed; 0.0 gives nuclei no prediction touches.

        Returns:
            The ids, sorted.

        """
        return self.gt_ids[self.gt_best_iou <= iou_threshold]

    def unmatched_pred(self, iou_threshold: float = 0.5) -> np.ndarray:
        """Predicted ids whose best IoU is <= `iou_threshold` (PQ false positives at 0.5).

        Args:
            iou_threshold: IoU a match must exceed; 0.0 gives predictions touching no nucleus.

        Returns:
            The ids, sorted.

        """
        return self.pred_ids[self.pred_best_iou <= iou_threshold]

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Return (GT table, prediction table) with id, area, best partner, IoU and overlaps."""
        c = self.contingency
        gt = pd.DataFrame(
            {"gt_id": self.gt_ids, "area": c.gt_areas, "best_pred": self.gt_best_pred,
             "iou": self.gt_best_iou, "n_overlaps": self.gt_n_overlaps}
        )  # fmt: skip
        pred = pd.DataFrame(
            {"pred_id": self.pred_ids, "area": c.pred_areas, "best_gt": self.pred_best_gt,
             "iou": self.pred_best_iou, "n_overlaps": self.pred_n_overlaps}
        )  # fmt: skip
        return gt, pred


def _best_partner(c: Contingency, by_gt: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-nucleus best partner id (0 if none) and its IoU, for GT (`by_gt`) or predictions."""
    sel = c.best_pairs_per_gt() if by_gt else c.best_pairs_per_pred()
    group, other = (c.pair_gt, c.pair_pred) if by_gt else (c.pair_pred, c.pair_gt)
    partner_ids, n = (c.pred_ids, c.n_gt) if by_gt else (c.gt_ids, c.n_pred)
    partner, iou = np.zeros(n, dtype=partner_ids.dtype), np.zeros(n)
    partner[group[sel]] = partner_ids[other[sel]]
    iou[group[sel]] = c.iou[sel]
    return partner, iou


def match_nuclei(gt: np.ndarray, pred: np.ndarray) -> MatchTable:
    """Match GT and predicted nuclei of one image.

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        The `MatchTable`.

    """
    c = contingency(gt, pred)
    gt_best, gt_iou = _best_partner(c, by_gt=True)
    pred_best, pred_iou = _best_partner(c, by_gt=False)
    uniq = c.max_iou_pairing()
    return MatchTable(
        contingency=c,
        gt_ids=c.gt_ids,
        gt_best_pred=gt_best,
        gt_best_iou=gt_iou,
        gt_n_overlaps=np.bincount(c.pair_gt, minlength=c.n_gt),
        pred_ids=c.pred_ids,
        pred_best_gt=pred_best,
        pred_best_iou=pred_iou,
        pred_n_overlaps=np.bincount(c.pair_pred, minlength=c.n_pred),
        unique_gt=c.gt_ids[c.pair_gt[uniq]],
        unique_pred=c.pred_ids[c.pair_pred[uniq]],
        unique_iou=c.iou[uniq],
    )
