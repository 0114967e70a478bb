"""Turn per-pixel predictions into instance maps (one integer id per nucleus, 0 = background).

Two entry points, both ending in the same clean-up (hole filling, small-object removal and
sequential relabelling to int32):

- `instances_from_foreground`: a foreground probability (or binary) map, split into nuclei by a
  watershed on the distance transform, seeded at its local maxima;
- `instances_from_three_class`: a [background, inside, boundary] probability map, split by a
  marker-controlled watershed whose seeds are the confident nucleus interiors, or, for a U-Net
  with the auxiliary distance head, the peaks of its predicted distance map.

All sizes are in pixels of the 40x MoNuSeg images (about 0.25 um per pixel), where a nucleus is
typically 150-600 pixels in area (14-28 pixels across).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import relabel_sequential as sk_relabel_sequential
from skimage.segmentation import watershed

from nucseg.errors import NucsegError
from nucseg.labels import as_label_map

_CROSS = ndi.generate_binary_structure(2, 1)  # 4-connectivity
_SQUARE = ndi.generate_binary_structure(2, 2)  # 8-connectivity
_INT32_MAX = int(np.iinfo(np.int32).max)


class PostprocessError(NucsegError, ValueError):
    """A probability map or a post-processing parameter is invalid (label maps: `LabelMapError`)."""


@dataclass(frozen=True)
class PostprocessParams:
    """Settings of the post-processing (probabilities -> instance map).

    Attributes:
        fg_threshold: a pixel is foreground when its foreground probability (for three-class
            maps: inside + boundary) exceeds this value, in [0, 1]. Ignored for boolean input.
        marker_threshold: three-class only: a pixel seeds a nucleus when inside - boundary
            probability exceeds this value, in [-1, 1].
        min_size: instances (and foreground blobs) smaller than this area, in pixels, are
            removed.
        min_marker_size: three-class only: seed components smaller than this area, in pixels,
            are dropped (the nucleus is then flooded from a neighbouring seed or kept whole).
        fill_holes: fill holes inside each instance, and background holes of at most
            ``max_hole_size`` pixels in the foreground mask before splitting.
        max_hole_size: largest hole in the foreground mask (area in pixels) that is filled.
            Larger enclosed background, e.g. a lumen ringed by nuclei, is kept.
        marker_method: how the distance-transform watershed is seeded: ``"peaks"`` (local
            maxima within ``min_distance``; fast) or ``"h_maxima"`` (maxima at least ``h``
            higher than their surroundings; about 0.5 s slower per 1000x1000 image).
        min_distance: ``"peaks"`` seeds: a seed is a maximum of the distance map within a
            square window of half-width ``min_distance`` pixels, so seeds closer than this
            (Chebyshev distance, pixels) are suppressed.
        h: ``"h_maxima"`` seeds: minimal height in pixels of a distance-map maximum above
            the saddle joining it to a higher one; larger values split fewer nuclei.
        distance_sigma: standard deviation, in pixels, of the Gaussian smoothing of the distance
            transform before seeding (removes spurious maxima from ragged outlines); 0 disables.
        flood: three-class only: the surface flooded from the seeds, ``"inside"`` (1 - inside
            probability) or ``"boundary"`` (boundary probability).
        markers: three-class only: where the seeds come from. ``"classes"``: inside - boundary
            probability above ``marker_threshold``; ``"distance"``: the predicted distance map
            (a fourth channel) above ``marker_threshold``, and the seeds then flood
            ``1 - distance`` (``flood`` is ignored).
        split: foreground maps only: split touching nuclei with the distance watershed; False
            keeps 8-connected components whole (an ablation of the splitting step).
    """

    fg_threshold: float = 0.5
    marker_threshold: float = 0.5
    min_size: int = 30
    min_marker_size: int = 10
    fill_holes: bool = True
    max_hole_size: int = 100
    marker_method: Literal["peaks", "h_maxima"] = "peaks"
    min_distance: int = 6
    h: float = 2.0
    distance_sigma: float = 1.0
    flood: Literal["inside", "boundary"] = "inside"
    split: bool = True
    markers: Literal["classes", "distance"] = "classes"

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.fg_threshold <= 1.0, "fg_threshold must be in [0, 1]"),
            (-1.0 <= self.marker_threshold <= 1.0, "marker_threshold must be in [-1, 1]"),
            (self.min_size >= 0, "min_size must be >= 0 pixels"),
            (self.min_marker_size >= 0, "min_marker_size must be >= 0 pixels"),
            (self.max_hole_size >= 0, "max_hole_size must be >= 0 pixels"),
            (self.marker_method in ("peaks", "h_maxima"), "marker_method: 'peaks'|'h_maxima'"),
            (self.min_distance >= 1, "min_distance must be >= 1 pixel"),
            (self.h > 0, "h must be > 0 pixels"),
            (self.distance_sigma >= 0, "distance_sigma must be >= 0 pixels"),
            (self.flood in ("inside", "boundary"), "flood must be 'inside' or 'boundary'"),
            (self.markers in ("classes", "distance"), "markers must be 'classes' or 'distance'"),
        ]
        for ok, message in checks:
            if not ok:
                raise PostprocessError(f"PostprocessParams: {message}; got {self!r}")


def _to_int32(arr: np.ndarray) -> np.ndarray:
    """Copy a validated label map to int32, renumbering first if its ids do not fit."""
    if arr.size and int(arr.max()) > _INT32_MAX:
        return relabel_sequential(arr)
    return arr.astype(np.int32, copy=True)


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber instance ids to 1..n in increasing order of the old ids; 0 stays background.

    `skimage.segmentation.relabel_sequential` with the label-map check and an int32 result.

    Args:
        labels: 2-D non-negative integer label map.

    Returns:
        New int32 label map (the input is not modified).

    Raises:
        LabelMapError: not a 2-D non-negative integer map.
        PostprocessError: more than 2**31 - 1 instances.
    """
    arr = as_label_map(labels)
    if arr.size == 0:  # skimage cannot take the max of an empty map
        return arr.astype(np.int32)
    out = sk_relabel_sequential(arr)[0]  # keeps the input dtype
    if out.dtype.itemsize > 4 and int(out.max()) > _INT32_MAX:
        raise PostprocessError("labels: more instances than int32 can hold")
    return out.astype(np.int32, copy=False)


