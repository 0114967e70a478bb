"""Tiled whole-image prediction: shapes, normalisation, blending and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nucseg.runtime import image_to_tensor
from nucseg.tiling import (
    TilingError,
    axis_tiles,
    count_tiles,
    default_overlap,
    predict_probabilities,
    predict_tiled,
    tta_transforms,
    window_1d,
)


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _pixelwise_model(seed=0):
    """A 1x1 convolution: translation-equivariant with no border effects."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, 3, kernel_size=1)


class _SymmetricConv(nn.Module):
    """3x3 convolutions whose kernels are invariant under the 8 dihedral transforms."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        corner, edge, centre = torch.randn(3, 3, 3, 1, 1, generator=g)
        layout = torch.tensor([[0, 1, 0], [1, 2, 1], [0, 1, 0]])
        parts = torch.stack([corner, edge, centre])  # (3 kinds, out, in, 1, 1)
        self.weight = nn.Parameter(parts[layout].squeeze(-1).squeeze(-1).permute(2, 3, 0, 1))

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, padding=1)


def _whole(model, image):
    with torch.no_grad():
        return torch.softmax(model(image_to_tensor(image)[None]), dim=1)[0].numpy()


@pytest.mark.parametrize("shape", [(40, 50), (64, 64), (150, 100), (40, 200), (97, 131)])
def test_shape_and_sum_to_one(shape):
    image = _image(*shape)
    probs = predict_probabilities(_pixelwise_model(), image, tile=64, overlap=16)
    assert probs.shape == (3, *shape) and probs.dtype == np.float32
    assert probs.flags.c_contiguous
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert probs.min() >= 0


@pytest.mark.parametrize("shape,batch", [((150, 100), 1), ((200, 170), 3), ((64, 64), 4)])
def test_tiled_equals_whole_image_for_pixelwise_model(shape, batch):
    model = _pixelwise_model(1)
    image = _image(*shape, seed=1)
    tiled = predict_probabilities(model, image, tile=64, overlap=24, batch_size=batch)
    np.testing.assert_allclose(tiled, _whole(model, image), atol=1e-5)


def test_small_image_is_reflect_padded_to_the_multiple_then_cropped():
    model = _SymmetricConv()
    image = _image(30, 20)
    probs = predict_probabilities(model, image, tile=64, overlap=16, multiple=16)
    padded = np.pad(image, ((0, 2), (0, 12), (0, 0)), mode="reflect")
    np.testing.assert_allclose(probs, _whole(model, padded)[:, :30, :20], atol=1e-5)


def test_blending_beats_border_artifacts():
    # With zero-padded 3x3 convs, tile edges are wrong; the window keeps the error near 0.
    model = _SymmetricConv(2)
    image = _image(160, 160, seed=2)
    whole = _whole(model, image)
    blended = predict_probabilities(model, image, tile=64, overlap=32)
    assert np.abs(blended - whole)[:, 1:-1, 1:-1].max() < 0.05


@pytest.mark.parametrize("tta", [True, "dihedral", "flips"])
def test_tta_with_equivariant_model_equals_plain(tta):
    model = _SymmetricConv(3)
    image = _image(100, 90, seed=3)
    plain = predict_probabilities(model, image, tile=64, overlap=16)
    augmented = predict_probabilities(model, image, tile=64, overlap=16, tta=tta)
    np.testing.assert_allclose(augmented, plain, atol=1e-5)


def test_tta_averages_transformed_predictions():
    # A non-equivariant model: TTA output equals the mean of predictions on transformed images.
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, kernel_size=3, padding=1)
    image = _image(64, 64, seed=4)
    expected = np.zeros((3, 64, 64), np.float32)
    for flip_lr, flip_ud in [(False, False), (True, False), (False, True), (True, True)]:
        view = image[:, ::-1] if flip_lr else image
        view = view[::-1] if flip_ud else view
        p = predict_probabilities(model, view.copy(), tile=64, overlap=0)
        p = p[:, :, ::-1] if flip_lr else p
        expected += (p[:, ::-1] if flip_ud else p) / 4
    got = predict_probabilities(model, image, tile=64, overlap=0, tta="flips")
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_tta_transforms_are_distinct():
    assert tta_transforms(False) == [(0, False)]
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    from nucseg.tiling import _dihedral, _undo_dihedral

    for mode, n in [(True, 8), ("flips", 4)]:
        views = {tuple(_dihedral(x, k, f).flatten().tolist()) for k, f in tta_transforms(mode)}
        assert len(views) == n
        for k, f in tta_transforms(mode):
            assert torch.equal(_undo_dihedral(_dihedral(x, k, f), k, f), x)
    with pytest.raises(TilingError, match="tta"):
        tta_transforms("rot")


def test_window():
    w = window_1d(64, 16)
    assert w.shape == (64,) and np.allclose(w, w[::-1]) and w[32] == 1.0 and w.min() >= 1e-2
    assert (window_1d(8, 0) == 1).all()


def test_axis_tiles_examples():
    assert axis_tiles(1000, 512, 64, 32) == (384, [0, 308, 616])
    assert axis_tiles(1000, 256, 64, 32) == (256, [0, 186, 372, 558, 744])
    assert axis_tiles(1000, 1024, 64, 32) == (1024, [0])
    assert axis_tiles(64, 64, 16) == (64, [0])
    assert axis_tiles(30, 64, 16, 16) == (32, [0])
    assert count_tiles(1000, 1000, 512, 64, 32) == (9, 384, 384)
    assert count_tiles(4096, 4096, 512, 64, 32) == (81, 512, 512)


@pytest.mark.parametrize("multiple", [1, 8, 32])
def test_axis_tiles_cover_with_overlap(multiple):
    for length in [*range(1, 300, 7), 999, 1000, 1001, 4096]:
        for tile, overlap in [(64, 0), (64, 16), (128, 63), (256, 64)]:
            tile = max(tile // multiple, 1) * multiple
            if overlap >= tile:
                continue
            side, starts = axis_tiles(length, tile, overlap, multiple)
            assert side % multiple == 0 and side <= max(tile, length + multiple)
            assert starts[0] == 0 and starts[-1] + side == max(length, side)
            gaps = np.diff(starts)
            assert (gaps > 0).all() and (side - gaps >= overlap).all(), (length, tile, overlap)


def test_bad_settings_and_bad_model_output():
    model = _pixelwise_model()
    image = _image(32, 32)
    with pytest.raises(TilingError, match="overlap"):
        predict_probabilities(model, image, tile=32, overlap=32)
    with pytest.raises(TilingError, match="RGB"):
        predict_probabilities(model, image[..., 0], tile=32, overlap=8)
    with pytest.raises(TilingError, match="model output has shape"):
        predict_probabilities(nn.MaxPool2d(2), image, tile=32, overlap=8)
    with pytest.raises(TilingError, match="multiple of 16"):
        predict_probabilities(model, image, tile=40, overlap=8, multiple=16)


def test_small_unet_tiled_close_to_whole_image():
    from nucseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=2)
    image = _image(150, 120, seed=6)
    tiled = predict_probabilities(model, image, tile=64, overlap=16, batch_size=3)
    assert tiled.shape == (3, 150, 120)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    whole = predict_probabilities(model, image, tile=256, overlap=16)  # one padded tile
    assert np.abs(tiled - whole).mean() < 0.05


def test_train_mode_is_restored():
    model = _pixelwise_model()
    model.train()
    predict_probabilities(model, _image(32, 32), tile=32, overlap=8)
    assert model.training
    model.eval()
    predict_probabilities(model, _image(32, 32), tile=32, overlap=8)
    assert not model.training


def test_output_hook_and_input_range():
    # A generator-like net: identity on its input, so the tiled output is the scaled image.
    model = nn.Identity()
    image = _image(40, 56, seed=3)
    unit = predict_tiled(model, image, tile=32, overlap=8, output="identity")
    np.testing.assert_allclose(unit, image.transpose(2, 0, 1) / 255.0, atol=1e-6)
    symmetric = predict_tiled(model, image, tile=32, overlap=8, output="identity",
                              value_range="symmetric")  # fmt: skip
    np.testing.assert_allclose(symmetric, unit * 2 - 1, atol=1e-6)
    doubled = predict_tiled(model, image, tile=32, overlap=8, output=lambda t: 2 * t)
    np.testing.assert_allclose(doubled, 2 * unit, atol=1e-6)
    with pytest.raises(TilingError, match="output must be one of"):
        predict_tiled(model, image, tile=32, overlap=8, output="tanh-ish")


def test_default_overlap_follows_the_receptive_field():
    from nucseg.models import build_model

    unet = build_model("unet", width=2, depth=3)
    assert default_overlap(unet, 1024) == -(-unet.receptive_field // 2)
    assert default_overlap(unet, 64) == 31  # capped below half a tile
    assert default_overlap(nn.Identity(), 512) == 64  # no declared field: the fixed default


def test_a_distance_channel_gets_a_sigmoid_and_the_classes_a_softmax():
    torch.manual_seed(3)
    model = nn.Conv2d(3, 4, kernel_size=1)
    image = _image(40, 56)
    probs = predict_probabilities(model, image, tile=32, overlap=8)
    assert probs.shape == (4, 40, 56)
    with torch.no_grad():
        logits = model(image_to_tensor(image)[None])[0]
    expected = torch.cat([torch.softmax(logits[:3], 0), torch.sigmoid(logits[3:])]).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs[:3].sum(axis=0), 1.0, atol=1e-5)
