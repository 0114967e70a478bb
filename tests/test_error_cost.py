import numpy as np
import pandas as pd
import pytest
from status_scene import status_scene

from nucseg.error_cost import (
    REPAIRABLE,
    aji_cost_table,
    nucleus_like,
    predicted_nuclei_table,
    repair_errors,
)
from nucseg.metrics import aji
from nucseg.taxonomy import classify_errors


def _scene():
    _, gt, _, merge = status_scene()
    return gt, merge


def test_each_repair_fixes_its_own_kind_only():
    gt, pred = _scene()
    t = classify_errors(gt, pred)
    no_false = repair_errors(gt, pred, t, "false")
    assert 9 not in no_false and (no_false[pred == 7] == 7).all()
    found = repair_errors(gt, pred, t, "missed")
    assert len(np.unique(found[gt == 3])) == 1 and found[30, 10] not in (0, 7, 9)
    assert (found[pred == 9] == 9).all()
    unmerged = repair_errors(gt, pred, t, "merged")
    assert 7 not in unmerged and unmerged[10, 10] != unmerged[10, 25]
    assert (unmerged[10, 16:20] == 0).all()  # the merged prediction's bridge is gone too
    assert (repair_errors(gt, pred, t, "split") == pred).all()  # nothing split here
    assert (pred == _scene()[1]).all()  # input untouched
    all_fixed = pred
    for status in REPAIRABLE:
        all_fixed = repair_errors(gt, all_fixed, classify_errors(gt, all_fixed), status)
    assert aji(gt, all_fixed) == pytest.approx(1.0)


def test_a_split_nucleus_is_repaired_and_scores_one():
    gt, _ = _scene()
    pred = gt.copy()
    pred[5:15, 10:15] = 8  # nucleus 1 in two halves
    t = classify_errors(gt, pred)
    assert aji(gt, repair_errors(gt, pred, t, "split")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="status"):
        repair_errors(gt, pred, t, "matched")


def test_the_cost_table_gives_the_gain_of_each_repair():
    gt, pred = _scene()
    table = aji_cost_table([("a", gt, pred), ("b", gt, gt)], progress=False)
    assert list(table.image_id) == ["a", "b"]
    assert table.loc[1, [f"gain_{s}" for s in REPAIRABLE]].abs().max() == 0  # perfect: no gain
    a = table.loc[0]
    assert a.aji == pytest.approx(aji(gt, pred))
    assert a.gain_false > 0 and a.gain_missed > 0 and a.gain_merged > 0 and a.gain_split == 0


def test_false_detections_are_described_and_judged_against_the_matched_ones():
    gt, pred = _scene()
    image = np.full((40, 50, 3), 230, np.uint8)
    image[gt > 0] = (60, 40, 140)  # hematoxylin-dark nuclei
    pred = pred.copy()
    pred[5:15, 5:30] = 0
    pred[gt == 1], pred[gt == 2] = 1, 2  # two matched
    pred[25:35, 20:30] = 11  # a false detection on dark stain, a false one on pale background
    image[25:35, 20:30] = (60, 40, 140)
    table = predicted_nuclei_table(image, gt, pred)
    assert list(table.pred_id) == [1, 2, 9, 11]
    assert list(table.status) == ["matched", "matched", "false", "false"]
    assert table.area.tolist() == [100, 100, 100, 100]
    assert table.loc[0, ["row", "col"]].tolist() == pytest.approx([9.5, 9.5])
    like = nucleus_like(table)
    assert like.tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="no prediction has status"):
        nucleus_like(pd.DataFrame({"status": ["false"], "area": [1], "hematoxylin": [0.1]}))
