"""Error-status overlays, a static status figure and an ipywidgets contour inspector.

Nuclei are filled with their `nucseg.taxonomy` status colour (`STATUS_COLOURS`, Okabe-Ito, safe
for colour-blind readers; GT fills first, predictions over them) and outlined via `nucseg.overlay`.
"""

from __future__ import annotations

import contextlib
import functools
import html
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import PIL.Image
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nucseg.errors import LayoutError, ShapeMismatchError
from nucseg.metrics import score_contingency
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


def _bbox(labels: np.ndarray, nucleus: int, margin: int = 0) -> Region | None:
    """Bounding box of one nucleus grown by `margin`, clipped; None when absent."""
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
        show_gt: draw the GT layer (contours, and fills when `fill`).
        show_pred: draw the prediction layer (contours, and fills when `fill`).
        region: `(row0, row1, col0, col1)` half-open zoom window, clipped to the image.
        fill: fill nuclei with their `STATUS_COLOURS`.
        alpha: opacity of the fills, 0..1.
        thickness: contour width in pixels.
        highlight: GT id to frame with a `HIGHLIGHT` box (ignored when absent).

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
    if fill:
        for shown, labels, _, side in layers:
            if shown:
                ids, status = getattr(taxonomy, f"{side}_ids"), getattr(taxonomy, f"{side}_status")
                _fill(out, labels[r0:r1, c0:c1], ids, status, alpha)
    for shown, labels, colour, _ in layers:
        if shown:
            out = overlay_contours(out, labels[r0:r1, c0:c1], colour=colour, thickness=thickness)
    if highlight and (box := _bbox(gt, highlight, margin=2)) is not None:
        frame = np.zeros(gt.shape, np.int32)  # full size: a box partly outside stays open
        frame[box[0] : box[1], box[2] : box[3]] = 1
        out = overlay_contours(out, frame[r0:r1, c0:c1], colour=HIGHLIGHT, thickness=2)
    return out


def _legend_handles(taxonomy: ErrorTaxonomy, show_gt: bool, show_pred: bool, fill: bool) -> list:
    """Status patches with their counts (when `fill`), then the contour lines shown."""
    handles: list = []
    for status, colour in STATUS_COLOURS.items() if fill else ():
        n_gt = np.count_nonzero(taxonomy.gt_status == status) if show_gt else 0
        n_pred = np.count_nonzero(taxonomy.pred_status == status) if show_pred else 0
        if n_gt or n_pred:
            parts = " / ".join(f"{n} {side}" for n, side in ((n_gt, "GT"), (n_pred, "pred")) if n)
            handles.append(Patch(facecolor=np.array(colour) / 255, label=f"{status} ({parts})"))
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


def _png_bytes(rgb: np.ndarray, max_side: int) -> bytes:
    """Encode as PNG, upscaled by the largest integer factor (nearest) within ``max_side``."""
    k = max(1, max_side // max(rgb.shape[:2]))
    rgb = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1) if k > 1 else rgb
    buf = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # speed over size
    return buf.getvalue()


@dataclass(frozen=True)
class InspectorState:
    """Current selection of a `ContourInspector` (`nucleus` 0 = none)."""

    image_id: str
    method: str
    show_gt: bool
    show_pred: bool
    colour_status: bool
    rows: tuple[int, int]
    cols: tuple[int, int]
    nucleus: int


