"""An ipywidgets contour inspector: GT and predicted nuclei of several methods, by error status.

The view is sent as an image at a whole-number scale and drawn 1:1 (never stretched by the
browser): a zoomed region is enlarged by an integer factor as a lossless PNG, pixels kept sharp;
a region larger than `display_size` is reduced by an integer factor and sent as a high-quality
JPEG, so that a full 1000 x 1000 view is about 0.1 MB rather than 2 MB.
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

from nucseg.errors import LayoutError
from nucseg.metrics import score_contingency
from nucseg.taxonomy import ErrorTaxonomy, classify_errors
from nucseg.viz import (
    GT_CONTOUR,
    HIGHLIGHT,
    PRED_CONTOUR,
    STATUS_COLOURS,
    Region,
    nucleus_bbox,
    plot_status_figure,
    status_counts,
    status_overlay,
)

STATUS_FILTERS = ("all", "missed", "false", "merged", "split", "other", "matched")
VIEW_CLASS = "nucseg-view"
# The image is sent at its display size; pixelated keeps high-DPI screens from blurring it.
_STYLE = f"<style>.{VIEW_CLASS} {{image-rendering: pixelated; max-width: none;}}</style>"
_WIDE = {"description_width": "initial"}  # labels are never cut off


@dataclass(frozen=True)
class EncodedView:
    """One view as sent to the browser: `data` in `format`, shown at `width` x `height` px."""

    data: bytes
    format: str
    width: int
    height: int
    scale: float


def encode_view(rgb: np.ndarray, display_size: int, jpeg_quality: int = 90) -> EncodedView:
    """Encode a view at a whole-number scale that fits its longer side within `display_size`.

    Args:
        rgb: uint8 (H, W, 3) rendered view.
        display_size: the longest side, in screen pixels, a view may take.
        jpeg_quality: JPEG quality of reduced (whole-image) views.

    Returns:
        An enlarged lossless PNG (nearest neighbour) when the view fits, else a JPEG reduced by
        the smallest integer factor that makes it fit (box filter).

    """
    if display_size < 1:
        raise ValueError(f"display_size must be at least 1 pixel, got {display_size}")
    side = max(rgb.shape[:2])
    buf = io.BytesIO()
    if side <= display_size:
        k = display_size // side
        big = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1) if k > 1 else rgb
        PIL.Image.fromarray(big).save(buf, format="PNG", compress_level=1)  # speed over size
        return EncodedView(buf.getvalue(), "png", big.shape[1], big.shape[0], float(k))
    m = -(-side // display_size)  # ceil: the smallest reduction that fits
    small = PIL.Image.fromarray(rgb).reduce(m)
    small.save(buf, format="JPEG", quality=jpeg_quality)
    return EncodedView(buf.getvalue(), "jpeg", small.width, small.height, 1 / m)


def legend_html(taxonomy: ErrorTaxonomy | None) -> str:
    """Return an HTML colour legend: status fills with their counts, contours and the box."""

    def swatch(rgb: tuple[int, int, int], label: str, line: bool = False) -> str:
        shape = "height:3px;margin-bottom:4px" if line else "height:12px"
        box = f"display:inline-block;width:14px;{shape};background:rgb{rgb};margin-right:4px"
        return f'<span style="margin-right:12px"><span style="{box}"></span>{label}</span>'

    counts = status_counts(taxonomy) if taxonomy is not None else {}
    items = [swatch(STATUS_COLOURS[s], f"{s} ({n})") for s, n in counts.items()]
    lines = {GT_CONTOUR: "GT contour", PRED_CONTOUR: "predicted contour", HIGHLIGHT: "selected"}
    items += [swatch(rgb, label, line=True) for rgb, label in lines.items()]
    style = "background:#8c8c8c;color:white;padding:2px 6px"  # the image's grey: colours read alike
    return f'<div class="nucseg-legend" style="{style}">' + "".join(items) + "</div>"


@dataclass(frozen=True)
class InspectorState:
    """Current selection of a `ContourInspector`.

    `nucleus` is a GT id, a predicted id as its negative, or 0 for none.
    """

    image_id: str
    method: str
    show_gt: bool
    show_pred: bool
    colour_status: bool
    rows: tuple[int, int]
    cols: tuple[int, int]
    nucleus: int
    status_filter: str = "all"


class ContourInspector:
    """JupyterLab widget app: GT and predicted contours of several methods, by error status.

    Widgets: `image` and `method` dropdowns; `show_gt`, `show_pred` (contours only) and
    `colour_status` (status fills) checkboxes; `rows` / `cols` range sliders (half-open zoom
    window); `status_filter` and the `nucleus` list it filters (GT nuclei, and predicted
    nuclei matching no GT as negative ids), a `zoom_button`; `info` (image AJI and error counts,
    the selected nucleus's status, best IoU and partner); `legend`; `view`. An image change
    drops the selected nucleus and zooms out; a method change keeps both. Ids lacking an image,
    GT or prediction are `skipped`.

    Args:
        images: image id -> uint8 (H, W, 3).
        ground_truth: image id -> GT instance map.
        predictions: method -> image id -> predicted instance map.
        organs: image id -> organ, shown next to the id.
        display_size: the longer side of the view in screen pixels; a region is enlarged or
            reduced by a whole-number factor to fit it (see `encode_view`).
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
        display_size: int = 720,
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
        drop = functools.partial(widgets.Dropdown, style=_WIDE, layout={"width": "auto"})
        self.image = drop(options=labels, value=ids[0], description="image")
        self.method = drop(options=list(predictions), description="method")
        auto = {"width": "auto"}
        check = functools.partial(widgets.Checkbox, value=True, indent=False, layout=auto)
        self.show_gt = check(description="GT contours")
        self.show_pred = check(description="predicted contours")
        self.colour_status = check(description="status colours")
        wide = widgets.Layout(width="600px")
        self.rows = widgets.IntRangeSlider(max=1, value=(0, 1), description="rows", layout=wide)
        self.cols = widgets.IntRangeSlider(max=1, value=(0, 1), description="cols", layout=wide)
        self.status_filter = drop(options=STATUS_FILTERS, value="all", description="list")
        self.nucleus = drop(options=[("none", 0)], value=0, description="nucleus")
        self.zoom_button = widgets.Button(description="zoom to nucleus / full view", layout=auto)
        self.info = widgets.HTML()
        self.info.add_class("nucseg-info")
        self.legend = widgets.HTML()
        self.view = widgets.Image(format="png", layout=widgets.Layout(max_width="none"))
        self.view.add_class(VIEW_CLASS)
        self.widget = widgets.VBox([
            widgets.HTML(_STYLE),
            widgets.HBox([self.image, self.method]),
            widgets.HBox([self.show_gt, self.show_pred, self.colour_status]),
            self.rows, self.cols,
            widgets.HBox([self.status_filter, self.nucleus, self.zoom_button]),
            self.info, self.legend, self.view,
        ])  # fmt: skip
        self.image.observe(self._on_image, names="value")
        self.method.observe(self._on_source, names="value")
        self.status_filter.observe(self._on_source, names="value")
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
        return InspectorState(*values, int(self.nucleus.value), self.status_filter.value)

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

    def nucleus_options(self) -> list[tuple[str, int]]:
        """Return the nucleus list under the status filter: GT ids, then false predictions."""
        t, wanted = self.taxonomy(), self.status_filter.value
        gt = [(f"GT {g} ({s})", int(g)) for g, s in zip(t.gt_ids, t.gt_status, strict=True)]
        pairs = zip(t.pred_ids, t.pred_status, strict=True)
        false = [(f"pred {p} (false)", -int(p)) for p, s in pairs if s == "false"]
        shown = [o for o in gt + false if wanted == "all" or o[0].endswith(f"({wanted})")]
        return [("none", 0), *shown]

    def _on_source(self, _change: object = None) -> None:
        """Image, method or filter changed: new nucleus list; full view on a new image size."""
        h, w = self._maps()[0].shape[:2]
        with self._batch():
            if (self.rows.max, self.cols.max) != (h, w):
                for slider, n in ((self.rows, h), (self.cols, w)):
                    slider.max, slider.value = n, (0, n)  # max first: value is clamped to it
            keep, options = self.nucleus.value, self.nucleus_options()
            self.nucleus.options = options
            self.nucleus.value = keep if keep in {v for _, v in options} else 0

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
        """Zoom around the selected nucleus, or show the whole image when none is selected."""
        n = int(self.nucleus.value)
        _, gt, pred = self._maps()
        box = nucleus_bbox(gt if n > 0 else pred, abs(n), margin) if n else None
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
        title = self._cached()[1].split(" · matched")[0]  # "<image> · <method>: AJI <aji>"
        return plot_status_figure(*self._maps(), title=title, **self._view_kwargs())

    def info_text(self) -> str:
        """Return the info line as text: image summary, then the selected nucleus if any."""
        t, summary = self._cached()
        n = int(self.nucleus.value)
        if not n:
            return summary
        side, other = ("gt", "prediction") if n > 0 else ("pred", "GT nucleus")
        ids = getattr(t, f"{side}_ids")
        i = int(np.searchsorted(ids, abs(n)))
        status, iou = getattr(t, f"{side}_status")[i], getattr(t, f"{side}_iou")[i]
        p = int(getattr(t, f"{side}_partner")[i])
        partner_status = (t.pred_status_of if n > 0 else t.gt_status_of)(p) if p else ""
        pair = f"with {other} {p} ({partner_status})" if p else "(no overlap)"
        name = "GT nucleus" if n > 0 else "predicted nucleus"
        return f"{summary}\n{name} {abs(n)}: {status} · best IoU {iou:.3f} {pair}"

    def _refresh(self, _change: object = None) -> None:
        if self._holding:
            return
        view = encode_view(self.render(), self._display_size)
        with self.view.hold_sync():  # one message: format, bytes and size together
            self.view.format, self.view.value = view.format, view.data
            self.view.layout.width, self.view.layout.height = f"{view.width}px", f"{view.height}px"
        self.info.value = "<br>".join(html.escape(line) for line in self.info_text().split("\n"))
        self.legend.value = legend_html(self.taxonomy() if self.colour_status.value else None)

    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)
