"""MATLAB ``poly2mask`` reproduced in numpy: polygons in MoNuSeg's 1-based frame -> instance map.

The MoNuSeg organisers rasterised their XML polygons with ``poly2mask`` on the raw vertex
values (1-based pixel centres). This module follows its documented algorithm: vertices snap to a
5x5 subpixel grid with MATLAB rounding, each edge is traced on that grid, and a pixel is inside
when its centre is inside the snapped outline (even-odd rule). Only outlines are traced, so the
cost grows with the outline length, not with the image size.

Overlapping polygons (about one in seven in MoNuSeg): **the first region keeps the pixel.** The
organisers' conversion loop filled regions in file order, and each new region only took pixels
that were still 0. We know this from the MATLAB-made instance maps of the 13 XML-annotated
training images (``shared/monuseg/train/matlab_masks``): with first-wins, the rasterised XML gives
the same foreground pixel for pixel and a one-to-one map between ids on all 13
(``tests/test_monuseg_integration.py``); with later-wins, the partition differs on every image
that has an overlap. This is the one place in nucseg where that rule is decided.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nucseg.errors import AnnotationError

_SUB = 5  # poly2mask divides each pixel into a 5x5 subpixel grid

#: The ground-truth rule in one line, for model cards and score logs.
GROUND_TRUTH_RULE = "MATLAB poly2mask on the raw 1-based vertices; the first region keeps overlaps"


def _mround(v: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: halves go away from zero (numpy rounds them to even)."""
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def _ramp(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts ``n``: owner index and 0-based position of every element of the ranges."""
    owner = np.repeat(np.arange(len(n)), n)
    return owner, np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)


def _crossings(
    seg: np.ndarray, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the steps of the poly2mask edge traces that cross a pixel-centre column.

    Edges (in subpixel units) are traced as digital lines: a shallow edge gets one point
    per subpixel column, a steep one one point per subpixel row, the other coordinate
    rounded from the left (shallow) or upper (steep) end. A step from subpixel column
    5c - 2 to 5c - 1 crosses the centre of pixel column c; a diagonal step counts at its
    upper row, so the result does not depend on the direction an outline is traced.

    Returns:
        ``(seg, col, row)``: edge index, 1-based pixel column, and the 1-based pixel row
        from which the inside/outside parity of that column flips.

    """
    adx, ady = np.abs(x2 - x1), np.abs(y2 - y1)
    # shallow edges: each step moves one column, so visit only centre-column steps
    sh = (adx >= ady) & (adx > 0)
    flip = x1[sh] > x2[sh]
    xa, xb = np.where(flip, x2[sh], x1[sh]), np.where(flip, x1[sh], x2[sh])
    ya, yb = np.where(flip, y2[sh], y1[sh]), np.where(flip, y1[sh], y2[sh])
    first = (3 - xa) % _SUB  # first step t with (xa + t + 2) % 5 == 0
    k, j = _ramp(np.maximum(0, (xb - xa - first + _SUB - 1) // _SUB))
    t = first[k] + _SUB * j
    slope = (yb - ya) / (xb - xa)
    row_sh = np.minimum(_mround(ya[k] + slope[k] * t), _mround(ya[k] + slope[k] * (t + 1)))
    seg_sh, col_sh = seg[sh][k], xa[k] + t
    # steep edges: each step moves one row; keep the steps that change column
    st = (ady > adx) & (adx > 0)
    flip = y1[st] > y2[st]
    xa, xb = np.where(flip, x2[st], x1[st]), np.where(flip, x1[st], x2[st])
    ya, yb = np.where(flip, y2[st], y1[st]), np.where(flip, y1[st], y2[st])
    k, t = _ramp(yb - ya)
    slope = (xb - xa) / (yb - ya)
    x_t, x_t1 = _mround(xa[k] + slope[k] * t), _mround(xa[k] + slope[k] * (t + 1))
    xe = np.minimum(x_t, x_t1)
    keep = (x_t != x_t1) & ((xe + 2) % _SUB == 0)
    seg_all = np.concatenate([seg_sh, seg[st][k][keep]])
    xe = np.concatenate([col_sh, xe[keep]])
    ye = np.concatenate([row_sh, (ya[k] + t)[keep]])
    return seg_all, (xe + 2) // _SUB, -((-(ye + 2)) // _SUB)  # row = ceil((ye + 2) / 5)


def _runs(
    poly: np.ndarray, col: np.ndarray, row: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turn crossings into vertical pixel runs by even-odd parity, clipped like poly2mask.

    Returns:
        ``(poly, col, start, stop)`` sorted by polygon: 0-based column, half-open rows.

    """
    ok = (col >= 1) & (col <= width) & (row <= height)  # crossings left/right/below: dropped
    poly, col, row = poly[ok], col[ok] - 1, np.maximum(row[ok], 1) - 1  # above: top row
    key = (poly * (width + 1) + col) * (height + 2) + row
    key, count = np.unique(key, return_counts=True)
    key = key[count % 2 == 1]  # two flips at one pixel cancel
    row, group = key % (height + 2), key // (height + 2)
    idx = np.arange(len(key))
    is_first = np.ones(len(key), bool)
    is_first[1:] = group[1:] != group[:-1]
    rank = idx - np.maximum.accumulate(np.where(is_first, idx, 0))
    starts = idx[rank % 2 == 0]
    nxt = np.minimum(starts + 1, len(key) - 1)
    closed = (starts + 1 < len(key)) & (group[nxt] == group[starts])
    stop = np.where(closed, row[nxt], height)  # an unmatched flip runs to the bottom
    g = group[starts]
    return g // (width + 1), g % (width + 1), row[starts], stop


#: Vertices may lie this far outside the image (pixels), or twice the image's side if larger.
MAX_VERTEX_REACH = 10_000


def check_vertices(polygons: Sequence[np.ndarray], shape: Sequence[int], name: str) -> None:
    """Refuse vertices absurdly far outside the image (see :data:`MAX_VERTEX_REACH`).

    Rasterising costs time and memory in proportion to the outline's length, so one absurd
    vertex (``X="1e9"``) would exhaust memory; a real outline is never that far out. Within
    the reach, the rasteriser clips what lies outside the image.

    Raises:
        AnnotationError: Naming ``name``, the region (1-based) and the vertex.

    """
    height, width = int(shape[0]), int(shape[1])
    reach = max(2 * max(height, width), MAX_VERTEX_REACH)
    for k, xy in enumerate(polygons):
        xy = np.asarray(xy, dtype=np.float64)
        if xy.size == 0:
            continue
        bad = ~np.isfinite(xy).all(axis=1)
        bad |= (xy[:, 0] < -reach) | (xy[:, 0] > width + reach)
        bad |= (xy[:, 1] < -reach) | (xy[:, 1] > height + reach)
        if bad.any():
            x, y = xy[np.argmax(bad)]
            raise AnnotationError(
                f"{name}: region #{k + 1} has vertex (X={x:g}, Y={y:g}), far outside the "
                f"{width}x{height} image (more than {reach} pixels); the annotation is corrupt"
            )


def rasterise_polygons(
    polygons: Sequence[np.ndarray], shape: Sequence[int], name: str = "polygons"
) -> tuple[np.ndarray, np.ndarray]:
    """Fill polygons given in MATLAB's 1-based pixel frame into a 0-based instance map.

    Each polygon is rasterised exactly as MATLAB ``poly2mask(x, y, H, W)`` would, then
    painted in order with id = 1 + its rank among the non-empty polygons. Where polygons
    overlap, the **first** one keeps the pixel (the organisers' rule, see the module
    docstring); a polygon covered completely by earlier ones has no pixel left, and its id
    is missing from the map. Polygons with fewer than 3 vertices, zero area, or no pixel
    centre inside the image are skipped.

    Args:
        polygons: (n, 2) arrays of (x, y) vertices, 1-based (as in MoNuSeg's XML).
        shape: Output shape; only ``(H, W)`` is used.
        name: What the polygons come from, for error messages (e.g. the XML file).

    Returns:
        ``(labels, kept)``: int32 (H, W) map, and a bool array marking the polygons that
        received an id (whether or not earlier polygons left them any pixel).

    Raises:
        AnnotationError: A vertex is not finite or lies more than one image side outside
            the image (see :func:`check_vertices`); pixels outside the image are clipped.

    """
    check_vertices(polygons, shape, name)
    height, width = int(shape[0]), int(shape[1])
    labels = np.zeros((height, width), np.int32)
    kept = np.zeros(len(polygons), bool)
    usable = [i for i, p in enumerate(polygons) if len(p) >= 3]
    if not usable:
        return labels, kept
    sizes = np.array([len(polygons[i]) for i in usable])
    xy = np.concatenate([polygons[i] for i in usable]).astype(np.float64)
    owner = np.repeat(np.array(usable), sizes)
    starts = np.cumsum(sizes) - sizes
    nxt = np.arange(len(xy)) + 1
    nxt[starts + sizes - 1] = starts  # closing edge back to the first vertex
    x, y = xy[:, 0], xy[:, 1]
    area2 = np.add.reduceat(x * y[nxt] - y * x[nxt], starts)
    inside = (
        (np.maximum.reduceat(x, starts) >= 0.5)
        & (np.maximum.reduceat(y, starts) >= 0.5)
        & (np.minimum.reduceat(x, starts) <= width + 0.5)
        & (np.minimum.reduceat(y, starts) <= height + 0.5)
    )
    use = np.repeat((area2 != 0) & inside, sizes)
    fx = _mround(_SUB * (x - 0.5) + 1)  # same operation order as poly2mask
    fy = _mround(_SUB * (y - 0.5) + 1)
    a, b = np.flatnonzero(use), nxt[use]
    poly, col, row = _crossings(owner[a], fx[a], fy[a], fx[b], fy[b])
    poly, col, start, stop = _runs(poly, col, row, height, width)
    present = np.unique(poly)
    kept[present] = True
    ids = (np.searchsorted(present, poly) + 1).astype(np.int32)
    length = stop - start
    k, j = _ramp(length)
    flat = (start[k] + j) * width + col[k]
    # Runs are sorted by polygon and the sort is stable, so the first entry of each pixel
    # belongs to the earliest polygon: first-wins, as the organisers' fill loop did.
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    first = np.ones(len(order), bool)
    first[1:] = flat_sorted[1:] != flat_sorted[:-1]
    labels.ravel()[flat_sorted[first]] = ids[k][order][first]
    return labels, kept
