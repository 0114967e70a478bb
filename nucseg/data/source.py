"""Where a run's data comes from: a MoNuSeg folder given by path, or the embedded demo data."""

from __future__ import annotations

from pathlib import Path

from nucseg.data.demo import demo_root
from nucseg.errors import LayoutError


def resolve_data_root(data_dir: str | Path | None) -> Path:
    """Return the dataset root to use.

    Args:
        data_dir: None, "" or "demo" for the embedded demo data (generated once and cached);
            otherwise a MoNuSeg folder in any layout `nucseg.data.monuseg.discover` reads.

    Raises:
        LayoutError: a path was given and does not exist.
    """
    if data_dir in (None, "", "demo"):
        return demo_root()
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise LayoutError(f"{root}: data folder does not exist")
    return root.resolve()
