"""Adversarial loss against constant real / fake labels, for the GAN methods.

``"lsgan"`` is the least-squares loss of Mao et al. (2017), CycleGAN's choice: the mean squared
error of the discriminator's output to the label, which keeps gradients alive for fakes far on
the right side of the boundary. ``"vanilla"`` is the original loss of Goodfellow et al. (2014),
pix2pix's: binary cross-entropy on logits (so the discriminators have no sigmoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("lsgan", "vanilla")


class GANLoss(nn.Module):
    """Adversarial loss of a discriminator's output against a constant real or fake label.

    ``"lsgan"`` is the mean squared error to the label (Mao et al. 2017; CycleGAN's choice);
    ``"vanilla"`` is binary cross-entropy on logits (Goodfellow et al. 2014; pix2pix's). The
    labels are buffers: ``.to(device)`` moves them and they appear in the ``state_dict``.

    Attributes:
        mode: ``"lsgan"`` or ``"vanilla"``.
        real_label: Target for real samples (0-dim buffer).
        fake_label: Target for fake samples (0-dim buffer).

    """

    real_label: torch.Tensor
    fake_label: torch.Tensor

    def __init__(
        self, mode: str = "lsgan", real_label: float = 1.0, fake_label: float = 0.0
    ) -> None:
        """Set the loss.

        Args:
            mode: ``"lsgan"`` or ``"vanilla"``.
            real_label: Target for real samples (e.g. 0.9 for one-sided label smoothing).
            fake_label: Target for fake samples.

        Raises:
            ValueError: Unknown mode, or a ``"vanilla"`` label outside [0, 1].

        """
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"GAN loss mode must be one of {GAN_MODES}, got {mode!r}")
        if mode == "vanilla" and not (0 <= real_label <= 1 and 0 <= fake_label <= 1):
            raise ValueError(
                f"vanilla GAN labels are probabilities in [0, 1], got {real_label=}, {fake_label=}"
            )
        self.mode = mode
        self.register_buffer("real_label", torch.tensor(float(real_label)))
        self.register_buffer("fake_label", torch.tensor(float(fake_label)))

    def target(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """The label expanded to the prediction's shape, in its dtype (no copy)."""
        label = self.real_label if target_is_real else self.fake_label
        if label.device != prediction.device:
            raise ValueError(
                f"GANLoss is on {label.device} but the prediction is on {prediction.device}; "
                "move the loss with .to(device)"
            )
        return label.to(prediction.dtype).expand_as(prediction)

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Mean loss of ``prediction`` (a discriminator's logits) against the label.

        Args:
            prediction: Discriminator output of any shape.
            target_is_real: Compare with the real label (True) or the fake one.

        Returns:
            Scalar loss.

        """
        target = self.target(prediction, target_is_real)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)
