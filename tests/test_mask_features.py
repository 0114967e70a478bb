from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from nucseg.data.demo import make_tile
from nucseg.synth.mask_features import (
    SynthError,
    compare_statistics,
    expected_nn_distance,
    image_features,
    measure_nuclei,
)


@pytest.fixture(scope="module")
def demo_nuclei() -> pd.DataFrame:
    """Nuclei of 12 demo tiles, two pseudo-organs."""
    samples = [SimpleNamespace(image_id=f"{organ}-{seed}", split="train", organ=organ,
                               instances=make_tile(seed, 256, organ)[1])
               for organ in ("demo-a", "demo-b") for seed in range(6)]  # fmt: skip
    return measure_nuclei(samples)


def test_measure_nuclei_extends_dataset_nuclei():
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:25] = 1  # 10 x 20, horizontal
    labels[5:15, 25:35] = 2  # touches 1
    labels[25:35, 40:45] = 3  # 10 x 5, vertical, alone
    table = measure_nuclei([labels, np.zeros((8, 8), np.int32)], organ="toy")
    assert list(table.nucleus_id) == [1, 2, 3]  # the empty map adds no rows
    assert (table.image_id == "toy-0000").all() and (table.split == "synthetic").all()
    assert list(table.touching) == [True, True, False]
    assert table.nn_distance[0] == pytest.approx(15.0)  # centroids at columns 14.5 and 29.5
    # Orientation from the row axis: horizontal +-pi/2, vertical 0; perpendicular neighbours.
    assert abs(table.orientation[0]) == pytest.approx(np.pi / 2)
    assert table.orientation[2] == pytest.approx(0.0)
    assert np.isnan(table.nn_alignment[1])  # nucleus 2 is round: eccentricity 0
    assert (table.image_height == 40).all() and (table.image_pixels == 2400).all()
    images = image_features(table)
    assert images.loc[0, "nuclei"] == 3
    assert images.loc[0, "touching_fraction"] == pytest.approx(2 / 3)
    with pytest.raises(SynthError, match="no instance maps"):
        measure_nuclei([])


def test_expected_nn_distance_of_uniform_points_has_edge_correction():
    rng = np.random.default_rng(0)
    mean_nn = [cKDTree(p).query(p, k=2)[0][:, 1].mean()
               for p in rng.uniform((0, 0), (400, 300), (200, 300, 2))]  # fmt: skip
    # Donnelly's value is right to about a percent; Clark-Evans' (no edges) is 2.6 % short here.
    assert expected_nn_distance(300, 400, 300) == pytest.approx(np.mean(mean_nn), rel=0.015)
    assert 0.5 * np.sqrt(400 * 300 / 300) < 0.98 * np.mean(mean_nn)


def test_compare_statistics_rows_and_identical_inputs(demo_nuclei):
    table = compare_statistics(demo_nuclei, demo_nuclei)
    assert list(table.columns) == ["feature", "level", "n_real", "n_synthetic", "real_mean",
                                   "synthetic_mean", "real_median", "synthetic_median",
                                   "ks_statistic", "ks_pvalue"]  # fmt: skip
    features = set(table.feature)
    assert {"area", "eccentricity", "orientation", "solidity", "density", "touching_fraction",
            "nn_distance", "clark_evans"} <= features  # fmt: skip
    assert (table.ks_statistic == 0).all() and (table.ks_pvalue == 1).all()
    assert (table.loc[table.level == "image", "n_real"] == 12).all()
