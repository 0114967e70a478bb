"""Where `nucseg predict` writes, decided and checked before any work starts.

Prediction must never lose a user's file. :func:`plan_outputs` names every file a call will
write and refuses, naming the files, when

- ``--out`` is a file, or a folder that cannot be written;
- two inputs would write the same output (``x.jpg`` and ``x.tif`` both give ``x.tif``);
- an output is one of the inputs (``--out`` pointed at the input folder);
- an output path holds a file that predict did not write (ground-truth XML, label maps, ...).

Predict's own earlier outputs may be overwritten: each output folder keeps a manifest,
:data:`MANIFEST`, of the files predict wrote there, and :func:`claim_outputs` adds a call's
files to it before they are written. Every file itself is written atomically by its writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nucseg.errors import NucsegError
from nucseg.runtime import write_bytes_atomic

#: The manifest of the files predict wrote in a folder (one JSON list of names).
MANIFEST = ".nucseg-predict.json"


class OutputError(NucsegError, ValueError):
    """An output folder cannot be used, or writing there would destroy a file."""


@dataclass(frozen=True)
class ImageOutputs:
    """The files predict will write for one input image (None: not asked for)."""

    image: Path
    instances: Path
    overlay: Path | None = None
    xml: Path | None = None
    nuclei_csv: Path | None = None

    def paths(self) -> list[Path]:
        """Every output path, in a fixed order."""
        found = (self.instances, self.overlay, self.xml, self.nuclei_csv)
        return [p for p in found if p is not None]


@dataclass(frozen=True)
class OutputPlan:
    """What one predict call writes: the folder and the outputs of each image, in input order."""

    folder: Path
    images: list[ImageOutputs] = field(default_factory=list)


def read_manifest(folder: Path) -> set[str]:
    """Names of the files predict wrote in ``folder`` (empty without a manifest).

    Raises:
        OutputError: The manifest exists but is not a JSON list of names.

    """
    path = folder / MANIFEST
    if not path.is_file():
        return set()
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OutputError(f"{path}: unreadable predict manifest ({err}); delete it") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise OutputError(f"{path}: a predict manifest is a JSON list of file names; delete it")
    return set(names)


def check_writable_folder(folder: Path, option: str = "--out") -> None:
    """Refuse a folder that is a file, or that this process cannot create or write into."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: {option} is a file, not a folder")
    existing = folder
    while not existing.exists():  # the nearest existing parent decides whether mkdir works
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: {option} is not writable (no write permission on {existing})")


def plan_outputs(
    images: Sequence[Path],
    folder: str | Path,
    overlay: bool = False,
    xml: bool = False,
    nuclei_csv: bool = False,
) -> OutputPlan:
    """Name the outputs of every input image and check that writing them loses nothing.

    Args:
        images: Input image files.
        folder: Output folder (``--out``).
        overlay: Also a contour overlay PNG per image.
        xml: Also ImageScope XML polygons per image.
        nuclei_csv: Also a per-nucleus CSV per image.

    Returns:
        The plan; nothing is written yet.

    Raises:
        OutputError: See the module docstring; the message names the files.

    """
    out = Path(folder)
    check_writable_folder(out)
    plan = OutputPlan(out)
    for image in images:
        stem = image.stem
        plan.images.append(
            ImageOutputs(
                image=image,
                instances=out / f"{stem}.tif",
                overlay=out / f"{stem}_overlay.png" if overlay else None,
                xml=out / f"{stem}.xml" if xml else None,
                nuclei_csv=out / f"{stem}_nuclei.csv" if nuclei_csv else None,
            )
        )
    owners: dict[Path, Path] = {}
    for item in plan.images:
        for path in item.paths():
            other = owners.setdefault(path.resolve(), item.image)
            if other != item.image:
                raise OutputError(
                    f"{other} and {item.image} would both write {path}; "
                    "predict them into separate --out folders"
                )
    inputs = {image.resolve() for image in images}
    clobbered = sorted(str(p) for p in owners if p in inputs)
    if clobbered:
        raise OutputError(f"--out {out} would overwrite input images: {', '.join(clobbered)}")
    ours = read_manifest(out) if out.is_dir() else set()
    foreign = sorted(str(p) for p in owners if p.exists() and p.name not in ours)
    if foreign:
        raise OutputError(
            f"--out {out} holds files that predict did not write, which it would overwrite: "
            f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''} "
            f"({len(foreign)} in all); choose another --out folder"
        )
    return plan


def claim_outputs(plan: OutputPlan) -> None:
    """Record the plan's files in the folder's manifest (atomically), before writing them."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    names = read_manifest(plan.folder) | {p.name for item in plan.images for p in item.paths()}
    text = json.dumps(sorted(names), indent=0) + "\n"
    write_bytes_atomic(plan.folder / MANIFEST, text.encode("utf-8"))
