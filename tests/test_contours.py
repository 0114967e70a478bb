import numpy as np
import pytest
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from nucseg.contours import (
    background_objects,
    boundary_recall,
    contour_closure,
    f1_at_iou,
    map_quality_table,
    raw_instances,
)
from nucseg.errors import ShapeMismatchError


def _two_nuclei():
    gt = np.zeros((60, 80), np.int32)
    gt[disk((30, 25), 10, shape=gt.shape)] = 1
    gt[disk((30, 55), 10, shape=gt.shape)] = 2
    return gt


def _probabilities(gt, boundary):
    classes = np.where(boundary, 2, np.where(gt > 0, 1, 0))
    return np.eye(3, dtype=np.float32)[classes].transpose(2, 0, 1)


def test_a_full_ring_is_recalled_and_closed():
    gt = _two_nuclei()
    ring = find_boundaries(gt, mode="inner")
    assert boundary_recall(gt, ring) == 1.0
    assert contour_closure(gt, ring) == (2, 0)


def test_a_gap_in_the_ring_opens_the_contour_and_lowers_recall():
    gt = _two_nuclei()
    ring = find_boundaries(gt, mode="inner")
    ring[:, 10:25] = False  # cut the left nucleus's ring on its left half
    assert contour_closure(gt, ring) == (1, 1)
    assert 0.5 < boundary_recall(gt, ring) < 1.0
    assert boundary_recall(gt, np.zeros_like(ring)) == 0.0
    assert np.isnan(boundary_recall(np.zeros_like(gt), ring))


def test_recall_tolerates_a_boundary_off_by_the_tolerance():
    gt = _two_nuclei()
    shifted = np.roll(find_boundaries(gt, mode="inner"), 2, axis=1)
    assert boundary_recall(gt, shifted, tolerance=2) == 1.0
    assert boundary_recall(gt, shifted, tolerance=0.5) < 0.5


def test_nuclei_cut_by_the_border_are_left_out():
    gt = np.zeros((40, 40), np.int32)
    gt[disk((20, 2), 8, shape=gt.shape)] = 1
    assert contour_closure(gt, find_boundaries(gt, mode="inner")) == (0, 0)


def test_background_objects_count_only_predictions_off_the_nuclei():
    gt = _two_nuclei()
    pred = gt.copy()
    pred[2:6, 2:7] = 3  # 20 pixels of background noise
    pred[45:50, 20:30] = 4  # 50 pixels below nucleus 1
    assert background_objects(gt, pred) == (2, 70)
    assert background_objects(gt, gt) == (0, 0)


def test_f1_falls_at_strict_thresholds_when_outlines_are_off():
    gt = _two_nuclei()
    assert f1_at_iou(gt, gt) == {0.5: 1.0, 0.6: 1.0, 0.7: 1.0, 0.8: 1.0, 0.9: 1.0}
    shifted = np.roll(gt, 3, axis=1)
    scores = f1_at_iou(gt, shifted)
    assert scores[0.5] == 1.0 and scores[0.9] == 0.0
    assert f1_at_iou(np.zeros_like(gt), np.zeros_like(gt))[0.7] == 1.0
    with pytest.raises(ValueError, match=">= 0.5"):
        f1_at_iou(gt, gt, thresholds=(0.3,))


def test_raw_instances_are_inside_pixels_kept_apart_by_the_boundary():
    gt = np.zeros((30, 40), np.int32)
    gt[5:25, 5:20], gt[5:25, 20:35] = 1, 2  # touching
    probabilities = _probabilities(gt, find_boundaries(gt, mode="inner"))
    raw = raw_instances(probabilities)
    assert raw.max() == 2 and raw.dtype == np.int32
    no_line = _probabilities(gt, np.zeros_like(gt, bool))
    assert raw_instances(no_line).max() == 1  # without a boundary they merge


def test_the_table_has_one_row_per_image_and_checks_shapes():
    gt = _two_nuclei()
    probabilities = _probabilities(gt, find_boundaries(gt, mode="inner"))
    table = map_quality_table([("a", gt, probabilities, gt)])
    row = table.iloc[0]
    assert row.boundary_recall == 1.0 and row.open_fraction == 0.0 and row["f1@0.9"] == 1.0
    assert row.raw_background_objects == 0 and row.post_background_area == 0.0
    with pytest.raises(ShapeMismatchError):
        map_quality_table([("a", gt, probabilities[:, :10], gt)])


def test_a_distance_channel_is_not_taken_for_a_class():
    from nucseg.contours import predicted_boundary

    gt = np.zeros((30, 40), np.int32)
    gt[5:25, 5:20], gt[5:25, 20:35] = 1, 2
    probabilities = _probabilities(gt, find_boundaries(gt, mode="inner"))
    with_distance = np.concatenate([probabilities, np.full((1, 30, 40), 2.0, np.float32)])
    np.testing.assert_array_equal(raw_instances(with_distance), raw_instances(probabilities))
    np.testing.assert_array_equal(
        predicted_boundary(with_distance), predicted_boundary(probabilities)
    )
