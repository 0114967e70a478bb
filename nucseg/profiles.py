"""Run profiles: `params/<name>.yaml`, shared by `nucseg report`, `nucseg train` and notebooks.

A profile has a `common` section (data_dir, seed, device, quick, ...) and per-notebook sections
keyed by the notebook's number ("01", "04", ...). Relative paths in a profile are relative to
the repository root.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from nucseg.errors import NucsegError

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = REPO_ROOT / "params"


def load_profile(name: str, params_dir: Path | None = None) -> dict:
    """Read `params/<name>.yaml`; raises NucsegError naming the known profiles if absent."""
    params_dir = params_dir or PARAMS_DIR
    path = params_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in params_dir.glob("*.yaml"))
        raise NucsegError(f"{path}: no such profile; known profiles: {known}")
    profile = yaml.safe_load(path.read_text()) or {}
    if not isinstance(profile, dict) or "common" not in profile:
        raise NucsegError(f"{path}: a profile needs a 'common' section")
    return profile


def section_parameters(profile: dict, number: str) -> dict:
    """Merge a profile's `common` section with one notebook's section ("01", "04", ...)."""
    params = dict(profile.get("common") or {})
    params.update((profile.get("notebooks") or {}).get(number) or {})
    return params


def notebook_parameters(profile: dict, notebook: Path) -> dict:
    """The parameters of a notebook `NN_name.ipynb`: `common` merged with section `NN`."""
    return section_parameters(profile, notebook.name.split("_", 1)[0])


def resolve_user_path(value: str | None) -> str | None:
    """Make a path given on the command line absolute, relative to the current folder.

    None, "" and "demo" (the embedded demo data) pass through.
    """
    if value in (None, "", "demo"):
        return value
    return str(Path(value).expanduser().resolve())


def resolve_data_dir(value: str | None) -> str | None:
    """Make a profile's data path absolute (relative to the repository); None means demo data."""
    if value in (None, "", "demo"):
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (REPO_ROOT / path).resolve())
