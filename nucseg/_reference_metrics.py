"""Slow, literal reference metrics, used only by `nucseg.bench` to time `nucseg.metrics` against.

These follow the published algorithms step by step with one full-image boolean mask per nucleus,
the way the MoNuSeg and HoVer-Net reference scripts do: for each GT nucleus, the candidate
predictions are the ids found under its mask, and every candidate's IoU is computed from two
full-image masks. They are deliberately unoptimised; never use them for real scoring. The
conventions (tie-breaks, empty images) match `nucseg.metrics`, whose module docstring defines them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _ids(labels: np.ndarray) -> list[int]:
    return [int(i) for i in np.unique(labels) if i != 0]


def _pairwise(
    gt: np.ndarray, pred: np.ndarray
) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Dense intersection and union matrices (GT x pred) from per-nucleus masks."""
    gt_ids, pred_ids = _ids(gt), _ids(pred)
    col = {p: j for j, p in enumerate(pred_ids)}
    inter = np.zeros((len(gt_ids), len(pred_ids)), dtype=np.int64)
    union = np.zeros_like(inter)
    for i, g in enumerate(gt_ids):
        g_mask = gt == g
        for p in _ids(pred[g_mask]):
            p_mask = pred == p
            inter[i, col[p]] = np.logical_and(g_mask, p_mask).sum()
            union[i, col[p]] = np.logical_or(g_mask, p_mask).sum()
    return gt_ids, pred_ids, inter, union


def reference_aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """AJI, official MoNuSeg semantics (best IoU per GT nucleus, tie: lowest predicted id)."""
    gt_ids, pred_ids = _ids(gt), _ids(pred)
    if not gt_ids and not pred_ids:
        return 1.0
    used: set[int] = set()
    inter_sum = union_sum = 0
    for g in gt_ids:
        g_mask = gt == g
        best = None  # (iou, intersection, union, pred id); candidates ascend, so ">" keeps lowest
        for p in _ids(pred[g_mask]):
            p_mask = pred == p
            inter = int(np.logical_and(g_mask, p_mask).sum())
            union = int(np.logical_or(g_mask, p_mask).sum())
            if best is None or inter / union > best[0]:
                best = (inter / union, inter, union, p)
        if best is None:
            union_sum += int(g_mask.sum())
        else:
            inter_sum += best[1]
            union_sum += best[2]
            used.add(best[3])
    for p in pred_ids:
        if p not in used:
            union_sum += int((pred == p).sum())
    return inter_sum / union_sum


def reference_aji_plus(gt: np.ndarray, pred: np.ndarray) -> float:
    """AJI+, HoVer-Net semantics: Hungarian pairing of maximal total IoU on the full matrix."""
    gt_ids, pred_ids, inter, union = _pairwise(gt, pred)
    if not gt_ids and not pred_ids:
        return 1.0
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    inter_sum = int(inter[rows, cols].sum())
    union_sum = int(union[rows, cols].sum())
    paired_rows, paired_cols = set(rows.tolist()), set(cols.tolist())
    for i, g in enumerate(gt_ids):
        if i not in paired_rows:
            union_sum += int((gt == g).sum())
    for j, p in enumerate(pred_ids):
        if j not in paired_cols:
            union_sum += int((pred == p).sum())
    return inter_sum / union_sum


def reference_panoptic_quality(
    gt: np.ndarray, pred: np.ndarray
) -> tuple[float, float, float, int, int, int]:
    """PQ with IoU > 0.5 matching: (pq, dq, sq, tp, fp, fn)."""
    gt_ids, pred_ids, inter, union = _pairwise(gt, pred)
    if not gt_ids and not pred_ids:
        return 1.0, 1.0, 1.0, 0, 0, 0
    ious = [
        inter[i, j] / union[i, j]
        for i, j in zip(*np.nonzero(inter), strict=True)
        if union[i, j] > 0
    ]
    matched = [v for v in ious if v > 0.5]
    tp = len(matched)
    fp, fn = len(pred_ids) - tp, len(gt_ids) - tp
    sq = sum(matched) / tp if tp else 0.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return dq * sq, dq, sq, tp, fp, fn


def reference_pixel_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice of the binary foregrounds; 1.0 when both are empty."""
    a, b = gt > 0, pred > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2 * int(np.logical_and(a, b).sum()) / total