def remove_small_instances(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set instances smaller than ``min_size`` pixels to background and renumber the rest 1..n.

    `skimage.morphology.remove_small_objects` on the ids, then `relabel_sequential`.

    Args:
        labels: 2-D non-negative integer label map.
        min_size: minimal instance area in pixels; 0 keeps everything.

    Returns:
        New int32 label map with ids 1..n, in increasing order of the old ids.

    Raises:
        LabelMapError: not a 2-D non-negative integer map.
        PostprocessError: negative ``min_size``.
    """
    arr = as_label_map(labels)
    if min_size < 0:
        raise PostprocessError(f"min_size must be >= 0 pixels, got {min_size}")
    # skimage counts areas with a bincount over the ids: renumber sparse huge ids first.
    small_ids = arr.size == 0 or int(arr.max()) <= 4 * arr.size + 1024
    out = _to_int32(arr) if small_ids else relabel_sequential(arr)
    if out.size and min_size > 0:
        with warnings.catch_warnings():  # a map holding a single nucleus is fine here
            warnings.filterwarnings("ignore", "Only one label", UserWarning)
            remove_small_objects(out, max_size=min_size - 1, out=out)  # drops size <= max_size
    return relabel_sequential(out)


def fill_instance_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes that lie entirely inside a single instance with its id.

    A hole is a 4-connected background region that does not touch the image border and whose
    neighbouring pixels all belong to one instance; background enclosed by several touching
    instances is left alone.

    Args:
        labels: 2-D non-negative integer label map.

    Returns:
        New int32 label map.

    Raises:
        LabelMapError: not a 2-D non-negative integer map.
    """
    arr = as_label_map(labels)
    out = _to_int32(arr)
    if out.size == 0 or not out.any():
        return out
    holes, n_holes = ndi.label(out == 0, structure=_CROSS)
    if n_holes == 0:
        return out
    # (hole, instance) pairs of 4-neighbours, both directions along both axes, as one int64 key.
    base = int(out.max()) + 1
    pairs = []
    for h_a, h_b, l_a, l_b in (
        (holes[:, :-1], holes[:, 1:], out[:, :-1], out[:, 1:]),
        (holes[:-1, :], holes[1:, :], out[:-1, :], out[1:, :]),
    ):
        for hole, lab in ((h_a, l_b), (h_b, l_a)):
            m = (hole > 0) & (lab > 0)
            pairs.append(hole[m].astype(np.int64) * base + lab[m])
    keys = np.unique(np.concatenate(pairs))
    hole_ids, owners = keys // base, keys % base
    n_neigh = np.bincount(hole_ids, minlength=n_holes + 1)
    owner = np.zeros(n_holes + 1, dtype=np.int32)
    owner[hole_ids] = owners
    fillable = n_neigh == 1
    border = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
    fillable[border] = False
    fillable[0] = False
    fill = fillable[holes]
    out[fill] = owner[holes[fill]]
    return out


def _fill_small_holes(mask: np.ndarray, max_hole_size: int) -> np.ndarray:
    """Fill 4-connected background regions of at most ``max_hole_size`` pixels not on the border."""
    holes, n = ndi.label(~mask, structure=_CROSS)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    fillable = sizes <= max_hole_size
    fillable[0] = False
    fillable[np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])] = False
    return mask | fillable[holes]


