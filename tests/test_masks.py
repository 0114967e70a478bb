"""Tests of random nucleus masks fitted to measured statistics (nucseg.synth.masks)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from skimage.draw import ellipse
from skimage.measure import regionprops

from nucseg.data.demo import make_tile
from nucseg.data.stats import touching_ids
from nucseg.errors import NucsegError
from nucseg.synth import masks
from nucseg.synth.masks import (
    QUANTILE_LEVELS,
    MaskStatistics,
    SynthError,
    compare_statistics,
    fit_mask_statistics,
    measure_nuclei,
    random_mask,
    random_masks,
    statistics_for,
)

SIZE = 256


@pytest.fixture(scope="module")
def demo_nuclei() -> pd.DataFrame:
    """Nuclei of 12 demo tiles, two pseudo-organs (their instance maps stand in for MoNuSeg)."""
    samples = [SimpleNamespace(image_id=f"{organ}-{seed}", split="train", organ=organ,
                               instances=make_tile(seed, SIZE, organ)[1])
               for organ in ("demo-a", "demo-b") for seed in range(6)]  # fmt: skip
    return measure_nuclei(samples)


@pytest.fixture(scope="module")
def demo_stats(demo_nuclei) -> dict[str, MaskStatistics]:
    return fit_mask_statistics(demo_nuclei)


def test_fit_gives_all_and_each_organ(demo_stats, demo_nuclei):
    assert set(demo_stats) == {"all", "demo-a", "demo-b"}
    a, everything = demo_stats["demo-a"], demo_stats["all"]
    assert a.organ == "demo-a" and a.n_images == 6 and everything.n_images == 12
    assert everything.n_nuclei == len(demo_nuclei)
    areas = demo_nuclei[demo_nuclei.organ == "demo-a"].area
    assert a.log_area_mean == pytest.approx(np.log(areas).mean())
    assert len(a.eccentricity_quantiles) == len(QUANTILE_LEVELS)
    assert sum(a.orientation_histogram) == pytest.approx(1.0)
    assert 0 < a.touching_fraction < 1 and a.density_mean > 0
    # Demo-b has smaller, denser nuclei than demo-a (see nucseg.data.demo).
    b = demo_stats["demo-b"]
    assert b.log_area_mean < a.log_area_mean and b.density_mean > a.density_mean


def test_statistics_round_trip_through_dicts_json_and_yaml(demo_stats):
    stats = demo_stats["demo-a"]
    data = stats.to_dict()
    assert all(isinstance(v, (str, int, float, list)) for v in data.values())
    assert MaskStatistics.from_dict(data) == stats
    assert MaskStatistics.from_dict(json.loads(json.dumps(data))) == stats
    assert MaskStatistics.from_dict(yaml.safe_load(yaml.safe_dump(data))) == stats


def test_malformed_statistics_raise_synth_errors(demo_stats):
    data = demo_stats["demo-a"].to_dict()
    with pytest.raises(SynthError, match=r"missing keys \['density_mean'\]"):
        MaskStatistics.from_dict({k: v for k, v in data.items() if k != "density_mean"})
    with pytest.raises(SynthError, match=r"unknown keys \['colour'\]"):
        MaskStatistics.from_dict({**data, "colour": 1})
    with pytest.raises(SynthError, match="solidity_quantiles needs 41"):
        MaskStatistics.from_dict({**data, "solidity_quantiles": [0.9, 0.95]})
    descending = data["eccentricity_quantiles"][::-1]
    with pytest.raises(SynthError, match="non-decreasing"):
        MaskStatistics.from_dict({**data, "eccentricity_quantiles": descending})
    with pytest.raises(SynthError, match="image_densities needs 6"):
        MaskStatistics.from_dict({**data, "image_densities": [100.0]})
    with pytest.raises(SynthError, match="mask statistics"):
        MaskStatistics.from_dict({**data, "log_area_residual_quantiles": ["a"] * 41})


def test_unknown_organ_names_the_known_ones(demo_stats):
    assert statistics_for(demo_stats, "demo-b") is demo_stats["demo-b"]
    known = r"unknown organ 'lung'; known: all, demo-a, demo-b"
    with pytest.raises(SynthError, match=known) as err:
        statistics_for(demo_stats, "lung")
    assert isinstance(err.value, NucsegError)


@pytest.mark.parametrize("size", [0, -5, (10, 0), (10,), 2.5, True, "big"])
def test_bad_sizes_and_counts_raise(demo_stats, size):
    with pytest.raises(SynthError, match="mask size"):
        random_mask(demo_stats["all"], size, 0)
    with pytest.raises(SynthError, match="mask size"):
        random_masks(demo_stats["all"], 2, size)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_mask_counts_raise(demo_stats, n):
    with pytest.raises(SynthError, match="number of masks"):
        random_masks(demo_stats["all"], n, 64)


def test_same_seed_same_mask_different_seeds_differ(demo_stats):
    stats = demo_stats["demo-a"]
    mask = random_mask(stats, SIZE, 7)
    np.testing.assert_array_equal(mask, random_mask(stats, SIZE, 7))
    np.testing.assert_array_equal(mask, random_mask(stats, SIZE, np.random.default_rng(7)))
    assert not np.array_equal(mask, random_mask(stats, SIZE, 8))
    first, second = random_masks(stats, 2, (100, 150), seed=3)
    assert first.shape == (100, 150) and not np.array_equal(first, second)
    np.testing.assert_array_equal(second, random_masks(stats, 2, (100, 150), seed=3)[1])


def test_masks_are_instance_maps_with_touching_nuclei(demo_stats):
    stats = demo_stats["demo-a"]
    mask = random_mask(stats, SIZE, 1)
    assert mask.dtype == np.int32 and mask.shape == (SIZE, SIZE)
    ids = np.unique(mask)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # 0 and 1..n, no gaps
    # The demo tiles touch a lot (about half the nuclei), so masks fitted to them do too.
    assert stats.touching_fraction > 0.3
    assert np.isin(ids[1:], touching_ids(mask)).mean() > 0.2


def test_no_touching_in_the_data_gives_almost_none(demo_stats):
    stats = dataclasses.replace(demo_stats["demo-b"], touching_fraction=0.0,
                                image_touching_fractions=(0.0,) * 6)  # fmt: skip
    masks_ = random_masks(stats, 4, SIZE, seed=0)
    fractions = [np.isin(np.arange(1, m.max() + 1), touching_ids(m)).mean() for m in masks_]
    # The per-mask target is jittered around 0 (and clipped), so a few may touch.
    assert max(fractions) < 0.06


@pytest.mark.parametrize("organ", ["demo-a", "all"])
def test_masks_reproduce_the_statistics_they_were_fitted_to(demo_stats, demo_nuclei, organ):
    stats = demo_stats[organ]
    real = demo_nuclei if organ == "all" else demo_nuclei[demo_nuclei.organ == organ]
    synthetic = measure_nuclei(random_masks(stats, 12, SIZE, seed=0))
    table = compare_statistics(real, synthetic).set_index("feature")
    assert table.loc["area", "ks_statistic"] < 0.15  # of log area, too
    assert table.loc["eccentricity", "ks_statistic"] < 0.12
    assert table.loc["orientation", "ks_statistic"] < 0.1
    solidity = table.loc["solidity"]
    assert abs(solidity.synthetic_median - solidity.real_median) < 0.02
    mean = table.synthetic_mean / table.real_mean
    assert mean["density"] == pytest.approx(1.0, abs=0.2)
    assert mean["image_log_area_mean"] == pytest.approx(1.0, abs=0.03)
    assert table.loc["touching_fraction", "synthetic_mean"] == pytest.approx(
        table.loc["touching_fraction", "real_mean"], abs=0.08)  # fmt: skip
    assert mean["clark_evans"] == pytest.approx(1.0, abs=0.12)
    assert mean["nn_distance"] == pytest.approx(1.0, abs=0.15)


def test_pixel_solidity_constants_still_describe_rendered_ellipses():
    """The sampler divides this staircase loss out; guard the fitted constants."""
    c, p_area, p_ratio = masks._PIXEL_SOLIDITY
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(60):
        area, q = np.exp(rng.uniform(np.log(40), np.log(2000))), rng.uniform(0.4, 1.0)
        r = np.sqrt(area / np.pi)
        image = np.zeros((140, 140), np.uint8)
        axes = r * np.sqrt(q), r / np.sqrt(q)
        image[ellipse(70.3, 69.8, *axes, rotation=rng.uniform(0, np.pi))] = 1
        (region,) = regionprops(image)
        errors.append(region.solidity - (1 - c * region.area**p_area * q**p_ratio))
    assert abs(np.median(errors)) < 0.005 and np.percentile(np.abs(errors), 90) < 0.03


@pytest.mark.slow
@pytest.mark.monuseg
def test_masks_fitted_to_monuseg_images(monuseg_root):
    """Four real training images: fitted masks match their density and nucleus sizes."""
    from nucseg.data.monuseg import load_split

    samples = load_split(monuseg_root, "train")[:4]
    real = measure_nuclei(samples)
    stats = statistics_for(fit_mask_statistics(real), "all")
    assert stats.n_images == 4 and stats.image_densities[0] > 100
    synthetic = measure_nuclei(random_masks(stats, 4, 1000, seed=0))
    table = compare_statistics(real, synthetic).set_index("feature")
    assert table.loc["area", "ks_statistic"] < 0.15
    assert table.loc["eccentricity", "ks_statistic"] < 0.1
    assert table.synthetic_mean["density"] == pytest.approx(table.real_mean["density"], rel=0.25)
