import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from nucseg.data.targets import (
    class_balance,
    distance_target,
    three_class_target,
    unet_weight_map,
)


def two_touching_squares():
    labels = np.zeros((40, 50), np.int32)
    labels[10:20, 10:20] = 1
    labels[10:20, 20:30] = 2
    return labels


def random_disks(shape, n, seed, radius=(3, 7)):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        centre = tuple(int(rng.integers(0, s)) for s in shape)
        rr, cc = disk(centre, int(rng.integers(*radius)), shape=shape)
        labels[rr, cc] = i
    return labels


def brute_force_weight_map(labels, w0, sigma, class_weights):
    ids = [i for i in np.unique(labels) if i]
    dists = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    dists.sort(axis=0)
    d1, d2 = dists[0], dists[1]
    fg = labels > 0
    wc = np.where(fg, class_weights[1], class_weights[0])
    return wc + np.where(fg, 0.0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))


def test_three_class_touching_squares_have_boundary_on_both_sides():
    target = three_class_target(two_touching_squares(), boundary_width=2)
    assert target.dtype == np.uint8
    assert set(np.unique(target)) == {0, 1, 2}
    # contact line between columns 19 (id 1) and 20 (id 2): two boundary pixels each side
    assert (target[12:18, 18:22] == 2).all()
    assert target[15, 15] == 1 and target[15, 25] == 1
    assert target[15, 17] == 1 and target[15, 22] == 1
    assert (target[0] == 0).all()


def test_three_class_width_one_matches_find_boundaries():
    labels = random_disks((64, 64), 12, seed=1)
    target = three_class_target(labels, boundary_width=1)
    expected = np.where(labels > 0, 1, 0)
    expected[find_boundaries(labels, connectivity=1, mode="inner")] = 2
    np.testing.assert_array_equal(target, expected)


def test_three_class_wider_boundary_grows_inwards_and_image_border_is_not_boundary():
    labels = np.zeros((20, 20), np.int32)
    labels[0:10, 0:10] = 3  # touches the top-left image corner
    thin = three_class_target(labels, boundary_width=1)
    wide = three_class_target(labels, boundary_width=3)
    assert (wide == 2).sum() > (thin == 2).sum()
    assert ((thin == 2) <= (wide == 2)).all()
    assert thin[0, 0] == 1 and wide[0, 0] == 1  # image border is not a boundary
    assert wide[9, 5] == 2 and wide[7, 5] == 2 and wide[6, 5] == 1


@pytest.mark.parametrize("bad", [np.zeros((4, 4), float), np.zeros((2, 4, 4), np.int32)])
def test_three_class_rejects_bad_maps(bad):
    with pytest.raises(ValueError):
        three_class_target(bad)


def test_three_class_rejects_zero_width():
    with pytest.raises(ValueError, match="boundary_width"):
        three_class_target(two_touching_squares(), boundary_width=0)


def test_weight_map_peaks_in_gap_between_close_nuclei():
    labels = np.zeros((60, 80), np.int32)
    rr, cc = disk((30, 20), 8)
    labels[rr, cc] = 1
    rr, cc = disk((30, 39), 8)  # gap: columns 28..31 on row 30
    labels[rr, cc] = 2
    rr, cc = disk((30, 70), 5)
    labels[rr, cc] = 3
    weights = unet_weight_map(labels, w0=10.0, sigma=5.0, class_weights=(1.0, 1.0))
    assert weights.dtype == np.float32 and weights.shape == labels.shape
    y, x = np.unravel_index(np.argmax(weights), weights.shape)
    assert labels[y, x] == 0 and 28 <= x <= 31 and abs(y - 30) <= 8
    # (30, 29): 2 px from nucleus 1, 3 px from nucleus 2
    assert weights[30, 29] == pytest.approx(1.0 + 10.0 * math.exp(-(5**2) / 50), abs=1e-4)
    assert weights[30, 55] < 1.01  # wide gap between nuclei 2 and 3
    assert (weights[labels > 0] == 1.0).all()
    assert weights[0, 0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("sigma", [3.0, 5.0])
def test_weight_map_matches_brute_force(sigma):
    labels = random_disks((72, 64), 14, seed=2)
    tol = 1e-4
    fast = unet_weight_map(labels, w0=10.0, sigma=sigma, class_weights=(0.5, 2.0), tol=tol)
    slow = brute_force_weight_map(labels, 10.0, sigma, (0.5, 2.0))
    assert np.abs(fast - slow).max() <= 10.0 * tol + 1e-4


def test_weight_map_default_class_weights_balance_classes():
    labels = random_disks((64, 64), 8, seed=3)
    weights = unet_weight_map(labels, w0=0.0)
    fg = labels > 0
    assert weights[fg].sum() == pytest.approx(weights[~fg].sum(), rel=1e-5)
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)


