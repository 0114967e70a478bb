"""Error-status overlays and a static status figure (the interactive view is `nucseg.inspector`).

Nuclei are filled with their `nucseg.taxonomy` status colour (`STATUS_COLOURS`, Okabe-Ito, safe
for colour-blind readers; GT fills first, predictions over them) and outlined via `nucseg.overlay`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nucseg.errors import ShapeMismatchError
from nucseg.overlay import overlay_contours
from nucseg.taxonomy import ErrorTaxonomy, classify_errors

STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "matched": (0, 158, 115),  # bluish green
    "merged": (213, 94, 0),  # vermillion
    "split": (204, 121, 167),  # reddish purple
    "missed": (230, 159, 0),  # orange
    "false": (0, 114, 178),  # blue
    "other": (86, 180, 233),  # sky blue
}
GT_CONTOUR = (255, 255, 255)
PRED_CONTOUR = (240, 228, 66)  # Okabe-Ito yellow
HIGHLIGHT = (0, 0, 0)  # box around the selected nucleus

Region = tuple[int, int, int, int]


def _clip_region(region: Region | None, shape: tuple[int, ...]) -> Region:
    """Clip `(row0, row1, col0, col1)` (half-open) to the image; None is the whole image."""
    h, w = shape[:2]
    if region is None:
        return 0, h, 0, w
    r0, r1, c0, c1 = (int(v) for v in region)
    r0, r1, c0, c1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if r0 >= r1 or c0 >= c1:
        raise ValueError(f"region {tuple(region)} is empty inside an image of shape {(h, w)}")
    return r0, r1, c0, c1


def _fill(out: np.ndarray, lab: np.ndarray, ids: np.ndarray, st: np.ndarray, a: float) -> None:
    """Blend each labelled pixel of `out` with its nucleus's status colour (opacity a), in place."""
    mask = lab > 0
    if not mask.any():
        return
    idx = np.minimum(np.searchsorted(ids, lab[mask]), max(len(ids) - 1, 0))
    if len(ids) == 0 or not np.array_equal(ids[idx], lab[mask]):
        raise ValueError("taxonomy does not belong to these label maps (unknown nucleus ids)")
    palette = np.array([STATUS_COLOURS[s] for s in st], dtype=float).reshape(-1, 3)
    out[mask] = np.clip((1 - a) * out[mask] + a * palette[idx], 0, 255).astype(np.uint8)


def nucleus_bbox(labels: np.ndarray, nucleus: int, margin: int = 0) -> Region | None:
    """Return the box `(row0, row1, col0, col1)` of one nucleus grown by `margin`, clipped.

    None when the nucleus is absent.
    """
    rows, cols = np.nonzero(labels == nucleus)
    if len(rows) == 0:
        return None
    lo, hi = np.array([rows.min(), cols.min()]) - margin, np.array([rows.max(), cols.max()]) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi + margin, labels.shape)
    return int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1])


