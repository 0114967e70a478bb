"""GANLoss: least-squares and binary cross-entropy adversarial losses."""

import pytest
import torch

from nucseg.models import GANLoss


def test_gan_loss_labels_are_buffers_that_move():
    loss = GANLoss(real_label=0.9)
    assert set(loss.state_dict()) == {"real_label", "fake_label"}
    assert float(loss.real_label) == pytest.approx(0.9)
    loss = loss.to(torch.float64)
    assert loss.real_label.dtype == loss.fake_label.dtype == torch.float64
    pred = torch.full((2, 1, 30, 30), 0.9, dtype=torch.float64)
    value = loss(pred, True)
    assert value.dtype == torch.float64
    assert float(value) == pytest.approx(0.0, abs=1e-12)  # 0.9 was stored as float32
    restored = GANLoss()
    restored.load_state_dict(loss.state_dict())
    assert float(restored.real_label) == pytest.approx(0.9)


def test_lsgan_loss_values():
    loss = GANLoss("lsgan")
    assert float(loss(torch.ones(2, 1, 4, 4), True)) == 0.0
    assert float(loss(torch.zeros(2, 1, 4, 4), False)) == 0.0
    assert float(loss(torch.zeros(2, 1, 4, 4), True)) == pytest.approx(1.0)
    pred = torch.tensor([[0.5, -1.0]])
    assert float(loss(pred, False)) == pytest.approx((0.25 + 1.0) / 2)
    assert loss.target(torch.zeros(3, 1, 5, 7), True).shape == (3, 1, 5, 7)
    half = loss(torch.ones(2, 1, 4, 4, dtype=torch.bfloat16, requires_grad=True), False)
    half.backward()
    assert float(half.detach()) == pytest.approx(1.0)


def test_vanilla_loss_is_bce_on_logits():
    loss = GANLoss("vanilla")
    assert float(loss(torch.zeros(1, 1, 3, 3), True)) == pytest.approx(
        float(torch.log(torch.tensor(2.0)))
    )
    assert float(loss(torch.full((1, 1, 3, 3), 30.0), True)) < 1e-10
    assert float(loss(torch.full((1, 1, 3, 3), -30.0), False)) < 1e-10
    assert float(loss(torch.full((1, 1, 3, 3), 30.0), False)) == pytest.approx(30.0)


def test_gan_loss_is_importable_with_the_networks():
    from nucseg.models import gan

    assert gan.GANLoss is GANLoss


def test_gan_loss_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        GANLoss("wgan")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GANLoss("vanilla", real_label=1.5)
    assert float(GANLoss("lsgan", real_label=1.5)(torch.full((2,), 1.5), True)) == 0.0
