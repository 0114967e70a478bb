import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.draw import disk
from torchvision import tv_tensors
from torchvision.transforms import v2

from nucseg.data.augment import (
    FastElasticTransform,
    HEDJitter,
    RandomRot90,
    build_augmentation,
    hed_to_rgb_torch,
    rgb_to_hed_torch,
)

# 19 well separated colours, none a multiple of another, so that a blend with the black
# background decodes to the colour itself or to black; ids can be read back from the image
PALETTE = np.array(
    [c for c in itertools.product((0.0, 0.5, 1.0), repeat=3) if max(c) == 1.0], dtype=np.float32
)


def colour_coded(shape=(96, 112), n=18, seed=0, radius=(6, 12)):
    """Instance map with n nuclei and an image whose colour at each pixel encodes its id."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    for i in range(1, n + 1):
        centre = tuple(int(rng.integers(0, s)) for s in shape)
        rr, cc = disk(centre, int(rng.integers(*radius)), shape=shape)
        labels[rr, cc] = i
    colours = np.concatenate([np.zeros((1, 3), np.float32), PALETTE[:n]])
    image = colours[labels].transpose(2, 0, 1)
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(
        torch.from_numpy(labels)[None]
    )


def decode(image):
    """Map every pixel colour back to the id whose palette colour is nearest."""
    colours = torch.cat([torch.zeros(1, 3), torch.from_numpy(PALETTE)])
    pixels = image.as_subclass(torch.Tensor).reshape(3, -1).T
    return torch.cdist(pixels, colours).argmin(1).reshape(image.shape[-2:])


def agreement(image, mask):
    return (decode(image) == mask[0]).float().mean().item()


@pytest.mark.parametrize(
    "transform", [v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=1.0), RandomRot90()]
)
def test_flips_and_rot90_keep_image_and_mask_aligned(transform):
    image, mask = colour_coded()
    assert agreement(image, mask) == 1.0
    for seed in range(6):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        assert isinstance(out_image, tv_tensors.Image) and isinstance(out_mask, tv_tensors.Mask)
        assert out_mask.dtype == torch.int64
        assert agreement(out_image, out_mask) == 1.0


def test_rot90_rotates_by_each_multiple_of_90_degrees():
    image, mask = colour_coded()
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out_image, out_mask = RandomRot90()(image, mask)
        k = next(k for k in range(4) if torch.equal(out_mask, torch.rot90(mask, k, dims=(-2, -1))))
        assert torch.equal(out_image, torch.rot90(image, k, dims=(-2, -1)))
        seen.add(k)
    assert seen == {0, 1, 2, 3}
    torch.manual_seed(0)
    assert RandomRot90(p=0.0)(image, mask)[1] is mask


def test_rot90_refuses_boxes():
    boxes = tv_tensors.BoundingBoxes([[0, 0, 4, 4]], format="XYXY", canvas_size=(8, 8))
    with pytest.raises(TypeError, match="BoundingBoxes"):
        RandomRot90()(tv_tensors.Image(torch.zeros(3, 8, 8)), boxes)


def test_elastic_pipeline_keeps_alignment_and_ids():
    # MoNuSeg-sized nuclei. Bilinear colour blends at nucleus borders can decode to a third
    # palette colour, and near the canvas edge the image blends with the zero fill, so only
    # nucleus interiors away from the edge must agree (almost) exactly.
    image, mask = colour_coded((128, 128), n=16, seed=0, radius=(8, 15))
    ids = set(torch.unique(mask).tolist())
    augment = build_augmentation(hed_jitter=0.0, elastic_p=1.0)
    for seed in range(5):
        torch.manual_seed(seed)
        out_image, out_mask = augment(image, mask)
        assert not torch.equal(out_mask, mask)
        assert out_mask.dtype == torch.int64 and out_mask.shape == mask.shape
        assert set(torch.unique(out_mask).tolist()) <= ids
        assert agreement(out_image, out_mask) > 0.98
        labels = out_mask[0].numpy()
        interior = (ndi.maximum_filter(labels, 3) == labels) & (
            ndi.minimum_filter(labels, 3) == labels
        )
        interior[:3], interior[-3:], interior[:, :3], interior[:, -3:] = False, False, False, False
        assert (decode(out_image).numpy() == labels)[interior].mean() > 0.999


def test_strong_elastic_creates_no_new_ids():
    _, mask = colour_coded(seed=3)
    ids = set(torch.unique(mask).tolist())
    deform = v2.ElasticTransform(alpha=500.0, sigma=3.0, interpolation="bilinear")
    for seed in range(3):
        torch.manual_seed(seed)
        out = deform(tv_tensors.Image(torch.rand(3, *mask.shape[-2:])), mask)[1]
        assert set(torch.unique(out).tolist()) <= ids  # Mask is resampled with nearest


def test_hed_matches_skimage_and_round_trips():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.05, 1.0, (16, 16, 3))
    hed = rgb_to_hed_torch(torch.from_numpy(rgb.transpose(2, 0, 1)))
    # skimage scales OD by 1 / ln(1e6) and clips negatives to 0
    ours = (hed / np.log(1e6)).clamp(min=0).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(ours, rgb2hed(rgb), atol=1e-6)
    back = hed_to_rgb_torch(hed).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(back, rgb, atol=1e-6)


def test_hed_jitter_touches_only_the_image():
    image, mask = colour_coded()
    image = tv_tensors.Image(image * 0.6 + 0.2)  # avoid saturated pixels
    torch.manual_seed(0)
    out_image, out_mask = HEDJitter(sigma=0.1)(image, mask)
    assert out_mask is mask
    assert isinstance(out_image, tv_tensors.Image) and out_image.dtype == torch.float32
    assert out_image.min() >= 0.0 and out_image.max() <= 1.0
    h_before, h_after = rgb_to_hed_torch(image)[0], rgb_to_hed_torch(out_image)[0]
    assert (h_after - h_before).abs().mean() > 1e-3


def test_hed_jitter_zero_is_identity_and_uint8_is_supported():
    image, _ = colour_coded()
    image = tv_tensors.Image(image * 0.6 + 0.2)
    torch.testing.assert_close(HEDJitter(sigma=0.0)(image), image, atol=1e-5, rtol=0)
    as_uint8 = tv_tensors.Image((image * 255).round().to(torch.uint8))
    torch.manual_seed(1)
    out = HEDJitter(sigma=0.05)(as_uint8)
    assert out.dtype == torch.uint8 and out.shape == as_uint8.shape
    with pytest.raises(ValueError):
        HEDJitter(sigma=1.5)


def test_build_augmentation_full_and_disabled():
    image, mask = colour_coded()
    torch.manual_seed(0)
    out_image, out_mask = build_augmentation()(image, mask)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert out_image.min() >= 0.0 and out_image.max() <= 1.0
    identity = build_augmentation(flip=False, rot90=False, elastic=False, hed_jitter=0.0)
    same_image, same_mask = identity(image, mask)
    assert torch.equal(same_image, image) and torch.equal(same_mask, mask)


@pytest.mark.parametrize(
    ("alpha", "sigma", "shape"),
    [(100.0, 6.0, (96, 80)), ((30.0, 80.0), (2.5, 7.3), (70, 60))],
)
def test_fast_elastic_draws_the_same_field_as_torchvision(alpha, sigma, shape):
    probe = [torch.zeros(3, *shape)]
    torch.manual_seed(0)
    expected = v2.ElasticTransform(alpha, sigma).make_params(probe)["displacement"]
    torch.manual_seed(0)
    fast = FastElasticTransform(alpha, sigma).make_params(probe)["displacement"]
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)
