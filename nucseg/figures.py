"""Saving the report's figures: one place decides format, resolution and naming."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
