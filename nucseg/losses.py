"""Boundary-focused segmentation loss: weighted cross-entropy plus soft Dice [plus distance MSE].

The three classes are background (0), inside (1) and boundary (2). Boundary pixels, the thin
bands where touching nuclei meet, are rare but decide whether nuclei are split, so they get a
larger class weight. Optionally every pixel is further weighted by the U-Net paper's distance
map (``nucseg.data.targets.unet_weight_map``), which stresses the background gaps between close
nuclei. The weight map depends on the augmented crop, so it is computed per crop in the data
loader workers (about 10-20 ms per 256x256 crop) and passed to :class:`SegmentationLoss`.

With ``distance_weight > 0`` the network has a fourth output channel, an auxiliary head that
regresses the per-nucleus normalised distance map (``nucseg.data.targets.distance_target``)
through a sigmoid; its mean squared error joins the loss. The post-processing can then seed and
flood the watershed on that map (``PostprocessParams.markers="distance"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nucseg.errors import ShapeMismatchError

NUM_CLASSES = 3
#: Output channels of a network with the auxiliary distance head: the 3 classes, then distance.
NUM_CHANNELS_WITH_DISTANCE = NUM_CLASSES + 1
#: Classes whose soft Dice is averaged: inside and boundary (background Dice is nearly always
#: high and would only dilute the signal).
DICE_CLASSES = (1, 2)


@dataclass(frozen=True)
class LossConfig:
    """Settings of :class:`SegmentationLoss`.

    ``LossConfig(boundary_weight=1, dice_weight=0)`` is plain cross-entropy (the ablation).

    Attributes:
        boundary_weight: Cross-entropy class weight of the boundary class (background and
            inside get 1). Ignored when ``class_weights`` is given.
        class_weights: ``(background, inside, boundary)`` cross-entropy class weights; None uses
            ``(1, 1, boundary_weight)``.
        use_distance_weights: Multiply the per-pixel weights by the U-Net distance map (computed
            with ``w0``, ``sigma`` and class weights (1, 1), i.e. ``1 + border term``).
        w0: Amplitude of the U-Net border term.
        sigma: Length scale (pixels) of the U-Net border term.
        dice_weight: Weight of the soft Dice term (0 disables it).
        distance_weight: Weight of the auxiliary distance head's mean squared error; > 0 gives
            the network a fourth output channel (see the module doc), 0 (default) none.

    """

    boundary_weight: float = 5.0
    class_weights: tuple[float, float, float] | None = None
    use_distance_weights: bool = False
    w0: float = 10.0
    sigma: float = 5.0
    dice_weight: float = 1.0
    distance_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if len(weights) != NUM_CLASSES or min(weights) < 0 or max(weights) <= 0:
                raise ValueError(
                    f"class_weights must be 3 non-negative numbers (bg, inside, boundary), "
                    f"not all 0; got {self.class_weights}"
                )
            object.__setattr__(self, "class_weights", weights)  # lists from YAML -> tuple
        weights = (self.boundary_weight, self.dice_weight, self.w0, self.distance_weight)
        if min(weights) < 0 or self.sigma <= 0:
            raise ValueError(f"LossConfig needs non-negative weights and sigma > 0; got {self}")

    def weights(self) -> tuple[float, float, float]:
        """Cross-entropy class weights ``(background, inside, boundary)``."""
        if self.class_weights is not None:
            return self.class_weights
        return (1.0, 1.0, float(self.boundary_weight))

    @property
    def out_channels(self) -> int:
        """Output channels the network needs: 3 classes, plus 1 with the distance head."""
        return NUM_CHANNELS_WITH_DISTANCE if self.distance_weight > 0 else NUM_CLASSES


class LossOutput(NamedTuple):
    """The loss and its parts (the parts are detached, for logging)."""

    total: torch.Tensor
    ce: torch.Tensor
    dice: torch.Tensor
    distance: torch.Tensor


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    classes: Sequence[int] = DICE_CLASSES,
    smooth: float = 1.0,
) -> torch.Tensor:
    """``1 - mean`` over ``classes`` of the soft Dice coefficient, pooled over the batch.

    Args:
        probs: Softmax probabilities (N, C, H, W).
        target: Class indices (N, H, W), int64.
        classes: Class indices to average over.
        smooth: Additive smoothing; keeps the loss defined for classes absent from the batch.

    Returns:
        Scalar tensor in [0, 1].

    """
    index = list(classes)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2)[:, index].to(probs.dtype)
    probs = probs[:, index]
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()


class SegmentationLoss(nn.Module):
    """Weighted cross-entropy + ``dice_weight`` x soft Dice over inside / boundary.

    The cross-entropy is the weighted mean ``sum(w * ce) / sum(w)`` with per-pixel weight
    ``w = class_weight[target] * weight_map`` (``weight_map`` = 1 when not given), which is
    exactly ``F.cross_entropy(logits, target, weight=class_weights)`` without a weight map.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        """Create the loss.

        Args:
            config: Loss settings; defaults to ``LossConfig()``.

        """
        super().__init__()
        self.config = config or LossConfig()
        self.register_buffer(
            "class_weights", torch.tensor(self.config.weights(), dtype=torch.float32)
        )

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight_map: torch.Tensor | None = None,
        distance: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss.

        Args:
            logits: (N, C, H, W) raw scores, C = ``config.out_channels`` (3, or 4 with the
                distance head); any float dtype, computed in float32.
            target: (N, H, W) int64 class indices in {0, 1, 2}.
            weight_map: Optional (N, H, W) per-pixel weights (e.g. the U-Net distance map).
            distance: (N, H, W) distance-map target in [0, 1]; required with the distance head.

        Returns:
            ``LossOutput(total, ce, dice, distance)``; ``total`` carries the gradient.

        Raises:
            ShapeMismatchError: If the shapes do not fit together, or the distance target is
                missing while the config has a distance head.

        """
        channels = self.config.out_channels
        if logits.ndim != 4 or logits.shape[1] != channels:
            raise ShapeMismatchError(
                f"logits must be (N, {channels}, H, W) for this loss, got {tuple(logits.shape)}"
            )
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ShapeMismatchError(
                f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        for name, extra in (("weight map", weight_map), ("distance target", distance)):
            if extra is not None and extra.shape != target.shape:
                raise ShapeMismatchError(
                    f"{name} {tuple(extra.shape)} does not match target {tuple(target.shape)}"
                )
        if channels > NUM_CLASSES and distance is None:
            raise ShapeMismatchError("the loss has a distance head but got no distance target")
        logits = logits.float()
        class_logits = logits[:, :NUM_CLASSES]
        pixel_ce = F.cross_entropy(class_logits, target, reduction="none")
        weights = self.class_weights[target]
        if weight_map is not None:
            weights = weights * weight_map.float()
        ce = (weights * pixel_ce).sum() / weights.sum().clamp_min(1e-12)
        total = ce
        dice = distance_mse = torch.zeros((), device=logits.device)
        if self.config.dice_weight > 0:
            dice = soft_dice_loss(class_logits.softmax(dim=1), target)
            total = total + self.config.dice_weight * dice
        if channels > NUM_CLASSES:
            predicted = torch.sigmoid(logits[:, NUM_CLASSES])
            distance_mse = F.mse_loss(predicted, distance.float())  # type: ignore[union-attr]
            total = total + self.config.distance_weight * distance_mse
        return LossOutput(total, ce.detach(), dice.detach(), distance_mse.detach())
