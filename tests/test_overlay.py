import numpy as np
import pytest

from nucseg.errors import ShapeMismatchError
from nucseg.overlay import contour_mask, overlay_contours


def test_touching_nuclei_keep_separate_outlines():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10] = 1
    labels[5:15, 10:18] = 2
    edges = contour_mask(labels)
    assert edges[8, 9] and edges[8, 10]  # both sides of the shared border
    assert not edges[8, 5] and not edges[0, 0]


def test_overlay_draws_only_on_contours():
    image = np.full((20, 20, 3), 100, np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 5:15] = 3
    out = overlay_contours(image, labels, colour=(255, 0, 0), thickness=2)
    assert (out[5, 8] == (255, 0, 0)).all() and (out[6, 8] == (255, 0, 0)).all()
    assert (out[10, 10] == 100).all()
    assert (image == 100).all()  # input untouched
    with pytest.raises(ShapeMismatchError):
        overlay_contours(image, labels[:10])
