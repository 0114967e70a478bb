"""Sparse contingency table of a GT and a predicted label map, and the pairings built on it.

`contingency(gt, pred)` counts, from one combined per-pixel key `gt * (max_pred + 1) + pred`
(ids compacted first when huge), the overlap of every (GT id, predicted id) pair sharing at least
one pixel, plus the area of every id: runs of equal consecutive keys are found in one pass and
their lengths summed per key with a bincount (np.unique when the key space is too large).
`nucseg.metrics` derives every score from it; the per-pair arrays also feed error analysis
(missed, false, merged, split nuclei). Pairings return indices into the pair arrays:

- `Contingency.best_pairs_per_gt()` / `best_pairs_per_pred()`: each nucleus's highest-IoU
  overlapping partner (tie: lowest partner id), as AJI uses it.
- `Contingency.max_iou_pairing()`: the one-to-one pairing of maximal total IoU (Hungarian
  algorithm, as HoVer-Net's AJI+), solved per connected component of the overlap graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nucseg.errors import ShapeMismatchError
from nucseg.labels import as_label_map

__all__ = ["Contingency", "contingency"]

# Ids below this are used directly as bincount bins; larger ids are compacted with np.unique.
_RAW_ID_LIMIT = 1 << 22
# A dense (gt, pred) bincount table is used while it has at most max(2 * pixels, this) cells.
_DENSE_CELLS = 1 << 20
# Rows per Hungarian call when packing small overlap components together (cost ~ rows^3).
_LSA_BLOCK = 128


@dataclass(frozen=True)
class Contingency:
    """Sparse (GT id, predicted id) overlap table of one image.

    Attributes:
        gt_ids: sorted non-zero GT ids present in the image, int64 (G,); uint64 only for ids
            beyond the int64 range (also for `pred_ids`).
        gt_areas: pixel count of each GT id, int64 (G,).
        pred_ids: sorted non-zero predicted ids present (P,).
        pred_areas: pixel count of each predicted id, int64 (P,).
        pair_gt: index into `gt_ids` of each overlapping pair, int64 (K,).
        pair_pred: index into `pred_ids` of each overlapping pair, int64 (K,).
        intersections: shared pixels of each pair (always > 0), int64 (K,). Pairs are sorted by
            GT id, then predicted id.
        n_pixels: number of pixels in the image.

    """

    gt_ids: np.ndarray
    gt_areas: np.ndarray
    pred_ids: np.ndarray
    pred_areas: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    intersections: np.ndarray
    n_pixels: int

    @property
    def n_gt(self) -> int:
        """Number of GT nuclei."""
        return len(self.gt_ids)

    @property
    def n_pred(self) -> int:
        """Number of predicted nuclei."""
        return len(self.pred_ids)

    @property
    def pair_gt_ids(self) -> np.ndarray:
        """GT id of each pair."""
        return self.gt_ids[self.pair_gt]

    @property
    def pair_pred_ids(self) -> np.ndarray:
        """Predicted id of each pair."""
        return self.pred_ids[self.pair_pred]

    @cached_property
    def unions(self) -> np.ndarray:
        """Union in pixels of each pair, int64 (K,)."""
        return self.gt_areas[self.pair_gt] + self.pred_areas[self.pair_pred] - self.intersections

    @cached_property
    def iou(self) -> np.ndarray:
        """Exact IoU of each pair, float64 (K,)."""
        return self.intersections / self.unions

    def best_pairs_per_gt(self) -> np.ndarray:
        """Index of each overlapped GT nucleus's highest-IoU pair (tie: lowest predicted id)."""
        return _best_pairs(self.pair_gt, self.pair_pred, self.iou)

    def best_pairs_per_pred(self) -> np.ndarray:
        """Index of each overlapping prediction's highest-IoU pair (tie: lowest GT id)."""
        return _best_pairs(self.pair_pred, self.pair_gt, self.iou)

    def max_iou_pairing(self) -> np.ndarray:
        """Sorted pair indices of a one-to-one pairing with maximal total IoU.

        Among equally good pairings the solver's choice is kept.
        """
        return _max_iou_pairing(self)


