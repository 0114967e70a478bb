import pytest
import torch

from nucseg.losses import LossConfig
from nucseg.profiles import PARAMS_DIR
from nucseg.train_config import (
    TrainConfig,
    TrainConfigError,
    parse_overrides,
    plain_values,
    profile_config,
)


def test_from_profile_merges_common_section_and_overrides():
    profile = {
        "common": {"data_dir": None, "seed": 3, "device": "cpu", "quick": True},
        "notebooks": {"04": {"epochs": 7, "width": 8, "loss": {"boundary_weight": 2.0}}},
    }
    config = TrainConfig.from_profile(profile, **{"loss.dice_weight": 0.0, "lr": 0.01})
    assert (config.seed, config.device, config.epochs, config.width, config.lr) == (
        3, "cpu", 7, 8, 0.01
    )  # fmt: skip
    assert config.loss == LossConfig(boundary_weight=2.0, dice_weight=0.0)
    flat = TrainConfig.from_profile({"epochs": 2, "run_dir": "x"})  # notebook parameters
    assert flat.epochs == 2


def test_overrides():
    config = TrainConfig().with_overrides({"loss": {"use_distance_weights": True}, "depth": 3})
    assert config.loss.use_distance_weights and config.depth == 3
    config = config.with_overrides({"loss": LossConfig(dice_weight=0)})
    assert config.loss == LossConfig(dice_weight=0)
    with pytest.raises(TrainConfigError, match="unknown training setting 'nope'"):
        config.with_overrides({"nope": 1})
    with pytest.raises(TrainConfigError, match="unknown training setting 'loss.nope'"):
        config.with_overrides({"loss.nope": 1})


def test_invalid_settings():
    with pytest.raises(TrainConfigError, match="scheduler"):
        TrainConfig(scheduler="step")
    with pytest.raises(TrainConfigError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(TrainConfigError, match="sigma"):
        TrainConfig(loss={"sigma": 0})
    with pytest.raises(TrainConfigError, match="bogus"):
        TrainConfig(postprocess={"bogus": 1})
    with pytest.raises(TrainConfigError, match="min_size"):
        TrainConfig(postprocess={"min_size": -1})


def test_parse_overrides():
    parsed = parse_overrides(["width=32", "loss.dice_weight=0", "amp=true", "data_dir=/x y"])
    assert parsed == {"width": 32, "loss.dice_weight": 0, "amp": True, "data_dir": "/x y"}
    assert parse_overrides(["max_minutes="]) == {"max_minutes": None}
    with pytest.raises(TrainConfigError, match="KEY=VALUE"):
        parse_overrides(["width"])


def test_profile_config_reads_params_folder():
    config = profile_config("demo")
    assert config.data_dir is None and config.seed == 0
    gpu = profile_config("monuseg-gpu")
    assert gpu.data_dir.endswith("shared/monuseg") and gpu.data_dir.startswith("/")


def test_plain_values_and_engine_settings():
    settings = TrainConfig(out_dir="runs/x", epochs=3, max_minutes=2.5).engine_settings()
    assert (settings.out_dir, settings.epochs, settings.max_minutes) == ("runs/x", 3, 2.5)
    assert plain_values({"a": (1, None), "b": torch.device("cpu")}) == {"a": [1, None], "b": "cpu"}


def test_norm_is_checked_and_reaches_the_network(tmp_path):
    from nucseg.train import UNetMethod

    with pytest.raises(TrainConfigError, match="norm must be one of"):
        TrainConfig(norm="layer")
    config = TrainConfig(norm="batch", width=4, depth=2, crop_size=64, batch_size=2,
                         crops_per_epoch=4, out_dir=str(tmp_path))  # fmt: skip
    assert UNetMethod(config).networks["net"].norm == "batch"


def _notebook_training_settings(path):
    """Keyword names of the ``settings = dict(...)`` that a notebook builds its TrainConfig from."""
    import ast

    import nbformat

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or "settings = dict(" not in cell.source:
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "settings":
                return {keyword.arg for keyword in node.value.keywords}
    raise AssertionError(f"{path.name}: no `settings = dict(...)` cell")


@pytest.mark.parametrize("name", sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")))
def test_notebook_04_trains_what_nucseg_train_trains(name):
    # A training setting a profile sets but 04 does not pass on would make the notebook train
    # (or refuse to resume) a different model from `nucseg train --profile NAME`.
    import dataclasses

    from nucseg.profiles import load_profile, section_parameters
    from nucseg.report import NOTEBOOKS_DIR

    section = section_parameters(load_profile(name), "04")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    passed = _notebook_training_settings(next(NOTEBOOKS_DIR.glob("04_*.ipynb")))
    assert set(section) & fields <= passed
