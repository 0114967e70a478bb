"""The command line under careless and hostile input, run as a user runs it: a subprocess.

Every refusal exits with status 2 and one line on stderr that names the file; nothing the user
had is changed.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nucseg.data.demo import make_tile, write_demo_dataset
from nucseg.data.images import write_image, write_label_map


def nucseg(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run(
        [sys.executable, "-m", "nucseg", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


def refused(result, *names):
    """Exit status 2, a one-line error naming each of ``names`` (progress bars aside)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def tile():
    return make_tile(size=96, seed=3)[0]  # (image, instances): the image


@pytest.fixture()
def images(tmp_path, tile):
    folder = tmp_path / "he"
    write_image(folder / "x.tif", tile)
    write_image(folder / "y.png", tile)
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=5, n_test=2, size=96)


# --- predict: never lose a file -------------------------------------------------------------
def test_predict_into_the_input_folder_keeps_the_inputs(images):
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    refused(nucseg("predict", images, "--out", images), "x.tif", "overwrite input")
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


def test_predict_xml_never_replaces_ground_truth(images, tmp_path):
    truth = tmp_path / "annotations" / "y.xml"
    truth.parent.mkdir()
    truth.write_text("<Annotations>ground truth</Annotations>")
    refused(nucseg("predict", images / "y.png", "--xml", "--out", truth.parent), "y.xml")
    assert truth.read_text() == "<Annotations>ground truth</Annotations>"


def test_two_inputs_with_one_stem_are_refused_before_any_work(images, tmp_path, tile):
    write_image(images / "x.png", tile)
    out = tmp_path / "out"
    refused(nucseg("predict", images / "x.png", images / "x.tif", "--out", out), "x.png", "x.tif")
    assert not out.exists()


