"""A training run's folder: which files make a run, who may use the folder, history.csv.

``Engine.run`` claims a folder through :func:`check_run_folder` (a folder holding a run is
refused unless resumed or overwritten) and compares a checkpoint's plan with the run resuming it
through :func:`plan_differences`, so that a refusal names every field that differs.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nucseg.errors import EngineError
from nucseg.runtime import atomic_write

#: Files of a run; a folder holding any of them is refused unless resumed or overwritten.
RUN_FILES = ("last.pt", "best.pt", "history.csv")


def write_history(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write history rows to CSV atomically; columns are the union of the rows' keys."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields) or ["epoch"], restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> bool:
    """Whether a run resumes from ``out/last.pt``; refuse a folder holding a run otherwise.

    Raises:
        EngineError: ``out`` holds run files and neither ``resume`` (with a ``last.pt``) nor
            ``overwrite`` is given.

    """
    held = [name for name in RUN_FILES if (Path(out) / name).exists()]
    if overwrite or not held:
        return False
    if resume and "last.pt" in held:
        return True
    why = "holds no last.pt to resume from" if resume else "already holds a run"
    raise EngineError(
        f"{out}: {why} ({', '.join(held)}); pass --resume to continue it or --overwrite to "
        "replace it, or choose another --out"
    )


def plan_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"name: A in the checkpoint, B now"`` for each plan entry that differs.

    Entries the checkpoint lacks (older checkpoints stored less) are not compared.
    """
    return [
        f"{key}: {stored[key]!r} in the checkpoint, {current.get(key)!r} now"
        for key in stored
        if stored[key] != current.get(key)
    ]
