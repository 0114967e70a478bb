"""Fast metrics against slow literal references written here, plus the documented edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from nucseg import _reference_metrics as pkg_ref
from nucseg import contingency as contingency_module
from nucseg import metrics as m
from nucseg.errors import AnnotationError, NucsegError, ShapeMismatchError

# ---------------------------------------------------------------------------------------------
# Literal references: one boolean mask per nucleus over the whole image, every pair, plain loops.


def _masks(labels):
    return {int(i): labels == i for i in np.unique(labels) if i != 0}


def _pairs(gt, pred):
    gm, pm = _masks(gt), _masks(pred)
    inter = {(g, p): int((a & b).sum()) for g, a in gm.items() for p, b in pm.items()}
    union = {(g, p): int((a | b).sum()) for g, a in gm.items() for p, b in pm.items()}
    return gm, pm, inter, union


def lit_aji_given(gt, pred, chosen):
    """AJI-style score for an explicit list of (gt id, pred id) pairs (repeats allowed)."""
    gm, pm, inter, union = _pairs(gt, pred)
    if not gm and not pm:
        return 1.0
    i_sum = sum(inter[pair] for pair in chosen)
    u_sum = sum(union[pair] for pair in chosen)
    u_sum += sum(int(a.sum()) for g, a in gm.items() if g not in {c[0] for c in chosen})
    u_sum += sum(int(b.sum()) for p, b in pm.items() if p not in {c[1] for c in chosen})
    return i_sum / u_sum


def lit_aji_pairs(gt, pred):
    gm, pm, inter, union = _pairs(gt, pred)
    chosen = []
    for g in sorted(gm):
        overlapping = [p for p in sorted(pm) if inter[g, p] > 0]
        if overlapping:  # highest IoU, then lowest pred id
            chosen.append((g, max(overlapping, key=lambda p: (inter[g, p] / union[g, p], -p))))
    return chosen


def lit_aji(gt, pred):
    return lit_aji_given(gt, pred, lit_aji_pairs(gt, pred))


def lit_hungarian(gt, pred):
    """HoVer-Net AJI+ pairing on the full IoU matrix: (pairs, total IoU)."""
    gm, pm, inter, union = _pairs(gt, pred)
    gs, ps = sorted(gm), sorted(pm)
    iou = np.zeros((len(gs), len(ps)))
    for i, g in enumerate(gs):
        for j, p in enumerate(ps):
            iou[i, j] = inter[g, p] / union[g, p]
    rows, cols = linear_sum_assignment(iou, maximize=True)
    chosen = [(gs[i], ps[j]) for i, j in zip(rows, cols, strict=True) if iou[i, j] > 0]
    return chosen, float(iou[rows, cols].sum())


def lit_pq(gt, pred):
    gm, pm, inter, union = _pairs(gt, pred)
    if not gm and not pm:
        return 1.0, 1.0, 1.0, 0, 0, 0
    matched = [inter[k] / union[k] for k in inter if inter[k] / union[k] > 0.5]
    tp = len(matched)
    fp, fn = len(pm) - tp, len(gm) - tp
    sq = sum(matched) / tp if tp else 0.0
    dq = tp / (tp + fp / 2 + fn / 2)
    return dq * sq, dq, sq, tp, fp, fn


def lit_f1(gt, pred):
    _, _, _, tp, fp, fn = lit_pq(gt, pred)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def lit_dice(gt, pred):
    a, b = gt > 0, pred > 0
    return 1.0 if not a.any() and not b.any() else 2 * (a & b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------------------------------------
# Random label maps: blocky or noisy, non-contiguous ids, assorted integer dtypes.

PALETTE = [1, 2, 3, 5, 7, 8, 200, 1000, 65535, 2**31 - 1]
DTYPES = [np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def _field(rng, ids, shape, block):
    values = np.array([0, *ids], dtype=np.int64)
    small = rng.integers(0, len(values), (-(-shape[0] // block), -(-shape[1] // block)))
    big = np.repeat(np.repeat(small, block, axis=0), block, axis=1)
    return values[big[: shape[0], : shape[1]]]


@st.composite
def label_pairs(draw):
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    ids = st.lists(
        st.sampled_from(PALETTE),
        min_size=int(draw(st.integers(0, 4)) != 4),
        max_size=8,
        unique=True,
    )
    ids_gt, ids_pred = draw(ids), draw(ids)
    block = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gt = _field(rng, ids_gt, shape, block)
    if draw(st.booleans()) and ids_gt and ids_pred:
        # A relabelled (possibly merged) copy of the GT with a few flipped pixels: high IoUs.
        lut = dict(zip([0, *ids_gt], [0, *rng.choice(ids_pred, len(ids_gt))], strict=True))
        pred = np.vectorize(lut.get, otypes=[np.int64])(gt)
        noise = rng.random(shape) < draw(st.sampled_from([0.0, 0.05, 0.2]))
        pred[noise] = _field(rng, ids_pred, shape, 1)[noise]
    else:
        pred = _field(rng, ids_pred, shape, block)
    top = max(int(gt.max()), int(pred.max()))
    dtype = draw(st.sampled_from([d for d in DTYPES if np.iinfo(d).max >= top]))
    return gt.astype(dtype), pred.astype(dtype)


@settings(max_examples=150, deadline=None)
@given(label_pairs())
def test_fast_metrics_equal_literal_references(pair):
    gt, pred = pair
    s = m.score(gt, pred)
    assert s.aji == pytest.approx(lit_aji(gt, pred), abs=1e-9)
    pq = lit_pq(gt, pred)
    assert (s.pq, s.dq, s.sq) == pytest.approx(pq[:3], abs=1e-9)
    assert (s.tp, s.fp, s.fn) == pq[3:]
    assert s.f1 == pytest.approx(lit_f1(gt, pred), abs=1e-9)
    assert s.dice == pytest.approx(lit_dice(gt, pred), abs=1e-9)
    assert (s.n_gt, s.n_pred) == (len(_masks(gt)), len(_masks(pred)))
    # Single-metric entry points agree with score().
    assert m.aji(gt, pred) == s.aji
    assert m.aji_plus(gt, pred) == s.aji_plus
    assert m.panoptic_quality(gt, pred) == (s.pq, s.dq, s.sq, s.tp, s.fp, s.fn)
    assert m.object_f1(gt, pred) == s.f1
    assert m.pixel_dice(gt, pred) == s.dice

    # AJI+: the fast pairing must be one-to-one, reach the optimal total IoU, and score it
    # exactly; it equals HoVer-Net's value whenever both solvers pick the same optimum.
    table = m.match_nuclei(gt, pred)
    fast_pairs = list(zip(table.unique_gt.tolist(), table.unique_pred.tolist(), strict=True))
    assert len(set(table.unique_gt.tolist())) == len(fast_pairs)
    assert len(set(table.unique_pred.tolist())) == len(fast_pairs)
    ref_pairs, ref_total = lit_hungarian(gt, pred)
    assert float(table.unique_iou.sum()) == pytest.approx(ref_total, abs=1e-9)
    assert s.aji_plus == pytest.approx(lit_aji_given(gt, pred, fast_pairs), abs=1e-9)
    if sorted(fast_pairs) == sorted(ref_pairs):
        assert s.aji_plus == pytest.approx(lit_aji_given(gt, pred, ref_pairs), abs=1e-9)

    # The benchmark's packaged reference agrees with this file's literal one.
    assert pkg_ref.reference_aji(gt, pred) == pytest.approx(s.aji, abs=1e-9)
    assert pkg_ref.reference_aji_plus(gt, pred) == pytest.approx(
        lit_aji_given(gt, pred, ref_pairs), abs=1e-9
    )
    assert pkg_ref.reference_panoptic_quality(gt, pred) == pytest.approx(pq, abs=1e-9)
    assert pkg_ref.reference_pixel_dice(gt, pred) == pytest.approx(s.dice, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(label_pairs())
def test_match_table_best_partners_are_literal(pair):
    gt, pred = pair
    gm, pm, inter, union = _pairs(gt, pred)
    table = m.match_nuclei(gt, pred)
    assert table.gt_ids.tolist() == sorted(gm)
    assert table.pred_ids.tolist() == sorted(pm)
    for g, best, iou, n in zip(
        table.gt_ids, table.gt_best_pred, table.gt_best_iou, table.gt_n_overlaps, strict=True
    ):
        over = [p for p in sorted(pm) if inter[g, p] > 0]
        assert n == len(over)
        want = max(over, key=lambda p: (inter[g, p] / union[g, p], -p)) if over else 0
        assert best == want
        assert iou == (inter[g, want] / union[g, want] if over else 0.0)
    for p, best in zip(table.pred_ids, table.pred_best_gt, strict=True):
        over = [g for g in sorted(gm) if inter[g, p] > 0]
        assert best == (max(over, key=lambda g: (inter[g, p] / union[g, p], -g)) if over else 0)
    c = table.contingency
    keys = zip(c.pair_gt_ids.tolist(), c.pair_pred_ids.tolist(), strict=True)
    assert dict(zip(keys, c.intersections.tolist(), strict=True)) == {
        k: v for k, v in inter.items() if v > 0
    }


@pytest.mark.parametrize("block_rows", [1, 16, 128])
def test_max_iou_pairing_is_optimal_whatever_the_solver_blocks(monkeypatch, block_rows):
    monkeypatch.setattr(contingency_module, "_LSA_BLOCK", block_rows)
    rng = np.random.default_rng(block_rows)
    for _ in range(4):
        # Rows of 5x5 nuclei; each predicted row is shifted right, chaining every row into one
        # overlap component of ~8 GT x ~8 predictions, so the solver blocks matter.
        gt = np.zeros((48, 48), dtype=np.int32)
        pred = np.zeros_like(gt)
        for i in range(8):
            shift = int(rng.integers(1, 5))
            for j in range(8):
                if rng.random() < 0.9:
                    gt[6 * i : 6 * i + 5, 6 * j : 6 * j + 5] = 1 + 8 * i + j
                width = int(rng.integers(4, 7))
                pred[6 * i : 6 * i + 5, 6 * j + shift : 6 * j + shift + width] = 100 + 8 * i + j
        table = m.match_nuclei(gt, pred)
        _, total = lit_hungarian(gt, pred)
        assert float(table.unique_iou.sum()) == pytest.approx(total, abs=1e-9)
        assert len(set(table.unique_gt.tolist())) == len(table.unique_gt)
        assert len(set(table.unique_pred.tolist())) == len(table.unique_pred)


# ---------------------------------------------------------------------------------------------
# Edge cases and documented conventions.

ALL_SCORES = ("aji", "aji_plus", "pq", "dq", "sq", "f1", "dice")


def _two_nuclei():
    gt = np.zeros((10, 10), dtype=np.int32)
    gt[1:4, 1:4] = 1
    gt[6:9, 5:9] = 2
    return gt


def test_both_empty_scores_one():
    for shape in [(8, 8), (0, 0)]:
        s = m.score(np.zeros(shape, np.int32), np.zeros(shape, np.uint16))
        assert all(getattr(s, name) == 1.0 for name in ALL_SCORES)
        assert (s.tp, s.fp, s.fn, s.n_gt, s.n_pred) == (0, 0, 0, 0, 0)


def test_empty_gt_scores_zero():
    s = m.score(np.zeros((10, 10), np.int32), _two_nuclei())
    assert all(getattr(s, name) == 0.0 for name in ALL_SCORES)
    assert (s.tp, s.fp, s.fn) == (0, 2, 0)


def test_empty_prediction_scores_zero():
    s = m.score(_two_nuclei(), np.zeros((10, 10), np.int32))
    assert all(getattr(s, name) == 0.0 for name in ALL_SCORES)
    assert (s.tp, s.fp, s.fn) == (0, 0, 2)


def test_perfect_prediction_with_other_noncontiguous_ids():
    gt = _two_nuclei()
    gt[0, 9] = 3
    pred = np.select([gt == 1, gt == 2, gt == 3], [7, 65535, 1000]).astype(np.uint16)
    s = m.score(gt, pred)
    assert all(getattr(s, name) == 1.0 for name in ALL_SCORES)
    c = m.contingency(gt, pred)
    assert c.pred_ids.tolist() == [7, 1000, 65535]
    assert c.pred_areas.tolist() == [9, 1, 12]


def test_ids_beyond_int64_keep_their_value():
    gt = _two_nuclei().astype(np.uint64) * np.uint64(2**62 + 1)  # ids 2**62 + 1, 2**63 + 2
    pred = gt.copy()
    pred[gt == 2**62 + 1] = 2**64 - 1
    assert m.score(gt, pred).aji == 1.0
    table = m.match_nuclei(gt, pred)
    assert table.gt_ids.tolist() == [2**62 + 1, 2**63 + 2]
    assert table.gt_best_pred.tolist() == [2**64 - 1, 2**63 + 2]
    assert table.gt_best_iou.tolist() == [1.0, 1.0]


def test_giant_segment_penalised_by_aji_not_like_aji_plus():
    gt = np.zeros((20, 20), dtype=np.int32)
    for k, (r, c) in enumerate([(2, 2), (2, 12), (12, 2), (12, 12)], start=1):
        gt[r : r + 5, c : c + 5] = k  # four 25-pixel nuclei
    pred = np.zeros_like(gt)
    pred[1:19, 1:19] = 9  # one 324-pixel segment over all of them
    # AJI: every nucleus picks the giant segment, whose pixels enter the union four times.
    assert m.aji(gt, pred) == pytest.approx(100 / (4 * 324))
    # AJI+: the segment serves one nucleus; the other three add only their own area.
    assert m.aji_plus(gt, pred) == pytest.approx(25 / (324 + 75))
    assert m.panoptic_quality(gt, pred).tp == 0


def test_aji_tie_goes_to_lowest_prediction_id():
    gt = np.zeros((4, 4), dtype=np.int32)
    gt[:, :2] = 5
    pred = np.zeros_like(gt)
    pred[:2, :2] = 9
    pred[2:, :2] = 4
    table = m.match_nuclei(gt, pred)
    assert table.gt_best_pred.tolist() == [4]
    assert m.aji(gt, pred) == pytest.approx(4 / 12)  # union 8, plus 4 unused pixels of 9


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeMismatchError, match=r"\(4, 5\).*\(5, 4\)"):
        m.score(np.zeros((4, 5), np.int32), np.zeros((5, 4), np.int32))
    assert issubclass(ShapeMismatchError, NucsegError)


@pytest.mark.parametrize(
    "bad", [np.zeros((3, 3), bool), np.zeros((3, 3), np.float32), -np.ones((3, 3), np.int8)]
)
def test_bad_label_maps_raise(bad):
    with pytest.raises(AnnotationError):
        m.aji(bad, np.zeros((3, 3), np.int32))
    with pytest.raises(AnnotationError):
        m.aji(np.zeros((3, 3), np.int32), bad)


def test_match_table_statuses():
    gt = _two_nuclei()
    gt[0, 9] = 3  # a one-pixel nucleus nothing touches
    pred = np.zeros_like(gt)
    pred[1:4, 1:4] = 10  # perfect match of nucleus 1
    pred[6:9, 5:7] = 11  # nucleus 2 split into two halves
    pred[6:9, 7:9] = 12
    pred[0, 0] = 13  # false detection
    table = m.match_nuclei(gt, pred)
    assert table.unmatched_gt().tolist() == [2, 3]
    assert table.unmatched_gt(0.0).tolist() == [3]
    assert table.unmatched_pred().tolist() == [11, 12, 13]
    assert table.unmatched_pred(0.0).tolist() == [13]
    assert table.gt_n_overlaps.tolist() == [1, 2, 0]
    gt_frame, pred_frame = table.to_frames()
    assert list(gt_frame.columns) == ["gt_id", "area", "best_pred", "iou", "n_overlaps"]
    assert pred_frame["best_gt"].tolist() == [1, 2, 2, 0]


def test_score_table_and_summarize():
    gt = _two_nuclei()
    empty = np.zeros_like(gt)
    df = m.score_table([("a", gt, gt), ("b", gt, empty)])
    assert df["image_id"].tolist() == ["a", "b"]
    assert df["aji"].tolist() == [1.0, 0.0]
    summary = m.summarize(df)
    assert isinstance(summary, pd.Series)
    assert summary["aji"] == 0.5 and summary["fn"] == 1.0
    assert "image_id" not in summary.index
    assert list(m.score(gt, gt).as_dict()) == list(df.columns[1:])
    assert m.score_table([]).empty