def test_predict_may_overwrite_its_own_outputs(images, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        result = nucseg("predict", images, "--out", out, "--overlay", "--csv", "--xml")
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [".nucseg-predict.json", "x.tif", "x.xml", "x_nuclei.csv", "x_overlay.png",
                     "y.tif", "y.xml", "y_nuclei.csv", "y_overlay.png"]  # fmt: skip
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_predict_out_that_is_a_file_or_not_writable(images, tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    refused(nucseg("predict", images, "--out", file), "notes.txt", "is a file")
    refused(nucseg("predict", images, "--out", file / "sub"), "not writable")
    assert file.read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_on_a_missing_gpu(images, tmp_path):
    result = nucseg("predict", images, "--method", "unet", "--device", "cuda", "--out", tmp_path)
    refused(result, "'cuda'", "CUDA is not available")


# --- evaluate -------------------------------------------------------------------------------
def test_evaluate_a_missing_or_file_prediction_folder(demo, tmp_path):
    refused(nucseg("evaluate", demo, tmp_path / "nope", "--split", "test"), "nope", "no such")
    file = tmp_path / "pred.txt"
    file.write_text("")
    refused(nucseg("evaluate", demo, file, "--split", "test"), "pred.txt", "is a file")


def _ground_truth_copy(demo, tmp_path):
    pred = tmp_path / "pred"
    result = nucseg("evaluate", demo, demo, "--split", "test", "--csv", tmp_path / "s.csv")
    assert result.returncode == 0 or "no label map" in result.stderr
    from nucseg.evaluate import load_ground_truth

    truth = load_ground_truth(demo, "test")
    for image_id, labels in truth.instances.items():
        write_label_map(pred / f"{image_id}.tif", labels)
    return pred, truth


def test_evaluate_csv_destination_checked_before_scoring(demo, tmp_path):
    pred, _ = _ground_truth_copy(demo, tmp_path)
    result = nucseg("evaluate", demo, pred, "--split", "test", "--csv", tmp_path / "new" / "s.csv")
    assert result.returncode == 0 and (tmp_path / "new" / "s.csv").is_file()  # folder made
    file = tmp_path / "blocker"
    file.write_text("")
    result = nucseg("evaluate", demo, pred, "--split", "test", "--csv", file / "s.csv")
    refused(result, "blocker", "is a file")
    assert result.stdout == ""  # refused before the table was printed


def test_evaluate_names_the_image_and_both_shapes(demo, tmp_path):
    pred, truth = _ground_truth_copy(demo, tmp_path)
    image_id = sorted(truth.instances)[0]
    write_label_map(pred / f"{image_id}.tif", np.zeros((50, 60), np.int32))
    line = refused(nucseg("evaluate", demo, pred, "--split", "test"), image_id, f"{image_id}.tif")
    assert "(50, 60)" in line and "(96, 96)" in line


def test_evaluate_warns_on_a_binary_mask_and_an_empty_ground_truth(demo, tmp_path):
    pred, truth = _ground_truth_copy(demo, tmp_path)
    image_id = sorted(truth.instances)[0]
    write_label_map(pred / f"{image_id}.tif", (truth.instances[image_id] > 0).astype(np.int32))
    result = nucseg("evaluate", demo, pred, "--split", "test")
    assert result.returncode == 0
    assert f"warning: {image_id}" in result.stderr and "binary mask" in result.stderr
    gt = tmp_path / "gt"
    write_label_map(gt / "z.tif", np.zeros((8, 8), np.int32))
    write_label_map(tmp_path / "empty" / "z.tif", np.zeros((8, 8), np.int32))
    result = nucseg("evaluate", gt, tmp_path / "empty")
    assert result.returncode == 0 and "warning: z" in result.stderr
    assert "ground truth has no nucleus" in result.stderr


def test_evaluate_survives_an_absurd_xml_vertex(tmp_path, tile):
    folder = tmp_path / "gt"
    write_image(folder / "a.tif", tile)
    square = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in [(5, 5), (1e9, 5), (20, 20)])
    region = f'<Region Id="1"><Vertices>{square}</Vertices></Region>'
    (folder / "a.xml").write_text(f"<Annotations><Annotation><Regions>{region}</Regions>"
                                  "</Annotation></Annotations>")  # fmt: skip
    write_label_map(tmp_path / "pred" / "a.tif", np.zeros((96, 96), np.int32))
    refused(nucseg("evaluate", folder, tmp_path / "pred"), "a.xml", "region #1", "far outside")


# --- train ----------------------------------------------------------------------------------
TINY = ["--set", "width=4", "--set", "depth=2", "--set", "crop_size=64", "--set", "batch_size=2",
        "--set", "crops_per_epoch=4", "--set", "elastic=false", "--set", "device=cpu"]  # fmt: skip


@pytest.mark.parametrize("setting", ["width=abc", "width=2.5", "device=tpu", "max_minutes=0"])
def test_train_bad_settings_in_one_line(tmp_path, setting):
    refused(nucseg("train", "--out", tmp_path, "--set", setting), setting.split("=")[0])


def test_train_never_replaces_a_run_and_reads_data_from_the_current_folder(demo, tmp_path):
    relative = os.path.relpath(demo, tmp_path)
    run = ["train", "--data", relative, "--out", "run", "--epochs", "1", *TINY]
    assert nucseg(*run, cwd=tmp_path).returncode == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    refused(nucseg(*run, cwd=tmp_path), "run", "--resume", "--overwrite")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    line = refused(nucseg(*run, "--resume", "--set", "lr=0.01", cwd=tmp_path), "lr: ")
    assert "0.01 now" in line
    assert nucseg(*run, "--overwrite", cwd=tmp_path).returncode == 0


def test_report_reads_data_from_the_current_folder(tmp_path, monkeypatch):
    from nucseg import cli, report

    seen = {}

    def fake_run_report(**kwargs):
        seen.update(kwargs)
        raise report.NucsegError("stop here")

    monkeypatch.setattr(report, "run_report", fake_run_report)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--data", "mydata", "--only", "01"]) == 2
    assert seen["data"] == str(Path(tmp_path, "mydata").resolve())


# --- synthesis ------------------------------------------------------------------------------
def test_synth_refuses_bad_requests_in_one_line(tmp_path):
    refused(nucseg("synth", "--n", "0", "--out", tmp_path / "s"), "--n must be >= 1")
    missing = tmp_path / "missing.pt"
    refused(nucseg("synth", "--n", "1", "--out", tmp_path / "s", "--weights", missing),
            "missing.pt", "no generator weights")  # fmt: skip
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    refused(nucseg("synth", "--n", "1", "--out", blocker / "s", "--weights", missing),
            "not writable")  # fmt: skip
    refused(nucseg("train-cyclegan", "--out", tmp_path, "--set", "crop_size=30"), "crop_size")
    refused(nucseg("train-cyclegan", "--out", tmp_path, "--set", "device=tpu"), "'tpu'")
