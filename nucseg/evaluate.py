"""Score folders of predicted label maps against ground truth, one row per image."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nucseg.data.images import LABEL_SUFFIXES, read_label_map
from nucseg.data.monuseg import discover, load_sample, organ_of, read_xml_regions
from nucseg.data.poly2mask import rasterise_polygons
from nucseg.errors import AnnotationWarning, LayoutError, ScoringWarning, ShapeMismatchError
from nucseg.metrics import score, summarize
from nucseg.runtime import atomic_write

METRIC_COLUMNS = ("aji", "aji_plus", "pq", "dq", "sq", "f1", "dice")


def _label_files(folder: Path) -> dict[str, Path]:
    """Map stem -> label file for every label map directly inside a folder."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in LABEL_SUFFIXES or path.stem.endswith("_overlay"):
            continue
        if path.stem in files:
            raise LayoutError(
                f"{folder}: two label maps for {path.stem!r}: {files[path.stem].name}, {path.name}"
            )
        files[path.stem] = path
    return files


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth instance maps and organs, keyed by image id."""

    instances: dict[str, np.ndarray]
    organs: dict[str, str]


def load_ground_truth(gt_dir: str | Path, split: str | None = None) -> GroundTruth:
    """Read ground-truth instance maps (and organs) keyed by image id.

    Args:
        gt_dir: a MoNuSeg folder in any layout `discover` knows, or a plain folder of label maps
            (organs then come from the TCGA code of each id, "unknown" otherwise).
        split: "train" or "test" to keep one split of a MoNuSeg folder; None keeps all.
    """
    root = Path(gt_dir)
    try:
        files = discover(root, split=split)
    except LayoutError:
        labels = _label_files(root) if root.is_dir() else {}
        if not labels:
            raise
        instances = {stem: read_label_map(path) for stem, path in labels.items()}
        return GroundTruth(instances, {stem: organ_of(stem) for stem in instances})
    progress = tqdm(files, desc="ground truth", unit="image", disable=len(files) < 5)
    samples = [load_sample(f) for f in progress]
    return GroundTruth(
        {s.image_id: s.instances for s in samples}, {s.image_id: s.organ for s in samples}
    )


#: A prediction whose largest instance holds more than this fraction of its foreground, where
#: the ground truth has several nuclei, is probably a binary mask passed as an instance map.
BINARY_MASK_FRACTION = 0.5


def check_scorable(image_id: str, gt: np.ndarray, pred: np.ndarray, source: str = "") -> None:
    """Refuse a shape mismatch; warn about scores that cannot mean what they seem.

    Args:
        image_id: The image, for messages.
        gt: Ground-truth instance map.
        pred: Predicted instance map.
        source: The prediction's file, for messages (default: the image id only).

    Raises:
        ShapeMismatchError: Naming the image, the file and both shapes.

    """
    where = f"{image_id} ({source})" if source else image_id
    if gt.shape != pred.shape:
        raise ShapeMismatchError(
            f"{where}: prediction shape {pred.shape} differs from ground-truth shape {gt.shape}"
        )
    if not gt.any():
        warnings.warn(
            f"{where}: the ground truth has no nucleus, so AJI is 1 for an empty prediction and "
            "0 for any other; the score says nothing about the method",
            AnnotationWarning,
            stacklevel=3,
        )
        return
    counts = np.bincount(pred.ravel())[1:] if pred.any() else np.zeros(0, np.int64)
    n_gt = len(np.unique(gt)) - 1
    if n_gt > 1 and counts.size and counts.max() > BINARY_MASK_FRACTION * counts.sum():
        warnings.warn(
            f"{where}: one predicted instance covers {counts.max() / counts.sum():.0%} of the "
            f"predicted foreground, against {n_gt} ground-truth nuclei; is it a binary mask? "
            "An instance map needs one id per nucleus (e.g. skimage.measure.label)",
            ScoringWarning,
            stacklevel=3,
        )


def evaluate_predictions(
    ground_truth: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    organs: Mapping[str, str] | None = None,
    sources: Mapping[str, Path] | None = None,
) -> pd.DataFrame:
    """Score each prediction against its ground truth.

    Every ground-truth image needs a prediction and every prediction a ground truth: a missing
    one is an error, never a silently shorter table. `organs` maps image ids to organs
    (default: from the TCGA code of each id); `sources` to prediction files, for messages.
    Each pair is checked by :func:`check_scorable` first.

    Returns:
        One row per image: image_id, organ, then every metric of `nucseg.metrics.ImageScores`.
    """
    missing = sorted(set(ground_truth) - set(predictions))
    extra = sorted(set(predictions) - set(ground_truth))
    if missing or extra:
        raise LayoutError(
            "predictions and ground truth differ: "
            + (f"no prediction for {missing}; " if missing else "")
            + (f"no ground truth for {extra}" if extra else "")
        )
    rows = []
    for image_id in sorted(ground_truth):
        source = str(sources[image_id]) if sources and image_id in sources else ""
        check_scorable(image_id, ground_truth[image_id], predictions[image_id], source)
        scores = score(ground_truth[image_id], predictions[image_id])
        organ = organs[image_id] if organs is not None else organ_of(image_id)
        rows.append({"image_id": image_id, "organ": organ, **scores.as_dict()})
    return pd.DataFrame(rows)


def evaluate_folders(
    gt_dir: str | Path, pred_dir: str | Path, split: str | None = None
) -> pd.DataFrame:
    """Score a folder of predicted label maps (`<image_id>.npy|.png|.tif`) against ground truth."""
    files = prediction_files(pred_dir)  # a bad folder fails before the ground truth loads
    truth = load_ground_truth(gt_dir, split)
    predictions = {stem: read_label_map(path) for stem, path in files.items()}
    return evaluate_predictions(truth.instances, predictions, truth.organs, files)


def prediction_files(pred_dir: str | Path) -> dict[str, Path]:
    """The label maps `<image_id>.npy|.png|.tif` in a folder, keyed by image id.

    Raises:
        LayoutError: The folder is missing, is a file, or holds no label map.

    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise LayoutError(f"{folder}: prediction folder {what}")
    files = _label_files(folder)
    if not files:
        raise LayoutError(f"{folder}: no label map ({', '.join(LABEL_SUFFIXES)}) in the folder")
    return files


