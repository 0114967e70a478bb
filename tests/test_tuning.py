"""Grid search of post-processing parameters on validation probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucseg.errors import ShapeMismatchError
from nucseg.postprocess import PostprocessError, PostprocessParams
from nucseg.tuning import DEFAULT_GRID, TuningError, neighbourhood_mean, tune_postprocess


def _disks(size=96, radius=8, seed=0):
    """Separate disks as ground truth and probabilities with a faint halo around each."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i, (cy, cx) in enumerate(
        rng.permutation([(r, c) for r in (16, 48, 80) for c in (16, 48, 80)])
    ):
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i + 1
    halo = ndi.binary_dilation(gt > 0, iterations=3) & (gt == 0)
    probs = np.empty((3, size, size), np.float32)
    probs[:] = np.array([0.9, 0.05, 0.05], np.float32)[:, None, None]
    probs[:, halo] = np.array([0.55, 0.25, 0.2], np.float32)[:, None]  # fg 0.45
    probs[:, gt > 0] = np.array([0.3, 0.65, 0.05], np.float32)[:, None]  # fg 0.7, marker 0.6
    return probs, gt


def test_picks_the_known_best_parameters():
    cases = [_disks(seed=s) for s in range(2)]
    grid = {"fg_threshold": (0.3, 0.5, 0.8), "marker_threshold": (0.3, 0.5), "min_size": (10, 500)}
    best, table = tune_postprocess(*zip(*cases, strict=True), grid=grid, progress=False)
    assert best == PostprocessParams(fg_threshold=0.5, marker_threshold=0.3, min_size=10)
    extra = ["aji", "aji_std", "aji_min", "aji_plateau", "area_ratio", "eligible"]
    assert list(table.columns) == [*grid, *extra]
    assert len(table) == 12 and table["aji"].is_monotonic_decreasing
    assert table.loc[0, "aji"] == pytest.approx(1.0)
    assert tuple(table.loc[0, list(grid)]) == (0.5, 0.3, 10)
    by = table.set_index(list(grid))["aji"]
    assert by[(0.8, 0.3, 10)] == 0.0  # threshold above every pixel: nothing found
    assert by[(0.5, 0.3, 500)] == 0.0  # min_size removes every nucleus
    assert by[(0.3, 0.3, 10)] < 0.8  # the halo joins the nuclei


def test_other_fields_come_from_base():
    probs, gt = _disks()
    base = PostprocessParams(min_marker_size=3, flood="boundary")
    best, _ = tune_postprocess([probs], [gt], grid={"min_size": [5, 20]}, base=base, progress=False)
    assert best == PostprocessParams(min_marker_size=3, flood="boundary", min_size=5)


def test_shared_min_size_runs_match_exact_runs():
    from nucseg.data.demo import make_tile
    from nucseg.data.targets import three_class_target

    probs, gts = [], []
    for seed in range(2):
        _, gt = make_tile(seed, size=128)
        onehot = np.eye(3, dtype=np.float32)[three_class_target(gt)].transpose(2, 0, 1)
        noise = np.random.default_rng(seed).normal(0, 1, onehot.shape)
        logits = ndi.gaussian_filter(4 * onehot + ndi.gaussian_filter(noise, (0, 2, 2)) * 3, 1)
        p = np.exp(logits - logits.max(axis=0))
        probs.append((p / p.sum(axis=0)).astype(np.float32))
        gts.append(gt)
    grid = {"marker_threshold": (0.3, 0.6), "min_size": (5, 40, 120)}
    fast = tune_postprocess(probs, gts, grid=grid, progress=False)
    exact = tune_postprocess(probs, gts, grid=grid, exact=True, progress=False)
    assert fast[0] == exact[0]
    np.testing.assert_allclose(fast[1]["aji"], exact[1]["aji"], atol=1e-12)
    assert fast[1]["aji"].nunique() > 1


def test_default_grid_is_small():
    # min_size values share one watershed run, so the cost is the product of the other sizes.
    runs = int(np.prod([len(v) for k, v in DEFAULT_GRID.items() if k != "min_size"]))
    assert 10 <= runs <= 40
    assert set(DEFAULT_GRID) <= {f for f in PostprocessParams.__dataclass_fields__}


def test_bad_inputs():
    probs, gt = _disks()
    with pytest.raises(TuningError, match="at least one"):
        tune_postprocess([], [])
    with pytest.raises(TuningError, match="1 probability maps but 2"):
        tune_postprocess([probs], [gt, gt])
    with pytest.raises(ShapeMismatchError, match="image 0"):
        tune_postprocess([probs], [gt[:-1]])
    with pytest.raises(TuningError, match=r"\(3, H, W\)"):
        tune_postprocess([probs[:2]], [gt])
    with pytest.raises(TuningError, match="unknown parameter.*'threshold'"):
        tune_postprocess([probs], [gt], grid={"threshold": [0.5]})
    with pytest.raises(TuningError, match="no values"):
        tune_postprocess([probs], [gt], grid={"min_size": []})
    with pytest.raises(PostprocessError, match="fg_threshold"):
        tune_postprocess([probs], [gt], grid={"fg_threshold": [1.5]})


def test_neighbourhood_mean_averages_each_cell_with_its_grid_neighbours():
    np.testing.assert_allclose(neighbourhood_mean(np.array([0.0, 3.0, 0.0])), [1.5, 1.0, 1.5])
    grid = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(neighbourhood_mean(grid), [[2.0, 7 / 3], [8 / 3, 3.0]])


def test_plateau_selection_avoids_a_setting_next_to_a_cliff():
    probs, gt = _disks()
    grid = {"fg_threshold": (0.3, 0.5, 0.6, 0.65, 0.8)}  # nuclei at 0.7, halo at 0.45
    peak, table = tune_postprocess([probs], [gt], grid=grid, progress=False)
    assert peak.fg_threshold == 0.5  # the first of the perfect ones, beside the halo's cliff
    plateau, table = tune_postprocess([probs], [gt], grid=grid, progress=False, select="plateau")
    assert plateau.fg_threshold == 0.6 and table.loc[0, "aji_plateau"] == pytest.approx(1.0)
    with pytest.raises(TuningError, match="select"):
        tune_postprocess([probs], [gt], grid=grid, progress=False, select="best")


def test_a_minimal_area_ratio_keeps_nuclei_from_shrinking():
    probs, gt = _disks()
    grid = {"fg_threshold": (0.3, 0.5)}
    _, table = tune_postprocess([probs], [gt], grid=grid, progress=False)
    ratio = table.set_index("fg_threshold").area_ratio
    assert ratio[0.5] == pytest.approx(1.0) and ratio[0.3] > 1.5  # the halo counts at 0.3
    best, table = tune_postprocess([probs], [gt], grid=grid, progress=False, min_area_ratio=1.2)
    assert best.fg_threshold == 0.3 and table.eligible.tolist() == [True, False]
    with pytest.raises(TuningError, match="largest predicts"):
        tune_postprocess([probs], [gt], grid=grid, progress=False, min_area_ratio=5.0)
