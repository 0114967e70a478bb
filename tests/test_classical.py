import numpy as np
import pytest

from nucseg.classical import ClassicalParams, ClassicalParamsError, segment_classical
from nucseg.errors import ImageReadError, NucsegError
from nucseg.postprocess import PostprocessError
from nucseg.stain import RUIFROK_E, RUIFROK_H

CENTRES = [(30, 30), (30, 90), (90, 40), (95, 100), (60, 140)]


def synthetic_he(size=(128, 170), radius=11, seed=0):
    """Dark-purple (hematoxylin) discs on a pink (eosin) background, drawn in OD space."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    c_h = np.zeros(size)
    for cy, cx in CENTRES:
        c_h[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 0.9
    c_e = np.full(size, 0.35)
    od = c_h[..., None] * RUIFROK_H + c_e[..., None] * RUIFROK_E
    od += rng.normal(0, 0.02, od.shape)
    rgb = np.clip(np.round(255.0 * 10.0 ** (-od)), 0, 255).astype(np.uint8)
    return rgb, c_h > 0


def test_finds_dark_discs_on_pink():
    image, truth = synthetic_he()
    labels = segment_classical(image)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    assert labels.max() == len(CENTRES)
    for cy, cx in CENTRES:
        assert labels[cy, cx] > 0
    assert len({labels[c] for c in CENTRES}) == len(CENTRES)
    dice = 2 * np.sum((labels > 0) & truth) / (np.sum(labels > 0) + truth.sum())
    assert dice > 0.9


def test_touching_dark_discs_split():
    size = (80, 100)
    yy, xx = np.mgrid[: size[0], : size[1]]
    c_h = ((yy - 40) ** 2 + (xx - 37) ** 2 <= 14**2) | ((yy - 40) ** 2 + (xx - 63) ** 2 <= 14**2)
    od = 0.9 * c_h[..., None] * RUIFROK_H + 0.35 * RUIFROK_E
    image = np.round(255.0 * 10.0 ** (-od)).astype(np.uint8)
    labels = segment_classical(image)
    assert labels.max() == 2
    assert labels[40, 30] != labels[40, 70]


def test_blank_image_gives_zeros():
    for value in (255, 200):
        labels = segment_classical(np.full((64, 64, 3), value, np.uint8))
        assert labels.dtype == np.int32 and not labels.any()


def test_params_are_used():
    image, _ = synthetic_he()
    assert segment_classical(image, ClassicalParams(min_size=1000)).max() == 0
    with_opening = segment_classical(image, ClassicalParams(opening_radius=2, sigma=0))
    assert with_opening.max() == len(CENTRES)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((32, 32, 3), np.float32),
        np.zeros((32, 32, 3), np.uint16),
        np.zeros((32, 32), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
    ],
)
def test_refuses_non_uint8_rgb(bad):
    with pytest.raises(ImageReadError, match="RGB"):
        segment_classical(bad)


def test_bad_params():
    with pytest.raises(ClassicalParamsError, match="sigma"):
        ClassicalParams(sigma=-1)
    with pytest.raises(ClassicalParamsError, match="threshold_scale"):
        ClassicalParams(threshold_scale=0)
    with pytest.raises(PostprocessError, match="min_distance"):
        ClassicalParams(min_distance=0)
    assert issubclass(ClassicalParamsError, NucsegError)
