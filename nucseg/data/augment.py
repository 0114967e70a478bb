"""Joint image/mask augmentations built on ``torchvision.transforms.v2``.

Geometric transforms move ``tv_tensors.Image`` and ``tv_tensors.Mask`` together; colour
transforms touch only the Image. ``v2.ElasticTransform`` already resamples ``Mask`` with nearest
interpolation (``elastic_mask`` in torchvision forces ``InterpolationMode.NEAREST`` whatever the
``interpolation`` argument, casting integer masks to float32 and rounding back, which is exact
for ids below 2**24), so instance ids stay integers and no new ids appear.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import query_size
from torchvision.transforms.v2.functional import is_pure_tensor

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB) in optical-density RGB,
# and their inverse, as skimage.color.rgb2hed / hed2rgb use them.
RGB_FROM_HED = torch.tensor(rgb_from_hed, dtype=torch.float64)
HED_FROM_RGB = torch.tensor(hed_from_rgb, dtype=torch.float64)
_OD_EPS = 1e-6  # as skimage: keeps log finite for black pixels


def rgb_to_hed_torch(image: torch.Tensor) -> torch.Tensor:
    """Colour-deconvolve float RGB in [0, 1] of shape (..., 3, H, W) into HED optical densities.

    Args:
        image: Float tensor (..., 3, H, W) in [0, 1].

    Returns:
        Tensor of the same shape holding haematoxylin, eosin and DAB densities (natural-log OD).

    """
    od = -torch.log(image.clamp(min=_OD_EPS))
    matrix = HED_FROM_RGB.to(dtype=image.dtype, device=image.device)
    return torch.einsum("...jhw,ji->...ihw", od, matrix)


def hed_to_rgb_torch(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed_torch`, clamped to [0, 1].

    Args:
        hed: Tensor (..., 3, H, W) of HED optical densities.

    Returns:
        Float RGB tensor (..., 3, H, W) in [0, 1].

    """
    matrix = RGB_FROM_HED.to(dtype=hed.dtype, device=hed.device)
    od = torch.einsum("...ihw,ij->...jhw", hed, matrix)
    return torch.exp(-od).clamp(0.0, 1.0)


class RandomRot90(v2.Transform):
    """Rotate Image and Mask (and Video / a lone pure tensor) together by k * 90 degrees.

    ``k`` is drawn uniformly from ``{0, 1, 2, 3}`` per call. With ``p < 1`` the identity is kept
    with probability ``1 - p``. Non-square inputs change shape for odd ``k``.
    """

    _transformed_types = (tv_tensors.Image, tv_tensors.Mask, tv_tensors.Video, is_pure_tensor)

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def check_inputs(self, flat_inputs: list[Any]) -> None:  # noqa: D102
        # Boxes / keypoints would need coordinate maths that this transform does not do.
        for inpt in flat_inputs:
            if isinstance(inpt, tv_tensors.BoundingBoxes) or type(inpt).__name__ == "KeyPoints":
                raise TypeError(f"RandomRot90 does not support {type(inpt).__name__}")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:  # noqa: D102
        if torch.rand(1).item() >= self.p:
            return {"k": 0}
        return {"k": int(torch.randint(0, 4, (1,)).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:  # noqa: D102
        if params["k"] == 0:
            return inpt
        out = torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1))
        return out if is_pure_tensor(inpt) else tv_tensors.wrap(out, like=inpt)

    # torchvision < 0.21 calls the private names.
    _get_params = make_params
    _transform = transform


