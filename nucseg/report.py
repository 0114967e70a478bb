"""Run the report's notebooks headless with papermill, by profile, and collect their results.

A profile is `params/<name>.yaml` with a `common` section and per-notebook sections keyed by the
notebook's number ("01", "05", ...). Each notebook gets `common`, then its own section, then
`profile`, `run_dir` and `figures_dir` as papermill parameters. Notebooks write their artefacts
under the run folder, so later chapters read what earlier ones wrote.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from nucseg.errors import NucsegError
from nucseg.evaluate import load_method_scores, markdown_table, results_table, write_table
from nucseg.profiles import (
    REPO_ROOT,
    load_profile,
    notebook_parameters,
    resolve_data_dir,
    resolve_user_path,
)
from nucseg.runtime import write_bytes_atomic

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


class NotebookFailed(NucsegError):
    """A notebook raised while papermill executed it."""


def find_notebooks(folder: Path = NOTEBOOKS_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """List the numbered notebooks `NN_*.ipynb` in order, optionally only some prefixes."""
    notebooks = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if nb.name.startswith(tuple(only))]
    if not notebooks:
        raise NucsegError(f"{folder}: no notebooks to run (looked for NN_*.ipynb, only={only})")
    return notebooks


def run_notebook(notebook: Path, output: Path, parameters: dict) -> float:
    """Execute one notebook with papermill; returns its wall time in seconds.

    Raises:
        NotebookFailed: naming the notebook, the failing cell and the error.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(notebook.parent),
        )
    except PapermillExecutionError as err:
        first_line = (err.source or "").strip().splitlines()[:1]
        raise NotebookFailed(
            f"{notebook.name} failed in cell {err.cell_index} (execution count {err.exec_count}"
            f"{', ' + repr(first_line[0]) if first_line else ''}): {err.ename}: {err.evalue}. "
            f"Executed copy: {output}"
        ) from None
    return time.perf_counter() - start


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def write_rendered(executed: Path, target: Path) -> Path:
    """Copy an executed notebook to the repository without widgets.

    GitHub and other static viewers cannot run widgets, and the state holds the inspector's
    images in full (megabytes); the notebooks show a static figure beside each widget instead.
    Widget views go too: without their state they cannot be drawn, and their text fallback is a
    progress bar frozen at its first frame ("0%").
    """
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
    write_bytes_atomic(target, (nbformat.writes(notebook) + "\n").encode("utf-8"))
    return target


def run_report(
    profile: str = "demo",
    data: str | None = None,
    out: str | Path | None = None,
    only: Sequence[str] | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    figures_dir: str | Path | None = None,
    render: bool = False,
) -> Path:
    """Run the notebooks in order and write executed copies, figures and a results table.

    Args:
        profile: name of a YAML profile in `params/`.
        data: MoNuSeg folder overriding the profile's `data_dir`; a relative path is taken
            from the current folder (a profile's own path, from the repository).
        out: run folder (default `runs/<profile>`).
        only: notebook name prefixes to run (default: all).
        notebooks_dir: where the numbered notebooks are.
        figures_dir: where figures go (default `<out>/figures`, or the repository's `figures/`
            when rendering).
        render: copy each executed notebook back over its source, so the repository's notebooks
            carry this run's outputs (the committed ones come from a `monuseg-cpu` run).

    Returns:
        The run folder. It holds `notebooks/`, `figures/`, `timings.csv`, `results.csv`
        and `results.md`.
    """
    settings = load_profile(profile)
    run_dir = Path(out or REPO_ROOT / "runs" / profile).resolve()
    default_figures = REPO_ROOT / "figures" if render else run_dir / "figures"
    figures = Path(figures_dir or default_figures).resolve()
    executed = run_dir / "notebooks"
    for folder in (run_dir, figures, executed):
        folder.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(notebooks_dir, only)
    timings = []
    bar = tqdm(notebooks, desc=f"report ({profile})", unit="notebook")
    for notebook in bar:
        bar.set_postfix_str(notebook.name)
        params = notebook_parameters(settings, notebook)
        chosen = resolve_user_path(data) if data is not None else params.get("data_dir")
        params["data_dir"] = resolve_data_dir(chosen)
        params.update(profile=profile, run_dir=str(run_dir), figures_dir=str(figures))
        seconds = run_notebook(notebook, executed / notebook.name, params)
        timings.append(f"{notebook.name},{seconds:.1f}")
        if render:
            write_rendered(executed / notebook.name, notebook)
    timing_text = "notebook,seconds\n" + "\n".join(timings) + "\n"
    write_bytes_atomic(run_dir / "timings.csv", timing_text.encode("utf-8"))
    table = results_table(load_method_scores(run_dir))
    write_table(table, run_dir / "results.csv")
    write_bytes_atomic(run_dir / "results.md", (markdown_table(table) + "\n").encode("utf-8"))
    return run_dir
