import numpy as np
import pytest

from nucseg.errors import ImageReadError, NucsegError
from nucseg.stain import (
    RUIFROK_E,
    RUIFROK_H,
    StainError,
    check_rgb_uint8,
    estimate_stain_vectors,
    hed_to_rgb,
    hematoxylin,
    optical_density,
    rgb_to_hed,
    stain_statistics,
)


def od_to_rgb(od):
    """Beer-Lambert: OD (..., 3) -> uint8 RGB."""
    return np.clip(np.round(255.0 * 10.0 ** (-od)), 0, 255).astype(np.uint8)


def mixed_stain_image(size=96, seed=0):
    """Pixels with random hematoxylin and eosin amounts, mixed with the Ruifrok vectors."""
    rng = np.random.default_rng(seed)
    c_h = rng.uniform(0.0, 1.0, (size, size, 1))
    c_e = rng.uniform(0.0, 1.0, (size, size, 1))
    return od_to_rgb(c_h * RUIFROK_H + c_e * RUIFROK_E)


def test_hematoxylin_higher_on_hematoxylin_pixels():
    image = np.empty((20, 40, 3), np.uint8)
    image[:, :20] = od_to_rgb(0.8 * RUIFROK_H)  # purple
    image[:, 20:] = od_to_rgb(0.8 * RUIFROK_E)  # pink
    h = hematoxylin(image)
    assert h.shape == (20, 40) and h.dtype == np.float32
    assert h[:, :20].min() > h[:, 20:].max()
    hed = rgb_to_hed(image)
    assert hed[:, 20:, 1].mean() > hed[:, :20, 1].mean()  # eosin the other way round


def test_hed_round_trip():
    image = mixed_stain_image(32)
    back = hed_to_rgb(rgb_to_hed(image))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 2


def test_optical_density():
    image = np.array([[[255, 255, 255], [0, 25, 128]]], np.uint8)
    od = optical_density(image)
    np.testing.assert_allclose(od[0, 0], 0.0)
    np.testing.assert_allclose(od[0, 1], -np.log10(np.array([1, 25, 128]) / 255.0))
    assert np.isfinite(od).all()


def test_macenko_vectors_unit_norm_and_ordered():
    stains = estimate_stain_vectors(mixed_stain_image())
    assert stains.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(stains, axis=1), 1.0, atol=1e-9)
    assert np.all(stains >= 0)
    h, e = stains
    assert h @ RUIFROK_H > h @ RUIFROK_E
    assert e @ RUIFROK_E > e @ RUIFROK_H
    assert h @ RUIFROK_H > 0.98


def test_macenko_blank_image_errors():
    with pytest.raises(StainError, match="too few"):
        estimate_stain_vectors(np.full((50, 50, 3), 250, np.uint8))
    with pytest.raises(StainError, match="alpha"):
        estimate_stain_vectors(mixed_stain_image(), alpha=60)


def test_stain_statistics():
    stats = stain_statistics(mixed_stain_image())
    assert 0 < stats["tissue_fraction"] <= 1
    assert stats["h_p05"] <= stats["h_p50"] <= stats["h_p95"]
    assert stats["mean_od"] > 0.15
    assert all(isinstance(v, float) for v in stats.values())
    blank = stain_statistics(np.full((20, 20, 3), 255, np.uint8))
    assert blank["tissue_fraction"] == 0 and np.isnan(blank["mean_od"]) and np.isnan(blank["h_r"])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8), np.uint8), "shape"),
        (np.zeros((8, 8, 4), np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_rejected(bad, match):
    with pytest.raises(ImageReadError, match=match):
        hematoxylin(bad)
    with pytest.raises(NucsegError, match="tile.png"):
        check_rgb_uint8(bad, name="tile.png")


def test_hed_to_rgb_bad_shape():
    with pytest.raises(StainError):
        hed_to_rgb(np.zeros((4, 4)))


def test_the_unmixing_matrix_inverts_the_stain_vectors():
    from nucseg.stain import RUIFROK_HED, unmixing_matrix

    unmix = unmixing_matrix(RUIFROK_HED)
    assert unmix.shape == (3, 3) and unmix.dtype == np.float32
    np.testing.assert_allclose(unmix @ np.asarray(RUIFROK_HED).T, np.eye(3), atol=1e-5)
    with pytest.raises(StainError, match="expected shape"):
        unmixing_matrix(np.ones((4, 3)))
