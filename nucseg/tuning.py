"""Grid search of post-processing parameters on validation images, maximising mean AJI.

Tune on validation images only: the test images must not choose the thresholds they are
scored with. The network runs once per image (`nucseg.tiling.predict_probabilities`); only
the post-processing (`nucseg.postprocess.instances_from_three_class`) is repeated per
combination.

Speed: the watershed dominates the cost, so combinations that differ only in ``min_size``
share one run of the full post-processing with the smallest of their ``min_size`` values; the
larger values then remove small instances from that result. This is what the full pipeline
computes (removing a blob before the watershed does not change the other nuclei), except in one
rare case: a small blob inside a large hole of a nucleus, whose removal lets the hole be
filled. Pass ``exact=True`` to run the full post-processing for every combination.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nucseg.errors import NucsegError, ShapeMismatchError
from nucseg.metrics import aji
from nucseg.postprocess import (
    PostprocessParams,
    instances_from_three_class,
    remove_small_instances,
)

#: Default grid: 4 x 4 x 2 x 2 = 64 combinations (32 watershed runs per image). Its ranges come
#: from a wider search on MoNuSeg validation images, where the best foreground thresholds were
#: 0.7-0.8 and the best seeds small (``min_marker_size`` 3) and low (``marker_threshold`` 0.2-0.4).
DEFAULT_GRID: dict[str, tuple] = {
    "fg_threshold": (0.5, 0.6, 0.7, 0.8),
    "marker_threshold": (0.2, 0.3, 0.4, 0.5),
    "min_marker_size": (3, 10),
    "min_size": (10, 30),
}
#: Grid for seeds from a predicted distance map (``markers="distance"``): the distance falls
#: from 1 at a nucleus's centre to 0 at its outline, so the seeds are its central part.
DISTANCE_GRID: dict[str, tuple] = {**DEFAULT_GRID, "marker_threshold": (0.3, 0.4, 0.5, 0.6)}


class TuningError(NucsegError, ValueError):
    """The inputs or the grid of a post-processing search are unusable."""


def _check_grid(grid: Mapping[str, Sequence]) -> dict[str, list]:
    fields = {f.name for f in dataclasses.fields(PostprocessParams)}
    unknown = sorted(set(grid) - fields)
    if unknown:
        raise TuningError(
            f"grid: unknown parameter(s) {unknown}; PostprocessParams has {sorted(fields)}"
        )
    checked = {}
    for name, values in grid.items():
        values = [values] if isinstance(values, (str, bytes)) else list(values)
        if not values:
            raise TuningError(f"grid: {name!r} has no values to try")
        checked[name] = values
    if not checked:
        raise TuningError("grid: no parameter to tune")
    return checked


def _check_inputs(
    probabilities: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    probs, gts = list(probabilities), list(ground_truth)
    if not probs:
        raise TuningError("tune_postprocess needs at least one validation image")
    if len(probs) != len(gts):
        raise TuningError(f"{len(probs)} probability maps but {len(gts)} ground-truth maps")
    for index, (p, g) in enumerate(zip(probs, gts, strict=True)):
        p_shape, g_shape = np.shape(p), np.shape(g)
        if len(p_shape) != 3 or p_shape[0] not in (3, 4):
            raise TuningError(
                f"image {index}: probabilities must be (3, H, W) or, with a distance map, "
                f"(4, H, W); got {p_shape}"
            )
        if p_shape[1:] != g_shape:
            raise ShapeMismatchError(
                f"image {index}: probabilities are {p_shape[1:]} but ground truth is {g_shape}"
            )
    return probs, gts


def _combinations(grid: dict[str, list], base: PostprocessParams) -> list[PostprocessParams]:
    names = list(grid)
    return [
        dataclasses.replace(base, **dict(zip(names, values, strict=True)))
        for values in itertools.product(*(grid[n] for n in names))
    ]


def _group_by_watershed(
    combos: list[PostprocessParams], exact: bool
) -> dict[PostprocessParams, list[int]]:
    """Combination indices keyed by the one full post-processing run they can share."""
    groups: dict[PostprocessParams, list[int]] = {}
    for index, params in enumerate(combos):
        key = params if exact else dataclasses.replace(params, min_size=0)
        groups.setdefault(key, []).append(index)
    # Each group runs once, with the smallest min_size of its members.
    return {
        combos[min(members, key=lambda i: combos[i].min_size)]: members
        for members in groups.values()
    }


def neighbourhood_mean(values: np.ndarray) -> np.ndarray:
    """Mean of each grid cell and its neighbours one step away along one axis.

    Cells on an edge average over fewer neighbours. A high value means that the cell and the
    settings next to it all score well: a plateau, not a sharp peak.
    """
    values = np.asarray(values, dtype=float)
    total, count = values.copy(), np.ones_like(values)
    for axis in range(values.ndim):
        n = values.shape[axis]
        lower = tuple(slice(0, n - 1) if a == axis else slice(None) for a in range(values.ndim))
        upper = tuple(slice(1, n) if a == axis else slice(None) for a in range(values.ndim))
        total[upper] += values[lower]
        count[upper] += 1
        total[lower] += values[upper]
        count[lower] += 1
    return total / count


SELECTIONS = ("peak", "plateau")


def tune_postprocess(
    probabilities: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    grid: Mapping[str, Sequence] | None = None,
    base: PostprocessParams | None = None,
    exact: bool = False,
    progress: bool = True,
    select: str = "peak",
    min_area_ratio: float | None = None,
) -> tuple[PostprocessParams, pd.DataFrame]:
    """Find the post-processing parameters with the best mean AJI over validation images.

    Args:
        probabilities: per image, (3, H, W) float [background, inside, boundary] probabilities
            (e.g. from `nucseg.tiling.predict_probabilities`), or (4, H, W) with a distance map.
        ground_truth: per image, the (H, W) integer instance map, 0 = background.
        grid: parameter name (a `PostprocessParams` field) -> values to try; every
            combination is scored. Default `DEFAULT_GRID` (64 combinations).
        base: values of the parameters not in the grid (default ``PostprocessParams()``).
        exact: run the full post-processing for every combination instead of sharing one run
            between combinations that differ only in ``min_size`` (see the module docstring).
        progress: show a progress bar.
        select: ``"peak"`` takes the best mean AJI; ``"plateau"`` the best mean AJI of a
            combination and its grid neighbours (`neighbourhood_mean`; list each parameter's
            values in order), so that a setting next to a cliff is not chosen.
        min_area_ratio: when given, only combinations whose predicted nuclear area is at least
            this fraction of the annotated area (``area_ratio``) may be chosen, so that the
            choice does not shrink nuclei against the annotation.

    Returns:
        ``(best, table)``: the chosen `PostprocessParams` (ties go to the earliest combination
        in grid order) and a DataFrame with one row per combination, in order of the selection
        criterion, best first: the grid's columns, then ``aji`` (mean over images), ``aji_std``,
        ``aji_min``, ``aji_plateau`` (the neighbourhood mean), ``area_ratio`` (predicted over
        annotated foreground pixels, pooled over images) and ``eligible``.

    Raises:
        TuningError: no image, mismatched list lengths, probabilities not (3 or 4, H, W), an
            unknown grid parameter or an empty list of values, an unknown `select`, or no
            combination that reaches `min_area_ratio`.
        ShapeMismatchError: an image's probabilities and ground truth differ in size.
        PostprocessError: a grid value is out of range.
    """
    if select not in SELECTIONS:
        raise TuningError(f"select must be one of {SELECTIONS}, got {select!r}")
    probs, gts = _check_inputs(probabilities, ground_truth)
    checked = _check_grid(DEFAULT_GRID if grid is None else grid)
    combos = _combinations(checked, base or PostprocessParams())
    groups = _group_by_watershed(combos, exact)
    scores = np.zeros((len(combos), len(probs)))
    predicted_area = np.zeros(len(combos))
    bar = tqdm(total=len(groups) * len(probs), desc="tune post-processing", disable=not progress)
    for image_index, (p, gt) in enumerate(zip(probs, gts, strict=True)):
        for shared, members in groups.items():
            labels = instances_from_three_class(p, shared)
            for index in members:
                size = combos[index].min_size
                pred = labels
                if size > shared.min_size:
                    pred = remove_small_instances(labels, size)
                scores[index, image_index] = aji(gt, pred)
                predicted_area[index] += np.count_nonzero(pred)
            bar.update()
    bar.close()
    table = pd.DataFrame(
        [{name: getattr(c, name) for name in checked} for c in combos],
    )
    table["aji"] = scores.mean(axis=1)
    table["aji_std"] = scores.std(axis=1)
    table["aji_min"] = scores.min(axis=1)
    shape = tuple(len(values) for values in checked.values())  # product order: C order
    table["aji_plateau"] = neighbourhood_mean(table["aji"].to_numpy().reshape(shape)).ravel()
    table["area_ratio"] = predicted_area / max(sum(np.count_nonzero(g) for g in gts), 1)
    table["eligible"] = True if min_area_ratio is None else table.area_ratio >= min_area_ratio
    if not table.eligible.any():
        raise TuningError(
            f"no combination predicts at least {min_area_ratio:.0%} of the annotated nuclear "
            f"area (the largest predicts {table.area_ratio.max():.0%})"
        )
    criterion = "aji" if select == "peak" else "aji_plateau"
    table = table.sort_values(["eligible", criterion], ascending=False, kind="stable")
    best = combos[int(table.index[0])]
    return best, table.reset_index(drop=True)
