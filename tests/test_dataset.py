import numpy as np
import pytest
import torch
from skimage.draw import disk
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from nucseg.data.augment import build_augmentation
from nucseg.data.dataset import CropDataset
from nucseg.data.monuseg import Sample
from nucseg.data.targets import three_class_target
from nucseg.errors import LabelMapError, ShapeMismatchError


def make_sample(image_id, shape, n, seed):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        centre = tuple(int(rng.integers(0, s)) for s in shape)
        rr, cc = disk(centre, int(rng.integers(5, 10)), shape=shape)
        labels[rr, cc] = i
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    return Sample(image_id, image, labels, "demo", "train")


@pytest.fixture(scope="module")
def samples():
    return [make_sample("a", (300, 340), 60, 0), make_sample("b", (90, 70), 8, 1)]


def test_items_are_tv_tensors_cut_at_their_position(samples):
    ds = CropDataset(samples, crop_size=64, crops_per_epoch=6)
    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert mask.dtype == torch.int64 and mask.shape == (1, 64, 64)
    sample_index, y, x = ds.position(4)
    image, mask = ds[4]
    crop = samples[sample_index].image[y : y + 64, x : x + 64]
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), crop / 255.0, atol=1e-6)
    np.testing.assert_array_equal(
        mask[0].numpy(), samples[sample_index].instances[y : y + 64, x : x + 64]
    )


@pytest.mark.parametrize("context", [0, 8])
def test_a_crop_larger_than_the_image_mirrors_mask_and_image_alike(samples, context):
    ds = CropDataset(samples[1:], crop_size=128, crops_per_epoch=1, context=context)
    assert ds.position(0) == (0, 0, 0)  # the padded image is exactly one crop
    image, mask = ds[0]
    small = samples[1]
    assert image.shape == (3, 128, 128)
    expected = np.pad(small.image, ((0, 38), (0, 58), (0, 0)), mode="reflect") / 255.0
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), expected, atol=1e-6)
    # Mirrored nuclei stay nuclei: a zero-padded mask would teach them as background.
    mirrored = np.pad(small.instances, ((0, 38), (0, 58)), mode="reflect")
    np.testing.assert_array_equal(mask[0].numpy(), mirrored)
    assert mask[0, 90:].any() and mask[0, :, 70:].any()


def test_random_crops_are_deterministic_per_seed_and_epoch(samples):
    ds = CropDataset(samples, crop_size=64, crops_per_epoch=12, seed=3)
    assert len(ds) == 12
    first = [ds.position(i) for i in range(12)]
    assert [ds.position(i) for i in range(12)] == first
    assert torch.equal(
        ds[4][1], CropDataset(samples, crop_size=64, seed=3, crops_per_epoch=12)[4][1]
    )
    ds.set_epoch(1)
    assert ds.epoch == 1 and [ds.position(i) for i in range(12)] != first
    ds.set_epoch(0)
    assert [ds.position(i) for i in range(12)] == first
    other = CropDataset(samples, crop_size=64, crops_per_epoch=12, seed=4)
    assert [other.position(i) for i in range(12)] != first
    for sample_index, y, x in first:
        h, w = samples[sample_index].instances.shape
        assert 0 <= y <= h - 64 and 0 <= x <= w - 64
    with pytest.raises(IndexError):
        ds.position(12)


def test_default_crops_per_epoch_covers_data_about_once(samples):
    ds = CropDataset(samples, crop_size=64)
    mean_area = (300 * 340 + 90 * 70) / 2
    assert len(ds) == 2 * int(np.ceil(mean_area / 64**2))


def test_augmentation_is_reproducible_and_leaves_global_rng_alone(samples):
    augment = build_augmentation()
    ds = CropDataset(samples, crop_size=64, crops_per_epoch=6, transform=augment, seed=1)
    state = torch.random.get_rng_state()
    a, b = ds[2], ds[2]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].min() >= 0 and a[0].max() <= 1
    ids = set(np.unique(samples[0].instances).tolist())
    assert set(torch.unique(a[1]).tolist()) <= ids


