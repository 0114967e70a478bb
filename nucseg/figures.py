"""Saving the report's figures: one place decides format, resolution and naming."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from nucseg.runtime import atomic_write

#: Inline figures whose PNG is larger than this are shown as JPEG: H&E crops compress about
#: five times better that way, while charts stay sharp PNGs.
MAX_INLINE_PNG_KB = 150
JPEG_QUALITY = 85


def save_figure(fig: Figure, folder: str | Path | None, name: str, dpi: int = 110) -> Path | None:
    """Save a figure as `<folder>/<name>.png` (tight bounding box) and return the path.

    Args:
        fig: the matplotlib figure.
        folder: output folder, created if needed; None saves nothing (returns None).
        name: file stem, e.g. "01_organs".
        dpi: resolution of the PNG.
    """
    if folder is None:
        return None
    path = Path(folder) / f"{name}.png"
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _render(fig: Figure, fmt: str) -> bytes:
    """The figure's bytes as the inline backend draws it (tight bounding box)."""
    buffer = io.BytesIO()
    extra = {"pil_kwargs": {"quality": JPEG_QUALITY}} if fmt == "jpeg" else {}
    fig.savefig(buffer, format=fmt, bbox_inches="tight", **extra)
    return buffer.getvalue()


def inline_image(fig: Figure, max_png_kb: float = MAX_INLINE_PNG_KB) -> tuple[str, bytes]:
    """How a notebook shows ``fig``: as PNG, or as JPEG when the PNG exceeds ``max_png_kb``.

    Returns:
        ``(mime type, image bytes)``.
    """
    png = _render(fig, "png")
    if len(png) <= max_png_kb * 1024:
        return "image/png", png
    return "image/jpeg", _render(fig, "jpeg")


def compact_inline_figures(max_png_kb: float = MAX_INLINE_PNG_KB) -> bool:
    """Make IPython show every figure through :func:`inline_image`.

    Rendered notebooks stay small enough for GitHub to show them quickly; the PNG files that
    :func:`save_figure` writes are unaffected.

    Returns:
        True when an IPython shell was configured, False outside IPython (nothing changes).
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    import matplotlib.pyplot as plt

    # The inline backend loads lazily, on the first figure, and then registers its own PNG
    # formatter: load it now, so that ours is registered after it and stays.
    plt.switch_backend(plt.get_backend())

    chosen: dict[int, tuple[str, bytes]] = {}

    def as_mime(mime: str):  # noqa: ANN202
        def formatter(fig: Figure) -> bytes | None:
            # One display asks both formatters in turn: the first renders, the second reuses.
            entry = chosen.pop(id(fig), None)
            if entry is None:
                entry = chosen[id(fig)] = inline_image(fig, max_png_kb)
            kind, data = entry
            return data if kind == mime else None

        return formatter

    formatters = shell.display_formatter.formatters
    formatters["image/png"].for_type(Figure, as_mime("image/png"))
    formatters["image/jpeg"].for_type(Figure, as_mime("image/jpeg"))
    return True


#: Methods with a fixed colour in every figure of the report, in the order of their colours.
METHOD_ORDER = ("classical", "otsu", "unet", "pix2pix", "pix2pix-real", "pix2pix-no-gan",
                "unet-02-real", "unet-02-synthetic")  # fmt: skip


def method_colours(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per method, the same in every figure (matplotlib's ``tab10``).

    Methods of :data:`METHOD_ORDER` keep their colour whatever else is plotted; other methods
    take the colours left over, in the order given (cycling past ten).
    """
    from matplotlib import colormaps

    palette = list(colormaps["tab10"].colors)
    colours = {m: palette[i] for i, m in enumerate(METHOD_ORDER) if m in methods}
    spare = palette[len(METHOD_ORDER) :] + palette
    for i, method in enumerate(m for m in methods if m not in colours):
        colours[method] = spare[i % len(spare)]
    return {m: colours[m] for m in methods}