def status_overlay(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    taxonomy: ErrorTaxonomy | None = None,
    show_gt: bool = True,
    show_pred: bool = True,
    region: Region | None = None,
    *,
    fill: bool = True,
    alpha: float = 0.35,
    thickness: int = 1,
    highlight: int | None = None,
) -> np.ndarray:
    """Draw GT and predicted nuclei, coloured by error status, onto a copy of an image.

    Args:
        image: uint8 (H, W, 3).
        gt: ground-truth instance map (H, W).
        pred: predicted instance map (H, W).
        taxonomy: `classify_errors(gt, pred)` result; computed when None and `fill`.
        show_gt: draw the GT contours.
        show_pred: draw the predicted contours.
        region: `(row0, row1, col0, col1)` half-open zoom window, clipped to the image.
        fill: fill GT and predicted nuclei with their `STATUS_COLOURS`, whichever contours
            are shown.
        alpha: opacity of the fills, 0..1.
        thickness: contour width in pixels.
        highlight: nucleus to frame with a `HIGHLIGHT` box: a GT id, or a predicted id as its
            negative (ignored when absent).

    Returns:
        uint8 (row1 - row0, col1 - col0, 3) image of the region.

    Raises:
        ValueError: bad image dtype/shape, empty region, or a taxonomy of other maps.
        ShapeMismatchError: image, GT and prediction differ in height or width.

    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if gt.shape != image.shape[:2] or pred.shape != image.shape[:2]:
        shapes = f"image {image.shape[:2]}, ground truth {gt.shape}, prediction {pred.shape}"
        raise ShapeMismatchError(f"{shapes}: all must share height and width")
    r0, r1, c0, c1 = _clip_region(region, image.shape)
    if taxonomy is None and fill:
        taxonomy = classify_errors(gt, pred)
    out = image[r0:r1, c0:c1].copy()
    layers = [(show_gt, gt, GT_CONTOUR, "gt"), (show_pred, pred, PRED_CONTOUR, "pred")]
    for _, labels, _, side in layers if fill else ():
        ids, status = getattr(taxonomy, f"{side}_ids"), getattr(taxonomy, f"{side}_status")
        _fill(out, labels[r0:r1, c0:c1], ids, status, alpha)
    for shown, labels, colour, _ in layers:
        if shown:
            out = overlay_contours(out, labels[r0:r1, c0:c1], colour=colour, thickness=thickness)
    box = nucleus_bbox(gt if highlight > 0 else pred, abs(highlight), 2) if highlight else None
    if box is not None:
        frame = np.zeros(gt.shape, np.int32)  # full size: a box partly outside stays open
        frame[box[0] : box[1], box[2] : box[3]] = 1
        out = overlay_contours(out, frame[r0:r1, c0:c1], colour=HIGHLIGHT, thickness=2)
    return out


def status_counts(taxonomy: ErrorTaxonomy) -> dict[str, str]:
    """Return each status present, with its counts as text, e.g. ``{"merged": "2 GT / 1 pred"}``."""
    counts = {}
    for status in STATUS_COLOURS:
        n_gt = np.count_nonzero(taxonomy.gt_status == status)
        n_pred = np.count_nonzero(taxonomy.pred_status == status)
        if n_gt or n_pred:
            counts[status] = " / ".join(
                f"{n} {side}" for n, side in ((n_gt, "GT"), (n_pred, "pred")) if n
            )
    return counts


def _legend_handles(taxonomy: ErrorTaxonomy, show_gt: bool, show_pred: bool, fill: bool) -> list:
    """Status patches with their counts (when `fill`), then the contour lines shown."""
    handles: list = []
    for status, parts in status_counts(taxonomy).items() if fill else ():
        colour = np.array(STATUS_COLOURS[status]) / 255
        handles.append(Patch(facecolor=colour, label=f"{status} ({parts})"))
    for shown, colour, label in ((show_gt, GT_CONTOUR, "GT"), (show_pred, PRED_CONTOUR, "pred")):
        if shown:
            handles.append(Line2D([], [], color=np.array(colour) / 255, label=f"{label} contour"))
    return handles


def plot_status_figure(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    title: str | None = None,
    region: Region | None = None,
    ax: object | None = None,
    **overlay: object,
) -> Figure:
    """Plot `status_overlay` with a legend of the statuses and their counts.

    The figure is created closed to pyplot (no duplicate inline display): show it with
    `display(fig)` or as a cell's last expression, or save it with `fig.savefig`.

    Args:
        image: uint8 (H, W, 3).
        gt: ground-truth instance map (H, W).
        pred: predicted instance map (H, W).
        title: axes title.
        region: `(row0, row1, col0, col1)` zoom window; the axes keep image coordinates.
        ax: matplotlib Axes to draw on; a new figure when None.
        **overlay: keyword arguments of `status_overlay` (taxonomy, show_gt, show_pred, fill,
            alpha, thickness, highlight).

    Returns:
        The matplotlib Figure holding the axes.

    """
    if overlay.get("taxonomy") is None:
        overlay["taxonomy"] = classify_errors(gt, pred)
    r0, r1, c0, c1 = _clip_region(region, image.shape)
    rgb = status_overlay(image, gt, pred, region=(r0, r1, c0, c1), **overlay)
    if ax is None:
        import matplotlib.pyplot as plt  # lazy: selecting a backend is the caller's business

        height = min(max(6.5 * (r1 - r0) / (c1 - c0), 3.0), 9.0)  # follow the region's aspect
        fig, ax = plt.subplots(figsize=(9, height), layout="constrained")
        plt.close(fig)
    ax.imshow(rgb, extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5), interpolation="nearest")
    ax.grid(False)  # a seaborn/matplotlib style grid would hide contours
    if title:
        ax.set_title(title)
    flags = [overlay.get(k, True) for k in ("show_gt", "show_pred", "fill")]
    handles = _legend_handles(overlay["taxonomy"], *flags)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  facecolor="0.55", labelcolor="white", fontsize="small")  # fmt: skip
    return ax.figure


def crop_grid(
    panels: Sequence[tuple[np.ndarray, str]], ncols: int, panel_inches: float = 2.4
) -> Figure:
    """Show RGB crops in a grid, each with its title, pixels kept sharp (closed to pyplot).

    Args:
        panels: `(rgb, title)` pairs, row by row.
        ncols: panels per row.
        panel_inches: width of one panel.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: no panel.

    """
    if not panels:
        raise ValueError("crop_grid needs at least one panel")
    import matplotlib.pyplot as plt  # lazy: selecting a backend is the caller's business

    nrows = -(-len(panels) // ncols)
    size = (panel_inches * ncols, (panel_inches + 0.3) * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
    plt.close(fig)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (rgb, title) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize="small")
    return fig


def method_panels(
    image: np.ndarray,
    gt: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    region: Region,
    titles: Mapping[str, str] | None = None,
) -> list[tuple[np.ndarray, str]]:
    """Return `crop_grid` panels of one region: GT contours, then each method's contours.

    Args:
        image: uint8 (H, W, 3).
        gt: GT instance map (H, W).
        predictions: method -> predicted instance map (H, W).
        region: `(row0, row1, col0, col1)` half-open window.
        titles: method -> panel title (default: the method's name).

    Returns:
        `(rgb, title)` pairs: "ground truth" (white contours), then one per method (yellow).

    """
    r0, r1, c0, c1 = _clip_region(region, image.shape)
    crop = image[r0:r1, c0:c1]
    panels = [(overlay_contours(crop, gt[r0:r1, c0:c1], colour=GT_CONTOUR), "ground truth")]
    for method, pred in predictions.items():
        rgb = overlay_contours(crop, pred[r0:r1, c0:c1], colour=PRED_CONTOUR)
        panels.append((rgb, (titles or {}).get(method, method)))
    return panels
