"""GAN networks: a ResNet generator, a PatchGAN discriminator and their weight initialisation.

* :class:`ResnetGenerator` is the image-to-image generator of Johnson et al. (2016) that
  CycleGAN (Zhu et al. 2017) uses: a 7x7 stem, stride-2 down-sampling, residual blocks at
  1/4 resolution, up-sampling back and a tanh output in [-1, 1].
* :class:`PatchDiscriminator` is the 70x70 PatchGAN of pix2pix (Isola et al. 2017): a fully
  convolutional classifier that scores every overlapping 70x70 patch, optionally with spectral
  normalisation (Miyato et al. 2018) as Mahmood et al. (2019) use.
* :func:`init_weights` is the N(0, 0.02) initialisation of DCGAN that both papers use.

The adversarial loss :class:`~nucseg.models.gan_loss.GANLoss` is importable from here too.

Normalisation is ``"instance"`` by default (per-sample statistics: the same function in train
and eval mode and for any batch size, as CycleGAN's batch of 1 needs); ``"batch"`` and
``"none"`` are the alternatives. Instance norm is affine here (a learned scale and shift per
channel), and convolutions followed by a normalisation have no bias, which the normalisation's
mean subtraction would cancel anyway.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from nucseg.models.gan_loss import GANLoss  # re-exported: the GAN blocks from one place

__all__ = ["GANLoss", "PatchDiscriminator", "ResnetBlock", "ResnetGenerator", "init_weights"]

NORMS = ("instance", "batch", "none")
UPSAMPLING = ("transpose", "nearest")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_NORM_LAYERS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    """Instance norm (affine), batch norm or nothing over ``channels``."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Initialise a GAN network as pix2pix and CycleGAN do (after DCGAN).

    Convolution and linear weights ~ N(0, gain), normalisation weights ~ N(1, gain), all
    biases 0. It draws from torch's global generator, so ``torch.manual_seed`` makes it
    deterministic. A spectrally normalised layer has its raw weight initialised; do that before
    registering the spectral norm (as :class:`PatchDiscriminator` does), since the norm's
    singular-vector estimates are computed from the weight at registration.

    Args:
        net: Network to initialise in place.
        gain: Standard deviation of the normal distributions.

    Returns:
        ``net``.

    """
    for module in net.modules():
        if isinstance(module, _CONVS):
            weight = (
                module.parametrizations.weight.original
                if parametrize.is_parametrized(module, "weight")
                else module.weight
            )
            nn.init.normal_(weight, 0.0, gain)
        elif isinstance(module, _NORM_LAYERS) and getattr(module, "weight", None) is not None:
            nn.init.normal_(module.weight, 1.0, gain)
        else:
            continue
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    return net


def _check_input(x: torch.Tensor, channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects (N, {channels}, H, W) input, got {tuple(x.shape)}")


class ResnetBlock(nn.Module):
    """``x + F(x)`` with F = (3x3 conv -> norm -> ReLU [-> dropout] -> 3x3 conv -> norm).

    Reflection padding keeps the size without the zero borders that show up as edge artefacts
    in generated images.
    """

    def __init__(self, channels: int, norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm_layer(norm, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm_layer(norm, channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The Johnson et al. / CycleGAN ResNet generator; output in [-1, 1] (tanh).

    Level ``i`` of the encoder has ``width * 2**i`` channels; the ``n_blocks`` residual blocks
    run at ``1 / 2**n_downsampling`` of the input size. Up-sampling is by default a 3x3
    transposed convolution of stride 2 (``"transpose"``), the papers' "fractionally-strided
    convolution", so widths, parameter counts and behaviour match the published networks.
    Its uneven kernel overlap can leave checkerboard artefacts (Odena et al. 2016), which a
    real-vs-synthetic classifier may pick up; ``upsampling="nearest"`` (nearest-neighbour x2
    then a reflection-padded 3x3 conv, the same parameter count) avoids them.

    Attributes:
        in_channels: Input channels.
        out_channels: Output channels.
        width: Channels of the stem.
        n_blocks: Residual blocks.
        n_downsampling: Stride-2 down-samplings (and as many up-samplings).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        dropout: Dropout(0.5) inside each residual block.
        upsampling: ``"transpose"`` or ``"nearest"``.

    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        norm: str = "instance",
        dropout: bool = False,
        upsampling: str = "transpose",
    ) -> None:
        """Build the network, initialised with :func:`init_weights`.

        Args:
            in_channels: Input channels (>= 1).
            out_channels: Output channels (>= 1).
            width: Channels of the stem (>= 1).
            n_blocks: Residual blocks (>= 0; 9 for 256-pixel images, 6 for 128 in CycleGAN).
            n_downsampling: Down-samplings (>= 0).
            norm: ``"instance"``, ``"batch"`` or ``"none"``.
            dropout: Dropout(0.5) between the convolutions of each residual block.
            upsampling: ``"transpose"`` (the papers') or ``"nearest"`` (no checkerboard).

        Raises:
            ValueError: On a bad size, normalisation or up-sampling mode.

        """
        super().__init__()
        if min(in_channels, out_channels, width) < 1 or min(n_blocks, n_downsampling) < 0:
            raise ValueError(
                f"ResnetGenerator needs positive channels and non-negative counts, got "
                f"{in_channels=}, {out_channels=}, {width=}, {n_blocks=}, {n_downsampling=}"
            )
        _check_norm(norm)
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        self.n_blocks, self.n_downsampling, self.norm = n_blocks, n_downsampling, norm
        self.dropout, self.upsampling = dropout, upsampling
        bias = norm == "none"

        def conv_norm_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
            return [conv, _norm_layer(norm, channels), nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3),
            *conv_norm_relu(nn.Conv2d(in_channels, width, 7, bias=bias), width),
        )
        down: list[nn.Module] = []
        for i in range(n_downsampling):
            c = width * 2**i
            down += conv_norm_relu(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), 2 * c)
        self.down = nn.Sequential(*down)
        deep = width * 2**n_downsampling
        self.blocks = nn.Sequential(*(ResnetBlock(deep, norm, dropout) for _ in range(n_blocks)))
        up: list[nn.Module] = []
        for i in reversed(range(n_downsampling)):
            c = width * 2 ** (i + 1)
            if upsampling == "transpose":
                # output_padding=1 makes the output exactly twice the input size
                conv: nn.Module = nn.ConvTranspose2d(
                    c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
                )
            else:
                conv = nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(c, c // 2, 3, bias=bias),
                )
            up += conv_norm_relu(conv, c // 2)
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()
        )
        init_weights(self)

    @property
    def multiple(self) -> int:
        """Input heights and widths must be multiples of this (``2**n_downsampling``)."""
        return 2**self.n_downsampling

    @property
    def min_size(self) -> int:
        """Smallest input side: reflection padding needs sides > its pad at every level."""
        return max(4, 2 * self.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate images.

        Args:
            x: Images (N, in_channels, H, W), H and W multiples of :attr:`multiple` and at
                least :attr:`min_size`.

        Returns:
            Images (N, out_channels, H, W) in [-1, 1].

        Raises:
            ValueError: Wrong channels or a size that the down-sampling cannot invert.

        """
        _check_input(x, self.in_channels, "ResnetGenerator")
        height, width = x.shape[-2:]
        if height % self.multiple or width % self.multiple or min(height, width) < self.min_size:
            raise ValueError(
                f"ResnetGenerator with n_downsampling={self.n_downsampling} needs H and W that "
                f"are multiples of {self.multiple} and at least {self.min_size}, got "
                f"{height}x{width}; crop or pad the input"
            )
        return self.head(self.up(self.blocks(self.down(self.stem(x)))))


class PatchDiscriminator(nn.Module):
    """The pix2pix / CycleGAN PatchGAN: a map of real-vs-fake scores (logits) per patch.

    4x4 convolutions: ``n_layers`` of stride 2 (the first without normalisation), one of
    stride 1, then a stride-1 convolution to one channel; LeakyReLU(0.2) between them and no
    sigmoid (the loss takes logits or least squares). Channels are ``width * min(2**i, 8)``.
    With ``n_layers=3`` each output pixel sees a 70x70 input patch and a 256x256 input gives a
    30x30 map. For pix2pix's conditional discriminator pass ``in_channels`` = image + map
    channels and concatenate them.

    Attributes:
        in_channels: Input channels.
        width: Channels of the first layer.
        n_layers: Stride-2 layers.
        norm: Normalisation used (``"none"`` when spectrally normalised).
        spectral_norm: Every convolution is spectrally normalised.

    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        spectral_norm: bool = False,
    ) -> None:
        """Build the network, initialised with :func:`init_weights`.

        Args:
            in_channels: Input channels (>= 1).
            width: Channels of the first layer (>= 1).
            n_layers: Stride-2 layers (>= 1; 3 gives the 70x70 PatchGAN).
            norm: ``"instance"``, ``"batch"`` or ``"none"``; ignored (no normalisation layers)
                with ``spectral_norm``, which already bounds each layer.
            spectral_norm: Spectrally normalise every convolution
                (``torch.nn.utils.parametrizations.spectral_norm``; its singular-vector
                estimates are buffers, saved in the ``state_dict``).

        Raises:
            ValueError: On a bad size or normalisation.

        """
        super().__init__()
        if min(in_channels, width, n_layers) < 1:
            raise ValueError(
                f"PatchDiscriminator needs positive sizes, got {in_channels=}, {width=}, "
                f"{n_layers=}"
            )
        _check_norm(norm)
        self.in_channels, self.width, self.n_layers = in_channels, width, n_layers
        self.spectral_norm = bool(spectral_norm)
        self.norm = "none" if spectral_norm else norm
        bias = self.norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = width
        for i in range(1, n_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=bias),
                _norm_layer(self.norm, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        init_weights(self)
        if spectral_norm:  # after init: the power iteration starts from the final weights
            for module in self.layers:
                if isinstance(module, nn.Conv2d):
                    _spectral_norm(module)

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch one output score sees (70 for ``n_layers=3``).

        Computed from the convolutions, last to first: a field of ``r`` pixels after a layer
        of kernel ``k`` and stride ``s`` is ``(r - 1) * s + k`` pixels before it.
        """
        field = 1
        for conv in reversed(self._convs()):
            kernel = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
            field = (field - 1) * conv.stride[0] + kernel
        return field

    def output_size(self, size: int) -> int:
        """Side of the score map for an input side of ``size`` (30 for 256, n_layers=3)."""
        for conv in self._convs():
            kernel = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
            size = (size + 2 * conv.padding[0] - kernel) // conv.stride[0] + 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score every patch.

        Args:
            x: Images (N, in_channels, H, W).

        Returns:
            Logits (N, 1, H', W'), H' = ``output_size(H)``.

        Raises:
            ValueError: Wrong channels, or an input too small to give one score.

        """
        _check_input(x, self.in_channels, "PatchDiscriminator")
        if min(self.output_size(int(s)) for s in x.shape[-2:]) < 1:
            raise ValueError(
                f"PatchDiscriminator with n_layers={self.n_layers} gives no score for a "
                f"{x.shape[-2]}x{x.shape[-1]} input; use a larger one"
            )
        return self.layers(x)
