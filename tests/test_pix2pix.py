import numpy as np
import pytest
import torch
from chunked_training import assert_chunks_reach_the_weights_of_one_go

from nucseg import checkpoint as ckpt
from nucseg import cli
from nucseg.data.images import read_label_map, write_image
from nucseg.errors import NucsegError
from nucseg.infer import Pix2PixPredictor, get_predictor
from nucseg.pix2pix import Pix2PixConfig, Pix2PixMethod, as_map, main, train_pix2pix
from nucseg.train_config import TrainConfigError

TINY = {"crop_size": 32, "batch_size": 2, "crops_per_epoch": 4, "width": 4, "depth": 2,
        "disc_width": 4, "disc_layers": 2, "pool_size": 3, "device": "cpu", "threads": 1,
        "elastic": False, "val_tile": 64}  # fmt: skip


@pytest.fixture(scope="module")
def demo(tiny_demo):
    return tiny_demo


def _config(demo, out, **changes):
    return Pix2PixConfig(data_dir=str(demo), out_dir=str(out), **{**TINY, "epochs": 2, **changes})


def test_maps_are_one_hot_or_probabilities_in_symmetric_range():
    classes = torch.tensor([[[0, 1], [2, 1]]])
    target = as_map(classes)
    assert target.shape == (1, 3, 2, 2) and set(target.unique().tolist()) == {-1.0, 1.0}
    assert target[0, :, 1, 0].tolist() == [-1, -1, 1]
    probabilities = torch.full((1, 3, 2, 2), 1 / 3)
    assert torch.allclose(as_map(probabilities), torch.full_like(probabilities, -1 / 3))


def test_learning_rate_constant_then_linear_decay_to_zero(demo, tmp_path):
    method = Pix2PixMethod(_config(demo, tmp_path, epochs=4, decay_fraction=0.5))
    assert method.total_steps == 8
    factors = [method.lr_factor(s) for s in range(9)]
    assert factors == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0])


def test_trains_generator_and_conditional_discriminator(demo, tmp_path):
    result = train_pix2pix(_config(demo, tmp_path))
    assert result.epochs_run == 2 and result.monitor == "val_aji"
    state = ckpt.load_checkpoint(result.last_path)
    assert set(state["networks"]) == {"net", "D"}
    assert state["networks"]["D"]["spec"]["kwargs"]["in_channels"] == 6  # H&E + map
    assert {"G", "l1", "G_adv", "D", "val_aji", "lr_net", "lr_D"} <= set(state["history"][-1])
    assert len(state["extra"]["pool"]["images"]) == 3
    assert state["history"][-1]["lr_net"] < state["history"][0]["lr_net"]


def test_without_a_discriminator_only_the_generator_trains(demo, tmp_path):
    result = train_pix2pix(_config(demo, tmp_path, lambda_gan=0.0))
    state = ckpt.load_checkpoint(result.last_path)
    assert set(state["networks"]) == {"net"}
    assert "D" not in state["history"][-1] and "l1" in state["history"][-1]


def test_the_adversarial_term_alone_moves_the_generator(demo, tmp_path):
    method = Pix2PixMethod(_config(demo, tmp_path, lambda_l1=0.0))
    from nucseg.engine import Engine

    Engine(method, method.config.engine_settings())  # attaches the method
    before = [p.detach().clone() for p in method.networks["net"].parameters()]
    batch = next(iter(method.loader(0)))
    parts = method.train_step(batch)
    assert parts["l1"] > 0 and parts["G_adv"] > 0
    after = method.networks["net"].parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_chunked_training_reaches_the_same_weights(demo, tmp_path):
    # two steps per epoch, two epochs: one step per call
    config = _config(demo, tmp_path / "a")
    assert_chunks_reach_the_weights_of_one_go(train_pix2pix, config, steps=4)


def test_settings_it_does_not_use_are_refused(demo, tmp_path):
    with pytest.raises(TrainConfigError, match="not used by pix2pix"):
        _config(demo, tmp_path, loss={"boundary_weight": 2.0})
    with pytest.raises(TrainConfigError, match="not used by pix2pix"):
        _config(demo, tmp_path, ema_decay=0.99)
    with pytest.raises(TrainConfigError, match="not both 0"):
        _config(demo, tmp_path, lambda_gan=0.0, lambda_l1=0.0)
    with pytest.raises(TrainConfigError, match="gan_mode"):
        _config(demo, tmp_path, gan_mode="wgan")
    with pytest.raises(TrainConfigError, match="device must be"):
        _config(demo, tmp_path, device="tpu")


def test_exported_generator_predicts_instances(demo, tmp_path):
    result = train_pix2pix(_config(demo, tmp_path / "run"))
    weights = ckpt.export_weights(result.best_path, tmp_path / "p2p.pt", network="net")
    predictor = get_predictor("pix2pix", weights=weights, device="cpu", tile=64)
    assert isinstance(predictor, Pix2PixPredictor)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    labels = predictor(image)
    assert labels.shape == (70, 90) and labels.dtype == np.int32
    write_image(tmp_path / "he.png", image)
    args = ["predict", "--method", "pix2pix", "--weights", str(weights), "--device", "cpu"]
    assert cli.main([*args, str(tmp_path / "he.png"), "--out", str(tmp_path / "out")]) == 0
    assert read_label_map(tmp_path / "out" / "he.tif").shape == (70, 90)


def test_missing_default_weights_say_how_to_make_them(monkeypatch, tmp_path):
    monkeypatch.setattr(Pix2PixPredictor, "default_weights", tmp_path / "none.pt")
    with pytest.raises(NucsegError, match="nucseg train-pix2pix"):
        get_predictor("pix2pix")


def test_command_line_trains_and_refuses_an_existing_run(demo, tmp_path, capsys):
    args = ["--data", str(demo), "--out", str(tmp_path), "--epochs", "1"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    assert "best val AJI" in capsys.readouterr().out
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
