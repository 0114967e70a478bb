"""Tests of nucleus shapes: harmonic boundaries, solidity, reach, rasterisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull
from skimage.measure import regionprops

from nucseg.data.shapes import (
    BOUNDARY_GRID,
    REACH_DIRECTIONS,
    boundary_table,
    nucleus_footprints,
    profile_area,
    profile_solidity,
    random_boundaries,
    reach_table,
    render_instances,
    scale_for_solidity,
    solidity_table,
)

HARMONICS = (3, 4, 5, 6)


def _exact_solidity(edges: np.ndarray) -> float:
    psi = BOUNDARY_GRID[:-1]
    points = np.c_[edges[:-1] * np.cos(psi), edges[:-1] * np.sin(psi)]
    x, y = points.T
    area = 0.5 * abs((x * np.roll(y, -1) - y * np.roll(x, -1)).sum())
    return area / ConvexHull(points).volume  # "volume" is the area in 2-D


def test_random_boundaries_are_deterministic_and_scaled_by_order():
    amps, phases = random_boundaries(np.random.default_rng(1), 50, HARMONICS, 0.1, (1.0, 1.0))
    again, _ = random_boundaries(np.random.default_rng(1), 50, HARMONICS, 0.1, (1.0, 1.0))
    np.testing.assert_array_equal(amps, again)
    assert amps.shape == phases.shape == (50, len(HARMONICS))
    assert (amps >= 0).all() and (amps <= 0.1 / np.asarray(HARMONICS)).all()
    assert ((phases >= 0) & (phases < 2 * np.pi)).all()


def test_unperturbed_boundary_is_a_convex_circle():
    edges = boundary_table(np.zeros((2, 3)), np.zeros((2, 3)), (2, 3, 4))
    np.testing.assert_array_equal(edges, 1.0)
    np.testing.assert_allclose(profile_solidity(edges), 1.0)
    # The 72-gon inscribed in the unit circle.
    np.testing.assert_allclose(profile_area(edges), 36 * np.sin(2 * np.pi / 72))


def test_profile_solidity_matches_an_exact_convex_hull():
    amps, phases = random_boundaries(np.random.default_rng(2), 40, HARMONICS, 0.1, (1.0, 1.0))
    edges = boundary_table(amps * np.linspace(0.5, 9.0, 40)[:, None], phases, HARMONICS)
    exact = np.array([_exact_solidity(e) for e in edges])
    assert exact.min() < 0.9  # the test covers clearly concave boundaries too
    np.testing.assert_allclose(profile_solidity(edges), exact, atol=0.003)


def test_scale_for_solidity_reaches_the_target():
    amps, phases, scales, table = solidity_table(HARMONICS)
    assert not table.flags.writeable  # cached: callers must not change it
    assert (np.diff(table, axis=1) <= 0).all() and (table[:, 0] == 1).all()
    target = np.linspace(0.8, 0.99, len(amps))
    scale = scale_for_solidity(table, scales, target)
    reached = profile_solidity(boundary_table(amps * scale[:, None], phases, HARMONICS))
    # The table is coarse (13 scales): linear interpolation lands close to the target...
    reachable = table[:, -1] <= target
    assert reachable.mean() > 0.9
    assert np.abs(reached - target)[reachable].max() < 0.01
    # ...and boundaries that stay more solid than the target at the largest scale keep it.
    np.testing.assert_array_equal(scale[~reachable], scales[~reachable, -1])
    convex = scale_for_solidity(table, scales, np.ones(len(amps)))
    # The most irregular boundary that is still convex (0 where the first step is concave).
    assert (convex > 0).mean() > 0.8
    edges = boundary_table(amps * convex[:, None], phases, HARMONICS)
    assert profile_solidity(edges).min() > 0.995


def test_reach_of_an_ellipse_follows_its_axes():
    radius, ratio = 10.0, 4.0  # semi-axes 20 and 5
    for angle in (0.0, np.pi / 3):
        reach = reach_table(np.array([radius]), np.array([ratio]), np.array([angle]),
                            np.ones((1, BOUNDARY_GRID.size)))[0]  # fmt: skip
        assert reach.shape == (REACH_DIRECTIONS,)
        along = int(round(angle / (2 * np.pi) * REACH_DIRECTIONS))
        assert reach[along] == pytest.approx(20.0)
        assert reach[(along + REACH_DIRECTIONS // 4) % REACH_DIRECTIONS] == pytest.approx(5.0)
        assert reach.min() == pytest.approx(5.0) and reach.max() == pytest.approx(20.0)


def test_rendered_ellipse_has_its_area_and_orientation():
    """Angles count from the column axis; skimage's orientation from the row axis."""
    for angle in (0.2, 1.0, 2.5):
        labels = render_instances((80, 80), np.array([[40.3, 39.6]]), np.array([12.0]),
                                  np.array([3.0]), np.array([angle]), np.ones((1, 73)))  # fmt: skip
        (region,) = regionprops(labels)
        assert region.area == pytest.approx(np.pi * 144, rel=0.02)
        assert region.axis_minor_length / region.axis_major_length == pytest.approx(1 / 3, abs=0.02)
        diff = np.angle(np.exp(2j * (np.pi / 2 - region.orientation - angle))) / 2
        assert abs(diff) < 0.02


def test_overlapping_nuclei_later_on_top_or_split_by_depth():
    centres = np.array([[30.0, 24.0], [30.0, 36.0]])  # two discs of radius 8, 12 apart
    args = (centres, np.array([8.0, 8.0]), np.ones(2), np.zeros(2), np.ones((2, 73)))
    last = render_instances((60, 60), *args, overlap="last")
    deeper = render_instances((60, 60), *args, overlap="deeper")
    assert (last > 0).sum() == (deeper > 0).sum()  # the same union
    assert (last == 2).sum() > (last == 1).sum()  # the later disc covers the overlap
    # Split where the depths are equal: the midpoint column 30 (a tie keeps the first).
    both = np.zeros((60, 60), bool)
    both[np.hypot(*np.mgrid[:60, :60] - centres[0][:, None, None]) < 8] = True
    both &= np.hypot(*np.mgrid[:60, :60] - centres[1][:, None, None]) < 8
    cols = np.nonzero(both)[1]
    assert both.any() and (deeper[both] == np.where(cols <= 30, 1, 2)).all()
    with pytest.raises(ValueError, match="overlap"):
        render_instances((60, 60), *args, overlap="first")


def test_footprints_are_clipped_to_the_image_and_ids_follow_order():
    centres = np.array([[2.0, 2.0], [50.0, 58.0], [30.0, 30.0]])
    args = (np.array([6.0, 6.0, 6.0]), np.ones(3), np.zeros(3), np.ones((3, 73)))
    boxes = [fp.box for fp in nucleus_footprints((60, 60), centres, *args)]
    assert boxes[0][0].start == 0 and boxes[1][1].stop == 60
    labels = render_instances((60, 60), centres, *args)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1, 2, 3}
    assert labels[30, 30] == 3 and labels[2, 2] == 1
