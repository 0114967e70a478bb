import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nucseg.errors import ShapeMismatchError
from nucseg.metrics import panoptic_quality
from nucseg.taxonomy import (
    COUNT_KEYS,
    GT_STATUSES,
    PRED_STATUSES,
    classify_errors,
    taxonomy_table,
)


def _maps(shape=(40, 40)):
    return np.zeros(shape, np.int32), np.zeros(shape, np.int32)


def test_perfect_match():
    gt, pred = _maps()
    gt[5:15, 5:15] = 3
    pred[5:15, 6:15] = 8  # IoU 0.9
    t = classify_errors(gt, pred)
    assert t.gt_status_dict() == {3: "matched"}
    assert t.pred_status_dict() == {8: "matched"}
    assert t.gt_partner.tolist() == [8] and t.gt_iou[0] == pytest.approx(0.9)
    c = t.counts()
    assert c["n_matched"] == 1 and c["n_missed"] == c["n_false"] == 0


def test_merged_pair():
    gt, pred = _maps()
    gt[5:15, 5:15] = 1
    gt[5:15, 15:25] = 2
    pred[5:15, 5:25] = 7  # IoU 0.5 with each: not a match
    t = classify_errors(gt, pred)
    assert t.gt_status_dict() == {1: "merged", 2: "merged"}
    assert t.pred_status_of(7) == "merged"
    c = t.counts()
    assert (c["n_merge_events"], c["n_merged_gt"], c["n_merged_pred"]) == (1, 2, 1)
    assert t.merge_events.tolist() == [7]


def test_merge_that_still_matches_the_larger_nucleus():
    gt, pred = _maps()
    gt[5:25, 5:25] = 1  # 400 px
    gt[10:14, 25:29] = 2  # 16 px, swallowed
    pred[5:25, 5:29] = 5
    t = classify_errors(gt, pred)
    assert t.gt_status_dict() == {1: "matched", 2: "merged"}
    assert t.pred_status_of(5) == "matched"
    c = t.counts()
    assert (c["n_merge_events"], c["n_merged_gt"], c["n_merged_pred"]) == (1, 1, 0)


def test_split_nucleus():
    gt, pred = _maps()
    gt[5:25, 5:25] = 4
    pred[5:25, 5:15] = 1
    pred[5:25, 15:25] = 2
    t = classify_errors(gt, pred)
    assert t.gt_status_dict() == {4: "split"}
    assert t.pred_status_dict() == {1: "split", 2: "split"}
    c = t.counts()
    assert (c["n_split_events"], c["n_split_pred"]) == (1, 2)


def test_missed_nucleus_and_false_positive():
    gt, pred = _maps()
    gt[2:10, 2:10] = 1
    pred[30:38, 30:38] = 9
    pred[2:3, 2:3] = 4  # a speck inside the nucleus: IoU 1/64 < 0.1
    t = classify_errors(gt, pred)
    assert t.gt_status_of(1) == "missed"
    assert t.pred_status_dict() == {4: "false", 9: "false"}
    assert t.pred_partner.tolist() == [1, 0]
    c = t.counts()
    assert (c["n_missed"], c["n_false"], c["n_matched"]) == (1, 2, 0)


def test_poor_detection_is_other():
    gt, pred = _maps()
    gt[5:15, 5:15] = 1
    pred[5:15, 10:20] = 2  # IoU 50/150
    t = classify_errors(gt, pred)
    assert (t.gt_status_of(1), t.pred_status_of(2)) == ("other", "other")
    assert classify_errors(gt, pred, min_iou=0.4).gt_status_of(1) == "missed"


def test_status_lookup_errors_and_bad_params():
    gt, pred = _maps()
    gt[1:5, 1:5] = 1
    t = classify_errors(gt, pred)
    with pytest.raises(KeyError, match="42"):
        t.gt_status_of(42)
    with pytest.raises(ValueError, match="cover"):
        classify_errors(gt, pred, cover=0.3)
    with pytest.raises(ValueError, match="match_iou"):
        classify_errors(gt, pred, match_iou=0.4)
    with pytest.raises(ShapeMismatchError):
        classify_errors(gt, pred[:10])


def test_taxonomy_table_and_frames():
    gt, pred = _maps()
    gt[5:15, 5:15] = 1
    pred[5:15, 5:15] = 1
    table = taxonomy_table([("a", gt, pred), ("b", gt, np.zeros_like(gt))])
    assert list(table.columns) == ["image_id", *COUNT_KEYS]
    assert table["n_matched"].tolist() == [1, 0] and table["n_missed"].tolist() == [0, 1]
    gt_frame, pred_frame = classify_errors(gt, pred).to_frames()
    assert gt_frame.loc[0, "status"] == "matched" and pred_frame.loc[0, "area"] == 100
    empty = taxonomy_table([])
    assert isinstance(empty, pd.DataFrame) and empty.empty


# Blocky maps (upsampled 3x) give real merges and splits, not only pixel noise.
_small = hnp.arrays(np.int32, (6, 6), elements=st.integers(0, 5))


@settings(max_examples=150, deadline=None)
@given(_small, _small, st.sampled_from([0.5, 0.6, 0.9]), st.sampled_from([0.0, 0.1, 0.3]))
def test_every_nucleus_gets_exactly_one_status(g, p, cover, min_iou):
    gt = np.kron(g, np.ones((3, 3), np.int32))
    pred = np.kron(p, np.ones((3, 3), np.int32))
    t = classify_errors(gt, pred, cover=cover, min_iou=min_iou)
    assert t.gt_ids.tolist() == [i for i in np.unique(gt) if i]
    assert t.pred_ids.tolist() == [i for i in np.unique(pred) if i]
    assert len(t.gt_status) == len(t.gt_ids) and set(t.gt_status) <= set(GT_STATUSES)
    assert len(t.pred_status) == len(t.pred_ids) and set(t.pred_status) <= set(PRED_STATUSES)
    c = t.counts()
    gt_sum = c["n_matched"] + c["n_merged_gt"] + c["n_split_events"] + c["n_missed"]
    assert gt_sum + c["n_other_gt"] == c["n_gt"]
    pred_sum = c["n_matched"] + c["n_merged_pred"] + c["n_split_pred"] + c["n_false"]
    assert pred_sum + c["n_other_pred"] == c["n_pred"]
    assert c["n_matched"] == panoptic_quality(gt, pred).tp
    assert c["n_merge_events"] >= c["n_merged_pred"]
    # Matched partners are mutual; every merge event loses at least one GT nucleus.
    pred_of = dict(zip(t.gt_ids.tolist(), t.gt_partner.tolist(), strict=True))
    for pid, status, gid in zip(t.pred_ids, t.pred_status, t.pred_partner, strict=True):
        if status == "matched":
            assert t.gt_status_of(gid) == "matched" and pred_of[gid] == pid
    for pid in t.merge_events:
        inside = pred == pid
        covered = [g for g in t.gt_ids if (inside & (gt == g)).sum() >= cover * (gt == g).sum()]
        assert len(covered) >= 2
        assert any(t.gt_status_of(g) == "merged" for g in covered)