def test_three_class_target_is_derived_after_augmentation(samples):
    kwargs = dict(crop_size=64, crops_per_epoch=6, transform=build_augmentation(), seed=2)
    instances = CropDataset(samples, **kwargs)
    classes = CropDataset(samples, target="three_class", boundary_width=2, **kwargs)
    for i in range(len(classes)):
        image, mask = classes[i]
        assert mask.dtype == torch.int64 and set(torch.unique(mask).tolist()) <= {0, 1, 2}
        expected = three_class_target(instances[i][1][0].numpy(), boundary_width=2)
        np.testing.assert_array_equal(mask[0].numpy(), expected)
        assert torch.equal(image, instances[i][0])


def test_dataloader_with_workers_matches_direct_indexing_across_epochs(samples):
    ds = CropDataset(samples, crop_size=32, crops_per_epoch=8, transform=build_augmentation())
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        images = torch.cat([batch[0] for batch in loader])
        masks = torch.cat([batch[1] for batch in loader])
        assert torch.equal(images, torch.stack([ds[i][0] for i in range(8)]))
        assert torch.equal(masks, torch.stack([ds[i][1] for i in range(8)]))
        if epoch == 0:
            first = images
    assert not torch.equal(images, first)  # persistent workers saw set_epoch(1)


def test_bad_inputs_raise_clear_errors(samples):
    bad = Sample("broken", np.zeros((10, 12, 3), np.uint8), np.zeros((10, 11), np.int32), "x", "t")
    with pytest.raises(ShapeMismatchError, match="broken"):
        CropDataset([bad])
    with pytest.raises(ValueError, match="target"):
        CropDataset(samples, target="boundary")
    with pytest.raises(ValueError, match="at least one"):
        CropDataset([])
    gray = Sample("gray", np.zeros((10, 12), np.uint8), np.zeros((10, 12), np.int32), "x", "t")
    with pytest.raises(ValueError, match="gray"):
        CropDataset([gray])
    for labels in (np.zeros((10, 12), np.float32), -np.ones((10, 12), np.int32)):
        bad = Sample("labels", np.zeros((10, 12, 3), np.uint8), labels, "x", "t")
        with pytest.raises(LabelMapError, match="labels instances"):
            CropDataset([bad])


def test_context_margin_is_cut_after_transform():
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    sample = SimpleNamespace(
        image_id="ctx",
        image=rng.integers(0, 255, (80, 90, 3), dtype=np.uint8),
        instances=rng.integers(0, 5, (80, 90)).astype(np.int32),
    )
    plain = CropDataset([sample], crop_size=32, crops_per_epoch=6, seed=3)
    seen = []

    def spy(image, mask):
        seen.append(tuple(image.shape[-2:]))
        return image, mask

    padded = CropDataset(
        [sample], crop_size=32, crops_per_epoch=6, seed=3, context=8, transform=spy
    )
    for i in range(6):
        (a_img, a_mask), (b_img, b_mask) = plain[i], padded[i]
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
        assert isinstance(b_img, tv_tensors.Image) and isinstance(b_mask, tv_tensors.Mask)
    assert set(seen) == {(48, 48)}
    with pytest.raises(ValueError, match="context"):
        CropDataset([sample], crop_size=32, context=-1)


def test_samples_are_drawn_in_proportion_to_their_area():
    # One 256-pixel image beside four 64-pixel ones: pixels, not images, are equally likely.
    big = make_sample("big", (256, 256), 20, 2)
    small = [make_sample(f"s{i}", (64, 64), 3, 3 + i) for i in range(4)]
    ds = CropDataset([big, *small], crop_size=64, crops_per_epoch=2000)
    drawn = np.bincount([ds.position(i)[0] for i in range(len(ds))], minlength=5)
    assert abs(drawn[0] / len(ds) - 0.8) < 0.04  # 65536 of 81920 pixels
    assert (drawn[1:] > 0).all()
    ds.set_epoch(1)
    assert [ds.position(i) for i in range(20)] != [
        CropDataset([big, *small], crop_size=64, crops_per_epoch=2000).position(i)
        for i in range(20)
    ]
