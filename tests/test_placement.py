"""Tests of the shared nucleus placer: minimum separation (demo tiles), contact (random masks)."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg.data.placement import place_nuclei, smooth_field
from nucseg.data.shapes import boundary_table, random_boundaries, render_instances
from nucseg.data.stats import touching_ids

SIZE = 200


def _candidates(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    radii = rng.uniform(4.0, 9.0, n)
    ratios = rng.uniform(1.0, 2.5, n)
    angles = rng.uniform(0, np.pi, n)
    edges = boundary_table(*random_boundaries(rng, n, (3, 4, 5)), (3, 4, 5))
    return radii, ratios, angles, edges


def _contact(touching: float, seed: int = 0, n: int = 120, allowed=None, rotation=None):
    radii, ratios, angles, edges = _candidates(n + 20, seed)
    allowed = np.ones((SIZE, SIZE), bool) if allowed is None else allowed
    placed = place_nuclei(np.random.default_rng(seed), allowed, radii, n, clustering=0.5,
                          spread=20.0, shapes=(ratios, angles, edges), touching=touching,
                          rotation=rotation)  # fmt: skip
    i = placed.index
    labels = render_instances((SIZE, SIZE), placed.centres, radii[i], ratios[i],
                              angles[i] + placed.turns, edges[i])  # fmt: skip
    return placed, labels


def test_minimum_separation_mode_is_deterministic_and_keeps_centres_apart():
    radii = np.random.default_rng(0).uniform(4, 8, 400)
    allowed = np.ones((SIZE, SIZE), bool)
    allowed[:, :50] = False

    def run():
        return place_nuclei(np.random.default_rng(3), allowed, radii, 60, clustering=0.5,
                            spread=15.0, min_sep=(0.8, 0.9))  # fmt: skip

    placed, again = run(), run()
    np.testing.assert_array_equal(placed.centres, again.centres)
    assert len(placed.index) == 60 and len(set(placed.index.tolist())) == 60
    assert (placed.centres[:, 1] >= 50).all()  # only where allowed
    d = np.hypot(*(placed.centres[:, None] - placed.centres[None]).transpose(2, 0, 1))
    r = radii[placed.index]
    apart = d >= 0.8 * (r[:, None] + r[None]) - 1e-9
    assert apart[~np.eye(60, dtype=bool)].all()
    assert not placed.touching.any() and not placed.turns.any()


@pytest.mark.parametrize("touching", [0.2, 0.5])
def test_contact_mode_hits_the_touching_fraction_exactly_on_the_pixels(touching):
    placed, labels = _contact(touching)
    n = len(placed.index)
    assert n == 120 and labels.max() == n and len(np.unique(labels)) == n + 1
    rendered = np.zeros(n, bool)
    rendered[touching_ids(labels) - 1] = True
    # The placer checks contacts on the pixels, so its record is the drawn truth.
    np.testing.assert_array_equal(rendered, placed.touching)
    assert abs(rendered.mean() - touching) <= 0.03


def test_contact_mode_without_contacts_keeps_every_nucleus_apart():
    placed, labels = _contact(0.0, seed=1)
    assert len(placed.index) == 120
    assert touching_ids(labels).size == 0 and not placed.touching.any()


def test_contact_mode_respects_allowed_and_turns_by_rotation():
    allowed = np.zeros((SIZE, SIZE), bool)
    allowed[:, 100:] = True
    rotation = np.full((SIZE, SIZE), np.pi / 4)
    placed, _ = _contact(0.3, seed=2, n=60, allowed=allowed, rotation=rotation)
    assert (placed.centres[:, 1] >= 100).all()
    np.testing.assert_allclose(placed.turns, np.pi / 4)  # 9 steps of 5 degrees


def test_contact_mode_needs_shapes():
    with pytest.raises(ValueError, match="shapes"):
        place_nuclei(np.random.default_rng(0), np.ones((50, 50), bool), np.ones(5), 3,
                     clustering=0.5, spread=5.0, touching=0.3)  # fmt: skip


def test_smooth_field_is_standardised_smooth_and_seeded():
    field = smooth_field(np.random.default_rng(0), (300, 200), 20.0)
    assert field.shape == (300, 200)
    assert abs(field.mean()) < 1e-9 and field.std() == pytest.approx(1.0)
    # Neighbouring pixels of a field smoothed over 20 px are nearly equal.
    assert np.abs(np.diff(field, axis=0)).mean() < 0.1
    np.testing.assert_array_equal(field, smooth_field(np.random.default_rng(0), (300, 200), 20.0))
