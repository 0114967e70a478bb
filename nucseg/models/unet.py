"""U-Net (Ronneberger et al. 2015) predicting background / inside / boundary per pixel.

Normalisation is GroupNorm by default (``norm="group"``): its statistics are per sample, so it
behaves the same for a batch of 8 crops, a per-GPU batch of 2 under DDP (no SyncBatchNorm
needed) and a single whole 1000x1000 validation image, and train and eval modes compute the same
function. ``norm="batch"`` uses BatchNorm instead, which can be faster (with bf16 autocast on
CPUs with native bf16; ``python -m nucseg.bench train`` measures it), but its batch statistics
make training depend on the batch size and DDP processes normalise their own shards (no
SyncBatchNorm here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLING = ("bilinear", "transpose")
NORMS = ("group", "batch")


def _groups(channels: int, max_groups: int = 8) -> int:
    """Number of GroupNorm groups: up to 8, and a divisor of ``channels``."""
    return math.gcd(channels, max_groups)


def _norm_layer(norm: str, channels: int) -> nn.Module:
    """GroupNorm (``"group"``) or BatchNorm (``"batch"``) over ``channels``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(_groups(channels), channels)


class ConvBlock(nn.Sequential):
    """Two (3x3 conv -> GroupNorm or BatchNorm -> ReLU) layers; the spatial size is kept."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "group") -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Double the size, halve the channels, concatenate the skip and convolve."""

    def __init__(self, in_channels: int, out_channels: int, mode: str, norm: str = "group") -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:  # bilinear then 1x1: no checkerboard artefacts, fewer parameters
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.conv = ConvBlock(2 * out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with configurable width and depth.

    Level ``i`` (0 = full resolution) has ``width * 2**i`` channels; there are ``depth``
    down-samplings, so the bottleneck has ``width * 2**depth`` channels at 1 / ``2**depth``
    of the input size. Inputs of any size are accepted: they are padded (reflect) at the bottom
    and right to a multiple of ``2**depth`` inside :meth:`forward` and the logits are cropped back.

    Attributes:
        in_channels: Input channels (3 for RGB).
        num_classes: Output channels (logits, 3 = background / inside / boundary).
        width: Channels of the first level.
        depth: Number of 2x down-samplings.
        upsampling: ``"bilinear"`` (upsample + 1x1 conv) or ``"transpose"`` (2x2 transposed conv).
        norm: ``"group"`` (GroupNorm, the default) or ``"batch"`` (BatchNorm).

    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 3,
        width: int = 16,
        depth: int = 4,
        upsampling: str = "bilinear",
        norm: str = "group",
    ) -> None:
        """Build the network.

        Args:
            in_channels: Input channels.
            num_classes: Output classes.
            width: Channels of the first level (>= 1).
            depth: Number of down-samplings (>= 1).
            upsampling: ``"bilinear"`` or ``"transpose"``.
            norm: ``"group"`` or ``"batch"`` (see the module docstring).

        Raises:
            ValueError: On a non-positive size, an unknown upsampling mode or normalisation.

        """
        super().__init__()
        if min(in_channels, num_classes, width, depth) < 1:
            raise ValueError(
                f"UNet needs positive sizes, got {in_channels=}, {num_classes=}, {width=}, {depth=}"
            )
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.width, self.depth, self.upsampling, self.norm = width, depth, upsampling, norm
        channels = [width * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, channels[0], norm)
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(channels[i], channels[i + 1], norm))
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            Up(channels[i + 1], channels[i], upsampling, norm) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    @property
    def multiple(self) -> int:
        """Input sizes that need no padding are multiples of this (``2**depth``)."""
        return 2**self.depth

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input window that one output pixel sees through convolutions.

        GroupNorm's statistics (and BatchNorm's in training) span the whole input, so strictly
        every pixel sees every other; this is the field of the convolutional path, which is
        what zero padding at a tile's edge disturbs. The stem's two 3x3 convolutions see 5
        pixels; each level ``i`` down adds its 2x2 pool (``2**i``) and two convolutions at
        stride ``2**(i + 1)``; each level up adds its bilinear upsampling (``2**(i + 1)``) and
        two convolutions at stride ``2**i``.
        """
        down = sum(2**i + 4 * 2 ** (i + 1) for i in range(self.depth))
        up = sum(2 ** (i + 1) + 4 * 2**i for i in range(self.depth))
        return 5 + down + up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits.

        Args:
            x: Images (N, C, H, W), float, any H and W.

        Returns:
            Logits (N, num_classes, H, W).

        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            # Reflect needs the pad to be smaller than the side; tiny inputs replicate instead.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)[..., :height, :width]
