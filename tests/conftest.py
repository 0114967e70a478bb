"""Shared pytest fixtures."""

from pathlib import Path

import pytest

# the real data sits beside the repository: ../shared/monuseg
MONUSEG_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "monuseg"


@pytest.fixture(scope="session")
def monuseg_root() -> Path:
    """Path of the local MoNuSeg copy; skips the test when it is absent."""
    if not (MONUSEG_ROOT / "train").is_dir():
        pytest.skip(f"MoNuSeg data not found at {MONUSEG_ROOT}")
    return MONUSEG_ROOT
