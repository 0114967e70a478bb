from types import SimpleNamespace

import numpy as np
import pytest
from test_infer import _unet_checkpoint
from test_tuning import _disks

from nucseg.checkpoint import load_model, postprocess_from
from nucseg.errors import NucsegError
from nucseg.postprocess import PostprocessParams
from nucseg.retune import THRESHOLDS, describe, retune, write_retuned

GRID = {"fg_threshold": (0.3, 0.5, 0.6, 0.65)}  # nuclei at 0.7, a halo around them at 0.45


@pytest.fixture
def disks(monkeypatch):
    """Two annotated images whose 'network' output is known: nuclei plus a faint halo."""
    cases = [_disks(seed=s) for s in range(2)]
    samples = [SimpleNamespace(image=np.full((96, 96, 3), 200, np.uint8), instances=gt, probs=p)
               for p, gt in cases]  # fmt: skip
    by_id = {id(s.image): s.probs for s in samples}
    monkeypatch.setattr("nucseg.tiling.predict_probabilities",
                        lambda model, image, **_: by_id[id(image)])  # fmt: skip
    return samples


def test_retune_chooses_on_the_annotations_and_scores_the_stored_setting(tmp_path, disks):
    weights = _unet_checkpoint(tmp_path / "w.pt", postprocess={"fg_threshold": 0.3})
    result = retune(weights, disks, tta=False, grid=GRID, progress=False)
    assert result.stored == PostprocessParams(fg_threshold=0.3)
    assert result.stored_scores["aji"] < 0.8 and result.stored_scores["area_ratio"] > 1.5
    assert result.chosen == PostprocessParams(fg_threshold=0.6)  # the plateau, clear of the halo
    assert result.n_images == 2 and result.table.loc[0, "area_ratio"] == pytest.approx(1.0)
    assert result.response.fg_threshold.tolist() == list(THRESHOLDS)
    assert result.response.set_index("fg_threshold").aji[0.3] < 0.8
    text = describe(result, "two disks")
    assert "2 annotated images (two disks)" in text and "chosen: fg_threshold 0.6" in text
    assert "predicted / annotated area 1.00" in text


def test_a_retuned_copy_carries_the_setting_and_nothing_is_overwritten(tmp_path, disks):
    weights = _unet_checkpoint(tmp_path / "w.pt", postprocess={"fg_threshold": 0.3})
    result = retune(weights, disks, tta=False, grid=GRID, progress=False)
    out = write_retuned(weights, tmp_path / "retuned.pt", result, "two disks")
    _, checkpoint = load_model(out)
    assert postprocess_from(checkpoint).fg_threshold == 0.6
    assert checkpoint["meta"]["postprocess tuned on"] == "two disks"
    with pytest.raises(NucsegError, match="exists; pass --overwrite"):
        write_retuned(weights, out, result, "two disks")
    with pytest.raises(NucsegError, match="is the weights file itself"):
        write_retuned(weights, weights, result, "two disks")
    assert postprocess_from(load_model(weights)[1]).fg_threshold == 0.3  # the input is untouched
    write_retuned(weights, out, result, "again", overwrite=True)
    with pytest.raises(NucsegError, match="at least one"):
        retune(weights, [], progress=False)


def test_cli_tune_on_a_folder_of_annotated_images(tmp_path, tiny_demo, capsys):
    from nucseg.cli import main

    weights = _unet_checkpoint(tmp_path / "w.pt")
    args = ["tune", "--data", str(tiny_demo), "--weights", str(weights), "--tta", "none",
            "--min-area-ratio", "0", "--select", "peak"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "tuned.pt")]) == 0
    out = capsys.readouterr().out
    assert "5 annotated images" in out and "foreground threshold response" in out
    assert (tmp_path / "tuned.pt").is_file()
    assert main([*args, "--out", str(tmp_path / "tuned.pt")]) == 2  # refused before any work
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_cli_tune_refuses_the_images_the_weights_were_trained_on(tmp_path, tiny_demo, capsys):
    # A final fit trains on every training image, validation ones included: tuning it on them
    # would fit its own training data.
    import torch

    from nucseg.cli import main
    from nucseg.data.dataset import fingerprint_samples
    from nucseg.data.monuseg import load_split

    weights = _unet_checkpoint(tmp_path / "w.pt")
    checkpoint = torch.load(weights, weights_only=False)
    trained_on = fingerprint_samples(load_split(tiny_demo, "train"))
    checkpoint["meta"] = {"plan": {"data.train": trained_on}}
    torch.save(checkpoint, weights)
    args = ["tune", "--data", str(tiny_demo), "--weights", str(weights), "--tta", "none"]
    assert main([*args, "--split", "train"]) == 2
    assert "these weights were trained on" in capsys.readouterr().err
    assert main([*args, "--split", "test", "--min-area-ratio", "0"]) == 0  # images it has not seen


def test_retune_predicts_as_nucseg_predict_does(tmp_path, disks, monkeypatch):
    from nucseg.infer import UNET_TILE

    seen = []
    by_id = {id(s.image): s.probs for s in disks}
    monkeypatch.setattr("nucseg.tiling.predict_probabilities",
                        lambda model, image, **kw: seen.append(kw) or by_id[id(image)])  # fmt: skip
    retune(_unet_checkpoint(tmp_path / "w.pt"), disks, tta="flips", grid=GRID, progress=False)
    assert [(kw["tile"], kw["tta"]) for kw in seen] == [(UNET_TILE, "flips")] * len(disks)


def test_weights_with_a_distance_head_are_tuned_on_both_seed_sources(tmp_path, monkeypatch):
    from test_postprocess import _with_distance, disc_labels, two_touching_discs

    pairs = [two_touching_discs(gap=20), two_touching_discs(gap=22)]
    samples = [SimpleNamespace(image=np.full((80, 100, 3), 200, np.uint8),
                               instances=disc_labels(a, b),
                               probs=_with_distance(a, b)) for a, b in pairs]  # fmt: skip
    by_id = {id(s.image): s.probs for s in samples}
    monkeypatch.setattr("nucseg.tiling.predict_probabilities",
                        lambda model, image, **_: by_id[id(image)])  # fmt: skip
    result = retune(_unet_checkpoint(tmp_path / "w.pt"), samples, tta=False, progress=False)
    assert set(result.table.markers) == {"classes", "distance"}
    assert result.chosen.markers == "distance"  # the classes see one blob per image
    best = result.table.groupby("markers").aji.max()
    assert best["distance"] > 0.9 > best["classes"]
    assert "seeds from the distance map" in describe(result, "touching discs")
    # An explicit grid is searched as given, on the stored seed source only.
    only = retune(_unet_checkpoint(tmp_path / "v.pt"), samples, tta=False, grid=GRID,
                  progress=False)  # fmt: skip
    assert "markers" not in only.table and only.chosen.markers == "classes"
