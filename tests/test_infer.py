from pathlib import Path

import numpy as np
import pytest

from nucseg.data.images import read_label_map, write_image
from nucseg.errors import ImageReadError, NucsegError
from nucseg.infer import METHODS, expand_image_paths, get_predictor, predict_files


def _tile(tmp_path, name="tile.png"):
    from nucseg.data.demo import make_tile

    image, _ = make_tile(seed=3, size=128)
    path = tmp_path / name
    write_image(path, image)
    return path


def test_registry_and_unknown_method():
    assert "classical" in METHODS
    with pytest.raises(NucsegError, match="unknown method 'nope'"):
        get_predictor("nope")


def test_predict_files_writes_instances_and_overlay(tmp_path):
    path = _tile(tmp_path)
    written = predict_files([path], tmp_path / "out", method="classical", overlay=True)
    (item,) = written
    labels = read_label_map(item.instances)
    assert labels.shape == (128, 128)
    assert item.n_nuclei == len(np.unique(labels)) - 1 > 0
    assert item.overlay is not None and item.overlay.exists()


def test_expand_image_paths_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        expand_image_paths([tmp_path / "missing.tif"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageReadError, match="not an image"):
        expand_image_paths([tmp_path / "notes.txt"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageReadError, match="holds no image"):
        expand_image_paths([empty])
    _tile(tmp_path, "b.png")
    _tile(tmp_path, "a.png")
    assert [p.name for p in expand_image_paths([tmp_path])] == ["a.png", "b.png"]


# --- unet method -------------------------------------------------------------------------


def _unet_checkpoint(path, postprocess=None):
    import torch

    from nucseg.checkpoint import save_checkpoint, weights_checkpoint
    from nucseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=2)
    checkpoint = weights_checkpoint({"net": model}, method="unet", postprocess=postprocess)
    return save_checkpoint(checkpoint, path)


def test_unet_predictor_returns_int32_instances_with_checkpoint_params(tmp_path):
    from nucseg.data.demo import make_tile
    from nucseg.postprocess import PostprocessParams

    weights = _unet_checkpoint(tmp_path / "w.pt", {"fg_threshold": 0.7, "min_size": 5})
    predict = get_predictor("unet", weights=weights, device="cpu", tile=64, overlap=16)
    assert predict.params == PostprocessParams(fg_threshold=0.7, min_size=5)
    image, _ = make_tile(seed=1, size=96)
    labels = predict(image)
    assert labels.dtype == np.int32 and labels.shape == (96, 96)
    probs = predict.probabilities(image)
    assert probs.shape == (3, 96, 96)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    # Explicit settings override the stored ones; no stored settings means the defaults.
    override = get_predictor("unet", weights=weights, postprocess={"min_size": 50}, tile=64)
    assert override.params == PostprocessParams(fg_threshold=0.7, min_size=50)
    plain = get_predictor("unet", weights=_unet_checkpoint(tmp_path / "p.pt"), tile=64)
    assert plain.params == PostprocessParams()


def test_unet_missing_default_weights_says_how_to_train(tmp_path, monkeypatch):
    from nucseg.infer import UNetPredictor

    missing = tmp_path / "weights" / "unet_monuseg_cpu.pt"
    monkeypatch.setattr(UNetPredictor, "default_weights", missing)
    with pytest.raises(NucsegError, match="nucseg train --profile monuseg-cpu") as info:
        get_predictor("unet")
    assert str(missing) in str(info.value)
    with pytest.raises(NucsegError, match="no such checkpoint"):
        get_predictor("unet", weights=tmp_path / "nope.pt")


def test_default_weights_path_is_inside_the_package():
    from nucseg import infer

    assert infer.DEFAULT_UNET_WEIGHTS.parent.parent == Path(infer.__file__).resolve().parent
    assert infer.DEFAULT_UNET_WEIGHTS.name == "unet_monuseg_cpu.pt"


def test_bad_method_options_are_clear_errors(tmp_path):
    with pytest.raises(NucsegError, match="method 'unet': bad options"):
        get_predictor("unet", weights=tmp_path / "w.pt", colour="red")
    with pytest.raises(NucsegError, match="method 'classical': bad option"):
        get_predictor("classical", weights=tmp_path / "w.pt")


def test_cli_predict_with_unet_weights(tmp_path, capsys):
    from nucseg.cli import main

    weights = _unet_checkpoint(tmp_path / "w.pt")
    image = _tile(tmp_path)
    args = ["predict", str(image), "--out", str(tmp_path / "out"), "--method", "unet"]
    args += ["--weights", str(weights), "--device", "cpu", "--tile", "64", "--overlap", "16"]
    assert main([*args, "--tta", "flips"]) == 0
    assert read_label_map(tmp_path / "out" / "tile.tif").shape == (128, 128)
    assert "tile.png" in capsys.readouterr().out
    assert main(["predict", str(image), "--out", str(tmp_path), "--weights", str(weights)]) == 2
    assert "bad option" in capsys.readouterr().err


def test_otsu_is_classical_without_the_split(tmp_path):
    from nucseg.data.demo import make_tile

    image, _ = make_tile(seed=5, size=128, organ="demo-c")
    classical = get_predictor("classical")(image)
    otsu = get_predictor("otsu")(image)
    assert (otsu > 0).sum() > 0
    assert otsu.max() < classical.max()  # touching nuclei stay merged


def test_a_prediction_of_the_wrong_shape_names_the_image_and_both_shapes(tmp_path):
    path = write_image(tmp_path / "in" / "x.png", np.full((20, 30, 3), 200, np.uint8))
    wrong = lambda image: np.zeros((10, 10), np.int32)  # noqa: E731
    with pytest.raises(NucsegError, match=r"x\.png: .*predicted shape \(10, 10\) .*\(20, 30\)"):
        predict_files([path], tmp_path / "out", predictor=wrong)
