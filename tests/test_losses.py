import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nucseg.data.targets import three_class_target, unet_weight_map
from nucseg.errors import ShapeMismatchError
from nucseg.losses import LossConfig, SegmentationLoss, soft_dice_loss

PLAIN_CE = LossConfig(boundary_weight=1, dice_weight=0, use_distance_weights=False)


def _batch(seed=0, n=2, size=16):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, size, size, generator=g)
    target = torch.randint(0, 3, (n, size, size), generator=g)
    return logits, target


def test_plain_ce_config_equals_cross_entropy():
    logits, target = _batch()
    out = SegmentationLoss(PLAIN_CE)(logits, target)
    expected = F.cross_entropy(logits, target)
    assert torch.allclose(out.total, expected, atol=1e-6)
    assert torch.allclose(out.ce, expected, atol=1e-6) and out.dice == 0


def test_class_weighted_ce_equals_weighted_cross_entropy():
    logits, target = _batch(1)
    config = LossConfig(class_weights=(0.5, 1.0, 3.0), dice_weight=0)
    out = SegmentationLoss(config)(logits, target)
    expected = F.cross_entropy(logits, target, weight=torch.tensor([0.5, 1.0, 3.0]))
    assert torch.allclose(out.total, expected, atol=1e-6)


def test_boundary_weight_increases_boundary_pixel_contribution():
    logits, target = _batch(2)
    boundary = target == 2

    def boundary_share(weight):
        x = logits.clone().requires_grad_(True)
        criterion = SegmentationLoss(LossConfig(boundary_weight=weight, dice_weight=0))
        criterion(x, target).total.backward()
        grad = x.grad.abs().sum(dim=1)
        return (grad[boundary].sum() / grad.sum()).item()

    plain, weighted = boundary_share(1.0), boundary_share(5.0)
    assert weighted > plain * 1.5
    assert LossConfig().weights() == (1.0, 1.0, 5.0)


def test_distance_weights_emphasise_gaps_between_nuclei():
    instances = np.zeros((32, 32), dtype=np.int32)
    instances[8:24, 4:14] = 1
    instances[8:24, 17:28] = 2  # a 3-pixel gap at columns 14-16
    target = torch.from_numpy(three_class_target(instances).astype(np.int64))[None]
    config = LossConfig(use_distance_weights=True, dice_weight=0)
    weights = torch.from_numpy(unet_weight_map(instances, config.w0, config.sigma, (1, 1)))[None]
    assert weights[0, 16, 15] > 5 and weights[0, 0, 0] < 1.1

    logits = torch.zeros(1, 3, 32, 32, requires_grad=True)
    SegmentationLoss(config)(logits, target, weights).total.backward()
    grad = logits.grad.abs().sum(dim=1)[0]
    assert grad[16, 15] > 5 * grad[0, 0]  # the gap pixel outweighs far background
    # With a uniform map the loss is the map-less loss.
    a = SegmentationLoss(config)(logits, target, torch.full_like(weights, 3.0)).total
    b = SegmentationLoss(config)(logits, target).total
    assert torch.allclose(a, b)


def test_soft_dice_perfect_and_wrong():
    target = torch.tensor([[[0, 1], [2, 1]]])
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(perfect, target, smooth=0).item() == pytest.approx(0.0)
    wrong = F.one_hot(torch.zeros_like(target), 3).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(wrong, target, smooth=0).item() == pytest.approx(1.0)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    logits, target = _batch(3, n=2, size=8)
    param = torch.nn.Parameter(torch.zeros_like(logits))
    criterion = SegmentationLoss(LossConfig())
    optimizer = torch.optim.Adam([param], lr=0.1)
    losses = []
    for _ in range(20):
        out = criterion(param, target)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(out.total.item())
    assert losses[-1] < 0.5 * losses[0]
    assert out.dice > 0 and out.ce > 0 and not out.ce.requires_grad


def test_half_precision_logits_are_scored_in_float32():
    logits, target = _batch(4)
    out = SegmentationLoss()(logits.half(), target)
    assert out.total.dtype == torch.float32
    assert torch.allclose(out.total, SegmentationLoss()(logits, target).total, atol=1e-2)


def test_shape_and_config_errors():
    logits, target = _batch()
    loss = SegmentationLoss()
    with pytest.raises(ShapeMismatchError, match="target"):
        loss(logits, target[:, :8])
    with pytest.raises(ShapeMismatchError, match="logits"):
        loss(logits[:, :2], target)
    with pytest.raises(ShapeMismatchError, match="weight map"):
        loss(logits, target, torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="class_weights"):
        LossConfig(class_weights=(1, 2))
    with pytest.raises(ValueError, match="sigma"):
        LossConfig(sigma=0)
    assert LossConfig(class_weights=[1, 2, 3]).class_weights == (1.0, 2.0, 3.0)


def test_distance_head_adds_its_mean_squared_error():
    logits, target = _batch(5)
    g = torch.Generator().manual_seed(6)
    head = torch.randn(2, 1, 16, 16, generator=g, requires_grad=True)
    distance = torch.rand(2, 16, 16, generator=g)
    config = LossConfig(distance_weight=2.0)
    assert config.out_channels == 4 and LossConfig().out_channels == 3
    out = SegmentationLoss(config)(torch.cat([logits, head], dim=1), target, None, distance)
    classes_only = SegmentationLoss(LossConfig())(logits, target)
    expected = F.mse_loss(torch.sigmoid(head[:, 0]), distance)
    assert torch.allclose(out.distance, expected)
    assert torch.allclose(out.total, classes_only.total + 2.0 * expected, atol=1e-6)
    out.total.backward()
    assert head.grad is not None and head.grad.abs().sum() > 0


def test_distance_head_needs_its_channel_and_its_target():
    logits, target = _batch(7)
    with_head = torch.cat([logits, torch.zeros(2, 1, 16, 16)], dim=1)
    loss = SegmentationLoss(LossConfig(distance_weight=1.0))
    with pytest.raises(ShapeMismatchError, match=r"\(N, 4, H, W\)"):
        loss(logits, target, None, torch.zeros(2, 16, 16))
    with pytest.raises(ShapeMismatchError, match="no distance target"):
        loss(with_head, target)
    with pytest.raises(ShapeMismatchError, match="distance target"):
        loss(with_head, target, None, torch.zeros(2, 8, 8))
    with pytest.raises(ShapeMismatchError, match=r"\(N, 3, H, W\)"):
        SegmentationLoss()(with_head, target)
    with pytest.raises(ValueError):
        LossConfig(distance_weight=-1)
