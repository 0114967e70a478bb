"""A small scene with every error status, shared by the overlay, inspector and error-cost tests."""

import numpy as np


def status_scene():
    """A 40x50 image: GT nuclei 1, 2 (side by side) and 3, a perfect prediction, and one that
    merges 1 and 2 into prediction 7, misses 3 and adds the false detection 9."""
    image = np.full((40, 50, 3), 200, np.uint8)
    gt = np.zeros((40, 50), np.int32)
    gt[5:15, 5:15], gt[5:15, 20:30], gt[25:35, 5:15] = 1, 2, 3
    good = gt.copy()
    merge = np.zeros_like(gt)
    merge[5:15, 5:30] = 7
    merge[25:35, 35:45] = 9
    return image, gt, good, merge
