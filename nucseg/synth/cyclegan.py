"""The CycleGAN of the synthesis chapter: nucleus masks <-> H&E, as a method on the engine.

Zhu et al. 2017 translate between two unpaired domains with two generators and two
discriminators. Here domain A is a nucleus mask and domain B an H&E crop, taken at independent
random positions of the training images (so no crop's mask belongs to its image):

- ``G_mask2he`` turns a mask into H&E (the synthesis direction), ``G_he2mask`` goes back;
- ``D_he`` and ``D_mask`` (70x70 PatchGANs) tell real crops from generated ones;
- losses: least-squares GAN, cycle consistency (``lambda_cycle``, L1) and identity
  (``lambda_identity`` times ``lambda_cycle``, L1), and optionally a stain hinge
  (``lambda_stain``, below);
- Adam(beta1 = 0.5), a constant learning rate, then a linear decay to 0 over ``decay_epochs``
  (stepped per epoch), and a history pool of generated images per discriminator.

**Mask encoding.** A mask is fed as a 3-channel image: one-hot background, inside and boundary
(the U-Net's 3-class target, ``nucseg.data.targets.three_class_target``), scaled to [-1, 1]
like the H&E. A foreground channel alone would merge touching nuclei into one blob, and the
generator would paint them as one; the boundary channel keeps every nucleus outlined, so the
instance map it came from stays the ground truth of the synthetic image. Three channels also
make the identity loss defined (both domains are 3-channel images). :func:`mask_image` builds
it as a uint8 RGB picture, so synthesis reuses the tiled inference of ``nucseg.tiling``.

**Stain polarity.** Nothing in Zhu et al.'s losses says which way round the stains go: a
generator that paints nuclei pale on a dark background is as cycle-consistent as one that paints
them dark, and a run of ``monuseg-cpu`` did exactly that (nuclear hematoxylin contrast -0.17 OD
against +0.32 in real crops). With ``lambda_stain`` > 0 the mask-to-H&E generator also pays
``lambda_stain * relu(stain_margin - contrast)`` per crop, where ``contrast`` is the mean
hematoxylin optical density (Ruifrok unmixing, as ``nucseg.synth.stain_stats``) of the mask's
nucleus pixels minus that of its background pixels (:func:`hematoxylin_contrast`). The hinge is
zero for any crop whose nuclei are at least ``stain_margin`` darker in hematoxylin, so it rules
out the inverted solution without pulling the contrast towards a target.

The generators are held out from the U-Net's validation images: training uses the same
``val_fraction`` split by organ, so a comparison of U-Nets trained with and without synthetic
pairs validates on images neither ever saw. Command line: ``nucseg train-cyclegan``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from nucseg.data.augment import build_augmentation
from nucseg.data.dataset import CropDataset, fingerprint_samples
from nucseg.data.monuseg import Sample, load_split, split_by_organ
from nucseg.data.source import resolve_data_root
from nucseg.data.targets import three_class_target
from nucseg.engine import Method, TrainResult, train_method
from nucseg.errors import EngineError
from nucseg.models import build_model
from nucseg.models.gan import GANLoss
from nucseg.models.gan_loss import GAN_MODES
from nucseg.models.pool import ImagePool
from nucseg.stain import RUIFROK_HED, unmixing_matrix
from nucseg.train_config import (
    RunSettings,
    TrainConfigError,
    check_types,
    plain_values,
    progress_line,
    resolve_device_name,
    training_cli,
)

__all__ = ["CycleGANConfig", "CycleGANMethod", "main", "mask_image", "train_cyclegan"]


def mask_image(instances: np.ndarray, boundary_width: int = 2) -> np.ndarray:
    """The CycleGAN's mask encoding as a uint8 RGB image: background, inside, boundary one-hot.

    Args:
        instances: Instance map (H, W), 0 = background.
        boundary_width: Width of the boundary band (see ``three_class_target``).

    Returns:
        uint8 (H, W, 3): channel 0 is 255 on background, 1 inside nuclei, 2 on their boundary.

    """
    classes = three_class_target(instances, boundary_width=boundary_width)
    return np.eye(3, dtype=np.uint8)[classes] * np.uint8(255)


@dataclass
class CycleGANConfig(RunSettings):
    """Everything a CycleGAN run depends on (stored in its checkpoints).

    Attributes:
        data_dir: MoNuSeg folder (any layout); None = the embedded demo data. Training images
            only, less the U-Net's validation images (``val_fraction``, split by organ).
        out_dir: Where ``last.pt`` (= ``best.pt``) and ``history.csv`` go.
        crop_size, batch_size, crops_per_epoch: Unpaired crops (a multiple of 4 pixels).
        epochs, decay_epochs: Epochs in all, and the last ones over which the learning rate
            decays linearly to 0 (None = half of them, as the paper's 100 + 100).
        width, n_blocks: Generator width and residual blocks (paper: 64 and 9 at 256 px).
        disc_width, disc_layers: PatchGAN width and strided layers (3 = 70x70 patches).
        lr, beta1: Adam settings (paper: 2e-4, 0.5).
        lambda_cycle, lambda_identity: Loss weights (paper: 10 and 0.5).
        lambda_stain, stain_margin: Weight of the stain-polarity hinge (module docstring; 0 =
            the paper's losses only) and the hematoxylin contrast it asks for, in OD units.
        pool_size: Generated images kept per discriminator's history pool (paper: 50).
        gan_mode: ``"lsgan"`` (paper) or ``"vanilla"``.
        boundary_width: Boundary band of the mask encoding, in pixels.
        val_fraction, seed: The held-out split (shared with the U-Net) and the seed.
        validate_every, max_minutes, device, amp, channels_last, threads, num_workers: As in
            ``nucseg.train_config.TrainConfig``.

    """

    SECTION = "02"

    data_dir: str | None = None
    out_dir: str = "runs/cyclegan"
    crop_size: int = 128
    batch_size: int = 1
    crops_per_epoch: int = 200
    epochs: int = 20
    decay_epochs: int | None = None
    width: int = 32
    n_blocks: int = 6
    disc_width: int = 64
    disc_layers: int = 3
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    lambda_stain: float = 0.0
    stain_margin: float = 0.1
    pool_size: int = 50
    gan_mode: str = "lsgan"
    boundary_width: int = 2
    val_fraction: float = 0.2
    seed: int = 0
    validate_every: int = 1
    max_minutes: float | None = None
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    threads: int | None = None
    num_workers: int | None = None

    def __post_init__(self) -> None:
        check_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        decay = self.epochs // 2 if self.decay_epochs is None else self.decay_epochs
        checks = [
            (self.crop_size >= 16 and self.crop_size % 4 == 0,
             f"crop_size must be a multiple of 4 and >= 16, got {self.crop_size}"),
            (min(self.batch_size, self.width, self.n_blocks, self.disc_width, self.epochs,
                 self.disc_layers) >= 1, "sizes and epochs must be >= 1"),
            (self.crops_per_epoch >= self.batch_size,
             f"crops_per_epoch {self.crops_per_epoch} < batch_size {self.batch_size}"),
            (0 <= decay <= self.epochs, f"decay_epochs must be in [0, epochs], got {decay}"),
            (self.lr > 0 and 0 <= self.beta1 < 1, "lr > 0 and 0 <= beta1 < 1"),
            (min(self.lambda_cycle, self.lambda_identity, self.lambda_stain, self.stain_margin,
                 self.pool_size) >= 0, "loss weights, stain_margin and pool_size must be >= 0"),
            (self.gan_mode in GAN_MODES, f"gan_mode must be one of {GAN_MODES}"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.max_minutes is None or self.max_minutes > 0,
             f"max_minutes must be > 0 (or None: no limit), got {self.max_minutes}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(f"CycleGANConfig: {message}")
        resolve_device_name(self.device)

    def lr_factor(self, epoch: int) -> float:
        """Learning-rate factor after ``epoch`` completed epochs: 1, then linear to 0."""
        decay = self.epochs // 2 if self.decay_epochs is None else self.decay_epochs
        constant = self.epochs - decay
        return 1.0 if epoch < constant else max(0.0, 1.0 - (epoch - constant) / (decay + 1))


#: Row of the Ruifrok unmixing that gives hematoxylin, computed once.
_HEMATOXYLIN_UNMIX = torch.from_numpy(unmixing_matrix(RUIFROK_HED)[0].copy())


def hematoxylin_contrast(he: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per crop, mean hematoxylin OD of the mask's nucleus pixels minus its background's.

    Args:
        he: H&E crops (N, 3, H, W) in [-1, 1].
        mask: Their masks as the CycleGAN encodes them (N, 3, H, W), one-hot background,
            inside, boundary in [-1, 1]; inside and boundary are nucleus pixels.

    Returns:
        (N,) float32 contrasts in OD units (Ruifrok unmixing, base-10 OD); NaN for a crop
        without nucleus or without background pixels.

    """
    intensity = ((he.float() + 1) / 2).clamp(1 / 255, 1)
    unmix = _HEMATOXYLIN_UNMIX.to(he.device).view(1, 3, 1, 1)
    h = (-torch.log10(intensity) * unmix).sum(1)
    nuclei = (mask[:, 0] < 0).float()  # not background
    means, counts = [], []
    for region in (nuclei, 1 - nuclei):
        counts.append(region.sum((1, 2)))
        means.append((h * region).sum((1, 2)) / counts[-1].clamp_min(1))
    both = (counts[0] > 0) & (counts[1] > 0)
    return torch.where(both, means[0] - means[1], torch.full_like(means[0], float("nan")))


def held_in_samples(config: CycleGANConfig) -> list[Sample]:
    """The training images less the U-Net's validation images (same split, same seed)."""
    samples = load_split(resolve_data_root(config.data_dir), "train")
    ids, organs = [s.image_id for s in samples], [s.organ for s in samples]
    _, val_ids = split_by_organ(ids, organs, config.val_fraction, config.seed)
    kept = [s for s in samples if s.image_id not in set(val_ids)]
    small = [s for s in kept if min(s.instances.shape) < config.crop_size]
    if small:
        raise TrainConfigError(
            f"crop_size {config.crop_size} is larger than image {small[0].image_id} "
            f"{small[0].instances.shape}; choose crop_size <= {min(small[0].instances.shape)}"
        )
    return kept


class UnpairedCrops(Dataset):
    """Item ``i``: a mask crop and an H&E crop from independent positions, both in [-1, 1]."""

    def __init__(self, samples: Sequence[Sample], config: CycleGANConfig) -> None:
        augment = build_augmentation(flip=True, rot90=True, elastic=False, hed_jitter=0.0)
        common = {"crop_size": config.crop_size, "crops_per_epoch": config.crops_per_epoch,
                  "transform": augment, "boundary_width": config.boundary_width}  # fmt: skip
        self.masks = CropDataset(samples, seed=config.seed, target="three_class", **common)
        self.images = CropDataset(samples, seed=config.seed + 1, **common)

    def set_epoch(self, epoch: int) -> None:
        """New positions and augmentations for both domains."""
        self.masks.set_epoch(epoch)
        self.images.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        classes = self.masks[index][1].as_subclass(torch.Tensor)[0]
        mask = F.one_hot(classes, 3).permute(2, 0, 1).float()
        image = self.images[index][0].as_subclass(torch.Tensor)
        return mask * 2 - 1, image * 2 - 1


class CycleGANMethod(Method):
    """Two generators and two PatchGANs trained as in Zhu et al. 2017 (module docstring)."""

    name = "cyclegan"
    monitor = None  # no validation score: the last epoch is the model
    scheduler_interval = "epoch"

    def __init__(self, config: CycleGANConfig, rank: int = 0, world: int = 1) -> None:
        super().__init__()
        if world > 1:
            raise EngineError("the CycleGAN trains in one process; run it without torchrun")
        self.config = c = config
        self.samples = held_in_samples(config)
        generator = {"in_channels": 3, "out_channels": 3, "width": c.width, "n_blocks": c.n_blocks}
        critic = {"in_channels": 3, "width": c.disc_width, "n_layers": c.disc_layers}
        self.networks = {
            "G_mask2he": build_model("resnet_generator", **generator),
            "G_he2mask": build_model("resnet_generator", **generator),
            "D_he": build_model("patchgan", **critic),
            "D_mask": build_model("patchgan", **critic),
        }
        adam = {"lr": c.lr, "betas": (c.beta1, 0.999)}
        nets = self.networks
        self.optimizers = {
            "G": torch.optim.Adam(
                itertools.chain(nets["G_mask2he"].parameters(), nets["G_he2mask"].parameters()),
                **adam,
            ),
            "D": torch.optim.Adam(
                itertools.chain(nets["D_he"].parameters(), nets["D_mask"].parameters()), **adam
            ),
        }
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, c.lr_factor)
            for name, opt in self.optimizers.items()
        }
        self.gan_loss = GANLoss(c.gan_mode)
        self.pools = {
            "he": ImagePool(c.pool_size, c.seed),
            "mask": ImagePool(c.pool_size, c.seed + 1),
        }
        self.crops = UnpairedCrops(self.samples, c)
        self.generator = torch.Generator()
        self._mask_statistics: dict[str, Any] | None = None

    def attach(self, engine: Any) -> None:
        """Move the networks and the loss's label buffers to the engine's device."""
        super().attach(engine)
        self.gan_loss.to(engine.device)

    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return self.config.crops_per_epoch // self.config.batch_size

    def loader(self, epoch: int) -> DataLoader:
        """The epoch's unpaired crops; positions, augmentation and order depend on (seed, epoch)."""
        self.crops.set_epoch(epoch)
        self.generator.manual_seed(self.config.seed * 100_003 + epoch)
        workers = self.config.num_workers or 0
        return DataLoader(self.crops, self.config.batch_size, shuffle=True, drop_last=True,
                          generator=self.generator, num_workers=workers)  # fmt: skip

    def train_step(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of Zhu et al.'s algorithm: both generators, then both discriminators."""
        c, gan = self.config, self.gan_loss
        mask, he = (self.to_device(t, image=True) for t in batch)
        to_he, to_mask = self.net("G_mask2he"), self.net("G_he2mask")
        # 1. Generators: fool both discriminators, close both cycles, keep identities.
        self.set_requires_grad(["D_he", "D_mask"], False)
        with self.autocast():
            fake_he, fake_mask = to_he(mask), to_mask(he)
            adversarial = gan(self.net("D_he")(fake_he), True) + gan(
                self.net("D_mask")(fake_mask), True
            )
            cycle = F.l1_loss(to_mask(fake_he), mask) + F.l1_loss(to_he(fake_mask), he)
            identity = torch.zeros((), device=mask.device)
            if c.lambda_identity > 0:
                identity = F.l1_loss(to_he(he), he) + F.l1_loss(to_mask(mask), mask)
            weight = c.lambda_cycle
            loss_g = adversarial + weight * cycle + weight * c.lambda_identity * identity
        parts = {}
        if c.lambda_stain > 0:  # outside autocast: optical density needs float32 logarithms
            contrast = hematoxylin_contrast(fake_he, mask)
            shortfall = F.relu(c.stain_margin - contrast)[~contrast.isnan()]
            parts["stain"] = shortfall.sum() / len(contrast)  # crops without nuclei add 0
            loss_g = loss_g + c.lambda_stain * parts["stain"]
        self.backward(loss_g)
        self.step("G")
        # 2. Discriminators: real crops against a history of generated ones.
        self.set_requires_grad(["D_he", "D_mask"], True)
        old_he = self.pools["he"].query(fake_he.detach())
        old_mask = self.pools["mask"].query(fake_mask.detach())
        with self.autocast():
            loss_d = 0.5 * (
                gan(self.net("D_he")(he), True) + gan(self.net("D_he")(old_he), False)
            ) + 0.5 * (
                gan(self.net("D_mask")(mask), True) + gan(self.net("D_mask")(old_mask), False)
            )
        self.backward(loss_d)
        self.step("D")
        return {"G_adv": adversarial, "cycle": cycle, "identity": identity, **parts, "D": loss_d}

    def plan(self) -> dict[str, Any]:
        """Resuming needs the same settings and data (compared by content)."""
        return {**self.config.fixed_settings(), "data.train": fingerprint_samples(self.samples)}

    def extra_state(self) -> dict[str, Any]:
        """The two history pools, so that a resumed run draws the same images."""
        return {name: pool.state_dict() for name, pool in self.pools.items()}

    def load_extra_state(self, state: Any) -> None:
        """Restore the history pools."""
        for name, pool in self.pools.items():
            if name in state:
                pool.load_state_dict(state[name])

    def meta(self) -> dict[str, Any]:
        """The config, and the mask statistics ``nucseg synth`` samples from."""
        if self._mask_statistics is None:  # measuring takes seconds: once, not per checkpoint
            self._mask_statistics = mask_statistics_of(self.samples)
        return {
            "config": plain_values(dataclasses.asdict(self.config)),
            "mask_statistics": self._mask_statistics,
            "training_images": [s.image_id for s in self.samples],
        }


def mask_statistics_of(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per-organ nucleus statistics of the training masks, as plain dicts for checkpoints."""
    from nucseg.synth.masks import fit_mask_statistics

    return {organ: stats.to_dict() for organ, stats in fit_mask_statistics(samples).items()}


def train_cyclegan(
    config: CycleGANConfig,
    resume: bool = False,
    until_epoch: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train the CycleGAN on the engine (see the module docstring and ``nucseg.train.train``).

    Raises:
        NucsegError: Bad data or settings (e.g. a crop larger than the images), a missing
            device, or a run folder that holds a run while neither resuming nor overwriting.

    """
    return train_method(CycleGANMethod, config, resume, until_epoch, overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    """``nucseg train-cyclegan --profile P [--out DIR] [--resume | --overwrite] [--set K=V]``."""
    return training_cli(
        argv, "nucseg train-cyclegan", CycleGANConfig, train_cyclegan, progress_line
    )


if __name__ == "__main__":
    raise SystemExit(main())
