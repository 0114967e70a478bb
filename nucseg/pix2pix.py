"""pix2pix (Isola et al. 2017) for nuclei, as Mahmood et al. 2019 used it: H&E in, a map out.

A conditional GAN learns the map from an H&E crop to its segmentation target:

- the **generator** is the chapter-04 U-Net (``nucseg.models.UNet``): 3-class logits, read as
  softmax probabilities of background, inside and boundary. Sharing it with the supervised U-Net
  makes the comparison a comparison of losses, not of architectures;
- the **conditional PatchGAN** (70x70, spectrally normalised as in Mahmood et al.) sees the H&E
  and a map together, 6 channels, and judges whether the map belongs to the image;
- the generator's loss is ``lambda_gan * GAN + lambda_l1 * L1``, with the maps and the image
  scaled to [-1, 1] as pix2pix does, so ``lambda_l1 = 70`` weighs L1 as Mahmood et al.'s did;
- Adam(beta1 = 0.5), a constant learning rate, then a linear decay to 0 over the last
  ``decay_fraction`` of the steps (their 200 + 200 epochs), and a history pool of generated
  (image, map) pairs for the discriminator (their 64).

**Target.** The 3-class inside / boundary / background map of ``nucseg.data.targets``. Its
boundary class outlines every nucleus, including between touching ones, which is what Mahmood et
al.'s boundary-emphasising map is for, and the U-Net's marker-controlled watershed
(``nucseg.postprocess``) turns it into instances unchanged. So the cGAN, its ablation without a
discriminator and the U-Net are post-processed alike, and AJI differences come from training.

``lambda_gan = 0`` drops the discriminator: the same generator, target, data and budget trained
on lambda * L1 alone. Command line: ``nucseg train-pix2pix``; prediction:
``nucseg predict --method pix2pix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nucseg.engine import TrainResult, train_method
from nucseg.losses import LossConfig
from nucseg.models import build_model
from nucseg.models.gan_loss import GAN_MODES, GANLoss
from nucseg.models.pool import ImagePool
from nucseg.train import UNetMethod, validation_summary
from nucseg.train_config import TrainConfig, TrainConfigError, training_cli

__all__ = ["Pix2PixConfig", "Pix2PixMethod", "main", "train_pix2pix"]

NUM_CLASSES = 3


@dataclass
class Pix2PixConfig(TrainConfig):
    """A pix2pix run: the U-Net generator's settings of ``TrainConfig`` and the GAN's own.

    The U-Net's loss settings (``loss``), ``scheduler``, ``weight_decay`` and ``ema_decay`` do
    not apply and must keep their defaults; every other ``TrainConfig`` field means what it
    means there.

    Attributes:
        lr, beta1: Adam settings of both networks (pix2pix: 2e-4, 0.5).
        lambda_l1: Weight of the L1 term on [-1, 1] maps (Mahmood et al.: 70; pix2pix: 100).
        lambda_gan: Weight of the adversarial term; 0 trains without a discriminator.
        gan_mode: ``"vanilla"`` (pix2pix's cross-entropy) or ``"lsgan"``.
        disc_width, disc_layers: PatchGAN width and stride-2 layers (3 = 70x70 patches).
        spectral_norm: Spectral normalisation in the discriminator (Mahmood et al.'s choice).
        pool_size: Generated pairs in the discriminator's history pool (Mahmood et al.: 64).
        decay_fraction: Share of the steps over which the learning rate decays linearly to 0.

    """

    SECTION = "03"

    out_dir: str = "runs/pix2pix"
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 70.0
    lambda_gan: float = 1.0
    gan_mode: str = "vanilla"
    disc_width: int = 64
    disc_layers: int = 3
    spectral_norm: bool = True
    pool_size: int = 64
    decay_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        unused = TrainConfig()
        checks = [
            (self.loss == LossConfig() and self.scheduler == unused.scheduler
             and self.weight_decay == unused.weight_decay and self.ema_decay == unused.ema_decay,
             "loss, scheduler, weight_decay and ema_decay belong to the U-Net's training and are "
             "not used by pix2pix; leave them at their defaults"),
            (0 <= self.beta1 < 1, f"beta1 must be in [0, 1), got {self.beta1}"),
            (self.lambda_l1 >= 0 and self.lambda_gan >= 0 and self.lambda_l1 + self.lambda_gan > 0,
             f"lambda_l1 and lambda_gan must be >= 0 and not both 0, got {self.lambda_l1}, "
             f"{self.lambda_gan}"),
            (self.gan_mode in GAN_MODES, f"gan_mode must be one of {GAN_MODES}"),
            (min(self.disc_width, self.disc_layers) >= 1,
             "disc_width and disc_layers must be >= 1"),
            (self.pool_size >= 0, f"pool_size must be >= 0, got {self.pool_size}"),
            (0 <= self.decay_fraction <= 1, f"decay_fraction must be in [0, 1], got "
             f"{self.decay_fraction}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(f"Pix2PixConfig: {message}")

    @property
    def adversarial(self) -> bool:
        """Whether a discriminator is trained (``lambda_gan > 0``)."""
        return self.lambda_gan > 0


def as_map(classes_or_probabilities: torch.Tensor) -> torch.Tensor:
    """A target (N, H, W) of class ids, or probabilities (N, 3, H, W), as a [-1, 1] map."""
    if classes_or_probabilities.ndim == 3:
        one_hot = F.one_hot(classes_or_probabilities, NUM_CLASSES).permute(0, 3, 1, 2)
        return one_hot.float() * 2 - 1
    return classes_or_probabilities * 2 - 1


class Pix2PixMethod(UNetMethod):
    """The U-Net generator against a conditional PatchGAN (module docstring).

    Networks ``"net"`` (the generator, named as the U-Net's so that prediction, validation and
    weight export are shared) and ``"D"`` (absent when ``lambda_gan`` is 0). Validation is the
    U-Net's: whole held-out images, post-processed, mean AJI.
    """

    name = "pix2pix"

    def __init__(self, config: Pix2PixConfig, rank: int = 0, world: int = 1) -> None:
        super().__init__(config, rank, world)  # generator, crops, 3-class targets, validation
        self.config: Pix2PixConfig = config
        c, adam = config, {"lr": config.lr, "betas": (config.beta1, 0.999)}
        self.optimizers = {"net": torch.optim.Adam(self.networks["net"].parameters(), **adam)}
        if c.adversarial:
            critic = {"in_channels": 3 + NUM_CLASSES, "width": c.disc_width,
                      "n_layers": c.disc_layers, "spectral_norm": c.spectral_norm}  # fmt: skip
            self.networks["D"] = build_model("patchgan", **critic)
            self.optimizers["D"] = torch.optim.Adam(self.networks["D"].parameters(), **adam)
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
            for name, opt in self.optimizers.items()
        }
        self.gan_loss = GANLoss(c.gan_mode)
        self.pool = ImagePool(c.pool_size, c.seed + rank)

    def lr_factor(self, step: int) -> float:
        """Learning-rate factor after ``step`` steps: 1, then linear to 0 at the last step."""
        decay = round(self.total_steps * self.config.decay_fraction)
        constant = self.total_steps - decay
        return 1.0 if step < constant else max(0.0, 1.0 - (step - constant) / max(decay, 1))

    def attach(self, engine: Any) -> None:
        """Move the networks, the class weights and the GAN labels to the engine's device."""
        super().attach(engine)
        self.gan_loss.to(engine.device)

    def train_step(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of pix2pix: the generator, then the discriminator on real and pooled pairs."""
        c, gan = self.config, self.gan_loss
        images, target = self.to_device(batch[0], image=True), self.to_device(batch[1])
        condition, real_map = images * 2 - 1, as_map(target)
        # 1. Generator: match the target (L1) and make the discriminator call the pair real.
        if c.adversarial:
            self.set_requires_grad("D", False)
        with self.autocast():
            fake_map = as_map(torch.softmax(self.net("net")(images).float(), dim=1))
            l1 = F.l1_loss(fake_map, real_map)
            adversarial = torch.zeros((), device=images.device)
            if c.adversarial:
                adversarial = gan(self.net("D")(torch.cat([condition, fake_map], 1)), True)
            loss_g = c.lambda_gan * adversarial + c.lambda_l1 * l1
        self.backward(loss_g)
        self.step("net")
        if not c.adversarial:
            return {"G": loss_g, "l1": l1}
        # 2. Discriminator: the real pair against a history of generated pairs.
        self.set_requires_grad("D", True)
        old_fake = self.pool.query(torch.cat([condition, fake_map], 1).detach())
        with self.autocast():
            real = gan(self.net("D")(torch.cat([condition, real_map], 1)), True)
            loss_d = 0.5 * (real + gan(self.net("D")(old_fake), False))
        self.backward(loss_d)
        self.step("D")
        return {"G": loss_g, "l1": l1, "G_adv": adversarial, "D": loss_d}

    def extra_state(self) -> dict[str, Any]:
        """The history pool, so that a resumed run draws the same pairs."""
        return {"pool": self.pool.state_dict()}

    def load_extra_state(self, state: Any) -> None:
        """Restore the history pool."""
        if "pool" in state:
            self.pool.load_state_dict(state["pool"])


def train_pix2pix(
    config: Pix2PixConfig,
    resume: bool = False,
    until_epoch: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train pix2pix on the engine (arguments as ``nucseg.train.train``).

    Raises:
        NucsegError: Bad data or settings, a missing device, or a run folder that holds a run
            while neither resuming nor overwriting.

    """
    return train_method(Pix2PixMethod, config, resume, until_epoch, overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    """``nucseg train-pix2pix --profile P [--out DIR] [--resume | --overwrite] [--set K=V]``."""
    return training_cli(
        argv, "nucseg train-pix2pix", Pix2PixConfig, train_pix2pix, validation_summary
    )


if __name__ == "__main__":
    raise SystemExit(main())
