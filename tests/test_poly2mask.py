"""MATLAB poly2mask semantics of nucseg.data.poly2mask (1-based vertices, 0-based arrays)."""

import numpy as np
import pytest
from skimage.draw import polygon as sk_polygon
from skimage.measure import points_in_poly

from nucseg.data.poly2mask import rasterise_polygons


def raster(polygons, shape):
    labels, _ = rasterise_polygons([np.asarray(p, float) for p in polygons], shape)
    return labels


def square(lo, hi):
    return [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]


# --- rasterisation semantics (MATLAB poly2mask on 1-based vertices, shifted to 0-based) ---


def test_documented_poly2mask_square():
    # MATLAB docs: poly2mask([4 10 10 4], [4 4 10 10], 12, 12) covers rows/cols 5..10
    # (1-based); vertices on pixel centres snap +0.1 so row/col 4 is left out. 0-based: 4..9.
    expected = np.zeros((12, 12), np.int32)
    expected[4:10, 4:10] = 1
    np.testing.assert_array_equal(raster([square(4, 10)], (12, 12)), expected)
    # edges on pixel borders (3.5, 10.5) cover 1-based 4..10 exactly, i.e. 0-based 3..9
    expected[3:10, 3:10] = 1
    np.testing.assert_array_equal(raster([square(3.5, 10.5)], (12, 12)), expected)


@pytest.mark.parametrize("reverse", [False, True])
def test_hand_derived_triangle(reverse):
    # Vertices (1,1), (5,1), (1,5) snap to (1.1,1.1), (5.1,1.1), (1.1,5.1): the hypotenuse
    # x + y = 6.2 runs along subpixel corners, and centres (c, r) with c, r >= 2 and
    # c + r <= 6 are inside (1-based). Shifted to 0-based: c, r >= 1 and c + r <= 4.
    tri = [(1, 1), (5, 1), (1, 5)]
    expected = np.zeros((6, 6), np.int32)
    for r, c in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)]:
        expected[r, c] = 1
    np.testing.assert_array_equal(raster([tri[::-1] if reverse else tri], (6, 6)), expected)


def test_subtract_one_convention():
    # a 1-based pixel-aligned box [0.5, 3.5] is MATLAB's pixels 1..3 = our 0..2, not 1..3
    labels = raster([square(0.5, 3.5)], (6, 6))
    assert labels[:3, :3].all() and labels.sum() == 9


def test_clipping_at_borders():
    expected = np.zeros((10, 10), np.int32)
    expected[:3, :3] = 1  # sticks out above/left
    np.testing.assert_array_equal(raster([square(-5.5, 3.5)], (10, 10)), expected)
    expected[:] = 0
    expected[7:, 7:] = 1  # sticks out below/right
    np.testing.assert_array_equal(raster([square(7.5, 20.5)], (10, 10)), expected)


def _dist_to_outline(px, py, xs, ys):
    ax, ay = xs, ys
    bx, by = np.roll(xs, -1), np.roll(ys, -1)
    dx, dy = bx - ax, by - ay
    t = ((px[:, None] - ax) * dx + (py[:, None] - ay) * dy) / (dx * dx + dy * dy)
    t = np.clip(t, 0, 1)
    return np.hypot(px[:, None] - ax - t * dx, py[:, None] - ay - t * dy).min(1)


def test_pixel_centre_rule_on_random_polygons():
    # Every pixel whose centre lies clearly inside/outside the polygon (more than 0.3 px
    # from its outline, i.e. beyond poly2mask's subpixel snapping) follows the centre rule;
    # skimage.draw.polygon (exact centre test) agrees except for a thin boundary band.
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = rng.integers(5, 40)
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(3, 9, n)
        xs, ys = 12 + radius * np.cos(theta), 12 + radius * np.sin(theta)  # 1-based
        labels = raster([np.c_[xs, ys]], (24, 24)) > 0
        rr, cc = np.mgrid[:24, :24]
        px, py = cc.ravel() + 1.0, rr.ravel() + 1.0
        inside = points_in_poly(np.c_[px, py], np.c_[xs, ys])
        clear = _dist_to_outline(px, py, xs, ys) > 0.3
        np.testing.assert_array_equal(labels.ravel()[clear], inside[clear])
        sk = np.zeros((24, 24), bool)
        sk[sk_polygon(ys - 1, xs - 1, (24, 24))] = True
        assert (sk != labels).sum() <= 0.08 * max(sk.sum(), 1) + 2
