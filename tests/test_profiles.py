from pathlib import Path

import pytest
import yaml

from nucseg.errors import NucsegError
from nucseg.profiles import (
    REPO_ROOT,
    load_profile,
    notebook_parameters,
    resolve_data_dir,
    section_parameters,
)


def test_shipped_profiles_have_common_sections():
    for name in ("demo", "monuseg-cpu", "monuseg-gpu"):
        profile = load_profile(name)
        assert {"data_dir", "seed", "device", "quick"} <= set(profile["common"])


def test_sections_override_common(tmp_path):
    (tmp_path / "p.yaml").write_text(
        yaml.safe_dump({"common": {"a": 1, "b": 2}, "notebooks": {"04": {"b": 3}}})
    )
    profile = load_profile("p", tmp_path)
    assert section_parameters(profile, "04") == {"a": 1, "b": 3}
    assert notebook_parameters(profile, Path("01_x.ipynb")) == {"a": 1, "b": 2}
    (tmp_path / "bad.yaml").write_text("just: text\n")
    with pytest.raises(NucsegError, match="needs a 'common' section"):
        load_profile("bad", tmp_path)


def test_resolve_data_dir():
    assert resolve_data_dir(None) is None and resolve_data_dir("demo") is None
    assert resolve_data_dir("../shared/monuseg") == str((REPO_ROOT / "../shared/monuseg").resolve())
    assert resolve_data_dir("/abs/path") == "/abs/path"
