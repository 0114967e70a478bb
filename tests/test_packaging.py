import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project, project["dependencies"] + project["optional-dependencies"]["dev"]


def test_dependencies_are_ranges_not_pins():
    project, requirements = _pyproject_requirements()
    assert project["requires-python"] == ">=3.10"
    for requirement in requirements:
        assert "==" not in requirement, requirement
        assert re.search(r"[<>]=?", requirement), f"{requirement} states no version range"


def test_console_script_and_profiles_exist():
    project, _ = _pyproject_requirements()
    assert project["scripts"]["nucseg"] == "nucseg.cli:main"
    for profile in ("demo", "monuseg-cpu", "monuseg-gpu"):
        assert (ROOT / "params" / f"{profile}.yaml").is_file()


def test_every_module_has_a_test_file():
    modules = [
        p
        for p in (ROOT / "nucseg").rglob("*.py")
        if not p.name.startswith("_") and p.name not in {"errors.py"}
    ]
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    missing = [str(m.relative_to(ROOT)) for m in modules if f"test_{m.name}" not in tests]
    assert not missing, f"modules without a test file: {missing}"