def _clean_mask(mask: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """Shared first step: fill small holes, drop 8-connected blobs under ``min_size`` pixels."""
    if not mask.any():  # also covers zero-size maps
        return mask
    if params.fill_holes:
        mask = _fill_small_holes(mask, params.max_hole_size)
    return remove_small_objects(mask, max_size=max(params.min_size - 1, 0), connectivity=2)


def _label_unseeded(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give foreground components that no seed reached their own new ids."""
    rest = mask & (labels == 0)
    if rest.any():
        extra, _ = ndi.label(rest, structure=_SQUARE)
        labels = np.where(rest, extra + labels.max(), labels)
    return labels


def _finish(labels: np.ndarray, mask: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """Shared clean-up: unseeded blobs, holes, small instances, sequential int32 ids."""
    labels = _label_unseeded(labels.astype(np.int32), mask)
    if params.fill_holes:
        labels = fill_instance_holes(labels)
    return remove_small_instances(labels, params.min_size)


def _foreground_mask(fg: Any, threshold: float) -> np.ndarray:
    """Validate a 2-D foreground map and threshold it (booleans are used as they are)."""
    arr = np.asarray(fg)
    if arr.ndim != 2:
        raise PostprocessError(f"fg: expected a 2-D foreground map, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise PostprocessError(f"fg: expected a float or bool map, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise PostprocessError("fg: contains NaN or infinite values")
    return arr > threshold


def distance_markers(mask: np.ndarray, params: PostprocessParams) -> tuple[np.ndarray, np.ndarray]:
    """Seeds for the distance-transform watershed of a binary mask.

    Args:
        mask: 2-D boolean foreground.
        params: uses ``marker_method``, ``min_distance``, ``h`` and ``distance_sigma``.

    Returns:
        ``(distance, markers)``: the (smoothed) Euclidean distance to background in pixels
        (float64) and the labelled seeds (int32, 8-connected seed pixels share an id).
    """
    dist = ndi.distance_transform_edt(mask)
    if params.distance_sigma > 0:
        dist = ndi.gaussian_filter(dist, params.distance_sigma) * mask
    if params.marker_method == "peaks":
        window = 2 * params.min_distance + 1
        seeds = (dist == ndi.maximum_filter(dist, size=window)) & mask
    else:
        seeds = h_maxima(dist, params.h).astype(bool) & mask
    markers, _ = ndi.label(seeds, structure=_SQUARE)
    return dist, markers.astype(np.int32)


def instances_from_foreground(
    fg: np.ndarray, params: PostprocessParams | None = None
) -> np.ndarray:
    """Split a foreground map into nuclei with a distance-transform watershed.

    Steps: threshold at ``fg_threshold`` (bool input is used as is), fill holes up to
    ``max_hole_size``, drop blobs under ``min_size``, seed at maxima of the distance transform,
    flood ``-distance`` inside the mask (or keep connected components when ``split`` is False),
    then the shared clean-up.

    Args:
        fg: (H, W) foreground probability (float) or mask (bool).
        params: post-processing settings; defaults to ``PostprocessParams()``.

    Returns:
        int32 (H, W) instance map with ids 1..n (all zeros when nothing is foreground).

    Raises:
        PostprocessError: ``fg`` is not 2-D, not numeric, or not finite.
    """
    params = params or PostprocessParams()
    mask = _foreground_mask(fg, params.fg_threshold)
    mask = _clean_mask(mask, params)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    if params.split:
        dist, markers = distance_markers(mask, params)
        labels = watershed(-dist, markers, mask=mask)
    else:
        labels, _ = ndi.label(mask, structure=_SQUARE)
    return _finish(labels, mask, params)


def instances_from_three_class(
    probs: np.ndarray, params: PostprocessParams | None = None
) -> np.ndarray:
    """Split a three-class probability map into nuclei with a marker-controlled watershed.

    Foreground is ``inside + boundary > fg_threshold``; seeds are the connected components of
    ``inside - boundary > marker_threshold`` (within the foreground) of at least
    ``min_marker_size`` pixels; the seeds flood ``1 - inside`` (or ``boundary``, see
    ``flood``) within the foreground. With ``markers="distance"`` the seeds are where the
    predicted distance map exceeds ``marker_threshold`` instead, and they flood
    ``1 - distance``. Foreground blobs without a seed become their own instance, then the
    shared clean-up runs.

    Args:
        probs: (3, H, W) float probabilities, channels [background, inside, boundary], or
            (4, H, W) with the predicted distance map in [0, 1] as the fourth channel.
        params: post-processing settings; defaults to ``PostprocessParams()``.

    Returns:
        int32 (H, W) instance map with ids 1..n (all zeros when nothing is foreground).

    Raises:
        PostprocessError: ``probs`` is not a finite (3, H, W) or (4, H, W) array, or
            ``markers="distance"`` without a distance channel.
    """
    params = params or PostprocessParams()
    arr = np.asarray(probs)
    if arr.ndim != 3 or arr.shape[0] not in (3, 4):
        raise PostprocessError(
            "probs: expected shape (3, H, W) [background, inside, boundary] or (4, H, W) "
            f"[..., distance], got {arr.shape}"
        )
    if params.markers == "distance" and arr.shape[0] != 4:
        raise PostprocessError(
            f"probs: markers='distance' needs a distance channel, (4, H, W); got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise PostprocessError(f"probs: expected float probabilities, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise PostprocessError("probs: contains NaN or infinite values")
    inside, boundary = arr[1].astype(np.float32), arr[2].astype(np.float32)
    mask = (inside + boundary) > params.fg_threshold
    mask = _clean_mask(mask, params)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    if params.markers == "distance":
        distance = arr[3].astype(np.float32)
        seeds, surface = distance > params.marker_threshold, 1.0 - distance
    else:
        seeds = (inside - boundary) > params.marker_threshold
        surface = 1.0 - inside if params.flood == "inside" else boundary
    markers, _ = ndi.label(seeds & mask, structure=_SQUARE)
    markers = remove_small_instances(markers, params.min_marker_size)
    labels = watershed(surface, markers, mask=mask)
    return _finish(labels, mask, params)
