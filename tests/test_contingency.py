import numpy as np

from nucseg.contingency import contingency


def test_table_of_a_small_image():
    gt = np.array([[1, 1, 0, 0], [1, 1, 0, 5], [0, 0, 5, 5]])
    pred = np.array([[7, 7, 7, 0], [0, 0, 0, 0], [0, 0, 9, 9]])
    c = contingency(gt, pred)
    assert list(c.gt_ids) == [1, 5] and list(c.gt_areas) == [4, 3]
    assert list(c.pred_ids) == [7, 9] and list(c.pred_areas) == [3, 2]
    assert list(zip(c.pair_gt_ids, c.pair_pred_ids, c.intersections, strict=True)) == [
        (1, 7, 2),
        (5, 9, 2),
    ]
    np.testing.assert_allclose(c.unions, [5, 3])
    np.testing.assert_allclose(c.iou, [2 / 5, 2 / 3])
    assert c.n_gt == 2 and c.n_pred == 2 and c.n_pixels == 12


def test_empty_maps_give_empty_table():
    c = contingency(np.zeros((3, 3), int), np.zeros((3, 3), int))
    assert c.n_gt == c.n_pred == 0 and len(c.intersections) == 0