class ContourInspector:
    """JupyterLab widget app: GT and predicted contours of several methods, by error status.

    Widgets: `image` and `method` dropdowns; `show_gt`, `show_pred`, `colour_status` checkboxes;
    `rows` / `cols` range sliders (half-open zoom window); a GT `nucleus` dropdown and a
    `zoom_button`; `info` (HTML: image AJI and error counts, the selected nucleus's status, best
    IoU and partner); `view` (PNG). Ids lacking an image, GT or prediction are `skipped`.

    Args:
        images: image id -> uint8 (H, W, 3).
        ground_truth: image id -> GT instance map.
        predictions: method -> image id -> predicted instance map.
        organs: image id -> organ, shown next to the id.
        display_size: a zoomed region is upscaled by the largest whole factor that keeps its
            longer side within this many pixels (never downscaled), so small zooms stay crisp.
        alpha: opacity of the status fills.
        thickness: contour width in pixels.

    Raises:
        ValueError: `predictions` is empty.
        LayoutError: no id has an image, a ground truth and every method's prediction.

    """

    def __init__(
        self,
        images: Mapping[str, np.ndarray],
        ground_truth: Mapping[str, np.ndarray],
        predictions: Mapping[str, Mapping[str, np.ndarray]],
        organs: Mapping[str, str] | None = None,
        *,
        display_size: int = 600,
        alpha: float = 0.35,
        thickness: int = 1,
    ) -> None:
        if not predictions:
            raise ValueError("ContourInspector needs at least one prediction method")
        common = set(images).intersection(ground_truth, *predictions.values())
        if not common:
            msg = "no image id has an image, a ground truth and a prediction of every method"
            raise LayoutError(f"{msg} ({', '.join(predictions)})")
        self.images, self.ground_truth, self.predictions = images, ground_truth, predictions
        self.organs = dict(organs or {})
        self.skipped = sorted((set(images) | set(ground_truth)) - common)
        self._display_size, self._alpha, self._thickness = display_size, alpha, thickness
        self._cache: dict[tuple[str, str], tuple[ErrorTaxonomy, str]] = {}
        self._holding = False

        ids = sorted(common)
        labels = [(f"{i} ({self.organs[i]})" if i in self.organs else i, i) for i in ids]
        self.image = widgets.Dropdown(options=labels, value=ids[0], description="image")
        self.method = widgets.Dropdown(options=list(predictions), description="method")
        check = functools.partial(widgets.Checkbox, value=True, indent=False)
        self.show_gt = check(description="GT contours")
        self.show_pred = check(description="predicted contours")
        self.colour_status = check(description="status colours")
        wide = widgets.Layout(width="600px")
        self.rows = widgets.IntRangeSlider(max=1, value=(0, 1), description="rows", layout=wide)
        self.cols = widgets.IntRangeSlider(max=1, value=(0, 1), description="cols", layout=wide)
        self.nucleus = widgets.Dropdown(options=[("none", 0)], value=0, description="GT nucleus")
        self.zoom_button = widgets.Button(description="zoom to nucleus / full view")
        self.info = widgets.HTML()
        self.view = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.method]),
            widgets.HBox([self.show_gt, self.show_pred, self.colour_status]),
            self.rows, self.cols,
            widgets.HBox([self.nucleus, self.zoom_button]),
            self.info, self.view,
        ])  # fmt: skip
        self.image.observe(self._on_image, names="value")
        self.method.observe(self._on_source, names="value")
        for w in (self.show_gt, self.show_pred, self.colour_status, self.rows, self.cols):
            w.observe(self._refresh, names="value")
        self.nucleus.observe(self._refresh, names="value")
        self.zoom_button.on_click(lambda _: self.zoom_to_nucleus())
        self._on_source()

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:  # several widget changes, one refresh
        held, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = held
        self._refresh()

    @property
    def state(self) -> InspectorState:
        """The current selection."""
        values = [w.value for w in (self.image, self.method, self.show_gt, self.show_pred)]
        values += [self.colour_status.value, tuple(self.rows.value), tuple(self.cols.value)]
        return InspectorState(*values, nucleus=int(self.nucleus.value))

    def _maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = self.image.value
        return self.images[i], self.ground_truth[i], self.predictions[self.method.value][i]

    def _cached(self) -> tuple[ErrorTaxonomy, str]:
        key = (self.method.value, self.image.value)
        if key not in self._cache:
            t = classify_errors(*self._maps()[1:])
            c, aji = t.counts(), score_contingency(t.matches.contingency).aji
            summary = (
                f"{key[1]} · {key[0]}: AJI {aji:.3f} · matched {c['n_matched']}/{c['n_gt']} GT"
                f" · missed {c['n_missed']} · false {c['n_false']}"
                f" · merge events {c['n_merge_events']} · split {c['n_split_events']}"
            )
            self._cache[key] = t, summary
        return self._cache[key]

    def taxonomy(self) -> ErrorTaxonomy:
        """Return the error taxonomy of the current image and method."""
        return self._cached()[0]

    def _on_source(self, _change: object = None) -> None:
        """Image or method changed: new nucleus list; full view when the image size changed."""
        t = self.taxonomy()
        h, w = self._maps()[0].shape[:2]
        with self._batch():
            if (self.rows.max, self.cols.max) != (h, w):
                for slider, n in ((self.rows, h), (self.cols, w)):
                    slider.max, slider.value = n, (0, n)  # max first: value is clamped to it
            keep = self.nucleus.value
            names = [f"{g} ({s})" for g, s in zip(t.gt_ids, t.gt_status, strict=True)]
            self.nucleus.options = [("none", 0), *zip(names, t.gt_ids.tolist(), strict=True)]
            self.nucleus.value = keep if keep in t.gt_ids else 0

    def _on_image(self, _change: object = None) -> None:
        """Image changed: nucleus ids belong to one image, so drop the selection and zoom out."""
        with self._batch():
            self.nucleus.value = 0
            self._on_source()
            self.rows.value, self.cols.value = (0, self.rows.max), (0, self.cols.max)

    def region(self) -> Region:
        """Return the zoom window `(row0, row1, col0, col1)`, at least one pixel wide."""
        (r0, r1), (c0, c1) = self.rows.value, self.cols.value
        r0, c0 = min(r0, self.rows.max - 1), min(c0, self.cols.max - 1)
        return r0, max(r1, r0 + 1), c0, max(c1, c0 + 1)

    def zoom_to_nucleus(self, margin: int = 16) -> None:
        """Zoom around the selected GT nucleus, or show the whole image when none is selected."""
        box = _bbox(self._maps()[1], self.nucleus.value, margin) if self.nucleus.value else None
        box = box or (0, self.rows.max, 0, self.cols.max)
        with self._batch():
            self.rows.value, self.cols.value = box[:2], box[2:]

    def _view_kwargs(self) -> dict:
        s = self.state
        return dict(taxonomy=self.taxonomy(), show_gt=s.show_gt, show_pred=s.show_pred,
                    region=self.region(), fill=s.colour_status, highlight=s.nucleus or None,
                    alpha=self._alpha, thickness=self._thickness)  # fmt: skip

    def render(self) -> np.ndarray:
        """Return the current view as uint8 RGB (zoomed region, native resolution)."""
        return status_overlay(*self._maps(), **self._view_kwargs())

    def static_figure(self) -> Figure:
        """Return a matplotlib figure of the current view, with the status legend."""
        title = f"{self.image.value} · {self.method.value}"
        return plot_status_figure(*self._maps(), title=title, **self._view_kwargs())

    def info_text(self) -> str:
        """Return the info line as text: image summary, then the selected nucleus if any."""
        t, summary = self._cached()
        gid = self.nucleus.value
        if not gid:
            return summary
        i = int(np.searchsorted(t.gt_ids, gid))
        p = int(t.gt_partner[i])
        pair = f"with prediction {p} ({t.pred_status_of(p)})" if p else "(no overlap)"
        return f"{summary}\nGT nucleus {gid}: {t.gt_status[i]} · best IoU {t.gt_iou[i]:.3f} {pair}"

    def _refresh(self, _change: object = None) -> None:
        if self._holding:
            return
        self.view.value = _png_bytes(self.render(), self._display_size)
        self.info.value = "<br>".join(html.escape(line) for line in self.info_text().split("\n"))

    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)