class FastElasticTransform(v2.ElasticTransform):
    """``v2.ElasticTransform`` with the displacement noise smoothed by a separable scipy filter.

    torchvision blurs the noise with a dense (8 sigma + 1)^2 kernel (~0.1 s per 256^2 crop per
    axis on one CPU thread); this draws the same ``torch.rand`` noise, smooths it with the same
    Gaussian (same kernel radius, reflect padding) separably in ~5 ms, and reuses torchvision's
    resampling, so Image is bilinear and Mask nearest exactly as in the parent class.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:  # noqa: D102
        height, width = query_size(flat_inputs)
        fields = []
        for axis, size in ((0, width), (1, height)):
            noise = (torch.rand(height, width) * 2 - 1).numpy()
            if self.sigma[axis] > 0.0:
                # as torchvision: kernel size from this field's sigma, then (sigma_x, sigma_y)
                ksize = int(8 * self.sigma[axis] + 1)
                radius = (ksize + 1 - ksize % 2) // 2
                sigma_yx = (float(self.sigma[1]), float(self.sigma[0]))
                noise = ndi.gaussian_filter(noise, sigma_yx, mode="mirror", radius=radius)
            fields.append(torch.from_numpy(noise) * (self.alpha[axis] / size))
        return {"displacement": torch.stack(fields, dim=-1)[None]}  # 1 x H x W x 2 (dx, dy)

    _get_params = make_params


class HEDJitter(v2.Transform):
    """Random haematoxylin / eosin / DAB stain jitter (Tellez et al. 2018), Image only.

    RGB is deconvolved to optical densities with the Ruifrok matrix; each stain channel i becomes
    ``alpha_i * hed_i + beta_i`` with ``alpha_i ~ U(1 - s, 1 + s)`` and ``beta_i ~ U(-s, s)``
    (beta in natural-log OD units, so ``s = 0.05`` is a mild jitter), then it is converted back and
    clamped to [0, 1]. Masks and other non-image inputs pass through untouched. A pure tensor is
    treated as an image only when no ``tv_tensors.Image`` is present (torchvision's rule).
    Float images must be in [0, 1]; uint8 images are handled and returned as uint8.
    """

    _transformed_types = (tv_tensors.Image, is_pure_tensor)

    def __init__(self, sigma: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= sigma < 1.0:
            raise ValueError(f"sigma must be in [0, 1), got {sigma}")
        self.sigma = sigma

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:  # noqa: D102
        s = self.sigma
        alpha = 1.0 + (torch.rand(3) * 2.0 - 1.0) * s
        beta = (torch.rand(3) * 2.0 - 1.0) * s
        return {"alpha": alpha, "beta": beta}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:  # noqa: D102
        image = inpt.as_subclass(torch.Tensor)
        if image.ndim < 3 or image.shape[-3] != 3:
            raise ValueError(f"HEDJitter needs (..., 3, H, W) RGB, got {tuple(image.shape)}")
        is_uint8 = image.dtype == torch.uint8
        work = image.to(torch.float32) / 255.0 if is_uint8 else image
        hed = rgb_to_hed_torch(work)
        shape = (3, 1, 1)
        alpha = params["alpha"].to(hed).view(shape)
        beta = params["beta"].to(hed).view(shape)
        out = hed_to_rgb_torch(hed * alpha + beta)
        if is_uint8:
            out = (out * 255.0).round().to(torch.uint8)
        return out if is_pure_tensor(inpt) else tv_tensors.wrap(out, like=inpt)

    _get_params = make_params
    _transform = transform


def build_augmentation(
    flip: bool = True,
    rot90: bool = True,
    elastic: bool = True,
    elastic_alpha: float = 100.0,
    elastic_sigma: float = 6.0,
    elastic_p: float = 0.5,
    hed_jitter: float = 0.05,
) -> v2.Compose:
    """Build the training augmentation for ``(tv_tensors.Image, tv_tensors.Mask)`` pairs.

    Order: horizontal / vertical flips (p = 0.5 each), rotation by k * 90 degrees, elastic
    deformation (with probability ``elastic_p``), HED stain jitter (Image only). Random draws use
    torch's global RNG; :class:`nucseg.data.dataset.CropDataset` seeds it per crop.

    Args:
        flip: Random horizontal and vertical flips.
        rot90: Random rotation by a multiple of 90 degrees.
        elastic: Random elastic deformation (:class:`FastElasticTransform`; bilinear for
            Image, nearest for Mask).
        elastic_alpha: Displacement magnitude of ``v2.ElasticTransform``. The displacement per
            axis is about ``alpha / (12.3 * sigma)`` pixels RMS whatever the crop size (uniform
            noise smoothed by the Gaussian): ~1.4 px RMS, ~5 px at most, for the defaults.
        elastic_sigma: Smoothness (Gaussian sigma, pixels) of the displacement field.
        elastic_p: Probability of applying the elastic deformation.
        hed_jitter: Strength ``s`` of :class:`HEDJitter`; 0 disables it.

    Returns:
        A ``v2.Compose`` (the identity when everything is disabled).

    """
    transforms: list[v2.Transform] = []
    if flip:
        transforms += [v2.RandomHorizontalFlip(p=0.5), v2.RandomVerticalFlip(p=0.5)]
    if rot90:
        transforms.append(RandomRot90())
    if elastic:
        # fill=None: grid_sample's zero padding outside the crop (black Image, background Mask),
        # as fill=0 but without torchvision's extra fill channel (~2x faster resampling).
        deform = FastElasticTransform(alpha=elastic_alpha, sigma=elastic_sigma, fill=None)
        transforms.append(v2.RandomApply([deform], p=elastic_p))
    if hed_jitter > 0:
        transforms.append(HEDJitter(sigma=hed_jitter))
    if not transforms:
        transforms.append(v2.Identity())
    return v2.Compose(transforms)
