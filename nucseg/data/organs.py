"""Organ of each MoNuSeg image, and organ-stratified validation splits.

MoNuSeg image ids are TCGA barcodes such as ``TCGA-A7-A13E-01Z-00-DX1``; the second field
(``A7``) is the tissue-source-site (TSS) code of the submitting centre, which identifies the
organ within MoNuSeg. The table below covers all 44 training and test images of MoNuSeg 2018
and follows the organ names of the challenge's own metadata (``organs.csv``). Note that the
challenge calls TSS codes 18, 21, 38, 49 and 50 "liver" although TCGA lists those centres
under its lung cohorts; we keep the challenge's names so per-organ results match the
published tables.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nucseg.errors import LayoutError

UNKNOWN_ORGAN = "unknown"

# TSS code -> organ, from the 44 ids of MoNuSeg 2018 (30 train + 14 test).
TSS_ORGANS: dict[str, str] = {
    "18": "liver", "21": "liver", "38": "liver", "49": "liver", "50": "liver",
    "A7": "breast", "AC": "breast", "AO": "breast", "AR": "breast", "E2": "breast",
    "2Z": "kidney", "B0": "kidney", "GL": "kidney", "HE": "kidney", "IZ": "kidney",
    "CH": "prostate", "EJ": "prostate", "G9": "prostate", "HC": "prostate",
    "CU": "bladder", "DK": "bladder", "G2": "bladder", "ZF": "bladder",
    "A6": "colon", "AY": "colon", "NH": "colon",
    "KB": "stomach", "RD": "stomach",
    "44": "lung", "69": "lung",
    "FG": "brain", "HT": "brain",
}  # fmt: skip


def organ_of(image_id: str, table: Mapping[str, str] | None = None) -> str:
    """Return the organ of an image.

    Args:
        image_id: Image id, normally a TCGA barcode (file stem).
        table: Optional ``image_id -> organ`` mapping (e.g. from ``read_organs_csv``);
            an entry there wins over the TSS-code table.

    Returns:
        The organ name, or ``"unknown"`` when neither source knows the id (never raises).

    """
    if table is not None and image_id in table:
        return table[image_id]
    fields = image_id.split("-")
    if len(fields) >= 2 and fields[0].upper() == "TCGA":
        return TSS_ORGANS.get(fields[1].upper(), UNKNOWN_ORGAN)
    return UNKNOWN_ORGAN


def read_organs_csv(path: str | Path) -> dict[str, str]:
    """Read an ``organs.csv`` (columns ``image_id`` and ``organ``; others ignored).

    Args:
        path: CSV file with a header row.

    Returns:
        Mapping ``image_id -> organ``.

    Raises:
        LayoutError: The file lacks the ``image_id`` or ``organ`` column, or is not text.

    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LayoutError(f"{path}: cannot read organs table ({exc})") from exc
    if rows and not {"image_id", "organ"} <= set(rows[0]):
        raise LayoutError(f"{path}: organs table needs columns 'image_id' and 'organ'")
    return {r["image_id"].strip(): r["organ"].strip() for r in rows if r.get("image_id")}


def split_by_organ(
    image_ids: Sequence[str],
    organs: Sequence[str],
    val_fraction: float,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Split images into training and validation sets, stratified by organ.

    Whole images go to one side (never crops of one image to both). For each organ with
    ``n`` images, ``round(n * val_fraction)`` (halves rounded up) are drawn for validation,
    clipped to ``[1, n - 1]`` when ``val_fraction > 0`` and ``n >= 2``: every such organ then
    contributes at least one validation image and keeps at least one training image. An
    organ with a single image stays in training. The draw depends only on the ids, organs
    and ``seed`` (not on input order).

    Args:
        image_ids: Unique image ids.
        organs: Organ of each id, same length as ``image_ids``.
        val_fraction: Fraction of each organ's images for validation, in [0, 1).
        seed: Seed of the random draw.

    Returns:
        ``(train_ids, val_ids)``, each sorted.

    Raises:
        ValueError: Lengths differ, ids repeat, or ``val_fraction`` is outside [0, 1).

    """
    if len(image_ids) != len(organs):
        raise ValueError(f"{len(image_ids)} image ids but {len(organs)} organs")
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("image ids must be unique")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_organ: dict[str, list[str]] = {}
    for image_id, organ in zip(image_ids, organs, strict=True):
        by_organ.setdefault(organ, []).append(image_id)
    rng = np.random.default_rng(seed)
    val: list[str] = []
    for organ in sorted(by_organ):
        ids = sorted(by_organ[organ])
        n = len(ids)
        n_val = int(np.floor(n * val_fraction + 0.5))
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        elif n < 2:
            n_val = 0
        val.extend(ids[i] for i in rng.permutation(n)[:n_val])
    val_set = set(val)
    return sorted(i for i in image_ids if i not in val_set), sorted(val)
