import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from nucseg.data.demo import make_tile
from nucseg.errors import ImageReadError, LabelMapError, ShapeMismatchError
from nucseg.runtime import InputError
from nucseg.stain import hed_to_rgb
from nucseg.synth.stain_stats import (
    compare_stain,
    nuclear_contrast,
    nuclear_contrast_table,
    stain_statistics,
)


def tiles(seeds, size=48):
    return np.stack([make_tile(s, size)[0] for s in seeds])


@pytest.fixture(scope="module")
def demo_sets():
    """Two disjoint sets of demo tiles from the same generator (same distribution)."""
    return tiles(range(32)), tiles(range(1000, 1032))


def stain_patch(h=0.0, e=0.0, size=16):
    """A flat patch of pure hematoxylin and/or eosin (skimage HED units)."""
    hed = np.zeros((size, size, 3))
    hed[..., 0], hed[..., 1] = h, e
    return hed_to_rgb(hed)


def test_pure_hematoxylin_puts_the_mass_in_h():
    stats = stain_statistics(np.stack([stain_patch(h=0.05), stain_patch(e=0.05), stain_patch()]))
    h_row, e_row, white = stats.iloc[0], stats.iloc[1], stats.iloc[2]
    assert h_row.hematoxylin > 0.2 and abs(h_row.eosin) < 0.02 * h_row.hematoxylin
    assert e_row.eosin > 0.2 and abs(e_row.hematoxylin) < 0.02 * e_row.eosin
    # Hematoxylin absorbs red most, eosin green; blank glass has no OD at all.
    assert h_row.od_r > h_row.od_b and e_row.od_g > e_row.od_r
    assert white[["od_mean", "hematoxylin", "eosin", "saturation"]].abs().max() < 1e-6
    assert white.brightness == pytest.approx(1.0)
    assert list(stats.columns) == ["od_r", "od_g", "od_b", "od_mean", "hematoxylin", "eosin",
                                   "hematoxylin_p95", "tissue_fraction", "brightness",
                                   "saturation"]  # fmt: skip


def test_compare_stain_side_by_side(demo_sets):
    a, b = demo_sets
    same = compare_stain(a, b)
    darker = compare_stain(a, (a * 0.6).astype(np.uint8))
    assert same.index.name == "feature" and "ks_statistic" in same.columns
    assert same.ks_statistic.max() < 0.5
    assert darker.loc["od_mean", "ks_statistic"] == 1.0
    assert darker.loc["od_mean", "synthetic_mean"] > darker.loc["od_mean", "real_mean"]
    # A precomputed table gives the same answer as the crops.
    pd.testing.assert_frame_equal(compare_stain(stain_statistics(a), b), same)


def disc_image(nucleus_h, background_h, size=40, radius=8):
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    hed = np.zeros((size, size, 3))
    hed[..., 0] = np.where(inside, nucleus_h, background_h)
    hed[..., 1] = 0.02
    return hed_to_rgb(hed), inside.astype(np.int32)


def test_nuclear_contrast_sign_and_zero():
    dark = nuclear_contrast(*disc_image(0.08, 0.01))
    reverse = nuclear_contrast(*disc_image(0.01, 0.08))
    equal = nuclear_contrast(*disc_image(0.04, 0.04))
    assert dark > 0.2 and reverse < -0.2
    assert abs(equal) < 1e-6


def test_nuclear_contrast_ring_excludes_far_background():
    image, inside = disc_image(0.08, 0.01)
    # Darken everything farther than 10 px from the nucleus: the default ring (2, 8] ignores it.
    far = ndi.distance_transform_edt(inside == 0) > 10
    image[far] = 0
    assert nuclear_contrast(image, inside) == pytest.approx(
        nuclear_contrast(*disc_image(0.08, 0.01))
    )


def test_nuclear_contrast_edge_cases():
    image, inside = disc_image(0.08, 0.01)
    assert math.isnan(nuclear_contrast(image, np.zeros_like(inside)))
    assert math.isnan(nuclear_contrast(image, np.ones_like(inside)))  # no background ring
    with pytest.raises(ShapeMismatchError):
        nuclear_contrast(image, inside[:-1])
    with pytest.raises(LabelMapError):
        nuclear_contrast(image, inside.astype(bool))
    with pytest.raises(ImageReadError):
        nuclear_contrast(image[..., 0], inside)
    with pytest.raises(InputError, match="inner"):
        nuclear_contrast(image, inside, inner=5, outer=5)


def test_nuclear_contrast_table_on_demo_tiles():
    pairs = [make_tile(s, 64) for s in range(3)]
    table = nuclear_contrast_table([p[0] for p in pairs], [p[1] for p in pairs])
    assert list(table.columns) == ["nucleus_h", "ring_h", "contrast", "nuclei"]
    assert len(table) == 3 and (table.contrast > 0.1).all() and (table.nuclei > 0).all()
    assert table.contrast.iloc[0] == pytest.approx(nuclear_contrast(*pairs[0]))
    with pytest.raises(InputError, match="2 instance maps"):
        nuclear_contrast_table([p[0] for p in pairs], [p[1] for p in pairs[:2]])