def test_weight_map_edge_cases():
    empty = np.zeros((16, 16), np.int32)
    np.testing.assert_array_equal(unet_weight_map(empty), np.ones((16, 16), np.float32))
    single = empty.copy()
    single[4:8, 4:8] = 5  # no second nucleus -> no border term
    w = unet_weight_map(single, class_weights=(1.0, 3.0))
    np.testing.assert_allclose(w, np.where(single > 0, 3.0, 1.0))
    with pytest.raises(ValueError):
        unet_weight_map(single, sigma=0)
    with pytest.raises(ValueError):
        unet_weight_map(single, class_weights=(1.0, 2.0, 3.0))


def test_weight_map_is_fast_on_monuseg_sized_map():
    labels = np.zeros((1000, 1000), np.int32)
    rng = np.random.default_rng(0)
    ys, xs = np.meshgrid(np.arange(18, 1000, 37), np.arange(18, 1000, 37), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], 1)[:700] + rng.integers(-4, 5, (700, 2))
    for i, (y, x) in enumerate(centres, start=1):
        rr, cc = disk((y, x), int(rng.integers(7, 13)), shape=labels.shape)
        labels[rr, cc] = i
    assert len(np.unique(labels)) > 650
    start = time.perf_counter()
    unet_weight_map(labels)
    assert time.perf_counter() - start < 3.0  # ~0.3 s alone; slack for a shared machine


@dataclass
class _Item:
    instances: np.ndarray


def test_class_balance_sums_to_one_and_accepts_samples():
    labels = two_touching_squares()
    fractions = class_balance([labels, _Item(labels)])
    assert set(fractions) == {"bg", "inside", "boundary"}
    assert sum(fractions.values()) == pytest.approx(1.0)
    target = three_class_target(labels)
    assert fractions["boundary"] == pytest.approx((target == 2).mean())
    assert class_balance([]) == {"bg": 0.0, "inside": 0.0, "boundary": 0.0}


def test_distance_target_peaks_at_each_centre_and_dips_where_nuclei_touch():
    labels = two_touching_squares()
    target = distance_target(labels)
    assert target.dtype == np.float32 and target.shape == labels.shape
    assert (target[labels == 0] == 0).all() and (target[labels > 0] > 0).all()
    for label in (1, 2):  # normalised per nucleus
        assert target[labels == label].max() == pytest.approx(1.0)
    # Each square's own distance: the contact columns are outline pixels, the centres peaks.
    assert target[15, 19] == target[15, 20] == pytest.approx(0.2)
    assert target[15, 14] == pytest.approx(1.0) and target[15, 25] == pytest.approx(1.0)


def test_distance_target_does_not_treat_the_image_border_as_an_outline():
    labels = np.zeros((20, 20), np.int32)
    labels[:10, 5:15] = 1  # cut by the top border
    target = distance_target(labels)
    assert target[0].max() == pytest.approx(1.0)  # deepest where the crop cut it
    assert target[9, 10] < target[0, 10]


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 4)), -np.ones((4, 4), int), np.ones((4, 4))])
def test_distance_target_rejects_bad_maps(bad):
    with pytest.raises(ValueError):
        distance_target(bad)
