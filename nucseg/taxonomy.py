"""Error taxonomy of one segmented image: why each nucleus was or was not matched.

Every ground-truth (GT) nucleus and every predicted nucleus gets exactly one status, derived from
the sparse contingency table of `nucseg.metrics` (no per-nucleus masks). For a GT nucleus g and a
prediction p sharing I pixels:

- p *covers* g when I >= `cover` * area(g) (p holds at least that fraction of the nucleus);
- p is a *fragment* of g when I >= `cover` * area(p) (that fraction of p lies inside g);
- p *matches* g when IoU(g, p) > `match_iou` (one-to-one because `match_iou` >= 0.5, as in PQ).

A *merge event* is a prediction that covers two or more GT nuclei. A *split event* is a GT
nucleus with status "split" (one event per nucleus).

GT status, first rule that applies wins:

1. "matched": some prediction matches it.
2. "merged": a merge-event prediction covers it (it was fused with a neighbour).
3. "split": it has two or more fragments and they cover together >= `cover` of its area.
4. "missed": its best IoU with any prediction is < `min_iou` (0 when nothing touches it).
5. "other": the rest, i.e. detected but poorly delineated (best IoU in [`min_iou`, `match_iou`]).

Prediction status, first rule that applies wins:

1. "matched": it matches a GT nucleus.
2. "merged": it covers two or more GT nuclei (an unmatched merge event).
3. "split": it is a fragment of a GT nucleus whose status is "split".
4. "false": its best IoU with any GT nucleus is < `min_iou` (0 when it touches none).
5. "other": the rest.

With `cover` >= 0.5 a covered GT nucleus can only be matched by the prediction covering it, so a
merge event whose prediction still matches one nucleus (IoU > `match_iou`) is counted as an event
and its prediction stays "matched", while the other nuclei it covers are "merged". Hence
n_merge_events >= n_merged_pred, and every merge event has at least one "merged" GT nucleus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nucseg.metrics import MatchTable, match_nuclei

__all__ = [
    "COUNT_KEYS",
    "GT_STATUSES",
    "PRED_STATUSES",
    "ErrorTaxonomy",
    "classify_errors",
    "classify_matches",
    "taxonomy_table",
]

# Order = priority (first applicable wins), also the order of the codes used internally.
GT_STATUSES = ("matched", "merged", "split", "missed", "other")
PRED_STATUSES = ("matched", "merged", "split", "false", "other")

COUNT_KEYS = (
    "n_gt",
    "n_pred",
    "n_matched",
    "n_missed",
    "n_false",
    "n_merge_events",
    "n_merged_gt",
    "n_merged_pred",
    "n_split_events",
    "n_split_pred",
    "n_other_gt",
    "n_other_pred",
)


@dataclass(frozen=True)
class ErrorTaxonomy:
    """Status of every nucleus of one image (rules in the module docstring).

    Attributes:
        matches: the `MatchTable` the statuses were derived from.
        gt_ids: GT ids, sorted (G,).
        gt_status: status of each GT nucleus, one of `GT_STATUSES` (G,).
        gt_partner: best-IoU prediction of each GT nucleus, 0 if none (G,); for a "matched"
            nucleus this is its unique match.
        gt_iou: IoU with that partner (G,).
        pred_ids: predicted ids, sorted (P,).
        pred_status: status of each prediction, one of `PRED_STATUSES` (P,).
        pred_partner: best-IoU GT nucleus of each prediction, 0 if none (P,).
        pred_iou: IoU with that partner (P,).
        merge_events: ids of the predictions covering two or more GT nuclei, whatever their
            own status.
        params: the thresholds used (`match_iou`, `cover`, `min_iou`).

    """

    matches: MatchTable
    gt_ids: np.ndarray
    gt_status: np.ndarray
    gt_partner: np.ndarray
    gt_iou: np.ndarray
    pred_ids: np.ndarray
    pred_status: np.ndarray
    pred_partner: np.ndarray
    pred_iou: np.ndarray
    merge_events: np.ndarray
    params: dict[str, float]

    def counts(self) -> dict[str, int]:
        """Count nuclei per status.

        Returns:
            dict with the keys of `COUNT_KEYS`: `n_matched` (GT = predictions, the PQ true
            positives), `n_missed` (GT), `n_false` (predictions), `n_merge_events` (predictions
            covering >= 2 GT nuclei, matched or not), `n_merged_gt` and `n_merged_pred`
            (nuclei with status "merged"), `n_split_events` (GT nuclei with status "split"),
            `n_split_pred` (their fragments with status "split"), `n_other_gt`,
            `n_other_pred`. GT statuses sum to `n_gt`, prediction statuses to `n_pred`.

        """
        gt = {s: int(np.count_nonzero(self.gt_status == s)) for s in GT_STATUSES}
        pred = {s: int(np.count_nonzero(self.pred_status == s)) for s in PRED_STATUSES}
        return {
            "n_gt": len(self.gt_ids),
            "n_pred": len(self.pred_ids),
            "n_matched": gt["matched"],
            "n_missed": gt["missed"],
            "n_false": pred["false"],
            "n_merge_events": len(self.merge_events),
            "n_merged_gt": gt["merged"],
            "n_merged_pred": pred["merged"],
            "n_split_events": gt["split"],
            "n_split_pred": pred["split"],
            "n_other_gt": gt["other"],
            "n_other_pred": pred["other"],
        }

    def gt_status_of(self, gt_id: int) -> str:
        """Status of one GT nucleus.

        Raises:
            KeyError: `gt_id` is not a GT nucleus of the image.

        """
        return str(self.gt_status[_index_of(self.gt_ids, gt_id, "GT")])

    def pred_status_of(self, pred_id: int) -> str:
        """Status of one predicted nucleus.

        Raises:
            KeyError: `pred_id` is not a predicted nucleus of the image.

        """
        return str(self.pred_status[_index_of(self.pred_ids, pred_id, "predicted")])

    def gt_status_dict(self) -> dict[int, str]:
        """Map GT id -> status."""
        return dict(zip(self.gt_ids.tolist(), self.gt_status.tolist(), strict=True))

    def pred_status_dict(self) -> dict[int, str]:
        """Map predicted id -> status."""
        return dict(zip(self.pred_ids.tolist(), self.pred_status.tolist(), strict=True))

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Return (GT table, prediction table): id, area, status, partner and IoU per nucleus."""
        c = self.matches.contingency
        gt = pd.DataFrame(
            {"gt_id": self.gt_ids, "area": c.gt_areas, "status": self.gt_status,
             "partner": self.gt_partner, "iou": self.gt_iou}
        )  # fmt: skip
        pred = pd.DataFrame(
            {"pred_id": self.pred_ids, "area": c.pred_areas, "status": self.pred_status,
             "partner": self.pred_partner, "iou": self.pred_iou}
        )  # fmt: skip
        return gt, pred


