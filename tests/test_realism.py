"""Realism measures of nucseg.synth.realism: C2ST, stain statistics, nuclear contrast."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.stats import binomtest

from nucseg.data.demo import make_tile
from nucseg.errors import NucsegError
from nucseg.runtime import DeviceError, InputError
from nucseg.synth.realism import (
    MIN_CROPS,
    C2STResult,
    _group_bootstrap,
    _split,
    classifier_two_sample_test,
    random_crops,
)

# Tiny and single-threaded: a few seconds per test, and stable timing on a shared machine.
FAST = {"epochs": 12, "width": 8, "batch_size": 8, "num_threads": 1, "progress": False}


def tiles(seeds, size=48):
    return np.stack([make_tile(s, size)[0] for s in seeds])


@pytest.fixture(scope="module")
def demo_sets():
    """Two disjoint sets of demo tiles from the same generator (same distribution)."""
    return tiles(range(32)), tiles(range(1000, 1032))


def test_same_distribution_is_indistinguishable(demo_sets):
    a, b = demo_sets
    result = classifier_two_sample_test(a, b, seed=0, **FAST)
    assert result.ci_low <= 0.5 <= result.ci_high
    assert result.accuracy <= 0.75
    assert result.p_value > 0.05
    # 30 % of 32 per class is held out, and the classes are balanced.
    assert result.n_test == 2 * 10 and result.n_train == 2 * 22


@pytest.mark.parametrize(
    "change",
    [lambda x: 255 - x, lambda x: ndi.gaussian_filter(x, (0, 2, 2, 0))],
    ids=["inverted", "blurred"],
)
def test_different_sets_are_told_apart(demo_sets, change):
    a, b = demo_sets
    result = classifier_two_sample_test(a, change(b), seed=0, **FAST)
    assert result.accuracy >= 0.9
    assert result.ci_low > 0.5 and result.p_value < 0.01
    assert result.accuracy_real >= 0.8 and result.accuracy_synthetic >= 0.8


def test_deterministic_for_a_seed_and_leaves_global_state(demo_sets):
    a, b = demo_sets
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    runs = [classifier_two_sample_test(a[:12], b[:12], seed=3, **FAST) for _ in range(2)]
    strip = [{k: v for k, v in vars(r).items() if k != "seconds"} for r in runs]
    assert strip[0] == strip[1]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert isinstance(runs[0], C2STResult) and runs[0].seconds > 0


def test_result_is_frozen(demo_sets):
    a, b = demo_sets
    result = classifier_two_sample_test(a[:8], b[:8], **FAST)
    with pytest.raises(AttributeError):
        result.accuracy = 0.5


def test_max_minutes_cuts_training_short(demo_sets):
    a, b = demo_sets
    result = classifier_two_sample_test(a[:8], b[:8], max_minutes=1e-6, **FAST)
    assert result.epochs == 1


def test_groups_keep_held_out_crops_from_unseen_sources():
    groups = np.repeat(np.arange(5), 4)
    train, test, codes = _split(20, groups, 0.3, np.random.default_rng(0), "real")
    assert set(groups[train]).isdisjoint(groups[test])
    assert np.array_equal(codes, groups)
    assert len(train) + len(test) == 20 and len(test) >= 6
    with pytest.raises(InputError, match="one group"):
        _split(8, np.zeros(8), 0.3, np.random.default_rng(0), "real")
    with pytest.raises(InputError, match="one per crop"):
        _split(8, np.zeros(3), 0.3, np.random.default_rng(0), "real")


def test_c2st_groups_give_a_group_bootstrap_interval(demo_sets):
    a, b = demo_sets
    groups = [f"image-{i}" for i in np.repeat(np.arange(8), 4)]  # ids need not be numbers
    grouped = classifier_two_sample_test(a, 255 - b, real_groups=groups, **FAST)
    # Real: 3 whole groups of 4 (>= 30 % of 32) held out, synthetic: 10; balanced to the fewer.
    assert (grouped.n_test, grouped.n_train) == (2 * 10, 2 * 20)
    assert grouped.interval == "group bootstrap" and grouped.accuracy == 1.0
    # All held-out crops right: every resample is 1, so is the interval, and p is minimal.
    assert grouped.ci_low == grouped.ci_high == 1.0 and grouped.p_value < 1e-3
    plain = classifier_two_sample_test(a, b, **FAST)
    assert plain.interval == "binomial"


def test_group_bootstrap_is_wider_than_binomial_for_correlated_crops():
    # Four test images per class of 8 crops each; each image entirely right or entirely wrong.
    correct = [np.repeat([1, 1, 1, 0], 8), np.repeat([1, 1, 0, 1], 8)]
    codes = [np.repeat(np.arange(4), 8)] * 2
    low, high, p = _group_bootstrap(correct, codes, seed=0)
    ci = binomtest(48, 64).proportion_ci(0.95, method="exact")
    assert low < ci.low and high > ci.high
    assert low <= 0.5 and p > 0.025  # 6 of 8 images right is no evidence; 48 of 64 crops is
    assert binomtest(48, 64, alternative="greater").pvalue < 1e-4


@pytest.mark.parametrize(
    ("real", "synthetic", "match"),
    [
        ([np.zeros((32, 32, 3), np.uint8)] * 3 + [np.zeros((16, 32, 3), np.uint8)],
         np.zeros((4, 32, 32, 3), np.uint8), "crop 3 is"),
        (np.zeros((6, 32, 32, 3), np.uint8), np.zeros((6, 16, 16, 3), np.uint8), "crops differ"),
        (np.zeros((6, 32, 32), np.uint8), np.zeros((6, 32, 32, 3), np.uint8), "grayscale"),
        (np.zeros((6, 32, 32, 1), np.uint8), np.zeros((6, 32, 32, 3), np.uint8), "grayscale"),
        (np.zeros((6, 32, 32, 3), np.uint8), np.zeros((3, 32, 32, 3), np.uint8),
         f"at least {MIN_CROPS}"),
        (np.zeros((6, 32, 32, 3), np.float32), np.zeros((6, 32, 32, 3), np.uint8), "uint8"),
        ([], np.zeros((6, 32, 32, 3), np.uint8), "no crops"),
    ],
    ids=["ragged", "sizes", "grayscale", "one-channel", "too-few", "float", "empty"],
)  # fmt: skip
def test_bad_crops_are_named(real, synthetic, match):
    with pytest.raises(InputError, match=match) as info:
        classifier_two_sample_test(real, synthetic, **FAST)
    assert isinstance(info.value, NucsegError)


@pytest.mark.parametrize(
    ("option", "match"),
    [({"test_fraction": 1.0}, "test_fraction"), ({"epochs": 0}, "epochs"),
     ({"max_minutes": 0}, "max_minutes")],
)  # fmt: skip
def test_bad_settings_are_named(option, match):
    crops = np.zeros((6, 16, 16, 3), np.uint8)
    with pytest.raises(InputError, match=match):
        classifier_two_sample_test(crops, crops, **{**FAST, **option})


def test_unknown_device_is_an_error():
    crops = np.zeros((6, 16, 16, 3), np.uint8)
    with pytest.raises(DeviceError):
        classifier_two_sample_test(crops, crops, device="tpu:7", **FAST)


def test_random_crops_are_aligned_and_grouped():
    pairs = [make_tile(s, 64) for s in range(2)]
    crops, groups, masks = random_crops(
        [p[0] for p in pairs], 24, 3, seed=1, instances=[p[1] for p in pairs]
    )
    assert crops.shape == (6, 24, 24, 3) and masks.shape == (6, 24, 24)
    assert groups.tolist() == [0, 0, 0, 1, 1, 1]
    again = random_crops([p[0] for p in pairs], 24, 3, seed=1)
    assert np.array_equal(again[0], crops) and again[2] is None
    # Each crop occurs in its image with its mask at the same place.
    image, labels = pairs[1]
    hits = [(y, x) for y in range(41) for x in range(41)
            if np.array_equal(image[y : y + 24, x : x + 24], crops[3])]  # fmt: skip
    assert hits and np.array_equal(labels[hits[0][0] : hits[0][0] + 24, hits[0][1] :][:, :24],
                                   masks[3])  # fmt: skip
    with pytest.raises(InputError, match="smaller than the crop"):
        random_crops([pairs[0][0]], 65, 1)
