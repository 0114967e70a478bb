import numpy as np
import pytest
import torch
from chunked_training import assert_chunks_reach_the_weights_of_one_go

from nucseg import checkpoint as ckpt
from nucseg.errors import EngineError
from nucseg.synth.cyclegan import (
    CycleGANConfig,
    CycleGANMethod,
    UnpairedCrops,
    held_in_samples,
    main,
    mask_image,
    train_cyclegan,
)
from nucseg.train_config import TrainConfigError

TINY = {"crop_size": 32, "batch_size": 2, "crops_per_epoch": 4, "width": 4, "n_blocks": 1,
        "disc_width": 4, "disc_layers": 2, "pool_size": 3, "device": "cpu",
        "threads": 1}  # fmt: skip


@pytest.fixture(scope="module")
def demo(tiny_demo):
    return tiny_demo


def _config(demo, out, **changes):
    return CycleGANConfig(data_dir=str(demo), out_dir=str(out), **{**TINY, "epochs": 2, **changes})


def test_mask_encoding_keeps_touching_nuclei_apart():
    labels = np.zeros((12, 12), np.int32)
    labels[2:10, 2:6], labels[2:10, 6:10] = 1, 2  # two nuclei side by side
    encoded = mask_image(labels, boundary_width=1)
    assert encoded.dtype == np.uint8 and set(np.unique(encoded)) == {0, 255}
    assert (encoded.sum(-1) == 255).all()  # one-hot
    assert (encoded[:, :, 2][2:10, 5] == 255).all() and (encoded[:, :, 2][2:10, 6] == 255).all()
    assert (encoded[:, :, 0][labels == 0] == 255).all()


def test_unpaired_crops_are_one_hot_masks_and_images_in_symmetric_range(demo):
    config = _config(demo, "unused")
    crops = UnpairedCrops(held_in_samples(config), config)
    mask, image = crops[0]
    assert mask.shape == image.shape == (3, 32, 32)
    assert set(mask.unique().tolist()) <= {-1.0, 1.0} and (mask.sum(0) == -1).all()
    assert image.min() >= -1 and image.max() <= 1


def test_learning_rate_constant_then_linear_decay():
    config = CycleGANConfig(epochs=4, decay_epochs=2)
    assert [config.lr_factor(e) for e in range(5)] == pytest.approx([1, 1, 1, 2 / 3, 1 / 3])


def test_trains_four_networks_and_keeps_the_pools(demo, tmp_path):
    result = train_cyclegan(_config(demo, tmp_path))
    assert result.epochs_run == 2 and result.monitor is None
    state = ckpt.load_checkpoint(result.last_path)
    assert set(state["networks"]) == {"G_mask2he", "G_he2mask", "D_he", "D_mask"}
    assert set(state["optimizers"]) == {"G", "D"}
    assert {"G_adv", "cycle", "identity", "D", "lr_G", "lr_D"} <= set(state["history"][-1])
    assert len(state["extra"]["he"]["images"]) == 3  # the pool filled up to its size
    assert "all" in state["meta"]["mask_statistics"]
    generator, _ = ckpt.load_model(result.last_path, network="G_mask2he")
    out = generator(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32) and out.abs().max() <= 1


def test_chunked_training_reaches_the_same_weights(demo, tmp_path):
    # two steps per epoch, two epochs: one step per call
    config = _config(demo, tmp_path / "a")
    assert_chunks_reach_the_weights_of_one_go(train_cyclegan, config, steps=4)


def test_bad_settings_fail_before_training(demo, tmp_path):
    with pytest.raises(TrainConfigError, match="larger than image"):
        train_cyclegan(_config(demo, tmp_path, crop_size=128))
    with pytest.raises(TrainConfigError, match="multiple of 4"):
        _config(demo, tmp_path, crop_size=30)
    with pytest.raises(TrainConfigError, match="device must be"):
        _config(demo, tmp_path, device="tpu")
    with pytest.raises(EngineError, match="one process"):
        CycleGANMethod(_config(demo, tmp_path), rank=0, world=2)


def test_command_line_runs_and_refuses_an_existing_run(demo, tmp_path, capsys):
    args = ["--data", str(demo), "--out", str(tmp_path), "--epochs", "1"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    assert "1 of 1 epochs" in capsys.readouterr().out
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def _nuclei_on_background(nucleus_rgb, background_rgb, side=16):
    """An H&E-like crop (uint8) with one square nucleus, and its mask as the CycleGAN sees it."""
    labels = np.zeros((side, side), np.int32)
    labels[4:12, 4:12] = 1
    image = np.where(labels[..., None] > 0, nucleus_rgb, background_rgb).astype(np.uint8)
    mask = torch.from_numpy(mask_image(labels)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return image, labels, mask


def test_hematoxylin_contrast_is_the_stain_statistics_contrast_in_torch():
    from nucseg.stain import RUIFROK_HED, stain_concentrations
    from nucseg.synth.cyclegan import hematoxylin_contrast

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24, 3)).astype(np.uint8)
    labels = np.zeros((24, 24), np.int32)
    labels[5:15, 3:12] = 1
    h = stain_concentrations(image, RUIFROK_HED)[..., 0]
    expected = h[labels > 0].mean() - h[labels == 0].mean()
    he = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    mask = torch.from_numpy(mask_image(labels)).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert hematoxylin_contrast(he, mask).item() == pytest.approx(expected, abs=1e-4)


def test_the_stain_hinge_tells_dark_nuclei_from_pale_ones_and_pushes_towards_dark():
    from nucseg.synth.cyclegan import hematoxylin_contrast

    dark, pale = (70, 40, 120), (235, 190, 215)  # hematoxylin purple, eosin pink
    for nucleus, background, sign in ((dark, pale, 1), (pale, dark, -1)):
        image, _, mask = _nuclei_on_background(nucleus, background)
        he = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        assert np.sign(hematoxylin_contrast(he, mask).item()) == sign
    empty = -torch.ones_like(mask)
    empty[:, 0] = 1  # all background: no nucleus to compare
    assert torch.isnan(hematoxylin_contrast(he, empty)).all()
    inverted = he.clone().requires_grad_(True)  # pale nuclei: the hinge is active
    before = hematoxylin_contrast(inverted, mask)
    torch.relu(0.1 - before).sum().backward()
    with torch.no_grad():
        after = hematoxylin_contrast(inverted - 0.5 * inverted.grad, mask)
    assert after.item() > before.item()


def test_a_stain_weight_adds_the_hinge_to_the_logged_losses(demo, tmp_path):
    import csv

    plain = train_cyclegan(_config(demo, tmp_path / "plain", epochs=1))
    hinged = train_cyclegan(_config(demo, tmp_path / "hinged", epochs=1, lambda_stain=10.0,
                                    stain_margin=5.0))  # fmt: skip
    rows = [next(csv.DictReader(r.history_path.read_text().splitlines())) for r in (plain, hinged)]
    assert "stain" not in rows[0] and float(rows[1]["stain"]) > 0  # 5 OD: never reached
    with pytest.raises(TrainConfigError, match="stain_margin"):
        _config(demo, tmp_path, stain_margin=-1.0)
