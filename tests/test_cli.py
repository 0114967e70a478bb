import subprocess
import sys

import pandas as pd
import pytest

from nucseg.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo-data", str(out), "--n-train", "2", "--n-test", "2", "--size", "128"]) == 0
    return out


def test_demo_data_layout(demo_dir):
    assert len(list((demo_dir / "test" / "images").iterdir())) == 2
    assert (demo_dir / "organs.csv").is_file()


def test_predict_then_evaluate(demo_dir, tmp_path, capsys):
    images = demo_dir / "test" / "images"
    assert (
        main(["predict", "--method", "classical", str(images), "--out", str(tmp_path), "--csv"])
        == 0
    )
    out = capsys.readouterr().out
    assert "nuclei" in out and "_nuclei.csv" in out
    assert main(["evaluate", str(demo_dir), str(tmp_path), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "aji_plus" in out
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert len(scores) == 2
    assert scores.aji.between(0.2, 1.0).all()


def test_ground_truth_against_itself_scores_one(demo_dir, tmp_path):
    from nucseg.data.images import write_label_map
    from nucseg.evaluate import load_ground_truth

    for image_id, labels in load_ground_truth(demo_dir, split="test").instances.items():
        write_label_map(tmp_path / f"{image_id}.png", labels)
    assert (
        main(
            [
                "evaluate",
                str(demo_dir),
                str(tmp_path),
                "--split",
                "test",
                "--csv",
                str(tmp_path / "s.csv"),
            ]
        )
        == 0
    )
    scores = pd.read_csv(tmp_path / "s.csv")
    assert (scores[["aji", "aji_plus", "pq", "f1", "dice"]] == 1.0).all().all()


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.tif"), "--out", str(tmp_path)]) == 2
    assert "missing.tif: no such file" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "nucseg", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "demo-data" in done.stdout and "evaluate" in done.stdout


def test_predict_xml_export_round_trips(demo_dir, tmp_path):
    from nucseg.data.images import read_label_map
    from nucseg.data.monuseg import xml_to_instances
    from nucseg.metrics import aji

    image = sorted((demo_dir / "test" / "images").iterdir())[0]
    assert main(["predict", str(image), "--out", str(tmp_path), "--xml"]) == 0
    labels = read_label_map(tmp_path / f"{image.stem}.tif")
    from_xml, _ = xml_to_instances(tmp_path / f"{image.stem}.xml", labels.shape)
    assert aji(labels, from_xml) > 0.98
