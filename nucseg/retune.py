"""`nucseg tune`: choose the post-processing of trained U-Net weights on annotated images.

Annotators draw nuclei larger or smaller from one lab to the next. Thresholds tuned on one set of
annotations then shrink or grow every nucleus on another. This re-tunes the watershed of
`nucseg.postprocess` for trained weights on images you have annotated (or on a profile's
validation split): the network runs once per image, then `nucseg.tuning.tune_postprocess`
scores a grid of settings. By default the choice is made where AJI is flat (`select="plateau"`)
and among settings that do not shrink nuclei against the annotation (`min_area_ratio`). Weights
with the auxiliary distance head are tuned twice, seeding the watershed from the classes and
from the distance map (`nucseg.tuning.DISTANCE_GRID`), and the better of the two is chosen. The
result can be written into a copy of the weights, which `nucseg predict --weights` then uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nucseg.data.monuseg import Sample
from nucseg.errors import NucsegError
from nucseg.postprocess import PostprocessParams
from nucseg.tuning import DEFAULT_GRID, DISTANCE_GRID, tune_postprocess

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.3, 0.91, 0.05))


@dataclass(frozen=True)
class RetuneResult:
    """What `retune` found.

    Attributes:
        stored: the post-processing the weights carried.
        chosen: the setting chosen on these images.
        table: `tune_postprocess`'s table, best first.
        stored_scores: mean ``aji`` and ``area_ratio`` of the stored setting on these images.
        response: mean AJI and area ratio for each foreground threshold, the rest as chosen.
        n_images: how many annotated images were used.
    """

    stored: PostprocessParams
    chosen: PostprocessParams
    table: pd.DataFrame
    stored_scores: dict[str, float]
    response: pd.DataFrame
    n_images: int


def retune(
    weights: str | Path,
    samples: Sequence[Sample],
    tta: bool | str = "flips",
    device: str = "cpu",
    select: str = "plateau",
    min_area_ratio: float | None = 0.95,
    grid: dict | None = None,
    progress: bool = True,
) -> RetuneResult:
    """Tune the post-processing of U-Net weights on annotated samples.

    Args:
        weights: a checkpoint or exported weights file of the U-Net method.
        samples: annotated images (`Sample.image`, `Sample.instances`).
        tta: test-time augmentation of the probabilities (as `nucseg predict` uses).
        device: torch device.
        select: ``"plateau"`` or ``"peak"`` (see `tune_postprocess`).
        min_area_ratio: the least predicted / annotated nuclear area a setting may have.
        grid: the settings to try (default `nucseg.tuning.DEFAULT_GRID`; with a distance
            head, that grid with seeds from the classes and `DISTANCE_GRID` with seeds from
            the distance map, each tuned on its own, the better chosen).
        progress: show progress bars.

    Returns:
        A `RetuneResult`.

    Raises:
        NucsegError: no sample; CheckpointError and TuningError from the steps below.

    """
    from nucseg.infer import UNetPredictor

    if not samples:
        raise NucsegError("nucseg tune needs at least one annotated image")
    # The probabilities `nucseg predict` makes (its tiling too), so the choice carries over.
    predictor = UNetPredictor(weights=weights, tta=tta, device=device)
    stored = predictor.params
    probs = [predictor.probabilities(s.image)
             for s in tqdm(samples, desc="probabilities", disable=not progress)]  # fmt: skip
    truth = [s.instances for s in samples]
    chosen, table = _tune_seed_sources(probs, truth, grid, stored, progress, select,
                                       min_area_ratio)  # fmt: skip
    _, now = tune_postprocess(probs, truth, grid={"fg_threshold": [stored.fg_threshold]},
                              base=stored, progress=False)  # fmt: skip
    _, response = tune_postprocess(probs, truth, grid={"fg_threshold": THRESHOLDS}, base=chosen,
                                   progress=False)  # fmt: skip
    response = response.sort_values("fg_threshold")[["fg_threshold", "aji", "area_ratio"]]
    stored_scores = {k: float(now.loc[0, k]) for k in ("aji", "area_ratio")}
    return RetuneResult(stored, chosen, table, stored_scores, response.reset_index(drop=True),
                        len(samples))  # fmt: skip


def _tune_seed_sources(
    probs: list[np.ndarray],
    truth: list[np.ndarray],
    grid: dict | None,
    stored: PostprocessParams,
    progress: bool,
    select: str,
    min_area_ratio: float | None,
) -> tuple[PostprocessParams, pd.DataFrame]:
    """`tune_postprocess`, once per seed source the maps allow; the better search wins.

    The seed sources are tuned apart because their thresholds mean different things, so the
    plateau (a neighbourhood in the grid) must not mix them. The table gains a ``markers``
    column and is sorted as `tune_postprocess` sorts.
    """
    if grid is not None or probs[0].shape[0] < 4:
        return tune_postprocess(probs, truth, grid=grid, base=stored, progress=progress,
                                select=select, min_area_ratio=min_area_ratio)  # fmt: skip
    searches = []
    for markers, seed_grid in (("classes", DEFAULT_GRID), ("distance", DISTANCE_GRID)):
        base = dataclasses.replace(stored, markers=markers)
        chosen, table = tune_postprocess(probs, truth, grid=seed_grid, base=base,
                                         progress=progress, select=select,
                                         min_area_ratio=min_area_ratio)  # fmt: skip
        searches.append((chosen, table.assign(markers=markers)))
    criterion = "aji" if select == "peak" else "aji_plateau"
    chosen = max(searches, key=lambda s: float(s[1][criterion].iloc[0]))[0]  # first wins ties
    table = pd.concat([t for _, t in searches], ignore_index=True)
    table = table.sort_values(["eligible", criterion], ascending=False, kind="stable")
    return chosen, table.reset_index(drop=True)


def describe(result: RetuneResult, source: str) -> str:
    """Return the lines `nucseg tune` prints for a result."""
    fields = ("fg_threshold", "marker_threshold", "min_marker_size", "min_size")
    best = result.table.iloc[0]

    def setting(params: PostprocessParams) -> str:
        seeds = ", seeds from the distance map" if params.markers == "distance" else ""
        return ", ".join(f"{name} {getattr(params, name)}" for name in fields) + seeds

    lines = [
        f"{result.n_images} annotated images ({source})",
        f"stored in the weights: {setting(result.stored)}: AJI {result.stored_scores['aji']:.3f}, "
        f"predicted / annotated area {result.stored_scores['area_ratio']:.2f}",
        f"chosen: {setting(result.chosen)}: AJI {best.aji:.3f} (neighbourhood "
        f"{best.aji_plateau:.3f}; the grid's best {result.table.aji.max():.3f}), "
        f"predicted / annotated area {best.area_ratio:.2f}",
        "foreground threshold response (the rest as chosen):",
        result.response.round(3).to_string(index=False),
    ]
    return "\n".join(lines)


def trained_on(weights: str | Path, images: Sequence[Sample]) -> bool:
    """Whether the weights were trained on exactly these images (in this order).

    Training checkpoints, and the weights exported from them, record a fingerprint of their
    training data (``meta.plan["data.train"]``); weights without one are taken as unseen.
    A final fit (``val_fraction`` 0) has a profile's whole training split, sorted by image id.
    """
    from nucseg.checkpoint import load_checkpoint
    from nucseg.data.dataset import fingerprint_samples

    plan = (load_checkpoint(weights).get("meta") or {}).get("plan") or {}
    return bool(images) and plan.get("data.train") == fingerprint_samples(images)


def check_unseen(weights: str | Path, training_images: Sequence[Sample], source: str) -> None:
    """Refuse to tune on images the weights were trained on.

    Args:
        weights: a checkpoint or exported weights file.
        training_images: the whole set the tuning images come from (a profile's training split
            before the validation images are held out, or the annotated folder itself).
        source: how to name that set in the message.

    Raises:
        NucsegError: the weights were trained on exactly those images (see `trained_on`).

    """
    if trained_on(weights, training_images):
        raise NucsegError(
            f"{weights}: these weights were trained on {source} ({len(training_images)} images), "
            "so a setting tuned there would fit their training data; tune the weights of the run "
            "that held those images out, or give annotated images they have not seen (--data DIR)"
        )


def check_output(weights: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output that exists (the weights file included) unless `overwrite`."""
    out = Path(out)
    if out.exists() and not overwrite:
        same = out.resolve() == Path(weights).resolve()
        what = "is the weights file itself" if same else "exists"
        raise NucsegError(f"{out}: {what}; pass --overwrite to replace it")
    if out.is_dir():
        raise NucsegError(f"{out}: is a folder; give a file name, e.g. {out / 'unet_retuned.pt'}")
    return out


def write_retuned(weights: str | Path, out: str | Path, result: RetuneResult, source: str,
                  overwrite: bool = False) -> Path:  # fmt: skip
    """Write a copy of `weights` that carries the chosen post-processing (atomically).

    Raises:
        NucsegError: `out` exists, or is the weights file itself, and `overwrite` is False.

    """
    from nucseg.checkpoint import export_weights

    out = check_output(weights, out, overwrite)
    facts = {"postprocess tuned on": source, "postprocess tuned from": Path(weights).name}
    return export_weights(weights, out, postprocess=dataclasses.asdict(result.chosen), meta=facts)
