import pytest

from nucseg.data.source import resolve_data_root
from nucseg.errors import LayoutError


def test_none_means_demo_data(monkeypatch, tmp_path):
    monkeypatch.setenv("NUCSEG_CACHE", str(tmp_path))
    root = resolve_data_root(None)
    assert (root / "train" / "images").is_dir()
    assert resolve_data_root("demo") == root


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        resolve_data_root(tmp_path / "nowhere")
    assert resolve_data_root(tmp_path) == tmp_path.resolve()
