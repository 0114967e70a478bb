import nbformat
import pandas as pd
import pytest
import yaml

from nucseg import profiles, report
from nucseg.errors import NucsegError


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("run_dir = None\nprofile = None\nvalue = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    params = tmp_path / "params"
    params.mkdir()
    profile = {"common": {"data_dir": None, "value": 1}, "notebooks": {"02": {"value": 7}}}
    (params / "tiny.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.setattr(profiles, "PARAMS_DIR", params)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    return tmp_path, notebooks


def test_profiles_merge_common_and_notebook_section(project, tmp_path):
    settings = profiles.load_profile("tiny", tmp_path / "params")
    assert profiles.notebook_parameters(settings, tmp_path / "02_x.ipynb")["value"] == 7
    assert profiles.notebook_parameters(settings, tmp_path / "01_x.ipynb")["value"] == 1
    with pytest.raises(NucsegError, match="no such profile.*tiny"):
        profiles.load_profile("nope", tmp_path / "params")


def test_report_runs_in_order_and_collects_results(project):
    root, notebooks = project
    write_scores = (
        "import pandas as pd\nfrom nucseg.evaluate import save_method_scores\n"
        "save_method_scores(run_dir, 'm', pd.DataFrame({'image_id': ['a'], 'aji': [value / 10],"
        " 'aji_plus': [0.5], 'pq': [0.5], 'dq': [0.5], 'sq': [0.5], 'f1': [0.5], 'dice': [0.5]}))"
    )
    _notebook(notebooks / "01_first.ipynb", "assert value == 1")
    _notebook(notebooks / "02_second.ipynb", write_scores)
    out = report.run_report("tiny", out=root / "run", notebooks_dir=notebooks, data=None)
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == [
        "01_first.ipynb",
        "02_second.ipynb",
    ]
    results = pd.read_csv(out / "results.csv")
    assert results.loc[0, "aji"] == pytest.approx(0.7)
    assert "| m | 1 | 0.700" in (out / "results.md").read_text()
    assert len(pd.read_csv(out / "timings.csv")) == 2


def test_first_failure_names_notebook_and_cell(project):
    root, notebooks = project
    _notebook(notebooks / "01_ok.ipynb", "x = 1")
    _notebook(notebooks / "02_bad.ipynb", "y = 2", "raise RuntimeError('boom')")
    _notebook(notebooks / "03_never.ipynb", "z = 3")
    with pytest.raises(
        report.NotebookFailed, match=r"02_bad.ipynb failed in cell \d+.*RuntimeError.*boom"
    ):
        report.run_report("tiny", out=root / "run", notebooks_dir=notebooks)
    assert not (root / "run" / "notebooks" / "03_never.ipynb").exists()


def test_no_notebooks_is_an_error(tmp_path):
    with pytest.raises(NucsegError, match="no notebooks"):
        report.find_notebooks(tmp_path)


def test_rendered_copy_drops_widgets_and_keeps_other_outputs(tmp_path):
    import nbformat

    from nucseg.report import WIDGET_VIEW, write_rendered

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            {"text/plain": "train:   0%|          | 0/8", WIDGET_VIEW: {"model_id": "abc"}},
        ),
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1),
    ]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": 1}}}
    nbformat.write(nb, tmp_path / "executed.ipynb")
    out = write_rendered(tmp_path / "executed.ipynb", tmp_path / "rendered.ipynb")
    rendered = nbformat.read(out, as_version=4)
    assert "widgets" not in rendered.metadata
    assert len(rendered.cells[0].outputs) == 1  # the progress bar frozen at 0 % is gone
    assert rendered.cells[0].outputs[0]["data"]["text/plain"] == "2"


def _parameters_cell(path):
    """The code cells of a notebook, the index of its parameters cell, and the names it assigns."""
    import ast

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    names = {t.id for node in ast.parse(code[first].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}  # fmt: skip
    return code, first, names


def _rebound_parameters(path):
    """Names of the parameters cell that a later cell imports or defines (rebinding them)."""
    import ast

    code, first, names = _parameters_cell(path)
    rebound = set()
    for cell in code[first + 1 :]:
        lines = cell.source.splitlines()
        source = "\n".join(line for line in lines if not line.startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                rebound |= {(a.asname or a.name).split(".")[0] for a in node.names} & names
            elif isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in names:
                rebound.add(node.name)
    return rebound


@pytest.mark.parametrize("path", sorted(report.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.name)  # fmt: skip
def test_no_notebook_imports_over_its_parameters(path):
    # `from nucseg.checkpoint import export_weights` once turned the export_weights=False of the
    # demo profile into a (truthy) function, and the demo run overwrote the committed weights.
    assert _rebound_parameters(path) == set()


def test_the_parameter_check_sees_an_import_over_a_parameter(tmp_path):
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        cell("export_weights = False\nseed = 0", metadata={"tags": ["parameters"]}),
        cell("%matplotlib inline\nfrom nucseg.checkpoint import export_weights"),
        cell("seed = 1  # reassigning is allowed"),
    ])  # fmt: skip
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert _rebound_parameters(tmp_path / "x.ipynb") == {"export_weights"}


@pytest.mark.parametrize("name", sorted(p.stem for p in profiles.PARAMS_DIR.glob("*.yaml")))
def test_every_profile_setting_is_a_notebook_parameter(name):
    # papermill passes a key the notebook does not declare without a word: a misspelt setting
    # (`final_fits: true`) would leave the notebook on its default.
    profile = profiles.load_profile(name)
    for path in sorted(report.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        _, _, names = _parameters_cell(path)
        assert set(profiles.notebook_parameters(profile, path)) <= names, path.name
