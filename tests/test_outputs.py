import json
from pathlib import Path

import pytest

from nucseg.outputs import (
    MANIFEST,
    OutputError,
    check_writable_folder,
    claim_outputs,
    plan_outputs,
    read_manifest,
)


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_plan_names_every_output_of_every_image(tmp_path):
    images = [_touch(tmp_path / "in" / "a.png"), _touch(tmp_path / "in" / "b.tif")]
    plan = plan_outputs(images, tmp_path / "out", overlay=True, xml=True, nuclei_csv=True)
    names = [[p.name for p in item.paths()] for item in plan.images]
    assert names == [
        ["a.tif", "a_overlay.png", "a.xml", "a_nuclei.csv"],
        ["b.tif", "b_overlay.png", "b.xml", "b_nuclei.csv"],
    ]
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_an_input_is_never_an_output(tmp_path):
    image = _touch(tmp_path / "x.tif", "H&E")
    with pytest.raises(OutputError, match=r"would overwrite input images: .*x\.tif"):
        plan_outputs([image], tmp_path)


def test_two_inputs_never_share_an_output(tmp_path):
    images = [_touch(tmp_path / "in" / "x.jpg"), _touch(tmp_path / "in" / "x.tif")]
    with pytest.raises(OutputError, match=r"x\.jpg and .*x\.tif would both write .*x\.tif"):
        plan_outputs(images, tmp_path / "out")


def test_files_predict_did_not_write_are_refused_its_own_are_not(tmp_path):
    image = _touch(tmp_path / "in" / "x.png")
    truth = _touch(tmp_path / "annotations" / "x.xml", "<Annotations/>")
    with pytest.raises(OutputError, match=r"did not write.*x\.xml \(1 in all\)"):
        plan_outputs([image], truth.parent, xml=True)
    assert truth.read_text() == "<Annotations/>"
    plan = plan_outputs([image], tmp_path / "out", xml=True)
    claim_outputs(plan)
    assert read_manifest(tmp_path / "out") == {"x.tif", "x.xml"}
    for path in plan.images[0].paths():
        _touch(path)
    plan_outputs([image], tmp_path / "out", xml=True)  # earlier outputs of predict: fine


def test_an_unusable_folder_or_manifest_is_named(tmp_path):
    file = _touch(tmp_path / "file.txt")
    with pytest.raises(OutputError, match=r"file\.txt: --out is a file"):
        check_writable_folder(file)
    with pytest.raises(OutputError, match=r"sub: --out is not writable"):
        check_writable_folder(file / "sub")
    _touch(tmp_path / "out" / MANIFEST, json.dumps({"not": "a list"}))
    with pytest.raises(OutputError, match="a predict manifest is a JSON list"):
        read_manifest(tmp_path / "out")
