"""Networks built by name, so checkpoints can store ``{"name", "kwargs"}`` and rebuild them.

Registered: ``"unet"`` (:class:`UNet`), ``"resnet_generator"`` (:class:`ResnetGenerator`, the
CycleGAN generator) and ``"patchgan"`` (:class:`PatchDiscriminator`). The GAN losses, weight
initialisation, adversarial loss and image history pool are in :mod:`nucseg.models.gan`,
:mod:`nucseg.models.gan_loss` and :mod:`nucseg.models.pool`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from nucseg.errors import NucsegError
from nucseg.models.gan import PatchDiscriminator, ResnetGenerator, init_weights
from nucseg.models.gan_loss import GANLoss
from nucseg.models.pool import ImagePool
from nucseg.models.unet import UNet

__all__ = [
    "MODELS",
    "GANLoss",
    "ImagePool",
    "PatchDiscriminator",
    "ResnetGenerator",
    "UNet",
    "build_model",
    "init_weights",
]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "resnet_generator": ResnetGenerator,
    "patchgan": PatchDiscriminator,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network.

    The returned module carries ``model.build_spec = {"name": name, "kwargs": kwargs}``, which is
    what :mod:`nucseg.checkpoint` stores to rebuild it.

    Args:
        name: A key of :data:`MODELS`.
        **kwargs: Constructor arguments of that network (e.g. ``width=16, depth=4``).

    Returns:
        The network, freshly initialised, on the CPU.

    Raises:
        NucsegError: Unknown name, or arguments the network does not take.

    """
    if name not in MODELS:
        raise NucsegError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    factory = MODELS[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise NucsegError(f"model {name!r}: bad arguments {sorted(kwargs)}: {err}") from None
    model = factory(**kwargs)
    model.build_spec = {"name": name, "kwargs": dict(kwargs)}
    return model
