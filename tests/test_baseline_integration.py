"""Integration on ../shared/monuseg: `nucseg evaluate` on itself, and the classical baseline."""

import pandas as pd
import pytest

from nucseg.cli import main
from nucseg.data.images import write_label_map
from nucseg.evaluate import load_ground_truth

pytestmark = pytest.mark.monuseg


@pytest.fixture(scope="module")
def test_truth(monuseg_root):
    return load_ground_truth(monuseg_root, split="test")


def test_evaluate_ground_truth_against_itself_gives_one(monuseg_root, test_truth, tmp_path):
    for image_id, labels in test_truth.instances.items():
        write_label_map(tmp_path / f"{image_id}.tif", labels)
    csv = tmp_path / "scores.csv"
    assert (
        main(["evaluate", str(monuseg_root), str(tmp_path), "--split", "test", "--csv", str(csv)])
        == 0
    )
    scores = pd.read_csv(csv)
    assert len(scores) == 14
    assert (scores[["aji", "aji_plus", "pq", "f1", "dice"]] == 1.0).all().all()
    assert set(scores.organ) == {
        "kidney",
        "breast",
        "lung",
        "prostate",
        "bladder",
        "brain",
        "colon",
    }


def test_classical_baseline_test_aji(monuseg_root, tmp_path, capsys):
    images = monuseg_root / "test" / "images"
    assert main(["predict", "--method", "classical", str(images), "--out", str(tmp_path)]) == 0
    csv = tmp_path / "scores.csv"
    assert (
        main(["evaluate", str(monuseg_root), str(tmp_path), "--split", "test", "--csv", str(csv)])
        == 0
    )
    mean_aji = pd.read_csv(csv).aji.mean()
    with capsys.disabled():
        print(f"\nclassical baseline: mean AJI on the 14 MoNuSeg test images = {mean_aji:.4f}")
    assert 0.45 <= mean_aji <= 0.65
