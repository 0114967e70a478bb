"""Torch dataset of square crops from (image, instance map) samples, with joint augmentation."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from nucseg.data.targets import three_class_target
from nucseg.errors import ShapeMismatchError
from nucseg.labels import as_label_map
from nucseg.runtime import image_to_tensor

if TYPE_CHECKING:
    from nucseg.data.monuseg import Sample

TARGETS = ("instances", "three_class")


def fingerprint_samples(samples: Sequence[Sample]) -> str:
    """A hash of the samples' ids, images and instance maps, in order.

    Two runs see the same data exactly when their fingerprints agree, wherever the folder is.
    """
    digest = hashlib.blake2b(digest_size=16)
    for sample in samples:
        for part in (sample.image_id.encode(), sample.image, sample.instances):
            data = np.ascontiguousarray(part) if isinstance(part, np.ndarray) else part
            digest.update(str(getattr(data, "shape", "")).encode())
            digest.update(memoryview(data).cast("B"))
    return f"{len(samples)} samples, blake2b {digest.hexdigest()}"


class CropDataset(Dataset):
    """Square crops of samples for training and validation.

    Items are ``(tv_tensors.Image float32 (3, h, w) in [0, 1], tv_tensors.Mask int64 (1, h, w))``.

    Crop ``i`` comes from a sample drawn with probability proportional to its area, at a
    uniformly random position, so every pixel is equally likely whatever the mix of image sizes
    (1000-pixel MoNuSeg images beside 256-pixel synthetic pairs). The sample, the position and
    the augmentation are drawn from generators seeded with ``(seed, epoch, i)``, so
    a crop is reproducible whatever the worker that loads it and different every epoch (call
    :meth:`set_epoch` before each epoch). Whole-image prediction tiles images itself
    (:mod:`nucseg.tiling`); both scale pixels with ``nucseg.runtime.image_to_tensor``.

    Images smaller than ``crop_size`` are padded at the bottom / right (reflect for the image, 0
    for the mask); positions refer to the padded image, whose top-left part is the original.

    The epoch lives in a shared-memory tensor, so :meth:`set_epoch` reaches DataLoader workers
    even with ``persistent_workers=True``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        crop_size: int = 256,
        crops_per_epoch: int | None = None,
        transform: Callable[..., Any] | None = None,
        seed: int = 0,
        target: str = "instances",
        boundary_width: int = 2,
        context: int = 0,
    ) -> None:
        """Create the dataset.

        Args:
            samples: Objects with ``.image`` (H, W, 3) uint8 (or float in [0, 1]),
                ``.instances`` (H, W) integer and ``.image_id`` (e.g. ``Sample``).
            crop_size: Side of the square crops.
            crops_per_epoch: Length of an epoch; default ``len(samples) * ceil(mean area /
                crop_size**2)`` (about one coverage of the data per epoch).
            transform: Called as ``transform(image, mask)`` on the tv_tensors (e.g. from
                :func:`nucseg.data.augment.build_augmentation`); torch's RNG is seeded per crop.
            seed: Base seed of crop positions and augmentations.
            target: ``"instances"`` (instance ids) or ``"three_class"`` (0 bg / 1 inside /
                2 boundary, derived after augmentation from the augmented instance mask).
            boundary_width: Boundary width for ``target="three_class"``.
            context: Extra pixels read on each side of a crop (reflect-padded at image borders)
                and cut away after ``transform``, so that elastic deformation pulls in real
                tissue rather than the transform's zero fill. 0 disables.

        Raises:
            ValueError: On bad parameters or an empty sample list, or an image that is not RGB.
            LabelMapError: If an instance map is not a 2-D non-negative integer array.
            ShapeMismatchError: If a sample's image and instance map differ in height / width.

        """
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        if len(samples) == 0:
            raise ValueError("CropDataset needs at least one sample")
        self.crop_size = int(crop_size)
        self.transform = transform
        self.seed = int(seed)
        self.target = target
        self.boundary_width = boundary_width
        if context < 0:
            raise ValueError(f"context must be >= 0 pixels, got {context}")
        self.context = int(context)
        self.images: list[np.ndarray] = []
        self.instances: list[np.ndarray] = []
        self.image_ids: list[str] = []
        for sample in samples:
            image, labels = self._check_sample(sample)
            self.images.append(image)
            self.instances.append(labels)
            self.image_ids.append(str(getattr(sample, "image_id", len(self.image_ids))))
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        if crops_per_epoch is None:
            mean_area = np.mean([h * w for h, w in self._padded_shapes()])
            crops_per_epoch = len(self.images) * math.ceil(mean_area / self.crop_size**2)
        if crops_per_epoch < 1:
            raise ValueError(f"crops_per_epoch must be >= 1, got {crops_per_epoch}")
        self.crops_per_epoch = int(crops_per_epoch)
        areas = np.array([h * w for h, w in self._padded_shapes()], dtype=np.float64)
        self._sample_probabilities = areas / areas.sum()

    @staticmethod
    def _check_sample(sample: Any) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(sample.image)
        name = getattr(sample, "image_id", "<sample>")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: image must be (H, W, 3) RGB, got shape {image.shape}")
        labels = as_label_map(sample.instances, f"{name} instances")
        if image.shape[:2] != labels.shape:
            raise ShapeMismatchError(
                f"{name}: image is {image.shape[:2]} but instance map is {labels.shape}"
            )
        return image, labels

    def _padded_shapes(self) -> list[tuple[int, int]]:
        c = self.crop_size
        return [(max(lab.shape[0], c), max(lab.shape[1], c)) for lab in self.instances]

    @property
    def epoch(self) -> int:
        """Current epoch (changes random crops and augmentations)."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; call before iterating a DataLoader for that epoch.

        Args:
            epoch: Non-negative epoch number.

        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.crops_per_epoch

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        # Separate streams for the crop position (0) and the augmentation seed (1).
        return np.random.default_rng((self.seed, self.epoch, index, stream))

    def position(self, index: int) -> tuple[int, int, int]:
        """``(sample_index, y, x)`` of the crop at ``index`` for the current epoch.

        Args:
            index: Item index in ``[0, len(self))``.

        Returns:
            Sample index and top-left corner (in the padded image) of the crop.

        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        rng = self._rng(index, 0)
        sample_index = int(rng.choice(len(self.images), p=self._sample_probabilities))
        height, width = self._padded_shapes()[sample_index]
        y = int(rng.integers(0, height - self.crop_size + 1))
        x = int(rng.integers(0, width - self.crop_size + 1))
        return sample_index, y, x

    def _crop(self, sample_index: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.images[sample_index], self.instances[sample_index]
        c, m = self.crop_size, self.context
        if m:  # read the crop with a reflect-padded margin around it
            h, w = labels.shape
            rows = np.abs(np.arange(y - m, y + c + m))
            rows = np.where(rows >= h, 2 * (h - 1) - rows, rows).clip(0, h - 1)
            cols = np.abs(np.arange(x - m, x + c + m))
            cols = np.where(cols >= w, 2 * (w - 1) - cols, cols).clip(0, w - 1)
            return image[np.ix_(rows, cols)], labels[np.ix_(rows, cols)]
        image, labels = image[y : y + c, x : x + c], labels[y : y + c, x : x + c]
        pad_h, pad_w = c - labels.shape[0], c - labels.shape[1]
        if pad_h or pad_w:  # only for images smaller than the crop
            # Mirror both alike: a zero-padded mask would teach the mirrored nuclei as background.
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)), mode="reflect")
        return image, labels

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        sample_index, y, x = self.position(index)
        image_np, labels_np = self._crop(sample_index, y, x)
        # The one [0, 1] scaling that inference uses too (GAN methods rescale after augmenting).
        image = tv_tensors.Image(image_to_tensor(image_np).contiguous())
        mask = tv_tensors.Mask(torch.from_numpy(labels_np.astype(np.int64))[None])
        if self.transform is not None:
            torch_seed = int(self._rng(index, 1).integers(2**62))
            with torch.random.fork_rng(devices=[]):  # keep the caller's global RNG untouched
                torch.manual_seed(torch_seed)
                image, mask = self.transform(image, mask)
        if self.context:
            m = self.context
            image = tv_tensors.Image(image[..., m:-m, m:-m])
            mask = tv_tensors.Mask(mask[..., m:-m, m:-m])
        if self.target == "three_class":
            classes = three_class_target(mask[0].numpy(), boundary_width=self.boundary_width)
            mask = tv_tensors.Mask(torch.from_numpy(classes.astype(np.int64))[None])
        return image, mask