def load_predictions(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """Read every label map `<image_id>.npy|.png|.tif` in a folder, keyed by image id."""
    return {stem: read_label_map(path) for stem, path in prediction_files(pred_dir).items()}


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV atomically (parent folders are created); returns the path."""
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def format_table(table: pd.DataFrame) -> str:
    """Render a score table and its mean row as fixed-width text."""
    cols = ["image_id", "organ", *METRIC_COLUMNS]
    shown = table[cols].copy()
    mean = summarize(table)
    shown.loc[len(shown)] = ["mean", "", *[mean[c] for c in METRIC_COLUMNS]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def save_method_scores(run_dir: str | Path, method: str, table: pd.DataFrame) -> Path:
    """Write one method's per-image test scores to `RUN_DIR/metrics/<method>.csv`."""
    return write_table(table, Path(run_dir) / "metrics" / f"{method}.csv")


def load_method_scores(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read every `RUN_DIR/metrics/<method>.csv`, keyed by method name (sorted)."""
    folder = Path(run_dir) / "metrics"
    if not folder.is_dir():
        return {}
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}


def results_table(scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean of the per-image metrics for each method, one row per method."""
    rows = []
    for method, table in scores.items():
        mean = summarize(table)
        rows.append(
            {"method": method, "images": len(table), **{c: mean[c] for c in METRIC_COLUMNS}}
        )
    return pd.DataFrame(rows, columns=["method", "images", *METRIC_COLUMNS])


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """Render a DataFrame as a GitHub Markdown table (floats rounded to `digits`)."""

    def cell(value: object) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


#: Readings of an XML annotation: the exact one and two pitfalls (see :func:`read_annotation_as`).
READINGS = ("nucseg (exact)", "one-pixel shift", "later region wins")


def read_annotation_as(xml_path: str | Path, shape: tuple[int, int], reading: str) -> np.ndarray:
    """Rasterise an XML annotation one of three ways (names in :data:`READINGS`).

    - ``"nucseg (exact)"``: ``poly2mask`` on the vertices shifted to 0-based, first region
      keeps an overlapped pixel, as the organisers did (``nucseg.data.poly2mask``);
    - ``"one-pixel shift"``: the raw 1-based vertices used as 0-based (first-wins);
    - ``"later region wins"``: the right pixel convention, the opposite overlap rule.

    Raises:
        ValueError: An unknown reading.
    """
    return _rasterise_as(read_xml_regions(xml_path), shape, reading)


def _rasterise_as(regions: list[np.ndarray], shape: tuple[int, int], reading: str) -> np.ndarray:
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
    if reading == READINGS[1]:
        regions = [r + 1 for r in regions]
    elif reading == READINGS[2]:
        regions = regions[::-1]  # first-wins on the reversed order is later-wins
    return rasterise_polygons(regions, shape)[0]


def annotation_readings(
    xml_path: str | Path, shape: tuple[int, int], reference: np.ndarray | None = None
) -> dict[str, float]:
    """AJI of each reading of one XML annotation (:data:`READINGS`) against the organisers' mask.

    Each reading is scored as if it were a perfect segmentation, so ``1 - AJI`` is what that
    reading of the ground truth costs every method scored against it.

    Args:
        xml_path: Aperio ImageScope XML file.
        shape: Image ``(H, W)``.
        reference: The organisers' (MATLAB-made) instance map; None = nucseg's exact reading.

    Returns:
        Reading name -> AJI against the reference.

    """
    regions = read_xml_regions(xml_path)  # parsed once for all three readings
    readings = {name: _rasterise_as(regions, shape, name) for name in READINGS}
    truth = readings[READINGS[0]] if reference is None else reference
    return {name: score(truth, labels).aji for name, labels in readings.items()}