def _index_of(ids: np.ndarray, wanted: int, kind: str) -> int:
    i = int(np.searchsorted(ids, wanted))
    if i == len(ids) or ids[i] != wanted:
        raise KeyError(f"{wanted} is not a {kind} nucleus id of this image")
    return i


def _check_params(match_iou: float, cover: float, min_iou: float) -> None:
    # match_iou >= 0.5 keeps matches one-to-one; cover >= 0.5 keeps "covers" exclusive enough
    # that a covered nucleus is matched by its coverer or by nothing (module docstring).
    if not 0.5 <= match_iou < 1.0:
        raise ValueError(f"match_iou must be in [0.5, 1), got {match_iou}")
    if not 0.5 <= cover <= 1.0:
        raise ValueError(f"cover must be in [0.5, 1], got {cover}")
    if not 0.0 <= min_iou <= match_iou:
        raise ValueError(f"min_iou must be in [0, match_iou={match_iou}], got {min_iou}")


def _any_per(index: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Flag each of the n nuclei that has at least one pair selected by `mask`."""
    return np.bincount(index[mask], minlength=n) > 0


def classify_matches(
    matches: MatchTable, *, match_iou: float = 0.5, cover: float = 0.5, min_iou: float = 0.1
) -> ErrorTaxonomy:
    """Classify every nucleus of an already matched image.

    Args:
        matches: `nucseg.metrics.match_nuclei` result.
        match_iou: IoU a match must exceed, in [0.5, 1).
        cover: overlap fraction for "covers" and "fragment", in [0.5, 1].
        min_iou: best IoU below which a GT nucleus is "missed" / a prediction "false".

    Returns:
        The `ErrorTaxonomy`.

    Raises:
        ValueError: a threshold is out of range.

    """
    _check_params(match_iou, cover, min_iou)
    c = matches.contingency
    ng, npred = c.n_gt, c.n_pred
    pg, pp, inter = c.pair_gt, c.pair_pred, c.intersections
    match = c.iou > match_iou
    covers = inter >= cover * c.gt_areas[pg]
    fragment = inter >= cover * c.pred_areas[pp]

    gt_matched = _any_per(pg, match, ng)
    pred_matched = _any_per(pp, match, npred)
    merger = np.bincount(pp[covers], minlength=npred) >= 2
    gt_merged = _any_per(pg, covers & merger[pp], ng)
    n_frag = np.bincount(pg[fragment], minlength=ng)
    frag_cover = np.bincount(pg[fragment], weights=inter[fragment], minlength=ng)
    gt_split = (n_frag >= 2) & (frag_cover >= cover * c.gt_areas)
    gt_weak = matches.gt_best_iou < min_iou
    gt_code = np.select([gt_matched, gt_merged, gt_split, gt_weak], [0, 1, 2, 3], default=4)

    pred_split = _any_per(pp, fragment & (gt_code[pg] == 2), npred)
    pred_weak = matches.pred_best_iou < min_iou
    pred_code = np.select([pred_matched, merger, pred_split, pred_weak], [0, 1, 2, 3], default=4)

    return ErrorTaxonomy(
        matches=matches,
        gt_ids=matches.gt_ids,
        gt_status=np.asarray(GT_STATUSES)[gt_code],
        gt_partner=matches.gt_best_pred,
        gt_iou=matches.gt_best_iou,
        pred_ids=matches.pred_ids,
        pred_status=np.asarray(PRED_STATUSES)[pred_code],
        pred_partner=matches.pred_best_gt,
        pred_iou=matches.pred_best_iou,
        merge_events=c.pred_ids[merger],
        params={"match_iou": match_iou, "cover": cover, "min_iou": min_iou},
    )


def classify_errors(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    match_iou: float = 0.5,
    cover: float = 0.5,
    min_iou: float = 0.1,
) -> ErrorTaxonomy:
    """Classify every GT and predicted nucleus of one image (rules in the module docstring).

    Args:
        gt: ground-truth instance map, integer dtype, 0 = background.
        pred: predicted instance map of the same shape.
        match_iou: IoU a match must exceed, in [0.5, 1).
        cover: overlap fraction for "covers" and "fragment", in [0.5, 1].
        min_iou: best IoU below which a GT nucleus is "missed" / a prediction "false".

    Returns:
        The `ErrorTaxonomy`.

    Raises:
        ShapeMismatchError: the maps differ in shape.
        LabelMapError: a map has a non-integer dtype or negative ids (an `AnnotationError`).
        ValueError: a threshold is out of range.

    """
    _check_params(match_iou, cover, min_iou)
    return classify_matches(
        match_nuclei(gt, pred), match_iou=match_iou, cover=cover, min_iou=min_iou
    )


def taxonomy_table(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    match_iou: float = 0.5,
    cover: float = 0.5,
    min_iou: float = 0.1,
) -> pd.DataFrame:
    """Error counts of many images.

    Args:
        pairs: `(image_id, gt, pred)` triples.
        match_iou: see `classify_errors`.
        cover: see `classify_errors`.
        min_iou: see `classify_errors`.

    Returns:
        One row per image: column `image_id` then the `COUNT_KEYS` columns (int).

    """
    params = {"match_iou": match_iou, "cover": cover, "min_iou": min_iou}
    rows = [
        {"image_id": image_id, **classify_errors(gt, pred, **params).counts()}
        for image_id, gt, pred in pairs
    ]
    return pd.DataFrame(rows, columns=["image_id", *COUNT_KEYS])
