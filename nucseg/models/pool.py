"""Image history pool (Shrivastava et al. 2017): the discriminator also sees older fakes.

Updating the discriminator on a mix of the latest generated images and earlier ones keeps it
from chasing only the generator's current output, which damps oscillation; CycleGAN keeps 50
images, Mahmood et al.'s pix2pix 64. The pool draws from its own ``torch.Generator``, so its
choices do not depend on (nor disturb) the global random state, and :meth:`ImagePool.state_dict`
captures the stored images and that generator: a resumed training run continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class ImagePool:
    """A fixed-size buffer of generated images that answers each query half from history.

    For each image of a batch: while the pool is not full, the image is stored and returned;
    once full, with probability 0.5 a stored image (chosen uniformly) is returned and the new
    one takes its place, otherwise the new image is returned. Size 0 passes images through.
    Returned images are always detached: the pool feeds the discriminator's update, where the
    generator must get no gradient.

    Under DDP give every process its own seed (e.g. ``seed + rank``) so the pools differ.

    Attributes:
        size: Capacity in images (0 = pass-through).
        seed: Seed of the pool's generator.
        images: Stored images (C, H, W), at most ``size``.

    """

    def __init__(self, size: int, seed: int) -> None:
        """Create an empty pool.

        Args:
            size: Capacity in images (>= 0).
            seed: Seed of the pool's own random generator.

        Raises:
            ValueError: Negative size.

        """
        if size < 0:
            raise ValueError(f"ImagePool size must be >= 0, got {size}")
        self.size, self.seed = int(size), int(seed)
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Mix a batch with the history (see the class docstring).

        Args:
            images: Batch (N, C, H, W) of generated images.

        Returns:
            A detached batch of the same shape, device and dtype.

        Raises:
            ValueError: Images whose shape differs from the stored ones.

        """
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if self.images and image.shape != self.images[0].shape:
                raise ValueError(
                    f"ImagePool holds images of shape {tuple(self.images[0].shape)}, "
                    f"got {tuple(image.shape)}"
                )
            if len(self.images) < self.size:
                self.images.append(image.clone())  # a copy: the caller may reuse its buffer
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) < 0.5:
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i].to(image.device, image.dtype))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    __call__ = query

    def state_dict(self) -> dict[str, Any]:
        """The pool as ``torch.load(weights_only=True)``-safe values.

        Returns:
            ``{"size", "seed", "images": (K, C, H, W) tensor on the CPU (shape (0,) when
            empty), "generator": uint8 tensor}``.

        """
        images = torch.stack([im.cpu() for im in self.images]) if self.images else torch.zeros(0)
        return {
            "size": self.size,
            "seed": self.seed,
            "images": images,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a pool saved by :meth:`state_dict` (its images stay on the CPU until used).

        Raises:
            ValueError: The saved pool has another size, or holds more images than it.

        """
        if int(state["size"]) != self.size:
            raise ValueError(f"saved ImagePool has size {state['size']}, this one {self.size}")
        images = list(state["images"])
        if len(images) > self.size:
            raise ValueError(f"saved ImagePool holds {len(images)} images > its size {self.size}")
        self.images = [im.clone() for im in images]
        self.seed = int(state.get("seed", self.seed))
        self.generator.set_state(state["generator"].detach().to("cpu", torch.uint8).clone())