def _codes(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Map labels to bin codes: (codes, id of each code or None when codes are the ids, n_codes)."""
    if flat.size == 0:
        return flat.astype(np.int64), None, 1
    top = int(flat.max())
    if top < _RAW_ID_LIMIT:
        # uint64 + int64 would promote to float64 in the key arithmetic.
        codes = flat.astype(np.int64) if flat.dtype == np.uint64 else flat
        return codes, None, top + 1
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] != 0:  # keep code 0 for background even when the image has none
        ids, inverse = np.concatenate([np.zeros(1, ids.dtype), ids]), inverse + 1
    return inverse.astype(np.int64).ravel(), _id_array(ids), len(ids)


def _id_array(ids: np.ndarray) -> np.ndarray:
    """Ids as int64, or uint64 when some id is beyond the int64 range."""
    if ids.dtype == np.uint64 and len(ids) and ids.max() > np.iinfo(np.int64).max:
        return ids
    return ids.astype(np.int64)


def contingency(gt: np.ndarray, pred: np.ndarray) -> Contingency:
    """Build the sparse overlap table of a GT and a predicted label map.

    Args:
        gt: ground-truth instance map, any integer dtype, 0 = background.
        pred: predicted instance map of the same shape.

    Returns:
        The `Contingency` of the pair.

    Raises:
        ShapeMismatchError: the two maps differ in shape.
        LabelMapError: a map has a non-integer dtype or negative ids (an `AnnotationError`).

    """
    # Any number of dimensions: the table only needs matching shapes.
    gt = as_label_map(gt, "ground truth", ndim=None)
    pred = as_label_map(pred, "prediction", ndim=None)
    if gt.shape != pred.shape:
        raise ShapeMismatchError(
            f"ground truth has shape {gt.shape} but prediction has shape {pred.shape}"
        )
    g_codes, g_map, ng = _codes(gt.ravel())
    p_codes, p_map, npc = _codes(pred.ravel())
    n = g_codes.size
    # One combined key per pixel, g * npc + p; int32 halves memory traffic when it fits.
    key = g_codes.astype(np.int32 if ng * npc < 2**31 else np.int64)
    key *= npc
    key += p_codes
    run_keys, run_lengths = _runs(key)
    if ng * npc <= max(2 * n, _DENSE_CELLS):
        table = np.bincount(run_keys, run_lengths, minlength=ng * npc).reshape(ng, npc)
        g_area, p_area = table.sum(axis=1), table.sum(axis=0)
        cells = np.flatnonzero(table.ravel() != 0)  # a bool scan is far faster than a numeric one
        pg, pp = np.divmod(cells, npc)
        both = (pg > 0) & (pp > 0)
        pg, pp, inter = pg[both], pp[both], table.ravel()[cells[both]]
    else:
        keys, inverse = np.unique(run_keys, return_inverse=True)
        counts = np.bincount(inverse.ravel(), run_lengths)
        pg_all, pp_all = np.divmod(keys, npc)
        g_area = np.bincount(pg_all, weights=counts, minlength=ng)
        p_area = np.bincount(pp_all, weights=counts, minlength=npc)
        both = (pg_all > 0) & (pp_all > 0)
        pg, pp, inter = pg_all[both], pp_all[both], counts[both]
    g_present = np.flatnonzero(g_area[1:]) + 1
    p_present = np.flatnonzero(p_area[1:]) + 1
    return Contingency(
        gt_ids=g_present if g_map is None else g_map[g_present],
        gt_areas=g_area[g_present].astype(np.int64),
        pred_ids=p_present if p_map is None else p_map[p_present],
        pred_areas=p_area[p_present].astype(np.int64),
        pair_gt=np.searchsorted(g_present, pg).astype(np.int64),
        pair_pred=np.searchsorted(p_present, pp).astype(np.int64),
        intersections=np.asarray(inter, dtype=np.int64),
        n_pixels=int(n),
    )


def _runs(key: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Keys of the runs of equal consecutive pixels and their lengths (None: one per pixel)."""
    # Label maps are piecewise constant along rows, so runs are ~30x fewer than pixels; counting
    # runs also avoids bincount's serial per-pixel increments of one bin (the background).
    if key.size < 2:
        return key, None
    starts = np.flatnonzero(key[1:] != key[:-1])
    if len(starts) > key.size // 4:  # noise-like maps: per-pixel counting is cheaper
        return key, None
    starts = np.concatenate([[0], starts + 1])
    return key[starts], np.diff(starts, append=key.size)


def _best_pairs(group: np.ndarray, other: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Index of each group's highest-IoU pair (tie: lowest `other` index), one per group seen."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((other, -iou, group))
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[order[1:]] != group[order[:-1]]
    return order[first]


def _max_iou_pairing(c: Contingency) -> np.ndarray:
    """Pair indices of the one-to-one pairing that maximises the total IoU (AJI+ / HoVer-Net)."""
    k = len(c.intersections)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    # The objective separates over connected components of the bipartite overlap graph.
    graph = coo_matrix(
        (np.ones(k), (c.pair_gt, c.n_gt + c.pair_pred)), shape=(c.n_gt + c.n_pred,) * 2
    )
    n_comp, node_comp = connected_components(graph, directed=False)
    comp = node_comp[c.pair_gt]
    n_rows = np.bincount(node_comp[: c.n_gt], minlength=n_comp)[comp]
    n_cols = np.bincount(node_comp[c.n_gt :], minlength=n_comp)[comp]
    # A component with a single GT nucleus or a single prediction keeps its best pair.
    star = np.flatnonzero((n_rows == 1) | (n_cols == 1))
    chosen = [star[_best_pairs(comp[star], star, c.iou[star])]]
    multi = np.flatnonzero((n_rows > 1) & (n_cols > 1))
    if len(multi):
        multi = multi[np.argsort(comp[multi], kind="stable")]  # by component, then GT id
        m_comp = comp[multi]
        # Rows/columns numbered component after component, so each component is a dense block.
        row = _dense_rank(m_comp, c.pair_gt[multi])
        col = _dense_rank(m_comp, c.pair_pred[multi])
        starts = np.flatnonzero(np.r_[True, m_comp[1:] != m_comp[:-1]])
        first_row = np.repeat(row[starts], np.diff(np.r_[starts, len(multi)]))
        # Whole components packed into blocks of ~_LSA_BLOCK rows: one solver call per block.
        block = first_row // _LSA_BLOCK
        cuts = np.flatnonzero(np.diff(block)) + 1
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(multi)].tolist(), strict=True):
            r, q, idx = row[lo:hi] - row[lo], col[lo:hi], multi[lo:hi]
            q = q - q.min()
            weights = np.zeros((r[-1] + 1, q.max() + 1))
            weights[r, q] = c.iou[idx]
            pair_at = np.full(weights.shape, -1)
            pair_at[r, q] = idx
            sel = pair_at[linear_sum_assignment(weights, maximize=True)]
            chosen.append(sel[sel >= 0])
    return np.sort(np.concatenate(chosen))


def _dense_rank(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Dense rank (from 0) of each (group, value) pair, ordered by group then value."""
    span = int(values.max()) + 1
    return np.unique(group * span + values, return_inverse=True)[1]
